"""``python -m regional_widgets`` as a shell user meets it: every command and its error paths, in subprocesses."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

import regional_widgets as rw

ROOT = Path(__file__).parents[1]
STEPS = 6


def cli(*args, cwd, timeout=300):
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "regional_widgets", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def make_session(model):
    ground = np.zeros((64, 64), np.float32)
    ground[40:] = 1
    wall = np.zeros((64, 64), np.float32)
    wall[12:44, 8:28] = 1
    base = rw.SamplerConfig(sampler="euler", scheduler="karras", cfg=2.0, positive="sky")
    regions = [rw.Region(ground, rw.SamplerConfig(sampler="dpmpp_2m", scheduler="karras", cfg=2.0, positive="grass")),
               rw.Region(wall, rw.SamplerConfig(sampler="euler", scheduler="karras", cfg=2.0, positive="brick"))]
    return rw.RegionalSamplerSession(model, rw.empty_latent(model, 64, 64), base=base, regions=regions, steps=STEPS)


def expected_png(model, session) -> np.ndarray:
    rgb = model.decode(session.run())[0].clamp(0, 1).numpy()
    return (rgb * 255).round().astype(np.uint8)


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """A session folder saved after one step, and the same session as a ComfyUI API workflow."""
    folder = tmp_path_factory.mktemp("sources")
    model = rw.models.ToyWorld()
    session = make_session(model)
    session.step()  # saved mid-run: `run` continues from here
    session.save(folder / "session")
    session.to_comfy(folder / "workflow.json")
    (folder / "ui").mkdir()
    session.to_comfy(folder / "ui" / "editor.json", format="ui")
    (folder / "png").mkdir()
    session.save_png(folder / "png" / "image.png")
    return {"folder": folder, "session": folder / "session", "workflow": folder / "workflow.json",
            "ui": folder / "ui" / "editor.json", "png": folder / "png" / "image.png",
            "expected": expected_png(model, session)}


def assert_usage_error(result, *words):
    """Exit status 2, exactly one line on stderr naming the problem, no traceback, nothing on stdout."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("python -m regional_widgets"), lines[0]
    assert "error:" in lines[0] and "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert result.stdout == ""


def test_run_a_saved_session_with_every_output(sources, tmp_path):
    result = cli("run", sources["session"], "--out", "out/result.png", "--steps-gif", "steps.gif",
                 "--strip", "strip.png", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)  # stdout is the JSON alone; the progress bar went to stderr
    assert "RegionalSamplerAdvanced" in result.stderr and "call" in result.stderr
    assert summary["status"] == "done" and summary["source_kind"] == "session" and summary["model"] == "toyworld"
    assert summary["steps"] == STEPS and summary["regions"] == 2 and summary["node"] == "RegionalSamplerAdvanced"
    assert set(summary["timings"]) >= {"load_s", "run_s", "steps_gif_s", "strip_s", "detail_ratios_s"}
    assert all(v >= 0 for v in summary["timings"].values())
    # ToyWorld()'s pictures are points: a plain run lands on one, nothing to measure a region against
    assert summary["detail_ratios"] == [None, None] and "mixture_variance" in summary["detail_ratios_note"]
    # the result is exactly the continued run of the saved session
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out" / "result.png").convert("RGB")),
                                  sources["expected"])
    with Image.open(tmp_path / "steps.gif") as gif:
        assert gif.n_frames == STEPS
    with Image.open(tmp_path / "strip.png") as strip:
        assert strip.width > 300
    assert summary["written"] == {"out": "out/result.png", "steps_gif": "steps.gif", "strip": "strip.png"}


@pytest.mark.parametrize("kind", ["workflow", "ui", "png"])
def test_run_a_comfy_workflow(sources, tmp_path, kind):
    """An API-format JSON, an editor (UI-format) JSON and a ComfyUI PNG run to the same image."""
    result = cli("run", sources[kind], "--out", "r.png", "--no-progress", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # --no-progress: nothing on stderr
    assert result.stdout.startswith("wrote r.png") and "done" in result.stdout
    # a workflow carries the settings, not the mid-run state: a fresh run of the same session
    model = rw.models.ToyWorld()
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "r.png").convert("RGB")),
                                  expected_png(model, make_session(model)))


