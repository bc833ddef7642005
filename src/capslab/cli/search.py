"""``capslab search``: NASCaps hardware-aware architecture search (run, resume, report, finalize).
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from capslab.cli import options as opt
from capslab.cli.output import console, emit, err_console, note, progress_bar
from capslab.errors import ConfigError

search_app = typer.Typer(
    help="NASCaps: NSGA-II search over capsule networks for accuracy, energy, memory, latency.",
    no_args_is_help=True,
)


# ---------------------------------------------------------------------- progress display
class _Progress:
    """Rich progress: one bar over generations, one over the candidates of the current one."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bar = progress_bar(enabled)
        self.gen_task = self.cand_task = None

    def __enter__(self):
        self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        self.bar.__exit__(*exc)

    def _say(self, text: str) -> None:
        if self.enabled:
            self.bar.console.print(text)

    def _candidates(self, label: str, data: dict[str, Any]) -> None:
        """A fresh bar for the candidates of a generation (or of one of its rungs)."""
        if self.cand_task is not None:
            self.bar.remove_task(self.cand_task)
        cached = data["candidates"] - data["to_evaluate"]
        self.cand_task = self.bar.add_task(
            f"  {label}: {data['to_evaluate']} to train"
            + (f", {cached} from the journal" if cached else ""),
            total=max(data["to_evaluate"], 1),
            completed=0 if data["to_evaluate"] else 1,
        )

    def __call__(self, event: str, data: dict[str, Any]) -> None:
        if event == "lease":
            old = data["taken_over"]
            self._say(f"[yellow]took the run over from {escape(old['holder'])}, silent since "
                      f"{old['heartbeat_at']:%Y-%m-%d %H:%M:%S} UTC[/]")
        elif event == "generation":
            if self.gen_task is None:
                self.gen_task = self.bar.add_task("generations", total=data["total"])
            self._candidates(f"generation {data['generation']}", data)
        elif event == "rung":
            self._candidates(f"generation {data['generation']}, rung {data['rung'] + 1}/"
                             f"{len(data['rungs'])} ({data['epochs']} epochs)", data)
        elif event == "evaluated":
            rec = data["record"]
            self.bar.advance(self.cand_task)
            rung = "" if data.get("rung") is None else f" rung {data['rung'] + 1} ({rec.epochs} ep)"
            if rec.ok:
                train = ("" if rec.train_activation_KiB is None else
                         f"  train {rec.train_activation_KiB:,.0f} KiB/img {rec.train_GFLOP:.3f} GFLOP")
                self._say(f"  gen {data['generation']}{rung}: {rec.split or ''} acc {100 * rec.accuracy:.2f}%  "
                          f"{rec.energy_mJ:.3f} mJ  {rec.memory_KiB:,.1f} KiB  {rec.latency_ms:.3f} ms{train}  "
                          f"({rec.seconds:.1f} s)")
            else:
                colour = "yellow" if rec.status in ("timeout", "infeasible") else "red"
                self._say(f"  gen {data['generation']}{rung}: [{colour}]{rec.status}[/] {escape(str(rec.reason))}")
        elif event == "generation_done":
            self.bar.advance(self.gen_task)
            best = max((r.accuracy for r in data["front"] if r.ok), default=None)
            accuracy = "" if best is None else f", best accuracy {100 * best:.2f}%"
            timing = data.get("timing")
            busy = "" if timing is None or timing.utilisation is None else (
                f", workers busy {100 * timing.utilisation:.0f}% of {timing.wall_seconds:.0f} s")
            self._say(f"[bold]generation {data['generation']} done: front of {len(data['front'])}"
                      f"{accuracy}{busy}[/]")


