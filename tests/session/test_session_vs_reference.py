"""The session against an independent straight-line loop (tests/session/reference_loop.py)."""
import numpy as np
import pytest
import torch

import regional_widgets as rw
from tests.session import reference_loop

MODEL = rw.models.ToyWorld(n_exemplars=120, image_size=32)


def _mask(rows, cols):
    m = np.zeros((32, 32), np.float32)
    m[rows, cols] = 1.0
    return m


DISJOINT = [_mask(slice(20, 32), slice(0, 32)), _mask(slice(0, 12), slice(0, 10))]
OVERLAP = [_mask(slice(10, 32), slice(0, 20)), _mask(slice(4, 24), slice(12, 32)), _mask(slice(0, 8), slice(0, 32))]
WORDS = ["grass", "brick", "water"]


def regions(masks, samplers, variation=0.0):
    return [rw.Region(m, rw.SamplerConfig(sampler=s, scheduler=sch, cfg=3.0, positive=w), variation_seed=5 + j,
                      variation_strength=variation)
            for j, (m, s, sch, w) in enumerate(zip(masks, samplers, ["karras", "normal", "exponential"], WORDS))]


BASE = rw.SamplerConfig(sampler="euler", scheduler="normal", cfg=4.0, positive="sky")

ADVANCED_CASES = [
    dict(masks=DISJOINT[:1], samplers=["euler"], params=dict()),
    dict(masks=DISJOINT, samplers=["dpmpp_2m", "euler_ancestral"], params=dict(restore_latent=False)),
    dict(masks=OVERLAP, samplers=["heun", "dpmpp_2m_sde", "uni_pc"], params=dict(return_with_leftover_noise=True)),
    dict(masks=OVERLAP[:2], samplers=["dpmpp_2m_sde", "lms"],
         params=dict(start_at_step=2, end_at_step=5, additional_mode="ratio additional", overlap_factor=3)),
    dict(masks=OVERLAP[:2], samplers=["uni_pc", "dpm_2"],
         params=dict(restore_latent=False, return_with_leftover_noise=True, additional_mode="DISABLE")),
    dict(masks=DISJOINT, samplers=["dpmpp_sde", "euler"], variation=0.4,
         params=dict(additional_sampler="heun", additional_sigma_ratio=0.5, add_noise=True, noise_seed=3)),
    # CFG++ (the unconditional channel through the masked calls) and RES multistep
    dict(masks=OVERLAP[:2], samplers=["euler_ancestral_cfg_pp", "res_multistep"],
         params=dict(return_with_leftover_noise=True)),
    dict(masks=DISJOINT, samplers=["dpmpp_2m_cfg_pp", "gradient_estimation_cfg_pp"], params=dict(restore_latent=False)),
]


@pytest.mark.parametrize("case", ADVANCED_CASES, ids=lambda c: "+".join(c["samplers"]))
def test_advanced_matches_the_straight_line_loop(case):
    latent = rw.empty_latent(MODEL, 32, 32)
    regs = regions(case["masks"], case["samplers"], case.get("variation", 0.0))
    params = dict(steps=6, noise_seed=1, **{k: v for k, v in case["params"].items() if k != "noise_seed"})
    if "noise_seed" in case["params"]:
        params["noise_seed"] = case["params"]["noise_seed"]
    got = rw.RegionalSamplerSession(MODEL, latent, base=BASE, regions=regs, **params).run()
    want = reference_loop.advanced(MODEL, latent, base=BASE, regions=regs, **params)
    assert (got - want).abs().max().item() <= 1e-6


REGIONAL_CASES = [
    dict(masks=DISJOINT, samplers=["euler", "dpmpp_2m"], params=dict()),
    dict(masks=OVERLAP, samplers=["euler_ancestral", "heun", "dpmpp_3m_sde"], params=dict(base_only_steps=1, seed_2nd=9,
                                                                                         seed_2nd_mode="fixed")),
    dict(masks=DISJOINT[:1], samplers=["uni_pc"], params=dict(base_only_steps=0, restore_latent=False)),
    dict(masks=OVERLAP[:2], samplers=["lms", "dpmpp_sde"], params=dict(denoise=0.5, seed_2nd=4,
                                                                      seed_2nd_mode="seed+seed_2nd")),
    dict(masks=OVERLAP[:2], samplers=["res_multistep_ancestral_cfg_pp", "dpmpp_2s_ancestral_cfg_pp"],
         params=dict(base_only_steps=1)),
]


