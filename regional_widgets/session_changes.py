"""Session changes: what a parameter change does to the run (re-plan or fork), and the undo that makes it atomic.

`STRUCTURAL` parameters re-plan the run (back to the start, `reset`); `FORKING` ones keep the states
up to the current sub-step (`Stepper.fork`); a region's `REGION_TRAITS` fork too, and adding or
removing a region re-plans. `SessionChanges` (a base class of `session.RegionalSamplerSession`)
holds those observers and the undo: a change or a move whose work or observers fail (any
exception, an interrupt too) restores the run (`stepper.Stepper.saved` / `restore`) and the traits.
It relies on the session's ``_run`` (a `stepper.Stepper`), ``_ready``, ``reset`` and ``_publish``.
"""
from __future__ import annotations

import contextlib
import weakref

from traitlets import HasTraits, observe

__all__ = ["FORKING", "PARAMETERS", "REGION_TRAITS", "STRUCTURAL", "SessionChanges"]

STRUCTURAL = ("add_noise", "noise_seed", "steps", "start_at_step", "end_at_step", "restore_latent",
              "return_with_leftover_noise", "seed", "seed_2nd", "seed_2nd_mode", "base_only_steps", "denoise",
              "latent_image", "quirks", "mode")
FORKING = ("base", "overlap_factor", "additional_mode", "additional_sampler", "additional_sigma_ratio")
REGION_TRAITS = ("mask", "config", "variation_seed", "variation_strength", "variation_method")
PARAMETERS = frozenset(STRUCTURAL + FORKING + ("regions", "history_limit"))


class SessionChanges(HasTraits):
    """The session's reactions to a parameter change, and its undo."""

    @observe(*STRUCTURAL)
    def _on_structural(self, change):
        if self._ready:
            self.reset()

    @observe(*FORKING)
    def _on_forking(self, change):
        if self._ready and change["name"] in self._run.engine.replans_on:
            self.reset()
        elif self._ready:
            self._fork()

    @observe("regions")
    def _on_regions(self, change):
        for region in change["old"] or []:
            region.unobserve(self._on_region_trait, names=list(REGION_TRAITS))
            region._guards.pop(id(self), None)
        for region in change["new"]:
            region.observe(self._on_region_trait, names=list(REGION_TRAITS))
            region._guards[id(self)] = weakref.WeakMethod(self._guard_region)
        if self._ready:
            old, new = change["old"] or [], change["new"]
            if len(old) != len(new):
                self.reset()
            else:
                self._fork()

    def _on_region_trait(self, change):
        if not self._ready:
            return
        saved = self._run.saved()
        try:
            self._fork()
        except BaseException:
            with self._quiet(), contextlib.suppress(Exception):
                change["owner"].set_trait(change["name"], change["old"])  # the change did not happen
            self._restore_internal(saved)
            raise

    def _fork(self):
        """Settings changed: keep the states up to now, forget what was computed after them."""
        self._run.fork()
        self._publish(self._run.state)

    # ---- undo ---------------------------------------------------------------------------------------

    def notify_change(self, change):
        """A parameter change whose observers fail (any exception, an interrupt too) is undone entirely."""
        if not self._ready or change.get("type") != "change" or change["name"] not in PARAMETERS:
            return super().notify_change(change)
        saved = self._run.saved()
        try:
            return super().notify_change(change)
        except BaseException:
            self._restore_internal(saved)
            with self._quiet(), contextlib.suppress(Exception):
                self.set_trait(change["name"], change["old"])  # observers see the old value again
            self._restore_internal(saved)  # whatever those observers did
            raise

    def _atomic(self, fn):
        """``fn()``; if it raises, the run and the published traits are as they were before."""
        saved = self._run.saved()
        try:
            return fn()
        except BaseException:
            self._restore_internal(saved)
            raise

    def _restore_internal(self, saved):
        self._run.restore(saved)
        try:
            self._publish(self._run.state)
        except BaseException:  # noqa: BLE001 - an observer failing again must not hide the first error
            pass

    @contextlib.contextmanager
    def _quiet(self):
        """Trait changes made here do not fork or reset the run (used to undo a rejected value)."""
        ready, self._ready = self._ready, False
        try:
            yield
        finally:
            self._ready = ready
