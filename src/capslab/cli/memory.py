"""``capslab memory``: peak memory and time of a training step against depth."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from capslab.cli.options import (
    Device,
    JsonFlag,
    ModelOpt,
    Quiet,
    Seed,
    default_out,
    parse_int_list,
    parse_key_values,
    parse_shape,
    split_list,
)
from capslab.cli.output import console, emit, note, progress_bar


def memory(
    models: Annotated[str, typer.Option(help="Registered model names, comma-separated.")] = "capsnet,rescapsnet,mocapsnet",
    blocks: Annotated[str, typer.Option(help="Depths of the block models, e.g. 1-8 or 1,2,4.")] = "1-8",
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", help="Images per step.")] = 32,
    dataset_shape: Annotated[str, typer.Option(help="Random image shape CxHxW (square).")] = "1x28x28",
    num_classes: Annotated[int, typer.Option(help="Class capsules.")] = 10,
    routing: Annotated[str, typer.Option(help="Routing of every capsule layer: rba or sda.")] = "rba",
    gamma: Annotated[float, typer.Option(help="Momentum of mocapsnet.")] = 0.9,
    model_opt: ModelOpt = None,
    steps: Annotated[int, typer.Option(help="Timed repetitions (the median is reported).")] = 3,
    warmup: Annotated[int, typer.Option(help="Untimed repetitions before timing.")] = 1,
    device: Device = "auto",
    seed: Seed = 0,
    out: Annotated[Path | None, typer.Option(help="Folder for memory.json, memory.csv, memory.png [default: runs/memory].")] = None,
    plot: Annotated[bool, typer.Option(help="Write the PNG plot.")] = True,
    as_json: JsonFlag = False,
    quiet: Quiet = False,
) -> None:
    """Measure peak memory, saved activations and seconds per step for each model and depth.

    Peak memory is torch.cuda.max_memory_allocated on CUDA; on the CPU it is the bytes of the
    live tensors at the start of the step plus the peak of the allocations the CPU allocator
    reports to torch.profiler during the step (not the RSS). Slopes per added block are fitted
    by least squares; capsnet (no blocks) is a flat reference line. Each model gets the
    --model-opt options it takes (e.g. conv_channels=32, block_dim=2, decoder=false).
    """
    # imported on use, so that the CLI starts without it
    from capslab.memory import (
        REPORT_KIND,
        MemoryConfig,
        plan,
        render_table,
        run_memory_study,
        write_report,
    )

    # imported on use, so that the CLI starts without it
    from capslab.results import read_json

    config = MemoryConfig(
        models=tuple(split_list(models)),
        blocks=parse_int_list(blocks, "blocks"),
        batch_size=batch_size,
        dataset_shape=parse_shape(dataset_shape, "dataset_shape"),
        num_classes=num_classes,
        routing=routing,
        gamma=gamma,
        model_options=parse_key_values(model_opt, "model option"),
        steps=steps,
        warmup=warmup,
        device=device,
        seed=seed,
    )
    config.resolved_device()  # CUDA asked for but absent: refused before any work
    with progress_bar(not quiet, transient=True) as progress:
        task = progress.add_task("measuring", total=len(plan(config)))

        def on_point(m) -> None:
            depth = "" if m.blocks is None else f" x{m.blocks}"
            progress.update(task, advance=1, description=f"{m.model}{depth}: {m.peak_mib:.1f} MiB")

        report = run_memory_study(config, on_point)
    paths = write_report(report, out if out is not None else default_out("memory"), plot=plot)
    emit(read_json(paths["json"], REPORT_KIND), as_json, lambda _: console.print(render_table(report)))
    note("written: " + ", ".join(str(p) for p in paths.values()), as_json)


def register(app: typer.Typer) -> None:
    app.command("memory")(memory)
