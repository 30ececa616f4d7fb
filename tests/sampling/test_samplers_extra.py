"""Independent checks of heunpp2, ddpm, lcm, ddim, ipndm, ipndm_v, deis, uni_pc and uni_pc_bh2.

The reference's exact outputs are in test_sampler_fixtures.py; these tests check the same samplers
against hand computations, against Euler where a 1-step slice reduces to it, against the exact
Gaussian flow (convergence orders), and against diffusers where it has the same algorithm.
"""
import math

import pytest
import torch

from regional_widgets.sampling import samplers
from tests.oracles import (FIXTURE_IDX, fixture_denoiser, fixture_sigmas, fixture_start,
                           gaussian_denoiser, gaussian_flow_solution)

MINE = ("heunpp2", "ddpm", "lcm", "ddim", "ipndm", "ipndm_v", "deis", "uni_pc", "uni_pc_bh2")
DETERMINISTIC = ("ddim", "heunpp2", "ipndm", "ipndm_v", "deis", "uni_pc", "uni_pc_bh2")
KARRAS10 = fixture_sigmas("karras10", "full")  # 14.6146 ... 0.0292, 0


class Counting:
    """A denoiser that counts its calls."""

    def __init__(self, denoise):
        self.denoise, self.calls = denoise, 0

    def __call__(self, x, sigma):
        self.calls += 1
        return self.denoise(x, sigma)


class FixedNoise:
    """A noise sampler that always returns ``noise`` and counts its draws."""

    def __init__(self, noise):
        self.noise, self.draws = noise, 0

    def __call__(self, sigma=None, sigma_next=None):
        self.draws += 1
        return self.noise


def run(name, sigmas, x=None, model=None, noise=None):
    x = fixture_start(sigmas) if x is None else x
    return samplers.sample(model or fixture_denoiser(), x, sigmas, name, noise_sampler=noise)


def one_step_slices():
    return [KARRAS10[3:5], KARRAS10[8:10], KARRAS10[9:11], fixture_sigmas("normal7", "full")[6:8]]


# --- registration -------------------------------------------------------------------------------

def test_all_registered_with_their_noise_kind():
    for name in MINE:
        spec = samplers.get_sampler(name)
        assert spec.noise == ("default" if name in ("ddpm", "lcm") else None), name
        assert spec.inpaint_random == (name == "ddim"), name
    assert samplers.get_sampler("euler").inpaint_random is False


# --- ddim and the 1-step slices ---------------------------------------------------------------

@pytest.mark.parametrize("sigmas", [KARRAS10, fixture_sigmas("normal7", "full"), KARRAS10[3:5]])
def test_ddim_is_euler_bitwise(sigmas):
    seen = {"euler": [], "ddim": []}
    for name in seen:
        samplers.sample(fixture_denoiser(), fixture_start(sigmas), sigmas, name,
                        callback=lambda info, name=name: seen[name].append(info))
    for a, b in zip(seen["euler"], seen["ddim"]):
        assert torch.equal(a["x"], b["x"]) and torch.equal(a["denoised"], b["denoised"])
    assert len(seen["ddim"]) == len(sigmas) - 1


@pytest.mark.parametrize("name", ["heunpp2", "ipndm", "ipndm_v", "deis"])
@pytest.mark.parametrize("sigmas", one_step_slices(), ids=lambda s: f"{s[0]:.3f}-{s[1]:.3f}")
def test_one_step_slice_is_euler(name, sigmas):
    model = Counting(fixture_denoiser())
    out = run(name, sigmas, model=model)
    euler = run("euler", sigmas)
    assert model.calls == 1
    if name == "heunpp2" or (name == "ipndm" and sigmas[-1] > 0):  # the very same expression
        assert torch.equal(out, euler)
    else:  # other roundings, and ipndm/ipndm_v return D itself on a step to sigma 0
        torch.testing.assert_close(out, euler, rtol=1e-6, atol=1e-6)


def test_heunpp2_evaluations_per_step():
    model = Counting(fixture_denoiser())
    run("heunpp2", KARRAS10, model=model)
    n = len(KARRAS10) - 1
    assert model.calls == 3 * (n - 2) + 2 + 1  # three, then Heun before the last, then Euler


