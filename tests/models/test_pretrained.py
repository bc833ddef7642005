"""Trained networks from checkpoints: ``load_model`` and ``create_model(checkpoint_path=...)``
rebuild the saved network exactly (a genotype network without its genotype file), carry the
checkpoint's metadata, and refuse mismatching, foreign and corrupt files in one line each."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import capslab
from capslab.checkpoint import save_checkpoint
from capslab.data import dataset_info
from capslab.errors import CheckpointError
from capslab.genotype import save_genotype
from capslab.models import create_model
from capslab.models.pretrained import load_model, load_model_and_checkpoint
from capslab.train.config import TrainConfig
from capslab.train.loop import RunState, build_model, save_epoch
from capslab.train.policies import build_schedule

TINY_CAPSNET = {"conv_channels": 8, "primary_types": 2, "primary_dim": 4, "class_dim": 6}
# conv 5x5/2 16 ch (with BatchNorm) -> primary caps 8 x 4-D -> class caps 10 x 8-D
SMALL_GENES = [[0, 28, 1, 1, 5, 2, 14, 16, 1], [1, 14, 16, 1, 5, 2, 7, 8, 4],
               [1, 7, 8, 4, 7, 1, 1, 10, 8], [-1], [1]]


def save_trained(out: Path, model: str, options: dict, dataset: str = "mnist") -> torch.nn.Module:
    """A network saved by the training loop's own ``save_epoch`` after moving its weights and
    BatchNorm statistics away from any fresh initialisation; returns the saved network."""
    config = TrainConfig(model=model, model_options=options, dataset=dataset, epochs=3, out=str(out))
    net = build_model(config, dataset_info(dataset))
    torch.manual_seed(1)
    net.train()
    net(torch.rand(4, *net.image_shape))  # updates BatchNorm running statistics, if any
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    state = RunState()
    for epoch, acc in ((1, 0.25), (2, 0.5)):
        state.add({"epoch": epoch, "test_accuracy": acc, "test_loss": 1.0 - acc})
    schedule = build_schedule(config.policy, config.epochs, 64, config.batch_size, config.lr)
    out.mkdir(parents=True, exist_ok=True)
    save_epoch(out, config, net, torch.optim.Adam(net.parameters()), schedule, state, is_best=True)
    return net.eval()


def outputs(net: torch.nn.Module) -> tuple[torch.Tensor, ...]:
    x = torch.rand(3, *net.image_shape, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        out = net(x)
    return out.caps, out.lengths, out.reconstruction


def assert_identical(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for x, y in zip(outputs(a), outputs(b), strict=True):
        assert torch.equal(x, y)


@pytest.fixture(scope="module")
def capsnet_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("capsnet")
    return out, save_trained(out, "capsnet", TINY_CAPSNET)


def test_capsnet_checkpoint_rebuilds_the_same_network(capsnet_run):
    out, saved = capsnet_run
    loaded = load_model(out / "best.pt")
    assert not loaded.training
    assert_identical(saved, loaded)
    fresh = create_model("capsnet", **loaded.model_options)  # same options, untrained weights
    assert not torch.equal(outputs(fresh.eval())[0], outputs(saved)[0])
    assert loaded.model_name == "capsnet" and loaded.model_options == saved.model_options


def test_pretrained_cfg_carries_the_training_metadata(capsnet_run):
    out, _ = capsnet_run
    cfg = load_model(out / "last.pt").pretrained_cfg
    assert cfg["model_name"] == "capsnet" and cfg["model_options"]["primary_types"] == 2
    assert cfg["dataset"] == "mnist" and cfg["classes"] == [str(i) for i in range(10)]
    assert cfg["input_shape"] == [1, 28, 28] and cfg["num_classes"] == 10
    assert cfg["normalization"] == "dataset" and cfg["mean"] == [0.1307] and cfg["std"] == [0.3081]
    assert (cfg["epoch"], cfg["test_accuracy"], cfg["best_epoch"], cfg["best_accuracy"]) == (2, 0.5, 2, 0.5)
    assert cfg["settings"]["epochs"] == 3 and cfg["source"] == str(out / "last.pt")


def test_genotype_network_rebuilds_without_its_genotype_file(tmp_path):
    from capslab.genotype import Genotype

    genotype_file = tmp_path / "small.json"
    save_genotype(Genotype.from_nascaps(SMALL_GENES), genotype_file)
    saved = save_trained(tmp_path / "run", "genotype", {"genotype": str(genotype_file)})
    assert any(n.endswith("running_mean") for n, _ in saved.named_buffers())
    genotype_file.unlink()  # the checkpoint alone must suffice
    loaded, ckpt = load_model_and_checkpoint(tmp_path / "run" / "best.pt")
    assert ckpt["model_options"]["genotype"] == SMALL_GENES  # embedded, not the path
    assert "optimizer" in ckpt and ckpt["epoch"] == 2
    assert_identical(saved, loaded)
    assert loaded.pretrained_cfg["model_name"] == "genotype"


def test_create_model_with_checkpoint_path(capsnet_run):
    out, saved = capsnet_run
    best = out / "best.pt"
    net = create_model("capsnet", checkpoint_path=best)  # options come from the checkpoint
    assert_identical(saved, net)
    assert not net.training and net.pretrained_cfg["epoch"] == 2
    same = create_model("capsnet", checkpoint_path=str(best), primary_types=2, mean=(0.1307,))
    assert_identical(saved, same)  # options equal to the checkpoint's are accepted
    assert capslab.create_model("capsnet", checkpoint_path=best).pretrained_cfg["dataset"] == "mnist"
    assert_identical(saved, capslab.load_model(best))


@pytest.mark.parametrize("name, options, message", [
    ("deepcaps", {}, "holds a 'capsnet' model, not 'deepcaps'"),
    ("capsnet", {"primary_types": 4}, "primary_types: checkpoint 2, given 4"),
    ("capsnet", {"routing": "sda"}, "routing: checkpoint 'rba', given 'sda'"),
])
def test_create_model_refuses_a_checkpoint_of_another_model_or_options(capsnet_run, name, options, message):
    out, _ = capsnet_run
    with pytest.raises(CheckpointError, match=message) as info:
        create_model(name, checkpoint_path=out / "best.pt", **options)
    assert "\n" not in str(info.value)


def _one_line_error(path, match: str) -> None:
    with pytest.raises(CheckpointError, match=match) as info:
        load_model(path)
    assert "\n" not in str(info.value) and "weights_only" not in str(info.value)


def test_foreign_corrupt_and_missing_files_give_one_line_errors(tmp_path, capsnet_run):
    _one_line_error(tmp_path / "nowhere.pt", "does not exist")
    _one_line_error(tmp_path, "is a folder")
    (tmp_path / "text.pt").write_bytes(b"not a checkpoint at all")
    _one_line_error(tmp_path / "text.pt", "not a CapsLab checkpoint")
    torch.save({"conv.weight": torch.zeros(2)}, tmp_path / "bare.pt")
    _one_line_error(tmp_path / "bare.pt", "bare weights")
    torch.save({"object": Path("x")}, tmp_path / "pickled.pt")  # arbitrary objects: refused
    _one_line_error(tmp_path / "pickled.pt", "not a CapsLab checkpoint")
    good = (capsnet_run[0] / "best.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(good[: len(good) // 2])
    _one_line_error(tmp_path / "truncated.pt", r"cannot be read \(a damaged or truncated")
    (tmp_path / "empty.pt").write_bytes(b"")
    _one_line_error(tmp_path / "empty.pt", "is empty")
    (tmp_path / "short.pt").write_bytes(b"junk")
    _one_line_error(tmp_path / "short.pt", r"not a CapsLab checkpoint \(not a PyTorch file\)")
    save_checkpoint(tmp_path / "nomodel.pt", epoch=1, history=[])
    _one_line_error(tmp_path / "nomodel.pt", r"holds no model \(model_name, model_options, model missing\)")


def test_checkpoints_that_do_not_fit_their_model(tmp_path, capsnet_run):
    ckpt = torch.load(capsnet_run[0] / "best.pt", weights_only=True)
    del ckpt["format"], ckpt["version"]
    state = dict(ckpt["model"])
    key = next(k for k in state if k.startswith("class_caps."))
    state[key] = torch.zeros(3)  # tampered weights
    save_checkpoint(tmp_path / "tampered.pt", **{**ckpt, "model": state})
    _one_line_error(tmp_path / "tampered.pt", rf"does not fit model 'capsnet'.*{key} \(3,\)")
    save_checkpoint(tmp_path / "unknown.pt", **{**ckpt, "model_name": "nocaps"})
    _one_line_error(tmp_path / "unknown.pt", "model 'nocaps', which is not registered")
    save_checkpoint(tmp_path / "oldopt.pt", **{**ckpt, "model_options": {"bogus": 1}})
    _one_line_error(tmp_path / "oldopt.pt", "oldopt.pt: model 'capsnet' has no option.*bogus")


def test_import_capslab_stays_light_and_exposes_the_loaders_lazily():
    code = ("import sys, capslab; assert 'torch' not in sys.modules; "
            "from capslab.models.pretrained import load_model; "
            "assert capslab.load_model is load_model and 'load_model' in dir(capslab)")
    subprocess.run([sys.executable, "-c", code], check=True)
    with pytest.raises(AttributeError):
        capslab.no_such_name  # noqa: B018
