"""Step-wise samplers: N single steps == the fused loop (bitwise), 1-step slices, bad input."""
import math

import numpy as np

import pytest
import torch

from regional_widgets.models.base import cfg_denoiser
from regional_widgets.sampling import samplers
from regional_widgets.sampling.model_sampling import flux_model_sampling, sd15_model_sampling, sd3_model_sampling
from regional_widgets.sampling.noise import BrownianTreeNoiseSampler
from regional_widgets.sampling.schedules import sampler_sigmas, sd15_sigmas
from tests.oracles import FIXTURE_IDX, FIXTURE_MU, fixture_denoiser, fixture_model, gaussian_denoiser
from tests.oracles_flow import flow_fixture_model, flow_mixture_denoiser

TABLE = sd15_sigmas()
MODEL_SAMPLING = sd15_model_sampling()
D = fixture_denoiser()


def start_x(sigmas):
    return torch.cos(0.7 * FIXTURE_IDX).repeat(2, 1, 1, 1) * sigmas[0]


def guided():
    """The fixtures' two-branch model at cfg 1.5 through the project's CFG: CFG++ samplers see U != D."""
    model, cfg = fixture_model("karras10_cfg")
    return cfg_denoiser(model, model.encode("positive"), model.encode("negative"), cfg)


def test_all_42_names_are_registered():
    assert len(samplers.SAMPLER_NAMES) == 42


@pytest.mark.parametrize("denoiser", ["plain", "cfg"])
@pytest.mark.parametrize("scheduler", ["karras", "normal"])
@pytest.mark.parametrize("name", samplers.SAMPLER_NAMES)
def test_stepping_equals_fused_bitwise(name, scheduler, denoiser):
    D = fixture_denoiser() if denoiser == "plain" else guided()
    sigmas = sampler_sigmas(MODEL_SAMPLING, name, scheduler, 8)
    x = start_x(sigmas)
    fused_trace = []
    fused = samplers.sample(D, x, sigmas, name, seed=3, callback=lambda info: fused_trace.append(info["x"]))
    state = samplers.start(name, x, sigmas, seed=3)
    stepped = []
    while not state.done:
        # stepping twice from the same state gives the same step: the state is not consumed
        again = samplers.step(D, state)
        state = samplers.step(D, state)
        assert torch.equal(again.x, state.x)
        stepped.append(state.x)
    assert torch.equal(state.x, fused)
    assert len(stepped) == len(fused_trace) and all(torch.equal(a, b) for a, b in zip(stepped, fused_trace))


@pytest.mark.parametrize("denoiser", ["plain", "cfg"])
@pytest.mark.parametrize("sampling, scheduler", [("sd3", "simple"), ("sd3", "normal"), ("flux", "beta")])
@pytest.mark.parametrize("name", samplers.SAMPLER_NAMES)
def test_stepping_equals_fused_bitwise_on_const(name, sampling, scheduler, denoiser):
    """The same on a flow (CONST) model: the CONST forms and the first-sigma offset live in the state."""
    model_sampling = sd3_model_sampling() if sampling == "sd3" else flux_model_sampling()
    D = flow_mixture_denoiser([FIXTURE_MU, -FIXTURE_MU], 0.1)
    if denoiser == "cfg":
        model, _ = flow_fixture_model("simple10_cfg")
        D = cfg_denoiser(model, model.encode("positive"), model.encode("negative"), 1.5)
    sigmas = sampler_sigmas(model_sampling, name, scheduler, 8)
    x = model_sampling.noise_scaling(sigmas[0], start_x(sigmas), torch.zeros(2, 2, 4, 4))
    fused_trace = []
    fused = samplers.sample(D, x, sigmas, name, seed=3, model_sampling=model_sampling,
                            callback=lambda info: fused_trace.append(info["x"]))
    state = samplers.start(name, x, sigmas, seed=3, model_sampling=model_sampling)
    stepped = []
    while not state.done:
        again = samplers.step(D, state)
        state = samplers.step(D, state)
        assert torch.equal(again.x, state.x)
        stepped.append(state.x)
    assert torch.isfinite(state.x).all()
    assert torch.equal(state.x, fused)
    assert len(stepped) == len(fused_trace) and all(torch.equal(a, b) for a, b in zip(stepped, fused_trace))
    eps_run = samplers.sample(D, x, sigmas, name, seed=3)  # no model sampling: SD1.5's EPS forms
    assert torch.equal(eps_run, fused) == (not samplers.get_sampler(name).model_sampling)


