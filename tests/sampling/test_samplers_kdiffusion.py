"""The step-wise samplers against k-diffusion's own functions (MIT), used as the oracle.

Both sides get the same denoiser, start, sigmas and injected noise (a deterministic counter for
the ancestral samplers, identically built Brownian trees for the SDE ones), batch of 2, float32.
Cases: 3 denoisers x (karras 10, exponential 8) x slices (full; 4 steps ending at a positive
sigma; 1 step in the middle; the last step, to 0).

Measured max |ours - k-diffusion| over all cases (torch 2.13 CPU), final x / reported denoised:
    every sampler: 0 / 0 (bit-identical), except euler_ancestral 9.3e-10 / 0: its step to 0
    gives x = D where k-diffusion computes x + d (0 - sigma). That covers euler, heun, dpm_2,
    dpm_2_ancestral, lms (all steps but the last to 0), dpm_fast, dpm_adaptive (same accepted and
    rejected steps), dpmpp_2s_ancestral, dpmpp_2m.
    dpmpp_sde, dpmpp_2m_sde and dpmpp_3m_sde follow the reference's current float form (spec
    §3.5.4 b, bit-identical to its fixtures), the same math as k-diffusion's rounded differently:
    up to 1.8e-6 apart here (`SDE_TOL`).
The reference's deliberate differences are checked against the oracle's pieces instead:
``lms`` and ``euler_ancestral`` end with ``x = denoised``; dpmpp_2m_sde / dpmpp_3m_sde on a
1-step slice to 0 (k-diffusion raises UnboundLocalError there) give ``x = denoised`` too.
"""
import warnings

import pytest
import torch

from regional_widgets.sampling import samplers
from regional_widgets.sampling.noise import BrownianTreeNoiseSampler
from regional_widgets.sampling.schedules import calculate_sigmas, sd15_sigmas
from tests.oracles import gaussian_denoiser, load_k_diffusion_sampling, mixture_denoiser

KD = load_k_diffusion_sampling()
TOL = 1e-6
SDE_TOL = 5e-6  # the reference's float form of the SDE trio vs k-diffusion's (see above)
# k-diffusion's dpmpp_sde queries the tree at exp(-(-log sigma)), a rounding outside its ends.
pytestmark = pytest.mark.filterwarnings("ignore:Should have:UserWarning")

SAMPLERS = ("euler", "euler_ancestral", "heun", "dpm_2", "dpm_2_ancestral", "lms", "dpm_fast",
            "dpm_adaptive", "dpmpp_2s_ancestral", "dpmpp_sde", "dpmpp_2m", "dpmpp_2m_sde",
            "dpmpp_3m_sde")
SHAPE = (2, 4, 6, 6)
IDX = torch.arange(144, dtype=torch.float32).view(1, 4, 6, 6)
MU = 0.5 * torch.sin(1 + 0.9 * IDX)
DENOISERS = {
    "mixture2": mixture_denoiser([MU, -MU], 0.1),
    "mixture3": mixture_denoiser([torch.cos(0.3 * IDX), 0.7 * torch.sin(0.5 * IDX), 0.2 + 0 * IDX],
                                 0.02),
    "gaussian": gaussian_denoiser(0.8),
}
SCHEDULES = {"karras10": ("karras", 10), "exponential8": ("exponential", 8)}
SLICES = {"full": slice(None), "mid": slice(2, 7), "one": slice(3, 5), "last": slice(-2, None)}


class CounterNoise:
    """Deterministic 'noise': the k-th call gives 1.2 sin(0.61 idx + 1.7 k) over the batch."""

    def __init__(self):
        self.k = 0

    def __call__(self, sigma=None, sigma_next=None):
        self.k += 1
        idx = torch.arange(2 * 144, dtype=torch.float32).view(SHAPE)
        return 1.2 * torch.sin(0.61 * idx + 1.7 * self.k)


def make_noise(name, x, sigmas):
    kind = samplers.get_sampler(name).noise
    if kind == "default":
        return CounterNoise()
    if kind == "brownian":
        positive = sigmas[sigmas > 0]
        return BrownianTreeNoiseSampler(x, positive.min(), sigmas.max(), seed=1234)
    return None


def case_inputs(schedule, part):
    scheduler, steps = SCHEDULES[schedule]
    sigmas = calculate_sigmas(sd15_sigmas(), scheduler, steps)[SLICES[part]]
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(5)) * sigmas[0]
    return x, sigmas


