"""``capslab bench``: CapsNet training/inference throughput and peak memory, as a table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from capslab.cli.options import JsonFlag, Quiet, default_out
from capslab.cli.output import console, emit, note, progress_bar


def bench(
    steps: Annotated[int, typer.Option(min=1, help="Timed steps per measurement (median).")] = 5,
    warmup: Annotated[int, typer.Option(min=0, help="Untimed steps before timing.")] = 1,
    device: Annotated[str, typer.Option(help="auto (the CPU and the GPU when present), cpu, cuda or cuda:N.")] = "auto",
    compile_: Annotated[bool, typer.Option("--compile", help="Also measure torch.compile.")] = False,
    threads: Annotated[int | None, typer.Option(min=1, help="torch CPU threads [default: torch's].")] = None,
    out: Annotated[Path | None, typer.Option(help="Folder for bench.json [default: runs/bench].")] = None,
    as_json: JsonFlag = False,
    quiet: Quiet = False,
) -> None:
    """Images/s for training at batch 16 and 128, inference at 128, and peak training memory,
    for a plain eager CapsNet and CapsLab's, side by side in one run; written to bench.json."""
    import torch

    from capslab.bench import (
        REPORT_KIND,
        bench_devices,
        default_variants,
        run_benchmark,
        write_results,
    )
    from capslab.experiments import read_json

    devices = bench_devices(device)
    if threads:
        torch.set_num_threads(threads)
    variants = default_variants(compile_=compile_)
    with progress_bar(not quiet, transient=True) as progress:
        task = progress.add_task("measuring", total=len(devices) * len(variants))
        results = run_benchmark(
            devices, variants, steps, warmup,
            progress=lambda s: progress.update(task, description=f"measuring {s}"),
            on_result=lambda _: progress.advance(task),
        )
    path = write_results(results, out if out is not None else default_out("bench"))

    def render(_) -> None:
        from rich.table import Table

        table = Table(title=f"CapsNet (MNIST shape), {torch.get_num_threads()} CPU threads")
        for col in ("variant", "device", "train img/s b16", "train img/s b128", "infer img/s b128",
                    "peak train MiB b128", "speed-up b128"):
            table.add_column(col, justify="left" if col in ("variant", "device") else "right")
        for r in results:
            table.add_row(r.variant, r.device, f"{r.train_images_per_s_b16:.1f}",
                          f"{r.train_images_per_s_b128:.1f}", f"{r.infer_images_per_s_b128:.1f}",
                          f"{r.peak_train_memory_MiB:.0f}", f"{r.speedup_vs_plain:.2f}x")
        console.print(table)

    emit(read_json(path, REPORT_KIND), as_json, render)  # what bench.json holds
    note(f"written: {path}", as_json)


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)
