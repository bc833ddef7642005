"""What defines a search, and the folder it runs in.

:class:`SearchConfig` holds every setting of a search (what must match when it is resumed),
checks them and fills in the defaults that depend on the others.

Data: candidates are scored on a validation split held out of the training split
(``training.val_size``, :func:`default_val_size` unless given); the test split is left to
``search finalize``. Time: every candidate has a time budget (``time_limit``,
:func:`~capslab.nas.evaluate.default_time_limit` unless given, 0 = none); ``max_time``, which
caps a whole call, is the loop's (:mod:`capslab.nas.search`).

Accuracy at the accelerator's precision (``accuracy_bits``): the accuracy objective is that of
the network with its weights quantized to the accelerator's ``weight_bits`` (the float one is
journaled beside it), so the front promises what the accelerator computes; with
``accuracy_mode="accelerator"`` its activations (static scales calibrated on training images)
and routing coefficients are at those bits too (:mod:`capslab.quantize`).

The run folder: ``run.json`` (:data:`RUN_FILE`: the run id, the journal's URL without its
password and the configuration), the journal (``journal.sqlite`` unless another database is
given, :mod:`capslab.nas.journal`) and, when candidates keep their runs or train in rungs,
``candidates/`` (:data:`CANDIDATES_DIR`). :func:`open_journal` reopens the journal of a run
folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from capslab.data import dataset_info, split_size
from capslab.errors import ConfigError, RunMismatchError
from capslab.hw import CAPSACC, Accelerator
from capslab.nas.evaluate import Evaluator, TrainedAccuracy, default_time_limit
from capslab.nas.fidelity import check_promote, check_rungs
from capslab.nas.journal import RETRY_SECONDS, Journal
from capslab.nas.schema import (
    COST_NAMES,
    OBJECTIVE_NAMES,
    TRAINING_COST_NAMES,
    database_url,
    masked_url,
)
from capslab.nas.space import SearchSpace
from capslab.quantize import check_bits
from capslab.results import read_json, write_json
from capslab.settings import Settings
from capslab.train.config import TrainingSettings

RUN_FILE = "run.json"
#: The folder of the run that holds the candidates' runs (their checkpoints, with rungs).
CANDIDATES_DIR = "candidates"
#: The validation split of a search: VAL_FRACTION of the training images it uses, at most
#: VAL_MAX (5,000 of MNIST's 60,000, as is usual) and at least one image per class.
VAL_FRACTION = 0.2
VAL_MAX = 5000


def default_val_size(training: TrainingSettings) -> int:
    """The validation images a search holds out of the training split by default:
    ``VAL_FRACTION`` x the images it would otherwise train on (``subset`` when given, else the
    whole training split), between one per class and ``VAL_MAX``. MNIST: 5,000; ``--subset
    500``: 100 (the 500 training images are then drawn from the other 59,900)."""
    available = split_size(training.dataset, "train")
    used = available if training.subset is None else min(training.subset, available)
    size = min(VAL_MAX, round(VAL_FRACTION * used))
    return max(size, dataset_info(training.dataset).num_classes)


def _default_training() -> TrainingSettings:
    return TrainingSettings(model="genotype", epochs=5)


@dataclass
class SearchConfig(Settings):
    """Everything that defines a search (and must match when it is resumed).

    ``training`` is how each candidate is partially trained (its model is the candidate's
    genotype network); its ``val_size`` is the validation split candidates are scored on
    (``None``: :func:`default_val_size`, set when the config is built). ``seed`` seeds the
    algorithm; ``space`` overrides fields of the dataset's
    :class:`~capslab.nas.space.SearchSpace`; ``time_limit`` is each candidate's time budget in
    seconds (``None``: :func:`~capslab.nas.evaluate.default_time_limit`, set when the config
    is built; ``0``: none); ``keep_candidates`` keeps each candidate's metrics under
    ``<run>/candidates``.

    ``rungs`` (strictly increasing epoch counts ending at ``training.epochs``, e.g. ``(1, 3,
    5)``) turns on successive halving with ``promote`` the share that continues at each rung
    (``None``: every candidate trains ``training.epochs`` epochs, as in the paper).
    ``accelerator`` holds fields of the accelerator description that override CapsAcc's
    (:class:`~capslab.hw.Accelerator`); ``accuracy_bits`` makes the accuracy objective that of
    the network quantized to that many bits, which must be the accelerator's ``weight_bits``
    (the memory objective counts weights at that width); ``accuracy_mode`` ``"weights"`` (the
    weights only) or ``"accelerator"`` (weights, calibrated activations and routing at those
    bits).

    ``objectives`` are the figures minimised (two or more of
    :data:`~capslab.nas.schema.COST_NAMES`: the paper's four by default, and the training cost
    per image, ``train_activation_KiB`` and ``train_GFLOP``); ``limits`` map figures to the
    largest value a candidate may have. A candidate over a limit known before training (every
    figure but ``error``) is journaled ``infeasible`` without training; one over an error
    limit is feasible for nothing. Neither is ever on the front.
    """

    training: TrainingSettings = field(default_factory=_default_training)
    generations: int = 20
    population: int = 10
    offspring: int = 10
    mutation_prob: float = 0.1
    crossover_prob: float = 1.0
    seed: int = 0
    time_limit: float | None = None
    keep_candidates: bool = False
    space: dict[str, Any] = field(default_factory=dict)
    rungs: tuple[int, ...] | None = None
    promote: float = 0.5
    accuracy_bits: int | None = None
    accuracy_mode: Literal["weights", "accelerator"] = "weights"
    accelerator: dict[str, Any] = field(default_factory=dict)
    objectives: tuple[str, ...] = OBJECTIVE_NAMES
    limits: dict[str, float] = field(default_factory=dict)

    WHAT: ClassVar[str] = "search setting"

    def validate(self) -> None:
        if self.training.model != "genotype":
            raise ConfigError(f"the search trains genotype networks, got model {self.training.model!r}")
        if self.generations < 0:
            raise ConfigError(f"generations must be >= 0, got {self.generations}")
        for name in ("population", "offspring"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.population < 2:
            raise ConfigError(f"population must be >= 2 for crossover, got {self.population}")
        for name in ("mutation_prob", "crossover_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.time_limit is not None and self.time_limit < 0:
            raise ConfigError(f"time_limit must be >= 0 seconds (0: no limit), got {self.time_limit}")
        check_promote(self.promote)
        if self.rungs is not None:
            self.rungs = check_rungs(self.rungs)
            if self.rungs[-1] != self.training.epochs:
                raise ConfigError(
                    f"the last rung ({self.rungs[-1]} epochs) must be the candidates' whole "
                    f"training, training.epochs = {self.training.epochs}")
        accelerator = self.accelerator_model()  # a bad description is refused here
        if self.accuracy_bits is not None:
            check_bits(self.accuracy_bits, "accuracy_bits")
            if self.accuracy_bits != accelerator.weight_bits:
                raise ConfigError(
                    f"accuracy_bits {self.accuracy_bits} disagrees with the accelerator "
                    f"description: {accelerator.name} stores {accelerator.weight_bits}-bit "
                    f"weights (give an accelerator with weight_bits {self.accuracy_bits}, or "
                    f"accuracy_bits {accelerator.weight_bits})")
        if self.accuracy_mode == "accelerator" and self.accuracy_bits is None:
            raise ConfigError("accuracy_mode accelerator quantizes at accuracy_bits: give those too")
        self.objectives = tuple(self.objectives)
        for name in (*self.objectives, *self.limits):
            if name not in COST_NAMES:
                raise ConfigError(f"unknown objective or limit {name!r}; choose from "
                                  f"{', '.join(COST_NAMES)}")
        if len(set(self.objectives)) < 2 or len(set(self.objectives)) != len(self.objectives):
            raise ConfigError(f"objectives must be two or more distinct figures, got "
                              f"{', '.join(self.objectives) or 'none'}")
        self.limits = {n: float(v) for n, v in self.limits.items()}
        for name, bound in self.limits.items():
            if not bound > 0:
                raise ConfigError(f"limit {name} must be a positive number, got {bound}")
        if self.training.val_size is None:  # never score candidates on the test split
            self.training = self.training.replace(val_size=default_val_size(self.training))
        if self.time_limit is None:
            self.time_limit = default_time_limit(self.training)
        self.build_space()  # refuse a bad space now, not mid-run

    def on_device(self, device: str) -> SearchConfig:
        """This search continued on ``device``. A candidate time budget that was the default
        for the old device (:func:`~capslab.nas.evaluate.default_time_limit`) is computed
        afresh for the new one; a budget given explicitly stays."""
        training = self.training.replace(device=device)
        limit = self.time_limit
        if limit and limit == default_time_limit(self.training):
            limit = default_time_limit(training)
        return self.replace(training=training, time_limit=limit)

    def build_space(self) -> SearchSpace:
        return SearchSpace.for_dataset(self.training.dataset, **self.space)

    def accelerator_model(self):
        """The :class:`~capslab.hw.Accelerator` the hardware objectives are computed on."""
        if not self.accelerator:
            return CAPSACC
        return Accelerator.from_dict({**CAPSACC.to_dict(), **self.accelerator},
                                     source="search accelerator")

    def evaluator(self, run_dir: str | os.PathLike | None = None) -> Evaluator:
        out = None
        if (self.keep_candidates or self.rungs is not None) and run_dir is not None:
            # absolute: Ray workers run in folders of their own
            out = str(Path(run_dir).resolve() / CANDIDATES_DIR)
        accuracy = TrainedAccuracy(self.training, out, weight_bits=self.accuracy_bits,
                                   rungs=self.rungs is not None,
                                   accelerator_mode=self.accuracy_mode == "accelerator")
        return Evaluator(accuracy, space=self.build_space(), accelerator=self.accelerator_model(),
                         time_limit=self.time_limit or None, rungs=self.rungs,
                         training_cost=any(n in TRAINING_COST_NAMES for n in self.objectives),
                         limits=self.limits)

    def data_split(self) -> dict[str, Any]:
        """What the journal records about the split candidates are scored on."""
        t = self.training
        return {"accuracy_on": "val", "val_size": t.val_size, "held_out_from": "train",
                "stratified": True, "seed": t.seed, "subset": t.subset,
                "rule": "val_size images held out of the whole training split first, "
                        "subset drawn from the rest (capslab.train.loop.hold_out)"}


# ---------------------------------------------------------------------- run folder
def write_run_file(run_dir: Path, run_id: str, url: str, config: SearchConfig, workers: int = 1) -> None:
    """Write ``run.json``: the run id, the journal URL without its password, the config and
    the workers it was started with (``resume``'s default: candidates sized for one worker a
    core pair time out when two share it)."""
    write_json(run_dir / RUN_FILE, "search-run",
               {"run_id": run_id, "db": masked_url(url), "config": config.to_dict(),
                "workers": workers})


def read_run_file(run_dir: str | os.PathLike) -> dict[str, Any]:
    path = Path(run_dir) / RUN_FILE
    info = read_json(path, "search-run")
    if info is None:
        raise RunMismatchError(f"{path} not found or unreadable: {run_dir} is not a search run folder")
    return info


def open_journal(run_dir: str | os.PathLike, db: str | None = None,
                 retry_seconds: float = RETRY_SECONDS) -> tuple[Journal, dict]:
    """The journal of an existing run folder (``db`` overrides the recorded URL, e.g. to give
    the password that run.json leaves out; ``retry_seconds`` as for :class:`Journal`)."""
    info = read_run_file(run_dir)
    url = database_url(db, run_dir) if db else info["db"]
    if "***" in url:
        raise RunMismatchError(
            f"the journal URL of {run_dir} hides its password ({url}); give the URL again"
        )
    if url.startswith("sqlite:///") and db is None:
        # the recorded path is absolute; if the folder was moved, use the file next to run.json
        local = Path(run_dir) / Path(url[len("sqlite:///") :]).name
        if not Path(url[len("sqlite:///") :]).exists() and local.exists():
            url = f"sqlite:///{local.resolve()}"
    return Journal(url, info["run_id"], retry_seconds=retry_seconds), info
