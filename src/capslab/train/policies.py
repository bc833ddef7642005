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
``warm-restarts``, ``adabatch``, ``warm-adabatch``. This module holds the learning-rate formulas
(pure functions of the step), one :class:`Schedule` subclass per policy and
:func:`build_schedule`. Each policy's typed options (a subclass of
:class:`~capslab.train.policy_options.PolicyOptions` with the paper's defaults) and their parsing
are in :mod:`capslab.train.policy_options`; :func:`build_schedule` converts the values to the
declared types, refuses unknown options and names the valid ones. Every bad input raises
:class:`~capslab.errors.ConfigError`.
"""

from __future__ import annotations

import bisect
import itertools
import math
import numbers
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

from capslab.errors import ConfigError
from capslab.train.policy_options import (
    AdaBatchOptions,
    ExpDecayOptions,
    FixedOptions,
    OneCycleOptions,
    PolicyOptions,
    WarmAdaBatchOptions,
    WarmRestartsOptions,
    make_policy_options,
)

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
# Schedules
# --------------------------------------------------------------------------------------------


class Schedule:
    """Learning rate per optimiser step and batch size per epoch, fixed before training.

    Subclasses set ``policy`` and ``Options`` and override :meth:`_lr` (default: the constant
    ``options.lr``) and :meth:`_batch_size` (default: the ``batch_size`` argument); the base
    class does the step bookkeeping. Build through :func:`build_schedule`.
    """

    policy: ClassVar[str] = ""
    Options: ClassVar[type[PolicyOptions]] = PolicyOptions

    def __init__(self, epochs: int, train_size: int, batch_size: int, options: PolicyOptions | None = None):
        self.epochs = self._count("epochs", epochs)
        self.train_size = self._count("train_size", train_size)
        self.base_batch_size = self._count("batch_size", batch_size)
        if options is None:
            options = self.Options()
        elif not isinstance(options, self.Options):
            raise ConfigError(
                f"schedule {self.policy!r}: options must be {self.Options.__name__}, "
                f"got {type(options).__name__}"
            )
        self.options = options
        self._batch = [self._batch_size(e) for e in range(self.epochs)]
        self._steps = [math.ceil(self.train_size / b) for b in self._batch]
        # _offset[e] = global step of the first step of epoch e; _offset[-1] = total steps
        self._offset = list(itertools.accumulate(self._steps, initial=0))

    # -- bookkeeping ----------------------------------------------------------------------

    def _count(self, name: str, value: Any) -> int:
        """``value`` as an int >= 1 (an integral float is accepted), else :class:`ConfigError`."""
        if (
            isinstance(value, bool)
            or not isinstance(value, numbers.Real)
            or not float(value).is_integer()
            or value < 1
        ):
            raise ConfigError(f"schedule {self.policy!r}: {name} must be an integer >= 1, got {value!r}")
        return int(value)

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
        return self.options.lr

    def steps(self) -> Iterator[dict]:
        """Every optimiser step: ``{"epoch" (1-based), "step" (global, 0-based), "lr",
        "batch_size"}``."""
        for e in range(self.epochs):
            b = self._batch[e]
            for s in range(self._steps[e]):
                g = self._offset[e] + s
                yield {"epoch": e + 1, "step": g, "lr": float(self._lr(e, s, g)), "batch_size": b}

    def to_dict(self) -> dict:
        """Everything needed to rebuild the schedule: ``build_schedule(d["policy"],
        d["epochs"], d["train_size"], d["batch_size"], options=d["options"])``."""
        return {
            "policy": self.policy,
            "epochs": self.epochs,
            "train_size": self.train_size,
            "batch_size": self.base_batch_size,
            "options": self.options.to_dict(),
            "total_steps": self.total_steps,
        }

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(epochs={self.epochs}, train_size={self.train_size}, "
            f"total_steps={self.total_steps}, options={self.options})"
        )


class FixedSchedule(Schedule):
    policy = "fixed"
    Options = FixedOptions


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


class _CosineCyclesSchedule(Schedule):
    """Cosine annealing from ``lr_max`` to ``lr_min`` in consecutive cycles; ``cycle_starts``
    holds the global steps at which the rate restarts to ``lr_max``. Subclasses give the cycles'
    lengths in :meth:`_cycle_periods`."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._periods = self._cycle_periods()
        self.cycle_starts: list[int] = list(itertools.accumulate(self._periods[:-1], initial=0))

    def _cycle_periods(self) -> list[int]:
        """Steps of each cycle; together they reach :attr:`total_steps` (the last may go past)."""
        raise NotImplementedError

    def _lr(self, epoch: int, step_in_epoch: int, global_step: int) -> float:
        o = self.options
        i = bisect.bisect_right(self.cycle_starts, global_step) - 1  # the cycle global_step is in
        return cosine_restart_lr(global_step - self.cycle_starts[i], self._periods[i], o.lr_min, o.lr_max)


class WarmRestartsSchedule(_CosineCyclesSchedule):
    """Cycle ``i`` lasts ``round(cycle_epochs * cycle_mult**i * steps_per_epoch)`` steps."""

    policy = "warm-restarts"
    Options = WarmRestartsOptions

    def _cycle_periods(self) -> list[int]:
        o = self.options
        periods, end = [], 0
        while end < self.total_steps:
            periods.append(max(1, round(o.cycle_epochs * o.cycle_mult ** len(periods) * self._steps[0])))
            end += periods[-1]
        return periods


class AdaBatchSchedule(Schedule):
    policy = "adabatch"
    Options = AdaBatchOptions

    def _batch_size(self, epoch: int) -> int:
        o = self.options
        # one more batch size than phase ends: the last phase runs to the end of training
        return o.batch_sizes[bisect.bisect_right(list(itertools.accumulate(o.phase_epochs)), epoch)]


class WarmAdaBatchSchedule(_CosineCyclesSchedule):
    """Two cosine cycles aligned with the two batch-size phases.

    If training is not longer than ``warm_epochs``, the first cycle spans the whole run.
    """

    policy = "warm-adabatch"
    Options = WarmAdaBatchOptions

    def _batch_size(self, epoch: int) -> int:
        o = self.options
        return o.batch_sizes[0] if epoch < o.warm_epochs else o.batch_sizes[1]

    def _cycle_periods(self) -> list[int]:
        warm = self._offset[min(self.options.warm_epochs, self.epochs)]  # steps of the warm phase
        return [warm] if warm == self.total_steps else [warm, self.total_steps - warm]


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
# Building
# --------------------------------------------------------------------------------------------


def _schedule_class(policy: str) -> type[Schedule]:
    try:
        return _SCHEDULES[policy]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown policy {policy!r}; choose one of {POLICIES}") from None


def build_schedule(
    policy: str,
    epochs: int,
    train_size: int,
    batch_size: int = 128,
    lr: float | None = None,
    options: Mapping[str, Any] | None = None,
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
        options: the policy's options as one dict (see its :class:`PolicyOptions` class), e.g.
            from a config, :meth:`Schedule.to_dict` or
            :func:`capslab.cli.options.parse_key_values`; unknown ones are refused.

    Raises:
        ConfigError: an unknown policy or option, a bad option value, or ``epochs``,
            ``train_size`` or ``batch_size`` not an integer >= 1.
    """
    cls = _schedule_class(policy)
    return cls(epochs, train_size, batch_size, make_policy_options(policy, options, lr))
