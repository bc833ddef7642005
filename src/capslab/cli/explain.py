"""``capslab explain CHECKPOINT``: what the capsules learned, for a few test images: Sabour et
al.'s dimension sweeps through the decoder and the coupling coefficients of the class layer's
routing, as PNGs, one HTML page and a JSON file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from capslab.cli import options as opt
from capslab.cli.output import console, emit, note
from capslab.errors import ConfigError


def register(app: typer.Typer) -> None:
    @app.command("explain")
    def explain_cmd(
        checkpoint: Annotated[Path, typer.Argument(help="A last.pt or best.pt written by `capslab train`.")],
        images: Annotated[int | None, typer.Option(min=1, help="How many test images: the first of every class, then the second, ... (default: one per class).")] = None,
        indices: Annotated[str | None, typer.Option(help="Test images to explain instead, by index in the test split: e.g. 0,7,42 or 0-9.")] = None,
        capsule: Annotated[str, typer.Option(help="Sweep the capsule of the predicted or of the true class.")] = "predicted",
        max_offset: Annotated[float, typer.Option(help="Sweep each dimension from -X to +X (added to its value).")] = 0.25,
        step: Annotated[float, typer.Option(help="Step of the sweep.")] = 0.05,
        sweep: Annotated[bool, typer.Option("--sweep/--no-sweep", help="Draw the dimension sweeps (needs a decoder); --no-sweep: the routing only.")] = True,
        dataset: Annotated[str | None, typer.Option(help="Dataset whose test images to use; default: the one it was trained on.")] = None,
        data_dir: opt.DataDir = None,
        device: opt.Device = "cpu",
        out: Annotated[Path | None, typer.Option(help="Folder for the PNGs, explain.html and explain.json (default: explain-NAME beside the checkpoint).")] = None,
        as_json: opt.JsonFlag = False,
    ) -> None:
        """Show what the capsules learned: each dimension of a class capsule swept through the
        decoder (Sabour et al.'s figure) and the routing's coupling coefficients, for a few test
        images. Writes PNGs, an HTML page and explain.json."""
        # imported on use, so that the CLI starts without it
        from capslab.explain import (
            default_out,
            explain_checkpoint,
            sweep_offsets,
            write_explanation,
        )

        chosen = None
        if indices is not None:
            # in the order given (a range counts up), each once
            chosen = list(dict.fromkeys(i for part in opt.split_list(indices)
                                        for i in opt.parse_int_list(part, "--indices")))
            if images is not None:
                raise ConfigError("give --images or --indices, not both")
        ex = explain_checkpoint(checkpoint, images=images, indices=chosen, dataset=dataset,
                                data_dir=data_dir, capsule=capsule,
                                offsets=sweep_offsets(max_offset, step), sweep=sweep, device=device)
        folder = out if out is not None else default_out(checkpoint)
        files = write_explanation(ex, folder)
        lengths, predictions = ex.lengths.cpu(), ex.predictions.cpu()
        result = {
            "checkpoint": str(checkpoint), "out": str(folder), "html": str(files["html"]),
            "json": str(files["json"]), "sweeps": [str(p) for p in files["sweeps"]],
            "routing": [str(p) for p in files["routing"]], "capsule": capsule,
            "routing_kind": ex.routing.routing, "max_deviation": ex.routing.deviation,
            "images": [
                {"index": index, "label": None if ex.labels is None else int(ex.labels[n]),
                 "prediction": int(predictions[n]), "explained_class": int(ex.explained[n]),
                 "length": float(lengths[n, int(ex.explained[n])])}
                for n, index in enumerate(ex.indices)
            ],
        }
        emit(result, as_json, lambda r: _render(r, ex.classes))
        note(f"wrote {files['html']}, {files['json']} and {len(files['sweeps']) + len(files['routing'])} PNGs",
             as_json)


def _render(result: dict[str, Any], classes: list[str]) -> None:
    table = Table(title=f"{result['checkpoint']}: {result['routing_kind']} routing")
    for name in ("test image", "true", "predicted", f"{result['capsule']} capsule length"):
        table.add_column(name, justify="right")
    for item in result["images"]:
        true = "-" if item["label"] is None else classes[item["label"]]
        table.add_row(str(item["index"]), true, classes[item["prediction"]], f"{item['length']:.3f}")
    console.print(table)
