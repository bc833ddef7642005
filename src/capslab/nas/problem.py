"""The NASCaps optimisation problem for pymoo: minimised objectives per genotype, and limits.

``F = [1 - accuracy, energy_mJ, memory_KiB, latency_ms]`` by default (any figures of
:data:`~capslab.nas.schema.COST_NAMES`), ``G = value - bound`` for each limit. Every evaluation goes through a
lookup (the journal, then the evaluator), so a genotype already evaluated is never evaluated
again and the problem can also be used with plain ``pymoo.optimize.minimize``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

import numpy as np
from pymoo.core.problem import ElementwiseProblem

from capslab.genotype import Genotype
from capslab.nas.journal import Journal
from capslab.nas.schema import OBJECTIVE_NAMES, EvaluationRecord
from capslab.nas.space import SearchSpace, genotype_key

N_OBJECTIVES = len(OBJECTIVE_NAMES)  # the paper's, the default


class CachedEvaluations:
    """Journal-backed memo: ``get(genotype)`` answers from memory, then the journal, and only
    then calls ``evaluator``; new results are journaled right away (``generation`` is the one
    being evaluated)."""

    def __init__(
        self,
        evaluator: Callable[[Genotype], EvaluationRecord] | None,
        journal: Journal | None = None,
    ):
        self.evaluator = evaluator
        self.journal = journal
        self.generation = 0
        self.memory: dict[str, EvaluationRecord] = {
            rec.key: rec for rec in (journal.evaluations() if journal is not None else [])
        }

    def known(self, key: str) -> EvaluationRecord | None:
        return self.memory.get(key)

    def add(self, rec: EvaluationRecord) -> EvaluationRecord:
        """Store a fresh result (journaled first, so a crash after this line loses nothing)."""
        rec = replace(rec, generation=self.generation)
        if self.journal is not None and not self.journal.record(rec):
            rec = self.journal.lookup(rec.key) or rec
        self.memory[rec.key] = rec
        return rec

    def get(self, genotype: Genotype) -> EvaluationRecord:
        key = genotype_key(genotype)
        if key in self.memory:
            return self.memory[key]
        if self.evaluator is None:
            raise KeyError(f"genotype {key} was not evaluated and there is no evaluator")
        return self.add(self.evaluator(genotype))


class NASCapsProblem(ElementwiseProblem):
    """One variable (the genotype object); the ``objectives`` (the paper's four by default)
    minimised; one inequality constraint ``value - bound <= 0`` per entry of ``limits``, which
    NSGA-II's survival honours (feasible candidates first)."""

    def __init__(self, space: SearchSpace, evaluations: CachedEvaluations,
                 objectives: Sequence[str] = OBJECTIVE_NAMES,
                 limits: Mapping[str, float] | None = None, **kwargs):
        self.objectives = tuple(objectives)
        self.limits = dict(limits or {})
        super().__init__(n_var=1, n_obj=len(self.objectives), n_ieq_constr=len(self.limits),
                         vtype=object, **kwargs)
        self.space = space
        self.evaluations = evaluations

    def _evaluate(self, x, out, *args, **kwargs):
        # x: [1] object array holding one Genotype
        rec = self.evaluations.get(x[0])
        out["F"] = np.asarray(rec.objectives(self.objectives), dtype=float)
        if self.limits:
            values = rec.objectives(tuple(self.limits))
            out["G"] = np.asarray([v - bound for v, bound in zip(values, self.limits.values(),
                                                                 strict=True)], dtype=float)