def split_run(name, sigmas, x):
    for i in range(len(sigmas) - 1):
        x = samplers.sample(D, x, sigmas[i:i + 2], name, seed=0)
    return x


@pytest.mark.parametrize("name", ["euler", "heun", "dpm_2"])
def test_one_step_slices_reproduce_a_full_run_for_single_step_samplers(name):
    sigmas = sampler_sigmas(TABLE, name, "karras", 8)
    x = start_x(sigmas)
    assert (split_run(name, sigmas, x) - samplers.sample(D, x, sigmas, name)).abs().max() <= 1e-6


@pytest.mark.parametrize("name", ["dpmpp_2m", "lms", "ipndm", "deis"])
def test_one_step_slices_turn_multistep_samplers_first_order(name):
    sigmas = sampler_sigmas(TABLE, name, "karras", 8)[:-1]  # stop above 0, where rules differ
    x = start_x(sigmas)
    split = split_run(name, sigmas, x)
    assert (split - split_run("euler", sigmas, x)).abs().max() <= 1e-5
    assert (split - samplers.sample(D, x, sigmas, name)).abs().max() > 1e-4  # history mattered


def test_uni_pc_on_a_two_sigma_slice_only_rescales():
    sigmas = torch.tensor([3.0, 1.5])
    x = start_x(sigmas)
    out = samplers.sample(D, x, sigmas, "uni_pc")
    assert torch.allclose(out, x * (1 + 1.5**2) ** 0.5 / (1 + 3.0**2) ** 0.5, atol=1e-6)


def test_callback_reports_every_step():
    sigmas = sampler_sigmas(TABLE, "heun", "normal", 5)
    seen = []
    samplers.sample(gaussian_denoiser(0.5), start_x(sigmas), sigmas, "heun", callback=seen.append)
    assert [s["i"] for s in seen] == list(range(5))
    assert all(float(s["sigma"]) == float(sigmas[k]) and float(s["sigma_next"]) == float(sigmas[k + 1])
               for k, s in enumerate(seen))
    assert all(set(s) >= {"i", "x", "sigma", "sigma_next", "denoised"} for s in seen)


def test_given_noise_sampler_replaces_the_seeded_one():
    sigmas = sampler_sigmas(TABLE, "euler_ancestral", "karras", 6)
    x = start_x(sigmas)
    calls = []

    def zero_noise(sigma, sigma_next):
        calls.append(1)
        return torch.zeros_like(x)

    a = samplers.sample(D, x, sigmas, "euler_ancestral", noise_sampler=zero_noise)
    assert len(calls) == 5  # one draw per step, none on the step to 0
    assert not torch.equal(a, samplers.sample(D, x, sigmas, "euler_ancestral", seed=1))
    assert torch.equal(samplers.sample(D, x, sigmas, "euler_ancestral", seed=1),
                       samplers.sample(D, x, sigmas, "euler_ancestral", seed=1))


def test_sde_samplers_default_to_the_slice_brownian_tree():
    sigmas = sampler_sigmas(TABLE, "dpmpp_2m_sde", "karras", 6)
    x = start_x(sigmas)
    tree = BrownianTreeNoiseSampler(x, sigmas[sigmas > 0].min(), sigmas.max(), 4)
    assert torch.equal(samplers.sample(D, x, sigmas, "dpmpp_2m_sde", seed=4),
                       samplers.sample(D, x, sigmas, "dpmpp_2m_sde", noise_sampler=tree))


@pytest.mark.parametrize("kwargs, match", [
    (dict(sampler="euler_fast"), "sampler: unknown name 'euler_fast'.*dpmpp_2m"),
    (dict(sigmas=torch.tensor([1.0, float("nan")])), "sigmas: expected finite"),
    (dict(sigmas=torch.tensor([[1.0, 0.0]])), "sigmas: expected a 1-D"),
    (dict(sigmas=torch.tensor([1.0, -1.0])), "sigmas: expected finite, non-negative"),
    (dict(seed=-5), "seed"),
])
def test_bad_input(kwargs, match):
    args = dict(sampler="euler", sigmas=torch.tensor([2.0, 1.0, 0.0]), seed=0)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        samplers.sample(D, start_x(args["sigmas"].flatten()[:1]), args["sigmas"], args["sampler"], seed=args["seed"])


