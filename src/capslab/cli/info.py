"""``capslab info``: parameters and output shapes per layer of any model, genotype or
checkpoint (with the checkpoint's training metadata)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from capslab.cli import options as opt
from capslab.cli.output import console, emit
from capslab.cli.train import model_options_from_flags
from capslab.errors import ConfigError

# options that choose or shape the network: --checkpoint already fixes all of them
_MODEL_FLAGS = ("model", "dataset", "weight_sharing", "small_decoder", "routing", "blocks", "gamma",
                "genotype", "model_opt", "list_")


def dataset_for_genotype(path: Path) -> str:
    """The first dataset whose channels and image size match the genotype's native input."""
    # imported on use, so that the CLI starts without it
    from capslab.data import dataset_info, list_datasets
    from capslab.genotype import load_genotype

    g = load_genotype(path)
    shape = (g.in_channels, g.input_size // g.resize)
    for name in list_datasets():
        info = dataset_info(name)
        if (info.channels, info.image_size) == shape:
            return name
    return "mnist"


def register(app: typer.Typer) -> None:
    @app.command("info")
    def info_cmd(
        ctx: typer.Context,
        model: Annotated[str, typer.Option(help="Registered model name.")] = "capsnet",
        dataset: Annotated[str | None, typer.Option(help="Dataset whose image shape and classes to use (default: mnist, or for --genotype the dataset of its input shape).")] = None,
        weight_sharing: bool = False,
        small_decoder: bool = False,
        routing: str | None = None,
        blocks: int | None = None,
        gamma: float | None = None,
        genotype: Annotated[Path | None, typer.Option(help="Describe the network of a genotype file.")] = None,
        model_opt: opt.ModelOpt = None,
        list_: Annotated[bool, typer.Option("--list", help="List the registered models.")] = False,
        checkpoint: Annotated[Path | None, typer.Option(help="Describe the trained network of a checkpoint and its training (epoch, accuracy, dataset, settings).")] = None,
        as_json: opt.JsonFlag = False,
    ) -> None:
        """Print parameters (per layer and in total) and output shapes of a model or checkpoint."""
        # imported on use, so that the CLI starts without it
        from capslab.data import dataset_info
        from capslab.models import create_model, list_models
        from capslab.models.summary import describe_layers

        if checkpoint is not None:
            given = [k for k in _MODEL_FLAGS if ctx.get_parameter_source(k).name != "DEFAULT"]
            if given:
                flags = ", ".join("--" + k.rstrip("_").replace("_", "-") for k in given)
                raise ConfigError(f"--checkpoint describes the checkpoint's own network; drop {flags}")
            emit(describe_checkpoint(checkpoint), as_json, _render)
            return
        if list_:
            emit(list_models(), as_json, lambda names: console.print("\n".join(names), highlight=False))
            return
        if dataset is None:
            dataset = dataset_for_genotype(genotype) if genotype is not None else "mnist"
        options = model_options_from_flags(weight_sharing, small_decoder, routing, blocks, gamma, genotype, model_opt, dataset)
        name = "genotype" if genotype is not None else model
        info = dataset_info(dataset)
        defaults = {"in_channels": info.channels, "image_size": info.image_size, "num_classes": info.num_classes}
        net = create_model(name, **{**defaults, **options})
        rows = describe_layers(net, tuple(net.image_shape))
        total = sum(p.numel() for p in net.parameters())
        result = {"model": name, "dataset": dataset, "input_shape": list(net.image_shape),
                  "options": options, "layers": rows, "parameters": total}
        emit(result, as_json, _render)


def describe_checkpoint(path: Path) -> dict:
    """The layers of a checkpoint's network and the checkpoint's metadata."""
    # imported on use, so that the CLI starts without it
    from capslab.models.pretrained import load_model
    from capslab.models.summary import describe_layers

    net = load_model(path)
    cfg = net.pretrained_cfg
    settings = cfg["settings"]
    return {
        "model": cfg["model_name"], "dataset": cfg["dataset"], "input_shape": cfg["input_shape"],
        "options": cfg["model_options"],
        "layers": describe_layers(net, tuple(net.image_shape)),
        "parameters": sum(p.numel() for p in net.parameters()),
        "checkpoint": {
            "path": str(path), "epoch": cfg["epoch"], "test_accuracy": cfg["test_accuracy"],
            "best_epoch": cfg["best_epoch"], "best_accuracy": cfg["best_accuracy"],
            "classes": cfg["classes"], "settings": {k: settings[k] for k in _SHOWN if k in settings},
        },
    }


# training settings worth seeing next to a trained network (the rest is in the run's config.json)
_SHOWN = ("dataset", "epochs", "batch_size", "lr", "policy", "optimizer", "subset", "seed",
          "augment", "precision")


def _render(result: dict) -> None:
    table = Table(title=f"{result['model']} on {result['dataset']} {tuple(result['input_shape'])}")
    table.add_column("layer")
    table.add_column("type")
    table.add_column("output shape")
    table.add_column("parameters", justify="right")
    for r in result["layers"]:
        table.add_row(r["name"], r["type"], str(r["output_shape"]), f"{r['parameters']:,}")
    table.add_section()
    table.add_row("total", "", "", f"{result['parameters']:,}")
    console.print(table)
    ckpt = result.get("checkpoint")
    if ckpt is not None:
        console.print(f"checkpoint {ckpt['path']}: epoch {ckpt['epoch']}, "
                      f"test accuracy {_percent(ckpt['test_accuracy'])} "
                      f"(best {_percent(ckpt['best_accuracy'])} at epoch {ckpt['best_epoch']})",
                      highlight=False)
        console.print("settings: " + ", ".join(f"{k}={v}" for k, v in ckpt["settings"].items()),
                      highlight=False)


def _percent(fraction: float | None) -> str:
    return "n/a" if fraction is None else f"{100 * fraction:.2f}%"
