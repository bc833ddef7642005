"""``capslab repro``: one command per headline result of the three papers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from capslab.cli import options as opt
from capslab.cli.output import console, emit, err_console, note, progress_bar
from capslab.errors import ConfigError


def _render_list(items: list[dict[str, str]]) -> None:
    from rich.table import Table

    # imported on use, so that the CLI starts without it
    from capslab.repro import SCALE_HELP

    table = Table(title="Reproductions (capslab repro NAME --scale S --out DIR)")
    table.add_column("name")
    table.add_column("reproduces")
    for item in items:
        table.add_row(item["name"], f"[bold]{item['title']}[/]\n{item['description']}")
    table.add_row("all", "every one of them, in this order")
    console.print(table)
    for scale, text in SCALE_HELP.items():
        console.print(f"  --scale {scale}: {text}", highlight=False)


def _render_results(results: dict[str, Any]) -> None:
    from rich.table import Table

    # imported on use, so that the CLI starts without it
    from capslab.repro.rows import format_value

    table = Table(title=f"Reproduction at the {results['scale']} scale")
    for col in ("experiment", "claim", "variant", "paper", "CapsLab", "verdict"):
        table.add_column(col, justify="right" if col in ("paper", "CapsLab") else "left")
    colors = {"reproduced": "green", "not reproduced": "red"}
    for r in results["rows"]:
        color = colors.get(r["verdict"], "yellow")
        table.add_row(r["experiment"], r["claim"], r["variant"], format_value(r["paper"], r["unit"]),
                      format_value(r["measured"], r["unit"]), f"[{color}]{r['verdict']}[/]")
    console.print(table)


def repro(
    name: Annotated[str | None, typer.Argument(help="capsnet, fastrcaps, mocaps, nascaps or all.")] = None,
    scale: Annotated[str | None, typer.Option(help="smoke (seconds), cpu (about an hour on 2 cores) or paper (the papers' settings).")] = None,
    out: Annotated[Path | None, typer.Option(help="Output folder; rerun the same command to resume [default: runs/repro-<scale>].")] = None,
    list_: Annotated[bool, typer.Option("--list", help="List the reproductions and the scales.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only measure this machine and print how long the run would take.")] = False,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:N or auto [default: cpu; at the paper scale auto, CUDA when present].")] = None,
    data_dir: opt.DataDir = None,
    quiet: opt.Quiet = False,
    as_json: opt.JsonFlag = False,
) -> None:
    """Reproduce a paper's headline results and write results.json and results.md.

    Every row holds the paper's number with its source, CapsLab's measured number, the
    settings and seeds, the reading used (capslab or the authors' code), how the scale differs
    from the paper's and the files the number was read from. Finished runs are reused, so the
    same command resumes. At the paper scale the expected duration on this machine is printed
    before anything trains.
    """
    # imported on use, so that the CLI starts without it
    from capslab.repro import (
        estimate_repro,
        estimate_text,
        list_experiments,
        run_repro,
    )

    # imported on use, so that the CLI starts without it
    from capslab.repro.common import check_scale

    if list_:
        emit(list_experiments(), as_json, _render_list)
        return
    if name is None:
        raise ConfigError("name a reproduction (capsnet, fastrcaps, mocaps, nascaps or all), "
                          "or list them with --list")
    if scale is None:
        raise ConfigError("choose a scale: smoke, cpu or paper")
    check_scale(scale)
    out = out if out is not None else opt.default_out(f"repro-{scale}")
    if dry_run:
        estimate = estimate_repro(name, scale, out, device=device, data_dir=data_dir)
        emit(estimate, as_json, lambda e: console.print(estimate_text(e), highlight=False))
        return
    command = f"capslab repro {name} --scale {scale} --out {out}"
    with progress_bar(not (quiet or as_json)) as progress:
        results = run_repro(
            name, scale, out, device=device, data_dir=data_dir, progress=progress,
            note=lambda text: err_console.print(text, highlight=False, markup=False),
            command=command,
        )
    emit(results, as_json, _render_results)
    note(f"tables: {out / 'results.md'}", as_json)


def register(app: typer.Typer) -> None:
    app.command("repro")(repro)
