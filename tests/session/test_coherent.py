"""Coherent mode: detail kept, one noise level, order-free blends, batched calls, same session API."""
import warnings

import numpy as np
import pytest
import torch

import regional_widgets as rw
from regional_widgets.models.base import OneCondModel
from regional_widgets.sampling import SAMPLER_NAMES
from regional_widgets.sampling.samplers import get_sampler

MODEL = rw.models.ToyWorld(mixture_variance=0.01, image_size=32, n_exemplars=200)
BASE = rw.SamplerConfig(sampler="euler", scheduler="karras", cfg=1.0, positive="sky")
WORDS = ["grass", "brick", "water"]


def masks(n):
    areas = [(slice(16, 32), slice(0, 32)), (slice(0, 12), slice(0, 12)), (slice(0, 12), slice(20, 32))]
    out = []
    for rows, cols in areas[:n]:
        m = np.zeros((32, 32), np.float32)
        m[rows, cols] = 1
        out.append(m)
    return out


def session(sampler, n_regions=1, seed=0, order=None, **params):
    regions = [rw.Region(m, rw.SamplerConfig(sampler=sampler, scheduler="karras", cfg=1.0, positive=w))
               for m, w in zip(masks(n_regions), WORDS)]
    if order:
        regions = [regions[k] for k in order]
    params.setdefault("steps", 12)
    return rw.RegionalSamplerSession(MODEL, rw.empty_latent(MODEL, 32, 32), base=BASE, regions=regions,
                                     mode="coherent", noise_seed=seed, **params)


DETAIL_MODEL = rw.models.ToyWorld(mixture_variance=0.01)  # 64 px: regions large enough to measure
DETAIL_AREAS = [(slice(40, 64), slice(0, 64)), (slice(0, 24), slice(0, 28)), (slice(0, 24), slice(36, 64))]


