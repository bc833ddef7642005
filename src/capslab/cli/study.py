"""``capslab study``: the papers' studies (FasTrCaps trade-offs, NASCaps PCC, Q-CapsNets-style
quantization)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from capslab.cli import options as opt
from capslab.cli.output import console, emit, note, progress_bar
from capslab.errors import ConfigError

study_app = typer.Typer(help="Studies from the papers (FasTrCaps trade-offs, NASCaps PCC, quantization).", no_args_is_help=True)


def split_policy_options(items: Sequence[str] | None, policies: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``policy:key=value`` sets an option of one policy; ``key=value`` sets it for every
    policy of the study that has that option (an option no policy has is an error)."""
    # deferred for the CLI's start-up: importing capslab.train loads torch
    # imported on use, so that the CLI starts without it
    from capslab.train.policy_options import policy_options_class

    out: dict[str, dict[str, Any]] = {}
    for item in items or []:
        head, _, _ = item.partition("=")
        if ":" in head:
            policy, _, rest = item.partition(":")
            if policy not in policies:
                raise ConfigError(f"--policy-opt {item!r}: policy {policy!r} is not in the study {list(policies)}")
            targets, item = [policy], rest
        else:
            (name,) = opt.parse_key_values([item], "policy option")
            targets = [p for p in policies if name in policy_options_class(p).field_names()]
            if not targets:
                raise ConfigError(f"--policy-opt {item!r}: none of the policies {list(policies)} has option {name!r}")
        for p in targets:
            out.setdefault(p, {}).update(opt.parse_key_values([item], "policy option"))
    return out


def _render_fastrcaps(result: dict[str, Any], title: str, goal: str, tolerance: float | None) -> None:
    table = Table(title=title)
    cols = [("policy", "policy"), ("variant", "model"), ("best_acc_mean", "acc %"),
            ("best_acc_std", "std"), ("best_epoch", "best ep."), ("epochs_to_target", "ep. to target"),
            ("train_time_paper_s", "time s"), ("seconds_to_target", "s to target"),
            ("parameters", "params"), ("pareto", "Pareto")]
    for _, name in cols:
        table.add_column(name, justify="right")
    for r in result["rows"]:
        cells = []
        for key, _ in cols:
            v = r[key]
            if v is None:
                cells.append("-")
            elif isinstance(v, bool):
                cells.append("[green]yes[/]" if v else "")
            elif key.startswith("best_acc"):
                cells.append(f"{100 * v:.2f}")
            elif isinstance(v, float):
                cells.append(f"{v:.1f}")
            elif key == "parameters":
                cells.append(f"{v:,}")
            else:
                cells.append(str(v))
        table.add_row(*cells)
    console.print(table)
    if result["target_accuracy"] is not None:
        console.print(f"target accuracy: {100 * result['target_accuracy']:.2f} % (fixed-LR baseline's peak unless --target)")
    c = result["choice"]
    within = f" within {tolerance} points of the best accuracy" if tolerance is not None and goal != "accuracy" else ""
    console.print(
        f"[bold]goal {goal}{within}:[/] [bold green]{c['policy']} / {c['variant']}[/] - "
        f"{100 * c['best_acc_mean']:.2f} % at epoch {c['best_epoch']}, "
        f"{c['train_time_paper_s']:.1f} s training time, {c['parameters']:,} parameters"
    )


