"""rw.sweep: executors agree bit for bit, the store resumes, cancelling keeps finished cells, bad grids
fail before any work, Sweep.open and the SweepBrowser give the cell's own session."""
import json
import subprocess
import sys
from concurrent.futures import Executor, Future

import numpy as np
import pytest
import torch

import regional_widgets as rw
from regional_widgets.io.paths import FileSafetyError
from regional_widgets.sweep_store import StoreMismatchError

sweep_module = sys.modules["regional_widgets.sweep"]  # `rw.sweep` is the function

GRID = {"sampler": ["euler_ancestral", "dpmpp_2m"], "mode": ["faithful", "coherent"]}


@pytest.fixture(scope="module")
def model():
    return rw.models.ToyWorld(n_exemplars=40, image_size=16, mixture_variance=0.01, textures="procedural")


def make_session(model, noise_seed=3):
    top, bottom = np.zeros((16, 16), np.float32), np.zeros((16, 16), np.float32)
    top[:8, :8], bottom[8:] = 1, 1
    config = rw.SamplerConfig(scheduler="karras", cfg=1.0, positive="sky")
    regions = [rw.Region(top, rw.SamplerConfig(scheduler="karras", cfg=1.0, positive="brick")),
               rw.Region(bottom, rw.SamplerConfig(scheduler="karras", cfg=1.0, positive="grass"))]
    return rw.RegionalSamplerSession(model, rw.empty_latent(model, 16, 16), base=config, regions=regions, steps=6,
                                     noise_seed=noise_seed)


@pytest.fixture(scope="module")
def serial(model):
    return rw.sweep(make_session(model), GRID, executor="serial", progress=False)


@pytest.fixture(scope="module")
def client():
    import distributed  # the sweep extra (the test extra installs it)

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            yield client


def assert_same(a, b):
    assert a.status == b.status == ["done"] * len(a)
    for i in range(len(a)):
        x, y = a.results[i], b.results[i]
        assert torch.equal(a.result(i), b.result(i)), f"cell {i}: final latents differ"
        assert x["detail"] == y["detail"] and x["sigma_spread"] == y["sigma_spread"], f"cell {i}"
        assert x["model_calls"] == y["model_calls"] and np.array_equal(x["thumbnail"], y["thumbnail"]), f"cell {i}"


def test_serial_sweep_is_the_sessions_own_runs(model, serial):
    assert [c for c in serial.cells] == [{"sampler": s, "mode": m} for s in GRID["sampler"] for m in GRID["mode"]]
    for i, values in enumerate(serial.cells):
        s = make_session(model)
        s.mode = values["mode"]
        for region in s.regions:
            region.config = rw.SamplerConfig(**dict(region.config.to_dict(), sampler=values["sampler"]))
        assert torch.equal(s.run(), serial.result(i))
        assert serial.results[i]["model_calls"] == s.history[-1].model_calls
    table = serial.table
    assert list(table["sampler"]) == ["euler_ancestral"] * 2 + ["dpmpp_2m"] * 2
    assert list(table.columns[:3]) == ["sampler", "mode", "status"]
    # coherent mode: one noise level everywhere; faithful: regions under-noised against the base
    assert (table[table["mode"] == "coherent"]["sigma_spread"] == 0).all()
    assert (table[table["mode"] == "faithful"]["sigma_spread"] > 0.05).all()


def test_process_pool_and_dask_match_serial_bit_for_bit(model, serial, client):
    session = make_session(model)
    assert_same(serial, rw.sweep(session, GRID, executor=None, progress=False))
    assert_same(serial, rw.sweep(session, GRID, executor=client, progress=False))
    # the worker plugin built the model once per worker, from the spec
    ready = client.run(lambda: len(sys.modules["regional_widgets.sweep_cells"]._MODELS))
    assert sorted(ready.values()) == [1, 1]


class RecordingExecutor(Executor):
    """Runs each call at once and keeps its arguments."""

    def __init__(self):
        self.calls = []

    def submit(self, fn, *args, **kwargs):
        self.calls.append(args)
        future = Future()
        future.set_result(fn(*args, **kwargs))
        return future


def test_any_executor_gets_plain_data_and_a_spec(model, serial):
    ex = RecordingExecutor()
    assert_same(serial, rw.sweep(make_session(model), GRID, executor=ex, progress=False))
    assert len(ex.calls) == len(serial)
    for spec, doc, arrays, *_ in ex.calls:
        json.dumps([spec, doc])  # plain data: no session, no model, no tensors
        assert spec == model.spec and all(isinstance(a, np.ndarray) for a in arrays.values())
    assert rw.models.from_spec(model.spec).exemplars.equal(model.exemplars)


