"""`capslab explain` and capslab.explain: Sabour et al.'s dimension sweeps through the decoder and
the coupling coefficients of the class layer's routing, captured without changing the network's
results; the PNGs, HTML page and JSON; one-line errors."""

from __future__ import annotations

import base64
import json
import re

import pytest
import torch
from typer.testing import CliRunner

from capslab.checkpoint import save_checkpoint
from capslab.cli.main import app
from capslab.data import load_dataset
from capslab.errors import ConfigError
from capslab.explain import (
    capsule_sweep,
    class_routing,
    default_out,
    explain,
    explain_checkpoint,
    pick_images,
    sweep_offsets,
)
from capslab.genotype import Genotype
from capslab.layers import ClassCaps
from capslab.layers.class_caps import FROM_POSES_MIN_BATCH
from capslab.models import create_model
from capslab.models.pretrained import load_model
from capslab.ops import squash
from capslab.train import TrainConfig, train

runner = CliRunner()
TINY = {"conv_channels": 16, "primary_types": 4, "primary_dim": 4, "class_dim": 8}


@pytest.fixture(scope="module")
def trained(mnist_root, tmp_path_factory):
    """A tiny CapsNet trained for one short epoch on an MNIST subset by `capslab train`'s loop."""
    out = tmp_path_factory.mktemp("run")
    train(TrainConfig(model="capsnet", model_options=TINY, dataset="mnist", epochs=1,
                      batch_size=32, subset=640, test_subset=100, seed=3, out=str(out),
                      plots=False), progress=False)
    return out / "best.pt"


@pytest.fixture(scope="module")
def test_images(mnist_root):
    test = load_dataset("mnist", "test")
    index = torch.tensor(pick_images(test.labels, 12))
    return test.images[index].float() / 255.0, test.labels[index]


def write_checkpoint(path, name: str, **options) -> None:
    """A checkpoint of an untrained network, with what `capslab train` saves to rebuild it."""
    torch.manual_seed(0)
    net = create_model(name, **options)
    save_checkpoint(path, model_name=name, model_options=net.model_options, model=net.state_dict(),
                    config={"dataset": "mnist"}, history=[], epoch=0, best_accuracy=-1,
                    best_epoch=0)


# --------------------------------------------------------------------------- sweeps
def test_sweep_offsets_are_the_papers():
    offsets = sweep_offsets()
    assert offsets == pytest.approx([-0.25, -0.2, -0.15, -0.1, -0.05, 0, 0.05, 0.1, 0.15, 0.2, 0.25])
    assert offsets[5] == 0.0 and len(sweep_offsets(0.3, 0.1)) == 7 and sweep_offsets(0, 0.05) == [0.0]
    for bad in ((0.25, 0), (0.25, -0.05), (0.25, 0.1), (-1, 0.05), (10, 0.05)):
        with pytest.raises(ConfigError):
            sweep_offsets(*bad)


def test_sweep_grid_shape_offset_zero_and_what_each_cell_decodes(trained, test_images):
    net = load_model(trained)
    x, labels = test_images[0][:4], test_images[1][:4]
    ex = explain(net, x, labels)
    d, s = 8, 11
    assert ex.sweeps.shape == (4, d, s, 1, 28, 28)  # [images, dimensions, offsets, C, H, W]
    zero = ex.offsets.index(0.0)
    with torch.no_grad():
        plain = net(x)  # the longest capsule decoded, as the network reconstructs at test time
    assert torch.equal(ex.explained, plain.lengths.argmax(dim=1))
    for dim in range(d):  # the column at offset 0 is the plain reconstruction in every row
        torch.testing.assert_close(ex.sweeps[:, dim, zero], plain.reconstruction, atol=1e-6, rtol=0)
    torch.testing.assert_close(ex.reconstructions, plain.reconstruction, atol=1e-6, rtol=0)
    # every other offset changes the image, in every dimension of every image
    for n in range(4):
        for dim in range(d):
            for j in range(s):
                if j != zero:
                    assert (ex.sweeps[n, dim, j] - ex.sweeps[n, dim, zero]).abs().max() > 1e-5
    # cell [n, dim, j] decodes the capsule with offsets[j] added to dimension dim, only there
    n, dim, j = 2, 5, 1
    caps = plain.caps.clone()
    k = int(ex.explained[n])
    caps[n, k, dim] += ex.offsets[j]
    with torch.no_grad():
        one = net.decoder(caps[n:n + 1], ex.explained[n:n + 1])
    torch.testing.assert_close(ex.sweeps[n, dim, j], one[0], atol=1e-6, rtol=0)


