"""``capslab memory``: peak memory and time of a training step against depth."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from capslab.cli.common import console, err_console


def register(app: typer.Typer) -> None:
    @app.command("memory")
    def memory(
        models: str = typer.Option(
            "capsnet,rescapsnet,mocapsnet", help="Comma-separated registered model names."
        ),
        blocks: str = typer.Option("1-8", help="Depths to measure, e.g. 1-8 or 1,2,4."),
        batch_size: int = typer.Option(32, "--batch-size", "-b", help="Images per step."),
        dataset_shape: str = typer.Option("1x28x28", help="Random image shape CxHxW."),
        num_classes: int = typer.Option(10, help="Class capsules."),
        routing: str = typer.Option("rba", help="Routing of every capsule layer: rba or sda."),
        gamma: float = typer.Option(0.9, help="Momentum of mocapsnet."),
        conv_channels: int = typer.Option(256, help="Channels of the first convolution."),
        primary_types: int = typer.Option(32, help="Primary capsule types."),
        model_opt: list[str] = typer.Option(
            [], "--model-opt",
            help="Further model option key=value (repeatable), e.g. block_dim=2 or decoder=false; "
            "each model gets the options it takes.",
        ),
        steps: int = typer.Option(3, help="Timed repetitions (median is reported)."),
        warmup: int = typer.Option(1, help="Untimed repetitions before timing."),
        device: str = typer.Option("auto", help="cpu, cuda or auto."),
        seed: int = typer.Option(0, help="Seed of the models and the random batch."),
        out: Path = typer.Option(
            Path("results/memory"), help="Folder for memory.json, memory.csv, memory.png."
        ),
        plot: bool = typer.Option(True, help="Write the PNG plot."),
        as_json: bool = typer.Option(False, "--json", help="Print the JSON report, no table."),
    ) -> None:
        """Measure peak memory, saved activations and seconds per step for each model and depth.

        Peak memory is torch.cuda.max_memory_allocated on CUDA; on the CPU it is the bytes of
        the live tensors at the start of the step plus the peak of the allocations the CPU
        allocator reports to torch.profiler during the step (not the RSS). Slopes per added
        block are fitted by least squares; capsnet (no blocks) is a flat reference line.
        """
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        from capslab.memory import (
            MemoryConfig,
            parse_blocks,
            parse_shape,
            plan,
            render_table,
            run_memory_study,
            write_report,
        )
        from capslab.train.policies import parse_policy_options

        try:
            extra = parse_policy_options(model_opt)
            config = MemoryConfig(
                models=tuple(m.strip() for m in models.split(",") if m.strip()),
                blocks=parse_blocks(blocks),
                batch_size=batch_size,
                dataset_shape=parse_shape(dataset_shape),
                num_classes=num_classes,
                routing=routing,
                gamma=gamma,
                model_options={"conv_channels": conv_channels, "primary_types": primary_types,
                               **extra},
                steps=steps,
                warmup=warmup,
                device=device,
                seed=seed,
            ).validate()
        except ValueError as e:
            err_console.print(f"[red]error:[/] {e}")
            raise typer.Exit(2) from None

        points = plan(config)
        with Progress(
            TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(), console=err_console, transient=as_json,
        ) as progress:
            task = progress.add_task("measuring", total=len(points))

            def on_point(m) -> None:
                depth = "" if m.blocks is None else f" x{m.blocks}"
                progress.update(task, advance=1,
                                description=f"{m.model}{depth}: {m.peak_mib:.1f} MiB")

            report = run_memory_study(config, on_point)
        paths = write_report(report, out, plot=plot)
        if as_json:
            typer.echo(json.dumps(report.to_dict(), indent=2, default=str))
        else:
            console.print(render_table(report))
            console.print("written: " + ", ".join(paths.values()))
