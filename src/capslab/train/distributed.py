"""Data-parallel training: the processes of a run, their process group and what they share.

A run with ``nproc`` > 1 trains in that many processes (*ranks*), each with a copy of the model
wrapped in :class:`~torch.nn.parallel.DistributedDataParallel`: every rank computes the
gradient of its share of each global batch (:class:`~capslab.data.BatchLoader`'s ``rank`` and
``world_size``), DDP averages the gradients, and every rank takes the same optimiser step.
The processes come from one of two launchers:

- CapsLab itself (``capslab train --nproc N``, ``TrainConfig(nproc=N)``): :func:`spawn` starts
  N processes on this machine with PyTorch's ``spawn`` start method and the environment that
  ``torchrun`` would give them (``MASTER_ADDR`` 127.0.0.1 and a free port, ``RANK``,
  ``WORLD_SIZE``, ``LOCAL_RANK``), waits for them and re-raises a worker's error in the
  calling process;
- ``torchrun`` (one or several machines): each process finds that environment already set
  (:func:`launched_ranks`) and only joins the group.

Either way a rank runs :func:`capslab.train.loop.train`, inside :func:`process_group` (gloo on
the CPU, NCCL on CUDA, torn down on exit). Rank 0 alone evaluates and writes files.
"""

from __future__ import annotations

import os
import pickle
import socket
import tempfile
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing import connection, parent_process
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from capslab.errors import CapsLabError, ConfigError
from capslab.io import atomic_write_bytes

#: the address of a group that :func:`spawn` starts on this machine
LOCALHOST = "127.0.0.1"
#: what ``torch.distributed``'s ``env://`` initialisation reads (``torchrun`` sets them all)
LAUNCH_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
#: where a worker of :func:`spawn` records its error for the caller (a folder)
ERRORS_ENV = "CAPSLAB_RANK_ERRORS"


@dataclass(frozen=True)
class Ranks:
    """This process's place in its group: ``rank`` of ``world_size``, ``local_rank`` on its
    machine (its GPU there). ``world_size`` 1 is a plain run: no group, and every collective
    below returns its input."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Whether this is rank 0: the one that evaluates, writes files and reports."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def sum(self, tensor: Tensor) -> Tensor:
        """``tensor`` summed over the ranks, in place (every rank gets the sum)."""
        if self.distributed:
            dist.all_reduce(tensor)
        return tensor

    def from_main(self, obj: Any) -> Any:
        """Rank 0's ``obj`` (anything that pickles), on every rank."""
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]


#: the one process of a plain run
SINGLE = Ranks()


def launched_ranks() -> Ranks | None:
    """The ranks a launcher (``torchrun``, or :func:`spawn`) gave this process through the
    environment, else ``None``."""
    if not all(key in os.environ for key in LAUNCH_ENV):
        return None
    rank = int(os.environ["RANK"])
    return Ranks(rank, int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", rank)))


def process_rank() -> int:
    """This process's rank as its launcher set it (0 outside a group): the command line prints
    its results on rank 0 only."""
    ranks = launched_ranks()
    return 0 if ranks is None else ranks.rank


def check_process_count(requested: int, ranks: Ranks) -> None:
    """Refuse ``nproc`` that disagrees with the group a launcher started (``torchrun`` decides
    the number of processes: ``nproc`` is then 1, the default, or the same number)."""
    if requested not in (1, ranks.world_size):
        raise ConfigError(
            f"nproc {requested} disagrees with the {ranks.world_size} processes of the group this "
            "process was launched in (torchrun decides the number: leave --nproc out)"
        )


# --------------------------------------------------------------------------- the group
def rank_device(device: torch.device, ranks: Ranks) -> torch.device:
    """The device of ``ranks``' process: on CUDA the GPU of its local rank, else ``device``.

    Raises:
        ConfigError: one GPU named (``cuda:N``) for several processes, or fewer GPUs on this
            machine than its processes (the local rank + 1).
    """
    if device.type != "cuda" or not ranks.distributed:
        return device
    if device.index is not None:
        raise ConfigError(
            f"device {device} names one GPU; with several processes each takes the GPU of its "
            "local rank: use --device cuda"
        )
    needed, count = ranks.local_rank + 1, torch.cuda.device_count()
    if needed > count:
        raise ConfigError(f"{needed} processes need {needed} GPUs on this machine; it has {count}")
    return torch.device("cuda", ranks.local_rank)


def backend(device: torch.device) -> str:
    """The collectives' library for ``device``: NCCL for GPUs, gloo for the CPU."""
    return "nccl" if device.type == "cuda" else "gloo"


@contextmanager
def process_group(ranks: Ranks, device: torch.device) -> Iterator[None]:
    """Join the group of ``ranks`` (nothing for a plain run) and leave it on exit, also when
    the run fails. A worker of :func:`spawn` records its error before it leaves: the other
    ranks fail only once it has left, so the caller can tell the first error from theirs."""
    if not ranks.distributed:
        yield
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend(device), rank=ranks.rank, world_size=ranks.world_size)
    try:
        yield
    except BaseException as exc:
        record_error(ranks.rank, exc)
        raise
    finally:
        dist.destroy_process_group()


def data_parallel(model: nn.Module, device: torch.device, ranks: Ranks) -> nn.Module:
    """``model`` as the training steps call it: wrapped in DDP in a group (which starts from
    rank 0's weights and averages the gradients in the backward pass), else ``model``."""
    if not ranks.distributed:
        return model
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def global_batch(train_size: int, batch_size: int, step: int) -> int:
    """The number of images in global batch ``step`` of an epoch over ``train_size`` images in
    batches of ``batch_size`` (the last one may be smaller)."""
    return min(batch_size, train_size - step * batch_size)


