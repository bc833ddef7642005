"""``capslab search``: NASCaps hardware-aware architecture search (run, resume, report, finalize).

``capslab search --dataset mnist ...`` is the same as ``capslab search run --dataset mnist ...``.
"""

from __future__ import annotations

import inspect
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from capslab.cli.common import console, err_console, friendly_errors, parse_options


def _workers(n: int) -> int:
    """``--workers 0``: one evaluation process per CPU core."""
    return n if n > 0 else max(1, os.cpu_count() or 1)


search_app = typer.Typer(
    help="NASCaps: NSGA-II search over capsule networks for accuracy, energy, memory, latency.",
    no_args_is_help=True,
)


# ---------------------------------------------------------------------- progress display
class _Progress:
    """Rich progress: one bar over generations, one over the candidates of the current one."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bar = None
        self.gen_task = None
        self.cand_task = None

    def __enter__(self):
        if self.enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self.bar = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), console=console,
            )
            self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.__exit__(*exc)

    def __call__(self, event: str, data: dict[str, Any]) -> None:
        if self.bar is None:
            return
        if event == "generation":
            if self.gen_task is None:
                self.gen_task = self.bar.add_task("generations", total=data["total"])
            if self.cand_task is not None:
                self.bar.remove_task(self.cand_task)
            cached = data["candidates"] - data["to_evaluate"]
            self.cand_task = self.bar.add_task(
                f"  generation {data['generation']}: {data['to_evaluate']} to train"
                + (f", {cached} from the journal" if cached else ""),
                total=max(data["to_evaluate"], 1),
                completed=0 if data["to_evaluate"] else 1,
            )
        elif event == "evaluated":
            rec = data["record"]
            self.bar.advance(self.cand_task)
            if rec.ok:
                self.bar.console.print(
                    f"  gen {data['generation']}: acc {100 * rec.accuracy:.2f}%  "
                    f"{rec.energy_mJ:.3f} mJ  {rec.memory_KiB:,.1f} KiB  {rec.latency_ms:.3f} ms  "
                    f"({rec.seconds:.1f} s)"
                )
            else:
                self.bar.console.print(
                    f"  gen {data['generation']}: [red]failed[/] {escape(str(rec.reason))}"
                )
        elif event == "generation_done":
            self.bar.advance(self.gen_task)
            front = data["front"]
            best = max((r.accuracy for r in front if r.ok), default=None)
            msg = f"generation {data['generation']} done: front of {len(front)}"
            if best is not None:
                msg += f", best accuracy {100 * best:.2f}%"
            self.bar.console.print(f"[bold]{msg}[/]")


def _front_table(records, title: str) -> Table:
    table = Table(title=title)
    for col in ("#", "gen", "accuracy %", "energy mJ", "memory KiB", "latency ms", "network"):
        table.add_column(col, justify="left" if col == "network" else "right")
    from capslab.genotype import Genotype

    def fmt(v: float | None, spec: str) -> str:
        return "-" if v is None else format(v, spec)

    for i, r in enumerate(records):
        network = Genotype.from_nascaps(r.genotype_nascaps).describe()
        if not r.ok:  # a front of failures only (every candidate failed)
            network = f"failed: {r.reason} | {network}"
        table.add_row(
            str(i + 1), str(r.generation), fmt(None if r.accuracy is None else 100 * r.accuracy, ".2f"),
            fmt(r.energy_mJ, ".3f"), fmt(r.memory_KiB, ",.1f"), fmt(r.latency_ms, ".3f"),
            escape(network),
        )
    return table


def _space_overrides(space: list[str] | None, space_file: Path | None) -> dict[str, Any]:
    d: dict[str, Any] = {}
    if space_file is not None:
        d.update(json.loads(Path(space_file).read_text()))
    for key, value in parse_options(space).items():
        # "kernels=3,5" arrives as a list, "kernels=3" as an int: tuples fields want lists
        if key in {"kernels", "strides", "resizes", "families"} and not isinstance(value, list):
            value = [value]
        d[key] = value
    return d


# ---------------------------------------------------------------------- commands
def run_cmd(
    dataset: Annotated[str, typer.Option(help="Dataset to search on (mnist, fashion-mnist, svhn, cifar10, ...).")] = "mnist",
    generations: Annotated[int, typer.Option(min=0, help="Offspring generations after the initial population (paper: 20).")] = 20,
    population: Annotated[int, typer.Option(min=2, help="Parent population |P| (paper: 10).")] = 10,
    offspring: Annotated[int, typer.Option(min=1, help="Offspring per generation |Q| (paper: 10).")] = 10,
    epochs: Annotated[int, typer.Option(min=1, help="Partial-training epochs per candidate (paper: 5; 10 for CIFAR-10).")] = 5,
    subset: Annotated[int | None, typer.Option(help="Train each candidate on a stratified subset of N images.")] = None,
    test_subset: Annotated[int | None, typer.Option(help="Measure accuracy on a stratified subset of M test images.")] = None,
    out: Annotated[Path, typer.Option(help="Run folder (run.json, journal.sqlite, reports).")] = Path("runs/search"),
    db: Annotated[str | None, typer.Option(help="SQLAlchemy URL or SQLite path of the journal (default: OUT/journal.sqlite).")] = None,
    workers: Annotated[int, typer.Option(min=0, help="Evaluate N candidates at once in worker processes; 0 = one per CPU core (in-process on one core).")] = 0,
    ray_address: Annotated[str | None, typer.Option(help="Spread evaluations over this Ray cluster (needs capslab[ray]).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the search (and of every candidate's training).")] = 0,
    time_limit: Annotated[float | None, typer.Option(help="Seconds per candidate; slower ones fail.")] = None,
    policy: Annotated[str, typer.Option(help="Training policy (LR/batch schedule), e.g. fixed, one-cycle, warm-adabatch.")] = "fixed",
    policy_opt: Annotated[list[str] | None, typer.Option("--policy-opt", help="Policy option key=value (repeatable).")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Training batch size.")] = 128,
    lr: Annotated[float | None, typer.Option(help="Learning rate (default: the policy's).")] = None,
    mutation_prob: Annotated[float, typer.Option(min=0.0, max=1.0, help="Mutation probability p_m (paper: 0.1).")] = 0.1,
    space: Annotated[list[str] | None, typer.Option("--space", help="Search-space field key=value, e.g. kernels=3,5 or caps_layers=2,3 (repeatable).")] = None,
    space_file: Annotated[Path | None, typer.Option(help="JSON object of search-space fields.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    data_dir: Annotated[Path | None, typer.Option(help="Dataset folder (else $CAPSLAB_DATA, else the cache).")] = None,
    keep_candidates: Annotated[bool, typer.Option(help="Keep each candidate's metrics under OUT/candidates.")] = False,
    quiet: Annotated[bool, typer.Option(help="No progress display.")] = False,
) -> None:
    """Start a search: NSGA-II, every evaluation journaled as it finishes."""
    from capslab.nas.search import SearchConfig, run_search

    config = SearchConfig(
        dataset=dataset, generations=generations, population=population, offspring=offspring,
        mutation_prob=mutation_prob, seed=seed, epochs=epochs, subset=subset,
        test_subset=test_subset, policy=policy, policy_options=parse_options(policy_opt),
        batch_size=batch_size, lr=lr, device=device,
        data_dir=str(data_dir) if data_dir else None, time_limit=time_limit,
        keep_candidates=keep_candidates, space=_space_overrides(space, space_file),
    )
    with _interrupt_hint(out), _Progress(not quiet) as progress:
        result = run_search(config, out, db=db, workers=_workers(workers), ray_address=ray_address, progress=progress)
    _finish(result)


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


def _finish(result) -> None:
    console.print(_front_table(result.front, f"Pareto front of the final population ({result.run_id})"))
    console.print(
        f"{result.evaluations} candidates in the journal, {result.evaluated_now} trained now. "
        f"Next: [bold]capslab search report {result.run_dir}[/]"
    )


def register(app: typer.Typer) -> None:
    search_app.command("run")(friendly_errors(run_cmd))

    @search_app.command("resume")
    @friendly_errors
    def resume_cmd(
        run: Annotated[Path, typer.Argument(help="Run folder of `capslab search run`.")],
        db: Annotated[str | None, typer.Option(help="Journal URL, if not the one in run.json (e.g. to give a password).")] = None,
        workers: Annotated[int, typer.Option(min=0, help="Worker processes; 0 = one per CPU core.")] = 0,
        ray_address: Annotated[str | None, typer.Option(help="Ray cluster address.")] = None,
        device: Annotated[str | None, typer.Option(help="Override the device (auto, cpu, cuda).")] = None,
        quiet: Annotated[bool, typer.Option(help="No progress display.")] = False,
    ) -> None:
        """Continue an interrupted search: journaled evaluations are reused, never repeated."""
        from capslab.nas.search import resume

        with _interrupt_hint(run), _Progress(not quiet) as progress:
            result = resume(run, db=db, workers=_workers(workers), ray_address=ray_address, device=device, progress=progress)
        _finish(result)

    @search_app.command("report")
    @friendly_errors
    def report_cmd(
        run: Annotated[Path, typer.Argument(help="Run folder.")],
        out: Annotated[Path | None, typer.Option(help="Report folder (default: RUN/report).")] = None,
        baseline_accuracy: Annotated[list[str] | None, typer.Option("--baseline-accuracy", help="Known accuracy of a baseline, e.g. capsnet=0.9967 (repeatable); without it baselines are drawn on the hardware axes only.")] = None,
        db: Annotated[str | None, typer.Option(help="Journal URL, if not the one in run.json.")] = None,
    ) -> None:
        """Write candidates.csv, pareto.json/.csv and objectives.png (every pair of objectives)."""
        from capslab.nas.report import pareto_front, write_report
        from capslab.nas.search import open_journal

        accs = {}
        for name, value in parse_options(baseline_accuracy).items():
            key = {"capsnet": "CapsNet", "deepcaps": "DeepCaps"}.get(name.lower())
            if key is None:
                raise ValueError(f"unknown baseline {name!r}; valid: capsnet, deepcaps")
            value = float(value)
            accs[key] = value / 100 if value > 1 else value
        journal, info = open_journal(run, db)
        with journal:
            records = journal.evaluations()
        if not records:
            raise ValueError(f"{run}: the journal holds no evaluation yet")
        title = f"{info['config']['dataset']}: {len(records)} candidates"
        paths = write_report(records, out or Path(run) / "report", baseline_accuracy=accs, title=title)
        console.print(_front_table(pareto_front(records), "Pareto front of all candidates"))
        for name, path in paths.items():
            console.print(f"{name}: {path}")

    @search_app.command("finalize")
    @friendly_errors
    def finalize_cmd(
        run: Annotated[Path, typer.Argument(help="Run folder.")],
        epochs: Annotated[int, typer.Option(min=1, help="Full-training epochs (paper: up to 300 on CIFAR-10).")] = 30,
        out: Annotated[Path | None, typer.Option(help="Folder of the trained networks and tables (default: RUN/final).")] = None,
        subset: Annotated[int | None, typer.Option(help="Train on a stratified subset of N images.")] = None,
        test_subset: Annotated[int | None, typer.Option(help="Test on a stratified subset of M images.")] = None,
        batch_size: Annotated[int | None, typer.Option(help="Batch size (default: the search's).")] = None,
        lr: Annotated[float | None, typer.Option(help="Learning rate (default: the search's).")] = None,
        policy: Annotated[str | None, typer.Option(help="Training policy (default: the search's).")] = None,
        device: Annotated[str | None, typer.Option(help="auto, cpu, cuda or cuda:N (default: the search's).")] = None,
        db: Annotated[str | None, typer.Option(help="Journal URL, if not the one in run.json.")] = None,
    ) -> None:
        """Fully train the Pareto set; table like the paper's Table 3 (final.csv/.md/.json).
        Networks already trained are not retrained."""
        from capslab.nas.report import finalize, markdown_table, pareto_front, summary_matches
        from capslab.nas.search import SearchConfig, open_journal
        from capslab.train import TrainConfig, train

        journal, info = open_journal(run, db)
        with journal:
            front = pareto_front(journal.evaluations())
        if not front:
            raise ValueError(f"{run}: no successful candidate to finalize")
        cfg = SearchConfig.from_dict(info["config"])

        def train_config(genotype, run_dir=None):
            return TrainConfig(
                model="genotype", model_options={"genotype": genotype.to_nascaps()},
                dataset=cfg.dataset, data_dir=cfg.data_dir, epochs=epochs,
                batch_size=batch_size or cfg.batch_size, lr=lr if lr is not None else cfg.lr,
                policy=policy or cfg.policy,
                policy_options={} if policy else dict(cfg.policy_options),
                subset=subset, test_subset=test_subset, seed=cfg.seed,
                device=device or cfg.device, out=None if run_dir is None else str(run_dir),
                resume=True,
            )

        def train_fn(genotype, run_dir):
            return train(train_config(genotype, run_dir), progress=True)

        def reuse(genotype, summary):
            # a network trained earlier with other settings (e.g. fewer --epochs) is not reused:
            # it is trained again, or its checkpoint's mismatch is reported
            return summary_matches(summary, train_config(genotype).identity())

        console.print(f"fully training {len(front)} Pareto-optimal network(s) for {epochs} epochs")
        rows = finalize(front, out or Path(run) / "final", train_fn, reuse=reuse)
        console.print(markdown_table(rows), markup=False, highlight=False)

    # `capslab search --dataset mnist ...` runs a search, like `capslab search run ...`.
    def search_callback(ctx: typer.Context, **kwargs: Any) -> None:
        if ctx.invoked_subcommand is None:
            friendly_errors(run_cmd)(**kwargs)

    sig = inspect.signature(run_cmd, eval_str=True)
    ctx_param = inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)
    search_callback.__signature__ = sig.replace(parameters=[ctx_param, *sig.parameters.values()])  # type: ignore[attr-defined]
    search_callback.__annotations__ = {
        "ctx": typer.Context, **{n: p.annotation for n, p in sig.parameters.items()}
    }
    search_callback.__doc__ = "Search commands; with options and no command, start a search (as `run`)."
    search_app.callback(invoke_without_command=True)(search_callback)
    app.add_typer(search_app, name="search")
