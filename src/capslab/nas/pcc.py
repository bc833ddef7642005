"""How many epochs of partial training predict the final accuracy? (NASCaps Table 2.)

Train K random networks of the search space for E epochs, record the test accuracy after every
epoch (each run's ``metrics.jsonl``), and report for each n the Pearson correlation between the
accuracy after n epochs and the final accuracy (after E epochs), with the median cumulative
training time of n epochs. Each network is one training run through :func:`capslab.experiments.run_or_reuse`, so the study
is resumable: finished networks are not retrained and an interrupted one continues from its last
checkpoint.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from capslab.data import require_files
from capslab.errors import ConfigError
from capslab.experiments import run_or_failure
from capslab.genotype import Genotype
from capslab.nas.space import SearchSpace, sample
from capslab.results import Column, pyplot, read_json, save_figure, write_json, write_table
from capslab.settings import Settings
from capslab.train.config import TrainConfig, TrainingSettings


# ---------------------------------------------------------------------- maths (pure)
def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson correlation (scipy) of two equally long samples; NaN when either is constant
    or n < 2, where the correlation is undefined."""
    from scipy.stats import ConstantInputWarning, pearsonr

    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"pearson needs two 1-D samples of equal length, got {x.shape} and {y.shape}")
    if len(x) < 2:
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConstantInputWarning)
        return float(pearsonr(x, y).statistic)


def pcc_table(accuracy: np.ndarray, seconds: np.ndarray) -> list[dict[str, float]]:
    """Per epoch n = 1..E: Pearson correlation between accuracy after n epochs and after E, and
    the median cumulative training time of n epochs.

    Args:
        accuracy: ``[K, E]`` test accuracy of K networks after each of E epochs.
        seconds: ``[K, E]`` training seconds of each epoch.
    Returns:
        ``[{"epoch": n, "pcc": r, "mctt_s": t, "networks": K}, ...]`` for n = 1..E.
    """
    accuracy = np.asarray(accuracy, dtype=float)
    seconds = np.asarray(seconds, dtype=float)
    if accuracy.ndim != 2 or accuracy.shape != seconds.shape:
        raise ValueError(
            f"accuracy and seconds must both be [networks, epochs], got {accuracy.shape} and {seconds.shape}"
        )
    k, e = accuracy.shape
    cumulative = np.cumsum(seconds, axis=1)  # [K, E]
    final = accuracy[:, -1]
    return [
        {
            "epoch": n + 1,
            "pcc": pearson(accuracy[:, n], final),
            "mctt_s": float(np.median(cumulative[:, n])) if k else float("nan"),
            "networks": k,
        }
        for n in range(e)
    ]


def histories_to_arrays(
    histories: Sequence[Sequence[dict[str, Any]]], epochs: int
) -> tuple[np.ndarray, np.ndarray]:
    """Complete histories (``metrics.jsonl`` records) -> ``[K, E]`` accuracy and seconds;
    histories shorter than ``epochs`` (failed or unfinished runs) are left out. The accuracy is
    the validation accuracy of runs with a validation split (``training.val_size``), else the
    test accuracy."""
    full = [h for h in histories if len(h) >= epochs]
    acc = np.array([[r["val_accuracy"] if "val_accuracy" in r else r["test_accuracy"]
                     for r in h[:epochs]] for h in full], dtype=float)
    sec = np.array([[r["epoch_seconds"] for r in h[:epochs]] for h in full], dtype=float)
    return acc.reshape(len(full), epochs), sec.reshape(len(full), epochs)


# ---------------------------------------------------------------------- the study
def _default_training() -> TrainingSettings:
    return TrainingSettings(model="genotype", epochs=10)


