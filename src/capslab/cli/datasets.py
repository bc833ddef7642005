"""``capslab datasets``: which dataset files are where, verified or not; download them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from capslab.cli.common import console, err_console


def _human(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file())


def file_status(name: str, filename: str, data_dir: str | None, verify: bool) -> dict[str, Any]:
    """Where one registry file is, its size and whether its md5 matches (``verified``:
    ``True``/``False``/``None`` for not checked)."""
    from capslab.data import sources
    from capslab.errors import DatasetError
    from capslab.data.registry import get_spec

    spec = get_spec(name)
    fspec = spec.files[filename]
    splits = [s for s, sp in spec.splits.items() if filename in sp.files]
    row: dict[str, Any] = {
        "dataset": spec.name, "splits": splits, "file": filename, "present": False,
        "path": None, "origin": None, "variant": None, "size": None, "verified": None,
        "check": "", "md5": fspec.md5, "urls": list(fspec.urls),
    }
    loc = sources.locate_file(name, filename, data_dir)
    if loc is None:
        split = next((spec.splits[s] for s in splits if spec.splits[s].folder), None)
        if split is not None:
            loc = sources.locate_extracted(name, split, data_dir)
    if loc is None:
        return row
    row.update(present=True, path=str(loc.path), origin=loc.origin, variant=loc.variant)
    if loc.variant == "extracted":
        row["size"] = _dir_size(loc.path)
        members = [m for s in splits for m in spec.splits[s].members]
        try:
            if verify:
                for m in members:
                    if m in spec.member_md5:
                        sources.verify_member(loc.path / Path(m).name, spec.member_md5[m], force=True)
                row.update(verified=True, check="md5 of each batch")
            else:
                cached = [sources.cached_verification(loc.path / Path(m).name) for m in members]
                if all(c and c.get("md5") == spec.member_md5.get(m) for c, m in zip(cached, members, strict=True)):
                    row.update(verified=True, check="cached")
        except DatasetError as e:
            row.update(verified=False, check=str(e))
        return row
    row["size"] = loc.path.stat().st_size
    if verify:
        try:
            row.update(verified=True, check=sources.verify_file(loc.path, fspec, force=True))
        except DatasetError as e:
            row.update(verified=False, check=str(e))
    else:
        cached = sources.cached_verification(loc.path)
        if cached:
            if cached.get("md5") == fspec.md5:
                row.update(verified=True, check="cached")
            elif fspec.raw_md5 and cached.get("raw_md5") == fspec.raw_md5:
                row.update(verified=True, check="cached (decompressed md5)")
            elif fspec.raw_md5 is None or "raw_md5" in cached:
                row.update(verified=False, check="cached: checksum mismatch")
    return row


def collect(names: list[str], data_dir: str | None, verify: bool) -> list[dict[str, Any]]:
    from capslab.data.registry import get_spec

    rows = []
    for name in names:
        spec = get_spec(name)
        files = list(dict.fromkeys(f for sp in spec.splits.values() for f in sp.files))
        rows.extend(file_status(spec.name, f, data_dir, verify) for f in files)
    return rows


def datasets(
    names: list[str] | None = typer.Argument(
        None, help="Datasets to show (default: all of them).", show_default=False
    ),
    data_dir: Path | None = typer.Option(
        None, "--data-dir", "-d", help="Folder searched first (before $CAPSLAB_DATA and the cache).",
        file_okay=False,
    ),
    verify: bool = typer.Option(
        False, "--verify", help="Recompute the md5 of every file found (else: remembered results)."
    ),
    download: list[str] | None = typer.Option(
        None, "--download", help="Download a dataset's missing files (NAME or 'all'; repeatable).",
        show_default=False,
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Show each dataset's files: where they were found, their size and whether their md5 is
    the published one. Looks in --data-dir, $CAPSLAB_DATA, ~/.cache/capslab/datasets and known
    system copies."""
    from capslab.data import sources
    from capslab.errors import DatasetError
    from capslab.data.registry import canonical_name, dataset_info, list_datasets

    root = str(data_dir) if data_dir is not None else None
    try:
        selected = [canonical_name(n) for n in names] if names else list_datasets()
        to_download = []
        for n in download or []:
            to_download.extend(list_datasets() if n.lower() == "all" else [canonical_name(n)])
    except DatasetError as e:
        err_console.print(f"[bold red]error:[/] {e}", highlight=False)
        raise typer.Exit(2) from None

    for name in dict.fromkeys(to_download):
        dest = (Path(root) if root else sources.default_data_dir()) / name
        if not as_json:
            err_console.print(f"downloading {name} into {dest} ...", highlight=False)
        try:
            from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

            with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                          TransferSpeedColumn(), console=err_console, disable=as_json) as bar:
                task = bar.add_task(name, total=None)
                sources.download(name, root, progress=lambda done, total, t=task: bar.update(
                    t, completed=done, total=total))
        except DatasetError as e:
            err_console.print(f"[bold red]error:[/] {e}", highlight=False)
            raise typer.Exit(2) from None

    rows = collect(selected, root, verify)
    failed = any(r["verified"] is False for r in rows)
    if as_json:
        out = {
            "search_dirs": {n: [{"path": str(d.path), "origin": d.origin}
                                for d in sources.search_dirs(n, root)] for n in selected},
            "datasets": {n: dataset_info(n).to_dict() for n in selected},
            "files": rows,
        }
        typer.echo(json.dumps(out, indent=2))
        raise typer.Exit(1 if failed and verify else 0)

    console.print("Searched, in order:", highlight=False)
    folders: dict[Path, tuple[str, list[str]]] = {}
    for n in selected:
        for d in sources.search_dirs(n, root):
            folders.setdefault(d.path, (d.origin, []))[1].append(n)
    for path, (origin, users) in folders.items():
        only = "" if len(users) == len(selected) else f", {', '.join(users)} only"
        state = "" if path.is_dir() else " (missing)"
        console.print(f"  {path} [dim]\\[{origin}{only}]{state}[/]", highlight=False)
    table = Table(title="CapsLab datasets")
    for col in ("dataset", "split", "file", "where found", "present", "verified", "size"):
        table.add_column(col, justify="right" if col == "size" else "left",
                         overflow="fold" if col in ("where found", "file") else "ellipsis")
    for r in rows:
        if r["verified"] is True:
            ver = f"[green]ok[/] [dim]{r['check']}[/]"
        elif r["verified"] is False:
            ver = "[bold red]FAILED[/]"
        else:
            ver = "[dim]-[/]" if not r["present"] else "[yellow]not checked[/]"
        where = f"{r['path']} [dim]({r['origin']})[/]" if r["present"] else "[dim]-[/]"
        table.add_row(r["dataset"], ", ".join(r["splits"]), r["file"], where,
                      "[green]yes[/]" if r["present"] else "[red]no[/]", ver, _human(r["size"]))
    console.print(table)
    for r in rows:
        if r["verified"] is False:
            err_console.print(f"[bold red]checksum:[/] {r['check']}", highlight=False)
    missing = sorted({r["dataset"] for r in rows if not r["present"]})
    if missing:
        console.print(
            f"[dim]Missing: {', '.join(missing)}. Point --data-dir or CAPSLAB_DATA at a folder with "
            "the official files, or (online) run `capslab datasets --download NAME`.[/]",
            highlight=False,
        )
    if any(r["present"] and r["verified"] is None for r in rows):
        console.print("[dim]Run with --verify to check the md5 of every file found.[/]")
    if failed and verify:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("datasets")(datasets)
