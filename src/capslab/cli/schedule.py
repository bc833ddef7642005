"""``capslab schedule``: print (or plot) a learning-rate / batch-size schedule without training."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from capslab.cli import options as opt
from capslab.cli.output import console, emit, note
from capslab.results import pyplot, save_figure, versioned
from capslab.train.policies import POLICIES, Schedule, build_schedule


def schedule_json(schedule: Schedule) -> dict[str, Any]:
    """``{"format": "capslab-schedule", "version", "policy", "epochs", "train_size",
    "batch_size", "total_steps", "options", "steps": [...]}``; every step is ``{"epoch"
    (1-based), "step" (global, 0-based), "lr", "batch_size"}``."""
    return versioned("schedule", {**schedule.to_dict(), "steps": list(schedule.steps())})


def plot_schedule(schedule: Schedule, path: str | Path) -> Path:
    """Save lr (left axis) and batch size (right axis) against the global step as a PNG."""
    plt = pyplot()
    steps = list(schedule.steps())
    x = [s["step"] for s in steps]
    fig, ax = plt.subplots(figsize=(8, 4))
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
    return save_figure(fig, path, dpi=120)  # atomic: creates the folder, no half-written PNG


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


def render_schedule(schedule: Schedule, all_steps: bool = False) -> None:
    """The table and a line with the options and the number of steps, on the console."""
    console.print(schedule_table(schedule, all_steps))
    opts = ", ".join(f"{k}={v}" for k, v in schedule.to_dict()["options"].items())
    console.print(f"[bold]{schedule.policy}[/]: {escape(opts)}; {schedule.total_steps} optimiser steps")


def register(app: typer.Typer) -> None:
    @app.command("schedule")
    def schedule_cmd(
        policy: Annotated[str, typer.Option("--policy", "-p", help=f"One of: {', '.join(POLICIES)}.")],
        epochs: Annotated[int, typer.Option("--epochs", "-e", min=1, help="Training epochs.")],
        train_size: Annotated[int, typer.Option("--train-size", "-n", min=1, help="Training images.")],
        batch_size: Annotated[int, typer.Option(
            "--batch-size", "-b", min=1,
            help="Batch size of the constant-batch policies (adabatch policies: --policy-opt batch_sizes).",
        )] = 128,
        lr: Annotated[float | None, typer.Option(
            "--lr", help="Main learning rate (lr, or lr_max of the cyclic policies).",
        )] = None,
        policy_opt: opt.PolicyOpt = None,
        as_json: opt.JsonFlag = False,
        plot: Annotated[Path | None, typer.Option("--plot", help="Save lr and batch size vs step (PNG).")] = None,
        all_steps: Annotated[bool, typer.Option("--all", help="Table of every step, not first/last.")] = False,
        estimate: Annotated[bool, typer.Option(
            "--estimate", help="Measure this machine's training speed at the schedule's batch sizes "
            "and predict the whole run's wall-clock time.")] = False,
        model: Annotated[str, typer.Option(help="With --estimate: the model to time.")] = "capsnet",
        dataset: Annotated[str, typer.Option(help="With --estimate: the dataset's image shape and classes.")] = "mnist",
        test_size: Annotated[int, typer.Option(min=0, help="With --estimate: images evaluated after every epoch.")] = 10000,
        device: Annotated[str, typer.Option(help="With --estimate: cpu, cuda or cuda:N.")] = "cpu",
        model_opt: opt.ModelOpt = None,
    ) -> None:
        """Print the learning rate and batch size of every optimiser step, without training.

        Epochs are 1-based in the output and the global step counts from 0. With --estimate,
        predict how long the run takes on this machine instead (FasTrCaps' training time).
        """
        options = opt.parse_key_values(policy_opt, "policy option")
        sched = build_schedule(policy, epochs, train_size, batch_size, lr, options)
        if estimate:
            _estimate(sched, model, dataset, test_size, device, model_opt, as_json)
            return
        # the table needs no list of every step: build the JSON only when it is printed
        emit(schedule_json(sched) if as_json else sched, as_json, lambda s: render_schedule(s, all_steps))
        if plot is not None:
            note(f"plot saved to {escape(str(plot_schedule(sched, plot)))}", as_json)


def _estimate(sched: Schedule, model: str, dataset: str, test_size: int, device: str,
              model_opt: list[str] | None, as_json: bool) -> None:
    # imported on use, so that the CLI starts without it
    from capslab.cli.output import progress_bar
    from capslab.data import dataset_info
    from capslab.models import check_model_options
    from capslab.train.estimate import estimate_run

    options = {**dataset_info(dataset).model_options(),
               **opt.parse_key_values(model_opt, "model option")}
    check_model_options(model, options)
    with progress_bar(not as_json, transient=True) as progress:
        progress.add_task(f"measuring {model} at batch sizes "
                          f"{sorted({sched.batch_size(e) for e in range(sched.epochs)})}", total=None)
        result = estimate_run(sched, model, options, test_size, device=device)
    result = versioned("run-estimate", {**result, "dataset": dataset})
    emit(result, as_json, render_estimate)


def hms(seconds: float) -> str:
    """``3725.2 -> "1:02:05"``."""
    s = round(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def render_estimate(result: dict[str, Any]) -> None:
    """Per-epoch table and the total of a ``capslab-run-estimate`` document."""
    rates = ", ".join(f"b{b}: {r:.1f}" for b, r in result["train_images_per_s"].items())
    table = Table(title=f"{result['policy']}: {result['model']} on {result['dataset']}, "
                        f"{result['train_size']} training images, {result['test_size']} test images")
    for name in ("epoch", "batch size", "steps", "train", "eval", "elapsed"):
        table.add_column(name, justify="right")
    for e in result["epochs"]:
        table.add_row(str(e["epoch"]), str(e["batch_size"]), str(e["steps"]), hms(e["train_seconds"]),
                      hms(e["eval_seconds"]), hms(e["elapsed_seconds"]))
    console.print(table)
    console.print(f"measured on {escape(result['cpu'])} ({result['device']}): training img/s {rates}; "
                  f"evaluation {result['eval_images_per_s']:.1f} img/s")
    console.print(f"[bold]estimated run time: {hms(result['total_seconds'])}[/] "
                  "(checkpoints and data loading not counted)")
