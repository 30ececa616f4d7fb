"""Stepping, scrubbing, forking, persistence, atomicity, validation and the teaching maps."""
import asyncio
import json

import numpy as np
import pytest
import torch

import regional_widgets as rw
from regional_widgets.io.session_files import SessionFileError

MODEL = rw.models.ToyWorld(n_exemplars=120, image_size=32)
BASE = rw.SamplerConfig(sampler="euler", scheduler="karras", cfg=3.0, positive="sky")


def make(node="RegionalSamplerAdvanced", samplers=("dpmpp_2m", "euler_ancestral"), **params):
    m1, m2 = np.zeros((32, 32), np.float32), np.zeros((32, 32), np.float32)
    m1[16:], m2[:12, :12] = 1, 1
    regs = [rw.Region(m1, rw.SamplerConfig(sampler=samplers[0], scheduler="karras", positive="grass")),
            rw.Region(m2, rw.SamplerConfig(sampler=samplers[1], positive="brick"))]
    params.setdefault("steps", 6)
    return rw.RegionalSamplerSession(MODEL, rw.empty_latent(MODEL, 32, 32), base=BASE, regions=regs, node=node, **params)


def test_step_substep_and_run_agree_bitwise():
    a, b, c = make(), make(), make()
    while not a.done:
        a.step()
    while not b.done:
        b.substep()
    assert torch.equal(a.result, b.result) and torch.equal(a.result, c.run())
    assert a.step_index == a.num_steps == 6  # 5 loop steps + the final base-only call


def test_goto_restores_exactly_and_continuing_is_identical():
    s = make()
    final = s.run().clone()
    s.goto(2)
    assert s.step_index == 2 and s.phase[0] == "composite" and s.phase[-1] == 1
    assert torch.equal(s.latent, s.history[s.history.step_starts[2]].latent)
    assert torch.equal(s.run(), final)
    s.goto(0)
    assert s.phase is None and torch.equal(s.latent, s.latent_image)


def test_changing_a_region_after_goto_forks_the_run():
    s = make()
    final = s.run().clone()
    s.goto(3)
    kept = s.latent.clone()
    s.regions[0].config = rw.SamplerConfig(sampler="euler", positive="water")
    assert torch.equal(s.latent, kept) and len(s.history) == s.history.step_starts[3] + 1
    forked = s.run()
    assert not torch.equal(forked, final)
    s.goto(3)  # the states before the fork are the originals
    assert torch.equal(s.latent, kept)


def test_structural_parameter_change_restarts():
    s = make()
    s.step()
    s.steps = 8
    assert s.step_index == 0 and s.num_steps == 8 and s.phase is None


def test_history_is_memory_bounded_and_still_exact():
    full = make()
    full.run()
    small = make()
    small.history_limit = 4 * small.latent_image.numel() * 4 * 3
    small.run()
    assert small.history.nbytes <= small.history_limit + 3 * 8 * small.latent_image.numel() * 4
    assert None in small.timeline.entries  # something was evicted
    for k in range(small.num_steps + 1):
        small.goto(k)
        full.goto(k)
        assert torch.equal(small.latent, full.latent)


def test_observers_fire_once_per_substep():
    s = make()
    seen = []
    s.observe(lambda ch: seen.append(ch["new"]), names=["phase"])
    s.step()
    assert seen == [("base", 0), ("region", 1, 0), ("composite", 1, 0), ("region", 2, 0), ("composite", 2, 0)]


class Boom(Exception):
    pass


@pytest.mark.parametrize("exc", [Boom, KeyboardInterrupt])
def test_a_failing_model_call_leaves_every_trait_as_it_was(exc):
    s = make()
    s.step()
    before = {name: getattr(s, name) for name in ("step_index", "phase", "sigma", "latent", "denoised", "status")}
    real_call, real_batch = MODEL.__class__.__call__, MODEL.__class__.call_batch
    calls = {"n": 0}

    def failing(real):
        def flaky(self, *args):
            calls["n"] += 1
            if calls["n"] == 3:
                raise exc("injected")
            return real(self, *args)
        return flaky

    MODEL.__class__.__call__, MODEL.__class__.call_batch = failing(real_call), failing(real_batch)
    try:
        with pytest.raises(exc):
            s.run()
    finally:
        MODEL.__class__.__call__, MODEL.__class__.call_batch = real_call, real_batch
    for name, value in before.items():
        assert getattr(s, name) is value or getattr(s, name) == value, name
    assert len(s.history) == s.history.step_starts[1] + 1
    assert torch.equal(s.run(), make().run())


