"""Data-parallel training (``--nproc``, torchrun): sharding, equivalence with one process,
rank 0's files, resume, refusals. Two CPU processes with gloo, on MNIST subsets."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import StepLosses, StopAfterEpoch, image_numbers, numbered_dataset
from typer.testing import CliRunner

from capslab.checkpoint import load_checkpoint
from capslab.cli.main import app
from capslab.data import BatchLoader
from capslab.errors import CheckpointError, ConfigError, TrainingError
from capslab.train import TrainConfig, train

#: a CapsNet without BatchNorm (per-process batch statistics would differ from the global
#: batch's), whose per-process batches of 16, 13 and 12 images take the same CPU paths as the
#: one-process batches of 32 and 25 (PrimaryCaps' GEMM only up to 8, ClassCaps' from-poses
#: product from 8 on)
TINY = {"conv_channels": 16, "primary_types": 4}
#: the per-step losses of two processes and of one agree to this relative tolerance. The
#: maths is the same: DDP averages the gradients of the two halves of each global batch, and a
#: last batch that does not split evenly (281 = 8 x 32 + 25: 13 and 12 images) is weighted by
#: its shares. What differs is the order of float32 sums (two means of 16, then their average,
#: against one mean of 32, in the loss and in every gradient): measured 2e-7 at most over 27
#: steps (1.7 float32 epsilons). 1e-5 leaves a margin of 50 and still catches a real error:
#: the last batch weighted 1/2 : 1/2 instead of 13/25 : 12/25 measured 4e-4 to 9e-4 from its
#: step on.
RTOL = 1e-5


def tiny_config(out, **kw) -> TrainConfig:
    base = dict(model="capsnet", model_options=TINY, dataset="mnist", epochs=3, batch_size=32,
                subset=281, test_subset=200, out=None if out is None else str(out), seed=3,
                plots=False)
    base.update(kw)
    return TrainConfig(**base)


def step_losses(tmp_path: Path, name: str, config: TrainConfig) -> tuple[list[float], dict]:
    path = tmp_path / f"{name}.json"
    summary = train(config, progress=False, callbacks=[StepLosses(path)])
    return json.loads(path.read_text()), summary


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory, mnist_root):
    """An uninterrupted 2-process run of :func:`tiny_config`: its per-step losses and folder."""
    tmp = tmp_path_factory.mktemp("ddp")
    losses, summary = step_losses(tmp, "two", tiny_config(tmp / "run", nproc=2))
    return losses, summary, tmp / "run"


# --------------------------------------------------------------------------- sharding
def _loaders(data, batch: int, world: int, augment: bool) -> list[BatchLoader]:
    """A one-process loader, then one per rank of ``world``, all over ``data`` with one seed."""
    return [BatchLoader(data, batch, shuffle=True, augment=augment, seed=5, rank=rank,
                        world_size=size) for rank, size in [(0, 1), *((r, world) for r in range(world))]]


@pytest.mark.parametrize(("size", "batch", "world"), [(70, 32, 2), (65, 64, 2), (70, 16, 4)])
def test_the_ranks_shares_hold_every_image_once_and_rebuild_each_global_batch(size, batch, world):
    """(65, 64, 2): the last batch has one image, so rank 1's share of it is empty."""
    data = numbered_dataset([i % 10 for i in range(size)])
    orders = []
    for epoch in (0, 1):
        # with augmentation: each rank's share is DistributedSampler's split of the global
        # batch (its images rank, rank + world, ...), shifted as the one-process run shifts them
        whole, *shards = _loaders(data, batch, world, augment=True)
        for loader in (whole, *shards):
            loader.set_epoch(epoch)
        assert all(len(s) == len(whole) for s in shards)  # the same number of steps everywhere
        for (images, labels), *shares in zip(whole, *shards, strict=True):
            for rank, (x, y) in enumerate(shares):
                assert torch.equal(x, images[rank::world]) and torch.equal(y, labels[rank::world])
        # without it the images can be told apart: every image exactly once per epoch
        _, *shards = _loaders(data, batch, world, augment=False)
        seen = []
        for loader in shards:
            loader.set_epoch(epoch)
            seen += [n for x, _ in loader for n in image_numbers(x)]
        assert sorted(seen) == list(range(size))
        orders.append(seen)
    assert orders[0] != orders[1]  # set_epoch reshuffles


def test_a_rank_must_be_in_its_world():
    data = numbered_dataset([0, 1, 2])
    with pytest.raises(ValueError, match="rank must be in 0..world_size - 1"):
        BatchLoader(data, 2, rank=2, world_size=2)