def test_options_reach_the_rule_and_the_heun_solver_type_is_dpmpp_2m_sde_heun():
    sigmas = sampler_sigmas(MODEL_SAMPLING, "dpmpp_2m_sde", "karras", 8)
    x = start_x(sigmas)
    heun = samplers.sample(D, x, sigmas, "dpmpp_2m_sde", seed=4, options={"solver_type": "heun"})
    assert torch.equal(heun, samplers.sample(D, x, sigmas, "dpmpp_2m_sde_heun", seed=4))
    assert not torch.equal(heun, samplers.sample(D, x, sigmas, "dpmpp_2m_sde", seed=4))
    defaults = samplers.sample(D, x, sigmas, "euler_ancestral", seed=4, options={"eta": 1.0, "s_noise": 1.0})
    assert torch.equal(defaults, samplers.sample(D, x, sigmas, "euler_ancestral", seed=4))
    assert torch.equal(samplers.sample(D, x, sigmas, "euler_ancestral", seed=4, options={"eta": 0}),
                       samplers.sample(D, x, sigmas, "euler", seed=4))
    state = samplers.start("euler_ancestral", x, sigmas, seed=4, options={"s_noise": 0.5})
    assert state.options == {"s_noise": 0.5} and samplers.step(D, state).options == {"s_noise": 0.5}


@pytest.mark.parametrize("sampler, options, match", [
    ("euler", {"eta": 0.5}, "euler has no option 'eta'; accepted: none"),
    ("euler_ancestral", {"churn": 1.0}, "no option 'churn'; accepted: eta, s_noise"),
    ("dpmpp_2m_sde", {"solver_type": "rk4"}, "options.solver_type: unknown value 'rk4'; accepted: midpoint, heun"),
    ("euler_ancestral", {"eta": float("nan")}, "options.eta: expected a finite number"),
    ("euler_ancestral", {"eta": True}, "options.eta: expected a finite number"),
    ("lms", {"order": 2.5}, "options.order: expected an integer >= 1"),
    ("lms", {"order": 0}, "options.order: expected an integer >= 1"),
    ("euler", [("eta", 1.0)], "options: expected a mapping"),
])
def test_bad_options(sampler, options, match):
    sigmas = torch.tensor([2.0, 1.0, 0.0])
    with pytest.raises(ValueError, match=match):
        samplers.start(sampler, start_x(sigmas), sigmas, options=options)


@pytest.mark.parametrize("name", ["dpm_fast", "dpm_adaptive"])
def test_own_grid_samplers_say_when_they_are_done(name):
    sigmas = sampler_sigmas(MODEL_SAMPLING, name, "karras", 6)
    state = samplers.start(name, start_x(sigmas), sigmas)
    assert state.done is False and "done" not in state.memory
    while not state.done:
        state = samplers.step(D, state)
        assert "done" not in state.memory
    assert state.finished is True
    assert samplers.start(name, start_x(sigmas), sigmas[:1]).done is True  # no step in the list
    assert samplers.start(name, start_x(sigmas), sigmas[-3:-1]).done is False
    # [s, 0]: dpm_adaptive's span ends where it starts (nothing to do); dpm_fast makes its 1 step
    assert samplers.start(name, start_x(sigmas), sigmas[-2:]).done is (name == "dpm_adaptive")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_all_finite_agrees_with_isfinite_including_sums_that_overflow(dtype):
    from regional_widgets.sampling.samplers.core import all_finite
    big = torch.finfo(dtype).max
    nan, inf = float("nan"), float("inf")
    cases = [[0.0] * 3, torch.randn(2, 3, 8, 8), [big, big], [-big, -big, 1.0], [big, -big], [1.0, nan], [inf, 0.0],
             [-inf, inf], [big, big, nan], [-0.0, 0.0]]
    for case in cases:
        t = torch.as_tensor(case, dtype=torch.float64).to(dtype)
        assert all_finite(t) == bool(torch.isfinite(t).all()), t
    assert all_finite(torch.tensor([big, big], dtype=dtype)) and not math.isfinite(
        torch.tensor([big, big], dtype=dtype).sum().item())  # the overflowing sum takes the exact test


@pytest.mark.parametrize("kept", [False, True])
def test_sigma_batch_is_sigma_times_ones_bit_for_bit(kept):
    from regional_widgets.sampling.samplers.core import sigma_batch
    batches = {} if kept else None
    for x in (torch.zeros(1, 4, 2, 2), torch.zeros(3, 4, 2, 2), torch.zeros(2, 4, 2, 2, dtype=torch.float64)):
        for value in (14.6146, -0.0, 0.0, float("inf"), float("nan"), 1e-30):
            for sigma in (torch.tensor(value), torch.tensor(value, dtype=torch.float64),
                          torch.tensor([value, 2.0])[0], value):
                got, expected = sigma_batch(sigma, x, batches), sigma * x.new_ones([x.shape[0]])
                assert got.dtype == expected.dtype and got.shape == expected.shape
                bits = torch.int64 if got.dtype == torch.float64 else torch.int32
                assert torch.equal(got.view(bits), expected.view(bits)), (x.shape, x.dtype, sigma)
                if isinstance(sigma, torch.Tensor):
                    got.fill_(7.0)  # a copy: the sampler's sigmas are untouched
                    assert torch.equal(sigma.isnan(), torch.tensor(value).isnan()) and (
                        sigma.isnan() or sigma == value)


