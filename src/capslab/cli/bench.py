"""``capslab bench``: CapsNet training/inference throughput and peak memory, as a table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from capslab.cli.common import console, friendly_errors, print_json


def register(app: typer.Typer) -> None:
    @app.command("bench")
    @friendly_errors
    def bench_cmd(
        steps: Annotated[int, typer.Option(min=1, help="Timed steps per measurement (median).")] = 5,
        warmup: Annotated[int, typer.Option(min=0)] = 1,
        device: Annotated[str, typer.Option(help="auto (CPU and the GPU when present), cpu or cuda.")] = "auto",
        compile_: Annotated[bool, typer.Option("--compile", help="Also measure torch.compile.")] = False,
        threads: Annotated[int | None, typer.Option(help="torch CPU threads.")] = None,
        out: Annotated[Path | None, typer.Option(help="Write the results as JSON here.")] = None,
        as_json: Annotated[bool, typer.Option("--json")] = False,
    ) -> None:
        """Images/s for training at batch 16 and 128, inference at 128, and peak training memory,
        for a plain eager CapsNet and CapsLab's, side by side in one run."""
        import torch

        from capslab.bench import default_variants, results_as_dicts, run_benchmark
        from capslab.io import atomic_write_json

        if threads:
            torch.set_num_threads(threads)
        if device == "auto":
            devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
        else:
            devices = [torch.device(device)]
        with console.status("measuring") as status:
            results = run_benchmark(devices, default_variants(compile_=compile_), steps, warmup,
                                    progress=lambda s: status.update(f"measuring {s}"))
        rows = results_as_dicts(results)
        if out is not None:
            atomic_write_json(out, {"threads": torch.get_num_threads(), "results": rows})
        if as_json:
            print_json(rows)
            return
        table = Table(title=f"CapsNet (MNIST shape), {torch.get_num_threads()} CPU threads")
        for col in ("variant", "device", "train img/s b16", "train img/s b128", "infer img/s b128",
                    "peak train MiB b128", "speed-up b128"):
            table.add_column(col, justify="left" if col in ("variant", "device") else "right")
        for r in results:
            table.add_row(r.variant, r.device, f"{r.train_images_per_s_b16:.1f}",
                          f"{r.train_images_per_s_b128:.1f}", f"{r.infer_images_per_s_b128:.1f}",
                          f"{r.peak_train_memory_MiB:.0f}", f"{r.speedup_vs_plain:.2f}x")
        console.print(table)