# --- uni_pc --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["uni_pc", "uni_pc_bh2"])
@pytest.mark.parametrize("sigmas", one_step_slices(), ids=lambda s: f"{s[0]:.3f}-{s[1]:.3f}")
def test_uni_pc_two_sigma_slice_only_rescales(name, sigmas):
    model, seen = Counting(fixture_denoiser()), []
    x = fixture_start(sigmas)
    out = samplers.sample(model, x, sigmas, name, callback=seen.append)
    s0, s1 = float(sigmas[0]), float(sigmas[1]) or 0.001
    torch.testing.assert_close(out, x * math.sqrt(1 + s1**2) / math.sqrt(1 + s0**2), rtol=1e-6, atol=0)
    assert model.calls == 1
    # the model sees x through the reference's VP round trip, x / sqrt(1 + s0^2) * (s0^2 + 1)^0.5
    x_in = x / torch.sqrt(1.0 + sigmas[0] ** 2.0) * (sigmas[0] ** 2 + 1.0) ** 0.5
    assert torch.equal(seen[0]["denoised"], fixture_denoiser()(x_in, sigmas[0] * torch.ones(1)))


@pytest.mark.parametrize("name", ["uni_pc", "uni_pc_bh2"])
def test_uni_pc_one_evaluation_per_step(name):
    model, seen = Counting(fixture_denoiser()), []
    samplers.sample(model, fixture_start(KARRAS10), KARRAS10, name, callback=seen.append)
    assert model.calls == len(KARRAS10) - 1  # the start, then one corrector per step but the last
    assert len(seen) == len(KARRAS10) - 1


# --- ddpm and lcm by hand -------------------------------------------------------------------------

NOISE = 1.3 * torch.cos(0.37 * FIXTURE_IDX + 0.2)


@pytest.mark.parametrize("sigmas", one_step_slices(), ids=lambda s: f"{s[0]:.3f}-{s[1]:.3f}")
def test_ddpm_one_step_by_hand(sigmas):
    # DDPM's posterior in the VE frame: x' = D + (s'/s)^2 (x - D) + s' sqrt(1 - (s'/s)^2) noise.
    x = fixture_start(sigmas).double()
    s, s_next = float(sigmas[0]), float(sigmas[1])
    D = fixture_denoiser()(x, torch.tensor([s], dtype=torch.float64))
    expected = D + (s_next / s) ** 2 * (x - D) + s_next * math.sqrt(1 - (s_next / s) ** 2) * NOISE.double()
    noise = FixedNoise(NOISE)
    out = run("ddpm", sigmas, x=x.float(), noise=noise)
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)
    assert noise.draws == (1 if s_next > 0 else 0)


@pytest.mark.parametrize("sigmas", one_step_slices(), ids=lambda s: f"{s[0]:.3f}-{s[1]:.3f}")
def test_lcm_one_step_by_hand(sigmas):
    x = fixture_start(sigmas)
    D = fixture_denoiser()(x, sigmas[0] * torch.ones(1))
    noise = FixedNoise(NOISE)
    out = run("lcm", sigmas, x=x, noise=noise)
    assert torch.equal(out, D + NOISE * sigmas[1] if sigmas[1] > 0 else D)
    assert noise.draws == (1 if sigmas[1] > 0 else 0)


@pytest.mark.parametrize("name", ["ddpm", "lcm"])
@pytest.mark.parametrize("sigmas", [KARRAS10, KARRAS10[:-1]], ids=["to0", "above0"])
def test_one_draw_per_noisy_step(name, sigmas):
    noise = FixedNoise(NOISE)
    run(name, sigmas, noise=noise)
    assert noise.draws == int((sigmas[1:] > 0).sum())


@pytest.mark.parametrize("name", ["ddpm", "lcm"])
def test_seeded_noise_is_reproducible_stepwise(name):
    # The same seeded run, fused and as separate steps replayed from a saved state, agree bitwise.
    x = fixture_start(KARRAS10)
    fused = samplers.sample(fixture_denoiser(), x, KARRAS10, name, seed=123)
    state = samplers.start(name, x, KARRAS10, seed=123)
    for _ in range(4):
        state = samplers.step(fixture_denoiser(), state)
    saved = state
    while not state.done:
        state = samplers.step(fixture_denoiser(), state)
    replay = saved
    while not replay.done:
        replay = samplers.step(fixture_denoiser(), replay)
    assert torch.equal(state.x, fused) and torch.equal(replay.x, fused)


