"""Learning-rate and batch-size schedules of FasTrCaps (Marchisio et al., 2020).

A schedule is fixed before training from the number of epochs, the training-set size and the
batch size of each phase, so the same policy works at full scale (60,000 images, 30 epochs) and
at reduced scale (a 1,000-image subset, 2 epochs) without any hard-coded step count.

Conventions:

* ``epoch`` and ``step_in_epoch`` passed to the methods are **0-based**.
* An epoch with batch size ``b`` has ``ceil(train_size / b)`` optimiser steps.
* The *global step* counts optimiser steps from **0** (the first update of training is global
  step 0); :meth:`Schedule.steps` reports epochs **1-based** (as users count them) and the
  global step 0-based.

Policies (see docs/fastrcaps.md for the formulas): ``fixed``, ``exp-decay``, ``one-cycle``,
``warm-restarts``, ``adabatch``, ``warm-adabatch``. Each has a typed option dataclass with the
paper's defaults; :func:`build_schedule` refuses unknown options and names the valid ones.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

__all__ = [
    "POLICIES",
    "Schedule",
    "build_schedule",
    "make_schedule",
    "make_policy_options",
    "schedule_from_dict",
    "policy_options_class",
    "parse_policy_options",
    "exp_decay_lr",
    "one_cycle_lr",
    "cosine_restart_lr",
    "FixedOptions",
    "ExpDecayOptions",
    "OneCycleOptions",
    "WarmRestartsOptions",
    "AdaBatchOptions",
    "WarmAdaBatchOptions",
]


# --------------------------------------------------------------------------------------------
# The formulas: small pure functions of the (global) step
# --------------------------------------------------------------------------------------------


def exp_decay_lr(step: float, lr0: float, rate: float, decay_steps: float, staircase: bool = False) -> float:
    """``lr0 * rate ** (step / decay_steps)``; with ``staircase`` the exponent is floored."""
    exponent = step / decay_steps
    if staircase:
        exponent = math.floor(exponent)
    return lr0 * rate**exponent


def one_cycle_lr(
    step: int,
    total_steps: int,
    lr_min: float,
    lr_max: float,
    lr_final: float,
    peak_fraction: float = 0.45,
    end_fraction: float = 0.9,
) -> float:
    """Smith's one-cycle policy as FasTrCaps uses it.

    Linear ``lr_min -> lr_max`` over ``[0, peak]``, linear ``lr_max -> lr_min`` over
    ``[peak, end]``, then linear ``lr_min -> lr_final`` over ``[end, total]``, where
    ``peak = peak_fraction * total_steps`` and ``end = end_fraction * total_steps``. The last
    optimiser step is ``total_steps - 1``, so the final value is reached only in the limit.
    """
    peak = peak_fraction * total_steps
    end = end_fraction * total_steps
    if step <= peak:
        return lr_min + (lr_max - lr_min) * (step / peak if peak > 0 else 1.0)
    if step <= end:
        return lr_max - (lr_max - lr_min) * (step - peak) / (end - peak)
    tail = total_steps - end
    return lr_min - (lr_min - lr_final) * min(1.0, (step - end) / tail)


def cosine_restart_lr(t: float, period: float, lr_min: float, lr_max: float) -> float:
    """SGDR's cosine annealing inside one cycle: ``t`` steps into a cycle of ``period`` steps.

    ``lr_min + (lr_max - lr_min) * (1 + cos(pi * t / period)) / 2``: ``lr_max`` at the restart
    (``t = 0``), the midpoint at half a cycle, ``lr_min`` at ``t = period`` (which is already the
    next cycle's ``t = 0``).
    """
    return lr_min + 0.5 * (lr_max - lr_min) * (1.0 + math.cos(math.pi * t / period))


# --------------------------------------------------------------------------------------------
# Typed options, one dataclass per policy
# --------------------------------------------------------------------------------------------


def _positive(policy: str, name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"policy {policy!r}: option {name} must be > 0, got {value!r}")


def _lr_range(policy: str, lr_min: float, lr_max: float) -> None:
    _positive(policy, "lr_min", lr_min)
    if lr_max < lr_min:
        raise ValueError(f"policy {policy!r}: lr_max ({lr_max}) is below lr_min ({lr_min})")


def _batch_list(policy: str, sizes: Sequence[int]) -> None:
    if not sizes:
        raise ValueError(f"policy {policy!r}: batch_sizes is empty")
    for b in sizes:
        if int(b) != b or b < 1:
            raise ValueError(f"policy {policy!r}: batch sizes must be integers >= 1, got {list(sizes)}")


@dataclass
class FixedOptions:
    """``fixed``: one learning rate for all of training."""

    lr: float = 1e-3

    LR_FIELD: ClassVar[str] = "lr"

    def __post_init__(self) -> None:
        _positive("fixed", "lr", self.lr)


@dataclass
class ExpDecayOptions:
    """``exp-decay``: ``lr * rate ** (step / decay_steps)``.

    The paper uses 2,000 steps (the authors' code 4,000). ``decay_every="epoch"`` decays once per
    ``decay_epochs`` epochs instead (0.96 per epoch is the Momentum CapsNets' Adam default);
    the rate is then constant within an epoch.
    """

    lr: float = 1e-3
    rate: float = 0.96
    decay_steps: int = 2000
    staircase: bool = False
    decay_every: str = "step"
    decay_epochs: int = 1

    LR_FIELD: ClassVar[str] = "lr"

    def __post_init__(self) -> None:
        _positive("exp-decay", "lr", self.lr)
        if not 0 < self.rate <= 1:
            raise ValueError(f"policy 'exp-decay': option rate must be in (0, 1], got {self.rate}")
        _positive("exp-decay", "decay_steps", self.decay_steps)
        _positive("exp-decay", "decay_epochs", self.decay_epochs)
        if self.decay_every not in ("step", "epoch"):
            raise ValueError(
                f"policy 'exp-decay': option decay_every must be 'step' or 'epoch', "
                f"got {self.decay_every!r}"
            )


@dataclass
class OneCycleOptions:
    """``one-cycle``: up to ``lr_max`` at ``peak_fraction``, down to ``lr_min`` at
    ``end_fraction``, then annealed to ``lr_final`` over the rest."""

    lr_min: float = 1e-4
    lr_max: float = 1e-3
    lr_final: float = 1e-5
    peak_fraction: float = 0.45
    end_fraction: float = 0.9

    LR_FIELD: ClassVar[str] = "lr_max"

    def __post_init__(self) -> None:
        _lr_range("one-cycle", self.lr_min, self.lr_max)
        _positive("one-cycle", "lr_final", self.lr_final)
        if not 0 < self.peak_fraction < self.end_fraction <= 1:
            raise ValueError(
                "policy 'one-cycle': need 0 < peak_fraction < end_fraction <= 1, got "
                f"peak_fraction={self.peak_fraction}, end_fraction={self.end_fraction}"
            )


@dataclass
class WarmRestartsOptions:
    """``warm-restarts`` (SGDR): cosine from ``lr_max`` to ``lr_min`` in cycles of
    ``cycle_epochs`` epochs (may be fractional), each ``cycle_mult`` times the previous."""

    lr_min: float = 1e-4
    lr_max: float = 1e-3
    cycle_epochs: float = 1.0
    cycle_mult: float = 1.0

    LR_FIELD: ClassVar[str] = "lr_max"

    def __post_init__(self) -> None:
        _lr_range("warm-restarts", self.lr_min, self.lr_max)
        _positive("warm-restarts", "cycle_epochs", self.cycle_epochs)
        if self.cycle_mult < 1:
            raise ValueError(f"policy 'warm-restarts': cycle_mult must be >= 1, got {self.cycle_mult}")


@dataclass
class AdaBatchOptions:
    """``adabatch``: batch 1 for 3 epochs, then ``2**p``, ``2**(p+1)``, ``2**(p+2)`` every 5.

    ``batch_sizes`` (if given) replaces the sizes derived from ``p``; ``phase_epochs`` gives the
    length of every phase but the last (which runs to the end) and defaults to
    ``[3, 5, 5, ...]`` of the right length. The paper's P is 4 (batch 1, 16, 32, 64).
    """

    lr: float = 1e-3
    p: int = 4
    batch_sizes: tuple[int, ...] | None = None
    phase_epochs: tuple[int, ...] | None = None

    LR_FIELD: ClassVar[str] = "lr"

    def __post_init__(self) -> None:
        _positive("adabatch", "lr", self.lr)
        if self.p < 0:
            raise ValueError(f"policy 'adabatch': option p must be >= 0, got {self.p}")
        if self.batch_sizes is None:
            self.batch_sizes = (1, 2**self.p, 2 ** (self.p + 1), 2 ** (self.p + 2))
        self.batch_sizes = tuple(int(b) for b in self.batch_sizes)
        _batch_list("adabatch", self.batch_sizes)
        if self.phase_epochs is None:
            self.phase_epochs = tuple([3] + [5] * (len(self.batch_sizes) - 2))[: len(self.batch_sizes) - 1]
        self.phase_epochs = tuple(int(e) for e in self.phase_epochs)
        if len(self.phase_epochs) != len(self.batch_sizes) - 1:
            raise ValueError(
                f"policy 'adabatch': phase_epochs gives the length of every phase but the last, so "
                f"{len(self.batch_sizes)} batch_sizes need {len(self.batch_sizes) - 1} phase_epochs, "
                f"got {list(self.phase_epochs)}"
            )
        if any(e < 1 for e in self.phase_epochs):
            raise ValueError(f"policy 'adabatch': phase_epochs must be >= 1, got {list(self.phase_epochs)}")


@dataclass
class WarmAdaBatchOptions:
    """``warm-adabatch``: batch ``batch_sizes[0]`` with one cosine cycle over the first
    ``warm_epochs`` epochs, then ``batch_sizes[1]`` with a second cycle over all the rest."""

    lr_min: float = 1e-4
    lr_max: float = 1e-3
    warm_epochs: int = 3
    batch_sizes: tuple[int, ...] = field(default=(1, 16))

    LR_FIELD: ClassVar[str] = "lr_max"

    def __post_init__(self) -> None:
        _lr_range("warm-adabatch", self.lr_min, self.lr_max)
        _positive("warm-adabatch", "warm_epochs", self.warm_epochs)
        self.batch_sizes = tuple(int(b) for b in self.batch_sizes)
        _batch_list("warm-adabatch", self.batch_sizes)
        if len(self.batch_sizes) != 2:
            raise ValueError(
                f"policy 'warm-adabatch': batch_sizes needs 2 values (warm phase, rest), "
                f"got {list(self.batch_sizes)}"
            )


# --------------------------------------------------------------------------------------------
# Schedules
# --------------------------------------------------------------------------------------------


class Schedule:
    """Learning rate per optimiser step and batch size per epoch, fixed before training.

    Subclasses set ``policy`` and ``Options`` and implement :meth:`_lr`; the base class does
    the step bookkeeping. Build through :func:`build_schedule`.
    """

    policy: ClassVar[str] = ""
    Options: ClassVar[type] = object

    def __init__(self, epochs: int, train_size: int, batch_size: int, options: Any):
        if int(epochs) != epochs or epochs < 1:
            raise ValueError(f"schedule {self.policy!r}: epochs must be an integer >= 1, got {epochs!r}")
        if int(train_size) != train_size or train_size < 1:
            raise ValueError(
                f"schedule {self.policy!r}: train_size must be an integer >= 1, got {train_size!r}"
            )
        if int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(
                f"schedule {self.policy!r}: batch_size must be an integer >= 1, got {batch_size!r}"
            )
        self.epochs = int(epochs)
        self.train_size = int(train_size)
        self.base_batch_size = int(batch_size)
        self.options = options
        self._batch = [self._batch_size(e) for e in range(self.epochs)]
        self._steps = [math.ceil(self.train_size / b) for b in self._batch]
        # _offset[e] = global step of the first step of epoch e; _offset[-1] = total steps
        self._offset = [0]
        for n in self._steps:
            self._offset.append(self._offset[-1] + n)

    # -- bookkeeping ----------------------------------------------------------------------

    def _batch_size(self, epoch: int) -> int:
        return self.base_batch_size

    def _check_epoch(self, epoch: int) -> None:
        if not 0 <= epoch < self.epochs:
            raise IndexError(
                f"schedule {self.policy!r}: epoch {epoch} is outside 0..{self.epochs - 1} "
                "(epochs passed to Schedule methods are 0-based)"
            )

    def batch_size(self, epoch: int) -> int:
        """Batch size of (0-based) ``epoch``."""
        self._check_epoch(epoch)
        return self._batch[epoch]

    def steps_in_epoch(self, epoch: int) -> int:
        """``ceil(train_size / batch_size(epoch))``."""
        self._check_epoch(epoch)
        return self._steps[epoch]

    def epoch_start(self, epoch: int) -> int:
        """Global (0-based) step of the first update of ``epoch``; ``epoch_start(epochs)`` is
        :attr:`total_steps`."""
        if not 0 <= epoch <= self.epochs:
            raise IndexError(f"schedule {self.policy!r}: epoch {epoch} is outside 0..{self.epochs}")
        return self._offset[epoch]

    def global_step(self, epoch: int, step_in_epoch: int) -> int:
        """0-based global step of step ``step_in_epoch`` of ``epoch`` (both 0-based)."""
        self._check_epoch(epoch)
        if not 0 <= step_in_epoch < self._steps[epoch]:
            raise IndexError(
                f"schedule {self.policy!r}: step {step_in_epoch} is outside 0..{self._steps[epoch] - 1} "
                f"of epoch {epoch} (batch size {self._batch[epoch]})"
            )
        return self._offset[epoch] + step_in_epoch

    @property
    def total_steps(self) -> int:
        """Optimiser steps of the whole training."""
        return self._offset[-1]

    def lr(self, epoch: int, step_in_epoch: int) -> float:
        """Learning rate of step ``step_in_epoch`` of ``epoch`` (both 0-based)."""
        g = self.global_step(epoch, step_in_epoch)
        return float(self._lr(epoch, step_in_epoch, g))

    def _lr(self, epoch: int, step_in_epoch: int, global_step: int) -> float:
        raise NotImplementedError

    def steps(self) -> Iterator[dict]:
        """Every optimiser step: ``{"epoch" (1-based), "step" (global, 0-based), "lr",
        "batch_size"}``."""
        for e in range(self.epochs):
            b = self._batch[e]
            for s in range(self._steps[e]):
                g = self._offset[e] + s
                yield {"epoch": e + 1, "step": g, "lr": float(self._lr(e, s, g)), "batch_size": b}

    def epoch_lrs(self, epoch: int) -> tuple[float, float]:
        """Learning rate at the first and the last step of ``epoch`` (for per-epoch plots)."""
        return self.lr(epoch, 0), self.lr(epoch, self._steps[epoch] - 1)

    def to_dict(self) -> dict:
        """Everything needed to rebuild the schedule (:func:`schedule_from_dict`)."""
        return {
            "policy": self.policy,
            "epochs": self.epochs,
            "train_size": self.train_size,
            "batch_size": self.base_batch_size,
            "options": {k: _plain(v) for k, v in dataclasses.asdict(self.options).items()},
            "total_steps": self.total_steps,
        }

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(epochs={self.epochs}, train_size={self.train_size}, "
            f"total_steps={self.total_steps}, options={self.options})"
        )


def _plain(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


class FixedSchedule(Schedule):
    policy = "fixed"
    Options = FixedOptions

    def _lr(self, epoch: int, step_in_epoch: int, global_step: int) -> float:
        return self.options.lr


class ExpDecaySchedule(Schedule):
    policy = "exp-decay"
    Options = ExpDecayOptions

    def _lr(self, epoch: int, step_in_epoch: int, global_step: int) -> float:
        o = self.options
        if o.decay_every == "epoch":
            return exp_decay_lr(epoch, o.lr, o.rate, o.decay_epochs, o.staircase)
        return exp_decay_lr(global_step, o.lr, o.rate, o.decay_steps, o.staircase)


class OneCycleSchedule(Schedule):
    policy = "one-cycle"
    Options = OneCycleOptions

    def _lr(self, epoch: int, step_in_epoch: int, global_step: int) -> float:
        o = self.options
        return one_cycle_lr(
            global_step, self.total_steps, o.lr_min, o.lr_max, o.lr_final, o.peak_fraction, o.end_fraction
        )


class WarmRestartsSchedule(Schedule):
    """Cycle ``i`` lasts ``round(cycle_epochs * cycle_mult**i * steps_per_epoch)`` steps."""

    policy = "warm-restarts"
    Options = WarmRestartsOptions

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        o = self.options
        per_epoch = self._steps[0]
        self.cycle_starts: list[int] = [0]  # global steps at which lr restarts to lr_max
        self._periods: list[int] = []
        i = 0
        while self.cycle_starts[-1] < self.total_steps:
            period = max(1, round(o.cycle_epochs * o.cycle_mult**i * per_epoch))
            self._periods.append(period)
            self.cycle_starts.append(self.cycle_starts[-1] + period)
            i += 1
        self.cycle_starts.pop()

    def _lr(self, epoch: int, step_in_epoch: int, global_step: int) -> float:
        o = self.options
        i = _last_le(self.cycle_starts, global_step)
        return cosine_restart_lr(global_step - self.cycle_starts[i], self._periods[i], o.lr_min, o.lr_max)


class AdaBatchSchedule(Schedule):
    policy = "adabatch"
    Options = AdaBatchOptions

    def _batch_size(self, epoch: int) -> int:
        o = self.options
        boundary = 0
        for size, length in zip(o.batch_sizes, o.phase_epochs, strict=False):
            boundary += length
            if epoch < boundary:
                return size
        return o.batch_sizes[-1]

    def _lr(self, epoch: int, step_in_epoch: int, global_step: int) -> float:
        return self.options.lr


class WarmAdaBatchSchedule(Schedule):
    """Two cosine cycles aligned with the two batch-size phases.

    If training is not longer than ``warm_epochs``, the first cycle spans the whole run.
    """

    policy = "warm-adabatch"
    Options = WarmAdaBatchOptions

    def _batch_size(self, epoch: int) -> int:
        o = self.options
        return o.batch_sizes[0] if epoch < o.warm_epochs else o.batch_sizes[1]

    def _lr(self, epoch: int, step_in_epoch: int, global_step: int) -> float:
        o = self.options
        warm = min(o.warm_epochs, self.epochs)
        if epoch < warm:
            start, period = 0, self._offset[warm]
        else:
            start, period = self._offset[warm], self.total_steps - self._offset[warm]
        return cosine_restart_lr(global_step - start, period, o.lr_min, o.lr_max)

    @property
    def cycle_starts(self) -> list[int]:
        warm = min(self.options.warm_epochs, self.epochs)
        return [0] if warm == self.epochs else [0, self._offset[warm]]


def _last_le(sorted_values: list[int], x: int) -> int:
    """Index of the last value ``<= x`` (``sorted_values[0] <= x``)."""
    lo, hi = 0, len(sorted_values) - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if sorted_values[mid] <= x:
            lo = mid
        else:
            hi = mid - 1
    return lo


_SCHEDULES: dict[str, type[Schedule]] = {
    cls.policy: cls
    for cls in (
        FixedSchedule,
        ExpDecaySchedule,
        OneCycleSchedule,
        WarmRestartsSchedule,
        AdaBatchSchedule,
        WarmAdaBatchSchedule,
    )
}

POLICIES: list[str] = list(_SCHEDULES)


# --------------------------------------------------------------------------------------------
# Building and option parsing
# --------------------------------------------------------------------------------------------


def _schedule_class(policy: str) -> type[Schedule]:
    try:
        return _SCHEDULES[policy]
    except KeyError:
        raise ValueError(f"unknown policy {policy!r}; choose one of {POLICIES}") from None


def policy_options_class(policy: str) -> type:
    """The option dataclass of ``policy``."""
    return _schedule_class(policy).Options


def _option_types(policy: str) -> dict[str, Any]:
    cls = policy_options_class(policy)
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _coerce(policy: str, name: str, value: Any, hint: Any) -> Any:
    """Convert ``value`` to the option's declared type (``int``, ``float``, ``bool``, ``str``,
    ``tuple[int, ...]``, optionally ``| None``); a scalar becomes a 1-tuple for a list option."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if value is None:
            return None
        hint = next(a for a in args if a is not type(None))
        args = typing.get_args(hint)
    bad = ValueError(f"policy {policy!r}: option {name}={value!r} is not a valid {_type_name(hint)}")
    if typing.get_origin(hint) is tuple:
        items = value if isinstance(value, list | tuple) else [value]
        return tuple(_coerce(policy, name, v, args[0]) for v in items)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _BOOLS:
            return _BOOLS[value.lower()]
        raise bad
    if hint is int:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise bad
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad
        return float(value)
    if hint is str:
        return str(value)
    return value


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) is tuple:
        return f"comma-separated list of {typing.get_args(hint)[0].__name__}"
    return getattr(hint, "__name__", str(hint))


def make_policy_options(policy: str, options: dict | None = None, lr: float | None = None) -> Any:
    """The validated option dataclass of ``policy`` from a dict; ``lr`` (if given) sets the
    policy's main learning rate (``lr`` or ``lr_max``) unless ``options`` sets it explicitly."""
    cls = policy_options_class(policy)
    hints = _option_types(policy)
    options = dict(options or {})
    unknown = sorted(set(options) - set(hints))
    if unknown:
        raise ValueError(
            f"policy {policy!r} has no option(s) {', '.join(unknown)}; valid options: "
            f"{', '.join(hints)}"
        )
    kwargs = {k: _coerce(policy, k, v, hints[k]) for k, v in options.items()}
    if lr is not None:
        kwargs.setdefault(cls.LR_FIELD, float(lr))
    return cls(**kwargs)


def build_schedule(
    policy: str,
    epochs: int,
    train_size: int,
    batch_size: int = 128,
    lr: float | None = None,
    **options: Any,
) -> Schedule:
    """The schedule of ``policy`` for ``epochs`` epochs over ``train_size`` images.

    Args:
        policy: one of :data:`POLICIES`.
        epochs: number of epochs.
        train_size: training images per epoch.
        batch_size: batch size of the constant-batch policies (``adabatch`` and
            ``warm-adabatch`` take theirs from the ``batch_sizes`` option instead).
        lr: the policy's main learning rate: ``lr`` of fixed / exp-decay / adabatch, ``lr_max``
            of one-cycle / warm-restarts / warm-adabatch. An explicit option wins over it.
        **options: the policy's options (see its dataclass); unknown ones are refused.
    """
    return make_schedule(policy, epochs, train_size, batch_size, lr, options)


def make_schedule(
    policy: str,
    epochs: int,
    train_size: int,
    batch_size: int = 128,
    lr: float | None = None,
    options: dict | None = None,
) -> Schedule:
    """:func:`build_schedule` with the options as one dict.

    Use this when the options come from a config or the command line: an option named ``lr``
    (fixed, exp-decay, adabatch) cannot clash with the ``lr`` argument here, and it wins over it.
    """
    cls = _schedule_class(policy)
    return cls(epochs, train_size, batch_size, make_policy_options(policy, options, lr))


def schedule_from_dict(d: dict) -> Schedule:
    """Rebuild a schedule from :meth:`Schedule.to_dict` (e.g. from a checkpoint's config)."""
    cls = _schedule_class(d["policy"])
    options = make_policy_options(d["policy"], d.get("options", {}))
    return cls(d["epochs"], d["train_size"], d.get("batch_size", 128), options)


_BOOLS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}


