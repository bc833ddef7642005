"""The CUDA paths, checked without a GPU.

PyTorch's ``meta`` device stands in for a GPU: it runs every operator without data, and any
read of a value on the host (``.item()``, ``bool()``, ``float()``, a copy to the CPU) fails
there, so a training step that runs on ``meta`` has no host synchronisation in it. Where
``meta`` cannot go (random-number states, the CUDA backends), PyTorch's own checks or a fake
``torch.cuda`` stand in.
"""

import random

import numpy as np
import pytest
import torch

import capslab.checkpoint as checkpoint
import capslab.device as device_mod
from capslab.data import BatchLoader, ImageDataset, augment_batch, dataset_info
from capslab.data.loader import epoch_seed
from capslab.device import check_precision, configure_backends, device_name, resolve_device
from capslab.errors import ConfigError
from capslab.models import create_model
from capslab.optim import create_optimizer
from capslab.train import TrainConfig, train
from capslab.train.callbacks import ProgressDisplay, StepInfo, TensorBoardLogger
from capslab.train.loop import optimizer_step, resume_state, step_loss

META = torch.device("meta")
TINY = {"conv_channels": 8, "primary_types": 2, "primary_dim": 4, "class_dim": 6}


def tiny_dataset(n=12, seed=0):
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 1, 28, 28), generator=gen, dtype=torch.uint8)
    labels = torch.arange(n) % 10
    return ImageDataset(images, labels, dataset_info("mnist"))


# --------------------------------------------------------------------------- resume
def test_rng_states_mapped_to_another_device_are_restored(tmp_path):
    """A checkpoint loaded with map_location=<GPU> holds its generator states on the GPU, and
    torch.set_rng_state takes only CPU byte tensors (the crash of `train --resume` on CUDA)."""
    torch.manual_seed(7)
    random.seed(7)
    np.random.seed(7)
    checkpoint.save_checkpoint(tmp_path / "c.pt", rng=checkpoint.rng_state())
    expected = (torch.rand(3), random.random(), np.random.rand())
    state = checkpoint.load_checkpoint(tmp_path / "c.pt", map_location="meta")["rng"]
    assert state["torch"].device == META
    with pytest.raises((TypeError, RuntimeError)):
        torch.set_rng_state(state["torch"])  # what the loop used to do
    torch.manual_seed(0)
    state = checkpoint.load_checkpoint(tmp_path / "c.pt", map_location="cpu")["rng"]
    checkpoint.set_rng_state(state)
    assert torch.equal(torch.rand(3), expected[0])
    assert (random.random(), np.random.rand()) == expected[1:]


def test_rng_state_does_not_start_cuda_and_restores_the_gpus_there_are(monkeypatch):
    calls = []

    class FakeCuda:
        @staticmethod
        def is_initialized():
            return False

        @staticmethod
        def is_available():
            return True

        @staticmethod
        def device_count():
            return 1

        @staticmethod
        def get_rng_state_all():
            calls.append("get")
            return []

        @staticmethod
        def set_rng_state(state, index):
            assert state.device.type == "cpu" and state.dtype == torch.uint8
            calls.append(("set", index))

    monkeypatch.setattr(checkpoint.torch, "cuda", FakeCuda)
    state = checkpoint.rng_state()
    assert "cuda" not in state and calls == []  # CUDA not in use: not asked
    state["cuda"] = [torch.zeros(16, dtype=torch.uint8)] * 2
    checkpoint.set_rng_state(state)
    assert calls == [("set", 0)]  # two saved, one GPU here