# --- step-wise purity --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", MINE)
def test_step_leaves_state_untouched(name):
    state = samplers.start(name, fixture_start(KARRAS10), KARRAS10, seed=5)
    for _ in range(3):
        state = samplers.step(fixture_denoiser(), state)
    memory = dict(state.memory)
    a = samplers.step(fixture_denoiser(), state)
    b = samplers.step(fixture_denoiser(), state)
    assert torch.equal(a.x, b.x)
    assert dict(state.memory).keys() == memory.keys()
    assert all(state.memory[k] is memory[k] for k in memory)


# --- deis coefficients ------------------------------------------------------------------------------

def test_deis_coefficients_integrate_dsigma():
    # The Lagrange weights sum to 1, so each step's coefficients sum to its sigma increment.
    coeffs = samplers.get_sampler("deis").setup(None, KARRAS10.double())["coeffs"]
    assert coeffs[0] == () and coeffs[-1] == ()  # Euler first and on the step to 0
    for i, c in enumerate(coeffs[1:-1], start=1):
        assert len(c) == min(3, i + 1)
        dt = float(KARRAS10[i + 1] - KARRAS10[i])
        assert sum(c) == pytest.approx(dt, rel=1e-3)


# --- convergence on the exact Gaussian flow ------------------------------------------------------------

S, SIGMA_HI, SIGMA_LO = 1.0, 3.0, 0.2  # data N(0, 1); stop above 0 so no step lands on sigma = 0
STEPS = (20, 40, 80)
# Lower bounds on the measured order between consecutive step counts (measured values in comments).
MIN_ORDER = {
    "ddim": 0.9,        # karras 0.99 1.00, exponential 0.99 1.00 (it is Euler)
    "heunpp2": 0.9,     # 1.07 1.03 / 1.07 1.04: the extra slopes are weighted by sigma / sigma_0
    "ipndm": 1.9,       # 2.92 2.81 / 2.52 2.33, tending to 2: fixed-step AB4 weights on an uneven grid
    "ipndm_v": 1.0,     # 1.16 1.56 / 1.55 1.42 (the reference's order-3 weights are not exact AB3)
    "deis": 1.9,        # 2.21 2.11 / 2.21 2.12
    "uni_pc": 1.8,      # 1.94 2.01 / 1.90 1.99 (the last step is first order: lower_order_final)
    "uni_pc_bh2": 1.8,  # 2.03 2.04 / 2.06 2.05
    # the k-diffusion family (their update rules are checked against k-diffusion elsewhere)
    "euler": 0.9,       # 0.99 0.99 / 0.99 0.99
    "heun": 1.9,        # 2.02 2.01 / 2.02 2.01
    "dpm_2": 1.9,       # 2.02 2.01 / 2.02 2.01
    "lms": 2.0,         # 2.42 2.19 / 2.42 2.21
    "dpmpp_2m": 1.75,   # 1.97 1.99 / 1.83 1.93
}


def karras(n, rho=7.0):
    ramp = torch.arange(n, dtype=torch.float64) / (n - 1)
    return (SIGMA_HI ** (1 / rho) + ramp * (SIGMA_LO ** (1 / rho) - SIGMA_HI ** (1 / rho))) ** rho


def exponential(n):
    return torch.linspace(math.log(SIGMA_HI), math.log(SIGMA_LO), n, dtype=torch.float64).exp()


def flow_errors(name, schedule):
    x0 = torch.cos(0.7 * FIXTURE_IDX).double() * math.sqrt(S * S + SIGMA_HI**2)
    exact = gaussian_flow_solution(x0, SIGMA_HI, SIGMA_LO, S)
    errors = []
    for steps in STEPS:
        sigmas = schedule(steps + 1)
        out = samplers.sample(gaussian_denoiser(S), x0, sigmas, name)
        errors.append(((out - exact).abs().max() / exact.abs().max()).item())
    return errors


