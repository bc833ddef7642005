"""``capslab study pcc``: does the accuracy after n epochs predict the final one? (NASCaps Table 2)"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from capslab.cli.common import console, friendly_errors
from capslab.cli.groups import study_app


def register(app: typer.Typer) -> None:  # noqa: ARG001 - the command lives under `capslab study`
    @study_app.command("pcc")
    @friendly_errors
    def pcc_cmd(
        dataset: Annotated[str, typer.Option(help="Dataset (mnist, fashion-mnist, svhn, cifar10, ...).")] = "mnist",
        networks: Annotated[int, typer.Option(min=2, help="Random networks to train (paper: 66).")] = 66,
        epochs: Annotated[int, typer.Option(min=1, help="Epochs of the full training; the last one is 'final'.")] = 10,
        subset: Annotated[int | None, typer.Option(help="Train on a stratified subset of N images.")] = None,
        test_subset: Annotated[int | None, typer.Option(help="Test on a stratified subset of M images.")] = None,
        out: Annotated[Path, typer.Option(help="Study folder; rerun the same command to resume.")] = Path("runs/pcc"),
        batch_size: Annotated[int, typer.Option(min=1, help="Batch size.")] = 128,
        lr: Annotated[float | None, typer.Option(help="Learning rate (default: the policy's).")] = None,
        policy: Annotated[str, typer.Option(help="Training policy.")] = "fixed",
        report_epochs: Annotated[str | None, typer.Option(help="Epochs to report, e.g. 1,3,5,10 (default: all).")] = None,
        space: Annotated[list[str] | None, typer.Option("--space", help="Search-space field key=value (repeatable).")] = None,
        seed: Annotated[int, typer.Option(help="Seed of the random networks and their training.")] = 0,
        device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
        data_dir: Annotated[Path | None, typer.Option(help="Dataset folder.")] = None,
        quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
    ) -> None:
        """Train K random networks, correlate accuracy after n epochs with the final accuracy
        (Pearson) and report the median cumulative training time: pcc.json/.csv/.md/.png."""
        from capslab.cli.search import _space_overrides
        from capslab.nas.pcc import PCCConfig, markdown, run_pcc_study

        config = PCCConfig(
            dataset=dataset, networks=networks, epochs=epochs, subset=subset,
            test_subset=test_subset, batch_size=batch_size, lr=lr, policy=policy, seed=seed,
            device=device, data_dir=str(data_dir) if data_dir else None, out=str(out),
            space=_space_overrides(space, None),
            report_epochs=tuple(int(x) for x in report_epochs.split(",")) if report_epochs else (),
        )
        if quiet:
            result = run_pcc_study(config)
        else:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                          TimeElapsedColumn(), console=console) as bar:
                task = bar.add_task("networks", total=networks)

                def done(i: int, status: str) -> None:
                    bar.advance(task)
                    if status != "done earlier":
                        bar.console.print(f"network {i}: {status}")

                result = run_pcc_study(config, on_network=done)
        table = Table(title=f"PCC of partial vs final accuracy: {dataset}, {result['complete']} networks")
        table.add_column("epochs", justify="right")
        table.add_column("PCC", justify="right")
        table.add_column("median cumulative time (s)", justify="right")
        for r in result["rows"]:
            table.add_row(str(r["epoch"]), f"{r['pcc']:.4f}", f"{r['mctt_s']:.1f}")
        console.print(table)
        if result["failed"]:
            console.print(f"{len(result['failed'])} network(s) failed; see */failed.json in {out}")
        console.print(markdown(result["rows"], dataset), markup=False, highlight=False)
        console.print(f"results: {out / 'pcc.json'}, {out / 'pcc.csv'}, {out / 'pcc.md'}, {out / 'pcc.png'}")
