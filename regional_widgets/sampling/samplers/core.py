"""The step-wise sampler protocol, the registry and the driver.

A sampler is a function that advances **one** step of a sigma slice:

    step(model, x, sigmas, i, memory, noise, **options) -> StepOut(x, denoised, memory[, sigma, sigma_next, done])

``model(x, sigma_batch) -> denoised`` follows the k-diffusion convention, ``memory`` is the small
explicit state the sampler carries to its next step (multistep history, a precomputed grid; a
fresh dict is returned, the old one is never mutated), and ``noise(sigma, sigma_next)`` draws the
step's noise for stochastic samplers. The driver (`start`, `step`, `sample`) owns the loop, so a
fused run and N single steps execute the very same code. A run is over after ``len(sigmas) - 1``
steps, unless the sampler steps on a grid of its own and says so itself (``StepOut.done``; its
setup returns a `Start` with the initial ``done``). ``options`` are the keyword parameters of the
sampler's rule (``eta``, ``s_noise``, ``solver_type``, ...), given to `start` (`check_options`).

CFG++ samplers (``register(..., uncond=True)``) also need the raw unconditional prediction ``U`` of
the same evaluation: they call `call_model_uncond(model, x, sigma) -> (D, U)`, which asks the
denoiser's optional ``with_uncond(x, sigma_batch) -> (D, U)`` (`GuidedDenoiser`; the CFG layer in
``models.base`` builds one). A plain callable has no guidance, so its ``U`` is its ``D``.

Flow (CONST) models (spec regional_sampler.md §3.6): a sampler whose rule depends on the model's
sampling declares it (``register(..., model_sampling=True)``); `start` then resolves the model
sampling passed to it (None: SD1.5's EPS one) and gives it to the sampler's ``setup(x, sigmas,
model_sampling)``, or, without a setup, records ``memory["const"]`` (plain data, so states save).
Samplers registered with ``const_offset=True`` (the 13 names of §3.6.1) run on CONST with a first
sigma >= 1 replaced by ``percent_to_sigma(1e-4)``: `start` puts that working list in the state (the
x is unchanged; a default Brownian tree still spans the list as passed). `final_sigma` is the sigma
the end-of-call rescale (``inverse_noise_scaling``) uses.
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable, Mapping, NamedTuple, Optional

import torch

from ..checks import check_int
from ..model_sampling import as_model_sampling, sd15_model_sampling
from ..noise import BrownianTreeNoiseSampler, DefaultNoiseSampler, check_seed, clone_noise_sampler


class StepOut(NamedTuple):
    x: torch.Tensor
    denoised: torch.Tensor
    memory: Mapping
    sigma: Optional[torch.Tensor] = None  # the step's endpoints when the sampler
    sigma_next: Optional[torch.Tensor] = None  # steps on a grid of its own
    done: Optional[bool] = None  # a grid of its own: whether the run is over (None: after len(sigmas) - 1 steps)


class Start(NamedTuple):
    """What a setup returns when its sampler decides its own end: the memory and the initial ``done``."""

    memory: Mapping
    done: Optional[bool] = None


@dataclass(frozen=True)
class SamplerDef:
    name: str
    step: Callable
    setup: Optional[Callable] = None  # (x, sigmas) -> initial memory (or a `Start`)
    noise: Optional[str] = None  # None | "default" (seeded generator) | "brownian" (SDE, CPU tree) | "brownian_gpu" (tree on x's device)
    inpaint_random: bool = False  # the inpainting layer re-noises the kept area with noise from seed + 1
    uncond: bool = False  # CFG++: every evaluation also returns the unconditional prediction (cfg-1 skip off)
    model_sampling: bool = False  # needs the model's sampling: setup(x, sigmas, model_sampling), else memory["const"]
    const_offset: bool = False  # on CONST a first sigma >= 1 becomes percent_to_sigma(1e-4) (spec §3.6.1)
    prepare: Optional[Callable] = None  # (sigmas) -> per-step scalars of the rule, read from memory["prepared"];
    # each step's first scalar is the sigma the rule evaluates the model at (`sampling.call.warm_batches`)


@dataclass(frozen=True)
class SamplerState:
    """Everything between two steps of one sampler call; immutable."""

    sampler: str
    x: torch.Tensor
    sigmas: torch.Tensor
    i: int = 0
    memory: Mapping = field(default_factory=dict)
    noise_sampler: Optional[Callable] = None
    denoised: Optional[torch.Tensor] = None
    sigma: Optional[torch.Tensor] = None
    sigma_next: Optional[torch.Tensor] = None
    finished: Optional[bool] = None  # the sampler's own word on the end (`StepOut.done`); None: the step count
    options: Mapping = field(default_factory=dict)  # the rule's keyword parameters (`check_options`)

    @property
    def done(self) -> bool:
        if self.finished is not None:
            return self.finished
        return self.i >= self.sigmas.shape[0] - 1  # len(sigmas) of the 1-D list, without Tensor.__len__


SAMPLERS: dict[str, SamplerDef] = {}


def register(name: str, *, setup=None, noise=None, inpaint_random=False, uncond=False,
             model_sampling=False, const_offset=False, prepare=None):
    def wrap(fn):
        SAMPLERS[name] = SamplerDef(name, fn, setup, noise, inpaint_random, uncond,
                                    model_sampling or const_offset, const_offset, prepare)
        return fn
    return wrap


OPTION_CHOICES = {"solver_type": ("midpoint", "heun")}  # the options that take a name


def sampler_options(sampler: str) -> dict:
    """The options of ``sampler``'s rule and their defaults (its keyword parameters after ``noise``)."""
    params = list(inspect.signature(get_sampler(sampler).step).parameters.values())[6:]
    return {p.name: p.default for p in params}