@pytest.mark.parametrize("schedule", [karras, exponential])
@pytest.mark.parametrize("name", sorted(MIN_ORDER))
def test_converges_to_the_exact_gaussian_flow(name, schedule):
    errors = flow_errors(name, schedule)
    orders = [math.log2(a / b) for a, b in zip(errors, errors[1:])]
    print(f"{name} {schedule.__name__}: errors {errors}, orders {orders}")
    assert all(b < a for a, b in zip(errors, errors[1:])), errors
    assert min(orders) >= MIN_ORDER[name], orders


def test_dpm_fast_and_adaptive_are_accurate_on_the_flow():
    # dpm_fast mixes orders 3/2/1 by n % 3 (no clean order: 5.0e-4, 8.2e-4, 6.7e-6 at 20/40/80);
    # dpm_adaptive integrates to its own tolerance whatever the grid
    assert flow_errors("dpm_fast", karras)[-1] < 1e-4 < flow_errors("euler", karras)[-1]
    assert max(flow_errors("dpm_adaptive", karras)) < 1e-2


def test_heunpp2_beats_euler_on_the_flow():
    assert flow_errors("heunpp2", karras)[-1] < 0.5 * flow_errors("euler", karras)[-1]


# --- parity with diffusers where it runs the same algorithm -----------------------------------------------

def _eps_model(D):
    """diffusers' VP epsilon model from a k-diffusion denoiser."""
    def eps(x_vp, sigma):
        x = x_vp * torch.sqrt(1 + sigma * sigma)
        return (x - D(x, sigma.view(1))) / sigma
    return eps


def _drive(scheduler, sigmas, x, generator=None):
    eps = _eps_model(fixture_denoiser())
    x = x / torch.sqrt(1 + sigmas[0] ** 2)
    for k, t in enumerate(scheduler.timesteps):
        kwargs = {} if generator is None else {"generator": generator}
        x = scheduler.step(eps(x, sigmas[k]), t, x, **kwargs).prev_sample
    return x * torch.sqrt(1 + sigmas[-1] ** 2)


def _sd_scheduler(cls, **kwargs):
    return cls(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", **kwargs)


@pytest.mark.parametrize("name,variant", [("uni_pc", "bh1"), ("uni_pc_bh2", "bh2")])
def test_uni_pc_matches_diffusers(name, variant):
    diffusers = pytest.importorskip("diffusers")
    scheduler = _sd_scheduler(diffusers.UniPCMultistepScheduler, solver_order=3, predict_x0=True,
                              solver_type=variant, lower_order_final=True, final_sigmas_type="sigma_min")
    scheduler.set_timesteps(10)
    sigmas = scheduler.sigmas.float()  # ends at sigma_min > 0: no 0 -> 0.001 replacement
    x = fixture_start(sigmas)
    ours = run(name, sigmas, x=x)
    torch.testing.assert_close(ours, _drive(scheduler, sigmas, x), rtol=0, atol=5e-6)


def _discrete_sigmas(scheduler):
    acp = scheduler.alphas_cumprod[scheduler.timesteps]
    return torch.cat([((1 - acp) / acp) ** 0.5, torch.zeros(1)]).float()


@pytest.mark.parametrize("name,cls,steps", [("ddpm", "DDPMScheduler", 10), ("lcm", "LCMScheduler", 4)])
def test_ddpm_and_lcm_match_diffusers(name, cls, steps):
    diffusers = pytest.importorskip("diffusers")
    scheduler = _sd_scheduler(getattr(diffusers, cls), clip_sample=False)
    scheduler.set_timesteps(steps)
    sigmas = _discrete_sigmas(scheduler)
    x = fixture_start(sigmas)
    ours_gen, theirs_gen = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    ours = run(name, sigmas, x=x, noise=lambda *_: torch.randn(x.shape, generator=ours_gen))
    theirs = _drive(scheduler, sigmas, x, generator=theirs_gen)
    # lcm: diffusers keeps c_skip = 0.25 / ((10 t)^2 + 0.25) of the sample, 2.5e-7 at t >= 100
    torch.testing.assert_close(ours, theirs, rtol=0, atol=5e-6)
