"""StepControls driven from Python as the front end would: clicks and value assignments."""
import asyncio

import pytest
import torch

import regional_widgets as rw
from regional_widgets.program import group_starts
from regional_widgets.session import ParameterError
from regional_widgets.widgets import StepControls

from .sessions import FailingModel, make_session


@pytest.fixture
def session():
    return make_session()


def cursor(session):
    return 0 if session.phase is None else [op.phase for op in session.ops].index(session.phase) + 1


def reference_after(substeps):
    """A fresh session advanced sub-step by sub-step, for comparison."""
    fresh = make_session()
    for _ in range(substeps):
        fresh.substep()
    return fresh


def test_buttons_are_labelled(session):
    c = StepControls(session)
    labels = [b.description for b in (c.step_button, c.substep_button, c.run_button, c.pause_button, c.reset_button)]
    assert labels == ["Step", "Sub-step", "Run", "Pause", "Reset"]
    assert c.pause_button.disabled and not c.run_button.disabled


def test_step_advances_one_regional_step(session):
    c = StepControls(session)
    c.step_button.click()
    assert session.step_index == 1
    assert cursor(session) == group_starts(session.ops)[1]
    assert c.history.value == 1 and c.progress.value == 1 and c.progress.max == session.num_steps
    assert c.progress_text.value == f"1/{session.num_steps} done ·"
    assert c.status.value == session.status and c.status.value
    assert c.error.message == ""


def test_substep_advances_the_phase(session):
    c = StepControls(session)
    c.substep_button.click()
    assert session.phase == session.ops[0].phase
    c.substep_button.click()
    assert session.phase == session.ops[1].phase
    assert session.step_index == 0


def test_reset_goes_back_to_the_start(session):
    c = StepControls(session)
    c.step_button.click()
    c.step_button.click()
    c.reset_button.click()
    assert session.step_index == 0 and session.phase is None and c.history.value == 0


def test_run_then_pause_stops_between_substeps(session):
    c = StepControls(session)
    total = len(session.ops)

    async def scenario():
        c.run_button.click()
        assert c.running and c.run_button.disabled and not c.pause_button.disabled
        for _ in range(5):
            await asyncio.sleep(0)
        c.pause_button.click()
        for _ in range(3):
            await asyncio.sleep(0)
        assert not c.running

    asyncio.run(scenario())
    k = cursor(session)
    assert 0 < k < total and not session.done
    state = session.history[k]
    assert torch.equal(session.latent, state.latent) and torch.equal(session.denoised, state.denoised)
    assert torch.equal(session.latent, reference_after(k).latent)
    assert not c.run_button.disabled and c.pause_button.disabled and c.error.message == ""


def test_a_second_run_click_never_double_steps(session):
    c = StepControls(session)
    phases = []
    session.observe(lambda change: phases.append(change["new"]), names="phase")

    async def scenario():
        c.run_button.click()
        task = c.task
        c.run_button.click()  # ignored while running
        c.step_button.click()  # ignored too
        c.substep_button.click()
        assert c.task is task
        await task

    asyncio.run(scenario())
    assert session.done
    assert phases == [op.phase for op in session.ops]  # every sub-step exactly once, in order
    assert torch.equal(session.result, make_session().run())
    assert c.run_button.disabled and c.step_button.disabled  # done: reset or scrub to go again


def test_run_without_an_event_loop_runs_to_the_end(session):
    c = StepControls(session)
    c.run_button.click()
    assert session.done and c.history.value == session.num_steps


def test_history_slider_scrubs_and_follows(session):
    c = StepControls(session)
    for _ in range(3):
        c.step_button.click()
    assert c.history.value == 3
    after_2 = session.history[session.history.step_starts[2]].latent
    c.history.value = 1
    assert session.step_index == 1
    assert torch.equal(session.latent, session.history[session.history.step_starts[1]].latent)
    c.history.value = 2
    assert torch.equal(session.latent, after_2)


def test_a_region_change_after_scrubbing_forks(session):
    c = StepControls(session)
    for _ in range(3):
        c.step_button.click()
    c.history.value = 1
    start_1 = session.history.step_starts[1]
    kept = session.history[start_1].latent
    before = [session.history[session.history.step_starts[2]].latent]
    session.regions[0].config = rw.SamplerConfig(positive="water")
    assert len(session.history) == start_1 + 1  # the future is forgotten, the present kept
    assert torch.equal(session.latent, kept)
    c.step_button.click()
    assert session.step_index == 2 and c.history.value == 2
    assert not torch.equal(session.latent, before[0])


