"""Session parameters as trait types: each validates every assignment, None included.

A parameter trait checks a value and raises `ParameterError` naming the parameter, the value and
the accepted values, before anything is stored. None is never a parameter value: the traits do not
allow it, so traitlets hands None to the check (it skips ``@validate`` only for traits that allow
None). Each trait also carries what an input widget needs (`kind`, `label`, `options`, bounds), so
`widgets/controls.py` builds its inputs from the traits instead of a second list of types.

The ``check_*`` functions are the checks themselves, usable without a trait (one int check).
"""
from __future__ import annotations

import math
from typing import Callable, Sequence, Union

import numpy as np
from traitlets import TraitError, TraitType, Undefined

from .sampling import checks
from .sampling.noise import SEED_MAX

MAX_STEPS = 10000  # the nodes' largest steps / start / end / base_only_steps (ComfyUI's INT max here)
MAX_BATCH_INDEX = 4095  # ComfyUI's largest batch is 4096 latents: indices 0..4095


class ParameterError(ValueError, TraitError):
    """A rejected parameter: names the parameter, the value and the accepted values."""


def check_int(value, name: str, lo: int, hi: int) -> int:
    """An integer (a bool is not one) in ``lo..hi`` (`sampling.checks.check_int`, raising ParameterError)."""
    return checks.check_int(value, name, lo, hi, error=ParameterError)


def check_float(value, name: str, lo: float, hi: float, open_low: bool = False) -> float:
    """A finite real number in ``[lo, hi]`` (``(lo, hi]`` with ``open_low``)."""
    ok = isinstance(value, (int, float, np.floating)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value > hi or value < lo or (open_low and value <= lo):
        bracket = "(" if open_low else "["
        raise ParameterError(f"{name}: expected a number in {bracket}{lo:g}, {hi:g}], got {value!r}")
    return float(value)


def check_bool(value, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ParameterError(f"{name}: expected True or False, got {value!r}")
    return bool(value)


def check_choice(value, name: str, options: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in options:
        raise ParameterError(f"{name}: unknown value {value!r}; accepted: {', '.join(options)}")
    return value


def check_instance(value, name: str, cls: type):
    if not isinstance(value, cls):
        raise ParameterError(f"{name}: expected a {cls.__module__}.{cls.__name__}, got {type(value).__name__}")
    return value


def check_index_list(value, name: str, length: int, hi: int = MAX_BATCH_INDEX) -> list:
    """``length`` integers in ``0..hi`` (a latent's ``batch_index``: one index per batch item)."""
    if not isinstance(value, (list, tuple, np.ndarray)) or np.ndim(value) != 1 or len(value) != length:
        raise ParameterError(f"{name}: expected a list of {length} integers in 0..{hi} (one per batch item), "
                             f"got {value!r}")
    return [check_int(v, f"{name}[{k}]", 0, hi) for k, v in enumerate(value)]


class Param(TraitType):
    """A parameter trait: ``check(value)`` returns the value to store or raises `ParameterError`.

    Metadata for inputs: ``kind`` ("int", "float", "bool", "choice" or "object"), ``label`` (a short
    name for the input; the trait's name when None).
    """

    kind = "object"
    accepted = "a value"

    def __init__(self, default_value=Undefined, *, label: str = None, help: str = None, **kwargs):  # noqa: A002
        super().__init__(default_value, allow_none=False, help=help, **kwargs)
        self.label = label

    def validate(self, obj, value):
        return self.check(value)

    def check(self, value):
        if value is None:
            raise ParameterError(f"{self.name}: expected {self.accepted}, got None")
        return value

    def info(self):
        return self.accepted


class StrictInt(Param):
    """An integer (never a bool, never None) in ``lo..hi``."""

    kind = "int"

    def __init__(self, default_value, lo: int, hi: int, **kwargs):
        self.lo, self.hi = lo, hi
        self.accepted = f"an integer in {lo}..{hi}"
        super().__init__(default_value, **kwargs)

    def check(self, value):
        return check_int(value, self.name, self.lo, self.hi)


class Seed(StrictInt):
    """A seed: an integer in ``0..2^64-1``."""

    def __init__(self, default_value=0, **kwargs):
        super().__init__(default_value, 0, SEED_MAX, **kwargs)


class StrictFloat(Param):
    """A finite number in ``[lo, hi]`` (``(lo, hi]`` with ``open_low``)."""

    kind = "float"

    def __init__(self, default_value, lo: float, hi: float, *, open_low: bool = False, **kwargs):
        self.lo, self.hi, self.open_low = lo, hi, open_low
        self.accepted = f"a number in {'(' if open_low else '['}{lo:g}, {hi:g}]"
        super().__init__(default_value, **kwargs)

    def check(self, value):
        return check_float(value, self.name, self.lo, self.hi, self.open_low)


class Flag(Param):
    """True or False (numpy's bool too; never 0/1 or None)."""

    kind = "bool"
    accepted = "True or False"

    def check(self, value):
        return check_bool(value, self.name)


class Choice(Param):
    """One of ``options``: a sequence of strings, or a function returning one (read on every check)."""

    kind = "choice"

    def __init__(self, default_value, options: Union[Sequence[str], Callable[[], Sequence[str]]], **kwargs):
        self._options = options
        super().__init__(default_value, **kwargs)

    @property
    def options(self) -> tuple:
        return tuple(self._options() if callable(self._options) else self._options)

    @property
    def accepted(self):
        return "one of " + ", ".join(self.options)

    def check(self, value):
        return check_choice(value, self.name, self.options)


class InstanceOf(Param):
    """An instance of ``cls`` (never None)."""

    def __init__(self, default_value, cls: type, **kwargs):
        self.cls = cls
        self.accepted = f"a {cls.__module__}.{cls.__name__}"
        super().__init__(default_value, **kwargs)

    def check(self, value):
        return check_instance(value, self.name, self.cls)


class Value(Param):
    """Any value but None; the owner's ``@validate`` checks the rest (``accepted`` says what)."""

    def __init__(self, default_value=Undefined, *, accepted: str = "a value", **kwargs):
        self.accepted = accepted
        super().__init__(default_value, **kwargs)


class ListOf(Param):
    """A list (a tuple is accepted and stored as a list); the owner's ``@validate`` checks the items."""

    def __init__(self, default_value=(), *, accepted: str = "a list", **kwargs):
        self.accepted = accepted
        super().__init__(list(default_value), **kwargs)

    def make_dynamic_default(self):
        return list(self.default_value)

    def check(self, value):
        if not isinstance(value, (list, tuple)):
            raise ParameterError(f"{self.name}: expected {self.accepted}, got {value!r}"[:300])
        return list(value)


def parameter_traits(owner) -> dict:
    """The `Param` traits of a HasTraits class or instance, by name."""
    return {name: trait for name, trait in owner.class_traits().items() if isinstance(trait, Param)}