def test_the_true_class_capsule_and_the_small_decoder():
    torch.manual_seed(1)
    net = create_model("capsnet", **TINY, small_decoder=True).eval()
    x, labels = torch.rand(3, 1, 28, 28), torch.tensor([4, 0, 9])
    ex = explain(net, x, labels, capsule="true", offsets=[-0.1, 0.0, 0.1])
    assert torch.equal(ex.explained, labels) and ex.sweeps.shape == (3, 8, 3, 1, 28, 28)
    torch.testing.assert_close(ex.sweeps[:, :, 1], ex.reconstructions[:, None].expand(3, 8, 1, 28, 28),
                               atol=1e-6, rtol=0)
    direct = capsule_sweep(net.decoder, ex.caps, labels, [0.0])
    torch.testing.assert_close(direct[:, 0, 0], net.decoder(ex.caps, labels), atol=1e-6, rtol=0)
    with pytest.raises(ConfigError, match="needs the images' labels"):
        explain(net, x, capsule="true")
    with pytest.raises(ConfigError, match="has no decoder"):
        explain(create_model("capsnet", **TINY, decoder=False), x)


# --------------------------------------------------------------------------- routing
@pytest.mark.parametrize("batch", [3, FROM_POSES_MIN_BATCH + 2])  # both routes of ClassCaps
def test_couplings_are_a_softmax_over_classes_and_reproduce_the_class_capsules(trained, test_images, batch):
    net = load_model(trained)
    x = test_images[0][:batch]
    with torch.no_grad():
        reference = net(x)
    r = class_routing(net, x)
    # the network ran unchanged: its class capsules are bit for bit those of a plain forward pass
    assert torch.equal(r.caps, reference.caps)
    c = r.couplings
    assert c.shape == (batch, 4 * 6 * 6, 10) and r.routing == "rba" and r.iterations == 3
    assert (c >= 0).all()
    torch.testing.assert_close(c.sum(dim=2), torch.ones(batch, 144), atol=1e-5, rtol=0)
    # s_j = sum_i c_ij u_hat[j|i], squashed, is the network's class capsule
    s = torch.einsum("bij,bijd->bjd", c, r.predictions)
    torch.testing.assert_close(squash(s), reference.caps, atol=1e-5, rtol=0)
    assert r.deviation <= 1e-5
    # the predictions are the class layer's own, of its captured input
    assert r.predictions.shape == (batch, 144, 10, 8)
    # grouped by the 4 primary capsule types of the 6x6 grid (type-major)
    assert r.groups.kind == "type" and r.groups.names == [f"type {t}" for t in range(4)]
    assert r.groups.grid == (4, 6, 6)
    g = r.group_couplings()
    torch.testing.assert_close(g[:, 1], c[:, 36:72].mean(dim=1))
    torch.testing.assert_close(g.sum(dim=2), torch.ones(batch, 4), atol=1e-5, rtol=0)
    classes = reference.lengths.argmax(dim=1)
    pos = r.position_couplings(classes)
    assert pos.shape == (batch, 6, 6)
    torch.testing.assert_close(pos[:, 2, 3], c[torch.arange(batch), :, classes].view(batch, 4, 36)[:, :, 15].mean(1))


def _genotype_with_skip() -> dict:
    # conv, two DeepCaps cells, class stage; skip 2: the first cell also feeds the class stage
    return Genotype.from_nascaps([
        [0, 28, 1, 1, 3, 1, 28, 16, 1], [2, 28, 16, 1, 3, 2, 14, 4, 4],
        [2, 14, 4, 4, 3, 2, 7, 4, 4], [2, 7, 4, 4, 7, 1, 1, 10, 8], [2], [1],
    ]).to_dict()


