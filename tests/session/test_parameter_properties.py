"""Property test (hypothesis): random parameter assignments (None and wrong types included) never leave an invalid
trait, and a later run equals, bit for bit, a fresh session built with the final parameters."""
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import regional_widgets as rw
from regional_widgets import node_checks, params
from regional_widgets.session import _FORKING, _STRUCTURAL, ParameterError, Region, RegionalSamplerSession

from .snapshots import changed, snapshot

MODEL = rw.models.ToyWorld(n_exemplars=40, image_size=16)
N = 16
SESSION_TRAITS = params.parameter_traits(RegionalSamplerSession)
NODE_PARAMS = sorted(set(_STRUCTURAL + _FORKING) - {"base", "latent_image"})
REGION_TRAITS = params.parameter_traits(Region)

# valid values kept small so that every run is quick; the traits' own bounds are tried as invalid values
SMALL_VALID = {
    "steps": st.integers(1, 3), "start_at_step": st.integers(0, 3), "end_at_step": st.integers(0, 4),
    "base_only_steps": st.integers(0, 3), "overlap_factor": st.integers(0, 40),
    "denoise": st.sampled_from([0.5, 0.75, 1.0, 1]), "additional_sigma_ratio": st.floats(0.0, 1.0),
    "variation_strength": st.floats(0.0, 1.0),
    "quirks": st.builds(rw.Quirks, *[st.booleans()] * 6),
    "history_limit": st.integers(0, 2**22),
}
HOSTILE = st.one_of(
    st.none(), st.booleans(), st.integers(-2, 2), st.sampled_from([-1, 10001, 2**64, 10**7]),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=3), st.just([1]), st.just({}),
    st.just(np.float32(0.5)), st.just(np.int64(2)), st.just(np.bool_(True)), st.just(torch.tensor(1)),
    st.sampled_from(["faithful", "coherent", "DISABLE", "AUTO", "euler", "ignore", "fixed", "slerp"]))


def valid_for(name, trait):
    if name in SMALL_VALID:
        return SMALL_VALID[name]
    if trait.kind == "choice":
        return st.sampled_from(trait.options)
    if trait.kind == "bool":
        return st.booleans()
    if isinstance(trait, params.Seed):
        return st.one_of(st.integers(0, 5), st.just(params.SEED_MAX))
    raise AssertionError(f"no small values for {name}")


def assignment(owner, traits, names):
    return st.sampled_from(names).flatmap(
        lambda n: st.tuples(st.just(owner), st.just(n), st.one_of(valid_for(n, traits[n]), HOSTILE)))


MASKS = st.sampled_from(["same", "other", "wrong size", "none"])
ACTIONS = st.lists(st.one_of(
    assignment("session", SESSION_TRAITS, NODE_PARAMS + ["history_limit"]),
    assignment("region", REGION_TRAITS, sorted(set(REGION_TRAITS) - {"mask", "config"})),
    st.tuples(st.just("region"), st.just("mask"), MASKS),
    st.tuples(st.just("step"), st.just(""), st.just(None))), max_size=12)


def mask(kind):
    m = np.zeros((N, N), np.float32)
    if kind == "wrong size":
        return np.ones((N // 2, N), np.float32)
    if kind == "none":
        return None
    if kind == "same":
        m[N // 2:] = 1
    else:
        m[:, : N // 3] = 0.5
    return m


def build(node, region_values, session_values):
    region = Region(region_values["mask"], region_values["config"], region_values["variation_seed"],
                    region_values["variation_strength"], region_values["variation_method"])
    return RegionalSamplerSession(MODEL, rw.empty_latent(MODEL, N, N), base=rw.SamplerConfig(positive="sky"),
                                  regions=[region], node=node, **session_values)


def assert_all_valid(s):
    for name, trait in SESSION_TRAITS.items():
        value = getattr(s, name)
        assert value is not None and (trait.kind == "object" or trait.check(value) == value), name
    assert s.latent_image.shape == (1, MODEL.latent_channels, N, N)
    for name, trait in REGION_TRAITS.items():
        value = getattr(s.regions[0], name)
        assert value is not None, name
        if name != "mask":
            assert trait.check(value) == value, name
    assert s.regions[0].mask.shape == (N, N) and not s.regions[0].mask.flags.writeable
    steps = {n: getattr(s, n) for n in ("steps", "start_at_step", "end_at_step", "denoise")}
    node_checks.check_run(s.node, **steps)  # the cross-parameter rules hold too


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(node=st.sampled_from(["RegionalSamplerAdvanced", "RegionalSampler"]), actions=ACTIONS)
def test_random_assignments_keep_every_trait_valid_and_runs_reproducible(node, actions):
    region = Region(mask("same"), rw.SamplerConfig(sampler="euler_ancestral", positive="grass"))
    s = RegionalSamplerSession(MODEL, rw.empty_latent(MODEL, N, N), base=rw.SamplerConfig(positive="sky"),
                               regions=[region], node=node, steps=2, start_at_step=0)
    for owner, name, value in actions:
        if owner == "step":
            if not s.done:
                s.step()
            continue
        target = s if owner == "session" else s.regions[0]
        if name == "mask":
            value = mask(value)
        before = snapshot(s)
        try:
            setattr(target, name, value)
        except ParameterError:
            assert changed(before, snapshot(s)) == [], (name, value)  # refused: nothing changed
        assert_all_valid(s)
    final = {n: getattr(s, n) for n in NODE_PARAMS}
    r = s.regions[0]
    fresh = build(node, {n: getattr(r, n) for n in ("mask", "config", "variation_seed", "variation_strength",
                                                    "variation_method")}, final)
    s.reset()  # settings changed after steps fork the run; a reset replays it with the final settings
    expected, got = fresh.run(), s.run()
    assert torch.equal(got.view(torch.int32), expected.view(torch.int32))