@dataclass
class PCCConfig(Settings):
    """K random networks of the search space, each trained as ``training`` says (its
    ``epochs`` is the full training whose last epoch is "final")."""

    training: TrainingSettings = field(default_factory=_default_training)
    networks: int = 66
    out: str = "runs/study-pcc"
    space: dict[str, Any] = field(default_factory=dict)
    report_epochs: tuple[int, ...] = ()  # epochs to show in the table; default: all

    WHAT: ClassVar[str] = "PCC study setting"

    def validate(self) -> None:
        if self.training.model != "genotype":
            raise ConfigError(f"the PCC study trains genotype networks, got model {self.training.model!r}")
        if self.networks < 2:
            raise ConfigError(f"networks must be >= 2 for a correlation, got {self.networks}")
        bad = [n for n in self.report_epochs if not 1 <= n <= self.training.epochs]
        if bad:
            raise ConfigError(f"report epochs {bad} are outside 1..{self.training.epochs}")
        self.build_space()  # a bad space is refused before anything is written

    def build_space(self) -> SearchSpace:
        return SearchSpace.for_dataset(self.training.dataset, **self.space)

    def genotypes(self) -> list[Genotype]:
        """The K random networks (fixed by the seed, so a resumed study trains the same ones)."""
        rng = np.random.default_rng(self.training.seed)
        space = self.build_space()
        return [sample(space, rng) for _ in range(self.networks)]

    def train_config(self, genotype: Genotype, run_dir: Path) -> TrainConfig:
        return TrainConfig.of(
            self.training.replace(model_options={**self.training.model_options,
                                                 "genotype": genotype.exchange()}),
            out=str(run_dir), resume=True, plots=False,
        )


COLUMNS = [Column("epoch"), Column("pcc", "PCC", ".4f"), Column("mctt_s", "MCTT [s]", ".1f"),
           Column("networks")]


def run_pcc_study(
    config: PCCConfig,
    train_fn: Callable[..., dict[str, Any]] | None = None,
    on_network: Callable[[int, str], None] | None = None,
) -> dict[str, Any]:
    """Train the networks that are not finished yet, then write ``pcc.json``, ``pcc.csv``,
    ``pcc.md`` and ``pcc.png`` into ``config.out``. Returns the JSON result.

    ``train_fn(train_config, progress=False)`` defaults to :func:`capslab.train.train`.
    """
    out = Path(config.out)
    if train_fn is None:  # missing data would fail every network: find or download it first
        require_files(config.training.dataset, config.training.data_dir,
                      download=config.training.download)
    genotypes = config.genotypes()
    run_configs = [config.train_config(g, out / f"net_{i:03d}") for i, g in enumerate(genotypes)]
    write_json(out / "study.json", "pcc-study", {"config": config.to_dict(),
                                                 "genotypes": [g.exchange() for g in genotypes]})
    histories, failures = [], {}
    for i, run in enumerate(run_configs):
        failed = Path(run.out) / "failed.json"
        previous = read_json(failed, "pcc-failure")
        if previous is not None:
            failures[i], status, history = previous["reason"], "failed earlier", []
        else:
            outcome, reason = run_or_failure(run, train_fn, progress=False)
            if outcome is not None:
                history = outcome.summary["history"]
                status = "done earlier" if outcome.reused else "trained"
            else:
                failures[i], status, history = reason, "failed", []
                write_json(failed, "pcc-failure", {"reason": reason})
        histories.append(history)
        if on_network is not None:
            on_network(i, status)
    epochs = config.training.epochs
    acc, sec = histories_to_arrays(histories, epochs)
    rows = pcc_table(acc, sec)
    if config.report_epochs:
        rows = [r for r in rows if r["epoch"] in config.report_epochs]
    result = {
        "dataset": config.training.dataset,
        "networks": config.networks,
        "complete": int(acc.shape[0]),
        "failed": {str(k): v for k, v in failures.items()},
        "epochs": epochs,
    }
    write_table(rows, out / "pcc", "pcc", COLUMNS, markdown=markdown(rows, config.training.dataset),
                extra=result)
    if rows:
        _plot(rows, out / "pcc.png", config.training.dataset)
    return {**result, "rows": rows}


def markdown(rows: Sequence[dict[str, Any]], dataset: str) -> str:
    """Table 2 layout: one column per epoch, rows PCC and MCTT."""
    head = "| " + dataset + " | " + " | ".join(str(r["epoch"]) for r in rows) + " |"
    sep = "|---|" + "---:|" * len(rows)
    pcc = "| PCC | " + " | ".join("-" if math.isnan(r["pcc"]) else f"{r['pcc']:.4f}" for r in rows) + " |"
    mctt = "| MCTT [s] | " + " | ".join(f"{r['mctt_s']:.1f}" for r in rows) + " |"
    return "\n".join([head, sep, pcc, mctt]) + "\n"


def _plot(rows: Sequence[dict[str, Any]], path: Path, dataset: str) -> None:
    from matplotlib.ticker import MaxNLocator

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([r["epoch"] for r in rows], [r["pcc"] for r in rows], "o-")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    ax.set_xlabel("epochs of partial training")
    ax.set_ylabel("Pearson correlation with final accuracy")
    ax.set_title(f"{dataset}: partial vs final accuracy")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)
