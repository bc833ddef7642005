"""How many epochs of partial training predict the final accuracy? (NASCaps Table 2.)

Train K random networks of the search space for E epochs, record the test accuracy after every
epoch (each run's ``metrics.jsonl``), and report for each n the Pearson correlation between the
accuracy after n epochs and the final accuracy (after E epochs), with the median cumulative
training time of n epochs. The study is resumable: finished networks are not retrained and an
interrupted one continues from its last checkpoint.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from capslab.genotype import Genotype
from capslab.io import atomic_write_json, atomic_write_text
from capslab.nas.space import SearchSpace, sample


# ---------------------------------------------------------------------- maths (pure)
def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson correlation of two equally long samples; NaN when either is constant or n < 2."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"pearson needs two 1-D samples of equal length, got {x.shape} and {y.shape}")
    if len(x) < 2:
        return float("nan")
    dx, dy = x - x.mean(), y - y.mean()
    denom = math.sqrt(float(dx @ dx) * float(dy @ dy))
    if denom == 0.0:
        return float("nan")
    return float(np.clip((dx @ dy) / denom, -1.0, 1.0))


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
    histories shorter than ``epochs`` (failed or unfinished runs) are left out."""
    full = [h for h in histories if len(h) >= epochs]
    acc = np.array([[r["test_accuracy"] for r in h[:epochs]] for h in full], dtype=float)
    sec = np.array([[r["epoch_seconds"] for r in h[:epochs]] for h in full], dtype=float)
    return acc.reshape(len(full), epochs), sec.reshape(len(full), epochs)


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The per-epoch records of a run's ``metrics.jsonl`` (empty if it does not exist)."""
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ---------------------------------------------------------------------- the study
@dataclass
class PCCConfig:
    dataset: str = "mnist"
    networks: int = 66
    epochs: int = 10
    subset: int | None = None
    test_subset: int | None = None
    batch_size: int = 128
    lr: float | None = None
    policy: str = "fixed"
    seed: int = 0
    device: str = "auto"
    data_dir: str | None = None
    out: str = "runs/pcc"
    space: dict[str, Any] = field(default_factory=dict)
    report_epochs: tuple[int, ...] = ()  # epochs to show in the table; default: all

    def __post_init__(self) -> None:
        if self.networks < 2:
            raise ValueError(f"networks must be >= 2 for a correlation, got {self.networks}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        bad = [n for n in self.report_epochs if not 1 <= n <= self.epochs]
        if bad:
            raise ValueError(f"report epochs {bad} are outside 1..{self.epochs}")
        self.report_epochs = tuple(self.report_epochs)

    def build_space(self) -> SearchSpace:
        return SearchSpace.for_dataset(self.dataset, **self.space)

    def genotypes(self) -> list[Genotype]:
        """The K random networks (fixed by the seed, so a resumed study trains the same ones)."""
        rng = np.random.default_rng(self.seed)
        space = self.build_space()
        return [sample(space, rng) for _ in range(self.networks)]


def _default_train(config: PCCConfig, genotype: Genotype, run_dir: Path) -> None:
    from capslab.train import TrainConfig, train

    train(
        TrainConfig(
            model="genotype", model_options={"genotype": genotype.to_nascaps()},
            dataset=config.dataset, data_dir=config.data_dir, epochs=config.epochs,
            batch_size=config.batch_size, lr=config.lr, policy=config.policy,
            subset=config.subset, test_subset=config.test_subset, seed=config.seed,
            device=config.device, out=str(run_dir), resume=True, plots=False,
        ),
        progress=False,
    )


def run_pcc_study(
    config: PCCConfig,
    train_fn: Callable[[PCCConfig, Genotype, Path], None] | None = None,
    on_network: Callable[[int, str], None] | None = None,
) -> dict[str, Any]:
    """Train the networks that are not finished yet, then write ``pcc.json``, ``pcc.csv``,
    ``pcc.md`` and ``pcc.png`` into ``config.out``. Returns the JSON result."""
    train_fn = train_fn or _default_train
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    genotypes = config.genotypes()
    atomic_write_json(out / "study.json", {"config": asdict(config),
                                            "genotypes": [g.to_nascaps() for g in genotypes]})
    histories, failures = [], {}
    for i, g in enumerate(genotypes):
        run_dir = out / f"net_{i:03d}"
        failed = run_dir / "failed.json"
        history = read_metrics(run_dir / "metrics.jsonl")
        if len(history) < config.epochs and not failed.exists():
            try:
                train_fn(config, g, run_dir)
                status = "trained"
            except Exception as exc:  # an untrainable network is reported, not fatal
                atomic_write_json(failed, {"reason": f"{type(exc).__name__}: {exc}"})
                status = "failed"
            history = read_metrics(run_dir / "metrics.jsonl")
        else:
            status = "failed earlier" if failed.exists() else "done earlier"
        if failed.exists():
            failures[i] = json.loads(failed.read_text())["reason"]
        histories.append(history)
        if on_network is not None:
            on_network(i, status)
    acc, sec = histories_to_arrays(histories, config.epochs)
    rows = pcc_table(acc, sec)
    if config.report_epochs:
        rows = [r for r in rows if r["epoch"] in config.report_epochs]
    result = {
        "dataset": config.dataset,
        "networks": config.networks,
        "complete": int(acc.shape[0]),
        "failed": {str(k): v for k, v in failures.items()},
        "epochs": config.epochs,
        "rows": rows,
    }
    atomic_write_json(out / "pcc.json", result)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["epoch", "pcc", "mctt_s", "networks"])
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "pcc.csv", buf.getvalue())
    atomic_write_text(out / "pcc.md", markdown(rows, config.dataset))
    if rows:
        _plot(rows, out / "pcc.png", config.dataset)
    return result


def markdown(rows: Sequence[dict[str, Any]], dataset: str) -> str:
    """Table 2 layout: one column per epoch, rows PCC and MCTT."""
    head = "| " + dataset + " | " + " | ".join(str(r["epoch"]) for r in rows) + " |"
    sep = "|---|" + "---:|" * len(rows)
    pcc = "| PCC | " + " | ".join("-" if math.isnan(r["pcc"]) else f"{r['pcc']:.4f}" for r in rows) + " |"
    mctt = "| MCTT [s] | " + " | ".join(f"{r['mctt_s']:.1f}" for r in rows) + " |"
    return "\n".join([head, sep, pcc, mctt]) + "\n"


def _plot(rows: Sequence[dict[str, Any]], path: Path, dataset: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([r["epoch"] for r in rows], [r["pcc"] for r in rows], "o-")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    ax.set_xlabel("epochs of partial training")
    ax.set_ylabel("Pearson correlation with final accuracy")
    ax.set_title(f"{dataset}: partial vs final accuracy")
    ax.grid(alpha=0.3)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.tight_layout()
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
