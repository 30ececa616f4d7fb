"""Session checks: the session's ``@validate`` hooks, run with the proposed value in place.

Each value is checked alone by its `params` trait; `SessionChecks` (a base class of
`session.RegionalSamplerSession`) adds the checks that need other values, with the proposed value
in place and before anything is stored: the latent against the model and the regions' masks, the
prompts against the model, a region's new mask or config (its guard, `regions.Region`), the step
range (`node_checks.check_run`). The rules themselves are plain functions in `node_checks.py`.
"""
from __future__ import annotations

from traitlets import HasTraits, validate

from . import node_checks
from .session_changes import FORKING, STRUCTURAL

__all__ = ["SessionChecks"]

_RUN_RANGE = ("steps", "start_at_step", "end_at_step", "denoise")


class SessionChecks(HasTraits):
    """The checks with the proposed value in place. They read the session's ``_model``, ``_prompts``,
    ``_batch_index``, ``_ready`` (until then, the step range is checked once, at the end of
    construction) and ``image_size``."""

    @validate("latent_image")
    def _valid_latent(self, proposal):
        x = node_checks.check_latent(proposal["value"], self._model, self._batch_index if self._ready else None)
        self._check_regions(self._trait_values.get("regions", ()), latent=x)
        return x.clone()

    @validate("base")
    def _valid_base(self, proposal):
        self._check_prompts(proposal["value"], "base")
        return proposal["value"]

    def _check_prompts(self, config, where):
        node_checks.check_prompts(config, self._model, self._prompts, where)

    @validate("regions")
    def _valid_regions(self, proposal):
        regions = list(proposal["value"])
        self._check_regions(regions)
        for j, region in enumerate(regions, 1):
            self._check_prompts(region.config, f"region {j}")
        return regions

    def _check_regions(self, regions, latent=None):
        latent = self.latent_image if latent is None else latent
        node_checks.check_regions(regions, node_checks.image_size(latent, self._model))

    def _guard_region(self, region, name, value):
        """Checks a region's new mask or config before the region stores it."""
        j = next((k for k, r in enumerate(self.regions, 1) if r is region), 0)
        if name == "mask":
            node_checks.check_mask_size(value, self.image_size, f"region {j}: ")
        elif name == "config":
            self._check_prompts(value, f"region {j}")

    @validate(*(n for n in STRUCTURAL + FORKING if n not in ("latent_image", "base")))
    def _cross_check(self, proposal):
        # runs after the trait's own check: the cross-parameter rules with the proposed value in place
        if self._ready:
            self._check_run(**{proposal["trait"].name: proposal["value"]})
        return proposal["value"]

    def _check_run(self, **proposed):
        values = {n: proposed[n] if n in proposed else getattr(self, n) for n in _RUN_RANGE}
        node_checks.check_run(self.node, **values)