def test_a_bad_parameter_shows_inline_and_reverts(session):
    c = StepControls(session)
    with pytest.raises(ParameterError) as expected:
        make_session().steps = 0
    c.fields["steps"].widget.value = 0
    assert c.param_error.message == str(expected.value)
    assert session.steps == 4 and c.fields["steps"].widget.value == 4
    c.fields["steps"].widget.value = 6  # a good value clears the message
    assert c.param_error.message == "" and session.steps == 6
    assert c.history.max == session.num_steps == 6


def test_a_cross_parameter_error_leaves_the_session_consistent(session):
    c = StepControls(session)
    c.fields["start_at_step"].widget.value = 10
    assert "start_at_step" in c.param_error.message and "less than" in c.param_error.message
    assert session.start_at_step == 0 and c.fields["start_at_step"].widget.value == 0
    c.step_button.click()
    assert session.step_index == 1 and c.error.message == ""


def test_parameters_follow_the_session(session):
    c = StepControls(session)
    session.noise_seed = 7
    assert c.fields["noise_seed"].widget.value == 7
    c.fields["add_noise"].widget.value = False
    assert session.add_noise is False
    c.fields["additional_mode"].widget.value = "DISABLE"
    assert session.additional_mode == "DISABLE"
    c.fields["additional_sigma_ratio"].widget.value = 1.5
    assert "additional_sigma_ratio" in c.param_error.message and session.additional_sigma_ratio == 0.3


def test_the_regional_sampler_node_shows_its_own_parameters():
    from .sessions import MODEL, masks

    bottom, _ = masks()
    s = rw.RegionalSamplerSession.regional_sampler(
        MODEL, rw.empty_latent(MODEL, 64, 64), base=rw.SamplerConfig(positive="sky"),
        regions=[rw.Region(bottom, rw.SamplerConfig(positive="grass"))], steps=4, base_only_steps=1)
    c = StepControls(s)
    assert set(c.fields) == set(s.parameters()) | {"mode"}
    assert {"seed", "seed_2nd", "seed_2nd_mode", "base_only_steps", "denoise"} <= set(c.fields)
    assert "add_noise" not in c.fields and "noise_seed" not in c.fields
    c.fields["denoise"].widget.value = 0.0
    assert "denoise" in c.param_error.message and s.denoise == 1.0
    c.fields["seed_2nd_mode"].widget.value = "fixed"
    assert s.seed_2nd_mode == "fixed"
    c.step_button.click()
    assert s.step_index == 1


def test_a_model_error_during_a_step_shows_inline():
    model = FailingModel()
    s = make_session(model)
    c = StepControls(s)
    c.step_button.click()
    model.fail = True
    latent = s.latent
    c.step_button.click()
    assert "boom: the model failed" in c.error.message
    assert s.step_index == 1 and s.latent is latent  # the step was atomic
    model.fail = False
    c.step_button.click()
    assert s.step_index == 2 and c.error.message == ""


def test_a_model_error_during_run_shows_inline():
    model = FailingModel()
    s = make_session(model)
    c = StepControls(s)

    async def scenario():
        c.run_button.click()
        await asyncio.sleep(0)
        model.fail = True
        await c.task

    asyncio.run(scenario())
    assert "boom" in c.error.message and not c.running and not s.done
    assert not c.run_button.disabled


def test_scrubbing_while_running_pauses_first(session):
    c = StepControls(session)

    async def scenario():
        c.run_button.click()
        for _ in range(8):
            await asyncio.sleep(0)
        assert c.history.value >= 1
        c.history.value = 0
        for _ in range(3):
            await asyncio.sleep(0)

    asyncio.run(scenario())
    assert not c.running and session.step_index == 0 and session.phase is None


def test_the_mode_switch_replans(session):
    c = StepControls(session)
    c.step_button.click()
    c.fields["mode"].widget.value = "coherent"
    assert session.mode == "coherent" and session.step_index == 0 and c.history.value == 0
    assert any(op.kind == "blend" for op in session.ops)
    c.run_button.click()
    assert session.done and c.error.message == ""