def test_run_a_comfy_png_notes_what_it_skipped(sources, tmp_path):
    """A node the import passes over (a LoRA loader) is a note on stderr; the run goes on."""
    with Image.open(sources["png"]) as image:
        prompt = json.loads(image.info["prompt"])
    pipe = next(i for i, n in prompt.items() if n["class_type"] == "ToBasicPipe")
    prompt["90"] = {"class_type": "LoraLoader", "inputs": {"model": prompt[pipe]["inputs"]["model"], "clip": ["1", 1],
                                                           "lora_name": "x.safetensors"}}
    prompt[pipe]["inputs"]["model"] = ["90", 0]
    for mask in (sources["png"].parent).glob("image_region*.png"):
        (tmp_path / mask.name).write_bytes(mask.read_bytes())
    info = PngInfo()
    info.add_text("prompt", json.dumps(prompt))
    Image.new("RGB", (64, 64)).save(tmp_path / "lora.png", pnginfo=info)
    result = cli("run", "lora.png", "--out", "r.png", "--no-progress", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith("python -m regional_widgets: note: node 90 (LoraLoader") and \
        "skipped" in result.stderr and len(result.stderr.splitlines()) == 1


def test_info_text_and_json(tmp_path):
    text = cli("info", cwd=tmp_path)
    assert text.returncode == 0, text.stderr
    assert "samplers (" in text.stdout and "dpmpp_2m" in text.stdout and "karras" in text.stdout
    assert "toyworld" in text.stdout and f"regional_widgets {rw.__version__}" in text.stdout
    data = json.loads(cli("info", "--json", cwd=tmp_path).stdout)
    assert "euler" in data["samplers"] and "karras" in data["schedulers"]
    assert set(data["models"]) == {"toyworld", "PATH"}
    assert data["versions"]["regional_widgets"] == rw.__version__ and data["versions"]["torch"]


def test_demo_writes_its_pngs(tmp_path):
    result = cli("demo", "--out", "d/demo.png", "--steps", "4", "--dpi", "50", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "d" / "demo.png").stat().st_size > 1000
    assert (tmp_path / "d" / "demo_schedules.png").stat().st_size > 1000


def test_version_and_help(tmp_path):
    version = cli("--version", cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.startswith("python -m regional_widgets ")
    helped = cli("run", "--help", cwd=tmp_path)
    assert helped.returncode == 0 and "--steps-gif" in helped.stdout and "SOURCE" in helped.stdout


def damaged_session(folder: Path) -> Path:
    bad = folder / "damaged"
    bad.mkdir()
    (bad / "session.json").write_text("{ not json")
    return bad


ERRORS = {
    # name: (arguments, words the one line must contain); {s} = the saved session, {w} = the workflow
    "missing source": (["run", "nope", "--out", "x.png"], ["nope", "no such file"]),
    "a PNG that is damaged": (["run", "{png}", "--out", "x.png"], ["wf.png", "damaged PNG"]),
    "a PNG without a workflow": (["run", "{plain}", "--out", "x.png"], ["plain.png", "without a ComfyUI workflow"]),
    "a folder without session.json": (["run", "{empty}", "--out", "x.png"], ["not a session folder"]),
    "a damaged session": (["run", "{damaged}", "--out", "x.png"], ["session.json", "JSON"]),
    "a JSON that is no workflow": (["run", "{notwf}", "--out", "x.png"], ["notwf.json"]),
    "an unknown source type": (["run", "{txt}", "--out", "x.png"], ["session folder, a ComfyUI workflow"]),
    "--out not an image": (["run", "{s}", "--out", "x.txt"], ["--out x.txt", "image file"]),
    "--out a folder": (["run", "{s}", "--out", "{folder_png}"], ["is a folder"]),
    "--steps-gif not a gif": (["run", "{s}", "--out", "x.png", "--steps-gif", "x.png"], ["--steps-gif", ".gif"]),
    "--model a missing path": (["run", "{s}", "--out", "x.png", "--model", "no/such/model"], ["--model", "diffusers"]),
    "--model not a diffusers folder": (["run", "{s}", "--out", "x.png", "--model", "{empty}"], ["--model", "missing"]),
    "--fps 0": (["run", "{s}", "--out", "x.png", "--steps-gif", "x.gif", "--fps", "0"], ["--fps 0", "positive"]),
    "no --out": (["run", "{s}"], ["--out"]),
    "an unknown option": (["run", "{s}", "--out", "x.png", "--bogus"], ["--bogus"]),
    "an unknown command": (["bogus"], ["bogus"]),
    "no command": ([], ["required"]),
    "demo with 0 steps": (["demo", "--steps", "0"], ["--steps"]),
    "demo with a non-integer": (["demo", "--steps", "many"], ["--steps", "many"]),
}


@pytest.mark.parametrize("case", ERRORS, ids=list(ERRORS))
def test_bad_input_exits_2_with_one_line(case, sources, tmp_path):
    args, words = ERRORS[case]
    empty = tmp_path / "empty"
    empty.mkdir()
    (tmp_path / "folder.png").mkdir()
    (tmp_path / "wf.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (tmp_path / "notwf.json").write_text('{"1": {"class_type": "KSampler", "inputs": {}}}')
    (tmp_path / "wf.txt").write_text("hello")
    Image.new("RGB", (8, 8)).save(tmp_path / "plain.png")
    names = {"plain": "plain.png", "s": sources["session"], "w": sources["workflow"], "png": "wf.png", "empty": empty,
             "damaged": damaged_session(tmp_path), "notwf": "notwf.json", "txt": "wf.txt", "folder_png": "folder.png"}
    args = [a.format(**names) for a in args]
    assert_usage_error(cli(*args, cwd=tmp_path), *words)
    assert not (tmp_path / "x.png").exists()


def test_a_session_runs_on_the_model_it_names(tmp_path):
    """``run`` without --model rebuilds the model a session folder names (a ToyWorld here): a
    ``ToyWorld(mixture_variance=0.01, ...)`` session replays bit-identically to the in-process run, and its
    detail ratios are finite numbers. --model overrides; another model is refused unless --no-model-check."""
    helped = " ".join(cli("run", "--help", cwd=tmp_path).stdout.split())
    assert "default: the model a session folder names" in helped and "--no-model-check" in helped
    model = rw.models.ToyWorld(mixture_variance=0.01, n_exemplars=100)
    session = make_session(model)
    session.step()
    session.save(tmp_path / "spread")
    expected = expected_png(model, session)
    result = cli("run", "spread", "--out", "x.png", "--json", "--no-progress", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout, parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))
    assert summary["model"] == "ToyWorld(n_exemplars=100, mixture_variance=0.01)"
    assert summary["model_from"] == "session" and summary["model_spec"] == model.spec
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "x.png").convert("RGB")), expected)
    assert len(summary["detail_ratios"]) == 2 and all(isinstance(r, float) and r > 0 for r in summary["detail_ratios"])
    assert "detail_ratios_note" not in summary
    (tmp_path / "x.png").unlink()

    # --model names another model: refused, saying how to go on; --no-model-check runs it there
    refused = cli("run", "spread", "--out", "x.png", "--model", "toyworld", cwd=tmp_path)
    assert_usage_error(refused, "saved with ToyWorld(n_exemplars=100, mixture_variance=0.01)",
                       "this model is ToyWorld()", "drop --model", "--no-model-check")
    assert "check_model=False" not in refused.stderr and not (tmp_path / "x.png").exists()
    forced = cli("run", "spread", "--out", "x.png", "--model", "toyworld", "--no-model-check", "--json",
                 "--no-progress", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    summary = json.loads(forced.stdout)
    assert summary["model"] == "toyworld" and summary["model_from"] == "--model"
    assert not np.array_equal(np.asarray(Image.open(tmp_path / "x.png").convert("RGB")), expected)


def test_a_session_of_another_family_runs_on_its_model(tmp_path):
    """A flow session (refused on the default toyworld before sessions named their model) runs on its
    flow ToyWorld; --model toyworld is refused with the family check's message."""
    from regional_widgets.cli import UsageError, load_model

    assert isinstance(load_model("toyworld"), rw.models.ToyWorld)
    with pytest.raises(UsageError, match="--model nowhere"):
        load_model("nowhere")
    flow = rw.models.ToyWorld(n_exemplars=60, prediction="flow")
    make_session(flow).save(tmp_path / "flow")
    result = cli("run", "flow", "--out", "x.png", "--no-progress", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    session = make_session(flow)
    session.run()  # the picture `run` writes: a flow result as the screen shows it
    picture = (flow.decode(rw.plot.picture(session, "result"))[0].clamp(0, 1).numpy() * 255).round().astype(np.uint8)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "x.png").convert("RGB")), picture)
    (tmp_path / "x.png").unlink()
    assert_usage_error(cli("run", "flow", "--out", "x.png", "--model", "toyworld", cwd=tmp_path),
                       "flow", "drop --model")
    assert not (tmp_path / "x.png").exists()


