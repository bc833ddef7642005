"""Errors of the data layer. Every one of them names the file (or files) and what is wrong."""

from __future__ import annotations


class DatasetError(Exception):
    """Base class of every data-layer error (missing file, bad format, bad checksum, ...)."""


class UnknownDatasetError(DatasetError, KeyError):
    """A dataset name or split that the registry does not know."""

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return str(self.args[0]) if self.args else ""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """A file of a dataset is in none of the folders searched."""


_DAMAGED_FILE_HINT = (
    " The file was not used. Replace it with an intact copy of the original (point "
    "--data-dir or CAPSLAB_DATA at it), or delete it and, when online, run "
    "`capslab datasets --download DATASET`."
)


class _DamagedFileError(DatasetError):
    """A file that exists but cannot be trusted: the message says what to do about it."""

    def __str__(self) -> str:
        return super().__str__() + _DAMAGED_FILE_HINT


class DatasetFormatError(_DamagedFileError, ValueError):
    """A file is not in the expected format (wrong magic number, truncated, bad shape, ...)."""


class ChecksumError(_DamagedFileError):
    """A file's md5 differs from the published (pinned) one."""


class DownloadError(DatasetError):
    """A download failed (offline, HTTP error, ...)."""
