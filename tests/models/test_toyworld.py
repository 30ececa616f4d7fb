"""ToyWorld, the closed-form model: exactness against independent computations, sampling,
CFG, determinism, numerical safety and input checks. Small exemplar sets keep it fast."""
from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from regional_widgets.models import Model, ToyWorld, cfg_denoiser, empty_latent
from regional_widgets.models import toyworld_images
from regional_widgets.sampling.noise import prepare_noise
from regional_widgets.sampling.samplers import SAMPLER_NAMES, get_sampler, sample
from regional_widgets.sampling.schedules import (SCHEDULER_NAMES, calculate_sigmas, sampler_sigmas,
                                                 sd15_sigmas)

LATENTS = ("pixels", "sd")
DETERMINISTIC = tuple(n for n in SAMPLER_NAMES if get_sampler(n).noise is None)
# These end above sigma 0 (uni_pc at 0.001, as the reference): their last x0 prediction is the sample.
STOP_ABOVE_ZERO = ("dpm_fast", "dpm_adaptive", "uni_pc", "uni_pc_bh2")


@pytest.fixture(scope="module", params=LATENTS)
def small(request):
    return ToyWorld(request.param, n_exemplars=100, image_size=32)


def class_distance(model, sample_latent, prompt):
    """Max-abs distance from each batch item to the nearest exemplar labelled with the prompt."""
    words = set(prompt.split())
    members = [i for i, labels in enumerate(model.labels) if words <= labels]
    ex = model.exemplars[members].flatten(1)
    diffs = (sample_latent.double().flatten(1)[:, None] - ex[None]).abs().amax(-1)
    return diffs.min(1).values


# -- exactness ------------------------------------------------------------------------------------

def brute_force_posterior_mean(exemplars, x, sigma, variance=0.0):
    """A naive loop in numpy float64: squared distances, max-subtracted weights, weighted sum."""
    exemplars = exemplars.reshape(len(exemplars), -1).numpy()
    x, var = x.reshape(-1).numpy().astype(np.float64), variance + sigma ** 2
    logits = []
    for ex in exemplars:
        logits.append(-float(np.sum((x - ex) ** 2)) / (2 * var))
    top = max(logits)
    weights = [math.exp(v - top) for v in logits]
    total = sum(weights)
    out = np.zeros_like(x)
    for w, ex in zip(weights, exemplars):
        out += w / total * (ex + variance / var * (x - ex))
    return out


@pytest.mark.parametrize("latent", LATENTS)
@pytest.mark.parametrize("variance", [0.0, 0.02])
def test_denoiser_equals_brute_force_posterior_mean(latent, variance):
    model = ToyWorld(latent, n_exemplars=40, image_size=16, mixture_variance=variance)
    gen = torch.Generator().manual_seed(1)
    sigmas = torch.tensor([0.0292, 0.3, 1.0, 4.0, 14.6], dtype=torch.float64)
    near = model.exemplars[torch.arange(5) * 7]  # start near exemplars, as sampling does
    x = near + sigmas.view(-1, 1, 1, 1) * torch.randn(near.shape, generator=gen, dtype=torch.float64)
    for cond in (model.encode(""), model.encode("sky"), model.encode("red")):
        words = cond.words
        members = model.exemplars[[i for i, lab in enumerate(model.labels) if words <= lab]]
        got = model(x, sigmas, cond)
        for b in range(len(x)):
            want = brute_force_posterior_mean(members, x[b], float(sigmas[b]), variance)
            np.testing.assert_allclose(got[b].reshape(-1).numpy(), want, rtol=0, atol=1e-9)


