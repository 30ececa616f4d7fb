"""On a flow (CONST) model what a person sees is the picture, not the reference's x / (1 - sigma)
hand-over latents (spec model_families.md §2.1): plots, the Inspector and the canvas background."""
import matplotlib
import numpy as np
import pytest
import torch

import regional_widgets as rw
from regional_widgets import plot
from regional_widgets.models.base import display_latent
from regional_widgets.widgets import Inspector, MaskCanvas

matplotlib.use("Agg")


def session(prediction, latent="pixels"):
    model = rw.models.ToyWorld(latent, n_exemplars=80, image_size=32, prediction=prediction)
    mask = np.zeros((32, 32), np.float32)
    mask[16:] = 1
    regions = [rw.Region(mask, rw.SamplerConfig(sampler="euler", scheduler="simple", cfg=2.0, positive="grass"))]
    base = rw.SamplerConfig(sampler="euler", scheduler="simple", cfg=2.0, positive="sky")
    s = rw.RegionalSamplerSession(model, rw.empty_latent(model, 32, 32), base=base, regions=regions, steps=8)
    s.substep()  # the first base call: the base area is handed over as x / (1 - sigma_1) on flow
    return s


@pytest.mark.parametrize("latent", ["pixels", "sd3"])
def test_the_picture_is_one_minus_sigma_times_the_latent_on_flow(latent):
    s = session("flow", latent)
    fmt = rw.models.base.latent_format(s.model)
    want = fmt.process_out((1 - s.sigma_map) * fmt.to_model_space(s.latent))
    torch.testing.assert_close(plot.picture(s), want)
    base_area = s.sigma_map > 0.5
    assert float(s.latent.std()) > 5 * float(plot.picture(s)[..., base_area].std())  # far noisier raw
    assert 0.9 < float(s.sigma_map.max()) <= 1.0


def test_eps_pictures_are_the_latent_itself():
    s = session("eps")
    assert plot.picture(s) is s.latent and display_latent(s.model, s.latent, 0.5) is s.latent
    s.run()
    assert plot.picture(s, "result") is s.result


def test_flow_result_uses_the_noise_level_it_was_held_at():
    s = session("flow")
    s.run()  # restore_latent: the result is the composite from before the final call, at sigma_{end-1}
    state = s.history[s.cursor]
    assert state.result is state.base_latent
    want = display_latent(s.model, s.result, state.base_sigma_map)
    assert torch.equal(plot.picture(s, "result"), want) and not torch.equal(want, s.result)


def test_flow_figures_have_a_zero_to_one_sigma_axis(tmp_path):
    import matplotlib.pyplot as plt

    plt.switch_backend("Agg")  # an earlier widget test may have left an interactive backend
    s = session("flow")
    ax = plot.schedule(s).axes[0]
    assert ax.get_yscale() == "linear" and ax.get_ylim() == (-0.02, 1.02) and "0..1" in ax.get_ylabel()
    assert plot.schedule(session("eps")).axes[0].get_yscale() == "symlog"
    fig = plot.sigma_map(s)
    assert fig.axes[0].images[0].get_clim() == (0.0, 1.0) and "0..1" in fig.axes[0].get_title()
    fig.savefig(tmp_path / "map.png")
    plt.close("all")


def test_inspector_and_canvas_show_the_picture_on_flow():
    s = session("flow")
    inspector = Inspector(s, backend="image")
    assert np.allclose(inspector.images["decoded"], plot.rgb(s.model, plot.picture(s)))
    assert not np.allclose(inspector.images["decoded"], plot.rgb(s.model, s.latent))
    assert inspector._ims["sigma_map"].get_clim() == (0.0, 1.0)
    assert inspector.axes["schedule"].get_yscale() == "linear"
    canvas = MaskCanvas(s)
    rgb = (s.model.decode(plot.picture(s))[0].clamp(0, 1).numpy() * 255).round().astype(np.uint8)
    assert np.array_equal(canvas.background_rgb(), rgb)


def test_the_inspector_difference_view_compares_pictures_on_flow():
    s = session("flow")  # one base call done
    inspector = Inspector(s, backend="image")
    before = display_latent(s.model, s.history[0].latent, s.history[0].sigma_map)
    want = (plot.picture(s)[0] - before[0]).double().pow(2).mean(0).sqrt().numpy()
    assert np.allclose(inspector.call_changes()[0], want)
    raw = (s.latent[0] - s.history[0].latent[0]).double().pow(2).mean(0).sqrt().numpy()
    assert raw.max() > 3 * want.max()  # the hand-over latents would show mostly the 1 / (1 - sigma) rescale
