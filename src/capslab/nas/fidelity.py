"""Multi-fidelity evaluation: successive halving of each generation's new candidates.

Every new candidate of a generation trains for the first rung of epochs (``rungs[0]``); the
best fraction of them (``promote``), ranked on that rung's objectives, continues from its own
checkpoint to the next rung, and so on up to ``rungs[-1]``, the full partial training. A
candidate's objectives are those of the last rung it finished; the journal keeps every rung's
accuracy (:meth:`capslab.nas.journal.Journal.rung_records`).

The promotion rule (:func:`promote`), on the ``(1 - accuracy, energy, memory, latency)`` of the
candidates that finished the rung:

1. failed and timed-out candidates are never promoted;
2. ``ceil(promote x n)`` of the ``n`` others continue (:func:`promotion_count`);
3. they are taken front by front in non-dominated order (pymoo's ``NonDominatedSorting``), and
   within the front that does not fit whole, by crowding distance, largest first (the spread
   NSGA-II itself keeps), then by genotype key, so the choice is deterministic.

The functions here are pure: the search calls them again on the journaled rung results when it
resumes, and reaches the same promotions.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from capslab.errors import ConfigError
from capslab.nas.schema import OBJECTIVE_NAMES, WORST, EvaluationRecord

#: The least time a rung's training may be given, whatever share of the candidate's budget
#: its epochs are (model building and the first steps' warm-up are paid at every rung).
MIN_RUNG_SECONDS = 60.0


def check_rungs(rungs: Iterable[Any]) -> tuple[int, ...]:
    """``rungs`` as a tuple of strictly increasing positive epoch counts, else
    :class:`ConfigError`."""
    values = tuple(rungs)
    if not values:
        raise ConfigError("rungs must name at least one epoch count")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"rungs must be positive whole epoch counts, got {v!r}")
    if any(b <= a for a, b in zip(values, values[1:], strict=False)):
        raise ConfigError(
            f"rungs must be strictly increasing epoch counts, got {','.join(map(str, values))}")
    return values


def check_promote(fraction: float) -> float:
    """``fraction`` if it lies in (0, 1], else :class:`ConfigError`."""
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not (
            0.0 < fraction <= 1.0):
        raise ConfigError(f"promote must be a fraction in (0, 1], got {fraction!r}")
    return float(fraction)


def promotion_count(n: int, fraction: float) -> int:
    """How many of ``n`` candidates continue: ``ceil(fraction x n)`` (at least one when ``n``
    is positive). The product is rounded to 9 decimals first, so that ``0.3 x 10`` is 3."""
    if n <= 0:
        return 0
    return max(1, math.ceil(round(fraction * n, 9)))


def _crowding_distance(F: np.ndarray) -> np.ndarray:
    from pymoo.operators.survival.rank_and_crowding.metrics import calc_crowding_distance

    return np.asarray(calc_crowding_distance(F), dtype=float)


def promote(records: Sequence[EvaluationRecord], fraction: float,
            objectives: Sequence[str] = OBJECTIVE_NAMES,
            limits: Mapping[str, float] | None = None) -> list[str]:
    """The keys of the candidates that continue to the next rung (see the module's rule), in
    the order they were chosen.

    Args:
        records: one record per candidate that trained at this rung.
        fraction: the share that continues, in (0, 1].
        objectives: the figures ranked (the paper's four by default).
        limits: a candidate over one of them ranks with the worst figures, after every
            feasible one.
    """
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    check_promote(fraction)
    ok = sorted((r for r in records if r.ok), key=lambda r: r.key)
    k = promotion_count(len(ok), fraction)
    if k == 0:
        return []
    F = np.array([r.objectives(tuple(objectives)) if r.feasible(limits or {})
                  else [WORST[n] for n in objectives] for r in ok], dtype=float)
    chosen: list[int] = []
    for front in NonDominatedSorting().do(F):
        front = sorted(int(i) for i in front)
        if len(chosen) + len(front) <= k:
            chosen += front
        else:
            distance = _crowding_distance(F[front])
            order = sorted(range(len(front)), key=lambda j: (-distance[j], ok[front[j]].key))
            chosen += [front[j] for j in order[: k - len(chosen)]]
        if len(chosen) == k:
            break
    return [ok[i].key for i in chosen]


def rung_time_limits(time_limit: float, rungs: Sequence[int]) -> list[float]:
    """The seconds each rung's training may take, summing to ``time_limit`` exactly: shares
    in proportion to each rung's new epochs, except that a rung gets at least
    :data:`MIN_RUNG_SECONDS` (or ``time_limit / len(rungs)`` if that is less), paid by the
    other rungs in proportion to their epochs. With rungs 1, 3, 5 and 300 s: 60, 120, 120 s;
    with 1, 10 and 300 s: 60, 240 (not 60, 270: the floor never adds to the budget)."""
    new = [r - (rungs[i - 1] if i > 0 else 0) for i, r in enumerate(rungs)]
    floor = min(MIN_RUNG_SECONDS, time_limit / len(rungs))
    floored: set[int] = set()
    while True:  # water-filling: floor the rungs whose share is below it, share the rest
        free = [i for i in range(len(rungs)) if i not in floored]
        budget = time_limit - floor * len(floored)
        epochs = sum(new[i] for i in free)
        shares = {i: budget * new[i] / epochs for i in free}
        low = {i for i, v in shares.items() if v < floor}
        if not low:
            return [floor if i in floored else shares[i] for i in range(len(rungs))]
        floored |= low


def rung_time_limit(time_limit: float | None, rungs: Sequence[int], rung: int) -> float | None:
    """Seconds the training of rung ``rung`` may take (:func:`rung_time_limits`; ``None``: no
    limit); a single rung gets the whole ``time_limit``."""
    if time_limit is None:
        return None
    return rung_time_limits(time_limit, rungs)[rung]
