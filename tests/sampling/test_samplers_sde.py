"""The stochastic samplers of issue 12 beyond their fixtures: ODE parts, distributions, noise plumbing.

Their exact outputs are pinned bit for bit in test_sampler_fixtures.py. Here: with the noise switched
off (eta = 0 / tau = 0, the step functions' own parameters) each is a deterministic exponential
integrator and must converge to the exact Gaussian probability flow at its order; with its default
noise each must sample the Gaussian data distribution and forget its start; the ``_gpu`` names
must give the plain ones' bits on the CPU, also through the sampler call's total-bounds tree.
"""
import functools
import math
import warnings

import pytest
import torch

from regional_widgets.sampling import samplers
from regional_widgets.sampling.call import sampler_call
from regional_widgets.sampling.noise import BrownianTreeNoiseSampler
from regional_widgets.sampling.samplers import er_sde, sa_solver, sde, seeds
from regional_widgets.sampling.schedules import sampler_sigmas, sd15_sigmas
from tests.oracles import FIXTURE_IDX, fixture_denoiser, gaussian_denoiser, gaussian_flow_solution

S, SIGMA_HI, SIGMA_LO = 1.0, 3.0, 0.2  # as test_samplers_extra: data N(0, 1), stop above 0
STEPS = (20, 40, 80)


class NoSampling:
    """A model sampling whose SA-Solver noise interval is empty: ``tau = 0`` on every step."""

    def percent_to_sigma(self, percent):
        return 0.0


def zero_noise(sigma, sigma_next):
    raise AssertionError("a noiseless run drew noise")


def quiet_noise(sigma, sigma_next):
    return torch.zeros(())


# name -> (raw step function with its noise off, setup or None, minimum measured order)
ODE_PARTS = {
    "dpmpp_sde": (functools.partial(sde.dpmpp_sde, eta=0.0), None, 1.9),            # 2.00 2.00 / 2.00 2.00
    "dpmpp_2m_sde": (functools.partial(sde.dpmpp_2m_sde, eta=0.0), None, 1.75),      # 1.96 1.98 / 1.82 1.91
    "dpmpp_2m_sde_heun": (functools.partial(sde.dpmpp_2m_sde, eta=0.0, solver_type="heun"), None, 1.75),
    # 3M's first steps are first and second order: the first step's O(h^2) error caps it at 2
    "dpmpp_3m_sde": (functools.partial(sde.dpmpp_3m_sde, eta=0.0), None, 1.9),       # 2.21 2.20 / 2.05 2.04
    "seeds_2": (functools.partial(seeds.seeds_2, eta=0.0), None, 1.9),               # 2.00 2.00 / 2.00 2.00
    "seeds_3": (functools.partial(seeds.seeds_3, eta=0.0), None, 2.9),               # 3.00 3.00 / 3.00 3.00
    # Adams predictor 3 / corrector 4, warm-up from order 1: errors 3.7e-6 .. 3e-9, orders uneven
    "sa_solver": (functools.partial(sa_solver._sa_solver_step, pece=False), "sa", 2.0),  # 2.27 3.76 / 5.72 3.76
    "sa_solver_pece": (functools.partial(sa_solver._sa_solver_step, pece=True), "sa", 2.5),  # 3.71 2.73 / 3.25 3.02
}


def run_raw(name, sigmas, x):
    step, setup, _ = ODE_PARTS[name]
    memory = sa_solver.sa_solver_setup(x, sigmas, NoSampling()) if setup else {}
    noise = quiet_noise if name.startswith("seeds") else zero_noise  # seeds multiplies its draws by 0
    for i in range(len(sigmas) - 1):
        out = step(gaussian_denoiser(S), x, sigmas, i, memory, noise)
        x, memory = out.x, out.memory
    return x


def karras(n, rho=7.0):
    ramp = torch.arange(n, dtype=torch.float64) / (n - 1)
    return (SIGMA_HI ** (1 / rho) + ramp * (SIGMA_LO ** (1 / rho) - SIGMA_HI ** (1 / rho))) ** rho


def exponential(n):
    return torch.linspace(math.log(SIGMA_HI), math.log(SIGMA_LO), n, dtype=torch.float64).exp()


@pytest.mark.parametrize("schedule", [karras, exponential])
@pytest.mark.parametrize("name", sorted(ODE_PARTS))
def test_noiseless_part_converges_to_the_exact_gaussian_flow(name, schedule):
    x0 = torch.cos(0.7 * FIXTURE_IDX).double() * math.sqrt(S * S + SIGMA_HI**2)
    errors = []
    for steps in STEPS:
        sigmas = schedule(steps + 1)
        # SA-Solver's x is the corrected state, one sigma behind its prediction (spec §3.5.2)
        sigma_end = float(sigmas[-2] if name.startswith("sa_solver") else sigmas[-1])
        exact = gaussian_flow_solution(x0, SIGMA_HI, sigma_end, S)
        errors.append(((run_raw(name, sigmas, x0) - exact).abs().max() / exact.abs().max()).item())
    orders = [math.log2(a / b) for a, b in zip(errors, errors[1:])]
    print(f"{name} {schedule.__name__}: errors {errors}, orders {orders}")
    assert all(b < a for a, b in zip(errors, errors[1:])), errors
    assert min(orders) >= ODE_PARTS[name][2], orders


