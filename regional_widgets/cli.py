"""``python -m regional_widgets``: run a saved session or a ComfyUI workflow, list what is there, a demo.

    python -m regional_widgets run SOURCE --out result.png [--model toyworld|PATH] [--no-model-check]
                                   [--steps-gif steps.gif] [--strip strip.png] [--json] [--no-progress]
    python -m regional_widgets info [--json]
    python -m regional_widgets demo [--out out/demo.png]

SOURCE is a session folder (``session.save(folder)``), a ComfyUI workflow (``.json``, API or editor
format, ``session.to_comfy``) or a ComfyUI image (``.png`` carrying its workflow, ``session.save_png``);
mask PNGs are looked up beside it. A session folder runs on the model it names (`choose_model`) unless
``--model`` names one. What a workflow holds that cannot be mapped (a skipped LoRA loader) is printed as a
``note:`` line on stderr. Bad input exits with status 2 and one line on stderr, as argparse does.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

PROG = "python -m regional_widgets"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


class UsageError(Exception):
    """Bad input from the command line: reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse's messages on one line (``prog: error: ...``), exit status 2, no usage block."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


# ---- run ------------------------------------------------------------------------------------------

def _check_outputs(args) -> None:
    """Fail before any work on output names the run could not write."""
    for name, value in (("out", args.out), ("strip", args.strip)):
        if value and Path(value).suffix.lower() not in IMAGE_SUFFIXES:
            raise UsageError(f"--{name} {value}: expected an image file name ({', '.join(IMAGE_SUFFIXES)})")
    if not args.fps > 0:
        raise UsageError(f"--fps {args.fps:g}: expected a positive number")
    if args.steps_gif:
        suffix = Path(args.steps_gif).suffix.lower()
        if suffix not in (".gif", ".mp4"):
            raise UsageError(f"--steps-gif {args.steps_gif}: expected a .gif or .mp4 file name")
        if suffix == ".mp4":
            from matplotlib.animation import FFMpegWriter

            if not FFMpegWriter.isAvailable():
                raise UsageError(f"--steps-gif {args.steps_gif}: MP4 needs ffmpeg on PATH; write a .gif instead")
    for name, value in (("out", args.out), ("strip", args.strip), ("steps-gif", args.steps_gif)):
        if value and Path(value).is_dir():
            raise UsageError(f"--{name} {value}: is a folder, expected a file name")


def _source_kind(source: Path) -> str:
    if not source.exists():
        raise UsageError(f"{source}: no such file or folder")
    if source.is_dir():
        if not (source / "session.json").is_file():
            raise UsageError(f"{source}: not a session folder (no session.json inside)")
        return "session"
    if source.suffix.lower() in (".json", ".png"):
        return "comfy"
    raise UsageError(f"{source}: expected a session folder, a ComfyUI workflow (.json) or a ComfyUI image (.png)")


def load_model(spec: str):
    """``--model``: ``toyworld`` (the built-in model) or the path of a diffusers folder."""
    import regional_widgets as rw

    if spec.lower() in ("toyworld", "toy", "builtin"):
        return rw.models.ToyWorld()
    if not Path(spec).is_dir():
        raise UsageError(f"--model {spec}: expected 'toyworld' or the path of a diffusers folder")
    _quiet_hf_loaders()
    try:
        model_class = rw.models.DiffusersModel
    except ImportError as err:
        raise UsageError(f"--model {spec}: a diffusers folder needs the diffusers extra "
                         f"(pip install 'regional-widgets[diffusers]'): {err}") from None
    try:
        return model_class.from_pretrained(Path(spec))
    except (OSError, ValueError, KeyError, ImportError) as err:
        raise UsageError(f"--model {spec}: cannot load the diffusers folder: {_one_line(err)}") from None


