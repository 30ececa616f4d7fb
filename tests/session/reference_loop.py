"""A straight-line re-implementation of the two regional nodes, written from the spec (§6, §7).

It shares only the sampling layer with the package (calls, recovery, masks, noise) — not the
session's planner or executor — so the session can be checked against it.
"""
from dataclasses import replace

import torch

from regional_widgets.models.base import cfg_denoiser, latent_format, process_in, process_out
from regional_widgets.sampling import masks
from regional_widgets.sampling.call import sampler_call
from regional_widgets.sampling.noise import prepare_noise, touch_noise
from regional_widgets.sampling.recovery import sample_with_recovery
from regional_widgets.sampling.schedules import sampler_sigmas


class Node:
    def __init__(self, model, base, regions, overlap_factor, additional_mode, additional_sampler, ratio):
        self.model, self.base, self.regions = model, base, regions
        self.mode, self.add_sampler, self.ratio = additional_mode, additional_sampler, ratio
        self.raw = [r.mask_tensor for r in regions]
        self.inv = (masks.union(self.raw) == 0).float() if regions else None
        self.grown = [masks.grow(m, overlap_factor) for m in self.raw]

    def noise(self, latent, seed):
        n = prepare_noise(latent, seed)
        for r in self.regions:
            n = touch_noise(n, r.mask_tensor, r.variation_seed, r.variation_strength, r.variation_method)
        return n

    def sample_advanced(self, cfg, add, seed, steps, latent, start, end, leftover, mask, noise=None, recovery=True):
        model = self.model
        denoise = cfg_denoiser(model, model.encode(cfg.positive), model.encode(cfg.negative), cfg.cfg)

        fmt = latent_format(model)

        def run(name, lat, sigma_ratio, nz):
            total = sampler_sigmas(model, name, cfg.scheduler, steps)  # the model's sampling: the reference's bits
            # every noise operation goes through the model's sampling; VAE space <-> model space per call
            res = sampler_call(denoise, process_in(lat, fmt), sampler=name, total_sigmas=total, start=start,
                               end=end, leftover=leftover, add_noise=add, seed=seed, sigma_max=model.sigmas[-1],
                               sigma_ratio=sigma_ratio, noise=nz, noise_mask=mask, model_sampling=model)
            if res.sigmas is None:
                return replace(res, samples=lat, denoised=lat)
            return replace(res, samples=process_out(res.samples, fmt), denoised=process_out(res.denoised, fmt))

        passes = sample_with_recovery(run, latent, sampler=cfg.sampler, sigma_factor=cfg.sigma_factor,
                                      mode=self.mode if recovery else "DISABLE", additional_sampler=self.add_sampler,
                                      ratio=self.ratio, noise_mask=mask, noise=noise)
        return passes[-1][1].output

    def loop_step(self, L, i, seed, steps, add, noise, restore):
        L = self.sample_advanced(self.base, add, seed, steps, L, i, i + 1, True, self.inv, noise)
        base_L = L if restore else None
        for j, r in enumerate(self.regions):
            if restore:
                L = base_L
            L = self.sample_advanced(r.config, False, seed, steps, L, i, i + 1, True, self.grown[j])
            if restore:
                base_L = masks.composite(base_L, L, self.grown[j])
                L = base_L
        return L, base_L


def advanced(model, latent, *, base, regions, add_noise=True, noise_seed=0, steps=20, start_at_step=0,
             end_at_step=10000, overlap_factor=10, restore_latent=True, return_with_leftover_noise=False,
             additional_mode="ratio between", additional_sampler="AUTO", additional_sigma_ratio=0.3):
    node = Node(model, base, regions, overlap_factor, additional_mode, additional_sampler, additional_sigma_ratio)
    end = min(steps, end_at_step)
    L, base_L = latent, None
    for i in range(start_at_step, end - 1):
        add = add_noise and i == start_at_step
        noise = node.noise(L, noise_seed) if add else None
        L, base_L = node.loop_step(L, i, noise_seed, steps, add, noise, restore_latent)
    if base_L is None:
        base_L = L
    else:
        L = base_L
    final = node.sample_advanced(base, False, noise_seed, steps, L, end - 1, end, return_with_leftover_noise, node.inv)
    return base_L if restore_latent else final


def regional(model, latent, *, base, regions, seed=0, seed_2nd=0, seed_2nd_mode="ignore", steps=20,
             base_only_steps=2, denoise=1.0, overlap_factor=10, restore_latent=True,
             additional_mode="ratio between", additional_sampler="AUTO", additional_sigma_ratio=0.3):
    node = Node(model, base, regions, overlap_factor, additional_mode, additional_sampler, additional_sigma_ratio)
    adv = int(steps / denoise)
    start = adv - steps
    S, leftover = latent, False
    if base_only_steps > 0:
        leftover = seed_2nd_mode == "ignore"
        S = node.sample_advanced(base, True, seed, adv, S, start, start + base_only_steps, leftover, None,
                                 node.noise(S, seed), recovery=False)
    seed2 = {"ignore": seed, "seed+seed_2nd": seed + seed_2nd, "seed-seed_2nd": seed - seed_2nd}.get(seed_2nd_mode, seed_2nd)
    add, noise = (False, None) if leftover else (True, node.noise(S, seed2))
    L, base_L = S, None
    for i in range(start + base_only_steps, adv):
        L, base_L = node.loop_step(L, i, seed2, adv, add, noise, restore_latent)
        add = False
    if base_L is None:
        base_L = L
    else:
        L = base_L
    final = node.sample_advanced(base, False, seed2, adv, L, adv, adv + 1, False, node.inv)
    return base_L if restore_latent else final