def sample_gaussian_data(name, steps):
    """Default settings from x ~ N(0, S^2 + 10^2) down a karras grid to 0 (65536 values)."""
    ramp = torch.arange(steps, dtype=torch.float32) / (steps - 1)
    hi, lo, rho = 10.0, 0.03, 7.0
    sigmas = torch.cat([(hi ** (1 / rho) + ramp * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho, torch.zeros(1)])
    x0 = torch.randn(64, 4, 16, 16, generator=torch.Generator().manual_seed(0)) * math.sqrt(S * S + hi**2)
    out = samplers.sample(gaussian_denoiser(S), x0, sigmas, name, seed=1)
    expected_var = S**4 / (S**2 + float(sigmas[-2]) ** 2)  # the last step gives x = D at sigmas[-2]
    corr = torch.corrcoef(torch.stack([out.flatten(), x0.flatten()]))[0, 1].item()
    return out.var().item() / expected_var, corr


@pytest.mark.parametrize("name", ["er_sde", "seeds_2", "seeds_3", "sa_solver", "sa_solver_pece", "dpmpp_2m_sde_heun"])
def test_default_noise_samples_the_data_distribution(name):
    # measured var ratio / corr at 30 steps: er_sde 0.987 / 0.74, seeds_2 0.972 / 0.10, seeds_3
    # 0.997 / 0.10, sa_solver 0.9995 / 0.20, pece 0.9994 / 0.20, dpmpp_2m_sde_heun 1.041 / 0.10
    ratio, corr = sample_gaussian_data(name, 30)
    assert abs(ratio - 1) < 0.06, ratio
    assert corr < 0.8, corr  # fresh noise entered: the probability flow keeps corr = 1


def test_the_flow_keeps_its_start_so_the_correlation_check_can_fail():
    ratio, corr = sample_gaussian_data("euler", 30)
    assert corr > 0.999 and abs(ratio - 1) < 0.1


def test_noise_kinds_and_registration():
    kinds = {name: samplers.get_sampler(name).noise for name in samplers.SAMPLER_NAMES}
    for base in ("dpmpp_sde", "dpmpp_2m_sde", "dpmpp_2m_sde_heun", "dpmpp_3m_sde"):
        assert kinds[base] == "brownian" and kinds[base + "_gpu"] == "brownian_gpu"
        assert samplers.get_sampler(base).step is samplers.get_sampler(base + "_gpu").step
    for name in ("er_sde", "seeds_2", "seeds_3", "sa_solver", "sa_solver_pece"):
        assert kinds[name] == "default"
    assert samplers.get_sampler("sa_solver").model_sampling and samplers.get_sampler("sa_solver").setup is \
        sa_solver.sa_solver_setup
    assert samplers.get_sampler("er_sde").setup is er_sde.er_sde_setup


@pytest.mark.parametrize("name", ["dpmpp_sde", "dpmpp_2m_sde", "dpmpp_2m_sde_heun", "dpmpp_3m_sde"])
def test_gpu_twins_give_the_same_bits_on_cpu(name):
    sigmas = sampler_sigmas(sd15_sigmas(), name, "karras", 7)
    x = torch.cos(0.7 * FIXTURE_IDX) * sigmas[0]
    plain = samplers.sample(fixture_denoiser(), x, sigmas, name, seed=5)
    assert torch.equal(plain, samplers.sample(fixture_denoiser(), x, sigmas, name + "_gpu", seed=5))
    assert not torch.equal(plain, samplers.sample(fixture_denoiser(), x, sigmas, name, seed=6))


@pytest.mark.parametrize("name", ["dpmpp_sde_gpu", "dpmpp_2m_sde_gpu", "dpmpp_3m_sde_gpu", "dpmpp_2m_sde_heun"])
def test_split_calls_share_the_total_schedule_tree_exactly_where_impact_wraps(name):
    """Impact spans the tree over the total schedule for the six names it wraps (the _gpu ones
    included); the heun variants run stock, with a tree over each call's own slice."""
    total = sampler_sigmas(sd15_sigmas(), name, "karras", 6)
    latent = torch.cos(0.7 * FIXTURE_IDX)
    got = sampler_call(fixture_denoiser(), latent, sampler=name, total_sigmas=total, start=2, end=3, leftover=True,
                       add_noise=True, seed=9, sigma_max=total[0]).samples
    sigmas = total[2:4]
    x = latent + torch.randn(latent.shape, generator=torch.Generator().manual_seed(9)) * sigmas[0]
    wrapped = name != "dpmpp_2m_sde_heun"
    lo, hi = (total[total > 0].min(), total.max()) if wrapped else (sigmas[1], sigmas[0])
    tree = BrownianTreeNoiseSampler(x, lo, hi, 9, cpu=not name.endswith("_gpu"))
    assert torch.equal(got, samplers.sample(fixture_denoiser(), x, sigmas, name, noise_sampler=tree))


def test_tree_queries_outside_the_span_are_quiet_and_clamped():
    x = torch.zeros(1, 2, 4, 4)
    tree = BrownianTreeNoiseSampler(x, torch.tensor(0.1), torch.tensor(1.0), 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torchsde's boundary warning would raise here
        beyond = tree(torch.tensor(2.0), torch.tensor(0.5))
    inside = tree(torch.tensor(1.0), torch.tensor(0.5))
    # torchsde answers from the boundary: the same increment, divided by the unclamped distance
    assert torch.allclose(beyond * math.sqrt(1.5), inside * math.sqrt(0.5))