def choose_model(args, source: Path, kind: str):
    """``(model, name, from)``: ``--model``, else the model a session folder names (`persistence.named_model`:
    a ToyWorld; a diffusers folder it names is asked for with --model), else toyworld."""
    from .io.session_files import SessionFileError
    from .models.spec import describe_spec
    from .persistence import named_model

    try:
        named = None if args.model or kind != "session" else named_model(source)
    except SessionFileError as err:
        hint = "; choose the model with --model" if str(err).startswith("session.json: model:") else ""
        raise UsageError(f"{source}: {_one_line(err)}{hint}") from None
    if named is None:
        return load_model(args.model or "toyworld"), args.model or "toyworld", "--model" if args.model else "default"
    name = describe_spec(named[1]).replace("ToyWorld()", "toyworld")  # the built-in model: as --model names it
    return named[0], name, "session"


def _quiet_hf_loaders() -> None:
    """diffusers/transformers log warnings and loading bars while reading a folder: a shell user sees
    our progress bar and real errors only (their errors still raise)."""
    import os

    for key, value in (("DIFFUSERS_VERBOSITY", "error"), ("TRANSFORMERS_VERBOSITY", "error"),
                       ("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")):
        os.environ.setdefault(key, value)
    for name in ("diffusers", "transformers"):
        try:
            logging = __import__(f"{name}.utils.logging", fromlist=["logging"])
        except ImportError:
            continue
        logging.set_verbosity_error()
        if hasattr(logging, "disable_progress_bar"):
            logging.disable_progress_bar()


def _one_line(err) -> str:
    text = " ".join(str(err).split())
    return text if len(text) < 400 else text[:397] + "..."


def _load_session(source: Path, kind: str, model, check_model=True, named=False):
    import warnings

    from .io.comfy import ComfyWorkflowError
    from .io.comfy_files import ComfyImportWarning
    from .io.session_files import SessionFileError
    from .persistence import MODEL_ADVICE
    from .session import ParameterError, RegionalSamplerSession

    try:
        if kind == "session":
            return RegionalSamplerSession.load(source, model, check_model=check_model)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ComfyImportWarning)
            session = RegionalSamplerSession.from_comfy(source, model)
        for warning in caught:
            print(f"{PROG}: note: {_one_line(warning.message)}", file=sys.stderr)
        return session
    except (SessionFileError, ComfyWorkflowError, ParameterError) as err:
        hint = "" if not str(err).startswith("model:") else "; choose the model with --model" if not named else \
            "; drop --model to run it on the model the session names, or add --no-model-check"
        raise UsageError(f"{source}: {_one_line(str(err).replace(MODEL_ADVICE, ''))}{hint}") from None
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UsageError(f"{source}: cannot be read ({type(err).__name__}: {_one_line(err)})") from None


def _save_image(session, out: Path) -> None:
    """The result as a person should see it: `plot.picture` (on a flow model a result holding leftover
    noise is shown at the noise level it was held at), through the model's full decode."""
    import numpy as np
    from PIL import Image

    from .plot import picture

    rgb = session.model.decode(picture(session, "result")).clamp(0, 1).cpu().numpy()  # [B, H, W, 3]
    tiled = np.concatenate(list(rgb), axis=1)  # a batch side by side
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((tiled * 255).round().astype(np.uint8)).save(out)


def _run_with_progress(session, progress: bool) -> None:
    from tqdm import tqdm

    with tqdm(total=len(session.ops), initial=session.cursor, desc=session.node, unit="call",
              file=sys.stderr, disable=not progress, leave=False) as bar:
        while not session.done:
            session.substep()
            bar.update(1)


def _detail_ratios(session, model, timings):
    """``(ratios, note)``: `rw.detail_ratios` where the model has exemplars to measure against; a
    region with nothing to measure against is ``None`` (JSON null), and the note says why."""
    import warnings

    from .compare import DetailRatioWarning, detail_ratios

    if not session.regions:
        return None, "no regions"
    if not hasattr(model.encode(""), "exemplars"):
        return None, "the model has no exemplars (detail ratios need ToyWorld)"
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", DetailRatioWarning)
            ratios = [None if r != r else float(f"{r:.4g}") for r in detail_ratios(session)]  # NaN -> null
        notes = [str(w.message) for w in caught if issubclass(w.category, DetailRatioWarning)]
        return ratios, "; ".join(notes) or None
    except ValueError as err:  # e.g. a region too small to measure
        return None, str(err)
    finally:
        timings["detail_ratios_s"] = time.perf_counter() - t0


