"""`regional_widgets.plot`: animations of a run, and the plotting layer stays free of the widgets."""
import os
import subprocess
import sys
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from PIL import Image

matplotlib.use("Agg")

import regional_widgets as rw  # noqa: E402
from regional_widgets import plot  # noqa: E402

ROOT = Path(__file__).parents[1]
MODEL = rw.models.ToyWorld()


def make_session(steps=5):
    ground = np.zeros((64, 64), np.float32)
    ground[40:] = 1
    base = rw.SamplerConfig(sampler="euler", scheduler="karras", cfg=2.0, positive="sky")
    region = rw.Region(ground, rw.SamplerConfig(sampler="dpmpp_2m", scheduler="karras", cfg=2.0, positive="grass"))
    return rw.RegionalSamplerSession(MODEL, rw.empty_latent(MODEL, 64, 64), base=base, regions=[region], steps=steps)


@pytest.mark.parametrize("every, steps_shown", [(1, [1, 2, 3, 4, 5]), (2, [2, 4, 5])])
def test_animate_writes_a_gif_with_one_frame_per_step_shown(tmp_path, every, steps_shown):
    session = make_session(steps=5)
    anim = plot.animate(session, panels=("latent", "x0", "sigma_map"), fps=5, every=every)
    assert anim.steps == steps_shown
    assert session.done  # left at the end of the run, like step_strip
    path = plot.save_animation(anim, tmp_path / "run.gif")
    with Image.open(path) as gif:
        assert gif.n_frames == len(steps_shown)
        assert gif.info["duration"] == 200  # 5 fps
        gif.seek(len(steps_shown) - 1)
        last = np.asarray(gif.convert("RGB"))
    assert last.shape[1] > last.shape[0] > 100  # three panels side by side
    assert last.std() > 10  # a picture, not a blank frame


def test_animate_panels_and_arguments_are_checked(tmp_path):
    session = make_session(steps=2)
    anim = plot.animate(session, panels=("masks", "times_map"))
    assert anim.steps == [1, 2]
    with Image.open(plot.save_animation(anim, tmp_path / "masks.gif")) as gif:
        assert gif.n_frames == 2
    with pytest.raises(ValueError, match="panels"):
        plot.animate(session, panels=("latent", "noise"))
    with pytest.raises(ValueError, match="every"):
        plot.animate(session, every=0)
    with pytest.raises(ValueError, match="fps"):
        plot.animate(session, fps=0)


def test_save_animation_mp4_needs_ffmpeg_and_other_names_are_refused(tmp_path):
    from matplotlib.animation import FFMpegWriter

    anim = plot.animate(make_session(steps=2))
    if FFMpegWriter.isAvailable():
        path = plot.save_animation(anim, tmp_path / "run.mp4")
        assert Path(path).stat().st_size > 1000
    else:
        with pytest.raises(RuntimeError, match="ffmpeg"):
            plot.save_animation(anim, tmp_path / "run.mp4")
    with pytest.raises(ValueError, match=r"\.gif or \.mp4"):
        plot.save_animation(anim, tmp_path / "run.avi")
    assert not (tmp_path / "run.avi").exists()  # nothing half-written
    plot.save_animation(anim, tmp_path / "run.gif")  # and the animation still saves


def test_plot_does_not_import_the_widgets():
    """The palette is plain data in `regional_widgets.colors`; plots must not pull in ipycanvas."""
    code = ("import sys, regional_widgets.plot as p; p.palette(3); p.mask_overlay([[[1.0]], [[0.0]]]);"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('ipycanvas', 'ipywidgets')"
            " or m.startswith('regional_widgets.widgets')))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_widgets_palette_is_the_colors_module():
    from regional_widgets import colors
    from regional_widgets.widgets import palette

    assert palette.region_color is colors.region_color and palette.REGION_COLORS is colors.REGION_COLORS
    np.testing.assert_allclose(plot.palette(2)[1], np.array(colors.region_color(1)) / 255)