def test_a_model_a_session_names_that_cannot_be_built(tmp_path):
    """Exit 2 with one line naming session.json's model: a factory (no code a file names is run), a
    ToyWorld too large to build, a diffusers folder (never read because a file names it), a hostile record."""
    from regional_widgets import cli as cli_module

    make_session(rw.models.ToyWorld(n_exemplars=20)).save(tmp_path / "s")
    doc = json.loads((tmp_path / "s" / "session.json").read_text())
    cases = {"factory": ({"factory": "os:system", "kwargs": {"command": "touch pwned"}}, "is not built from a file"),
             "huge": (dict(doc["model"], n_exemplars=10**7), "over the limit"),
             "gone": ({"model": "DiffusersModel", "path": str(tmp_path / "no-such-model")}, "a file never chooses"),
             "here": ({"model": "DiffusersModel", "path": str(tmp_path)}, "give that folder yourself (--model PATH"),
             "hostile": ({"model": "ToyWorld", "seed": [[[[[[[[[1]]]]]]]]]}, "nested over 8 levels")}
    for name, (value, words) in cases.items():
        (tmp_path / name).mkdir()
        for file in (tmp_path / "s").iterdir():
            (tmp_path / name / file.name).write_bytes(file.read_bytes())
        (tmp_path / name / "session.json").write_text(json.dumps(dict(doc, model=value)))
        args = cli_module.parser().parse_args(["run", str(tmp_path / name), "--out", "x.png"])
        with pytest.raises(cli_module.UsageError, match="session.json: model") as caught:
            cli_module.choose_model(args, tmp_path / name, "session")
        assert words in str(caught.value), (name, str(caught.value))
    assert_usage_error(cli("run", "factory", "--out", "x.png", cwd=tmp_path),
                       "session.json: model: factory 'os:system'", "choose the model with --model")
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "x.png").exists()


