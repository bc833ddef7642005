"""Typed ``key=value`` options of the FasTrCaps learning-rate and batch-size policies.

One :class:`~capslab.settings.Settings` subclass of :class:`PolicyOptions` per policy, with the
paper's defaults (docs/fastrcaps.md): :class:`FixedOptions`, :class:`ExpDecayOptions`,
:class:`OneCycleOptions`, :class:`WarmRestartsOptions`, :class:`AdaBatchOptions`,
:class:`WarmAdaBatchOptions`. :func:`make_policy_options` converts the given values to the
declared types, refuses unknown options (naming the valid ones) and checks the values; every bad
input raises :class:`~capslab.errors.ConfigError`. The schedules that read these options are in
:mod:`capslab.train.policies`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from capslab.errors import ConfigError
from capslab.settings import Settings

# --------------------------------------------------------------------------------------------
# Typed options, one dataclass per policy
# --------------------------------------------------------------------------------------------


@dataclass
class PolicyOptions(Settings):
    """Base of the typed options of one policy.

    Subclasses set ``POLICY`` (the policy's name) and, unless it is ``lr``, ``LR_FIELD`` (the
    option that the generic ``lr`` argument sets). Errors name the policy: ``policy 'adabatch':
    option phase_epochs must be a ...``, ``policy 'fixed' has no option(s) rate; valid options:
    lr``.
    """

    POLICY: ClassVar[str] = ""
    LR_FIELD: ClassVar[str] = "lr"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.WHAT = f"policy {cls.POLICY!r}"

    def _where(self) -> str:
        return f"{self.WHAT}: option "

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, where: str = "") -> Any:
        """The options from a dict; an unknown key is refused with the list of valid ones."""
        if isinstance(data, Mapping):
            valid = cls.field_names()
            unknown = sorted(map(str, set(data) - set(valid)))
            if unknown:
                prefix = f"{where}: " if where else ""
                raise ConfigError(
                    f"{prefix}{cls.WHAT} has no option(s) {', '.join(unknown)}; "
                    f"valid options: {', '.join(valid)}"
                )
            data = dict(data)
        return super().from_dict(data, where=where)

    # -- shared checks --------------------------------------------------------------------

    def _error(self, message: str) -> ConfigError:
        """``message`` prefixed with the policy's name."""
        return ConfigError(f"{self.WHAT}: {message}")

    def _positive(self, *names: str) -> None:
        for name in names:
            value = getattr(self, name)
            if not value > 0:
                raise self._error(f"option {name} must be > 0, got {value!r}")

    def _lr_range(self) -> None:
        self._positive("lr_min")
        if self.lr_max < self.lr_min:
            raise self._error(f"lr_max ({self.lr_max}) is below lr_min ({self.lr_min})")

    def _batch_list(self, sizes: Sequence[int]) -> None:
        if not sizes:
            raise self._error("batch_sizes is empty")
        if any(b < 1 for b in sizes):
            raise self._error(f"batch sizes must be integers >= 1, got {list(sizes)}")


@dataclass
class FixedOptions(PolicyOptions):
    """``fixed``: one learning rate for all of training."""

    POLICY: ClassVar[str] = "fixed"

    lr: float = 1e-3

    def validate(self) -> None:
        self._positive("lr")


@dataclass
class ExpDecayOptions(PolicyOptions):
    """``exp-decay``: ``lr * rate ** (step / decay_steps)``.

    The paper uses 2,000 steps (the authors' code 4,000). ``decay_every="epoch"`` decays once per
    ``decay_epochs`` epochs instead (0.96 per epoch is the Momentum CapsNets' Adam default);
    the rate is then constant within an epoch.
    """

    POLICY: ClassVar[str] = "exp-decay"

    lr: float = 1e-3
    rate: float = 0.96
    decay_steps: int = 2000
    staircase: bool = False
    decay_every: str = "step"
    decay_epochs: int = 1

    def validate(self) -> None:
        self._positive("lr")
        if not 0 < self.rate <= 1:
            raise self._error(f"option rate must be in (0, 1], got {self.rate}")
        self._positive("decay_steps", "decay_epochs")
        if self.decay_every not in ("step", "epoch"):
            raise self._error(
                f"option decay_every must be 'step' or 'epoch', got {self.decay_every!r}"
            )


@dataclass
class OneCycleOptions(PolicyOptions):
    """``one-cycle``: up to ``lr_max`` at ``peak_fraction``, down to ``lr_min`` at
    ``end_fraction``, then annealed to ``lr_final`` over the rest."""

    POLICY: ClassVar[str] = "one-cycle"
    LR_FIELD: ClassVar[str] = "lr_max"

    lr_min: float = 1e-4
    lr_max: float = 1e-3
    lr_final: float = 1e-5
    peak_fraction: float = 0.45
    end_fraction: float = 0.9

    def validate(self) -> None:
        self._lr_range()
        self._positive("lr_final")
        if not 0 < self.peak_fraction < self.end_fraction <= 1:
            raise self._error(
                "need 0 < peak_fraction < end_fraction <= 1, got "
                f"peak_fraction={self.peak_fraction}, end_fraction={self.end_fraction}"
            )