@pytest.mark.parametrize("name, options, routing, kind, groups", [
    ("capsnet", {**TINY, "routing": "sda"}, "sda", "type", 4),
    ("capsnet", {**TINY, "weight_sharing": True}, "rba", "type", 4),
    ("efficient-capsnet", {}, "self-attention", "type", 16),  # a 1x1 grid of 16 capsule types
    ("mocapsnet", {"conv_channels": 8, "primary_types": 2, "num_blocks": 1, "routing": "sda",
                   "sda_bias": True}, "sda", "capsule", 32),
    ("rescapsnet", {"conv_channels": 8, "primary_types": 2, "num_blocks": 1}, "rba", "capsule", 32),
    ("deepcaps", {"conv_channels": 16, "num_types": 4}, "rba", "type", 8),  # two grids (skip)
    ("genotype", {"genotype": _genotype_with_skip(), "routing": "sda"}, "sda", "type", 8),
    ("genotype", {"genotype": _genotype_with_skip(), "routing": "self-attention"}, "self-attention", "type", 8),
])
def test_every_model_and_routing(name, options, routing, kind, groups):
    """The couplings of every routing reproduce the network's class capsules (SDA: of the
    clipped predictions, with its bias; self-attention: c_ij + b_ij, exp_squash)."""
    torch.manual_seed(0)
    net = create_model(name, **options).eval()
    for layer in net.modules():
        if isinstance(layer, ClassCaps) and layer.routing_bias is not None:
            with torch.no_grad():  # a non-zero learned log-prior (initialised to zero)
                layer.routing_bias.normal_(0, 0.01)
    x = torch.rand(5, *net.image_shape)
    with torch.no_grad():
        reference = net(x).caps
    r = class_routing(net, x)
    assert torch.equal(r.caps, reference)
    assert r.routing == routing and r.groups.kind == kind and len(r.groups.names) == groups
    torch.testing.assert_close(r.capsules(), reference, atol=1e-5, rtol=0)
    if routing != "self-attention":
        torch.testing.assert_close(r.couplings.sum(dim=2), torch.ones(r.couplings.shape[:2]),
                                   atol=1e-5, rtol=0)
    if name in ("deepcaps", "genotype"):
        assert r.groups.names[0] == "grid 1 type 0" and r.groups.grid is None


def test_pick_images_takes_the_classes_in_turn():
    labels = torch.tensor([3, 1, 1, 0, 3, 0, 2, 1])
    assert pick_images(labels, 4) == [3, 1, 6, 0]  # the first of classes 0, 1, 2, 3
    assert pick_images(labels, 6) == [3, 1, 6, 0, 5, 2]
    assert sorted(pick_images(labels, 100)) == list(range(8))