def test_detail_ratios_in_the_json_are_numbers_or_null(tmp_path, capsys):
    """A model whose pictures have spread gives finite ratios and no note; JSON never holds NaN."""
    from regional_widgets import cli as cli_module

    model = rw.models.ToyWorld(mixture_variance=0.01)
    make_session(model).save(tmp_path / "spread")  # it names its model: `run` rebuilds it
    assert cli_module.main(["run", str(tmp_path / "spread"), "--out", str(tmp_path / "s.png"), "--json",
                            "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out, parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))
    ratios = summary["detail_ratios"]
    assert len(ratios) == 2 and all(isinstance(r, float) and r > 0 for r in ratios)
    assert "detail_ratios_note" not in summary


def test_the_demo_scene_is_the_run_gifs():
    """docs/make_run_gif.py draws `cli.demo_scene`, the scene `demo` renders: one scene, written once."""
    from regional_widgets.cli import demo_scene

    source = (ROOT / "docs" / "make_run_gif.py").read_text()
    assert "demo_scene()" in source and "np.zeros" not in source
    scene = demo_scene()
    assert [r.config.positive for r in scene["regions"]] == ["grass", "brick"]
    assert scene["latent"].shape == (1, 3, 64, 64) and scene["base"].positive == "sky"


def test_run_a_workflow_on_a_diffusers_folder(sources, tmp_path):
    """``--model PATH``: a (tiny, random) SDXL folder on disk; no detail ratios without exemplars."""
    from tests.models.tiny_families import saved, sdxl_pipeline

    folder = saved(sdxl_pipeline(tmp_path), tmp_path / "sdxl")
    result = cli("run", sources["workflow"], "--model", folder, "--out", "sd.png", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    assert summary["model"] == str(folder) and summary["status"] == "done" and summary["steps"] == STEPS
    assert summary["detail_ratios"] is None and "exemplars" in summary["detail_ratios_note"]
    with Image.open(tmp_path / "sd.png") as image:
        assert image.size == (64, 64)  # the workflow's 64 x 64 image through the folder's VAE
    # the loaders' own warnings and bars are quiet: stderr holds our progress bar only
    assert "Traceback" not in result.stderr and "Loading weights" not in result.stderr
    assert "float32" not in result.stderr and "RegionalSamplerAdvanced" in result.stderr


def test_run_writes_the_picture_of_a_flow_result_with_leftover_noise(tmp_path, capsys):
    """On a flow model the result the node returns can hold leftover noise (``x / (1 - sigma)``, here
    stopped at step 3 of 6 with its leftover noise): ``--out`` is what `rw.plot.picture` shows, decoded."""
    from regional_widgets import cli as cli_module

    model = rw.models.ToyWorld(n_exemplars=60, prediction="flow")
    session = make_session(model)
    session.end_at_step, session.return_with_leftover_noise = 3, True
    session.save(tmp_path / "flow")
    session.run()
    picture = model.decode(rw.plot.picture(session, "result"))[0].clamp(0, 1).numpy()
    raw = model.decode(session.result)[0].clamp(0, 1).numpy()
    expected = (picture * 255).round().astype(np.uint8)
    assert np.abs(expected.astype(int) - (raw * 255).round().astype(int)).max() > 10  # not the raw latent

    # the session names its flow ToyWorld: `run` rebuilds it
    assert cli_module.main(["run", str(tmp_path / "flow"), "--out", str(tmp_path / "flow.png"), "--no-progress"]) == 0
    assert "flow.png" in capsys.readouterr().out
    with Image.open(tmp_path / "flow.png") as image:
        assert np.array_equal(np.asarray(image.convert("RGB")), expected)
