"""Small sessions for the widget tests (ToyWorld, 64 x 64 pixels, 4 steps, two regions)."""
import numpy as np

import regional_widgets as rw

MODEL = rw.models.ToyWorld(n_exemplars=60, image_size=64)
N = 64


def masks():
    bottom = np.zeros((N, N), np.float32)
    bottom[40:] = 1
    left = np.zeros((N, N), np.float32)
    left[:, :20] = 1
    return bottom, left


def make_session(model=MODEL, steps=4, **params):
    bottom, left = masks()
    return rw.RegionalSamplerSession(
        model, rw.empty_latent(MODEL, N, N), base=rw.SamplerConfig(positive="sky"),
        regions=[rw.Region(bottom, rw.SamplerConfig(positive="grass")),
                 rw.Region(left, rw.SamplerConfig(positive="brick"))], steps=steps, **params)


class FailingModel:
    """ToyWorld that raises from its denoiser while ``fail`` is set (a model error mid-run)."""

    def __init__(self, model=MODEL):
        self._model, self.fail = model, False

    def __getattr__(self, name):
        return getattr(self._model, name)

    def _check(self):
        if self.fail:
            raise RuntimeError("boom: the model failed")

    def __call__(self, x, sigma, cond):
        self._check()
        return self._model(x, sigma, cond)

    def call_batch(self, x, sigma, conds):
        self._check()
        return self._model.call_batch(x, sigma, conds)