def test_kept_sigma_batches_are_made_once_and_again_after_a_write():
    from regional_widgets.sampling.samplers.core import sigma_batch
    batches, sigma, x = {}, torch.tensor(3.5), torch.zeros(2, 4, 2, 2)
    first = sigma_batch(sigma, x, batches)
    assert sigma_batch(sigma, x, batches) is first and torch.equal(first, torch.full((2,), 3.5))
    assert sigma_batch(sigma, x[:1], batches) is not first  # another batch size: a batch of its own
    first.mul_(2)  # a model that writes to its sigma: the next evaluation gets a new, right copy
    again = sigma_batch(sigma, x, batches)
    assert again is not first and torch.equal(again, torch.full((2,), 3.5))
    sigma.add_(1)  # the source changed (a plan's sigmas never do): not the old copy either
    assert torch.equal(sigma_batch(sigma, x, batches), torch.full((2,), 4.5))
    other = torch.tensor(3.5, dtype=torch.float64)  # not x's dtype: the product, nothing kept
    size = len(batches)
    assert torch.equal(sigma_batch(other, x, batches), other * x.new_ones([2])) and len(batches) == size


def test_a_model_that_writes_to_its_sigma_sees_the_same_sigmas_in_every_run():
    """A run's sigma batches are kept with its call plans: a model changing one in place must not change
    what the next evaluation or the next run is given."""
    import regional_widgets as rw
    toy = rw.models.ToyWorld(image_size=32, n_exemplars=50)
    seen = []

    class Writer(rw.models.base.OneCondModel):
        def __call__(self, x, sigma, cond):
            seen.append(sigma.clone())
            out = toy(x, sigma, cond)
            sigma.mul_(0.5)
            return out

    m = np.zeros((32, 32), np.float32)
    m[16:] = 1
    region = rw.Region(m, rw.SamplerConfig(sampler="dpmpp_2m", scheduler="karras", cfg=2.0, positive="grass"))
    base = rw.SamplerConfig(sampler="euler", scheduler="karras", cfg=2.0, positive="sky")
    def session():
        return rw.RegionalSamplerSession(Writer(toy), rw.empty_latent(toy, 32, 32), base=base, regions=[region],
                                         steps=4)

    s = session()
    first = s.run().clone()
    runs = [list(seen)]
    seen.clear()
    s.reset()  # the same context and call plans: their sigma batches kept
    assert torch.equal(s.run(), first)
    runs.append(list(seen))
    seen.clear()
    assert torch.equal(session().run(), first)  # a new session: everything made anew
    assert len(runs[0]) == len(runs[1]) == len(seen) > 8
    assert all(torch.equal(a, b) and torch.equal(a, c) for a, b, c in zip(*runs, seen))
    # each evaluation's first call sees the schedule's sigma, its second what the first call left there
    assert all(torch.equal(a, 2 * b) for a, b in zip(runs[0][0::2], runs[0][1::2]))


def test_a_plans_sigma_batches_are_used_once_warmed_and_never_started_by_a_call():
    from regional_widgets.sampling.call import checked_plan, sampler_call, warm_batches
    sigmas = sampler_sigmas(TABLE, "euler", "karras", 4)
    plan = checked_plan(sigmas, 0, 4, False, sampler="euler", const=False)
    latent = torch.zeros(1, 4, 8, 8)
    given = []

    def denoise(x, sigma):
        given.append(sigma)
        return x * 0.5

    def call():
        given.clear()
        return sampler_call(denoise, latent, sampler="euler", total_sigmas=None, start=0, end=4, leftover=False,
                            add_noise=True, seed=3, sigma_max=sigmas[0], plan=plan)
    first = call().output
    made = list(given)
    assert plan.batches == {} and len(made) == 4
    warm_batches(plan, latent)
    kept = [v[1] for v in plan.batches.values()]
    assert len(kept) == 4 and torch.equal(call().output, first)
    assert all(a is b for a, b in zip(given, kept)) and all(torch.equal(a, b) for a, b in zip(given, made))
