"""``capslab schedule``: print (or plot) a learning-rate / batch-size schedule without training."""

from __future__ import annotations

import io
import json
from pathlib import Path

import typer
from rich.table import Table

from capslab.cli.common import console
from capslab.io import atomic_write_bytes
from capslab.train.policies import POLICIES, Schedule, build_schedule, parse_policy_options


def schedule_json(schedule: Schedule) -> dict:
    """``{"policy", "epochs", "train_size", "total_steps", "options", "steps": [...]}``; every
    step is ``{"epoch" (1-based), "step" (global, 0-based), "lr", "batch_size"}``."""
    d = schedule.to_dict()
    return {
        "policy": d["policy"],
        "epochs": d["epochs"],
        "train_size": d["train_size"],
        "total_steps": d["total_steps"],
        "options": d["options"],
        "steps": list(schedule.steps()),
    }


def plot_schedule(schedule: Schedule, path: str | Path) -> Path:
    """Save lr (left axis) and batch size (right axis) against the global step as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = list(schedule.steps())
    x = [s["step"] for s in steps]
    fig, ax = plt.subplots(figsize=(8, 4), dpi=120)
    ax.plot(x, [s["lr"] for s in steps], color="tab:blue", lw=1.2)
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("learning rate", color="tab:blue")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, -3))
    ax2 = ax.twinx()
    ax2.step(x, [s["batch_size"] for s in steps], where="post", color="tab:red", lw=1.0)
    ax2.set_ylabel("batch size", color="tab:red")
    sizes = [schedule.batch_size(e) for e in range(schedule.epochs)]
    if max(sizes) >= 4 * min(sizes):  # 1 -> 64 reads better on a log axis
        ax2.set_yscale("log", base=2)
    for e in range(1, schedule.epochs):
        ax.axvline(schedule.epoch_start(e), color="0.85", lw=0.6, zorder=0)
    ax.set_title(f"{schedule.policy}: {schedule.epochs} epochs, {schedule.train_size} images")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    path = Path(path)
    atomic_write_bytes(path, buf.getvalue())  # creates the folder; no half-written PNG
    return path


def schedule_table(schedule: Schedule, all_steps: bool = False) -> Table:
    """A rich table: the first and last step of every epoch, or every step with ``all_steps``."""
    table = Table(title=f"{schedule.policy} schedule ({schedule.total_steps} steps)")
    for name in ("epoch", "step", "step in epoch", "lr", "batch size"):
        table.add_column(name, justify="right")
    for e in range(schedule.epochs):
        n = schedule.steps_in_epoch(e)
        rows = range(n) if all_steps else sorted({0, n - 1})
        for s in rows:
            table.add_row(
                str(e + 1),
                str(schedule.global_step(e, s)),
                str(s),
                f"{schedule.lr(e, s):.4e}",
                str(schedule.batch_size(e)),
                end_section=s == n - 1 and not all_steps,
            )
    return table


def register(app: typer.Typer) -> None:
    @app.command("schedule")
    def schedule_cmd(
        policy: str = typer.Option(..., "--policy", "-p", help=f"One of: {', '.join(POLICIES)}."),
        epochs: int = typer.Option(..., "--epochs", "-e", min=1, help="Training epochs."),
        train_size: int = typer.Option(..., "--train-size", "-n", min=1, help="Training images."),
        batch_size: int = typer.Option(
            128, "--batch-size", "-b", min=1,
            help="Batch size of the constant-batch policies (adabatch policies: opt batch_sizes).",
        ),
        lr: float | None = typer.Option(
            None, "--lr", help="Main learning rate (lr, or lr_max of the cyclic policies)."
        ),
        opt: list[str] = typer.Option(
            [], "--opt", "--policy-opt", help="Policy option key=value (repeatable), e.g. batch_sizes=8,64."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print every step as JSON."),
        plot: Path | None = typer.Option(None, "--plot", help="Save lr and batch size vs step (PNG)."),
        all_steps: bool = typer.Option(False, "--all", help="Table of every step, not first/last."),
    ) -> None:
        """Print the learning rate and batch size of every optimiser step, without training.

        Epochs are 1-based in the output and the global step counts from 0.
        """
        try:
            if policy not in POLICIES:
                raise ValueError(f"unknown policy {policy!r}; choose one of {POLICIES}")
            options = parse_policy_options(opt, policy)
            sched = build_schedule(policy, epochs, train_size, batch_size, lr, **options)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
        if as_json:
            typer.echo(json.dumps(schedule_json(sched)))
        else:
            console.print(schedule_table(sched, all_steps))
            opts = ", ".join(f"{k}={v}" for k, v in sched.to_dict()["options"].items())
            console.print(f"[bold]{policy}[/]: {opts}; {sched.total_steps} optimiser steps")
        if plot is not None:
            out = plot_schedule(sched, plot)
            # keep --json output parseable: the note goes to stderr
            typer.echo(f"plot saved to {out}", err=as_json)