def test_save_load_continue_is_bit_identical(tmp_path):
    reference = make(node="RegionalSampler", samplers=("dpmpp_2m", "dpmpp_sde")).run()
    s = make(node="RegionalSampler", samplers=("dpmpp_2m", "dpmpp_sde"))
    s.regions[0].mask = s.regions[0].mask * 0.5 + 0.25 * (s.regions[0].mask > 0)  # soft values survive
    s.goto(0)
    reference = make(node="RegionalSampler", samplers=("dpmpp_2m", "dpmpp_sde"))
    reference.regions[0].mask = s.regions[0].mask
    expected = reference.run()
    s.step()
    s.step()
    s.save(tmp_path / "sess")
    loaded = rw.RegionalSamplerSession.load(tmp_path / "sess", MODEL)
    assert loaded.node == "RegionalSampler" and loaded.step_index == 2
    assert np.array_equal(loaded.regions[0].mask, s.regions[0].mask)
    assert torch.equal(loaded.run(), expected)


def test_damaged_session_files_fail_clearly(tmp_path):
    s = make()
    s.save(tmp_path / "ok")
    with pytest.raises(SessionFileError, match="not a session folder"):
        rw.RegionalSamplerSession.load(tmp_path / "missing", MODEL)
    for name, damage in [("session.json", b"{not json"), ("masks.npz", b"PK\x03\x04garbage"),
                         ("latents.safetensors", b"\x00\x01")]:
        bad = tmp_path / f"bad_{name}"
        import shutil
        shutil.copytree(tmp_path / "ok", bad)
        (bad / name).write_bytes(damage)
        with pytest.raises(SessionFileError, match=name.split(".")[0]):
            rw.RegionalSamplerSession.load(bad, MODEL)
    doc = json.loads((tmp_path / "ok" / "session.json").read_text())
    doc["parameters"]["steps"] = -3
    (tmp_path / "ok" / "session.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="steps"):
        rw.RegionalSamplerSession.load(tmp_path / "ok", MODEL)
    with pytest.raises(SessionFileError, match="channel"):
        s.save(tmp_path / "ok2")
        rw.RegionalSamplerSession.load(tmp_path / "ok2", rw.models.ToyWorld(latent="sd", n_exemplars=20))


@pytest.mark.parametrize("name, value, match", [
    ("steps", 0, "steps: expected an integer in 1..10000"), ("noise_seed", -1, "noise_seed"),
    ("noise_seed", 2**64, "noise_seed"), ("additional_mode", "often", "additional_mode.*ratio between"),
    ("additional_sampler", "lms", "additional_sampler.*AUTO"), ("additional_sigma_ratio", 1.2, "additional_sigma_ratio"),
    ("overlap_factor", -2, "overlap_factor"), ("add_noise", "yes", "add_noise"), ("denoise", 0.0, "denoise"),
    ("seed_2nd_mode", "twice", "seed_2nd_mode.*seed\\+seed_2nd"),
])
def test_rejected_assignments_keep_the_old_value(name, value, match):
    s = make()
    old = getattr(s, name)
    with pytest.raises(ValueError, match=match):
        setattr(s, name, value)
    assert getattr(s, name) == old


def test_bad_construction_inputs():
    latent = rw.empty_latent(MODEL, 32, 32)
    good = np.ones((32, 32), np.float32)
    with pytest.raises(ValueError, match="start_at_step"):
        rw.RegionalSamplerSession(MODEL, latent, base=BASE, start_at_step=5, steps=5)
    with pytest.raises(ValueError, match="one shape"):
        rw.RegionalSamplerSession(MODEL, latent, base=BASE, regions=[rw.Region(good), rw.Region(np.ones((16, 16)))])
    with pytest.raises(ValueError, match=r"mask: expected values in \[0, 1\]"):
        rw.Region(good * 2)
    with pytest.raises(ValueError, match="mask: expected a 2-D"):
        rw.Region(np.ones((2, 32, 32)))
    with pytest.raises(ValueError, match="latent: expected 3 channels"):
        rw.RegionalSamplerSession(MODEL, torch.ones(1, 4, 32, 32), base=BASE)
    with pytest.raises(ValueError, match="latent: expected finite"):
        rw.RegionalSamplerSession(MODEL, torch.full((1, 3, 32, 32), float("nan")), base=BASE)
    with pytest.raises(ValueError, match="sampler: unknown name 'fast'.*euler"):
        rw.SamplerConfig(sampler="fast")
    with pytest.raises(ValueError, match="scheduler: unknown"):
        rw.SamplerConfig(scheduler="cosine")
    with pytest.raises(ValueError, match="region 1.*unknown"):
        rw.RegionalSamplerSession(MODEL, latent, base=BASE, regions=[rw.Region(good, rw.SamplerConfig(positive="dragon"))])
    with pytest.raises(ValueError, match="steps_count: unknown parameter"):
        rw.RegionalSamplerSession(MODEL, latent, base=BASE, steps_count=3)


def test_empty_latent_channels_are_adapted_like_the_reference():
    s = rw.RegionalSamplerSession(MODEL, torch.zeros(1, 1, 32, 32), base=BASE, steps=3)
    assert s.latent_image.shape == (1, 3, 32, 32)


def test_an_empty_region_is_still_called_and_reported():
    s = make()
    s.regions[1].mask = np.zeros((32, 32), np.float32)
    s.substep()
    s.substep()
    s.substep()
    s.substep()
    assert s.phase == ("region", 2, 0) and "region 2 is empty" in s.status


def test_effective_sigma_map_shows_under_noised_regions():
    s = make(samplers=("euler", "euler"))
    s.step()
    sig = s.sigma_map
    from regional_widgets.sampling.schedules import sampler_sigmas
    s0, s1 = [float(v) for v in sampler_sigmas(MODEL.sigmas, "euler", "karras", 6)[:2]]
    base_px, region_px = sig[2, 20], sig[28, 28]  # outside all grown masks / deep inside region 1
    assert abs(float(base_px) - s1) < 1e-4 * s1
    assert abs(float(region_px) - s1 * s1 / s0) < 1e-4 * s1  # stepped twice: sigma_1^2 / sigma_0
    # the overlap band (grown region 1 above its own mask, still in the base area) is stepped twice
    assert float(s.times_map[28, 28]) == 1.0 and float(s.times_map[2, 20]) == 1.0
    assert float(s.times_map[14, 20]) == 2.0


def test_arun_yields_between_substeps_and_can_be_cancelled():
    s = make()

    async def main():
        task = asyncio.ensure_future(s.arun())
        for _ in range(3):
            await asyncio.sleep(0)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        return s.history.step_starts

    asyncio.run(main())
    assert 0 < len(s.history) - 1 < len(s.ops) and not s.done
    assert torch.equal(s.run(), make().run())


def test_status_text_and_progress_follow_the_reference():
    s = make(steps=4)
    s.substep()
    assert s.status == "0/4 steps" and s.progress == 0.0
    s.substep()
    assert s.status == "0/4 steps | 1/2" and s.progress == pytest.approx(1 / 8)
    s.run()
    assert s.status.endswith("done") and s.progress == 8.0  # the reference's final progress is `total`


def test_quirk_switches_each_turn_one_behaviour_off():
    from regional_widgets.node_params import Quirks

    faithful = make(restore_latent=True)
    faithful.run()
    off = make(quirks=Quirks(discard_final_step=False))
    off.run()
    assert faithful.result is faithful.history[len(faithful.history) - 2].base_latent
    assert torch.equal(off.result, off.latent) and not torch.equal(off.result, faithful.result)

    x0 = make(restore_latent=False)
    raw = make(restore_latent=False, quirks=Quirks(x0_when_not_leftover=False))
    assert not torch.equal(x0.run(), raw.run())

    shared = make(samplers=("euler_ancestral", "euler_ancestral"))
    fresh = make(samplers=("euler_ancestral", "euler_ancestral"), quirks=Quirks(reseed_every_call=False))
    assert not torch.equal(shared.run(), fresh.run())

    wide = np.zeros((16, 32), np.float32)
    wide[4:12, 8:24] = 1
    region = rw.Region(wide, rw.SamplerConfig(positive="grass"))
    small_model = rw.models.ToyWorld(n_exemplars=40, image_size=16)
    latent = torch.zeros(1, 3, 16, 32)
    swapped = rw.RegionalSamplerSession(small_model, latent, base=BASE, regions=[region], steps=3)
    straight = rw.RegionalSamplerSession(small_model, latent, base=BASE, regions=[rw.Region(wide)], steps=3,
                                         quirks=Quirks(mask_wh_swap=False))
    assert swapped.context.region_masks[1].shape == (32, 16)
    assert straight.context.region_masks[1].shape == (16, 32)


def test_regional_sampler_renoise_switch():
    from regional_widgets.node_params import Quirks

    faithful = make(node="RegionalSampler", base_only_steps=0)
    fixed = make(node="RegionalSampler", base_only_steps=0, quirks=Quirks(renoise_every_step=False))
    noisy = [op.noise for op in faithful.ops if op.kind == "base"]
    once = [op.noise for op in fixed.ops if op.kind == "base"]
    assert noisy == ["second"] * 6 and once == ["second"] + [None] * 5
    assert not torch.equal(faithful.run(), fixed.run())


def test_touch_noise_edge_switch():
    from regional_widgets.sampling.noise import prepare_noise, touch_noise

    noise = prepare_noise(torch.zeros(1, 2, 4, 4), 0)
    mask = torch.full((4, 4), 0.5)
    assert torch.equal(touch_noise(noise, mask, 1, 0.5), torch.zeros_like(noise))
    blended = touch_noise(noise, mask, 1, 0.5, zero_fractional=False)
    mixed = touch_noise(noise, torch.ones(4, 4), 1, 0.5)
    assert torch.allclose(blended, 0.5 * mixed + 0.5 * noise)


def test_a_rejected_region_prompt_keeps_the_old_config():
    s = make()
    old = s.regions[1].config
    with pytest.raises(ValueError, match="region 2.*dragon"):
        s.regions[1].config = rw.SamplerConfig(positive="dragon")
    assert s.regions[1].config is old
    s.step()  # the session still works


def test_a_rejected_cross_parameter_value_is_not_kept():
    s = make()
    s.step()
    with pytest.raises(ValueError, match="start_at_step"):
        s.start_at_step = 10
    assert s.start_at_step == 0 and s.step_index == 1  # neither kept nor reset
