"""``capslab study fastrcaps``: the FasTrCaps trade-off study (policies x model complexity)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from capslab.cli.common import console, err_console
from capslab.cli.groups import study_app


def _split(items: list[str] | None) -> list[str]:
    """Accept both ``--policies a,b`` and ``--policies a --policies b``."""
    return [x.strip() for item in items or [] for x in item.split(",") if x.strip()]


def register(app: typer.Typer) -> None:  # noqa: ARG001 - the command lives under `capslab study`
    @study_app.command("fastrcaps")
    def fastrcaps_cmd(
        dataset: Annotated[str, typer.Option(help="mnist or fashion-mnist (any registered dataset).")] = "mnist",
        subset: Annotated[int | None, typer.Option(help="Train on a stratified subset of N images.")] = None,
        test_subset: Annotated[int | None, typer.Option(help="Test on a stratified subset of M images.")] = None,
        epochs: Annotated[int, typer.Option(min=1, help="Epochs per run (paper: 30).")] = 30,
        repeats: Annotated[int, typer.Option(min=1, help="Runs per configuration (paper: 5).")] = 5,
        policies: Annotated[list[str] | None, typer.Option(help="Comma list or repeated; default: all six.")] = None,
        variants: Annotated[list[str] | None, typer.Option(help="baseline, ws (weight sharing + small decoder); default: both.")] = None,
        policy_opt: Annotated[list[str] | None, typer.Option("--policy-opt", help="key=value for every policy that has it, or policy:key=value (repeatable).")] = None,
        model_opt: Annotated[list[str] | None, typer.Option("--model-opt", help="CapsNet option key=value for every run, e.g. conv_channels=32 (repeatable).")] = None,
        batch_size: Annotated[int, typer.Option(min=1, help="Batch size of the constant-batch policies.")] = 128,
        lr: Annotated[float | None, typer.Option(help="Main learning rate of every policy; default: each policy's.")] = None,
        out: Annotated[Path, typer.Option(help="Study folder (runs, table, plots); reused to resume.")] = Path("runs/fastrcaps"),
        goal: Annotated[str, typer.Option(help="accuracy, time or params: which configuration to pick.")] = "accuracy",
        tolerance: Annotated[float | None, typer.Option(help="With goal time/params: stay within T percentage points of the best accuracy.")] = None,
        time_metric: Annotated[str, typer.Option(help="paper (epochs to best x s/epoch) or measured (seconds to best).")] = "paper",
        target: Annotated[float | None, typer.Option(help="Accuracy to reach, in %; default: the fixed-LR baseline's peak.")] = None,
        seed: int = 0,
        device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
        data_dir: Annotated[Path | None, typer.Option(help="Dataset folder (else $CAPSLAB_DATA, else the cache).")] = None,
        augment: Annotated[bool, typer.Option(help="Random shift by up to 2 pixels (training only).")] = True,
        keep_checkpoints: Annotated[bool, typer.Option(help="Keep last.pt/best.pt of finished runs.")] = False,
        run_plots: Annotated[bool, typer.Option(help="Curves and reconstructions PNG in every run folder.")] = True,
        quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
    ) -> None:
        """Train every policy on the baseline and the reduced CapsNet; table, Pareto set, plots.

        Finished runs are reused, so the same command resumes an interrupted study (and, once
        everything is trained, only rebuilds the table and picks a configuration for --goal).
        """
        from capslab.studies.fastrcaps import (
            StudyConfig,
            StudyError,
            run_study,
            split_policy_options,
        )
        from capslab.train.policies import POLICIES, parse_policy_options

        try:
            chosen = _split(policies) or list(POLICIES)
            study = StudyConfig(
                dataset=dataset, data_dir=str(data_dir) if data_dir else None, subset=subset,
                test_subset=test_subset, epochs=epochs, repeats=repeats, policies=tuple(chosen),
                variants=tuple(_split(variants) or ("baseline", "ws")),
                policy_options=split_policy_options(policy_opt, chosen),
                model_options=parse_policy_options(model_opt), batch_size=batch_size, lr=lr,
                seed=seed, device=device, out=str(out), augment=augment,
                target=None if target is None else target / 100, time_metric=time_metric,
                keep_checkpoints=keep_checkpoints, run_plots=run_plots,
            )
            result = run_study(study, goal=goal, tolerance=tolerance, progress=not quiet)
        except (StudyError, ValueError) as exc:
            err_console.print(f"[bold red]error:[/] {exc}")
            raise typer.Exit(2) from None

        table = Table(title=f"FasTrCaps study: {dataset}, {epochs} epochs, {repeats} run(s) each")
        cols = [("policy", "policy"), ("variant", "model"), ("best_acc_mean", "acc %"),
                ("best_acc_std", "std"), ("best_epoch", "best ep."), ("epochs_to_target", "ep. to target"),
                ("train_time_paper_s", "time s"), ("seconds_to_target", "s to target"),
                ("parameters", "params"), ("pareto", "Pareto")]
        for _, name in cols:
            table.add_column(name, justify="right")
        for r in result.rows:
            cells = []
            for key, _ in cols:
                v = r[key]
                if v is None:
                    cells.append("-")
                elif isinstance(v, bool):
                    cells.append("[green]yes[/]" if v else "")
                elif isinstance(v, float):
                    cells.append(f"{v:.2f}" if key.startswith("best_acc") else f"{v:.1f}")
                elif key == "parameters":
                    cells.append(f"{v:,}")
                else:
                    cells.append(str(v))
            table.add_row(*cells)
        console.print(table)
        if result.target is not None:
            console.print(f"target accuracy: {100 * result.target:.2f} % (fixed-LR baseline's peak unless --target)")
        c = result.choice
        within = f" within {tolerance} points of the best accuracy" if tolerance is not None and goal != "accuracy" else ""
        console.print(
            f"[bold]goal {goal}{within}:[/] [bold green]{c['policy']} / {c['variant']}[/] - "
            f"{c['best_acc_mean']:.2f} % at epoch {c['best_epoch']}, "
            f"{c['train_time_paper_s']:.1f} s training time, {c['parameters']:,} parameters"
        )
        console.print(f"trained {result.trained} run(s), reused {result.reused}; files: "
                      + ", ".join(result.files.values()))
