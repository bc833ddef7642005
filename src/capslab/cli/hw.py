"""``capslab hw``: energy, latency and memory of a genotype on the CapsAcc (or another)
accelerator, with the per-layer breakdown."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import typer
from rich.table import Table

from capslab.cli.output import console, emit
from capslab.errors import ConfigError

PUBLISHED = ("capsnet", "deepcaps")


class _Model(StrEnum):
    capsnet = "capsnet"
    deepcaps = "deepcaps"


def hw(
    model: _Model | None = typer.Option(
        None, "--model", "-m", help="A published genotype: capsnet or deepcaps."
    ),
    genotype: Path | None = typer.Option(
        None,
        "--genotype",
        "-g",
        help="Genotype file (NASCaps list or capslab object; detected). Any buildable "
        "genotype, also outside the paper's search space.",
        dir_okay=False,
    ),
    accelerator: Path | None = typer.Option(
        None,
        "--accelerator",
        "-a",
        help="Accelerator JSON (keys of capslab.hw.Accelerator; missing ones keep CapsAcc's).",
        dir_okay=False,
    ),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON object instead of tables."),
    layers: bool = typer.Option(True, "--layers/--no-layers", help="Show the per-layer table."),
    training: bool = typer.Option(
        False, "--training",
        help="Also the training cost per image: activations saved for backward and FLOPs of a "
        "training step (traced on the meta device, no data).",
    ),
) -> None:
    """Estimate energy, latency and weight memory of one inference (NASCaps hardware model)."""
    # imported on use, so that the CLI starts without it
    from capslab.genotype import CAPSNET_GENOTYPE, DEEPCAPS_GENOTYPE, load_genotype
    from capslab.hw import CAPSACC, Accelerator, estimate

    if (model is None) == (genotype is None):
        raise ConfigError("give exactly one of --model (capsnet, deepcaps) or --genotype FILE")
    if genotype is not None:
        # buildable is enough (Genotype.validate): the search space's stricter rules would
        # refuse genotypes the NASCaps authors published
        g = load_genotype(genotype)
        source = str(genotype)
    else:
        g = CAPSNET_GENOTYPE if model == _Model.capsnet else DEEPCAPS_GENOTYPE
        source = f"published {model.value} genotype"
    acc = Accelerator.from_file(accelerator) if accelerator is not None else CAPSACC
    result = estimate(g, acc, check=False)
    cost = None
    if training:
        # imported on use, so that the CLI starts without it
        from capslab.training_cost import genotype_training_cost

        cost = genotype_training_cost(g)

    if as_json:
        extra = {} if cost is None else {"training": cost.to_dict()}
        emit({"source": source, **result.to_dict(layers=True), "genotype": g.exchange(), **extra},
             True)
        return

    console.print(f"[bold]{source}[/]: {g.describe()}", highlight=False)
    console.print(f"[dim]{acc.describe()}[/]", highlight=False)
    if layers:
        table = Table(title="Hardware layers")
        table.add_column("layer", no_wrap=True)
        table.add_column("kind", no_wrap=True)
        for col in ("weights", "cycles", "power mW", "energy mJ"):
            table.add_column(col, justify="right", no_wrap=True)
        for le in result.layers:
            table.add_row(
                le.name,
                le.kind,
                f"{le.weights:,}",
                f"{le.cycles:,}",
                f"{le.power_mW:,.1f}",
                f"{le.energy_mJ:.4g}",
            )
        console.print(table)
    totals = Table(title="Totals", show_header=True)
    totals.add_column("energy (mJ)", justify="right")
    totals.add_column("latency (ms)", justify="right")
    totals.add_column("memory (KiB)", justify="right")
    totals.add_column("memory (B)", justify="right")
    totals.add_column("cycles", justify="right")
    totals.add_row(
        f"{result.energy_mJ:.2f}",
        f"{result.latency_ms:.3f}",
        f"{result.memory_KiB:,.1f}",
        f"{result.memory_bytes:,}",
        f"{result.cycles:,}",
    )
    console.print(totals)
    if cost is not None:
        console.print(
            f"training, per image: {cost.activation_KiB:,.1f} KiB of activations saved for "
            f"backward, {cost.train_flops / 1e9:.3f} GFLOP a step "
            f"(forward {cost.forward_flops / 1e9:.3f})", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("hw")(hw)