def run_ours(name, model, x, sigmas):
    seen = []
    out = samplers.sample(model, x, sigmas, name, noise_sampler=make_noise(name, x, sigmas),
                          callback=lambda info: seen.append(info["denoised"]))
    return out, seen


def run_kdiffusion(name, model, x, sigmas):
    seen = []
    kwargs = {"callback": lambda info: seen.append(info["denoised"]), "disable": True}
    noise = make_noise(name, x, sigmas)
    if noise is not None:
        kwargs["noise_sampler"] = noise
    fn = getattr(KD, f"sample_{name}")
    if name in ("dpm_fast", "dpm_adaptive"):  # called as the reference calls them
        sigma_min = sigmas[-1] if sigmas[-1] > 0 else sigmas[-2]
        n = (len(sigmas) - 1,) if name == "dpm_fast" else ()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # its torch.tensor(a tensor)
            return fn(model, x, sigma_min, sigmas[0], *n, **kwargs), seen
    return fn(model, x, sigmas, **kwargs), seen


def max_diff(a, b):
    return (a - b).abs().max().item()


@pytest.mark.parametrize("part", SLICES)
@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("denoiser", DENOISERS)
@pytest.mark.parametrize("name", SAMPLERS)
def test_matches_k_diffusion(name, denoiser, schedule, part):
    model = DENOISERS[denoiser]
    x, sigmas = case_inputs(schedule, part)
    out, seen = run_ours(name, model, x, sigmas)
    ends_at_zero = sigmas[-1] == 0
    lone_last_step = ends_at_zero and len(sigmas) == 2
    if name == "lms" and ends_at_zero or name.endswith("m_sde") and lone_last_step:
        # k-diffusion integrates lms's last step / fails on a lone step to 0: compare up to the
        # last step, which must give exactly that step's denoised.
        if len(sigmas) > 2:
            before, _ = run_kdiffusion(name, model, x, sigmas[:-1])
            noise = make_noise(name, x, sigmas)
            assert max_diff(samplers.sample(model, x, sigmas[:-1], name, noise_sampler=noise),
                            before) <= (SDE_TOL if name.endswith("_sde") else TOL)
        assert torch.equal(out, seen[-1])
        return
    expected, expected_seen = run_kdiffusion(name, model, x, sigmas)
    if name == "euler_ancestral" and ends_at_zero:
        assert torch.equal(out, seen[-1])  # the reference's x = D; k-diffusion's Euler is ~equal
    tol = SDE_TOL if name.endswith("_sde") else TOL
    assert max_diff(out, expected) <= tol
    assert len(seen) == len(expected_seen)
    assert all(max_diff(a, b) <= tol for a, b in zip(seen, expected_seen))


@pytest.mark.parametrize("name", ("dpm_fast", "dpm_adaptive"))
def test_dpm_solver_on_a_last_step_slice(name):
    """A 1-step slice to 0 has sigma_min == sigma_max: dpm_fast calls the model once and keeps x,
    dpm_adaptive does nothing (no step at all)."""
    model = DENOISERS["mixture2"]
    x, sigmas = case_inputs("karras10", "last")
    state = samplers.start(name, x, sigmas)
    if name == "dpm_adaptive":
        assert state.done
        assert torch.equal(samplers.sample(model, x, sigmas, name), x)
        return
    state = samplers.step(model, state)
    assert state.done and torch.equal(state.x, x)
    assert max_diff(state.denoised, model(x, state.sigma * x.new_ones(2))) <= TOL  # x - sigma eps


@pytest.mark.parametrize("name", ("dpm_fast", "dpm_adaptive"))
def test_dpm_solver_zero_steps(name):
    x = torch.ones(SHAPE)
    state = samplers.start(name, x, torch.tensor([1.0]))
    assert state.done
    assert torch.equal(samplers.sample(DENOISERS["gaussian"], x, torch.tensor([1.0]), name), x)


@pytest.mark.parametrize("name", SAMPLERS)
def test_step_leaves_state_untouched(name):
    """Stepping one state twice gives the same result: memory and noise are never mutated."""
    model = DENOISERS["mixture3"]
    x, sigmas = case_inputs("karras10", "full")
    state = samplers.start(name, x, sigmas, seed=3)
    for _ in range(3):
        state = samplers.step(model, state)
    a, b = samplers.step(model, state), samplers.step(model, state)
    assert torch.equal(a.x, b.x)
    assert torch.equal(a.denoised, b.denoised)