def mean_ratios(sampler, n_regions, seeds=(0, 1, 2), words=WORDS, base=BASE):
    """The issue's measurement: 20 karras steps, mean over seeds, one ratio per region."""
    ratios = []
    for seed in seeds:
        regions = []
        for (rows, cols), word in zip(DETAIL_AREAS[:n_regions], words):
            m = np.zeros((64, 64), np.float32)
            m[rows, cols] = 1
            regions.append(rw.Region(m, rw.SamplerConfig(sampler=sampler, scheduler="karras", cfg=1.0, positive=word)))
        s = rw.RegionalSamplerSession(DETAIL_MODEL, rw.empty_latent(DETAIL_MODEL, 64, 64), base=base, regions=regions,
                                      steps=20, mode="coherent", noise_seed=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ratios.append(rw.detail_ratios(s))
    return np.mean(ratios, axis=0)


OWN_GRID = ("dpm_fast", "dpm_adaptive")  # reported separately (benchmarks/coherent.py)


# CFG++ samplers take their noise direction from the *unconditional* prediction of the whole
# composite. ToyWorld memorises whole pictures, so that prediction of a sky-and-grass composite is
# one whole exemplar, sky or grass everywhere, and a region whose surroundings show another
# material inherits that picture's content (coherent ratios 1.5-160 with the scene above; faithful
# 9-130, where the plain samplers give 0.6: it is the model, not the blend). A convolutional
# model's unconditional prediction is local. So the CFG++ family is measured where the
# surroundings agree: base and regions share one prompt, the negative stays "" (U != C).
AGREEING = dict(words=["grass"] * 3, base=rw.SamplerConfig(sampler="euler", scheduler="karras", cfg=1.0,
                                                           positive="grass"))


# er_sde's plain run is the reference's, and there its first seeded draw *is* the initial noise (both
# come from the seed's CPU stream), which leaves er_sde's result ~25% further from the exemplars
# (0.0114 vs 0.0090 with another sampler seed). Coherent mode draws fresh noise per step, so its
# ratio is ~0.82: better than plain, never worse, hence the lower floor for it alone.
FLOOR = {"er_sde": 0.75}


@pytest.mark.parametrize("sampler", [s for s in SAMPLER_NAMES if s not in OWN_GRID])
def test_every_region_is_as_detailed_as_a_plain_run(sampler):
    scene = AGREEING if get_sampler(sampler).uncond else {}
    for n_regions in (1, 3):
        ratios = mean_ratios(sampler, n_regions, **scene)
        assert np.all((ratios >= FLOOR.get(sampler, 0.9)) & (ratios <= 1.1)), (sampler, n_regions, ratios)


@pytest.mark.parametrize("sampler", ["euler_cfg_pp", "dpmpp_2m_cfg_pp", "res_multistep_cfg_pp",
                                     "gradient_estimation_cfg_pp", "dpmpp_2s_ancestral_cfg_pp"])
def test_a_cfg_pp_region_over_the_whole_image_is_a_plain_cfg_pp_run(sampler):
    """The region's CFG++ steps get the real unconditional prediction, from the batched first call."""
    from regional_widgets.coherent import StepNoise
    from regional_widgets.models.base import cfg_denoiser
    from regional_widgets.sampling.noise import is_max_denoise, noise_scaling, prepare_noise
    from regional_widgets.sampling.samplers import sample

    config = rw.SamplerConfig(sampler=sampler, scheduler="karras", cfg=2.0, positive="grass")
    whole = rw.Region(np.ones((32, 32), np.float32), config)
    s = rw.RegionalSamplerSession(MODEL, rw.empty_latent(MODEL, 32, 32), base=BASE, regions=[whole], steps=6,
                                  mode="coherent", noise_seed=3, overlap_factor=1)
    got = s.run()
    sigmas = s.context.plan.sigmas
    latent = s.latent_image
    x = noise_scaling(sigmas[0], prepare_noise(latent, 3), latent, is_max_denoise(MODEL.sigmas[-1], sigmas[0]))
    denoise = cfg_denoiser(MODEL, MODEL.encode("grass"), MODEL.encode(""), 2.0)

    def step_noise(sigma, sigma_next):  # coherent mode's shared per-step draw (StepNoise)
        i = int((sigmas == sigma).nonzero()[0, 0])
        return StepNoise(x, 3, i)()

    noise = step_noise if get_sampler(sampler).noise else None
    want = sample(denoise, x, sigmas, sampler, seed=3, noise_sampler=noise)
    assert torch.equal(got, want)
    wrong = sample(lambda x, sigma: denoise(x, sigma), x, sigmas, sampler, seed=3, noise_sampler=noise)  # U = D
    assert (got - wrong).abs().max().item() > 1e-5  # ~1e-3, 2.5e-5 for the ancestral one


def test_the_faithful_mode_is_measurably_worse_where_the_issue_says():
    faithful = rw.RegionalSamplerSession(MODEL, rw.empty_latent(MODEL, 32, 32), base=BASE, steps=12, regions=[
        rw.Region(masks(1)[0], rw.SamplerConfig(sampler="euler_ancestral", scheduler="karras", cfg=1.0, positive="grass"))])
    assert rw.detail_ratios(faithful)[0] > 3  # the reused noise
    under = rw.RegionalSamplerSession(MODEL, rw.empty_latent(MODEL, 32, 32), base=BASE, steps=12, regions=[
        rw.Region(masks(1)[0], rw.SamplerConfig(sampler="dpmpp_2m", scheduler="karras", cfg=1.0, positive="grass"))])
    assert rw.detail_ratios(under)[0] < 0.9  # under-noised, history lost


def test_effective_sigma_is_uniform_after_every_step():
    s = session("dpmpp_2m", 3)
    while not s.done:
        s.step()
        level = s.sigma_map
        assert float(level.max() - level.min()) <= 0.01 * max(float(level.max()), 1e-12)
        assert torch.allclose(s.times_map, torch.ones_like(s.times_map))


def test_weights_partition_unity_with_overlaps_and_feathering():
    from regional_widgets.coherent import regional_weights

    m = masks(3)
    m[1][8:20, 4:14] = 1  # overlaps region 1
    weights = regional_weights([torch.from_numpy(x) for x in m], (32, 32), 6)
    assert torch.allclose(sum(weights), torch.ones(32, 32), atol=1e-6)
    assert all(float(w.min()) >= 0 for w in weights)
    assert 0 < float(weights[1][14, 8]) < 1  # feathered / shared


def test_disjoint_masks_do_not_depend_on_region_order():
    a = session("dpmpp_2m", 3).run()
    b = session("dpmpp_2m", 3, order=[2, 0, 1]).run()
    assert (a - b).abs().max().item() <= 1e-6


def test_batched_and_one_by_one_calls_agree():
    regions = [rw.Region(m, rw.SamplerConfig(sampler="heun", cfg=2.0, positive=w)) for m, w in zip(masks(3), WORDS)]
    fallback = OneCondModel(MODEL)
    a = rw.RegionalSamplerSession(MODEL, rw.empty_latent(MODEL, 32, 32), base=BASE, regions=regions, steps=6,
                                  mode="coherent").run()
    b = rw.RegionalSamplerSession(fallback, rw.empty_latent(MODEL, 32, 32), base=BASE, regions=regions, steps=6,
                                  mode="coherent").run()
    assert (a - b).abs().max().item() <= 1e-6
    # per step: the base (euler, cfg 1) and 3 regions x 2 conds with one shared "" negative -> 5 distinct
    # conds in the first evaluation, plus heun's second evaluation per region (2 conds each), except on
    # the last step (to sigma 0), where heun makes one evaluation
    assert fallback.calls == 6 * 5 + 5 * (3 * 2)


def test_stepping_goto_and_history_as_in_faithful_mode():
    s = session("dpmpp_3m_sde", 2)
    final = s.run().clone()
    s.goto(4)
    assert s.step_index == 4 and torch.equal(s.run(), final)
    stepped = session("dpmpp_3m_sde", 2)
    while not stepped.done:
        stepped.step()
    assert torch.equal(stepped.result, final)
    assert s.history.nbytes > 0


def test_save_load_continue_in_coherent_mode(tmp_path):
    for sampler in ("lms", "dpmpp_3m_sde", "euler_ancestral", "deis", "res_multistep_cfg_pp"):
        expected = session(sampler, 2).run()
        s = session(sampler, 2)
        for _ in range(5):
            s.substep()
        s.save(tmp_path / sampler)
        loaded = rw.RegionalSamplerSession.load(tmp_path / sampler, MODEL)
        assert loaded.mode == "coherent"
        assert torch.equal(loaded.run(), expected), sampler


def test_status_says_what_coherent_mode_ignores():
    regions = [rw.Region(masks(1)[0], rw.SamplerConfig(scheduler="exponential", positive="grass"))]
    s = rw.RegionalSamplerSession(MODEL, rw.empty_latent(MODEL, 32, 32), base=BASE, regions=regions, steps=4,
                                  mode="coherent")
    assert "region 1 (exponential)" in s.status and "recovery" in s.status
    with pytest.raises(ValueError, match="mode.*coherent"):
        s.mode = "creative"


def test_regional_sampler_node_in_coherent_mode_runs_base_only_steps_first():
    regions = [rw.Region(masks(1)[0], rw.SamplerConfig(positive="grass"))]
    s = rw.RegionalSamplerSession.regional_sampler(MODEL, rw.empty_latent(MODEL, 32, 32), base=BASE,
                                                   regions=regions, steps=6, base_only_steps=2, mode="coherent")
    s.step()
    s.step()
    assert float(s.masks[1].max()) == 1.0  # the region's weight is used once the base-only steps are over
    out = s.run()
    assert out.shape == (1, 3, 32, 32) and torch.isfinite(out).all()


@pytest.mark.parametrize("sampler", ["dpmpp_2m", "dpm_fast"])
def test_denoised_after_a_step_is_the_blend_of_the_parts_predictions(sampler):
    # issue 16: the x0 shown after a step is sum_r w_r x0_r, the same partition of unity as the latent
    s = session(sampler, 2)
    for _ in range(3):
        s.step()
    parts = []
    while s.substep()[0] != "blend":
        parts.append(s.denoised.clone())
    assert len(parts) == 3  # the base, then each region
    by_hand = sum(w * d for w, d in zip(s.masks, parts))
    assert torch.allclose(s.denoised, by_hand, atol=1e-5)
    assert not torch.allclose(s.denoised, parts[-1], atol=1e-3)  # not the last region's prediction


def test_denoised_blend_survives_save_and_load_mid_step(tmp_path):
    s = session("dpmpp_2m", 2)
    s.step()
    s.substep()
    s.substep()
    s.save(tmp_path / "mid")
    loaded = rw.RegionalSamplerSession.load(tmp_path / "mid", MODEL)
    s.step()
    loaded.step()
    assert torch.equal(loaded.denoised, s.denoised) and torch.equal(loaded.latent, s.latent)


def test_start_at_step_past_steps_is_a_parameter_error_in_coherent_mode():
    with pytest.raises(rw.ParameterError, match="start_at_step"):
        session("euler", 1, steps=4, start_at_step=4)
    s = session("euler", 1, steps=4)
    with pytest.raises(rw.ParameterError, match="start_at_step"):
        s.start_at_step = 6
    assert s.start_at_step == 0
