"""Evaluating one candidate: the hardware model plus a short, partial training.

An :class:`Evaluator` turns a genotype into an :class:`~capslab.nas.schema.EvaluationRecord`.
It never raises for a bad candidate: an invalid genotype, a NaN loss or running out of memory
give a ``failed`` record with the reason, running out of the time budget a ``timeout`` record,
both with the worst objectives, so the search goes on. Only interruptions
(``KeyboardInterrupt``, ``SystemExit``) propagate.

Candidates are scored on a validation split held out of the training split
(:class:`TrainedAccuracy` with ``training.val_size``), never on the test split.
:func:`default_time_limit` is the time budget a search gives each candidate unless told.

Evaluators are plain picklable objects so worker processes and Ray tasks can run them.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from capslab import train as trainer  # trainer.train is looked up at each call
from capslab.allocator import release_freed_memory
from capslab.data import dataset_info, split_size
from capslab.errors import (
    CandidateFailed,
    CandidateTimeout,
    ConfigError,
    GenotypeError,
    NonFiniteLossError,
    TrainingTimeout,
)
from capslab.genotype import Genotype
from capslab.hw import CAPSACC, estimate
from capslab.nas.fidelity import rung_time_limit
from capslab.nas.schema import TRAINING_COST_NAMES, EvaluationRecord
from capslab.nas.space import SearchSpace, genotype_key
from capslab.train.config import TrainConfig, TrainingSettings
from capslab.training_cost import genotype_training_cost


@dataclass(frozen=True)
class Score:
    """What an accuracy function may return instead of a bare accuracy: the objective's
    ``accuracy``, the ``float_accuracy`` when that is a quantized network's, and the
    ``epochs`` trained."""

    accuracy: float
    float_accuracy: float | None = None
    epochs: int | None = None


class TrainedAccuracy:
    """Accuracy of a genotype after ``training.epochs`` epochs of training with
    :func:`capslab.train.train`: the best validation accuracy of the short run when
    ``training.val_size`` is set (the search always sets it), else the best test accuracy.
    :attr:`split` says which. With ``out_dir`` each candidate's run (metrics, summary) is kept
    in a folder of its own under it.

    ``weight_bits``: the accuracy is that of the network with its weights quantized to that
    many bits (the best epoch's, as for the float one, which the :class:`Score` keeps too);
    with ``accelerator_mode`` its activations (calibrated static scales) and routing too.
    ``rungs``: called with ``epochs=`` (a rung), the candidate trains up to that epoch of its
    ``training.epochs`` schedule, checkpointing in its folder under ``out_dir`` (required), and
    the next call continues from there.
    """

    def __init__(self, training: TrainingSettings, out_dir: str | None = None,
                 weight_bits: int | None = None, rungs: bool = False,
                 accelerator_mode: bool = False):
        if rungs and out_dir is None:
            raise ConfigError("training in rungs needs a folder for the candidates' checkpoints")
        self.training = training
        self.out_dir = out_dir
        self.weight_bits = weight_bits
        self.rungs = rungs
        self.accelerator_mode = accelerator_mode

    @property
    def split(self) -> str:
        """``"val"`` or ``"test"``: the split the accuracy is measured on."""
        return "test" if self.training.val_size is None else "val"

    def prepare(self) -> None:
        """Import what training imports lazily (torch's compiler stack), so that the first
        candidate of a process is not charged seconds of imports against its time limit."""
        import torch._dynamo  # noqa: F401  (pulled in by the optimizers on first use)

    def __call__(self, genotype: Genotype, time_limit: float | None = None,
                 epochs: int | None = None) -> Score:
        out = None if self.out_dir is None else str(candidate_folder(self.out_dir, genotype))
        config = TrainConfig.of(
            self.training.replace(model="genotype", model_options={"genotype": genotype.exchange()}),
            out=out, time_limit=time_limit, checkpoints=self.rungs, resume=self.rungs,
            plots=False, stop_after=epochs, eval_weight_bits=self.weight_bits,
            eval_accelerator=self.accelerator_mode,
        )
        try:
            summary = trainer.train(config, progress=False)
        finally:  # this process may train hundreds of candidates: keep none's peak memory
            release_freed_memory()
        best = float(summary[f"best_{self.split}_accuracy"])
        if self.weight_bits is None:
            return Score(best, epochs=summary["epochs_done"])
        return Score(float(summary[f"best_{self.split}_quantized_accuracy"]), best,
                     summary["epochs_done"])


def candidate_folder(out_dir: str | Path, genotype: Genotype) -> Path:
    """The folder of one candidate's training run under ``out_dir``."""
    return key_folder(out_dir, genotype_key(genotype))


def key_folder(out_dir: str | Path, key: str) -> Path:
    """:func:`candidate_folder` of the genotype whose key is ``key`` (what the journal holds)."""
    import hashlib

    return Path(out_dir) / hashlib.sha1(key.encode()).hexdigest()[:12]


_IMPORT_RETRY_S = 0.05


def _importing(frame: Any) -> bool:
    """Is ``frame`` (or a caller) executing an import?"""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


@contextmanager
def _alarm(seconds: float | None):
    """Raise :class:`CandidateTimeout` after ``seconds`` (main thread on POSIX only; elsewhere the
    limit is checked after the fact)."""
    usable = (
        seconds is not None
        and hasattr(signal, "setitimer")
        and threading.current_thread() is threading.main_thread()
    )
    if not usable:
        yield
        return

    def on_alarm(signum, frame):  # noqa: ARG001
        if _importing(frame):
            # An exception raised inside an import can leave a half-initialised module in
            # sys.modules (torch imports sympy lazily, under ``except Exception``), which breaks
            # every later candidate of this process: wait for the import to finish.
            signal.setitimer(signal.ITIMER_REAL, _IMPORT_RETRY_S)
            return
        raise CandidateTimeout(f"time limit of {seconds:g} s exceeded")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# ---------------------------------------------------------------------- time budget
#: Assumed seconds to train on one image (forward, backward, optimiser step) for a typical
#: network of the paper's MNIST space, by the kind of device that trains it. CPU: 16 random
#: networks of the default space, one thread each on a shared 2-core machine, took 0.007 to
#: 0.76 s (median 0.05 s; docs/nas.md); GPU: not measured, chosen so that the paper's MNIST
#: setting (5 epochs of 55,000 training and 5,000 validation images) gets about the authors'
#: 300 s.
SECONDS_PER_IMAGE = {"cpu": 0.04, "cuda": 0.00032}
#: Evaluating an image costs about a third of training on it (forward pass only; the median
#: ratio of the same measurement).
EVAL_COST = 0.35
#: Budget = START + SAFETY x the expected seconds, clamped to [FLOOR, CEILING].
BUDGET_START_S = 30.0  # data loading, model building, the first steps' warm-up
BUDGET_SAFETY = 3.0  # networks of the space differ by more than 10x: cut only the outliers
BUDGET_FLOOR_S = 60.0
BUDGET_CEILING_S = 3600.0
#: The image area every rate above was measured on (MNIST's 28 x 28).
REFERENCE_PIXELS = 28 * 28


def candidate_budget(epochs: int, train_images: int, val_images: int,
                     seconds_per_image: float, pixels: int = REFERENCE_PIXELS) -> float:
    """Seconds one candidate may take (a pure function).

    ``START + SAFETY x epochs x (train_images + EVAL_COST x val_images) x seconds_per_image x
    pixels / REFERENCE_PIXELS``, clamped to ``[FLOOR, CEILING]``.

    Args:
        epochs: partial-training epochs.
        train_images: images trained on per epoch.
        val_images: images evaluated after every epoch.
        seconds_per_image: training seconds per 28 x 28 image (:data:`SECONDS_PER_IMAGE`).
        pixels: image area (height x width) of the dataset.
    """
    work = epochs * (train_images + EVAL_COST * val_images) * seconds_per_image
    expected = BUDGET_START_S + BUDGET_SAFETY * work * pixels / REFERENCE_PIXELS
    return float(min(max(expected, BUDGET_FLOOR_S), BUDGET_CEILING_S))


def device_kind(device: str) -> str:
    """``"cuda"`` or ``"cpu"``: the kind of device ``device`` (``auto`` resolved here) is."""
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return "cuda" if device.startswith("cuda") else "cpu"


def data_sizes(training: TrainingSettings) -> tuple[int, int]:
    """(training images, evaluated images) of one epoch of ``training`` (from the dataset's
    registered split sizes: no file is read; your own data's once it is read)."""
    available = split_size(training.dataset, "train")
    if training.val_size is not None:
        available -= training.val_size
        evaluated = training.val_size
    else:
        evaluated = split_size(training.dataset, "test")
        if training.test_subset is not None:
            evaluated = min(evaluated, training.test_subset)
    trained = available if training.subset is None else min(available, training.subset)
    return trained, evaluated


def default_time_limit(training: TrainingSettings) -> float:
    """The time budget of one candidate trained as ``training`` says
    (:func:`candidate_budget` with the device's :data:`SECONDS_PER_IMAGE`)."""
    trained, evaluated = data_sizes(training)
    size = dataset_info(training.dataset).image_size
    return candidate_budget(training.epochs, trained, evaluated,
                            SECONDS_PER_IMAGE[device_kind(training.device)], size * size)


def _failure_reason(exc: BaseException) -> str:
    """A short, classified reason for the journal."""
    name = type(exc).__name__
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else name
    if isinstance(exc, CandidateTimeout | TrainingTimeout):
        return f"time limit: {text}"
    if isinstance(exc, GenotypeError):
        return f"invalid genotype: {text}"
    if isinstance(exc, NonFiniteLossError):
        return f"nan loss: {text}"
    if isinstance(exc, MemoryError) or "out of memory" in text.lower() or name == "OutOfMemoryError":
        return f"out of memory: {text}"
    if isinstance(exc, CandidateFailed):
        return text
    return f"error: {name}: {text}"


AccuracyFn = Callable[..., float]


class CandidateInfeasible(Exception):
    """A candidate over a limit of the search (raised before it trains; internal)."""


def over_limits(values: Mapping[str, float | None], limits: Mapping[str, float]) -> str | None:
    """``"memory_KiB 3,168.0 > 2,048"``-style text of the ``limits`` that ``values`` exceed
    (figures not in ``values``, such as the error before training, are not checked); ``None``
    when none is."""
    over = [f"{n} {values[n]:,.4g} > {bound:,.4g}" for n, bound in limits.items()
            if values.get(n) is not None and values[n] > bound]
    return "over limit: " + ", ".join(over) if over else None


class Evaluator:
    """Hardware model + accuracy for one genotype.

    ``accuracy_fn(genotype, time_limit) -> float | Score`` in [0, 1]; by default partial
    training (:class:`TrainedAccuracy`). Its ``split`` attribute, when it has one, is journaled
    as the split of the accuracy. ``space`` (optional) checks the genotype against the search
    space first. ``time_limit`` (seconds) bounds each candidate: one that runs out of it is a
    ``timeout`` record. ``rungs`` (epoch counts): the evaluator is then called with
    ``rung=r`` and calls ``accuracy_fn(genotype, limit, epochs=rungs[r])``, ``limit`` being
    the rung's share of ``time_limit`` (:func:`~capslab.nas.fidelity.rung_time_limit`).
    """

    def __init__(
        self,
        accuracy_fn: AccuracyFn | None = None,
        *,
        training: TrainingSettings | None = None,
        space: SearchSpace | None = None,
        accelerator: Any = None,
        time_limit: float | None = None,
        rungs: Sequence[int] | None = None,
        training_cost: bool = False,
        limits: Mapping[str, float] | None = None,
    ):
        if accuracy_fn is None:
            accuracy_fn = TrainedAccuracy(training or TrainingSettings(model="genotype"))
        if time_limit is not None and time_limit <= 0:
            raise ConfigError(f"time_limit must be positive seconds, got {time_limit}")
        self.accuracy_fn = accuracy_fn
        self.space = space
        self.accelerator = accelerator
        self.time_limit = time_limit
        self.rungs = None if rungs is None else tuple(rungs)
        self.limits = dict(limits or {})
        # the training cost is traced when it is asked for or limited
        self.training_cost = training_cost or any(n in TRAINING_COST_NAMES for n in self.limits)

    def costs(self, genotype: Genotype) -> dict[str, float | None]:
        """The figures known before training: the hardware model's, and the training cost per
        image (:mod:`capslab.training_cost`) when this evaluator traces it."""
        energy, memory, latency = self.hardware(genotype)
        values: dict[str, float | None] = {"energy_mJ": energy, "memory_KiB": memory,
                                           "latency_ms": latency}
        if self.training_cost:
            cost = genotype_training_cost(genotype)
            values.update(train_activation_KiB=cost.activation_KiB,
                          train_GFLOP=cost.train_flops / 1e9)
        return values

    def hardware(self, genotype: Genotype) -> tuple[float, float, float]:
        """(energy mJ, memory KiB, latency ms) from :func:`capslab.hw.estimate`."""
        est = estimate(genotype, self.accelerator or CAPSACC)
        return float(est.energy_mJ), float(est.memory_KiB), float(est.latency_ms)

    def __call__(self, genotype: Genotype, rung: int | None = None) -> EvaluationRecord:
        started_at = datetime.now(UTC)
        t0 = time.perf_counter()
        figures: dict[str, float | None] = {}
        accuracy = None
        score = Score(math.nan)
        if rung is None:
            time_limit, extra = self.time_limit, {}
        else:
            if self.rungs is None or not 0 <= rung < len(self.rungs):
                raise ValueError(f"rung {rung} is not one of this evaluator's rungs {self.rungs}")
            time_limit = rung_time_limit(self.time_limit, self.rungs, rung)
            extra = {"epochs": self.rungs[rung]}
        try:
            if self.space is not None:
                self.space.check(genotype)
            figures = self.costs(genotype)
            over = over_limits(figures, self.limits)
            if over:  # known before training: the candidate is not trained at all
                raise CandidateInfeasible(over)
            prepare = getattr(self.accuracy_fn, "prepare", None)
            if prepare is not None:
                prepare()  # outside the time limit
            t_limit = time.perf_counter()
            with _alarm(time_limit):
                result = self.accuracy_fn(genotype, time_limit, **extra)
            elapsed = time.perf_counter() - t_limit
            if time_limit is not None and elapsed > time_limit:
                raise CandidateTimeout(
                    f"time limit of {time_limit:g} s exceeded ({elapsed:.1f} s)"
                )
            score = result if isinstance(result, Score) else Score(result)
            accuracy = score.accuracy
            if accuracy is None or not math.isfinite(float(accuracy)):
                raise CandidateFailed(f"nan accuracy: the evaluation returned {accuracy!r}")
            accuracy = float(accuracy)
            if not 0.0 <= accuracy <= 1.0:
                raise CandidateFailed(f"error: accuracy {accuracy} is outside [0, 1]")
            status, reason = "ok", None
        except CandidateInfeasible as exc:
            status, reason, accuracy = "infeasible", str(exc), None
        except Exception as exc:  # a bad candidate must not stop the search
            timed_out = isinstance(exc, CandidateTimeout | TrainingTimeout)
            status = "timeout" if timed_out else "failed"
            reason, accuracy = _failure_reason(exc), None
        return EvaluationRecord.of(
            genotype,
            status=status,
            reason=reason,
            accuracy=accuracy,
            split=getattr(self.accuracy_fn, "split", None) if accuracy is not None else None,
            epochs=score.epochs if score.epochs is not None else extra.get("epochs"),
            float_accuracy=None if accuracy is None else score.float_accuracy,
            **figures,
            seconds=time.perf_counter() - t0,
            started_at=started_at,
            finished_at=datetime.now(UTC),
        )