def test_resume_loads_on_the_cpu_and_fills_a_model_on_another_device(tmp_path):
    """The loop's resume phase with the model and optimiser on `meta` (a GPU stand-in)."""
    config = TrainConfig(model="capsnet", model_options=TINY, out=str(tmp_path), resume=True,
                         plots=False)
    model = create_model("capsnet", **TINY)
    opt = create_optimizer("adam", model.parameters(), 1e-3)
    model(torch.rand(2, 1, 28, 28)).lengths.sum().backward()
    opt.step()
    checkpoint.save_checkpoint(
        tmp_path / "last.pt", model=model.state_dict(), optimizer=opt.state_dict(),
        rng=checkpoint.rng_state(), epoch=1, global_step=5, best_accuracy=0.5, best_epoch=1,
        history=[{"epoch": 1}], identity=config.identity(),
    )
    on_meta = create_model("capsnet", **TINY).to(META)
    meta_opt = create_optimizer("adam", on_meta.parameters(), 1e-3)
    state = resume_state(config, tmp_path, on_meta, meta_opt)
    assert (state.epoch, state.global_step) == (1, 5)
    moment = next(iter(meta_opt.state.values()))["exp_avg"]
    assert moment.device == META  # the optimiser state followed its parameters


# --------------------------------------------------------------------------- the step
@pytest.mark.parametrize("model, options", [
    ("capsnet", TINY),
    ("mocapsnet", {"num_blocks": 2, "conv_channels": 16, "primary_types": 4}),
    ("rescapsnet", {"num_blocks": 2, "conv_channels": 16, "primary_types": 4}),
])
def test_training_steps_run_on_meta_without_host_synchronisation(model, options, tmp_path):
    """Loader (with augmentation), forward, loss, backward, optimiser step and the step
    callbacks, on a device where any host read fails."""
    net = create_model(model, **options).to(META)
    opt = create_optimizer("adam", net.parameters(), 1e-3)
    config = TrainConfig(model=model, model_options=options, augment=True, plots=False)
    loader = BatchLoader(tiny_dataset(), 4, shuffle=True, augment=True, seed=1, device=META)
    board = TensorBoardLogger(tmp_path / "tb") if _has_tensorboard() else None
    callbacks = [c for c in (board,) if c is not None]
    steps = 0
    for step, (images, labels) in enumerate(loader):
        assert images.device == META
        loss, output, _ = step_loss(config, net, images, labels)
        optimizer_step(opt, loss, 1e-3)
        info = StepInfo(0, step, step, len(loader), 1e-3, 4, loss.detach())
        for cb in callbacks:
            cb.on_step_end(info)
        steps += 1
    assert steps == 3 and loss.device == META and output.lengths.shape == (4, 10)
    if board is not None:
        board.writer.close()


def _has_tensorboard():
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


