"""``capslab train`` and ``capslab eval``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from capslab.cli import options as opt
from capslab.cli.output import console, emit, err_console, note
from capslab.errors import ConfigError


def model_options_from_flags(
    weight_sharing: bool = False,
    small_decoder: bool = False,
    routing: str | None = None,
    blocks: int | None = None,
    gamma: float | None = None,
    genotype: Path | None = None,
    model_opt: list[str] | None = None,
    dataset: str | None = None,
) -> dict[str, Any]:
    """Map the convenience flags onto model factory options (only the ones given).

    A genotype written for another input shape than ``dataset``'s is still built (its spatial
    sizes are recomputed from the real input), but the user is told.
    """
    options = {
        "weight_sharing": weight_sharing or None,
        "small_decoder": small_decoder or None,
        "routing": routing,
        "num_blocks": blocks,
        "gamma": gamma,
    }
    options = {k: v for k, v in options.items() if v is not None}
    if genotype is not None:
        # imported on use, so that the CLI starts without it
        from capslab.genotype import load_genotype

        g = load_genotype(genotype)
        options["genotype"] = g.exchange()
        if dataset is not None:
            warn_genotype_mismatch(g, dataset, genotype)
    options.update(opt.parse_key_values(model_opt, "model option"))
    return options


def warn_genotype_mismatch(g, dataset: str, source: Path) -> None:
    """Warn when a genotype's input (channels, native size) differs from the dataset's."""
    # imported on use, so that the CLI starts without it
    from capslab.data import dataset_info

    info = dataset_info(dataset)
    size = g.input_size // g.resize
    if (g.in_channels, size) != (info.channels, info.image_size):
        err_console.print(
            f"[yellow]warning:[/] {source} was written for {g.in_channels}x{size}x{size} input; "
            f"building it for {dataset}'s {info.channels}x{info.image_size}x{info.image_size} "
            "(spatial sizes recomputed from the real input)"
        )


# TrainConfig keys that several command-line options feed
_OPTION_SOURCES = {
    "model_options": {"weight_sharing", "small_decoder", "routing", "blocks", "gamma", "genotype", "model_opt"},
    "policy_options": {"policy_opt"},
    "compile": {"compile_"},
    "model": {"model", "genotype"},
}


def merge_config_file(path: Path, values: dict, given: set[str]) -> dict:
    """TrainConfig keys from a JSON file, overridden by the options given on the command line.

    ``values`` are the command line's config values (defaults included), ``given`` the names of
    the options the user actually typed. Model options merge key by key.
    """
    try:
        base = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"config file {path} cannot be read as JSON: {exc}") from exc
    if not isinstance(base, dict):
        raise ConfigError(f"config file {path} must hold a JSON object of training settings")
    base.pop("format", None), base.pop("version", None)  # a run's config.json can be reused
    merged = dict(base)
    for key, value in values.items():
        typed = bool(_OPTION_SOURCES.get(key, {key}) & given)
        if key == "model_options" and typed:
            merged[key] = {**base.get(key, {}), **value}
        elif typed or key not in base:
            merged[key] = value
    return merged


def _print_summary(summary: dict[str, Any]) -> None:
    split = summary.get("evaluated_on", "test")
    console.print(
        f"[bold green]done[/]: best {'validation' if split == 'val' else 'test'} accuracy "
        f"{100 * summary[f'best_{split}_accuracy']:.2f}% "
        f"at epoch {summary['best_epoch']} in {summary['total_seconds']:.1f} s "
        f"({summary['parameters']:,} parameters)"
    )
    quantized = summary.get(f"best_{split}_quantized_accuracy")
    if quantized is not None:
        console.print(f"quantized ({summary['quantized_weight_bits']} bits): best "
                      f"{100 * quantized:.2f}%")


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train_cmd(
        ctx: typer.Context,
        model: Annotated[str, typer.Option(help="Registered model name (see `capslab info --list`).")] = "capsnet",
        dataset: Annotated[str, typer.Option(help=opt.DATASET_HELP)] = "mnist",
        resize: opt.Resize = None,
        epochs: Annotated[int, typer.Option(min=1)] = 10,
        batch_size: opt.BatchSize = 128,
        lr: opt.LearningRate = None,
        policy: opt.Policy = "fixed",
        policy_opt: opt.PolicyOpt = None,
        optimizer: opt.Optimizer = "adam",
        out: Annotated[Path, typer.Option(help="Run folder for metrics, checkpoints and plots.")] = opt.default_out("train"),
        subset: opt.Subset = None,
        test_subset: opt.TestSubset = None,
        val_size: Annotated[int | None, typer.Option(
            min=1, help="Hold out this many training images (stratified, by the seed) as a "
            "validation split; epochs are then evaluated and the best chosen on it, not on the test set.")] = None,
        seed: opt.Seed = 0,
        device: opt.Device = "auto",
        precision: Annotated[str, typer.Option(help="fp32 or bf16 (autocast).")] = "fp32",
        compile_: Annotated[bool, typer.Option("--compile", help="torch.compile the model (faster after a warm-up).")] = False,
        deterministic: opt.Deterministic = False,
        data_dir: opt.DataDir = None,
        download: Annotated[bool, typer.Option(help="Download missing dataset files when online (--no-download or CAPSLAB_OFFLINE=1: never).")] = True,
        augment: opt.Augment = True,
        pad_to: Annotated[int | None, typer.Option(
            min=1, help="Place every image on a black N x N canvas, at random each training "
            "epoch and centred for evaluation; the network takes N x N input (--pad-to 40 on "
            "mnist, then `capslab eval --dataset affnist`: Sabour et al.'s affNIST test).",
            show_default=False)] = None,
        resume: Annotated[bool, typer.Option(help="Continue the run in --out from its last checkpoint.")] = False,
        stop_after: Annotated[int | None, typer.Option(
            min=1, help="End after N of the --epochs (the learning-rate schedule stays the one of "
            "--epochs); --resume with a larger N, or without it, continues the same run: a long "
            "training in parts.", show_default=False)] = None,
        nproc: Annotated[int, typer.Option(
            min=1, help="Train data-parallel in N processes on this machine (gloo on the CPU, NCCL "
            "on GPUs, one GPU each); --batch-size is the global batch and must divide by N. Under "
            "torchrun, leave it out: torchrun starts the processes.")] = 1,
        tensorboard: Annotated[bool, typer.Option(help="Also log to TensorBoard in OUT/tensorboard.")] = False,
        hflip: Annotated[bool, typer.Option(help="Also flip half the training images left-right (classes that look the same mirrored: Fashion-MNIST, CIFAR; not digits).")] = False,
        eval_final_only: Annotated[bool, typer.Option(help="Read the held-out split once, after the last epoch, not after every epoch (a test accuracy no epoch was chosen on; the other epochs show the training accuracy).")] = False,
        qat: Annotated[int | None, typer.Option(help="Quantization-aware training at N bits: weights, layer inputs and routing on their N-bit grids in every step (straight-through gradients); each epoch also reports the accuracy in the accelerator mode at N bits.")] = None,
        reconstruction_weight: float = 0.0005,
        weight_sharing: Annotated[bool, typer.Option(help="FasTrCaps: share ClassCaps matrices per capsule type.")] = False,
        small_decoder: Annotated[bool, typer.Option(help="FasTrCaps: decoder reads only the selected capsule.")] = False,
        routing: Annotated[str | None, typer.Option(help="rba, sda or self-attention (models that support it).")] = None,
        blocks: Annotated[int | None, typer.Option(help="Residual/momentum blocks (rescapsnet, mocapsnet).")] = None,
        gamma: Annotated[float | None, typer.Option(help="Momentum of mocapsnet.")] = None,
        genotype: Annotated[Path | None, typer.Option(help="Train the network of a genotype file (NASCaps or CapsLab format).")] = None,
        model_opt: opt.ModelOpt = None,
        config: Annotated[Path | None, typer.Option(help="JSON file of training settings (e.g. a run's config.json); flags given here override it.")] = None,
        quiet: opt.Quiet = False,
        as_json: opt.JsonFlag = False,
    ) -> None:
        """Train a capsule network and write metrics, checkpoints and plots to --out."""
        # imported on use, so that the CLI starts without it
        from capslab.train import TrainConfig, train
        from capslab.train.distributed import process_rank

        model_options = model_options_from_flags(weight_sharing, small_decoder, routing, blocks, gamma, genotype, model_opt, opt.with_resize(dataset, resize))
        if genotype is not None:
            model = "genotype"
        values = dict(
            model=model, model_options=model_options, dataset=dataset, data_dir=str(data_dir) if data_dir else None,
            download=download, epochs=epochs, batch_size=batch_size, lr=lr, policy=policy,
            policy_options=opt.parse_key_values(policy_opt, "policy option"), optimizer=optimizer, subset=subset,
            test_subset=test_subset, val_size=val_size, seed=seed, out=str(out), device=device,
            precision=precision, compile=compile_, deterministic=deterministic, resume=resume, tensorboard=tensorboard, augment=augment,
            reconstruction_weight=reconstruction_weight, nproc=nproc, qat_bits=qat, pad_to=pad_to,
            eval_final_only=eval_final_only, hflip=hflip, stop_after=stop_after,
        )
        if config is not None:
            given = {k for k in ctx.params if ctx.get_parameter_source(k).name != "DEFAULT"}
            values = merge_config_file(config, values, given)
        values["dataset"] = opt.with_resize(values["dataset"], resize)  # --resize N: PATH@N
        cfg = TrainConfig.from_dict(values)
        # imported on use, so that the CLI starts without it
        from capslab.cli.datasets import download_display
        from capslab.data import describe_dataset

        described = describe_dataset(cfg.dataset)  # your own data: what was found in it
        if described is not None and process_rank() == 0:
            note(described, as_json)

        with download_display(as_json):  # a missing dataset is fetched with a progress bar
            summary = train(cfg, progress=not (quiet or as_json))
        if process_rank() != 0:  # under torchrun, rank 0 alone reports
            return
        emit(summary, as_json, _print_summary)
        note(f"results: {out}/metrics.jsonl, {out}/summary.json, {out}/curves.png, "
             f"{out}/reconstructions.png, checkpoints {out}/last.pt and {out}/best.pt", as_json)
        if summary["epochs_done"] < cfg.epochs:
            note(f"stopped after {summary['epochs_done']} of {cfg.epochs} epochs: the same command "
                 "with --resume and a larger --stop-after (or none) continues it", as_json)

    @app.command("eval")
    def eval_cmd(
        checkpoint: Annotated[Path, typer.Option(help="A last.pt or best.pt written by `capslab train`.")],
        dataset: Annotated[str | None, typer.Option(help="Dataset to evaluate on; default: the one it was trained on.")] = None,
        data_dir: opt.DataDir = None,
        test_subset: opt.TestSubset = None,
        batch_size: Annotated[int, typer.Option(min=1, help="Evaluation batch size.")] = 256,
        device: opt.Device = "auto",
        weight_bits: Annotated[int | None, typer.Option(help="Also evaluate with the weights quantized to N bits (2-16, symmetric, per layer).")] = None,
        activation_bits: Annotated[int | None, typer.Option(help="Also quantize the inputs of the quantized layers to N bits (per image).")] = None,
        routing_bits: Annotated[int | None, typer.Option(help="Also quantize every routing coefficient to N bits.")] = None,
        quantize_groups: Annotated[str | None, typer.Option(help="Comma list of layer groups to quantize: conv, primary, capsule, decoder (default: all).")] = None,
        calibrate: Annotated[int | None, typer.Option(min=1, help="The accelerator mode: fix the activation scales on N training images (static) instead of per image.")] = None,
        power_of_two: Annotated[bool, typer.Option(help="Round every quantization scale up to a power of two (shifts on fixed-point hardware).")] = False,
        as_json: opt.JsonFlag = False,
    ) -> None:
        """Evaluate a trained network (a checkpoint) on a test split; with --weight-bits,
        --activation-bits or --routing-bits also quantized (post-training), beside the float
        result; --calibrate N fixes the activation scales on N training images (the accelerator
        mode). A network trained with --pad-to N sees smaller images centred on its N x N
        canvas, and takes a dataset of N x N images as it is (--dataset affnist after
        --pad-to 40 on mnist)."""
        # imported on use, so that the CLI starts without it
        from capslab.data import BatchLoader
        from capslab.models.pretrained import input_padding, load_model, model_split
        from capslab.train import evaluate, resolve_device

        quantization = eval_quantization(weight_bits, activation_bits, routing_bits, quantize_groups)
        if quantization is not None and power_of_two:
            quantization = quantization.replace(power_of_two=True)
        if calibrate is not None and (quantization is None or activation_bits is None):
            raise ConfigError("--calibrate fixes the scales of quantized activations: give "
                              "--activation-bits too")
        dev = resolve_device(device)
        model = load_model(checkpoint, map_location=dev)
        cfg = model.pretrained_cfg
        name = dataset or recorded_dataset(cfg, checkpoint)
        pad = input_padding(model, name)  # a network trained with --pad-to: its canvas
        test = model_split(model, name, "test", checkpoint, data_dir).stratified(test_subset or None, 0)
        loader = BatchLoader(test, batch_size, shuffle=False)
        weight = cfg["settings"].get("reconstruction_weight", 0.0005)
        result = evaluate(model, loader, dev, weight)
        result.update(dataset=name, checkpoint=str(checkpoint), model=cfg["model_name"],
                      epoch=cfg["epoch"], images=len(test), padded_to=pad,
                      trained_on=cfg["dataset"], recorded_test_accuracy=cfg["test_accuracy"])
        if calibrate is not None:
            from capslab.quantize import calibrate as calibrated

            images = model_split(model, name, "train", checkpoint, data_dir).stratified(calibrate, 0)
            quantization = calibrated(model, [x for x, _ in BatchLoader(images, 64, shuffle=False)],
                                      quantization, dev)
        if quantization is not None:
            result["quantized"] = quantized_result(model, loader, quantization, dev, weight,
                                                   result["test_accuracy"])

        def render(r: dict[str, Any]) -> None:
            padded = f" padded to {pad}x{pad}" if pad else ""
            console.print(f"{name} test accuracy [bold]{100 * r['test_accuracy']:.2f}%[/] "
                          f"(loss {r['test_loss']:.4f}, {r['images']} images{padded}, "
                          f"epoch {r['epoch']})")
            if "quantized" in r:
                q = r["quantized"]
                console.print(f"quantized, {q['description']}: [bold]{100 * q['test_accuracy']:.2f}%[/] "
                              f"({-100 * q['accuracy_drop']:+.2f} points, loss {q['test_loss']:.4f}; "
                              f"{q['parameters']:,} weights in {q['tensors']} tensors quantized)")

        emit(result, as_json, render)


def recorded_dataset(cfg: dict[str, Any], checkpoint: Path) -> str:
    """The dataset a checkpoint was trained on (its ``pretrained_cfg``), to evaluate on when
    ``--dataset`` is not given; one line when it is not there any more (your own data that
    moved, or data registered in another Python process)."""
    # imported on use, so that the CLI starts without it
    from capslab.data import is_custom
    from capslab.errors import DatasetNotFoundError

    name = cfg["dataset"]
    if name is None:
        raise ConfigError(f"checkpoint {checkpoint} records no dataset; name one with --dataset")
    origin = cfg.get("dataset_origin") or {}
    if origin.get("path") and not Path(origin["path"]).exists():
        raise DatasetNotFoundError(
            f"checkpoint {checkpoint} was trained on {origin['path']}, which does not exist any "
            "more; evaluate it on the data's new place with --dataset PATH"
        )
    if origin.get("format") == "registered" and not is_custom(name):
        raise ConfigError(
            f"checkpoint {checkpoint} was trained on {name!r}, data registered from Python in "
            "another process; evaluate it with --dataset PATH (a folder of images or an .npz file)"
        )
    return name


def eval_quantization(weight_bits: int | None, activation_bits: int | None,
                      routing_bits: int | None, groups: str | None):
    """The quantization ``capslab eval`` adds (``None`` when no bits are given)."""
    # imported on use, so that the CLI starts without it
    from capslab.quantize import GROUPS, QuantizationSettings

    if weight_bits is None and activation_bits is None and routing_bits is None:
        if groups is not None:
            raise ConfigError("--quantize-groups needs --weight-bits or --activation-bits")
        return None
    return QuantizationSettings(weight_bits=weight_bits, activation_bits=activation_bits,
                                routing_bits=routing_bits,
                                groups=tuple(opt.split_list(groups)) or GROUPS)


def quantized_result(model, loader, settings, device, reconstruction_weight: float,
                     float_accuracy: float) -> dict[str, Any]:
    """The quantized evaluation of ``capslab eval``: settings, accuracy, drop and what was
    quantized."""
    # imported on use, so that the CLI starts without it
    from capslab.quantize import evaluate_quantized, quantized_parameter_count

    scores = evaluate_quantized(model, loader, settings, device, reconstruction_weight)
    tensors, parameters = quantized_parameter_count(model, settings)
    return {**settings.to_dict(), "description": settings.describe(), **scores,
            "accuracy_drop": float_accuracy - scores["test_accuracy"],
            "tensors": tensors, "parameters": parameters}
