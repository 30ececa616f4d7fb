"""Seeded noise (sampling/noise.py): the global-generator stream, batch_index, seed range, ddim's seed+1, Brownian increments, variation noise."""
import math

import numpy as np
import pytest
import torch

from regional_widgets.sampling.noise import (BrownianTreeNoiseSampler, DefaultNoiseSampler,
                                             ddim_inpaint_noise, is_max_denoise, noise_scaling,
                                             prepare_noise, touch_noise)


def test_prepare_noise_is_the_global_generator_stream():
    latent = torch.zeros(2, 4, 8, 8)
    torch.manual_seed(1234)
    expected = torch.randn(latent.shape)
    assert torch.equal(prepare_noise(latent, 1234), expected)


def test_prepare_noise_leaves_the_global_rng_alone():
    torch.manual_seed(5)
    before = torch.random.get_rng_state()
    prepare_noise(torch.zeros(1, 4, 8, 8), 99)
    assert torch.equal(before, torch.random.get_rng_state())


def test_batch_index_draws_per_item():
    latent = torch.zeros(2, 4, 8, 8)
    torch.manual_seed(7)
    draws = [torch.randn(1, 4, 8, 8) for _ in range(3)]
    got = prepare_noise(latent, 7, batch_index=[2, 0])
    assert torch.equal(got[0], draws[2][0]) and torch.equal(got[1], draws[0][0])
    # item k of a batch is reproducible on its own
    assert torch.equal(prepare_noise(torch.zeros(1, 4, 8, 8), 7, batch_index=[2])[0], draws[2][0])


@pytest.mark.parametrize("seed", [0, 2**63, 2**64 - 1])
def test_full_seed_range(seed):
    torch.manual_seed(seed)
    assert torch.equal(prepare_noise(torch.zeros(1, 1, 2, 2), seed), torch.randn(1, 1, 2, 2))


@pytest.mark.parametrize("seed", [-1, 2**64, 1.5, True, "3"])
def test_bad_seeds(seed):
    with pytest.raises(ValueError, match="seed.*2\\^64-1"):
        prepare_noise(torch.zeros(1, 1, 2, 2), seed)


def test_ddim_noise_is_seed_plus_one():
    torch.manual_seed(11)
    assert torch.equal(ddim_inpaint_noise(torch.zeros(1, 3, 4, 4), 10), torch.randn(1, 3, 4, 4))
    torch.manual_seed(0)
    assert torch.equal(ddim_inpaint_noise(torch.zeros(1, 3, 4, 4), 2**64 - 1), torch.randn(1, 3, 4, 4))


def test_default_noise_sampler_is_fresh_per_call_and_clones():
    x = torch.zeros(1, 3, 4, 4)
    gen = torch.Generator().manual_seed(3)
    first, second = torch.randn(x.shape, generator=gen), torch.randn(x.shape, generator=gen)
    ns = DefaultNoiseSampler(x, 3)
    assert torch.equal(ns(1.0, 0.5), first)
    twin = ns.clone()
    assert torch.equal(ns(0.5, 0.2), second) and torch.equal(twin(0.5, 0.2), second)
    assert torch.equal(DefaultNoiseSampler(x, 3)(), first)  # a new call starts the stream again


def test_brownian_increments_add_up_and_are_seeded():
    x = torch.zeros(1, 2, 4, 4)
    ns = BrownianTreeNoiseSampler(x, 0.03, 14.6, seed=5)
    a, b, c = torch.tensor(10.0), torch.tensor(4.0), torch.tensor(1.0)

    def increment(s, t):
        return ns(s, t) * (s - t).abs().sqrt()

    assert torch.allclose(increment(a, b) + increment(b, c), increment(a, c), atol=1e-5)
    assert torch.equal(ns(a, b), BrownianTreeNoiseSampler(x, 0.03, 14.6, seed=5)(a, b))
    assert not torch.equal(ns(a, b), BrownianTreeNoiseSampler(x, 0.03, 14.6, seed=6)(a, b))
    many = torch.stack([BrownianTreeNoiseSampler(torch.zeros(64, 64), 0.03, 14.6, seed=s)(a, b) for s in range(4)])
    assert abs(many.std().item() - 1.0) < 0.05  # normalised increments are unit Gaussians