@pytest.mark.parametrize("latent", LATENTS)
def test_mixture_form_satisfies_tweedie(latent):
    variance = 0.05
    model = ToyWorld(latent, n_exemplars=30, image_size=16, mixture_variance=variance)
    means = model.exemplars.flatten(1)
    cond = model.encode("")
    gen = torch.Generator().manual_seed(2)
    for sigma in (0.05, 0.3, 1.0, 3.0, 12.0):
        x = (means[3] + sigma * torch.randn(means.shape[1], generator=gen, dtype=torch.float64))
        x.requires_grad_(True)
        var = variance + sigma ** 2  # log of an equal-weight mixture of N(mu_k, var I)
        log_p = (torch.logsumexp(-((x - means) ** 2).sum(1) / (2 * var), 0)
                 - 0.5 * len(x) * math.log(2 * math.pi * var) - math.log(len(means)))
        (grad,) = torch.autograd.grad(log_p, x)
        tweedie = x.detach() + sigma ** 2 * grad
        got = model(x.detach().view(1, *model.latent_shape), torch.tensor([sigma], dtype=torch.float64), cond)
        assert (got.flatten() - tweedie).abs().max() < 1e-10, sigma


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sigma_zero_returns_x_and_sigma_is_per_item(small, dtype):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(3, *small.latent_shape, generator=gen).to(dtype)
    cond = small.encode("grass")
    assert torch.equal(small(x, torch.zeros(3), cond), x)
    sigmas = torch.tensor([0.0, 0.5, 3.0])
    batched = small(x, sigmas, cond)
    assert batched.dtype == dtype
    for b in range(3):  # BLAS may round a batch of 3 and a batch of 1 differently
        torch.testing.assert_close(batched[b:b + 1], small(x[b:b + 1], sigmas[b:b + 1], cond),
                                   rtol=0, atol=1e-6 if dtype == torch.float32 else 1e-12)


# -- sampling -------------------------------------------------------------------------------------

@pytest.mark.parametrize("sampler", DETERMINISTIC)
def test_deterministic_sampler_ends_on_an_exemplar_of_the_prompt(small, sampler):
    prompt = "brick" if small.latent == "pixels" else "blue square"
    sigmas = sampler_sigmas(small.sigmas, sampler, "karras", 10)
    x = prepare_noise(empty_latent(small, 32, 32, batch=2), seed=5) * sigmas[0]
    predictions = []
    out = sample(cfg_denoiser(small, small.encode(prompt)), x, sigmas, sampler,
                 callback=lambda info: predictions.append(info["denoised"]))
    final = predictions[-1] if sampler in STOP_ABOVE_ZERO else out
    assert torch.isfinite(out).all()
    assert class_distance(small, final, prompt).max() <= 1e-5


# -- CFG ------------------------------------------------------------------------------------------

def counting(model):
    calls = []

    def counted(x, sigma, cond):
        calls.append(cond.prompt)
        return model(x, sigma, cond)

    return counted, calls


@pytest.mark.parametrize("cfg, per_step", [(1.0, 1), (1.0 + 1e-12, 1), (2.5, 2), (0.0, 2)])
def test_cfg_one_skips_the_unconditional_call(small, cfg, per_step):
    counted, calls = counting(small)
    sigmas = calculate_sigmas(small.sigmas, "karras", 5)
    x = prepare_noise(empty_latent(small, 32, 32), seed=0) * sigmas[0]
    sample(cfg_denoiser(counted, small.encode("sky"), small.encode(""), cfg), x, sigmas, "euler")
    assert len(calls) == 5 * per_step
    assert set(calls) == ({"sky"} if per_step == 1 else {"sky", ""})


def test_cfg_combines_uncond_and_cond(small):
    pos, neg = small.encode("red circle"), small.encode("")
    x = torch.randn(2, *small.latent_shape, generator=torch.Generator().manual_seed(4)) * 2
    sigma = torch.tensor([2.0, 2.0])
    cond, uncond = small(x, sigma, pos), small(x, sigma, neg)
    assert torch.equal(cfg_denoiser(small, pos, neg, 1.0)(x, sigma), cond)
    assert torch.equal(cfg_denoiser(small, pos, neg, 0.0)(x, sigma), uncond)
    torch.testing.assert_close(cfg_denoiser(small, pos, None, 3.0)(x, sigma), uncond + 3 * (cond - uncond))


@pytest.mark.parametrize("prompt", ["blue", "grass", "red circle"])
def test_higher_cfg_moves_the_prediction_toward_the_class(prompt):
    """Measured along the class axis (the class's mean picture minus the mean of all pictures),
    averaged over noisy pictures drawn from the whole data set."""
    model = ToyWorld("pixels", n_exemplars=100, image_size=32)
    pos, neg = model.encode(prompt), model.encode("")
    words = set(prompt.split())
    pictures = model.exemplars.flatten(1)
    axis = pictures[[words <= labels for labels in model.labels]].mean(0) - pictures.mean(0)
    gen = torch.Generator().manual_seed(6)
    for sigma in (0.5, 2.0, 8.0):
        x0 = model.exemplars[torch.randint(len(pictures), (16,), generator=gen)].float()
        x = x0 + sigma * torch.randn(x0.shape, generator=gen)
        s = torch.full((16,), sigma)
        scores = [float((cfg_denoiser(model, pos, neg, cfg)(x, s).double().flatten(1) @ axis).mean())
                  for cfg in (0.0, 1.0, 2.0, 4.0, 8.0)]
        assert all(a < b for a, b in zip(scores, scores[1:])), (sigma, scores)


