"""Every error CapsLab raises on purpose, under one base class.

The type says "the user can fix this": the command line turns exactly the :class:`CapsLabError`
family into one red line and exit code 2. Anything else (a shape mismatch, an out-of-memory
``RuntimeError``, a ``KeyError`` in our own code) is a bug or a resource problem and keeps its
traceback. Domain errors also derive from the built-in type that callers may already catch
(``ValueError``, ``FileNotFoundError``, ...).
"""

from __future__ import annotations


class CapsLabError(Exception):
    """Base class of every error that a user's input or environment causes."""

    #: the command line's exit code for this error (2: bad input, the default)
    exit_code = 2


# --------------------------------------------------------------------------- settings
class ConfigError(CapsLabError, ValueError):
    """A configuration key or value that is not valid (unknown key, bad type, bad range)."""


class GenotypeError(CapsLabError, ValueError):
    """A genotype that is malformed or describes an impossible network."""


class AcceleratorError(CapsLabError, ValueError):
    """An accelerator description that is malformed or incomplete."""


class MissingDependencyError(CapsLabError, ImportError):
    """An optional package that a feature needs is not installed (the message says which)."""


# --------------------------------------------------------------------------- runs and files
class CheckpointError(CapsLabError, ValueError):
    """A checkpoint that is missing, corrupt, foreign, or of another model or config."""


class RunMismatchError(CapsLabError):
    """A run folder (training run, study, search) that holds a run of other settings, or
    cannot be continued as recorded."""


class JournalUnavailableError(CapsLabError):
    """The search journal's database stayed unreachable longer than the search waits for it.
    Not bad input: the command exits with code 1 (the run can be resumed once it is back)."""

    exit_code = 1


class RunBusyError(RunMismatchError):
    """Another process drives this search run (it holds the run's lease and beats it)."""


# --------------------------------------------------------------------------- training
class TrainingError(CapsLabError, RuntimeError):
    """Training stopped for a reason the user can act on."""


class NonFiniteLossError(TrainingError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class TrainingTimeout(TrainingError):
    """The run exceeded its time limit."""


class CandidateTimeout(TrainingError):
    """An architecture-search candidate ran past the per-candidate time limit."""


class CandidateFailed(TrainingError):
    """A candidate could not be evaluated (the message is the recorded reason)."""


# --------------------------------------------------------------------------- data
class DatasetError(CapsLabError):
    """Base class of every data-layer error; each names the file (or files) and what is wrong."""


class UnknownDatasetError(DatasetError, KeyError):
    """A dataset name or split that the registry does not know."""

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return str(self.args[0]) if self.args else ""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """A file of a dataset is in none of the folders searched."""


_DAMAGED_FILE_HINT = (
    " The file was not used. Replace it with an intact copy of the original (in the data "
    "folder or CAPSLAB_DATA), or delete it and download the dataset again."
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


class CustomDataError(DatasetError, ValueError):
    """Your own data (a folder of images, an .npz file, tensors) that cannot be a dataset as it
    is: an empty class, images of mixed sizes, an unreadable image, labels out of range, a
    missing array; the message names the file, folder or array."""