def _front_table(records, title: str, most_epochs: int | None = None) -> Table:
    """The front; with ``most_epochs`` (the longest training of the run) a candidate trained
    fewer epochs (stopped at a lower rung) has its epochs marked ``*``, and a caption says
    what that means."""
    table = Table(title=title)
    low = most_epochs is not None and any(r.epochs and r.epochs < most_epochs for r in records)
    if low:
        table.caption = (f"* trained fewer than {most_epochs} epochs (stopped at a lower rung): "
                         "a low-fidelity accuracy")
    for col in ("#", "gen", "epochs", "accuracy %", "energy mJ", "memory KiB", "latency ms", "network"):
        table.add_column(col, justify="left" if col == "network" else "right")
    # imported on use, so that the CLI starts without it
    from capslab.genotype import parse_genotype

    def fmt(v: float | None, spec: str) -> str:
        return "-" if v is None else format(v, spec)

    for i, r in enumerate(records):
        network = parse_genotype(r.genotype_nascaps).describe()
        if not r.ok:  # a front of failures only (every candidate failed)
            network = f"failed: {r.reason} | {network}"
        table.add_row(
            str(i + 1), str(r.generation),
            fmt(r.epochs, "d") + ("*" if low and r.epochs and r.epochs < most_epochs else ""),
            fmt(None if r.accuracy is None else 100 * r.accuracy, ".2f"),
            fmt(r.energy_mJ, ".3f"), fmt(r.memory_KiB, ",.1f"), fmt(r.latency_ms, ".3f"),
            escape(network),
        )
    return table


def _rung_table(summary: list[dict[str, Any]]) -> Table:
    table = Table(title="Successive halving: the rungs over all generations")
    for col in ("rung", "epochs", "trained", "failed", "median accuracy %", "train s",
                "promoted", "Kendall tau with next rung"):
        table.add_column(col, justify="right")
    for row in summary:
        median, tau = row["median_accuracy"], row["kendall_tau_next"]
        table.add_row(str(row["rung"] + 1), str(row["epochs"]), str(row["candidates"]),
                      str(row["failed"]), "-" if median is None else f"{100 * median:.2f}",
                      f"{row['seconds']:.0f}", str(row["promoted"]),
                      "-" if tau is None else f"{tau:.2f}")
    return table