# -- determinism ----------------------------------------------------------------------------------

HASH_SCRIPT = textwrap.dedent("""
    import hashlib, torch
    from regional_widgets.models import ToyWorld, cfg_denoiser, empty_latent
    from regional_widgets.sampling.noise import prepare_noise
    from regional_widgets.sampling.samplers import sample
    from regional_widgets.sampling.schedules import calculate_sigmas

    def hashes(latent):
        torch.set_num_threads(1)
        model = ToyWorld(latent, seed=11, n_exemplars=60, image_size=32)
        sigmas = calculate_sigmas(model.sigmas, "karras", 8)
        x = prepare_noise(empty_latent(model, 32, 32), seed=3) * sigmas[0]
        out = sample(cfg_denoiser(model, model.encode("sky"), None, 2.0), x, sigmas, "euler")
        return [hashlib.sha256(t.numpy().tobytes()).hexdigest() for t in (model.exemplars, out)]
""")


@pytest.mark.parametrize("latent", LATENTS)
def test_same_seed_gives_identical_exemplars_and_samples_across_processes(latent):
    namespace = {}
    exec(HASH_SCRIPT, namespace)
    script = HASH_SCRIPT + f"\nprint(*hashes({latent!r}))"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).parents[2])
    assert result.stdout.split() == namespace["hashes"](latent)


def test_exemplars_depend_on_the_seed_only():
    a, labels_a = toyworld_images.make_exemplars(1, 45, 16, "procedural")
    b, labels_b = toyworld_images.make_exemplars(1, 45, 16, "procedural")
    c, _ = toyworld_images.make_exemplars(2, 45, 16, "procedural")
    more, _ = toyworld_images.make_exemplars(1, 90, 16, "procedural")
    assert np.array_equal(a, b) and labels_a == labels_b
    assert not np.array_equal(a, c)
    assert np.array_equal(more[0], a[0])  # asking for more keeps the first picture of a class


@pytest.mark.parametrize("textures", ["procedural", "skimage"])
def test_both_texture_paths_make_every_class(textures):
    images, labels = toyworld_images.make_exemplars(0, 40, 32, textures)
    assert images.shape == (40, 32, 32, 3) and images.dtype == np.float32
    assert 0 <= images.min() and images.max() <= 1
    assert set(labels) == set(toyworld_images.CLASSES)
    for material in toyworld_images.MATERIALS:  # frame-filling: no flat picture
        pictures = images[[i for i, lab in enumerate(labels) if lab == {material}]]
        assert pictures.std(axis=(1, 2)).mean() > 0.005, material


def test_skimage_textures_are_crops_of_the_photographs():
    photo, _ = toyworld_images.make_exemplars(0, 20, 32, "skimage")
    procedural, _ = toyworld_images.make_exemplars(0, 20, 32, "procedural")
    for k, labels in enumerate(toyworld_images.CLASSES):
        same = np.array_equal(photo[k], procedural[k])
        assert same == (not labels & set(toyworld_images.PHOTO_MATERIALS)), labels


def test_auto_means_the_shipped_photographs():
    assert toyworld_images.resolve_textures("auto") == "skimage"
    assert toyworld_images.resolve_textures("procedural") == "procedural"
    with pytest.raises(ValueError, match="textures"):
        toyworld_images.resolve_textures("photo")
    for name in toyworld_images.PHOTO_MATERIALS:
        grey = toyworld_images.photo(name)
        assert grey.shape == (512, 512) and grey.dtype == np.uint8 and grey.std() > 10, name