def test_noise_scaling_and_max_denoise():
    latent, noise = torch.full((1, 1, 2, 2), 0.5), torch.ones(1, 1, 2, 2)
    assert is_max_denoise(14.6146, 14.6146) and is_max_denoise(14.6146, 14.61461) and is_max_denoise(14.6, 20.0)
    assert not is_max_denoise(14.6146, 14.6)
    assert torch.allclose(noise_scaling(torch.tensor(3.0), noise, latent, True), torch.full_like(latent, 0.5 + math.sqrt(10)))
    assert torch.allclose(noise_scaling(torch.tensor(3.0), noise, latent, False), torch.full_like(latent, 3.5))


def test_touch_noise_linear_and_the_fractional_edge_quirk():
    noise = prepare_noise(torch.zeros(1, 4, 4, 4), 1)
    mask = torch.zeros(8, 8)
    mask[:, :4] = 1.0  # left half; bilinear downscale to 4x4 gives 1, 0 and no fractions
    mask[0, 4] = 1.0  # one fractional column band at the top
    out = touch_noise(noise, mask, seed=9, strength=0.25)
    regional = prepare_noise(noise, 9)
    mixed = (0.75 * noise + 0.25 * regional) / math.sqrt(0.75**2 + 0.25**2)
    m = torch.nn.functional.interpolate(mask[None, None], size=(4, 4), mode="bilinear")[0, 0].numpy()
    for i in range(4):
        for j in range(4):
            want = mixed[..., i, j] if m[i, j] == 1 else noise[..., i, j] if m[i, j] == 0 else 0 * noise[..., i, j]
            assert torch.allclose(out[..., i, j], want, atol=1e-6)
    assert (m > 0).sum() > (m == 1).sum()  # the test covers a fractional pixel
    assert torch.equal(touch_noise(noise, mask, 9, 0.0), noise)


def test_touch_noise_slerp_matches_numpy():
    noise = prepare_noise(torch.zeros(2, 2, 3, 3), 2)
    out = touch_noise(noise, torch.ones(6, 6), seed=4, strength=0.3, method="slerp")
    regional = prepare_noise(noise, 4).numpy()
    for k in range(2):
        a, b = noise[k].numpy().ravel().astype(np.float64), regional[k].ravel().astype(np.float64)
        omega = np.arccos(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
        want = np.sin(0.7 * omega) / np.sin(omega) * a + np.sin(0.3 * omega) / np.sin(omega) * b
        assert np.allclose(out[k].numpy().ravel(), want, atol=1e-5)


def test_touch_noise_rejects_unknown_method():
    with pytest.raises(ValueError, match="variation_method.*linear, slerp"):
        touch_noise(torch.zeros(1, 1, 2, 2), torch.ones(2, 2), 0, 0.5, "cubic")


def test_step_noise_is_the_default_sampler_on_a_cpu_stream_per_step():
    from regional_widgets.sampling.noise import STEP_STREAM, StepNoise

    x = torch.zeros(1, 3, 4, 4, dtype=torch.float64)
    gen = torch.Generator().manual_seed((7 * STEP_STREAM + 2 + 1) % 2**64)
    first, second = (torch.randn(x.shape, generator=gen, dtype=torch.float64) for _ in range(2))
    ns = StepNoise(x, 7, 2)
    assert isinstance(ns, DefaultNoiseSampler) and torch.equal(ns(), first)
    twin = ns.clone()
    assert type(twin) is StepNoise and torch.equal(twin(), second) and torch.equal(ns(), second)
    assert not torch.equal(StepNoise(x, 7, 3)(), first)


def test_slerp_variation_is_the_spherical_formula_and_finite_for_equal_seeds():
    from regional_widgets.sampling.noise import _slerp
    a = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    b = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    for s in (0.0, 0.3, 1.0):
        out = _slerp(s, a, b)
        for k in range(2):  # the closed form, per batch item, in float64
            x, y = a[k].double().flatten(), b[k].double().flatten()
            w = torch.acos((x / x.norm()) @ (y / y.norm()))
            expect = (torch.sin((1 - s) * w) * x + torch.sin(s * w) * y) / torch.sin(w)
            assert torch.allclose(out[k].double().flatten(), expect, atol=1e-5)
    # the same seed for noise and variation: parallel draws, the limit of the weights, not NaN
    same = _slerp(0.4, a, a.clone())
    assert torch.isfinite(same).all()
    assert torch.allclose(same, a, atol=1e-6)
    assert torch.allclose(_slerp(1.0, a, 2 * a), 2 * a, atol=1e-5)