def cmd_run(args) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import regional_widgets as rw
    from .persistence import recordable_spec

    source = Path(args.source)
    kind = _source_kind(source)
    _check_outputs(args)
    timings = {}
    t0 = time.perf_counter()
    model, model_name, model_from = choose_model(args, source, kind)
    session = _load_session(source, kind, model, check_model=not args.no_model_check,
                            named=bool(args.model) and kind == "session")
    timings["load_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    _run_with_progress(session, progress=not args.no_progress)
    timings["run_s"] = time.perf_counter() - t0
    out = Path(args.out)
    _save_image(session, out)
    written = {"out": str(out)}

    if args.steps_gif:  # replays the run from its start, one regional step at a time (deterministic)
        t0 = time.perf_counter()
        written["steps_gif"] = rw.plot.save_animation(rw.plot.animate(session, fps=args.fps), args.steps_gif)
        timings["steps_gif_s"] = time.perf_counter() - t0
    if args.strip:
        t0 = time.perf_counter()
        Path(args.strip).parent.mkdir(parents=True, exist_ok=True)
        rw.plot.step_strip(session, every=max(1, session.num_steps // 10)).savefig(args.strip, dpi=110)
        written["strip"] = str(args.strip)
        timings["strip_s"] = time.perf_counter() - t0

    if args.json:
        ratios, ratio_note = _detail_ratios(session, model, timings)
        summary = {
            "status": "done" if session.done else "stopped", "session_status": session.status,
            "source": str(source), "source_kind": kind, "model": model_name, "model_from": model_from,
            "model_spec": recordable_spec(model),
            "node": session.node, "mode": session.mode, "steps": session.num_steps,
            "regions": len(session.regions), "written": written,
            "timings": {k: round(v, 3) for k, v in timings.items()}, "detail_ratios": ratios,
        }
        if ratio_note:
            summary["detail_ratios_note"] = ratio_note
        print(json.dumps(summary, indent=2))
    else:
        print(f"wrote {', '.join(written.values())} ({session.status}; {timings['run_s']:.1f} s)")
    return 0


# ---- info ----------------------------------------------------------------------------------------

def info() -> dict:
    import platform
    from importlib import metadata

    import regional_widgets as rw
    from .sampling import SAMPLER_NAMES, SCHEDULER_NAMES

    versions = {"regional_widgets": rw.__version__, "python": platform.python_version()}
    for dist in ("torch", "numpy", "ipywidgets", "ipycanvas", "matplotlib", "diffusers", "transformers",
                 "jupyterlab", "voila"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return {
        "samplers": list(SAMPLER_NAMES), "schedulers": list(SCHEDULER_NAMES),
        "models": {
            "toyworld": "built in: a closed-form offline model (no weights)",
            "PATH": "a diffusers folder on disk (SD1.5, SD2, SDXL, SD3, Flux); needs the diffusers extra"
                    + ("" if versions["diffusers"] else " (not installed)"),
        },
        "versions": versions,
    }


def cmd_info(args) -> int:
    data = info()
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    print(f"samplers ({len(data['samplers'])}): {' '.join(data['samplers'])}")
    print(f"schedulers ({len(data['schedulers'])}): {' '.join(data['schedulers'])}")
    print("models:")
    for name, text in data["models"].items():
        print(f"  {name:9s} {text}")
    print("versions: " + ", ".join(f"{k} {v or '-'}" for k, v in data["versions"].items()))
    return 0


# ---- demo -----------------------------------------------------------------------------------------

def demo_scene() -> dict:
    """The demo's scene on the built-in model: sky, a grass ground (dpmpp_2m) and a brick wall (heun),
    as ``model, latent, base, regions`` keywords of a session (also docs/make_run_gif.py's scene)."""
    import numpy as np

    import regional_widgets as rw

    model = rw.models.ToyWorld()
    ground, wall = np.zeros((64, 64), np.float32), np.zeros((64, 64), np.float32)
    ground[40:], wall[16:48, 8:28] = 1, 1
    base = rw.SamplerConfig(sampler="euler", scheduler="karras", cfg=2.0, positive="sky")
    regions = [rw.Region(ground, rw.SamplerConfig(sampler="dpmpp_2m", scheduler="karras", cfg=2.0, positive="grass")),
               rw.Region(wall, rw.SamplerConfig(sampler="heun", scheduler="karras", cfg=2.0, positive="brick"))]
    return {"model": model, "latent": rw.empty_latent(model, 64, 64), "base": base, "regions": regions}


def demo(out: Path, steps: int, seed: int, dpi: int = 110) -> None:
    """A regional scene on the built-in model: the per-step strip and the schedules as PNGs."""
    import matplotlib

    matplotlib.use("Agg")
    import regional_widgets as rw

    session = rw.RegionalSamplerSession.regional_sampler(**demo_scene(), seed=seed, steps=steps)
    fig = rw.plot.step_strip(session, every=max(1, steps // 10))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    sched_path = out.with_name(out.stem + "_schedules.png")
    rw.plot.schedule(session).savefig(sched_path, dpi=dpi)
    print(f"wrote {out} and {sched_path}: {session.status}")


def cmd_demo(args) -> int:
    if args.steps < 1:
        raise UsageError(f"--steps {args.steps}: expected at least 1")
    if args.out.suffix.lower() not in IMAGE_SUFFIXES:
        raise UsageError(f"--out {args.out}: expected an image file name ({', '.join(IMAGE_SUFFIXES)})")
    demo(args.out, args.steps, args.seed, args.dpi)
    return 0


# ---- entry point ----------------------------------------------------------------------------------

def parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="Regional diffusion sampling (Impact Pack's RegionalSampler), step by step.")
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="{run,info,demo}")

    r = sub.add_parser("run", help="run a saved session folder or a ComfyUI workflow or image to an image",
                       description="Run SOURCE (a session folder, a ComfyUI workflow .json in API or editor format, "
                                   "or a ComfyUI .png carrying its workflow) to the end and write the result.")
    r.add_argument("source", metavar="SOURCE",
                   help="a session folder (session.save), a ComfyUI workflow .json or a ComfyUI image .png")
    r.add_argument("--out", required=True, help="the result image (PNG)")
    r.add_argument("--model", default=None,
                   help="'toyworld' or a diffusers folder; default: the model a session folder names (a ToyWorld, or "
                        "a diffusers folder on this disk), else toyworld")
    r.add_argument("--no-model-check", action="store_true",
                   help="run a session folder on --model even where it names another model")
    r.add_argument("--steps-gif", default=None, metavar="PATH", help="an animation of the run (.gif, or .mp4 with ffmpeg)")
    r.add_argument("--fps", type=float, default=4, help="frames per second of --steps-gif (default 4)")
    r.add_argument("--strip", default=None, metavar="PATH", help="the x0 prediction per step as one PNG")
    r.add_argument("--json", action="store_true", help="print a JSON summary (status, timings, detail ratios)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    r.set_defaults(func=cmd_run)

    i = sub.add_parser("info", help="list samplers, schedulers, models and versions")
    i.add_argument("--json", action="store_true", help="as JSON")
    i.set_defaults(func=cmd_info)

    d = sub.add_parser("demo", help="render a regional scene on the built-in model to a PNG")
    d.add_argument("--out", type=Path, default=Path("out/demo.png"))
    d.add_argument("--steps", type=int, default=20)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--dpi", type=int, default=110)
    d.set_defaults(func=cmd_demo)
    return p


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("regional-widgets")
    except metadata.PackageNotFoundError:
        return "unknown"


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except UsageError as err:
        print(f"{PROG} {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG} {args.command}: interrupted", file=sys.stderr)
        return 130