def test_tensorboard_reads_the_losses_once_an_epoch(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    logger = TensorBoardLogger(tmp_path)
    written = []
    monkeypatch.setattr(logger.writer, "add_scalar", lambda tag, v, s: written.append((tag, v, s)))
    for s in range(3):
        logger.on_step_end(StepInfo(0, s, s, 3, 0.1, 4, torch.tensor(float(s))))
    assert not [w for w in written if w[0] == "step/loss"]  # nothing read yet
    logger.on_epoch_end({"epoch": 1, "train_loss": 1.0, "test_loss": 1.0, "test_accuracy": 0.5,
                         "lr": 0.1, "batch_size": 4})
    assert [(v, s) for t, v, s in written if t == "step/loss"] == [(0.0, 0), (1.0, 1), (2.0, 2)]
    logger.close()


def test_progress_bar_reads_the_loss_only_a_few_times_a_second():
    bar = ProgressDisplay()
    bar.epochs = 1
    bar.shown_at = float("inf")  # as if just refreshed
    for s in range(3):  # steps before the last: nothing is read from the device
        bar.on_step_end(StepInfo(0, s, s, 10, 0.1, 4, torch.zeros((), device=META)))
    bar.close()


# --------------------------------------------------------------------------- augmentation
def test_epoch_augmentation_plan_equals_batch_at_a_time_draws():
    """The loader draws the whole epoch's offsets (and flips) at once, in the order a
    batch-at-a-time draw takes them: the images are the same, bit for bit."""
    data = tiny_dataset(10)
    for hflip in (False, True):
        loader = BatchLoader(data, 4, shuffle=False, augment=True, seed=5, hflip=hflip)
        gen = torch.Generator().manual_seed(epoch_seed(5, 0, 1))
        for (x, _), start in zip(loader, (0, 4, 8), strict=True):
            want = augment_batch(data.images[start:start + 4], gen, 2, hflip) / 255.0
            assert torch.equal(x, want)


def test_loader_copies_the_augmentation_to_the_device_once_an_epoch(monkeypatch):
    copies = []
    real_to = torch.Tensor.to

    def counting_to(self, *args, **kwargs):
        out = real_to(self, *args, **kwargs)
        if self.device.type == "cpu" and out.device == META:
            copies.append(tuple(self.shape))
        return out

    loader = BatchLoader(tiny_dataset(40), 4, shuffle=True, augment=True, hflip=True, device=META)
    monkeypatch.setattr(torch.Tensor, "to", counting_to)
    batches = sum(1 for _ in loader)
    assert batches == 10
    assert len(copies) == 3  # the order, the offsets and the flips: not one per batch


# --------------------------------------------------------------------------- device settings
def test_device_names_are_checked():
    assert resolve_device("cpu") == torch.device("cpu")
    for bad in ("gpu", "cuda:x", "tpu"):
        with pytest.raises(ConfigError, match="device must be one of"):
            resolve_device(bad)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda:0")
        assert resolve_device("cuda:1", check_available=False) == torch.device("cuda:1")


def test_cuda_n_is_named_after_gpu_n(monkeypatch):
    class FakeCuda:
        @staticmethod
        def current_device():
            return 0

        @staticmethod
        def get_device_name(index):
            return f"GPU {index}"

    monkeypatch.setattr(device_mod.torch, "cuda", FakeCuda)
    assert device_name("cuda:1") == "GPU 1"
    assert device_name("cuda") == "GPU 0"
    assert device_name("cpu") == device_mod.cpu_name()


def test_bf16_is_refused_on_a_gpu_without_it(monkeypatch):
    monkeypatch.setattr(device_mod.torch.cuda, "is_bf16_supported", lambda: False)
    monkeypatch.setattr(device_mod.torch.cuda, "get_device_name", lambda i=None: "Tesla V100")
    monkeypatch.setattr(device_mod.torch.cuda, "current_device", lambda: 0)
    with pytest.raises(ConfigError, match="Tesla V100 does not support bfloat16"):
        check_precision(torch.device("cuda"), "bf16")
    check_precision(torch.device("cuda"), "fp32")
    check_precision(torch.device("cpu"), "bf16")  # the CPU computes bf16 (slowly)


def test_deterministic_backends(monkeypatch):
    calls = []
    monkeypatch.setattr(device_mod.torch, "use_deterministic_algorithms",
                        lambda flag, **kw: calls.append(flag))
    monkeypatch.setattr(device_mod.torch, "set_float32_matmul_precision",
                        lambda p: calls.append(p))
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    saved = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic,
             torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    try:
        assert configure_backends(torch.device("cpu"), True) == {}  # the CPU is left alone
        assert calls == []
        got = configure_backends(torch.device("cuda"), deterministic=True)
        assert got == {"deterministic": True, "cudnn_benchmark": False, "tf32": False}
        assert torch.backends.cudnn.deterministic and calls == [True]
        import os
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == device_mod.CUBLAS_WORKSPACE
        got = configure_backends(torch.device("cuda"), deterministic=False)
        assert got["cudnn_benchmark"] and calls[-2:] == ["high", False]
    finally:
        (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic,
         torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) = saved
        torch.set_float32_matmul_precision("highest")


def test_training_on_a_missing_gpu_is_one_clear_error(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ConfigError, match="CUDA is not available"):
        train(TrainConfig(model="capsnet", model_options=TINY, device="cuda", out=None),
              progress=False)
    assert TrainConfig(deterministic=True).identity() == TrainConfig().identity()