def test_the_shipped_photographs_are_scikit_images():
    """Provenance (textures/README.txt): byte-for-byte scikit-image's sample data, pixel for pixel."""
    from skimage import data  # the test extra installs it: the oracle, never skipped
    for name in toyworld_images.PHOTO_MATERIALS:
        assert np.array_equal(toyworld_images.photo(name), getattr(data, name)()), name


NO_SKIMAGE = textwrap.dedent("""
    import sys
    sys.modules["skimage"] = None  # any import of scikit-image now raises ImportError
""")


@pytest.mark.parametrize("latent", LATENTS)
def test_default_pictures_are_the_same_without_scikit_image(latent):
    """The same seed draws the same exemplars (and samples) whether or not scikit-image imports."""
    script = HASH_SCRIPT + f"\nprint(*hashes({latent!r}))"
    runs = [subprocess.run([sys.executable, "-c", prefix + script], capture_output=True, text=True,
                           check=True, cwd=Path(__file__).parents[2]).stdout.split()
            for prefix in ("", NO_SKIMAGE)]
    assert runs[0] == runs[1] and len(runs[0]) == 2
    hidden = subprocess.run([sys.executable, "-c", NO_SKIMAGE + "import skimage"], capture_output=True)
    assert hidden.returncode != 0  # the prefix really hides it


# -- numerical safety -----------------------------------------------------------------------------

@pytest.mark.parametrize("latent", LATENTS)
@pytest.mark.parametrize("variance", [0.0, 0.01])
def test_finite_at_every_sigma_of_every_scheduler(latent, variance):
    model = ToyWorld(latent, n_exemplars=60, mixture_variance=variance)  # 64x64: naive exp underflows
    gen = torch.Generator().manual_seed(7)
    conds = [model.encode(""), model.encode("sun")]
    for scheduler in SCHEDULER_NAMES:
        for sigma in calculate_sigmas(model.sigmas, scheduler, 20).tolist():
            for batch in (1, 2, 3, 4):
                x = model.exemplars[:batch].float() + sigma * torch.randn(
                    batch, *model.latent_shape, generator=gen)
                out = model(x, torch.full((batch,), sigma), conds[batch % 2])
                assert torch.isfinite(out).all(), (scheduler, sigma, batch)
    far = torch.full((1, *model.latent_shape), 1e4)  # far from every exemplar
    assert torch.isfinite(model(far, torch.tensor([0.0292]), conds[1])).all()


# -- latents, images and the protocol -------------------------------------------------------------

def test_defaults():
    model = ToyWorld()
    assert len(model.labels) == 500 and model.image_size == 64
    assert model.latent_shape == (3, 64, 64) and (model.latent_channels, model.downscale) == (3, 1)
    assert torch.equal(model.sigmas, sd15_sigmas())
    assert {"sky", "night", "sun", "water", "grass", "brick", "gravel", "sand", "red", "green",
            "blue", "yellow", "circle", "square", "triangle"} == set(model.vocabulary)
    assert isinstance(model, Model)


def test_prompts_are_word_sets(small):
    assert small.encode("Red, CIRCLE").words == small.encode("circle red").words == {"red", "circle"}
    assert small.encode("").count == small.encode(" , ").count == len(small.labels)
    assert small.encode("red").count == 3 * small.encode("red circle").count


@pytest.mark.parametrize("latent, shape", [("pixels", (2, 3, 64, 48)), ("sd", (2, 4, 8, 6))])
def test_empty_latent(latent, shape):
    model = ToyWorld(latent, n_exemplars=20, image_size=16)
    latent_ = empty_latent(model, 64, 48, batch=2)
    assert latent_.shape == shape and latent_.dtype == torch.float32 and not latent_.any()


def test_image_round_trips(small):
    rgb = torch.rand(2, 32, 32, 3, generator=torch.Generator().manual_seed(8))
    z = small.encode_image(rgb)
    assert z.shape == (2, *small.latent_shape) and z.dtype == torch.float32
    decoded = small.decode(z)
    assert decoded.shape == (2, 32, 32, 3) and 0 <= decoded.min() and decoded.max() <= 1
    exemplar = small.exemplars[:3].float()  # pictures in range: decode then encode is exact
    torch.testing.assert_close(small.encode_image(small.decode(exemplar)), exemplar, atol=1e-6, rtol=0)
    if small.latent == "pixels":
        torch.testing.assert_close(decoded, rgb, atol=1e-6, rtol=0)
    uint8 = (rgb[0].numpy() * 255).astype(np.uint8)
    assert small.encode_image(uint8).shape == (1, *small.latent_shape)