def check_options(sampler: str, options) -> dict:
    """``options`` for ``sampler`` as a plain dict, each checked against its default's kind: a name from
    `OPTION_CHOICES`, an integer >= 1, or a finite number; else a ValueError naming what is accepted."""
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise ValueError(f"options: expected a mapping of option names to values, got {options!r}")
    known = sampler_options(sampler)
    checked = {}
    for name, value in options.items():
        if name not in known:
            accepted = ", ".join(known) or "none"
            raise ValueError(f"options: {sampler} has no option {name!r}; accepted: {accepted}")
        default = known[name]
        if name in OPTION_CHOICES:
            if value not in OPTION_CHOICES[name]:
                raise ValueError(f"options.{name}: unknown value {value!r}; accepted: {', '.join(OPTION_CHOICES[name])}")
        elif isinstance(default, int):
            value = check_int(value, f"options.{name}", 1)
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"options.{name}: expected a finite number, got {value!r}")
        checked[name] = value
    return checked


CONST_OFFSET_PERCENT = 1e-4


def const_offset_sigmas(sigmas: torch.Tensor, model_sampling) -> torch.Tensor:
    """The working list of the (O) samplers on CONST: a first sigma >= 1 (of a list of at least 2)
    replaced by ``percent_to_sigma(1e-4)`` in a copy; any other list is returned as it is."""
    if not model_sampling.is_const or len(sigmas) < 2 or not sigmas[0] >= 1:
        return sigmas
    sigmas = sigmas.clone()
    sigmas[0] = model_sampling.percent_to_sigma(CONST_OFFSET_PERCENT)
    return sigmas


def final_sigma(sampler: str, sigmas: torch.Tensor) -> torch.Tensor:
    """The sigma a call's end-of-call rescale (``inverse_noise_scaling``) uses: the last entry of the
    sigma tensor after the sampler ran. uni_pc/uni_pc_bh2 overwrite a final 0 of the caller's
    tensor with 0.001 (float32), so on CONST their run is returned divided by 1 - 0.001."""
    last = sigmas[-1]
    if sampler in ("uni_pc", "uni_pc_bh2") and last == 0:
        return torch.full_like(last, 0.001)
    return last


class GuidedDenoiser:
    """A denoiser ``(x, sigma_batch) -> D`` that can also give the unconditional prediction.

    ``with_uncond(x, sigma_batch) -> (D, U)`` makes the same single evaluation as a call (one
    model call, both CFG branches, never the cfg-1 skip) and returns the guided ``D`` with the raw
    unconditional ``U``. Wrappers (counting, inpainting) forward both entry points.

    ``batches``: a dict `sigma_batch` keeps the per-item sigmas of this denoiser's evaluations in, set by a
    caller whose sigmas are the same tensors call after call (a call plan's); None: made at every evaluation.
    """

    __slots__ = ("denoise", "with_uncond", "batches")

    def __init__(self, denoise, with_uncond, batches: Optional[dict] = None):
        self.denoise, self.with_uncond, self.batches = denoise, with_uncond, batches

    def __call__(self, x, sigma):
        return self.denoise(x, sigma)


def denoise_with_uncond(denoise, x: torch.Tensor, sigma: torch.Tensor) -> tuple:
    """``(D, U)`` of one evaluation at per-item ``sigma``; a denoiser without guidance has ``U = D``."""
    with_uncond = getattr(denoise, "with_uncond", None)
    if with_uncond is None:
        denoised = denoise(x, sigma)
        return denoised, denoised
    return with_uncond(x, sigma)


BATCH_CACHE_LIMIT = 256  # sigma batches a ``batches`` dict keeps before it starts over (`sigma_batch`)


