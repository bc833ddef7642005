"""``capslab datasets``: which dataset files are where, verified or not; download them."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from capslab.cli.options import JsonFlag, split_list
from capslab.cli.output import console, emit, err_console, note


def _human(n: int | None) -> str:
    if n is None:
        return "-"
    if n < 1024:
        return f"{n} B"
    for unit in ("KiB", "MiB"):
        n /= 1024
        if n < 1024:
            return f"{n:.1f} {unit}"
    return f"{n / 1024:.1f} GiB"


def file_status(name: str, filename: str, data_dir: str | None, verify: bool) -> dict[str, Any]:
    """Where one registry file is, its size and whether its md5 matches (``verified``:
    ``True``/``False``/``None`` for not checked)."""
    from capslab.data import checksums, locations  # deferred: capslab.data imports torch
    from capslab.data.registry import get_spec
    from capslab.errors import DatasetError

    spec = get_spec(name)
    fspec = spec.files[filename]
    splits = [s for s, sp in spec.splits.items() if filename in sp.files]
    row: dict[str, Any] = {
        "dataset": spec.name, "splits": splits, "file": filename, "present": False,
        "path": None, "origin": None, "variant": None, "size": None, "verified": None,
        "check": "", "md5": fspec.md5 or None, "urls": list(fspec.urls),
    }
    loc = locations.locate_file(name, filename, data_dir)
    split = next((spec.splits[s] for s in splits if spec.splits[s].folder), None)
    if loc is None and split is not None:
        loc = locations.locate_extracted(name, split, data_dir)
    if loc is None:
        return row
    row.update(present=True, path=str(loc.path), origin=loc.origin, variant=loc.variant)
    try:
        if loc.variant == "extracted":
            row["size"] = sum(p.stat().st_size for p in loc.path.iterdir() if p.is_file())
            members = {m: loc.path / Path(m).name for s in splits for m in spec.splits[s].members}
            pinned = spec.member_md5
            if verify:
                for m, path in members.items():
                    if m in pinned:
                        checksums.verify_member(path, pinned[m], force=True)
                row.update(verified=True, check="md5 of each batch")
            elif all((c := checksums.cached_verification(path)) and c.get("md5") == pinned.get(m)
                     for m, path in members.items()):
                row.update(verified=True, check="cached")
            return row
        row["size"] = loc.path.stat().st_size
        if not fspec.pinned:  # nothing to check it against: said so, never "verified"
            row.update(check=checksums.UNPINNED)
            return row
        if verify:
            row.update(verified=True, check=checksums.verify_file(loc.path, fspec, force=True))
        elif cached := checksums.cached_verification(loc.path):
            if cached.get("md5") == fspec.md5:
                row.update(verified=True, check="cached")
            elif fspec.raw_md5 and cached.get("raw_md5") == fspec.raw_md5:
                row.update(verified=True, check="cached (decompressed md5)")
            elif fspec.raw_md5 is None or "raw_md5" in cached:
                row.update(verified=False, check="cached: checksum mismatch")
    except DatasetError as e:
        row.update(verified=False, check=str(e))
    return row


def collect(names: list[str], data_dir: str | None, verify: bool) -> list[dict[str, Any]]:
    # imported on use, so that the CLI starts without it
    from capslab.data.registry import get_spec

    return [file_status(n, f, data_dir, verify) for n in names for f in get_spec(n).files]


def download_names(text: str | None) -> list[str]:
    """``--download`` value -> canonical dataset names: a comma list, or ``all``."""
    # imported on use, so that the CLI starts without it
    from capslab.data.registry import canonical_name, list_datasets

    names: list[str] = []
    for n in split_list(text):
        names.extend(list_datasets() if n.lower() == "all" else [canonical_name(n)])
    return list(dict.fromkeys(names))


class _DownloadDisplay:
    """A bar per file on stderr while bytes arrive (none with ``--json``), then the one-line
    note of what was downloaded where, printed once the bar is gone."""

    def __init__(self, as_json: bool):
        self.as_json = as_json
        self.bar = None
        self.tasks: dict[str, Any] = {}

    def progress(self, filename: str, done: int, total: int | None) -> None:
        if self.bar is None:
            from rich.errors import LiveError
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                TransferSpeedColumn(), TimeRemainingColumn(), console=err_console,
                                transient=True, disable=self.as_json, redirect_stdout=False,
                                redirect_stderr=False)
            try:
                self.bar.start()
            except LiveError:  # a command's own progress display is live: no second bar
                self.bar = Progress(console=err_console, disable=True)
        if filename not in self.tasks:
            self.tasks[filename] = self.bar.add_task(filename, total=total)
        self.bar.update(self.tasks[filename], completed=done, total=total)

    def report(self, line: str) -> None:
        self.close()
        # one line, as promised, however long the paths: no wrapping
        (err_console if self.as_json else console).print(escape(line), highlight=False,
                                                         soft_wrap=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
        self.bar, self.tasks = None, {}


@contextmanager
def download_display(as_json: bool = False):
    """Show every download made inside the block (by ``capslab datasets --download`` or
    automatically by a command that needs a missing dataset): a progress bar per file on stderr,
    then one line saying what was downloaded and where (stdout; stderr with ``--json``)."""
    from capslab.data import downloads  # deferred: capslab.data imports torch

    display = _DownloadDisplay(as_json)
    try:
        with downloads.download_feedback(report=display.report, progress=display.progress):
            yield
    finally:
        display.close()


def _download(names: list[str], data_dir: str | None, as_json: bool) -> None:
    from capslab.data import downloads  # deferred: capslab.data imports torch

    with download_display(as_json):
        for name in names:
            downloads.download(name, data_dir)


def _render(result: dict[str, Any]) -> None:
    """The search folders, then one table row per file, then what to do next."""
    from capslab.data.checksums import UNPINNED  # deferred: capslab.data imports torch

    selected = list(result["datasets"])
    rows = result["files"]
    console.print("Searched, in order:", highlight=False)
    folders: dict[str, tuple[str, list[str]]] = {}
    for n in selected:
        for d in result["search_dirs"][n]:
            folders.setdefault(d["path"], (d["origin"], []))[1].append(n)
    for path, (origin, users) in folders.items():
        only = "" if len(users) == len(selected) else f", {', '.join(users)} only"
        state = "" if Path(path).is_dir() else " (missing)"
        console.print(f"  {escape(path)} [dim]\\[{origin}{only}]{state}[/]", highlight=False)
    table = Table(title="CapsLab datasets")
    for col in ("dataset", "split", "file", "where found", "present", "verified", "size"):
        table.add_column(col, justify="right" if col == "size" else "left",
                         overflow="fold" if col in ("where found", "file") else "ellipsis")
    for r in rows:
        unchecked = "[yellow]no md5 pinned[/]" if r["check"] == UNPINNED else "[yellow]not checked[/]"
        ver = {True: f"[green]ok[/] [dim]{escape(r['check'])}[/]", False: "[bold red]FAILED[/]",
               None: unchecked if r["present"] else "[dim]-[/]"}[r["verified"]]
        where = f"{escape(r['path'])} [dim]({r['origin']})[/]" if r["present"] else "[dim]-[/]"
        table.add_row(r["dataset"], ", ".join(r["splits"]), r["file"], where,
                      "[green]yes[/]" if r["present"] else "[red]no[/]", ver, _human(r["size"]))
    console.print(table)
    for r in rows:
        if r["verified"] is False:
            err_console.print(f"[bold red]checksum:[/] {escape(r['check'])}", highlight=False)
    missing = sorted({r["dataset"] for r in rows if not r["present"]})
    if missing:
        note(f"[dim]Missing: {', '.join(missing)}. Commands that need them download them when "
             "online (unless CAPSLAB_OFFLINE=1); or run `capslab datasets --download NAME`, or "
             "point --data-dir or CAPSLAB_DATA at a folder with the official files.[/]")
    if any(r["present"] and r["verified"] is None and r["check"] != UNPINNED for r in rows):
        note("[dim]Run with --verify to check the md5 of every file found.[/]")


def datasets(
    names: Annotated[list[str] | None, typer.Argument(
        help="Datasets to show (default: all of them); the path of your own data (a folder of "
        "images, an .npz file) shows what was found in it.", show_default=False)] = None,
    data_dir: Annotated[Path | None, typer.Option(
        "--data-dir", "-d", help="Folder searched first (before $CAPSLAB_DATA and the cache).",
        file_okay=False)] = None,
    verify: Annotated[bool, typer.Option(
        "--verify", help="Recompute the md5 of every file found (else: remembered results).")] = False,
    download: Annotated[str | None, typer.Option(
        "--download", help="Download the missing files of these datasets first (resumable, md5 "
        "checked; official URLs or $CAPSLAB_MIRRORS): a comma list (mnist,fashion-mnist) or "
        "'all'.", show_default=False)] = None,
    as_json: JsonFlag = False,
) -> None:
    """Show each dataset's files: where they were found, their size and whether their md5 is
    the published one. Looks in --data-dir, $CAPSLAB_DATA, ~/.cache/capslab/datasets and known
    system copies; --download fetches missing ones (into --data-dir, else the cache).
    Exits with 1 when --verify finds a file with a wrong checksum. Your own data (a path) is
    read and checked: its classes, image shape, splits and statistics, or the one line that says
    what is wrong with it."""
    from capslab.data import is_custom, locations  # deferred: capslab.data imports torch
    from capslab.data.registry import canonical_name, dataset_info, list_datasets
    from capslab.results import versioned

    data_dir = str(data_dir) if data_dir is not None else None
    own = [n for n in names or [] if is_custom(n)]
    if own and len(own) == len(names):
        emit(versioned("datasets", {"custom": _own_data(own)}, version=1), as_json, _render_own)
        return
    names = [n for n in names or [] if n not in own]
    selected = list(dict.fromkeys(canonical_name(n) for n in names)) if names else list_datasets()
    _download(download_names(download), data_dir, as_json)

    rows = collect(selected, data_dir, verify)
    result = versioned("datasets", {
        "search_dirs": {n: [{"path": str(d.path), "origin": d.origin}
                            for d in locations.search_dirs(n, data_dir)] for n in selected},
        "datasets": {n: dataset_info(n).to_dict() for n in selected},
        "files": rows,
        **({"custom": _own_data(own)} if own else {}),
    }, version=1)
    emit(result, as_json, lambda r: (_render(r), _render_own(r)))
    if verify and any(r["verified"] is False for r in rows):
        raise typer.Exit(1)


def _own_data(values: list[str]) -> dict[str, Any]:
    """Your own data, read and checked: its info, where it came from and one line about it."""
    from capslab.data import dataset_info, dataset_origin, describe_dataset

    return {v: {**dataset_info(v).to_dict(), "origin": dataset_origin(v),
                "summary": describe_dataset(v)} for v in values}


def _render_own(result: dict[str, Any]) -> None:
    for entry in result.get("custom", {}).values():
        mean = ", ".join(f"{m:.4f}" for m in entry["mean"])
        std = ", ".join(f"{s:.4f}" for s in entry["std"])
        console.print(f"{escape(entry['summary'])}; mean {mean}, std {std}", highlight=False,
                      soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("datasets")(datasets)