def _space_overrides(space: list[str] | None, space_file: Path | None) -> dict[str, Any]:
    """Search-space fields from a JSON file, then from ``--space key=value`` (which win)."""
    d: dict[str, Any] = {}
    if space_file is not None:
        try:
            d.update(json.loads(Path(space_file).read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"search-space file {space_file} cannot be read as JSON: {exc}") from None
    d.update(opt.parse_key_values(space, "search-space key"))
    return d


def _result_dict(result) -> dict[str, Any]:
    return {"run_dir": str(result.run_dir), "run_id": result.run_id,
            "status": result.stopped or "finished",
            "evaluations": result.evaluations, "evaluated_now": result.evaluated_now,
            "generations": result.generations, "utilisation": result.utilisation,
            "front": [r.summary() for r in result.front]}


# the new options of `search run` and `search resume`
MaxTime = Annotated[float | None, typer.Option(
    help="Stop the search after this many seconds (no candidate starts later; finished ones "
         "are journaled); continue with `capslab search resume`.")]
GpusPerCandidate = Annotated[float, typer.Option(
    "--gpus-per-candidate", min=0, help="With --ray-address and candidates on CUDA: GPUs each "
    "candidate asks Ray for; a fraction (0.5) shares a GPU between candidates.")]
DbRetry = Annotated[float, typer.Option(
    "--db-retry", min=0, help="Seconds a journal write waits, retrying, for a database that went "
    "away (a restart) before the search stops with the command that resumes it.")]


# ---------------------------------------------------------------------- commands
def run_cmd(
    dataset: Annotated[str, typer.Option(help="Dataset to search on. " + opt.DATASET_HELP)] = "mnist",
    resize: opt.Resize = None,
    generations: Annotated[int, typer.Option(min=0, help="Offspring generations after the initial population (paper: 20).")] = 20,
    population: Annotated[int, typer.Option(min=2, help="Parent population |P| (paper: 10).")] = 10,
    offspring: Annotated[int, typer.Option(min=1, help="Offspring per generation |Q| (paper: 10).")] = 10,
    epochs: Annotated[int | None, typer.Option(min=1, help="Partial-training epochs per candidate (paper: 5; 10 for CIFAR-10); with --rungs, the last rung (default 5).")] = None,
    rungs: Annotated[str | None, typer.Option(help="Multi-fidelity: successive halving over these epoch counts, e.g. 1,3,5 (each generation's new candidates train 1 epoch, the best --promote share continues to 3, then 5).")] = None,
    promote: Annotated[float, typer.Option(help="With --rungs: the share of a rung's candidates that continues to the next, in (0, 1].")] = 0.5,
    accuracy_bits: Annotated[int | None, typer.Option(help="Accuracy objective of the network with N-bit weights (post-training quantization), as the accelerator computes it; N must be the accelerator's weight_bits (CapsAcc: 8).")] = None,
    accuracy_mode: Annotated[str, typer.Option(help="With --accuracy-bits: 'weights' (the weights only) or 'accelerator' (weights, activations at static scales calibrated on training images, and routing coefficients, all at those bits).")] = "weights",
    accelerator: Annotated[Path | None, typer.Option(help="Accelerator description (JSON, as for `capslab hw`) for the hardware objectives (default: CapsAcc).")] = None,
    subset: opt.Subset = None,
    test_subset: opt.TestSubset = None,
    out: Annotated[Path, typer.Option(help="Run folder (run.json, journal.sqlite, reports).")] = opt.default_out("search"),
    db: Annotated[str | None, typer.Option(help="SQLAlchemy URL or SQLite path of the journal (default: OUT/journal.sqlite).")] = None,
    workers: Annotated[int, typer.Option(min=0, help="Evaluate N candidates at once in worker processes; 0 = one per CPU core on the CPU (in-process on one core), one on CUDA.")] = 0,
    ray_address: Annotated[str | None, typer.Option(help="Spread evaluations over this Ray cluster (needs capslab[ray]).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the search (and of every candidate's training).")] = 0,
    val_size: Annotated[int | None, typer.Option(help="Validation images held out of the training split to score candidates on (default: 20% of the images used, at most 5,000).")] = None,
    time_limit: Annotated[float | None, typer.Option("--time-limit", "--candidate-time-limit", help="Seconds per candidate (default: derived from epochs and data size, see docs/nas.md); 0 = no limit. Slower candidates are recorded as timeouts.")] = None,
    max_time: MaxTime = None,
    db_retry: DbRetry = 120.0,
    gpus_per_candidate: GpusPerCandidate = 0.0,
    policy: opt.Policy = "fixed",
    policy_opt: opt.PolicyOpt = None,
    batch_size: opt.BatchSize = 128,
    lr: opt.LearningRate = None,
    mutation_prob: Annotated[float, typer.Option(min=0.0, max=1.0, help="Mutation probability p_m (paper: 0.1).")] = 0.1,
    space: opt.SpaceOpt = None,
    space_file: Annotated[Path | None, typer.Option(help="JSON object of search-space fields.")] = None,
    device: opt.Device = "auto",
    data_dir: opt.DataDir = None,
    keep_candidates: Annotated[bool, typer.Option(help="Keep each candidate's metrics under OUT/candidates.")] = False,
    objectives: Annotated[str | None, typer.Option(help="Figures to minimise, a comma list of error, energy_mJ, memory_KiB, latency_ms, train_activation_KiB, train_GFLOP (default: the paper's first four).")] = None,
    limit: Annotated[list[str] | None, typer.Option("--limit", help="FIGURE=MAX, repeatable, e.g. --limit memory_KiB=2048 --limit train_activation_KiB=512: candidates over a limit are infeasible (journaled, never on the front).")] = None,
    quiet: opt.Quiet = False,
    as_json: opt.JsonFlag = False,
) -> None:
    """Start a search: NSGA-II, every evaluation journaled as it finishes."""
    # imported on use, so that the CLI starts without it
    from capslab.hw import Accelerator
    from capslab.nas.config import SearchConfig
    from capslab.nas.search import run_search
    from capslab.train import TrainingSettings

    rung_epochs = _rungs(rungs)
    if epochs is None:
        epochs = rung_epochs[-1] if rung_epochs else 5
    # validated in full (policy options, space keys, ...) before the run folder is created
    config = SearchConfig(
        training=TrainingSettings(
            model="genotype", dataset=opt.with_resize(dataset, resize), epochs=epochs, subset=subset, test_subset=test_subset,
            val_size=val_size,
            policy=policy, policy_options=opt.parse_key_values(policy_opt, "policy option"),
            batch_size=batch_size, lr=lr, seed=seed, device=device,
            data_dir=str(data_dir) if data_dir else None,
        ),
        generations=generations, population=population, offspring=offspring,
        mutation_prob=mutation_prob, seed=seed, time_limit=time_limit,
        keep_candidates=keep_candidates, space=_space_overrides(space, space_file),
        rungs=rung_epochs, promote=promote, accuracy_bits=accuracy_bits, accuracy_mode=accuracy_mode,
        accelerator={} if accelerator is None else Accelerator.from_file(accelerator).to_dict(),
        **({} if objectives is None else {"objectives": tuple(opt.split_list(objectives))}),
        limits=opt.parse_key_values(limit, "limit"),
    )
    with _interrupt_hint(out), _Progress(not (quiet or as_json)) as progress:
        result = run_search(config, out, db=db, workers=workers, ray_address=ray_address,
                            progress=progress, max_time=max_time, db_retry=db_retry,
                            gpus_per_candidate=gpus_per_candidate)
    _finish(result, as_json)


def _rungs(text: str | None) -> tuple[int, ...] | None:
    """``--rungs 1,3,5`` -> ``(1, 3, 5)``, in the order given (the search checks the order)."""
    if text is None:
        return None
    values = []
    for part in opt.split_list(text):
        try:
            values.append(int(part))
        except ValueError:
            raise ConfigError(f"--rungs: {part!r} is not a whole number of epochs (use e.g. 1,3,5)") from None
    return tuple(values)


@contextmanager
def _interrupt_hint(run_dir: Path):
    """On Ctrl-C: say that nothing finished is lost and how to continue; exit code 130."""
    try:
        yield
    except KeyboardInterrupt:
        err_console.print(
            f"[yellow]interrupted:[/] finished evaluations are in the journal; continue with "
            f"[bold]capslab search resume {escape(str(run_dir))}[/]",
            highlight=False,
        )
        raise typer.Exit(130) from None


def _finish(result, as_json: bool, extra: dict[str, Any] | None = None) -> None:
    """Show the front and what to do next (``extra``: more keys of the ``--json`` result)."""
    if not result.stopped:
        title = f"Pareto front of the final population ({result.run_id})"
    elif result.generations:
        title = f"Pareto front after generation {result.generations - 1} ({result.run_id})"
    else:
        title = f"No generation finished yet ({result.run_id})"
    most = max((r.epochs for r in result.population + result.front if r.ok and r.epochs),
               default=None)
    emit({**_result_dict(result), **(extra or {})}, as_json,
         lambda _: console.print(_front_table(result.front, title, most)))
    busy = "" if result.utilisation is None else f", workers busy {100 * result.utilisation:.0f}%"
    note(f"{result.evaluations} candidates in the journal, {result.evaluated_now} trained now{busy}.",
         as_json)
    if result.stopped:
        note(f"{result.stopped}: finished evaluations are in the journal; continue with "
             f"capslab search resume {result.run_dir}", as_json)
    else:
        note(f"Next: capslab search report {result.run_dir}", as_json)


def register(app: typer.Typer) -> None:
    search_app.command("run")(run_cmd)

    @search_app.command("resume")
    def resume_cmd(
        run: Annotated[Path, typer.Argument(help="Run folder of `capslab search run`.")],
        db: Annotated[str | None, typer.Option(help="Journal URL, if not the one in run.json (e.g. to give a password).")] = None,
        workers: Annotated[int | None, typer.Option(min=0, help="Worker processes; 0 = one per CPU core on the CPU, one on CUDA (default: as the search was started; 1 for a search started before run.json recorded it).", show_default=False)] = None,
        ray_address: Annotated[str | None, typer.Option(help="Ray cluster address.")] = None,
        device: Annotated[str | None, typer.Option(help="Continue on another device (auto, cpu, cuda or cuda:N); a default candidate time budget is recomputed for it.")] = None,
        max_time: MaxTime = None,
        db_retry: DbRetry = 120.0,
        gpus_per_candidate: GpusPerCandidate = 0.0,
        retry_failed: Annotated[bool, typer.Option("--retry-failed", help="First forget the failed and timed-out candidates of the earliest generation that has some, and every later generation, so that this resume trains them again (an SQLite journal is copied to RUN/journal.before-retry-<UTC time>.sqlite first).")] = False,
        quiet: opt.Quiet = False,
        as_json: opt.JsonFlag = False,
    ) -> None:
        """Continue an interrupted or stopped search: journaled evaluations are reused, never
        repeated (failed ones too, unless --retry-failed)."""
        # imported on use, so that the CLI starts without it
        from capslab.nas.retry import retry_failed as forget_failures
        from capslab.nas.search import resume

        extra: dict[str, Any] = {}
        if retry_failed:
            plan = forget_failures(run, db=db, db_retry=db_retry)
            if plan.backup is not None:
                note(f"journal copied to {plan.backup}", as_json)
            note(plan.describe(), as_json)
            extra["retry"] = plan.to_dict()
        with _interrupt_hint(run), _Progress(not (quiet or as_json)) as progress:
            result = resume(run, db=db, workers=workers, ray_address=ray_address,
                            device=device, progress=progress, max_time=max_time,
                            db_retry=db_retry, gpus_per_candidate=gpus_per_candidate)
        _finish(result, as_json, extra)

    @search_app.command("report")
    def report_cmd(
        run: Annotated[Path, typer.Argument(help="Run folder.")],
        out: Annotated[Path | None, typer.Option(help="Report folder (default: RUN/report).")] = None,
        baseline_accuracy: Annotated[list[str] | None, typer.Option("--baseline-accuracy", help="Known accuracy of a baseline, e.g. capsnet=0.9967 (repeatable); without it baselines are drawn on the hardware axes only.")] = None,
        db: Annotated[str | None, typer.Option(help="Journal URL, if not the one in run.json.")] = None,
        as_json: opt.JsonFlag = False,
    ) -> None:
        """Write candidates.csv, pareto.json/.csv, generations.csv (worker utilisation) and
        objectives.png (every pair of objectives)."""
        # imported on use, so that the CLI starts without it
        from capslab.nas.config import open_journal
        from capslab.nas.report import (
            accuracy_meaning,
            rung_summary,
            search_front,
            utilisation_summary,
            write_report,
        )
        from capslab.nas.schema import OBJECTIVE_NAMES

        accs = {}
        for name, value in opt.parse_key_values(baseline_accuracy, "baseline accuracy").items():
            key = {"capsnet": "CapsNet", "deepcaps": "DeepCaps"}.get(name.lower())
            if key is None:
                raise ConfigError(f"unknown baseline {name!r}; valid: capsnet, deepcaps")
            if not isinstance(value, int | float) or not 0 <= value <= 1:
                raise ConfigError(f"baseline accuracy {name}={value!r} must be a fraction in [0, 1], e.g. 0.9967")
            accs[key] = float(value)
        journal, info = open_journal(run, db)
        with journal:
            records = journal.evaluations()
            generations = journal.generations()
            run_info = journal.run_info()
            rungs = journal.rung_records()
        if not records:
            raise ConfigError(f"{run}: the journal holds no evaluation yet")
        config = info["config"]
        title = (f"{config['training']['dataset']}: {len(records)} candidates, accuracy at "
                 f"{accuracy_meaning(config)}")
        paths = write_report(records, out or Path(run) / "report", baseline_accuracy=accs,
                             title=title, generations=generations, rungs=rungs,
                             accuracy=accuracy_meaning(config),
                             objectives=config.get("objectives", OBJECTIVE_NAMES),
                             limits=config.get("limits", {}))
        front = search_front(records, config)
        workers = utilisation_summary(generations)
        split = run_info["data_split"] or {}
        by_rung = rung_summary(rungs)

        def show(_) -> None:
            most = max((r.epochs for r in records if r.ok and r.epochs), default=None)
            console.print(_front_table(front, "Pareto front of all candidates", most))
            if by_rung:
                console.print(_rung_table(by_rung))

        timeouts = sum(r.status == "timeout" for r in records)
        emit({"front": [r.summary() for r in front], "status": run_info["status"],
              "data_split": split, "workers": workers, "rungs": by_rung, "timeouts": timeouts,
              "files": {k: str(v) for k, v in paths.items()}},
             as_json, show)
        failed = sum(r.status == "failed" for r in records)
        note(f"status {run_info['status']}; {len(records)} candidates ({timeouts} timed out, "
             f"{failed} failed), accuracies on the {split.get('accuracy_on', '?')} split "
             f"({split.get('val_size', '?')} images)", as_json)
        if workers["utilisation"] is not None:
            note(f"workers busy {100 * workers['utilisation']:.0f}% over {workers['generations']} "
                 f"generation(s), {workers['wall_seconds']:.0f} s", as_json)
        note("written: " + ", ".join(str(p) for p in paths.values()), as_json)

    @search_app.command("finalize")
    def finalize_cmd(
        run: Annotated[Path, typer.Argument(help="Run folder.")],
        epochs: Annotated[int, typer.Option(min=1, help="Full-training epochs (paper: up to 300 on CIFAR-10).")] = 30,
        out: Annotated[Path | None, typer.Option(help="Folder of the trained networks and tables (default: RUN/final).")] = None,
        subset: opt.Subset = None,
        test_subset: opt.TestSubset = None,
        batch_size: Annotated[int | None, typer.Option(help="Batch size (default: the search's).")] = None,
        lr: Annotated[float | None, typer.Option(help="Learning rate (default: the search's).")] = None,
        policy: Annotated[str | None, typer.Option(help="Training policy (default: the search's, with its options).")] = None,
        policy_opt: opt.PolicyOpt = None,
        hflip: Annotated[bool | None, typer.Option("--hflip/--no-hflip", help="Flip half the training images left-right too (default: as the search trained).", show_default=False)] = None,
        device: Annotated[str | None, typer.Option(help="auto, cpu, cuda or cuda:N (default: the search's).")] = None,
        db: Annotated[str | None, typer.Option(help="Journal URL, if not the one in run.json.")] = None,
        best: Annotated[int | None, typer.Option(min=1, help="Train only the N front members of the highest search accuracy (folders keep the front's numbering).")] = None,
        members: Annotated[str | None, typer.Option(help="Train only these front members, by their numbers in the report's front table, e.g. 1,2,7 or 1-3.")] = None,
        as_json: opt.JsonFlag = False,
    ) -> None:
        """Fully train the Pareto set on the whole training split and report test accuracies;
        table like the paper's Table 3 (final.csv/.md/.json). The test split is read once per
        network, after its last epoch. Networks already trained with the same settings are not
        retrained."""
        # imported on use, so that the CLI starts without it
        from capslab.nas.config import SearchConfig, open_journal
        from capslab.nas.report import finalists, finalize, markdown_table, search_front

        numbers = opt.parse_int_list(members, "--members") if members is not None else None
        journal, info = open_journal(run, db)
        with journal:
            front = search_front(journal.evaluations(), info["config"])
        if not front:
            raise ConfigError(f"{run}: no successful candidate to finalize")
        search_config = SearchConfig.from_dict(info["config"])
        searched = search_config.training
        # the search's validation split goes back into training: final accuracies are on the test split
        changes: dict[str, Any] = {"epochs": epochs, "subset": subset, "test_subset": test_subset,
                                   "val_size": None}
        if batch_size is not None:
            changes["batch_size"] = batch_size
        if lr is not None:
            changes["lr"] = lr
        if policy is not None:
            changes.update(policy=policy, policy_options={})
        if policy_opt:
            changes["policy_options"] = {**(changes.get("policy_options", searched.policy_options)),
                                         **opt.parse_key_values(policy_opt, "policy option")}
        if hflip is not None:
            changes["hflip"] = hflip
        if device is not None:
            changes["device"] = device
        training = searched.replace(**changes)
        chosen = finalists(front, best, numbers)  # refused here, before anything is written
        if not as_json:
            n = len(chosen)
            which = "" if n == len(front) else (
                f" (the {n} most accurate of {len(front)})" if numbers is None
                else f" (members {', '.join(str(i + 1) for i in chosen)} of {len(front)})")
            console.print(f"fully training {n} Pareto-optimal network(s){which} for {epochs} epochs")
        rows = finalize(front, out or Path(run) / "final", training, progress=not as_json,
                        best=best, members=numbers, weight_bits=search_config.accuracy_bits,
                        accelerator_mode=search_config.accuracy_mode == "accelerator")
        emit(rows, as_json, lambda r: console.print(markdown_table(r), markup=False, highlight=False))

    app.add_typer(search_app, name="search")