@study_app.command("fastrcaps")
def fastrcaps_cmd(
    dataset: Annotated[str, typer.Option(help="mnist or fashion-mnist (any registered dataset), or your own data (PATH, PATH@N: see capslab train --help).")] = "mnist",
    subset: opt.Subset = None,
    test_subset: opt.TestSubset = None,
    epochs: Annotated[int, typer.Option(min=1, help="Epochs per run (paper: 30).")] = 30,
    repeats: Annotated[int, typer.Option(min=1, help="Runs per configuration (paper: 5).")] = 5,
    policies: Annotated[str | None, typer.Option(help="Comma list of policies; default: all six.")] = None,
    variants: Annotated[str, typer.Option(help="Comma list of baseline, ws (weight sharing + small decoder).")] = "baseline,ws",
    policy_opt: Annotated[list[str] | None, typer.Option("--policy-opt", help="key=value for every policy that has it, or policy:key=value (repeatable).")] = None,
    model_opt: Annotated[list[str] | None, typer.Option("--model-opt", help="CapsNet option key=value for every run, e.g. conv_channels=32 (repeatable).")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Batch size of the constant-batch policies.")] = 128,
    lr: opt.LearningRate = None,
    out: Annotated[Path, typer.Option(help="Study folder (runs, table, plots); reused to resume.")] = opt.default_out("study-fastrcaps"),
    goal: Annotated[str, typer.Option(help="accuracy, time or params: which configuration to pick.")] = "accuracy",
    tolerance: Annotated[float | None, typer.Option(help="With goal time/params: stay within T percentage points of the best accuracy.")] = None,
    time_metric: Annotated[str, typer.Option(help="paper (epochs to best x s/epoch) or measured (seconds to best).")] = "paper",
    target: Annotated[float | None, typer.Option(help="Accuracy to reach, a fraction (e.g. 0.993); default: the fixed-LR baseline's peak.")] = None,
    seed: opt.Seed = 0,
    device: opt.Device = "auto",
    data_dir: opt.DataDir = None,
    augment: opt.Augment = True,
    keep_checkpoints: Annotated[bool, typer.Option(help="Keep last.pt/best.pt of finished runs.")] = False,
    run_plots: Annotated[bool, typer.Option(help="Curves and reconstructions PNG in every run folder.")] = True,
    quiet: opt.Quiet = False,
    as_json: opt.JsonFlag = False,
) -> None:
    """Train every policy on the baseline and the reduced CapsNet; table, Pareto set, plots.

    Finished runs are reused, so the same command resumes an interrupted study (and, once
    everything is trained, only rebuilds the table and picks a configuration for --goal).
    """
    # imported on use, so that the CLI starts without it
    from capslab.studies.fastrcaps import StudyConfig, run_study
    from capslab.train import TrainingSettings
    from capslab.train.policies import POLICIES

    chosen = opt.split_list(policies) or list(POLICIES)
    study = StudyConfig(
        training=TrainingSettings(
            model="capsnet", model_options=opt.parse_key_values(model_opt, "model option"),
            dataset=dataset, data_dir=str(data_dir) if data_dir else None, subset=subset,
            test_subset=test_subset, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
            device=device, augment=augment,
        ),
        repeats=repeats, policies=tuple(chosen), variants=tuple(opt.split_list(variants)),
        policy_options=split_policy_options(policy_opt, chosen), out=str(out),
        target=target, time_metric=time_metric,
        keep_checkpoints=keep_checkpoints, run_plots=run_plots,
    )
    result = run_study(study, goal=goal, tolerance=tolerance, progress=not (quiet or as_json)).to_dict()
    title = f"FasTrCaps study: {dataset}, {epochs} epochs, {repeats} run(s) each"
    emit(result, as_json, lambda r: _render_fastrcaps(r, title, goal, tolerance))
    note(f"trained {result['trained']} run(s), reused {result['reused']}; files: "
         + ", ".join(result["files"].values()), as_json)


@study_app.command("pcc")
def pcc_cmd(
    dataset: Annotated[str, typer.Option(help="Dataset (mnist, fashion-mnist, svhn, cifar10, ...), or your own data (PATH, PATH@N: see capslab train --help).")] = "mnist",
    networks: Annotated[int, typer.Option(min=2, help="Random networks to train (paper: 66).")] = 66,
    epochs: Annotated[int, typer.Option(min=1, help="Epochs of the full training; the last one is 'final'.")] = 10,
    subset: opt.Subset = None,
    test_subset: opt.TestSubset = None,
    out: Annotated[Path, typer.Option(help="Study folder; rerun the same command to resume.")] = opt.default_out("study-pcc"),
    batch_size: opt.BatchSize = 128,
    lr: opt.LearningRate = None,
    policy: opt.Policy = "fixed",
    policy_opt: opt.PolicyOpt = None,
    report_epochs: Annotated[str | None, typer.Option(help="Comma list of epochs to report, e.g. 1,3,5,10 (default: all).")] = None,
    space: opt.SpaceOpt = None,
    seed: Annotated[int, typer.Option(help="Seed of the random networks and their training.")] = 0,
    device: opt.Device = "auto",
    data_dir: opt.DataDir = None,
    quiet: opt.Quiet = False,
    as_json: opt.JsonFlag = False,
) -> None:
    """Train K random networks, correlate accuracy after n epochs with the final accuracy
    (Pearson) and report the median cumulative training time: pcc.json/.csv/.md/.png."""
    # imported on use, so that the CLI starts without it
    from capslab.nas.pcc import PCCConfig, markdown, run_pcc_study
    from capslab.train import TrainingSettings

    config = PCCConfig(
        training=TrainingSettings(
            model="genotype", dataset=dataset, epochs=epochs, subset=subset, test_subset=test_subset,
            batch_size=batch_size, lr=lr, policy=policy,
            policy_options=opt.parse_key_values(policy_opt, "policy option"), seed=seed,
            device=device, data_dir=str(data_dir) if data_dir else None,
        ),
        networks=networks, out=str(out), space=opt.parse_key_values(space, "search-space key"),
        report_epochs=opt.parse_int_list(report_epochs, "report epochs"),
    )
    with progress_bar(not (quiet or as_json)) as bar:
        task = bar.add_task("networks", total=networks)

        def done(i: int, status: str) -> None:
            bar.advance(task)
            if status != "done earlier" and not (quiet or as_json):
                bar.console.print(f"network {i}: {status}")

        result = run_pcc_study(config, on_network=done)

    def render(r: dict[str, Any]) -> None:
        table = Table(title=f"PCC of partial vs final accuracy: {dataset}, {r['complete']} networks")
        table.add_column("epochs", justify="right")
        table.add_column("PCC", justify="right")
        table.add_column("median cumulative time (s)", justify="right")
        for row in r["rows"]:
            table.add_row(str(row["epoch"]), f"{row['pcc']:.4f}", f"{row['mctt_s']:.1f}")
        console.print(table)
        if r["failed"]:
            console.print(f"{len(r['failed'])} network(s) failed; see */failed.json in {out}")
        console.print(markdown(r["rows"], dataset), markup=False, highlight=False)

    emit(result, as_json, render)
    note(f"results: {out / 'pcc.json'}, {out / 'pcc.csv'}, {out / 'pcc.md'}, {out / 'pcc.png'}", as_json)


@study_app.command("quantize")
def quantize_cmd(
    checkpoint: Annotated[Path, typer.Option(help="A last.pt or best.pt written by `capslab train`.")],
    bits: Annotated[str, typer.Option(help="Comma list (or range) of bit widths, 2-16.")] = "16,12,10,8,6,4,3,2",
    groups: Annotated[str | None, typer.Option(help="Comma list of lines: layer groups conv, primary, capsule, decoder; routing (coupling coefficients); all (everything). Default: conv,primary,capsule,routing,all.")] = None,
    activations: Annotated[bool, typer.Option(help="Also quantize the inputs of the quantized layers (same bits).")] = False,
    dataset: Annotated[str | None, typer.Option(help="Dataset to evaluate on; default: the one it was trained on.")] = None,
    test_subset: opt.TestSubset = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Evaluation batch size.")] = 256,
    out: Annotated[Path, typer.Option(help="Folder of the table, JSON and plot.")] = opt.default_out("study-quantize"),
    device: opt.Device = "auto",
    data_dir: opt.DataDir = None,
    quiet: opt.Quiet = False,
    as_json: opt.JsonFlag = False,
) -> None:
    """Post-training quantization: test accuracy against bits, one layer group at a time
    (others float) and all together: quantize.csv/.md/.json/.png."""
    # imported on use, so that the CLI starts without it
    from capslab.studies.quantize import (
        DEFAULT_LINES,
        QuantizeStudyConfig,
        accuracy_grid,
        run_quantize_study,
    )

    widths = sorted(opt.parse_int_list(bits, "bits"), reverse=True)
    config = QuantizeStudyConfig(
        checkpoint=str(checkpoint), bits=tuple(widths),
        lines=tuple(opt.split_list(groups)) or DEFAULT_LINES, activations=activations,
        dataset=dataset, test_subset=test_subset, batch_size=batch_size, device=device,
        data_dir=str(data_dir) if data_dir else None, out=str(out),
    )
    with progress_bar(not (quiet or as_json)) as bar:
        task = bar.add_task("quantized evaluations", total=len(config.lines) * len(config.bits))
        result = run_quantize_study(config, on_point=lambda line, b, status: bar.advance(task))

    def render(r: dict[str, Any]) -> None:
        table = Table(title=f"{r['model']} on {r['images']} {r['dataset']} test images: accuracy % "
                            f"(float {100 * r['float']['test_accuracy']:.2f})")
        table.add_column("line")
        for b in r["bits"]:
            table.add_column(f"{b} bits", justify="right")
        for line, accs in accuracy_grid(r).items():
            table.add_row(line, *(f"{100 * accs[b]:.2f}" if b in accs else "-" for b in r["bits"]))
        console.print(table)
        for line, why in r["skipped"].items():
            console.print(f"{line}: skipped ({why})")

    emit(result, as_json, render)
    note("files: " + ", ".join(result["files"].values()), as_json)


@study_app.command("bitwidths")
def bitwidths_cmd(
    checkpoint: Annotated[Path, typer.Option(help="A last.pt or best.pt written by `capslab train`.")],
    tolerance: Annotated[float, typer.Option(help="Accuracy points the result may lose against float on the validation split.")] = 0.5,
    val_size: Annotated[int, typer.Option(help="Validation images, a stratified subset of the training split (seed 0), never the test split.")] = 2000,
    max_bits: Annotated[int, typer.Option(help="Widest bit width tried.")] = 16,
    min_bits: Annotated[int, typer.Option(help="Narrowest bit width tried.")] = 2,
    test_subset: opt.TestSubset = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Evaluation batch size.")] = 256,
    out: Annotated[Path, typer.Option(help="Folder of bitwidths.json/.md/.png.")] = opt.default_out("study-bitwidths"),
    device: opt.Device = "auto",
    data_dir: opt.DataDir = None,
    quiet: opt.Quiet = False,
    as_json: opt.JsonFlag = False,
) -> None:
    """Per-layer bit widths (Q-CapsNets' manner): the narrowest weights, layer by layer, and
    routing coefficients within --tolerance of float on a validation split; the weight
    memory at those widths beside 8-bit and float32."""
    # imported on use, so that the CLI starts without it
    from capslab.studies.bitwidths import BitWidthConfig, markdown, run_bitwidth_search

    config = BitWidthConfig(
        checkpoint=str(checkpoint), tolerance=tolerance, val_size=val_size, max_bits=max_bits,
        min_bits=min_bits, test_subset=test_subset, batch_size=batch_size, device=device,
        data_dir=str(data_dir) if data_dir else None, out=str(out),
    )
    with progress_bar(not (quiet or as_json)) as bar:
        task = bar.add_task("quantized evaluations", total=None)
        result = run_bitwidth_search(config, on_step=lambda *_: bar.advance(task))
    emit(result, as_json, lambda r: console.print(markdown(r), markup=False, highlight=False))
    note("files: " + ", ".join(result["files"].values()), as_json)


def register(app: typer.Typer) -> None:
    app.add_typer(study_app, name="study")
