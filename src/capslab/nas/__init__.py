"""NASCaps: hardware-aware multi-objective architecture search over capsule networks.

See docs/nas.md. The pieces: :mod:`~capslab.nas.space` (search space, sampler),
:mod:`~capslab.nas.operators` (pymoo operators), :mod:`~capslab.nas.problem`,
:mod:`~capslab.nas.evaluate` (hardware model + partial training), :mod:`~capslab.nas.journal`
(SQLAlchemy journal), :mod:`~capslab.nas.search` (NSGA-II ask/tell loop, resume),
:mod:`~capslab.nas.parallel` (processes, Ray), :mod:`~capslab.nas.report`,
:mod:`~capslab.nas.pcc` (partial-training correlation study).
"""

from capslab.nas.evaluate import Evaluator, TrainedAccuracy
from capslab.nas.journal import FAILED_OBJECTIVES, OBJECTIVE_NAMES, EvaluationRecord, Journal
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
from capslab.nas.problem import CachedEvaluations, NASCapsProblem
from capslab.nas.search import SearchConfig, SearchResult, build_algorithm, resume, run_search
from capslab.nas.space import SearchSpace, genotype_key, sample

__all__ = [
    "FAILED_OBJECTIVES",
    "OBJECTIVE_NAMES",
    "CachedEvaluations",
    "EvaluationRecord",
    "Evaluator",
    "GenotypeDuplicates",
    "GenotypeMutation",
    "GenotypeRepair",
    "GenotypeSampling",
    "Journal",
    "NASCapsProblem",
    "SearchConfig",
    "SearchResult",
    "SearchSpace",
    "SinglePointCrossover",
    "TrainedAccuracy",
    "build_algorithm",
    "cross",
    "genotype_key",
    "mutate",
    "resume",
    "run_search",
    "sample",
    "valid_cut_points",
]
