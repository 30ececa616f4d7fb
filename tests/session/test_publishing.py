"""What a session publishes per sub-step reaches every kind of listener (publish.py, stepper.py)."""
import numpy as np
import pytest
import torch
from traitlets import All

import regional_widgets as rw
from regional_widgets.publish import publish_traits
from regional_widgets.session import RegionalSamplerSession
from regional_widgets.stepper import Stepper

MODEL = rw.models.ToyWorld(n_exemplars=60, image_size=16)
BASE = rw.SamplerConfig(sampler="euler", positive="sky")
PUBLISHED = ("step_index", "phase", "sigma", "sigma_next", "latent", "denoised", "masks", "status", "progress",
             "done", "result", "sigma_map", "times_map")


def regions(empty_second=False):
    m1, m2 = np.zeros((16, 16), np.float32), np.zeros((16, 16), np.float32)
    m1[8:] = 1
    if not empty_second:
        m2[:4, :4] = 1
    return [rw.Region(m1, rw.SamplerConfig(positive="grass")), rw.Region(m2, rw.SamplerConfig(positive="brick"))]


def make(cls=RegionalSamplerSession, **params):
    return cls(MODEL, rw.empty_latent(MODEL, 16, 16), base=BASE, regions=regions(**params), steps=3)


def recorded(session, names):
    seen = []
    session.observe(lambda change: seen.append((change["name"], change["new"])), names=names)
    return seen


def same(a, b) -> bool:
    if len(a) != len(b):
        return False
    for (n1, v1), (n2, v2) in zip(a, b):
        if n1 != n2:
            return False
        if isinstance(v1, torch.Tensor) or isinstance(v2, torch.Tensor):
            if not (isinstance(v1, torch.Tensor) and isinstance(v2, torch.Tensor) and torch.equal(v1, v2)):
                return False
        elif isinstance(v1, list):
            if not (len(v1) == len(v2) and all(torch.equal(x, y) for x, y in zip(v1, v2))):
                return False
        elif v1 != v2:
            return False
    return True


def test_observers_of_one_trait_all_traits_and_an_override_see_the_same_changes():
    by_name, everything = make(), make()
    named = recorded(by_name, list(PUBLISHED))
    broad = recorded(everything, All)

    class Logging(RegionalSamplerSession):
        log = None  # set once built: the others start listening then too

        def notify_change(self, change):
            if self.log is not None and change["name"] in PUBLISHED:
                self.log.append((change["name"], change["new"]))
            return super().notify_change(change)

    overridden = make(Logging)
    overridden.log = []
    for s in (by_name, everything, overridden):
        s.run()
    broad = [(n, v) for n, v in broad if n in PUBLISHED]
    assert len(named) > 3 * len(by_name.ops)  # latent, status, progress... change at every sub-step
    assert same(named, broad) and same(named, overridden.log)
    assert [v for n, v in named if n == "latent"][-1] is by_name.latent


def test_an_unobserved_session_stores_every_value_and_a_late_observer_sees_the_next_change():
    quiet, watched = make(), make()
    seen = recorded(watched, ["latent", "status"])
    quiet.substep(), watched.substep()
    assert torch.equal(quiet.latent, watched.latent) and quiet.status == watched.status
    late = recorded(quiet, ["latent", "status"])
    quiet.substep(), watched.substep()
    assert same(late, seen[2:]) and len(late) == 2


def test_held_notifications_arrive_at_the_end_of_the_block():
    s = make()
    seen = recorded(s, ["latent"])
    with s.hold_trait_notifications():
        s.substep()
        s.substep()
        assert seen == []
    assert len(seen) == 1 and seen[0][1] is s.latent  # traitlets keeps the last value of each trait


def test_publish_skips_unchanged_values_and_notifies_the_rest():
    s = make()
    seen = recorded(s, ["status", "progress", "sigma"])
    publish_traits(s, {"status": s.status, "progress": s.progress, "sigma": s.sigma})
    assert seen == []
    publish_traits(s, {"status": "elsewhere", "progress": s.progress, "sigma": 1.5})
    assert seen == [("status", "elsewhere"), ("sigma", 1.5)] and s.status == "elsewhere" and s.sigma == 1.5


def test_the_empty_region_note_follows_the_painted_mask():
    s = make(empty_second=True)
    while s.phase != ("region", 2, 0):
        s.substep()
    assert "region 2 is empty" in s.status
    s.goto(0)
    painted = np.zeros((16, 16), np.float32)
    painted[:4, :4] = 1
    s.regions[1].mask = painted
    while s.phase != ("region", 2, 0):
        s.substep()
    assert "is empty" not in s.status
    s.goto(0)
    s.regions[1].mask = np.zeros((16, 16), np.float32)  # erased again
    while s.phase != ("region", 2, 0):
        s.substep()
    assert "region 2 is empty" in s.status


def test_a_stepper_runs_without_a_session():
    s = make()
    s.run()
    run = Stepper(s.node_params, s._prompts)
    run.start(s.engine, s.latent_image)
    while run.state.cursor < len(run.ops):
        run.advance(s.history_limit)
    assert torch.equal(run.state.result, s.result) and len(run.timeline) == len(s.timeline)
    run.move_to(run.starts[1], s.history_limit)
    assert run.values(run.state, s.regions, (16, 16))["step_index"] == 1
    assert torch.equal(run.state.latent, s.history[run.starts[1]].latent)


def values_of(session) -> list:
    return [(name, getattr(session, name)) for name in PUBLISHED]


def test_an_unobserved_run_publishes_the_last_state_as_stepping_does():
    quiet, stepped = make(), make()
    seen = recorded(quiet, ["steps"])  # a parameter's observer: no published value is observed
    quiet.run()
    while not stepped.done:
        stepped.substep()
    assert same(values_of(quiet), values_of(stepped)) and seen == []
    assert quiet.done and quiet.status == stepped.status and quiet.result is quiet.state.result


@pytest.mark.filterwarnings("ignore:Counting._latent_changed is deprecated:DeprecationWarning")
def test_a_run_notifies_every_sub_step_to_an_old_style_observer_as_stepping_does():
    class Counting(RegionalSamplerSession):
        def _latent_changed(self, old, new):  # traitlets' old-style observer: it must see each sub-step
            self.counted = getattr(self, "counted", [])
            self.counted.append(new)

    ran, stepped = make(Counting), make(Counting)
    ran.counted, stepped.counted = [], []
    ran.run()
    while not stepped.done:
        stepped.substep()
    assert len(ran.counted) == len(stepped.counted) == len(ran.ops)
    assert all(torch.equal(a, b) for a, b in zip(ran.counted, stepped.counted))


def test_an_observer_that_raises_mid_run_leaves_the_session_as_it_was():
    s = make()
    s.substep()
    before = values_of(s)
    entries = list(s.timeline.entries)

    def fail(change):
        if change["new"] == 2:
            raise KeyboardInterrupt
    s.observe(fail, names="step_index")
    with pytest.raises(KeyboardInterrupt):
        s.run()
    assert same(values_of(s), before) and s.timeline.entries == entries
    s.unobserve(fail, names="step_index")
    plain = make()
    assert torch.equal(s.run(), plain.run())