# --------------------------------------------------------------------------- equivalence
def test_two_processes_follow_the_one_process_loss_trajectory(two_process_run, tmp_path):
    two, two_summary, _ = two_process_run
    one, one_summary = step_losses(tmp_path, "one", tiny_config(None))
    assert len(one) == len(two) == 27  # 3 epochs of ceil(281 / 32) steps: the global batch's
    assert two == pytest.approx(one, rel=RTOL)
    # the accuracies may differ by one image, whose two longest capsules a rounding swaps
    for a, b in zip(one_summary["history"], two_summary["history"], strict=True):
        assert b["steps"] == a["steps"] and b["batch_size"] == a["batch_size"] == 32
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=RTOL)
        # counted over both ranks
        assert b["train_accuracy"] == pytest.approx(a["train_accuracy"], abs=1.5 / 281)
        # rank 0 evaluates on the whole test split
        assert b["test_loss"] == pytest.approx(a["test_loss"], rel=RTOL)
        assert b["test_accuracy"] == pytest.approx(a["test_accuracy"], abs=1.5 / 200)
    assert two_summary["test_size"] == 200 and two_summary["train_size"] == 281
    assert two_summary["identity"] == one_summary["identity"]  # nproc is not part of it
    assert two_summary["config"]["nproc"] == 2


def test_a_last_batch_of_one_image_leaves_a_rank_an_empty_share(mnist_root, tmp_path):
    """257 = 8 x 32 + 1: rank 1 steps on a stand-in image that weighs nothing."""
    one, _ = step_losses(tmp_path, "one", tiny_config(None, subset=257, epochs=1))
    two, summary = step_losses(tmp_path, "two", tiny_config(None, subset=257, epochs=1, nproc=2))
    assert len(two) == 9 and two == pytest.approx(one, rel=RTOL)
    assert summary["history"][0]["images_per_second"] > 0


# --------------------------------------------------------------------------- files
AUDIT = '''
import os, sys
_fd = os.open(os.path.join(os.environ["CAPSLAB_TEST_AUDIT"], f"{os.getpid()}.log"),
              os.O_WRONLY | os.O_CREAT | os.O_APPEND)
_watched = os.environ["CAPSLAB_TEST_WATCHED"]
_writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT

def _hook(event, args):
    if event == "open" and isinstance(args[0], str) and isinstance(args[2], int) and args[2] & _writing:
        path = args[0]
    elif event in ("os.rename", "os.replace", "os.mkdir"):
        path = str(args[1] if event != "os.mkdir" else args[0])
    else:
        return
    if os.path.abspath(path).startswith(_watched):
        os.write(_fd, f"{os.environ.get('RANK', 'parent')}\\t{event}\\t{path}\\n".encode())

sys.addaudithook(_hook)
'''