def test_a_user_model_needs_only_the_protocol():
    class Gaussian:  # data ~ N(0, 1): D = x / (1 + sigma^2)
        sigmas = torch.linspace(0.03, 15.0, 100)
        latent_channels, downscale = 2, 4

        def encode(self, prompt):
            return prompt

        def __call__(self, x, sigma, cond):
            return x / (1 + sigma.view(-1, 1, 1, 1) ** 2)

        def decode(self, latent):
            return latent[:, :1].expand(-1, 3, -1, -1).permute(0, 2, 3, 1).clamp(0, 1)

    model = Gaussian()
    assert isinstance(model, Model)
    sigmas = calculate_sigmas(model, "karras", 4)
    x = prepare_noise(empty_latent(model, 16, 16), seed=0) * sigmas[0]
    out = sample(cfg_denoiser(model, model.encode("a"), None, 3.0), x, sigmas, "euler")
    assert out.shape == (1, 2, 4, 4) and model.decode(out).shape == (1, 4, 4, 3)


# -- bad input ------------------------------------------------------------------------------------

@pytest.mark.parametrize("prompt, match", [
    ("sky dragon", r"prompt: unknown word\(s\) 'dragon'.*sky, night, sun"),
    ("sky circle", "prompt: 'sky circle' matches no exemplar"),
    ("red green", "prompt: 'red green' matches no exemplar"),
    (None, "prompt: expected a string"),
])
def test_bad_prompts(small, prompt, match):
    with pytest.raises(ValueError, match=match):
        small.encode(prompt)


def test_bad_calls(small):
    cond, c, h, w = small.encode("sky"), *small.latent_shape
    with pytest.raises(ValueError, match="x: expected"):
        small(torch.zeros(1, c + 1, h, w), torch.ones(1), cond)
    with pytest.raises(ValueError, match="x: expected"):
        small(torch.zeros(1, c, h * 2, w), torch.ones(1), cond)
    with pytest.raises(ValueError, match="sigma"):
        small(torch.zeros(2, c, h, w), torch.ones(3), cond)
    with pytest.raises(ValueError, match="sigma"):
        small(torch.zeros(1, c, h, w), torch.tensor([-1.0]), cond)
    with pytest.raises(ValueError, match="cond"):
        small(torch.zeros(1, c, h, w), torch.ones(1), "sky")
    with pytest.raises(ValueError, match="latent"):
        small.decode(torch.zeros(1, c + 1, h, w))
    with pytest.raises(ValueError, match="height"):
        empty_latent(ToyWorld("sd", n_exemplars=20, image_size=16), 60, 64)
    with pytest.raises(ValueError, match="batch"):
        empty_latent(small, 64, 64, batch=0)
    with pytest.raises(ValueError, match="cfg"):
        cfg_denoiser(small, cond, None, float("nan"))


@pytest.mark.parametrize("kwargs, name", [
    ({"latent": "rgb"}, "latent"), ({"textures": "photo"}, "textures"), ({"image_size": 60}, "image_size"),
    ({"n_exemplars": 0}, "n_exemplars"), ({"mixture_variance": -1.0}, "mixture_variance"),
    ({"seed": -1}, "seed"),
])
def test_bad_constructor_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        ToyWorld(**{"n_exemplars": 20, "image_size": 16, **kwargs})


def test_call_batch_equals_one_call_per_item():
    model = ToyWorld(mixture_variance=0.02, n_exemplars=60, image_size=16)
    x = torch.randn(1, 3, 16, 16) * 2
    conds = [model.encode(p) for p in ("", "sky", "red circle", "")]
    xs = torch.cat([x, x, x * 0.5, x])
    sigma = torch.tensor([2.0, 2.0, 0.7, 0.0])
    out = model.call_batch(xs, sigma, conds)
    for k, cond in enumerate(conds):
        assert torch.allclose(out[k:k + 1], model(xs[k:k + 1], sigma[k:k + 1], cond), atol=1e-6)
    assert torch.equal(out[3], xs[3])  # D(x, 0) = x
    with pytest.raises(ValueError, match="conds"):
        model.call_batch(xs, sigma, conds[:2])
