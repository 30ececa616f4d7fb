"""Region: one regional prompt (a mask at image resolution, its sampler config, its variation noise).

A region validates its own values (`params` traits); a session holding it adds the checks that need
the session (the mask's size against the latent, the prompts against the model) as guards run before
a new mask or config is stored.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from traitlets import HasTraits, validate

from .params import Choice, InstanceOf, ParameterError, Seed, StrictFloat, Value, check_int
from .node_params import SamplerConfig
from .sampling import masks as mask_ops
from .sampling.noise import VARIATION_METHODS

__all__ = ["Region"]


class Region(HasTraits):
    """One regional prompt: a mask at image resolution, its sampler and its variation noise.

    The mask is stored as a read-only float32 copy (assign a new array to change it). A session
    holding the region checks every new mask and config before it is stored (the mask's size
    against the image size its latent implies, the prompts against its model).
    """

    mask = Value(accepted="a 2-D array or tensor with values in [0, 1]")
    config = InstanceOf(SamplerConfig(), SamplerConfig)
    variation_seed = Seed(0, label="var. seed")
    variation_strength = StrictFloat(0.0, 0.0, 1.0, label="strength")
    variation_method = Choice("linear", VARIATION_METHODS, label="method")

    def __init__(self, mask, config: Optional[SamplerConfig] = None, variation_seed=0, variation_strength=0.0,
                 variation_method="linear"):
        self._guards: dict = {}  # owner -> check(region, name, value), run before a value is stored
        super().__init__(mask=mask, config=config if config is not None else SamplerConfig(),
                         variation_seed=variation_seed, variation_strength=variation_strength,
                         variation_method=variation_method)

    def _guarded(self, name, value):
        for key, ref in list(self._guards.items()):
            guard = ref()
            if guard is None:
                del self._guards[key]  # the session is gone
            else:
                guard(self, name, value)
        return value

    @validate("mask")
    def _valid_mask(self, proposal):
        try:
            tensor = mask_ops.as_mask(proposal["value"], "mask")
        except ValueError as err:
            raise ParameterError(str(err)) from None
        array = tensor.numpy().astype(np.float32, copy=True)
        array.setflags(write=False)  # region.mask[...] = v would bypass every check
        return self._guarded("mask", array)

    @validate("config")
    def _valid_config(self, proposal):
        return self._guarded("config", proposal["value"])

    @property
    def mask_tensor(self) -> torch.Tensor:
        """The mask as a float32 tensor (a copy: the stored mask stays read-only)."""
        return torch.from_numpy(self.mask.copy())

    @property
    def is_empty(self) -> bool:
        return not np.any(self.mask)

    def resized(self, height: int, width: int) -> "Region":
        """A copy of this region with its mask resized (bilinear, as the sampler resizes) to height x width."""
        height, width = check_int(height, "height", 1, 2**16), check_int(width, "width", 1, 2**16)
        mask = mask_ops.resize(torch.from_numpy(self.mask.copy()), height, width).clamp(0, 1)
        return Region(mask.numpy(), self.config, self.variation_seed, self.variation_strength, self.variation_method)

    def __repr__(self):
        return (f"Region(mask={self.mask.shape}, config={self.config!r}, variation_seed={self.variation_seed}, "
                f"variation_strength={self.variation_strength})")