def _parse_scalar(text: str) -> Any:
    low = text.strip().lower()
    if low in ("true", "yes", "on", "false", "no", "off"):
        return _BOOLS[low]
    if low in ("none", "null"):
        return None
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return text.strip()


def parse_policy_options(items: Sequence[str] | None, policy: str | None = None) -> dict:
    """Parse ``["key=value", ...]`` from the command line into an options dict.

    Values become ints, floats, booleans (true/false/yes/no/on/off), ``None`` (none/null),
    comma lists (``batch_sizes=8,64`` -> ``[8, 64]``) or strings; dashes in keys become
    underscores. With ``policy`` the keys are checked against that policy's options and the
    values converted to their declared types (``phase_epochs=1`` -> ``(1,)``).
    """
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ValueError(f"policy option {item!r} is not of the form key=value")
        if key in out:
            raise ValueError(f"policy option {key!r} is given twice")
        if "," in value:
            out[key] = [_parse_scalar(v) for v in value.split(",") if v.strip()]
        else:
            out[key] = _parse_scalar(value)
    if policy is not None:
        hints = _option_types(policy)
        unknown = sorted(set(out) - set(hints))
        if unknown:
            raise ValueError(
                f"policy {policy!r} has no option(s) {', '.join(unknown)}; valid options: "
                f"{', '.join(hints)}"
            )
        out = {k: _coerce(policy, k, v, hints[k]) for k, v in out.items()}
    return out