def shared_loss(loss: Tensor, share: float, ranks: Ranks) -> tuple[Tensor, Tensor]:
    """What a rank back-propagates, and the global batch's mean loss, from ``loss``: the mean
    over its images, which are ``share`` of the global batch's.

    DDP averages the ranks' gradients; scaled by ``world_size * share`` (1 for equal shares),
    their average is the gradient of the global batch's mean loss, also in a last batch that
    does not split evenly. A plain run returns ``loss`` as it is.

    Shapes:
        loss: ``[]``; returns two ``[]`` tensors (the second detached, the same on every rank).
    """
    if not ranks.distributed:
        return loss, loss.detach()
    return loss * (ranks.world_size * share), ranks.sum(loss.detach() * share)


# --------------------------------------------------------------------------- the launcher
def spawn(fn: Callable[..., Any], processes: int, *args: Any) -> Any:
    """Run ``fn(*args)`` in ``processes`` new processes on this machine, as the ranks of one
    group, and return rank 0's result.

    Each process has ``torch.get_num_threads() // processes`` threads (at least one), so the
    ranks share this process's cores. A worker's error is raised here: a
    :class:`~capslab.errors.CapsLabError` as itself (the command line's one line and exit
    code), any other with the worker's traceback as a note. ``args`` must pickle.
    """
    check_picklable(args)
    threads = max(1, torch.get_num_threads() // processes)
    with tempfile.TemporaryDirectory(prefix="capslab-ranks-") as folder:
        try:
            mp.start_processes(_run_rank, args=(fn, processes, free_port(), threads, folder, args),
                               nprocs=processes, start_method="spawn")
        except (mp.ProcessRaisedException, mp.ProcessExitedException) as exc:
            raise worker_error(Path(folder), exc) from None
        return pickle.loads((Path(folder) / "result.pkl").read_bytes())


def check_picklable(args: tuple) -> None:
    """Refuse arguments that cannot travel to the worker processes (e.g. a callback that is a
    lambda): name it in one line rather than fail in the launcher."""
    try:
        pickle.dumps(args)
    except Exception as exc:
        raise ConfigError(
            "training in several processes sends the config and the callbacks to them, and "
            f"these do not pickle ({type(exc).__name__}: {exc}); use module-level classes"
        ) from None


def free_port() -> int:
    """A TCP port of 127.0.0.1 that no one listens on now (for rank 0's rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOCALHOST, 0))
        return s.getsockname()[1]


def _run_rank(index: int, fn: Callable[..., Any], processes: int, port: int, threads: int,
              folder: str, args: tuple) -> None:
    """A worker of :func:`spawn`: rank ``index``'s environment, then ``fn(*args)``; rank 0's
    result, or any rank's error, goes to a file in ``folder``."""
    os.environ.update(MASTER_ADDR=LOCALHOST, MASTER_PORT=str(port), RANK=str(index),
                      LOCAL_RANK=str(index), WORLD_SIZE=str(processes),
                      LOCAL_WORLD_SIZE=str(processes), **{ERRORS_ENV: folder})
    torch.set_num_threads(threads)
    _exit_with_parent()
    try:
        result = fn(*args)
    except BaseException as exc:
        record_error(index, exc)  # an error before the group was joined: not recorded yet
        raise
    if index == 0:
        atomic_write_bytes(Path(folder) / "result.pkl", pickle.dumps(result))


def _exit_with_parent() -> None:
    """End this worker when the process that spawned it dies (killed, say): no orphan goes on
    writing the run folder that a resumed run then writes too."""
    parent = parent_process()
    if parent is None:
        return

    def watch() -> None:
        connection.wait([parent.sentinel])
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="capslab-parent-watch").start()


def record_error(rank: int, exc: BaseException) -> None:
    """Record ``exc`` for the caller of :func:`spawn` (once per rank; nothing under another
    launcher): the exception itself when it pickles, always its type, message and traceback."""
    folder = os.environ.get(ERRORS_ENV)
    path = None if folder is None else Path(folder) / f"error-{rank}.pkl"
    if path is None or path.exists():
        return
    text = "".join(traceback.format_exception(exc))
    try:
        kept = pickle.loads(pickle.dumps(exc))
    except Exception:  # an exception that does not survive pickling travels as text only
        kept = None
    record = {"rank": rank, "error": kept, "type": type(exc).__name__, "message": str(exc),
              "traceback": text}
    atomic_write_bytes(path, pickle.dumps(record))


def worker_error(folder: Path, failure: Exception) -> BaseException:
    """The error to raise for a group whose workers failed: the first CapsLab error recorded,
    else the first error recorded (with the worker's traceback as a note), else ``failure``
    (a worker killed by a signal records nothing)."""
    paths = sorted(folder.glob("error-*.pkl"), key=lambda p: p.stat().st_mtime_ns)
    records = [pickle.loads(p.read_bytes()) for p in paths]
    if not records:
        return failure
    capslab = [r for r in records if isinstance(r["error"], CapsLabError)]
    record = (capslab or records)[0]
    error = record["error"]
    if isinstance(error, CapsLabError):
        return error
    if error is None:
        error = RuntimeError(f"{record['type']}: {record['message']}")
    error.add_note(f"in training process {record['rank']}:\n{record['traceback']}")
    return error