def count_cells(monkeypatch):
    calls = []
    real = sweep_module.run_cell

    def counting(model, doc, *args, **kwargs):
        calls.append((doc["mode"], doc["regions"][0]["config"]["sampler"]))
        return real(model, doc, *args, **kwargs)
    monkeypatch.setattr(sweep_module, "run_cell", counting)
    return calls


def test_store_resumes_and_touches_only_its_files(model, serial, tmp_path, monkeypatch):
    store = tmp_path / "study"
    store.mkdir()
    (store / "notes.txt").write_text("mine")
    calls = count_cells(monkeypatch)
    first = rw.sweep(make_session(model), {"sampler": ["euler_ancestral"], "mode": GRID["mode"]},
                     executor="serial", store=store, progress=False)
    assert len(calls) == 2
    index = json.loads((store / "sweep.json").read_text())
    assert sorted(index["cells"]) == sorted(first.names)
    # a wider grid over the same session: the two stored cells are read, two are computed
    calls.clear()
    wider = rw.sweep(make_session(model), GRID, executor="serial", store=store, progress=False)
    assert calls == [("faithful", "dpmpp_2m"), ("coherent", "dpmpp_2m")]
    assert_same(serial, wider)
    # a stored cell whose file no longer matches is computed again
    name = wider.names[0]
    (store / f"{name}.safetensors").unlink()
    calls.clear()
    again = rw.sweep(make_session(model), GRID, executor="serial", store=store, progress=False)
    assert calls == [("faithful", "euler_ancestral")]
    assert_same(serial, again)
    assert (store / "notes.txt").read_text() == "mine"
    # another session's study is refused; a foreign file in a cell's place is never overwritten
    with pytest.raises(StoreMismatchError, match="another session"):
        rw.sweep(make_session(model, noise_seed=4), GRID, executor="serial", store=store, progress=False)
    other = tmp_path / "other"
    other.mkdir()
    names = rw.sweep(make_session(model), GRID, run=False).names
    (other / f"{names[0]}.safetensors").write_bytes(b"not ours")
    with pytest.raises(FileSafetyError, match="not written by regional_widgets"):
        rw.sweep(make_session(model), GRID, executor="serial", store=other, progress=False)
    assert (other / f"{names[0]}.safetensors").read_bytes() == b"not ours"
    (other / f"{names[0]}.safetensors").unlink()
    (other / f"{names[1]}.session").mkdir()
    with pytest.raises(FileSafetyError, match="not written by regional_widgets"):
        rw.sweep(make_session(model), GRID, executor="serial", store=other, progress=False)
    assert sorted(p.name for p in other.iterdir()) == [f"{names[1]}.session"]  # checked before any work


def test_interrupt_keeps_finished_cells_and_resumes(model, serial, tmp_path):
    study = rw.sweep(make_session(model), GRID, executor="serial", store=tmp_path, run=False)

    def interrupt_after_two(i):
        if sum(s == "done" for s in study.status) == 2:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        study.run(progress=False, on_cell=interrupt_after_two)
    assert study.status == ["done", "done", "cancelled", "cancelled"]
    assert len(json.loads((tmp_path / "sweep.json").read_text())["cells"]) == 2
    assert list(study.table["status"]) == study.status
    resumed = rw.sweep(make_session(model), GRID, executor="serial", store=tmp_path, run=False)
    assert resumed.status == ["done", "done", "pending", "pending"]
    assert_same(serial, resumed.run(progress=False))


def test_a_crash_while_a_cell_is_written_is_repaired(model, serial, tmp_path, monkeypatch):
    store_class = sys.modules["regional_widgets.sweep_store"].SweepStore
    real = store_class._write_folder

    def crash(*args):
        raise KeyboardInterrupt
    monkeypatch.setattr(store_class, "_write_folder", crash)
    with pytest.raises(KeyboardInterrupt):
        rw.sweep(make_session(model), GRID, executor="serial", store=tmp_path, progress=False)
    name = serial.names[0]
    assert (tmp_path / f"{name}.safetensors").exists() and not (tmp_path / f"{name}.session").exists()
    monkeypatch.setattr(store_class, "_write_folder", real)
    assert_same(serial, rw.sweep(make_session(model), GRID, executor="serial", store=tmp_path, progress=False))


def test_a_failing_cell_is_reported_and_the_others_finish(model, serial, monkeypatch):
    real = sweep_module.run_cell

    def broken(model, doc, *args, **kwargs):
        if doc["regions"][0]["config"]["sampler"] == "dpmpp_2m":
            raise RuntimeError("out of memory")
        return real(model, doc, *args, **kwargs)
    monkeypatch.setattr(sweep_module, "run_cell", broken)
    study = rw.sweep(make_session(model), GRID, executor="serial", run=False)
    with pytest.warns(UserWarning, match="2 cell\\(s\\) failed; cell 2: RuntimeError: out of memory"):
        study.run(progress=False)
    assert study.status == ["done", "done", "error", "error"]
    monkeypatch.setattr(sweep_module, "run_cell", real)
    assert_same(serial, study.run(progress=False))
    assert study.errors == {}


