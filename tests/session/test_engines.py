"""One engine interface: the faithful and coherent engines over a frozen NodeParams, never the session."""
import dataclasses

import numpy as np
import pytest
import torch

import regional_widgets as rw
from regional_widgets import coherent, faithful, node_params, program
from regional_widgets.timeline import Timeline

MODEL = rw.models.ToyWorld(image_size=32, n_exemplars=50)


def make(mode, **params):
    m = np.zeros((32, 32), np.float32)
    m[16:, :] = 1
    regions = [rw.Region(m, rw.SamplerConfig(sampler="dpmpp_2m", scheduler="karras", cfg=2.0, positive="grass"))]
    base = rw.SamplerConfig(sampler="euler", scheduler="karras", cfg=2.0, positive="sky")
    return rw.RegionalSamplerSession(MODEL, rw.empty_latent(MODEL, 32, 32), base=base, regions=regions, steps=6,
                                     mode=mode, **params)


@pytest.mark.parametrize("mode", ["faithful", "coherent"])
def test_an_engine_alone_reproduces_the_session(mode):
    s = make(mode)
    expected = s.run().clone()
    params = s.node_params()
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.steps = 3
    engine = s.engine
    assert engine.name == mode
    ops = engine.plan(params)
    assert [op.phase for op in ops] == [op.phase for op in s.ops]
    ctx = engine.context(params)
    state = faithful.initial_state(params.latent_image)
    while state.cursor < len(ops):
        state = engine.execute(ctx, ops, state)
    assert torch.equal(state.result, expected)
    masks = engine.latent_masks(ctx, 32 // MODEL.downscale, 32 // MODEL.downscale)
    assert len(masks) == 2 and all(m.shape == s.masks[0].shape for m in masks)


def test_coherent_state_is_typed():
    s = make("coherent")
    s.substep()
    assert isinstance(s.state.extra, coherent.CoherentState)
    assert len(s.state.extra.outputs) == 1 and len(s.state.extra.denoised) == 1


def test_schedule_steps_is_the_one_rule():
    adv = make("faithful")
    assert node_params.schedule_steps(adv.node_params()) == 6 == rw.plot.schedule_steps(adv)
    plain = rw.RegionalSamplerSession.regional_sampler(MODEL, rw.empty_latent(MODEL, 32, 32), steps=6, denoise=0.4)
    assert node_params.schedule_steps(plain.node_params()) == int(6 / 0.4) == rw.plot.schedule_steps(plain)


def test_ops_are_built_with_keywords():
    with pytest.raises(TypeError):
        program.Op("base", 0)
    op = program.Op(kind="base", group=0)
    assert op.phase == ("base", 0)


def test_timeline_restore_at_and_replay():
    s = make("faithful")
    s.run()
    states = [s.history[k] for k in range(len(s.history))]
    timeline = Timeline()
    timeline.start(states[0])
    timeline.restore_at(states[5])
    assert timeline.entries[1:5] == [None] * 4 and timeline.sealed == 5
    ctx = s.engine.context(s.node_params())
    replayed = timeline.snapshot_at(3, lambda state: s.engine.execute(ctx, s.ops, state))
    assert torch.equal(replayed.latent, states[3].latent)
    fresh = make("faithful")
    fresh.restore_at(states[5])
    assert fresh.cursor == 5 and torch.equal(fresh.latent, states[5].latent)
    assert torch.equal(fresh.run(), s.result)


@pytest.mark.parametrize("name, home", [("Quirks", node_params), ("SamplerConfig", node_params),
                                        ("plan_advanced", program), ("FaithfulEngine", faithful)])
def test_the_old_regional_module_is_a_deprecated_alias(name, home):
    import regional_widgets.regional as old

    with pytest.warns(DeprecationWarning, match=rf"regional\.{name} moved to regional_widgets\.{home.__name__.split('.')[-1]}\.{name}"):
        value = getattr(old, name)
    assert value is getattr(home, name)
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        old.nothing


def test_a_sessions_call_plans_are_kept_across_runs_and_change_no_bit():
    s = make("faithful")
    first = s.run().clone()
    plans = dict(s.context.caches["plans"])
    s.reset()
    again = s.run().clone()
    assert torch.equal(first, again) and torch.equal(first, make("faithful").run())
    kept = s.context.caches["plans"]
    assert kept.keys() == plans.keys() and all(kept[k] is plans[k] for k in plans)  # made by the first run
    s.steps = 4  # another schedule: plans of its own, the same bits as a new session's
    fresh = make("faithful")
    fresh.steps = 4
    assert torch.equal(s.run(), fresh.run())
    assert engine_alone_plans_are_new(s)


def engine_alone_plans_are_new(s):
    """An engine's context made without the session's cache makes its own plans (equal, not the same)."""
    ctx = s.engine.context(s.node_params())
    mine, sessions = ctx.caches["plans"], s.context.caches["plans"]
    return mine.keys() == sessions.keys() and all(mine[k] is not sessions[k] for k in mine) and all(
        torch.equal(mine[k].sigmas, sessions[k].sigmas) for k in mine if mine[k].sigmas is not None)


def test_a_reset_with_the_same_settings_keeps_the_context_and_a_change_builds_a_new_one():
    s = make("faithful")
    first = s.run().clone()
    ctx = s.context
    s.reset()
    assert s.context is ctx and torch.equal(s.run(), first)
    # the same settings given again as new but equal objects: still the same run
    s.base = rw.SamplerConfig(sampler="euler", scheduler="karras", cfg=2.0, positive="sky")
    s.reset()
    assert s.context is ctx and torch.equal(s.run(), first)
    changes = [("noise_seed", 1), ("overlap_factor", 4),
               ("latent_image", rw.empty_latent(MODEL, 32, 32).clone()),
               ("base", rw.SamplerConfig(sampler="euler", scheduler="karras", cfg=3.0, positive="sky"))]
    for k, (name, value) in enumerate(changes):
        setattr(s, name, value)
        s.reset()
        fresh = make("faithful")
        for earlier, kept in changes[:k + 1]:  # every change so far stays
            setattr(fresh, earlier, kept)
        assert s.context is not ctx, name
        assert torch.equal(s.run(), fresh.run()), name
        ctx = s.context
    mask = s.regions[0].mask.copy()  # equal pixels, a new array: a painted mask is a new array
    s.regions[0].mask = mask
    s.reset()
    assert s.context is not ctx


def test_same_params_compares_plain_values_by_value_and_objects_by_identity():
    s = make("faithful")
    a, b = s.node_params(), s.node_params()
    assert a is not b and node_params.same_params(a, b)
    assert not node_params.same_params(a, dataclasses.replace(a, steps=7))
    assert not node_params.same_params(a, dataclasses.replace(a, latent_image=a.latent_image.clone()))
    region = dataclasses.replace(a.regions[0], mask=a.regions[0].mask.copy())
    assert not node_params.same_params(a, dataclasses.replace(a, regions=(region,)))
    region = dataclasses.replace(a.regions[0], config=dataclasses.replace(a.regions[0].config))
    assert node_params.same_params(a, dataclasses.replace(a, regions=(region,)))
    assert not node_params.same_params(a, dataclasses.replace(a, regions=()))
    assert not node_params.same_params(a, dataclasses.replace(a, batch_index=[0]))
    assert node_params.same_params(dataclasses.replace(a, batch_index=[0]), dataclasses.replace(a, batch_index=[0]))
    assert not node_params.same_params(dataclasses.replace(a, noise_seed=1), dataclasses.replace(a, noise_seed=True))



def test_times_maps_are_the_sums_of_the_step_masks_made_once_per_run():
    s = make("faithful")
    s.run()
    ctx, ops = s.context, s.ops
    h, w = s.latent.shape[-2:]
    states = [faithful.initial_state(s.latent_image)]  # the engine alone: every state live, nothing copied
    for _ in ops:
        states.append(s.engine.execute(ctx, ops, states[-1]))
    assert torch.equal(states[-1].result, s.result)
    sums, made = {}, {}
    for k, op in enumerate(ops):
        after = states[k + 1].times_map
        if op.kind == "composite":
            assert after is states[k].times_map
            continue
        # an independent sum: +0, then each call's mask at latent resolution, in the step's order
        total = sums.get(op.group, torch.zeros(h, w)) + ctx.at_latent(ctx.mask_for(op), h, w)
        sums[op.group] = total
        assert torch.equal(after, total) and after.dtype == torch.float32, k
        # every step adds the same masks in the same order: the same sums, each made once per run
        position = (op.kind, op.region, len([o for o in ops[:k] if o.group == op.group and o.kind != "composite"]))
        assert made.setdefault(position, after) is after, k
    assert len(made) < len([op for op in ops if op.kind != "composite"]) / 2
    # a map this context did not make (a copy, a loaded state) is summed as it comes, and not kept
    m = ctx.at_latent(None, h, w)
    assert m is ctx.at_latent(None, h, w) and torch.equal(m, torch.ones(h, w))
    kept = dict(ctx.caches["times"])
    copy = states[-1].times_map.clone()
    fresh = ctx.times_after(copy, m)
    assert torch.equal(fresh, copy + m) and fresh is not ctx.times_after(copy, m)
    other = torch.full((h, w), 2.0)
    assert torch.equal(ctx.times_after(other, m), torch.full((h, w), 3.0))
    assert ctx.caches["times"] == kept


def test_a_runs_sigma_batches_are_made_with_its_context_before_the_run():
    """The per-item sigmas the model is given are made once per call plan, as the context is built (long-lived
    tensors made mid-run would pin the heap's top), and a run makes none."""
    s = make("faithful")
    ctx = s.engine.context(s.node_params())
    plans = [p for p in ctx.caches["plans"].values() if p.prepared is not None]
    assert plans
    before = {id(p): dict(p.batches) for p in plans}
    for plan in plans:
        assert len(plan.batches) == len(plan.prepared)
        for scalars in plan.prepared:
            sigma = scalars[0]
            (kept,) = [v for v in plan.batches.values() if v[0] is sigma]
            assert torch.equal(kept[1], sigma.expand(1)) and kept[1].dtype == s.latent_image.dtype
    ops, state = s.engine.plan(s.node_params()), faithful.initial_state(s.latent_image)
    while state.cursor < len(ops):
        state = s.engine.execute(ctx, ops, state)
    assert torch.equal(state.result, s.run())
    for plan in plans:  # the same entries, the same tensors: nothing made during the run
        kept = before[id(plan)]
        assert plan.batches.keys() == kept.keys() and all(plan.batches[k][1] is kept[k][1] for k in kept)
