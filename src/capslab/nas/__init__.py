"""NASCaps: hardware-aware multi-objective architecture search over capsule networks.

See docs/nas.md. The pieces: :mod:`~capslab.nas.space` (search space, sampler),
:mod:`~capslab.nas.operators` (pymoo operators), :mod:`~capslab.nas.problem`,
:mod:`~capslab.nas.evaluate` (hardware model + partial training), :mod:`~capslab.nas.schema`
(the journal's tables and records), :mod:`~capslab.nas.journal` (SQLAlchemy journal: its
queries), :mod:`~capslab.nas.config` (search settings, run folder),
:mod:`~capslab.nas.search` (NSGA-II ask/tell loop, resume),
:mod:`~capslab.nas.retry` (training failed candidates again),
:mod:`~capslab.nas.parallel` (processes, Ray), :mod:`~capslab.nas.fidelity` (multi-fidelity
rungs: the promotion rule), :mod:`~capslab.nas.report`,
:mod:`~capslab.nas.pcc` (partial-training correlation study).
"""

from capslab.nas.config import SearchConfig, default_val_size
from capslab.nas.evaluate import (
    Evaluator,
    Score,
    TrainedAccuracy,
    candidate_budget,
    default_time_limit,
)
from capslab.nas.fidelity import promote, promotion_count, rung_time_limit
from capslab.nas.journal import Journal
from capslab.nas.operators import (
    GenotypeDuplicates,
    GenotypeMutation,
    GenotypeRepair,
    GenotypeSampling,
    SinglePointCrossover,
    cross,
    mutate,
    valid_cut_points,
)
from capslab.nas.parallel import utilisation
from capslab.nas.problem import CachedEvaluations, NASCapsProblem
from capslab.nas.retry import RetryPlan, retry_failed
from capslab.nas.schema import FAILED_OBJECTIVES, OBJECTIVE_NAMES, EvaluationRecord
from capslab.nas.search import STOPPED_MAX_TIME, SearchResult, build_algorithm, resume, run_search
from capslab.nas.space import SearchSpace, genotype_key, sample

__all__ = [
    "FAILED_OBJECTIVES",
    "OBJECTIVE_NAMES",
    "STOPPED_MAX_TIME",
    "CachedEvaluations",
    "EvaluationRecord",
    "Evaluator",
    "GenotypeDuplicates",
    "GenotypeMutation",
    "GenotypeRepair",
    "GenotypeSampling",
    "Journal",
    "NASCapsProblem",
    "RetryPlan",
    "Score",
    "SearchConfig",
    "SearchResult",
    "SearchSpace",
    "SinglePointCrossover",
    "TrainedAccuracy",
    "build_algorithm",
    "candidate_budget",
    "cross",
    "default_time_limit",
    "default_val_size",
    "genotype_key",
    "mutate",
    "promote",
    "promotion_count",
    "resume",
    "retry_failed",
    "run_search",
    "rung_time_limit",
    "sample",
    "utilisation",
    "valid_cut_points",
]