@dataclass
class WarmRestartsOptions(PolicyOptions):
    """``warm-restarts`` (SGDR): cosine from ``lr_max`` to ``lr_min`` in cycles of
    ``cycle_epochs`` epochs (may be fractional), each ``cycle_mult`` times the previous."""

    POLICY: ClassVar[str] = "warm-restarts"
    LR_FIELD: ClassVar[str] = "lr_max"

    lr_min: float = 1e-4
    lr_max: float = 1e-3
    cycle_epochs: float = 1.0
    cycle_mult: float = 1.0

    def validate(self) -> None:
        self._lr_range()
        self._positive("cycle_epochs")
        if self.cycle_mult < 1:
            raise self._error(f"cycle_mult must be >= 1, got {self.cycle_mult}")


@dataclass
class AdaBatchOptions(PolicyOptions):
    """``adabatch``: batch 1 for 3 epochs, then ``2**p``, ``2**(p+1)``, ``2**(p+2)`` every 5.

    ``batch_sizes`` (if given) replaces the sizes derived from ``p``; ``phase_epochs`` gives the
    length of every phase but the last (which runs to the end) and defaults to
    ``[3, 5, 5, ...]`` of the right length. The paper's P is 4 (batch 1, 16, 32, 64).
    Once constructed, both hold the values in use (never ``None``).
    """

    POLICY: ClassVar[str] = "adabatch"

    lr: float = 1e-3
    p: int = 4
    batch_sizes: tuple[int, ...] | None = None
    phase_epochs: tuple[int, ...] | None = None

    def validate(self) -> None:
        self._positive("lr")
        if self.p < 0:
            raise self._error(f"option p must be >= 0, got {self.p}")
        # the derived defaults: filled in here, after the given values were converted
        if self.batch_sizes is None:
            self.batch_sizes = (1, 2**self.p, 2 ** (self.p + 1), 2 ** (self.p + 2))
        self._batch_list(self.batch_sizes)
        if self.phase_epochs is None:
            self.phase_epochs = tuple([3] + [5] * (len(self.batch_sizes) - 2))[: len(self.batch_sizes) - 1]
        if len(self.phase_epochs) != len(self.batch_sizes) - 1:
            raise self._error(
                "phase_epochs gives the length of every phase but the last, so "
                f"{len(self.batch_sizes)} batch_sizes need {len(self.batch_sizes) - 1} phase_epochs, "
                f"got {list(self.phase_epochs)}"
            )
        if any(e < 1 for e in self.phase_epochs):
            raise self._error(f"phase_epochs must be >= 1, got {list(self.phase_epochs)}")


@dataclass
class WarmAdaBatchOptions(PolicyOptions):
    """``warm-adabatch``: batch ``batch_sizes[0]`` with one cosine cycle over the first
    ``warm_epochs`` epochs, then ``batch_sizes[1]`` with a second cycle over all the rest."""

    POLICY: ClassVar[str] = "warm-adabatch"
    LR_FIELD: ClassVar[str] = "lr_max"

    lr_min: float = 1e-4
    lr_max: float = 1e-3
    warm_epochs: int = 3
    batch_sizes: tuple[int, ...] = (1, 16)

    def validate(self) -> None:
        self._lr_range()
        self._positive("warm_epochs")
        self._batch_list(self.batch_sizes)
        if len(self.batch_sizes) != 2:
            raise self._error(
                f"batch_sizes needs 2 values (warm phase, rest), got {list(self.batch_sizes)}"
            )


# --------------------------------------------------------------------------------------------
# Options by policy name
# --------------------------------------------------------------------------------------------

_OPTIONS: dict[str, type[PolicyOptions]] = {
    cls.POLICY: cls
    for cls in (
        FixedOptions,
        ExpDecayOptions,
        OneCycleOptions,
        WarmRestartsOptions,
        AdaBatchOptions,
        WarmAdaBatchOptions,
    )
}


def policy_options_class(policy: str) -> type[PolicyOptions]:
    """The options class of ``policy`` (:class:`ConfigError` for an unknown policy)."""
    try:
        return _OPTIONS[policy]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown policy {policy!r}; choose one of {list(_OPTIONS)}") from None


def make_policy_options(policy: str, options: Mapping[str, Any] | None = None, lr: float | None = None) -> PolicyOptions:
    """The validated options of ``policy`` from a dict (values are converted to the declared
    types: ``"3"`` -> 3, ``8`` -> ``(8,)`` for a list option, ``"yes"`` -> ``True``); ``lr`` (if
    given) sets the policy's main learning rate (``lr`` or ``lr_max``) unless ``options`` sets it
    explicitly. Unknown options and bad values raise :class:`ConfigError`."""
    cls = policy_options_class(policy)
    if options is not None and not isinstance(options, Mapping):
        raise ConfigError(f"policy {policy!r}: options must be a mapping of option=value, got {options!r}")
    data = dict(options or {})
    if lr is not None:
        data.setdefault(cls.LR_FIELD, lr)
    return cls.from_dict(data)