def test_only_rank_0_writes_the_run_folder(mnist_root, tmp_path):
    """The command line in a process of its own, each of its processes auditing the files it
    opens for writing, renames or creates under the run folder."""
    hook, audit, out = tmp_path / "hook", tmp_path / "audit", tmp_path / "run"
    hook.mkdir(), audit.mkdir()
    (hook / "sitecustomize.py").write_text(AUDIT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")]),
           "CAPSLAB_TEST_AUDIT": str(audit), "CAPSLAB_TEST_WATCHED": str(out)}
    done = subprocess.run(
        [sys.executable, "-m", "capslab", "train", "--nproc", "2", "--epochs", "2", "--subset", "96",
         "--test-subset", "50", "--batch-size", "32", "--model-opt", "conv_channels=8",
         "--model-opt", "primary_types=2", "--model-opt", "decoder=false", "--out", str(out),
         "--quiet"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("done: best test accuracy") == 1  # one report, from the caller
    events = [line.split("\t") for log in audit.glob("*.log") for line in log.read_text().splitlines()]
    writers = {rank for rank, event, _ in events if event != "os.mkdir"}
    assert writers == {"0"}
    assert {rank for rank, event, _ in events if event == "os.mkdir"} <= {"parent", "0"}
    written = {Path(path).name for _, event, path in events if event != "os.mkdir"}
    assert {"config.json", "metrics.jsonl", "last.pt", "best.pt", "summary.json",
            "curves.png"} <= written


# --------------------------------------------------------------------------- resume
def test_resume_after_an_interrupted_two_process_run(two_process_run, tmp_path):
    _, full, full_out = two_process_run
    out = tmp_path / "cut"
    # a worker's error reaches the caller with its type and message
    with pytest.raises(TrainingError, match="stopped by the test after epoch 1"):
        train(tiny_config(out, nproc=2), progress=False, callbacks=[StopAfterEpoch(1)])
    assert load_checkpoint(out / "last.pt")["epoch"] == 1
    args = ["train", "--config", str(out / "config.json"), "--out", str(out), "--quiet", "--json"]
    res = CliRunner().invoke(app, [*args, "--resume", "--nproc", "2"])
    assert res.exit_code == 0, res.output
    resumed = json.loads(res.stdout)
    assert [h["epoch"] for h in resumed["history"]] == [1, 2, 3]
    assert [h["steps"] for h in resumed["history"]] == [9, 18, 27]  # the sampler's epochs go on
    a = load_checkpoint(full_out / "last.pt")["model"]
    b = load_checkpoint(out / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)  # as if never interrupted
    assert [h["test_accuracy"] for h in resumed["history"]] == [h["test_accuracy"] for h in full["history"]]
    # a CapsLab error in the workers (a checkpoint of other settings) is one line, exit code 2
    res = CliRunner().invoke(app, [*args, "--resume", "--nproc", "2", "--lr", "0.5"])
    assert res.exit_code == 2, res.output
    assert "another model or config" in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_another_error_in_a_worker_comes_back_with_its_traceback(mnist_root):
    with pytest.raises(KeyError, match="stopped by the test after epoch 1") as info:
        train(tiny_config(None, nproc=2, epochs=1), progress=False,
              callbacks=[StopAfterEpoch(1, KeyError)])
    note = "\n".join(getattr(info.value, "__notes__", []))
    assert "in training process 0" in note and "on_epoch_end" in note


def test_a_rank_that_would_resume_from_another_epoch_than_rank_0_is_refused(tmp_path):
    """On several machines, a rank that cannot see rank 0's ``last.pt`` (no shared folder)."""
    from capslab.train.distributed import Ranks
    from capslab.train.loop import RunState, check_same_start

    class SecondRank(Ranks):
        def from_main(self, obj):
            return 2  # rank 0 resumes after epoch 2

    with pytest.raises(CheckpointError, match="rank 1 would start at epoch 1 and rank 0 at epoch 3.*share"):
        check_same_start(RunState(), SecondRank(1, 2, 1), tmp_path)
    check_same_start(RunState(epoch=2), SecondRank(1, 2, 1), tmp_path)


# --------------------------------------------------------------------------- refusals
def test_a_batch_size_that_does_not_divide_by_nproc_is_refused(tmp_path):
    res = CliRunner().invoke(app, ["train", "--nproc", "2", "--batch-size", "33", "--out",
                                   str(tmp_path / "never")])
    assert res.exit_code == 2
    assert res.stderr.strip().splitlines() == [
        "error: batch size 33 is not divisible by 2 processes: each process takes an equal share "
        "of every batch; choose a batch size that is a multiple of 2"]
    assert not (tmp_path / "never").exists()
    with pytest.raises(ConfigError, match="batch size 63 is not divisible by 4"):  # any epoch's
        tiny_config(None, nproc=4, policy="adabatch", policy_options={"batch_sizes": [64, 63],
                                                                      "phase_epochs": [1]})
    with pytest.raises(ConfigError, match="nproc must be a positive number"):
        tiny_config(None, nproc=0)


def test_each_process_takes_the_gpu_of_its_local_rank_with_nccl(monkeypatch):
    """The CUDA path without a GPU: the device and backend each rank would use."""
    from capslab.train.distributed import Ranks, backend, rank_device

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert rank_device(torch.device("cuda"), Ranks(3, 4, 1)) == torch.device("cuda", 1)
    assert backend(torch.device("cuda", 1)) == "nccl" and backend(torch.device("cpu")) == "gloo"
    assert rank_device(torch.device("cpu"), Ranks(3, 4, 1)) == torch.device("cpu")
    assert rank_device(torch.device("cuda", 0), Ranks()) == torch.device("cuda", 0)  # plain run
    with pytest.raises(ConfigError, match="3 processes need 3 GPUs on this machine; it has 2"):
        rank_device(torch.device("cuda"), Ranks(2, 3, 2))
    with pytest.raises(ConfigError, match="names one GPU.*use --device cuda"):
        rank_device(torch.device("cuda", 0), Ranks(1, 2, 1))


def test_callbacks_that_do_not_pickle_are_refused_before_any_process_starts(tmp_path):
    from capslab.train import LambdaCallback

    with pytest.raises(ConfigError, match="do not pickle.*module-level classes"):
        train(tiny_config(tmp_path / "r", nproc=2), progress=False,
              callbacks=[LambdaCallback(on_epoch_end=lambda record: None)])


def test_nproc_leaves_the_identity_and_a_plain_run_alone():
    assert tiny_config(None, nproc=2).identity() == tiny_config(None).identity()
    assert "nproc" not in tiny_config(None).identity()


# --------------------------------------------------------------------------- torchrun
@pytest.mark.slow
def test_torchrun_launches_the_ranks(mnist_root, tmp_path):
    """``torchrun`` starts the processes; ``capslab train`` only joins their group and reports
    once, with the same losses as CapsLab's own launcher."""
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun is not installed beside this Python")
    out = tmp_path / "tr"
    done = subprocess.run(
        [torchrun, "--standalone", "--nproc-per-node", "2", "-m", "capslab", "train", "--epochs", "1",
         "--subset", "281", "--test-subset", "200", "--batch-size", "32", "--seed", "3",
         "--model-opt", "conv_channels=16", "--model-opt", "primary_types=4", "--out", str(out),
         "--quiet"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("done: best test accuracy") == 1
    assert json.loads((out / "config.json").read_text())["nproc"] == 2
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    one = train(tiny_config(None, epochs=1), progress=False)["history"][0]
    assert record["train_loss"] == pytest.approx(one["train_loss"], rel=RTOL)
    assert record["test_accuracy"] == pytest.approx(one["test_accuracy"], abs=1.5 / 200)