def sigma_batch(sigma, x: torch.Tensor, batches: Optional[dict] = None) -> torch.Tensor:
    """``sigma * x.new_ones([B])`` (k-diffusion's ``s_in``): a scalar sigma, one per batch item. A 0-dim sigma of
    x's dtype and device is copied out instead (one kernel, not three: ``sigma * 1`` is sigma, bit for bit).

    ``batches``: a dict kept by a caller that evaluates at the same sigma tensors again and again (`GuidedDenoiser`);
    such a copy is then made once and handed out again while neither it nor ``sigma`` has been written to since
    (their version counters: a model that changes its sigma in place gets a new copy next time)."""
    if type(sigma) is torch.Tensor and sigma.ndim == 0 and sigma.dtype == x.dtype and sigma.device == x.device:
        if batches is None:
            return sigma.expand(x.shape[0]).clone()
        key = (id(sigma), x.shape[0])
        hit = batches.get(key)
        if hit is not None and hit[0] is sigma and hit[1]._version == hit[2] and sigma._version == hit[3]:
            return hit[1]
        if len(batches) >= BATCH_CACHE_LIMIT:
            batches.clear()
        batch = sigma.expand(x.shape[0]).clone()
        batches[key] = (sigma, batch, batch._version, sigma._version)  # sigma kept alive: its id stays its own
        return batch
    return sigma * x.new_ones([x.shape[0]])


def _batches(model) -> Optional[dict]:
    return model.batches if type(model) is GuidedDenoiser else None


