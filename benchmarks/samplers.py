"""Time per step of every sampler on the built-in model, as a table (NFE per step and ms per step).

    python benchmarks/samplers.py                 # 64x64 ToyWorld, cfg 2, 20 karras steps
    python benchmarks/samplers.py --size 32 --steps 10 --repeats 1

One plain (non-regional) run per sampler from pure noise, through the project's CFG (a cfg_pp
sampler gets its unconditional channel from the same batched call), one torch thread. ``NFE/step``
counts denoiser evaluations (one batched cond+uncond call each) over the steps actually run; ``ms/step``
is the median over ``--repeats`` runs of the whole run's time divided by its steps; ``ms/NFE`` shows the
sampler's own overhead on top of the model (the SDE samplers' Brownian tree, sa_solver's solves).
"""
from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch

import regional_widgets as rw
from regional_widgets.models.base import cfg_denoiser
from regional_widgets.sampling import SAMPLER_NAMES
from regional_widgets.sampling.noise import is_max_denoise, noise_scaling, prepare_noise
from regional_widgets.sampling.samplers import get_sampler, sample
from regional_widgets.sampling.schedules import sampler_sigmas


def time_sampler(model, name, size, steps, repeats):
    sigmas = sampler_sigmas(model, name, "karras", steps)
    latent = rw.empty_latent(model, size, size)
    x = noise_scaling(sigmas[0], prepare_noise(latent, 0), latent, is_max_denoise(model.sigmas[-1], sigmas[0]))
    guided = cfg_denoiser(model, model.encode("grass"), model.encode(""), 2.0)
    calls = [0]

    def counted(x, sigma):
        calls[0] += 1
        return guided(x, sigma)

    def counted_with_uncond(x, sigma):
        calls[0] += 1
        return guided.with_uncond(x, sigma)

    counted.with_uncond = counted_with_uncond
    times, ran = [], [0]
    for _ in range(repeats):
        calls[0], ran[0] = 0, 0
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sample(counted, x, sigmas, name, seed=0, model_sampling=model,
                   callback=lambda info: ran.__setitem__(0, ran[0] + 1))
        times.append(time.perf_counter() - start)
    ms = 1000 * statistics.median(times)
    return ran[0], calls[0], ms


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = rw.models.ToyWorld(image_size=args.size)
    print(f"ToyWorld {args.size}x{args.size}, karras {args.steps} steps, cfg 2, one thread, "
          f"median of {args.repeats}")
    print(f"{'sampler':32s} {'noise':>12s} {'steps':>5s} {'NFE/step':>8s} {'ms/step':>8s} {'ms/NFE':>7s}")
    for name in SAMPLER_NAMES:
        steps, calls, ms = time_sampler(model, name, args.size, args.steps, args.repeats)
        noise = get_sampler(name).noise or "-"
        print(f"{name:32s} {noise:>12s} {steps:5d} {calls / max(steps, 1):8.2f} {ms / max(steps, 1):8.2f} "
              f"{ms / max(calls, 1):7.2f}")


if __name__ == "__main__":
    main()
