"""Making sure a dataset's files are there: :func:`require_files` finds them
(:mod:`capslab.data.locations`), downloads the missing ones when allowed
(:mod:`capslab.data.downloads`), or raises the error that lists where they were searched.
"""

from __future__ import annotations

from capslab.data.downloads import (
    DEFAULT_TIMEOUT,
    ENV_OFFLINE,
    download_dir,
    download_missing,
    offline,
)
from capslab.data.locations import ENV_DATA, locate_split, search_dirs, subfolders
from capslab.data.registry import get_spec
from capslab.errors import DatasetNotFoundError, DownloadError


def require_files(name: str, data_dir=None, splits: tuple[str, ...] = ("train", "test"),
                  download: bool = False, checksums: dict[str, str] | None = None,
                  timeout: float = DEFAULT_TIMEOUT) -> None:
    """Make sure every file of ``splits`` is found (nothing is read); with ``download``, the
    missing ones are downloaded first (into :func:`~capslab.data.downloads.download_dir`; one line
    is reported, see :func:`~capslab.data.downloads.download_feedback`). A search or study calls
    this before it writes its run folder, ``load_dataset`` before it reads.

    Raises :class:`DatasetNotFoundError` for a file that is missing and was not downloaded:
    ``download=False``, ``$CAPSLAB_OFFLINE`` set (no connection is made) or the download failed
    (no connection, HTTP error, time-out); the message says which and where to put the files.
    :class:`ChecksumError` when every URL served a wrong file.
    """
    spec = get_spec(name)
    missing = {s: locate_split(spec.name, spec.splits[s], data_dir)[1] for s in splits}
    missing = {s: files for s, files in missing.items() if files}
    if not missing:
        return
    split, files = next(iter(missing.items()))
    dest = download_dir(spec.name, data_dir)
    if not download:
        raise not_found_error(spec.name, split, files, data_dir)
    if offline():
        raise not_found_error(spec.name, split, files, data_dir, why=(
            f"Nothing was downloaded because {ENV_OFFLINE} is set; unset it to download them "
            f"into {dest}."))
    try:
        download_missing(spec.name, dict.fromkeys(f for fs in missing.values() for f in fs),
                         data_dir, checksums, timeout)
    except DownloadError as e:
        reasons = "; ".join(getattr(e, "failures", None) or [str(e)])
        raise not_found_error(spec.name, split, files, data_dir, why=(
            f"Downloading them into {dest} failed (offline or server unreachable?): {reasons}."
        )) from e


def not_found_error(name: str, split: str, missing: list[str], data_dir=None,
                    why: str = "") -> DatasetNotFoundError:
    """The error for files of ``split`` found nowhere: the folders searched and how to fix it.
    ``why`` says why nothing was downloaded (default: a hint that downloading is possible)."""
    spec = get_spec(name)
    lines = [
        f"dataset {spec.name!r} (split {split!r}): "
        f"{'file' if len(missing) == 1 else 'files'} {', '.join(missing)} not found.",
        "Searched, in order:",
    ]
    subs = ", ".join(f"{s}/" for s in subfolders(spec))
    for d in search_dirs(name, data_dir):
        state = "" if d.path.is_dir() else " (folder does not exist)"
        lines.append(f"  - {d.path}  [{d.origin}]{state}  (also in its sub-folders {subs})")
    fix = (f"To fix: give a data folder (data_dir) or set {ENV_DATA}=DIR to a folder holding the "
           f"official files (as DIR/{spec.name}/FILE or DIR/FILE)")
    lines.append(f"{fix}. {why}" if why else
                 f"{fix}, or, when online, let CapsLab download them (download=True) into "
                 f"{download_dir(spec.name, data_dir)}.")
    return DatasetNotFoundError("\n".join(lines))