def call_model(model, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Evaluate the denoiser at a scalar sigma broadcast to the batch (k-diffusion's ``s_in``)."""
    return model(x, sigma_batch(sigma, x, _batches(model)))


def call_model_uncond(model, x: torch.Tensor, sigma: torch.Tensor) -> tuple:
    """`call_model` for CFG++ samplers: ``(D, U)``, the guided and the unconditional prediction."""
    return denoise_with_uncond(model, x, sigma_batch(sigma, x, _batches(model)))


def call_model_pair(model, x: torch.Tensor, sigma: torch.Tensor, cfg_pp: bool) -> tuple:
    """``(D, U)`` for samplers with a CFG++ switch: `call_model_uncond` when on, else ``(D, D)``."""
    if cfg_pp:
        return call_model_uncond(model, x, sigma)
    denoised = call_model(model, x, sigma)
    return denoised, denoised


def to_d(x, sigma, denoised):
    """The probability-flow ODE derivative dx/dsigma."""
    return (x - denoised) / sigma


def ancestral_step(sigma, sigma_next, eta=1.0):
    """Split a step into a deterministic move to ``sigma_down`` and fresh noise ``sigma_up``."""
    if not eta:
        return sigma_next, 0.0
    sigma_up = min(sigma_next, eta * (sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2) ** 0.5)
    sigma_down = (sigma_next**2 - sigma_up**2) ** 0.5
    return sigma_down, sigma_up


def rf_ancestral_step(sigma, sigma_next, eta=1.0):
    """The flow (CONST) ancestral split (spec §3.6.3): ``(sigma_down, alpha_next / alpha_down, c)``.

    A deterministic move to ``sigma_down`` times ``alpha_next / alpha_down`` restores the signal
    level of ``sigma_next``; fresh noise of std ``c`` brings the noise std back to ``sigma_next``.
    """
    ratio = 1 + ((sigma_next / sigma) - 1) * eta
    sigma_down = sigma_next * ratio
    alpha_next, alpha_down = 1 - sigma_next, 1 - sigma_down
    c = (sigma_next**2 - sigma_down**2 * alpha_next**2 / alpha_down**2) ** 0.5
    return sigma_down, alpha_next / alpha_down, c


def get_sampler(name) -> SamplerDef:
    if name not in SAMPLERS:
        raise ValueError(f"sampler: unknown name {name!r}; accepted: {', '.join(SAMPLERS)}")
    return SAMPLERS[name]


def check_sigmas(sigmas, name: str = "sigmas") -> torch.Tensor:
    sigmas = torch.as_tensor(sigmas)
    if sigmas.ndim != 1 or len(sigmas) < 1:
        raise ValueError(f"{name}: expected a 1-D tensor of sigmas, got shape {tuple(sigmas.shape)}")
    if not torch.isfinite(sigmas).all() or (sigmas < 0).any():
        raise ValueError(f"{name}: expected finite, non-negative values, got {sigmas.tolist()}")
    return sigmas


def default_noise_sampler(sampler: SamplerDef, x, sigmas, seed):
    if sampler.noise == "default":
        return DefaultNoiseSampler(x, seed)
    if sampler.noise in ("brownian", "brownian_gpu"):
        positive = sigmas[sigmas > 0]
        if len(positive) == 0:
            return None
        return BrownianTreeNoiseSampler(x, positive.min(), sigmas.max(), seed, cpu=sampler.noise == "brownian")
    return None


def all_finite(t: torch.Tensor) -> bool:
    """``bool(torch.isfinite(t).all())`` for a real tensor, in one light kernel where it can: a NaN or an
    infinity makes the sum NaN or infinite, so a finite sum proves every value finite. Only a sum that
    overflows (or a non-finite value) needs the exact test: ``t * 0`` is 0 where t is finite and NaN where it
    is not, and a sum holding a NaN is NaN."""
    return math.isfinite(t.sum().item()) or math.isfinite(t.mul(0).sum().item())


@lru_cache(maxsize=1)
def _default_model_sampling():
    return sd15_model_sampling()


def start(sampler: str, x: torch.Tensor, sigmas, *, seed: int = 0, noise_sampler=None,
          model_sampling=None, options=None) -> SamplerState:
    """The state before the first step of ``sampler`` over ``sigmas`` (x already at sigmas[0]).

    ``model_sampling``: the model's sampling, or a model that has one (or a bare sigma table), for
    the samplers whose rule depends on it (the CONST forms of spec §3.6; sa_solver's noise interval
    is in the model's ``percent_to_sigma``); None means SD1.5's discrete EPS sampling, the built-in
    model's. The state's ``sigmas`` are the sampler's working list (see `const_offset_sigmas`).
    ``options``: the rule's keyword parameters to change (`sampler_options` names them; `check_options`).
    """
    spec = get_sampler(sampler)
    options = check_options(sampler, options)
    sigmas = check_sigmas(sigmas)
    return begin(spec, x, sigmas, seed=seed, noise_sampler=noise_sampler, model_sampling=model_sampling,
                 options=options)


def begin(spec: SamplerDef, x: torch.Tensor, sigmas: torch.Tensor, *, seed: int = 0, noise_sampler=None,
          model_sampling=None, options=None, prepared=None) -> SamplerState:
    """`start` for a caller that has already checked ``sigmas`` (`check_sigmas`: a 1-D tensor) and
    ``options`` (`check_options`; None: none): the seed and x are still checked, in `start`'s order.
    ``prepared``: ``spec.prepare(sigmas)``, made once by a caller that runs these sigmas again and again
    (the rule reads it from ``memory["prepared"]``; the same scalars it would make each step)."""
    seed = check_seed(seed)
    if not all_finite(x):
        raise ValueError("x: expected finite values (found NaN or inf)")
    options = {} if options is None else options
    if noise_sampler is None:
        noise_sampler = default_noise_sampler(spec, x, sigmas, seed)
    if spec.model_sampling:
        sampling = _default_model_sampling() if model_sampling is None else as_model_sampling(model_sampling)
        if spec.const_offset:
            sigmas = const_offset_sigmas(sigmas, sampling)
        memory = spec.setup(x, sigmas, sampling) if spec.setup else {"const": sampling.is_const}
    else:
        memory = spec.setup(x, sigmas) if spec.setup else {}
    memory, finished = memory if isinstance(memory, Start) else (memory, None)
    if prepared is not None:
        memory = dict(memory, prepared=prepared)
    return SamplerState(spec.name, x, sigmas, 0, memory, noise_sampler, finished=finished, options=options)


def step(model, state: SamplerState) -> SamplerState:
    """Advance one step; the input state is left untouched (its noise sampler is cloned)."""
    if state.done:
        raise ValueError(f"state: the {state.sampler} run over {len(state.sigmas)} sigmas is already done")
    spec = SAMPLERS[state.sampler]
    noise = clone_noise_sampler(state.noise_sampler)
    out = spec.step(model, state.x, state.sigmas, state.i, state.memory, noise, **state.options)
    sigma = state.sigmas[state.i] if out.sigma is None else out.sigma
    sigma_next = state.sigmas[state.i + 1] if out.sigma_next is None else out.sigma_next
    # every field named (what `dataclasses.replace` would do, without its per-call introspection)
    return SamplerState(state.sampler, out.x, state.sigmas, state.i + 1, out.memory, noise, out.denoised, sigma,
                        sigma_next, out.done, state.options)


def sample(denoise, x, sigmas, sampler, *, seed=0, noise_sampler=None, callback=None, model_sampling=None,
           options=None):
    """A fused run: a loop over `step`. ``x`` must already be noised to ``sigmas[0]``.

    ``callback`` receives ``{"i", "x", "sigma", "sigma_next", "denoised"}`` after every step.
    """
    state = start(sampler, x, sigmas, seed=seed, noise_sampler=noise_sampler, model_sampling=model_sampling,
                  options=options)
    while not state.done:
        state = step(denoise, state)
        if callback is not None:
            callback({"i": state.i - 1, "x": state.x, "sigma": state.sigma,
                      "sigma_next": state.sigma_next, "denoised": state.denoised})
    return state.x