@pytest.mark.parametrize("case", REGIONAL_CASES, ids=lambda c: "+".join(c["samplers"]))
def test_regional_sampler_matches_the_straight_line_loop(case):
    latent = rw.empty_latent(MODEL, 32, 32)
    regs = regions(case["masks"], case["samplers"], 0.3)
    params = dict(steps=5, seed=2, **case["params"])
    got = rw.RegionalSamplerSession.regional_sampler(MODEL, latent, base=BASE, regions=regs, **params).run()
    want = reference_loop.regional(MODEL, latent, base=BASE, regions=regs, **params)
    assert (got - want).abs().max().item() <= 1e-6


def test_one_shot_functions_equal_the_session_bitwise():
    latent = rw.empty_latent(MODEL, 32, 32)
    regs = regions(DISJOINT, ["euler", "dpmpp_2m"])
    a = rw.regional_sampler_advanced(MODEL, latent, base=BASE, regions=regs, steps=5)
    s = rw.RegionalSamplerSession(MODEL, latent, base=BASE, regions=regs, steps=5)
    while not s.done:
        s.step()
    assert torch.equal(a, s.result)
    b = rw.regional_sampler(MODEL, latent, base=BASE, regions=regs, steps=5)
    assert torch.equal(b, rw.RegionalSamplerSession.regional_sampler(MODEL, latent, base=BASE, regions=regs, steps=5).run())


# Issue 12's samplers in the regional loop (one of each new family of theirs; a _gpu name through
# the recovery path, which Impact takes for it exactly as for the plain name).
NEW_SAMPLER_CASES = [
    dict(masks=OVERLAP[:2], samplers=["er_sde", "seeds_2"], params=dict()),
    dict(masks=DISJOINT, samplers=["sa_solver", "dpmpp_2m_sde_heun"], params=dict(return_with_leftover_noise=True)),
    dict(masks=OVERLAP, samplers=["seeds_3", "sa_solver_pece", "dpmpp_2m_sde_gpu"],
         params=dict(additional_mode="ratio additional", additional_sigma_ratio=0.4)),
    dict(masks=DISJOINT, samplers=["dpmpp_sde_gpu", "dpmpp_3m_sde_gpu"], variation=0.3,
         params=dict(additional_sampler="AUTO", additional_sigma_ratio=0.5, start_at_step=1)),
]


@pytest.mark.parametrize("case", NEW_SAMPLER_CASES, ids=lambda c: "+".join(c["samplers"]))
def test_new_samplers_match_the_straight_line_loop(case):
    latent = rw.empty_latent(MODEL, 32, 32)
    regs = regions(case["masks"], case["samplers"], case.get("variation", 0.0))
    params = dict(steps=6, noise_seed=1, **case["params"])
    session = rw.RegionalSamplerSession(MODEL, latent, base=BASE, regions=regs, **params)
    got = session.run()
    want = reference_loop.advanced(MODEL, latent, base=BASE, regions=regs, **params)
    assert (got - want).abs().max().item() <= 1e-6
    # the region samplers really ran (not a no-op), and differently from plain euler regions
    euler = rw.RegionalSamplerSession(MODEL, latent, base=BASE, regions=regions(case["masks"], ["euler"] * 3),
                                      **params).run()
    assert (got - euler).abs().max().item() > 1e-3


@pytest.mark.parametrize("name", ["dpmpp_sde", "dpmpp_2m_sde", "dpmpp_3m_sde"])
def test_gpu_names_run_as_the_plain_ones_on_cpu_recovery_included(name):
    latent = rw.empty_latent(MODEL, 32, 32)
    params = dict(steps=5, noise_seed=2, additional_mode="ratio between", additional_sigma_ratio=0.3)
    plain = rw.RegionalSamplerSession(MODEL, latent, base=BASE, regions=regions(DISJOINT, [name] * 2), **params)
    gpu = rw.RegionalSamplerSession(MODEL, latent, base=BASE, regions=regions(DISJOINT, [name + "_gpu"] * 2), **params)
    assert torch.equal(plain.run(), gpu.run())
    off = rw.RegionalSamplerSession(MODEL, latent, base=BASE, regions=regions(DISJOINT, [name + "_gpu"] * 2),
                                    **dict(params, additional_mode="DISABLE"))
    assert not torch.equal(gpu.result, off.run())  # the recovery pass ran for the _gpu name
