"""The wheel: built from the sources, it carries LICENSE and py.typed, and installs (not editable) into a
fresh virtual environment where ``python -m regional_widgets run`` runs a saved session."""
import json
import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import regional_widgets as rw

ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """``python -m build --wheel`` on a copy of the sources (the shared checkout gets no build/ folder)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "regional_widgets", src / "regional_widgets",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp_path_factory.mktemp("dist")
    done = subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", dist, src],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    wheels = list(dist.glob("regional_widgets-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_the_wheel_carries_the_licence_and_py_typed(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        info = f"regional_widgets-{rw.__version__}.dist-info"
        assert "regional_widgets/py.typed" in names
        assert f"{info}/licenses/LICENSE" in names, [n for n in names if "dist-info" in n]
        licence = z.read(f"{info}/licenses/LICENSE").decode()
        metadata = z.read(f"{info}/METADATA").decode()
    assert licence == (ROOT / "LICENSE").read_text()
    assert licence.startswith("MIT License") and "the regional_widgets authors" in licence
    assert "License-Expression: MIT" in metadata and "License-File: LICENSE" in metadata
    assert "regional_widgets/cli.py" in names and "regional_widgets/colors.py" in names
    for name in ("grass", "brick", "gravel", "README"):  # ToyWorld's default pictures need them
        assert any(n.startswith(f"regional_widgets/models/textures/{name}.") for n in names), name
    assert not [n for n in names if n.startswith(("tests/", "notebooks/", "scripts/"))]


def test_fresh_venv_installs_the_wheel_and_runs_a_saved_session(wheel, tmp_path):
    model = rw.models.ToyWorld()
    mask = np.zeros((64, 64), np.float32)
    mask[40:] = 1
    session = rw.RegionalSamplerSession(
        model, rw.empty_latent(model, 64, 64), base=rw.SamplerConfig(scheduler="karras", cfg=2.0, positive="sky"),
        regions=[rw.Region(mask, rw.SamplerConfig(scheduler="karras", cfg=2.0, positive="grass"))], steps=4)
    session.save(tmp_path / "saved")

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True, system_site_packages=False).create(env_dir)
    python = env_dir / "bin" / "python"
    constraint = tmp_path / "constraints.txt"  # the local torch build: nothing downloads a GPU torch
    constraint.write_text(f"torch=={torch.__version__.split('+')[0]}\n")
    install = subprocess.run([python, "-m", "pip", "install", "-q", "-c", constraint,
                              f"torch=={torch.__version__.split('+')[0]}", wheel],
                             cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert install.returncode == 0, install.stderr[-3000:]

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["MPLBACKEND"] = "Agg"
    where = subprocess.run([python, "-c", "import regional_widgets, sys; print(regional_widgets.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).resolve().is_relative_to(env_dir.resolve()), where.stdout  # not editable

    run = subprocess.run([python, "-m", "regional_widgets", "run", "saved", "--out", "x.png", "--json"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads(run.stdout)
    assert summary["status"] == "done" and summary["steps"] == 4 and len(summary["detail_ratios"]) == 1
    assert (tmp_path / "x.png").stat().st_size > 1000
