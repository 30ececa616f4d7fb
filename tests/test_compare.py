"""`rw.detail_ratios`: a region's distance to its prompt's exemplars over a plain run's, and where that
ratio means nothing (a plain run that lands exactly on an exemplar)."""
import math
import warnings

import numpy as np
import pytest

import regional_widgets as rw
from regional_widgets.compare import DetailRatioWarning, plain_error, region_error, region_scale

BASE = rw.SamplerConfig(sampler="euler", scheduler="karras", cfg=1.0, positive="sky")


def scene(model, sampler="dpmpp_2m"):
    mask = np.zeros((32, 32), np.float32)
    mask[16:, :] = 1
    region = rw.Region(mask, rw.SamplerConfig(sampler=sampler, scheduler="karras", cfg=1.0, positive="grass"))
    return rw.RegionalSamplerSession(model, rw.empty_latent(model, 32, 32), base=BASE, regions=[region], steps=8)


def test_a_plain_run_on_an_exemplar_gives_nan_and_says_why():
    """ToyWorld's default pictures are points: a plain run ends on one, its error is round-off (~1e-16)
    and the ratio over it was ~1e15. Now NaN, with a warning naming the region and the remedy."""
    model = rw.models.ToyWorld(image_size=32, n_exemplars=200)  # mixture_variance=0, the default
    session = scene(model)
    session.run()
    plain = plain_error(model, session, 1)
    assert plain < 1e-12 * region_scale(model, session.result, session.regions[0].mask, "grass")  # round-off
    with pytest.warns(DetailRatioWarning, match=r"region 1 \('grass'\).*mixture_variance"):
        ratios = rw.detail_ratios(session)
    assert len(ratios) == 1 and math.isnan(ratios[0])


def test_a_measurable_plain_run_keeps_its_ratio_bit_for_bit():
    model = rw.models.ToyWorld(image_size=32, n_exemplars=200, mixture_variance=0.01)
    session = scene(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DetailRatioWarning)
        ratios = rw.detail_ratios(session)  # runs the session first
    region = session.regions[0]
    want = region_error(model, session.result, region.mask, "grass") / plain_error(model, session, 1)
    assert ratios == [want] and 0.01 < want < 100
    assert plain_error(model, session, 1) > 1e-6 * region_scale(model, session.result, region.mask, "grass")


def test_region_scale_is_the_exemplars_mean_square_over_the_region():
    model = rw.models.ToyWorld(image_size=32, n_exemplars=200)
    latent = rw.empty_latent(model, 32, 32)
    whole = np.ones((32, 32), np.float32)
    exemplars = model.encode("grass").exemplars.view(-1, *latent.shape[1:])
    assert region_scale(model, latent, whole, "grass", erode=0) == pytest.approx(float((exemplars ** 2).mean()))
    with pytest.raises(ValueError, match="mask: the region is empty"):
        region_scale(model, latent, np.zeros((32, 32), np.float32), "grass")
