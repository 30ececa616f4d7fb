"""The regional sampler nodes as a program of sub-steps (spec §6, §7).

`plan_advanced` and `plan_regional` turn the node parameters into the exact sequence of sampler
calls and composites the reference makes: a list of frozen `Op`s, grouped by regional step
(`group_starts`). Both engines run such a program; nothing here touches a tensor. Faithful quirks
of the reference are named where they happen (search for "quirk").
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from .node_params import stretched_steps

_SEED_WRAP = 2**50


OpKind = Literal["base", "region", "composite", "finalize", "blend"]  # blend: coherent mode's


@dataclass(frozen=True, kw_only=True)
class Op:
    """One sub-step: a sampler call (``base``/``region``/``finalize``) or a ``composite``; built with keywords."""

    kind: OpKind
    group: int  # the regional step this sub-step belongs to (0-based)
    i: int = 0  # the schedule index the call starts at
    region: int = 0  # 1-based region index for region/composite ops
    start: int = 0
    end: int = 0
    add_noise: bool = False
    noise: Optional[str] = None  # None, "initial" (the run's first noise) or "second" (RegionalSampler's)
    mask: Optional[str] = None  # None (whole latent), "inv" or "region"
    leftover: bool = True
    recovery: bool = True  # False: recovery_mode DISABLE for this call
    seed: int = 0
    steps: int = 20
    status: str = ""
    progress: float = 0.0

    @property
    def phase(self) -> tuple:
        if self.kind == "finalize":
            return ("finalize",)
        if self.kind == "base":
            return ("base", self.i)
        return (self.kind, self.region, self.i)


def _loop_body(ops, group, i, R, *, seed, steps, base_noise, add, restore, text, total, start):
    ops.append(Op(kind="base", group=group, i=i, start=i, end=i + 1, add_noise=add, noise=base_noise, mask="inv",
                  seed=seed, steps=steps, status=text, progress=((i - start) * R) / total if total else 0.0))
    for j in range(1, R + 1):
        progress = ((i - start) * R + j) / total if total else 0.0
        label = f"{text} | {j}/{R}"
        ops.append(Op(kind="region", group=group, i=i, region=j, start=i, end=i + 1, mask="region", seed=seed,
                      steps=steps, status=label, progress=progress))
        if restore:
            ops.append(Op(kind="composite", group=group, i=i, region=j, start=i, end=i + 1, seed=seed, steps=steps,
                          status=label, progress=progress))


def plan_advanced(*, R, add_noise, noise_seed, steps, start_at_step, end_at_step, restore_latent,
                  return_with_leftover_noise) -> list[Op]:
    """RegionalSamplerAdvanced's sub-steps (spec §6)."""
    end = min(steps, end_at_step)
    start = start_at_step
    total = (end - start) * R
    ops: list[Op] = []
    # quirk: the loop stops one short of `end`; the last step is a base-only finalize call
    for group, i in enumerate(range(start, end - 1)):
        first = add_noise and i == start
        # quirk: the status text counts `start` twice (cosmetic)
        _loop_body(ops, group, i, R, seed=noise_seed, steps=steps, base_noise="initial" if first else None,
                   add=first, restore=restore_latent, text=f"{start + i}/{end} steps", total=total, start=start)
    group = max(0, end - 1 - start)
    ops.append(Op(kind="finalize", group=group, i=end - 1, start=end - 1, end=end, mask="inv",
                  leftover=return_with_leftover_noise, seed=noise_seed, steps=steps, status=f"{end}/{end} steps",
                  progress=float(total)))  # quirk: progress = total
    return ops


def second_seed(seed: int, seed_2nd: int, mode: str) -> int:
    """RegionalSampler's seed for the regional stage (wraps at 2^50 as the reference)."""
    if mode == "ignore":
        return seed
    if mode == "seed+seed_2nd":
        value = seed + seed_2nd
        return value - _SEED_WRAP if value > _SEED_WRAP else value
    if mode == "seed-seed_2nd":
        value = seed - seed_2nd
        return value + _SEED_WRAP if value < 0 else value
    return seed_2nd  # fixed; increment/decrement/randomize are "not implemented, same as fixed"


def plan_regional(*, R, seed, seed_2nd, seed_2nd_mode, steps, base_only_steps, denoise, restore_latent,
                  renoise_every_step=True) -> list[Op]:
    """RegionalSampler's sub-steps (spec §7)."""
    adv = stretched_steps(steps, denoise)
    start = adv - steps
    total = steps * R
    ops: list[Op] = []
    leftover = False
    group = 0
    if base_only_steps > 0:
        leftover = seed_2nd_mode == "ignore"
        ops.append(Op(kind="base", group=group, i=start, start=start, end=start + base_only_steps, add_noise=True,
                      noise="initial", leftover=leftover, recovery=False, seed=seed, steps=adv,
                      status=f"{start + base_only_steps}/{steps} steps", progress=0.0))
        group += 1
    seed2 = second_seed(seed, seed_2nd, seed_2nd_mode)
    # quirk: on the leftover = False path the same noise is passed to *every* base call
    base_noise = None if leftover else "second"
    add = not leftover
    for i in range(start + base_only_steps, adv):
        _loop_body(ops, group, i, R, seed=seed2, steps=adv, base_noise=base_noise, add=add,
                   restore=restore_latent, text=f"{i + 1}/{steps} steps", total=total, start=start + base_only_steps)
        add = False
        if not renoise_every_step:
            base_noise = None
        group += 1
    ops.append(Op(kind="finalize", group=group, i=adv, start=adv, end=adv + 1, mask="inv", leftover=False,
                  seed=seed2, steps=adv, status=f"{steps}/{steps} steps", progress=float(total)))
    return ops


def group_starts(ops: list[Op]) -> list[int]:
    """Index of the first sub-step of each regional step, plus the end of the program."""
    starts = [k for k, op in enumerate(ops) if k == 0 or op.group != ops[k - 1].group]
    return starts + [len(ops)]