# --------------------------------------------------------------------------- files and command
def test_command_writes_pngs_html_and_json(trained, tmp_path):
    out = tmp_path / "explain"
    res = runner.invoke(app, ["explain", str(trained), "--images", "3", "--out", str(out)])
    assert res.exit_code == 0, res.output
    doc = json.loads((out / "explain.json").read_text())
    assert doc["format"] == "capslab-explain" and doc["model"] == "capsnet"
    assert doc["dataset"] == "mnist" and doc["capsule"] == "predicted"
    assert doc["offsets"] == pytest.approx(sweep_offsets()) and doc["class_dim"] == 8
    assert doc["routing"]["kind"] == "rba" and doc["routing"]["inputs"] == 144
    assert doc["routing"]["groups"] == [f"type {t}" for t in range(4)]
    assert doc["routing"]["max_deviation"] <= 1e-5
    test = load_dataset("mnist", "test")
    expected = pick_images(test.labels, 3)
    assert [i["index"] for i in doc["images"]] == expected
    assert [i["label"] for i in doc["images"]] == [0, 1, 2]
    ex = explain_checkpoint(trained, indices=expected)
    for n, item in enumerate(doc["images"]):
        assert len(item["couplings"]) == 144 and all(len(row) == 10 for row in item["couplings"])
        assert all(abs(sum(row) - 1) < 1e-4 for row in item["couplings"])
        assert len(item["couplings_by_group"]) == 4 and len(item["couplings_by_position"]) == 6
        assert item["lengths"] == pytest.approx(ex.lengths[n].tolist(), abs=1e-6)
        assert item["prediction"] == int(ex.predictions[n]) == item["explained_class"]
        assert len(item["capsule"]) == 8
        for png in item["files"].values():
            assert (out / png).read_bytes().startswith(b"\x89PNG")
    assert sorted(p.name for p in out.glob("*.png")) == sorted(
        [f"sweep-{i:05d}.png" for i in expected] + [f"routing-{i:05d}.png" for i in expected])
    page = (out / "explain.html").read_text()
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 6  # every PNG, embedded
    assert base64.b64decode(images[0]) == (out / f"sweep-{expected[0]:05d}.png").read_bytes()
    assert 'id="sweeps"' in page and 'id="routing"' in page and "plotlyjs" not in page
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temporary file


def test_command_defaults_json_output_and_routing_only(trained, tmp_path):
    ckpt = tmp_path / "best.pt"
    ckpt.write_bytes(trained.read_bytes())
    res = runner.invoke(app, ["explain", str(ckpt), "--indices", "7,0", "--capsule", "true",
                              "--max-offset", "0.1", "--json"])
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout)
    out = default_out(ckpt)
    assert out == tmp_path / "explain-best" and result["out"] == str(out)
    assert [i["index"] for i in result["images"]] == [7, 0]
    assert [i["explained_class"] for i in result["images"]] == [i["label"] for i in result["images"]]
    doc = json.loads((out / "explain.json").read_text())
    assert doc["offsets"] == pytest.approx([-0.1, -0.05, 0.0, 0.05, 0.1])
    res = runner.invoke(app, ["explain", str(ckpt), "--indices", "3", "--no-sweep",
                              "--out", str(tmp_path / "routing")])
    assert res.exit_code == 0, res.output
    assert [p.name for p in (tmp_path / "routing").glob("*.png")] == ["routing-00003.png"]


def _one_error_line(res) -> str:
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), res.output
    return lines[0]


def test_a_network_without_a_decoder_and_a_missing_checkpoint_are_one_line(mnist_root, tmp_path):
    ckpt = tmp_path / "nodecoder.pt"
    write_checkpoint(ckpt, "capsnet", **TINY, decoder=False)
    line = _one_error_line(runner.invoke(app, ["explain", str(ckpt), "--out", str(tmp_path / "x")]))
    assert f"{ckpt} has no decoder:" in line and "--no-sweep" in line
    assert not (tmp_path / "x").exists()
    res = runner.invoke(app, ["explain", str(ckpt), "--no-sweep", "--images", "2",
                              "--out", str(tmp_path / "x")])
    assert res.exit_code == 0, res.output
    assert len(list((tmp_path / "x").glob("routing-*.png"))) == 2
    assert json.loads((tmp_path / "x" / "explain.json").read_text())["sweeps"] is False
    line = _one_error_line(runner.invoke(app, ["explain", str(tmp_path / "missing.pt")]))
    assert "missing.pt does not exist" in line


def test_bad_options_are_one_line(trained, tmp_path):
    cases = [
        (["--images", "2", "--indices", "1"], "not both"),
        (["--indices", "10000"], "out of range"),
        (["--capsule", "largest"], "--capsule must be one of"),
        (["--step", "0.07"], "not a multiple"),
        (["--dataset", "cifar10"], "cifar10 has"),
    ]
    for args, message in cases:
        line = _one_error_line(runner.invoke(app, ["explain", str(trained), *args,
                                                   "--out", str(tmp_path / "x")]))
        assert message in line, (args, line)
    assert not (tmp_path / "x").exists()