def test_stop_cancels_pending_dask_cells(model, serial, client):
    study = rw.sweep(make_session(model), GRID, executor=client, run=False)
    study.run(progress=False, on_cell=lambda i: study.stop())
    done = study.status.count("done")
    assert 1 <= done < len(study) and study.status.count("cancelled") == len(study) - done
    for i in range(len(study)):
        if study.status[i] == "done":
            assert torch.equal(study.result(i), serial.result(i))
    assert_same(serial, study.run(progress=False))


@pytest.mark.parametrize("grid, regions, match", [
    ({"samplr": ["euler"]}, "all", r"unknown key 'samplr'.*accepted: .*noise_seed.*sampler.*base\.<sampler"),
    ({"sampler": ["euler", "eulr"]}, "all", r"grid\['sampler'\]: value 'eulr'.*accepted: .*dpmpp_2m"),
    ({"mode": ["faithful", "fast"]}, "all", r"grid\['mode'\]: value 'fast'.*accepted: faithful, coherent"),
    ({"steps": [0]}, "all", r"grid\['steps'\]: value 0: steps: expected an integer in 1\.\."),
    ({"positive": ["sky", "dragon"]}, "all", r"value 'dragon'.*unknown word"),
    ({"seed": [1]}, "all", r"unknown key 'seed'"),  # the Advanced node's seed is noise_seed
    ({"steps": [4], "start_at_step": [5]}, "all", r"cell \{'steps': 4, 'start_at_step': 5\}: start_at_step"),
    ({"cfg": [1.0]}, [3], r"regions: expected 'all' or a list of region numbers in 1\.\.2"),
    ({"cfg": "1.0"}, "all", r"grid\['cfg'\]: expected a non-empty list"),
    ({"cfg": [1.0, 1.0]}, "all", r"listed twice"),
])
def test_bad_grid_fails_before_any_work(model, monkeypatch, grid, regions, match):
    calls = count_cells(monkeypatch)
    with pytest.raises(rw.ParameterError, match=match):
        rw.sweep(make_session(model), grid, regions=regions, executor="serial", progress=False)
    with pytest.raises(rw.ParameterError, match="metrics: unknown 'speed'"):
        rw.sweep(make_session(model), GRID, metrics=("speed",), progress=False)
    assert calls == []


def test_region_keys_apply_to_chosen_regions_and_base_keys_to_the_base(model):
    study = rw.sweep(make_session(model), {"cfg": [1.5], "base.sampler": ["heun"]}, regions=[2], run=False)
    opened = study.open(0)
    assert [r.config.cfg for r in opened.regions] == [1.0, 1.5] and opened.base.sampler == "heun"


def test_open_reproduces_the_cell(model, serial, tmp_path, monkeypatch):
    for i in (1, 2):
        s = serial.open(i)
        assert s.done and torch.equal(s.result, serial.result(i)) and s.mode == serial.cells[i]["mode"]
    stored = rw.sweep(make_session(model), GRID, executor="serial", store=tmp_path, progress=False)

    def no_run(*args, **kwargs):
        raise AssertionError("a stored cell is read, not run again")
    monkeypatch.setattr(rw.RegionalSamplerSession, "run", no_run)
    monkeypatch.setattr(rw.RegionalSamplerSession, "step", no_run)
    s = stored.open(3)
    assert s.done and torch.equal(s.result, serial.result(3))
    assert [r.config.sampler for r in s.regions] == ["dpmpp_2m"] * 2 and s.mode == "coherent"


def test_grid_figure_heat_map_and_images(serial):
    import matplotlib.pyplot as plt

    fig = serial.grid_figure(x="sampler", y="mode", value="detail")
    table = serial.table
    for r, mode in enumerate(GRID["mode"]):
        for c, sampler in enumerate(GRID["sampler"]):
            row = table[(table["mode"] == mode) & (table["sampler"] == sampler)]
            assert fig.values[r, c] == pytest.approx(float(row["detail"].iloc[0]))
    plt.close(fig)
    averaged = serial.grid_figure(x="sampler", value="model_calls")
    assert averaged.values.shape == (1, 2) and "mean over mode" in averaged.axes[0].get_title()
    plt.close(averaged)
    plt.close(serial.grid_figure(x="sampler", y="mode", value="image"))
    with pytest.raises(ValueError, match="value: expected 'image' or a metric"):
        serial.grid_figure(x="sampler", y="mode", value="sampler")


