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
    bf16: Annotated[bool, typer.Option("--bf16", help="Also measure bf16 autocast (train --precision bf16).")] = False,
    model: Annotated[str, typer.Option(help="capsnet (with the PrimaryCaps ceiling) or efficient-capsnet (batch 64 too).")] = "capsnet",
    threads: Annotated[int | None, typer.Option(min=1, help="torch CPU threads [default: torch's].")] = None,
    isolate: Annotated[bool, typer.Option(
        "--isolate/--same-process",
        help="Each row in a worker process of its own, or every row in this one.")] = True,
    out: Annotated[Path | None, typer.Option(help="Folder for bench.json [default: runs/bench].")] = None,
    as_json: JsonFlag = False,
    quiet: Quiet = False,
) -> None:
    """Training and inference images/s at batch 1, 16 and 128 and peak training memory, for a
    plain eager CapsNet and CapsLab's side by side in one run, with the machine's conv-bound
    ceiling (the PrimaryCaps convolution alone); written to bench.json. Each row runs in a
    process of its own (--isolate), timed in alternating rounds with the others."""
    import torch

    # imported on use, so that the CLI starts without it
    from capslab.bench import (
        EFFICIENT_BATCH_SIZES,
        REPORT_KIND,
        bench_devices,
        default_variants,
        run_benchmark,
        write_results,
    )

    # imported on use, so that the CLI starts without it
    from capslab.results import read_json

    devices = bench_devices(device)
    if threads:
        torch.set_num_threads(threads)
    variants = default_variants(compile_=compile_, bf16=bf16, model=model)
    efficient = model == "efficient-capsnet"
    folder = out if out is not None else default_out("bench")
    written: list[Path] = []

    def keep(results, ceilings) -> None:  # each device's rows are on disk before the next runs
        written.append(write_results(results, folder, ceilings, isolated=isolate, complete=False,
                                     model=model))

    with progress_bar(not quiet, transient=True) as progress:
        # the variants are timed in alternating rounds: the bar moves when a device is done
        task = progress.add_task("measuring", total=len(devices) * (len(variants) + (not efficient)))
        try:
            results, ceilings = run_benchmark(
                devices, variants, steps, warmup,
                progress=lambda s: progress.update(task, description=f"measuring {s}"),
                on_result=lambda _: progress.advance(task),
                isolate=isolate, on_device=keep, ceiling=not efficient,
                batch_sizes=EFFICIENT_BATCH_SIZES if efficient else None,
            )
        except BaseException:
            if written:
                note(f"the devices measured before the failure are in {written[-1]}", as_json)
            raise
    path = write_results(results, folder, ceilings, isolated=isolate, model=model)
    emit(read_json(path, REPORT_KIND), as_json, render_bench)  # what bench.json holds
    note(f"written: {path}", as_json)


def render_bench(doc: dict) -> None:
    """Two tables (training, inference) from a ``capslab-bench`` document."""
    from rich.table import Table

    sizes = [str(b) for b in doc["batch_sizes"]]
    ceilings = {c["device"]: c for c in doc["ceilings"]}
    where = f"{doc['cpu']}, {doc['threads']} CPU threads, torch {doc['torch']}"
    gpus = [f"{d}: {name}" for d, name in doc.get("device_names", {}).items() if d.startswith("cuda")]
    if gpus:
        where += "; " + ", ".join(gpus)
    where += ", a process per row" if doc.get("isolated") else ", one process"
    name = {"capsnet": "CapsNet", "efficient-capsnet": "Efficient-CapsNet"}[doc.get("model", "capsnet")]
    train = Table(title=f"{name} training (MNIST shape), {where}")
    infer = Table(title=f"{name} inference")
    for table in (train, infer):
        table.add_column("variant")
        table.add_column("device")
        for b in sizes:
            table.add_column(f"img/s b{b}", justify="right")
    for b in sizes:
        train.add_column(f"x ref b{b}", justify="right")
    if ceilings:
        train.add_column(f"of ceiling b{sizes[-1]}", justify="right")
    train.add_column(f"peak MiB b{sizes[-1]}", justify="right")
    for dev, c in ceilings.items():
        train.add_row(f"ceiling: PrimaryCaps conv alone ({c['memory_format']})", dev,
                      *["" for _ in sizes[:-1]], f"{c['images_per_s']:.1f}",
                      *["" for _ in sizes], "1.00", "")
    for r in doc["results"]:
        of = ["" if r["of_ceiling"] is None else f"{r['of_ceiling']:.2f}"] if ceilings else []
        train.add_row(r["variant"], r["device"],
                      *[f"{r['train_images_per_s'][b]:.1f}" for b in sizes],
                      *[f"{r['speedup'][b]:.2f}x" for b in sizes], *of,
                      f"{r['peak_train_memory_MiB']:.0f}")
        infer.add_row(r["variant"], r["device"], *[f"{r['infer_images_per_s'][b]:.1f}" for b in sizes])
    console.print(train)
    console.print(infer)


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)
