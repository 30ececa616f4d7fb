"""Cheap previews (`models.base.preview_rgb`): the Inspector, the canvas background and `rw.plot` never
call a model's full ``decode`` (the VAE on a real model) while stepping, unless the Inspector is asked to."""
import matplotlib
import numpy as np
import pytest
import torch

import regional_widgets as rw
from regional_widgets import plot
from regional_widgets.models.base import preview_rgb
from regional_widgets.widgets import Inspector, MaskCanvas

from .sessions import MODEL, make_session

matplotlib.use("Agg")


class CountingModel:
    """ToyWorld with a ``decode_preview`` (shown inverted, so either picture is recognisable) and
    counters of ``decode`` and ``decode_preview`` calls."""

    def __init__(self, model=MODEL, preview=True):
        self._model, self.decodes, self.previews = model, 0, 0
        if preview:
            self.decode_preview = self._preview

    def __getattr__(self, name):
        return getattr(self._model, name)

    def __call__(self, x, sigma, cond):
        return self._model(x, sigma, cond)

    def call_batch(self, x, sigma, conds):
        return self._model.call_batch(x, sigma, conds)

    def decode(self, latent):
        self.decodes += 1
        return self._model.decode(latent)

    def _preview(self, latent):
        self.previews += 1
        return 1 - self._model.decode(latent)


def test_preview_rgb_takes_the_preview_when_there_is_one():
    latent = make_session().latent + 0.3
    model = CountingModel()
    torch.testing.assert_close(preview_rgb(model, latent), 1 - MODEL.decode(latent))
    assert (model.decodes, model.previews) == (0, 1)
    torch.testing.assert_close(preview_rgb(model, latent, full=True), MODEL.decode(latent))
    assert (model.decodes, model.previews) == (1, 1)
    plain = CountingModel(preview=False)  # ToyWorld itself: its decode is the cheap picture
    torch.testing.assert_close(preview_rgb(plain, latent), MODEL.decode(latent))
    assert plain.decodes == 1 and not hasattr(plain, "decode_preview")


def test_stepping_with_the_inspector_calls_decode_only_when_asked():
    model = CountingModel()
    session = make_session(model)
    inspector = Inspector(session, backend="image")
    assert inspector.decode_with_vae is False and inspector.vae_toggle.value is False
    session.step()
    session.step()
    assert model.decodes == 0 and model.previews >= 4  # latent and x0 prediction, every refresh
    np.testing.assert_allclose(inspector.images["decoded"], 1 - MODEL.decode(session.latent)[0].numpy())

    inspector.vae_toggle.value = True  # the "decode with VAE" toggle: the views switch at once
    assert inspector.decode_with_vae and model.decodes == 2
    np.testing.assert_allclose(inspector.images["decoded"], MODEL.decode(session.latent)[0].numpy())
    np.testing.assert_allclose(inspector.images["denoised"], MODEL.decode(session.denoised)[0].numpy())
    previews = model.previews
    session.step()
    assert model.decodes > 2 and model.previews == previews

    inspector.vae_toggle.value = False
    decodes = model.decodes
    session.step()
    assert model.decodes == decodes and model.previews > previews


def test_canvas_background_and_plots_use_the_preview(tmp_path):
    model = CountingModel()
    session = make_session(model)
    session.step()
    canvas = MaskCanvas(session)
    want = ((1 - MODEL.decode(session.latent)[0]).numpy() * 255).round().astype(np.uint8)
    assert np.array_equal(canvas.background_rgb(), want)
    plot.step_strip(session)  # the CLI's --strip
    anim = plot.animate(session, panels=("latent", "x0"))  # the CLI's --steps-gif
    plot.save_animation(anim, tmp_path / "steps.gif")
    assert model.decodes == 0 and model.previews > 0 and len(anim.steps) == session.num_steps
    matplotlib.pyplot.close("all")


@pytest.mark.parametrize("latent", ["pixels", "sd3"])
def test_previews_compose_with_the_flow_picture(latent):
    flow = rw.models.ToyWorld(latent, n_exemplars=40, image_size=32, prediction="flow")
    model = CountingModel(flow)
    s = rw.RegionalSamplerSession(model, rw.empty_latent(flow, 32, 32), base=rw.SamplerConfig(positive="sky"),
                                  steps=4)
    inspector = Inspector(s, backend="image")
    s.substep()  # leftover noise: the picture is (1 - sigma) * latent, previewed
    np.testing.assert_allclose(inspector.images["decoded"], 1 - flow.decode(plot.picture(s))[0].numpy(), atol=1e-6)
    assert not np.allclose(inspector.images["decoded"], 1 - flow.decode(s.latent)[0].numpy(), atol=1e-3)
    assert model.decodes == 0