def test_browser_click_opens_that_cell(serial):
    browser = rw.SweepBrowser(serial, x="sampler", y=None, value="detail")
    browser.where["mode"].value = "coherent"
    assert browser.shown() == {(None, "euler_ancestral"): 1, (None, "dpmpp_2m"): 3}
    browser.buttons[3].click()
    app = browser.app
    assert browser.opened_index == 3 and isinstance(app, rw.RegionalSamplerApp)
    assert app.session.mode == "coherent" and app.session.regions[0].config.sampler == "dpmpp_2m"
    assert torch.equal(app.session.result, serial.result(3))
    assert browser.buttons[1].description == f"{serial.table['detail'][1]:.3g}"


def test_import_does_not_load_dask_or_pandas():
    code = ("import sys, regional_widgets as rw; rw.sweep; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed', 'pandas')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_diffusers_folder_is_its_spec(tmp_path):
    from regional_widgets.models.diffusers import DiffusersModel
    from tests.models.tiny_families import saved, sdxl_pipeline

    pipe = sdxl_pipeline(tmp_path)
    model = DiffusersModel.from_pretrained(saved(pipe, tmp_path / "sdxl"), torch_dtype=torch.float64, clip_layer=-3)
    assert DiffusersModel.from_pipeline(pipe).spec is None  # built from objects, not a folder
    json.dumps(model.spec)
    twin = rw.models.from_spec(model.spec)
    assert twin.dtype == torch.float64 and twin.clip_layer == -3 and twin.timestep_map == model.timestep_map
    mask = np.zeros((16, 16), np.float32)
    mask[8:] = 1
    config = rw.SamplerConfig(sampler="dpmpp_2m", scheduler="karras", cfg=3.0, positive="sky")
    session = rw.RegionalSamplerSession(model, rw.empty_latent(model, 16, 16), base=config, steps=3,
                                        regions=[rw.Region(mask, rw.SamplerConfig(cfg=3.0, positive="cat"))])
    grid = {"mode": ["faithful", "coherent"]}
    here = rw.sweep(session, grid, executor="serial", progress=False)
    assert here.metrics == ("sigma_spread", "model_calls", "wall_s", "thumbnail")  # no exemplars: no detail
    assert_same_latents(here, rw.sweep(session, grid, executor=RecordingExecutor(), progress=False))


def assert_same_latents(a, b):
    assert a.status == b.status == ["done"] * len(a)
    assert all(torch.equal(a.result(i), b.result(i)) for i in range(len(a)))


def test_a_flow_thumbnail_shows_the_picture_of_a_result_with_leftover_noise():
    """A flow result stopped with its leftover noise (``x / (1 - sigma)``) is shown as `rw.plot.picture`
    shows it (as the CLI's ``--out`` writes it), not as the raw latent decoded."""
    from PIL import Image

    model = rw.models.ToyWorld(n_exemplars=40, image_size=16, mixture_variance=0.01, textures="procedural",
                               prediction="flow")
    session = make_session(model)
    session.end_at_step, session.return_with_leftover_noise = 3, True
    study = rw.sweep(session, {"mode": ["faithful", "coherent"]}, executor="serial", progress=False)

    def shown(latent):  # decoded, rounded to uint8, shrunk as a thumbnail is (16 px: unchanged)
        rgb = model.decode(latent)[0].clamp(0, 1).numpy()
        image = Image.fromarray((rgb * 255 + 0.5).astype(np.uint8))
        image.thumbnail((96, 96))
        return np.asarray(image).astype(int)

    for i in range(len(study)):
        cell = study.open(i)
        picture, raw = shown(rw.plot.picture(cell, "result")), shown(cell.result)
        assert np.abs(picture - raw).max() > 5  # the leftover noise shows: the two pictures differ
        assert np.array_equal(study.results[i]["thumbnail"], picture)


def test_a_store_keeps_detail_ratios_that_are_not_meaningful(tmp_path, monkeypatch):
    # On the default ToyWorld (exact exemplars) a plain run lands on one: its detail ratios are NaN
    # (compare.DetailRatioWarning). The index stores them as JSON null and reads them back as NaN.
    exact = rw.models.ToyWorld(n_exemplars=40, image_size=16, textures="procedural")
    grid = {"sampler": ["euler"]}
    with pytest.warns(sys.modules["regional_widgets.compare"].DetailRatioWarning):
        first = rw.sweep(make_session(exact), grid, executor="serial", store=tmp_path, progress=False)
    assert first.status == ["done"] and np.isnan(first.results[0]["detail"]).all()
    index = json.loads((tmp_path / "sweep.json").read_text())
    (cell,) = index["cells"].values()
    assert cell["metrics"]["detail"] == [None, None]
    calls = count_cells(monkeypatch)
    again = rw.sweep(make_session(exact), grid, executor="serial", store=tmp_path, progress=False)
    assert again.status == ["done"] and calls == []  # read from the store, not computed again
    assert np.isnan(again.results[0]["detail"]).all() and len(again.results[0]["detail"]) == 2
