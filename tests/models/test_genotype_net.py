"""Networks built from genotypes: the two published baselines build and train (finite
gradients), every input format is accepted, invalid genotypes raise GenotypeError, and a small
genotype-built network learns MNIST."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import fit_and_score, mnist_subsets

from capslab.data import BatchLoader
from capslab.errors import GenotypeError
from capslab.genotype import (
    CAPSNET_GENOTYPE,
    DEEPCAPS_GENOTYPE,
    Genotype,
    save_genotype,
    skip_source,
)
from capslab.losses import capsule_loss
from capslab.models import create_model, model_options
from capslab.models.deepcaps import DeepCaps
from capslab.models.genotype_net import GenotypeNet
from capslab.models.summary import describe_layers

# conv 5x5/2 16 ch -> primary caps 5x5/2, 8 types x 4-D (7x7) -> class caps 10 x 8-D
SMALL_GENES = [[0, 28, 1, 1, 5, 2, 14, 16, 1], [1, 14, 16, 1, 5, 2, 7, 8, 4],
               [1, 7, 8, 4, 7, 1, 1, 10, 8], [-1], [1]]


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def finite_backward(model: GenotypeNet, shape: tuple[int, int, int]) -> None:
    torch.manual_seed(0)
    x = torch.rand(2, *shape)
    y = torch.tensor([1, 8])
    out = model(x, y)
    loss, _, _ = capsule_loss(out.lengths, y, out.reconstruction, x)
    loss.backward()
    assert torch.isfinite(loss)
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"


def test_skip_source_counts_layers_from_one_like_the_nascaps_builder():
    # [4] in the published DeepCaps genotype = the third cell (layer index 3), as in DeepCaps
    assert skip_source(DEEPCAPS_GENOTYPE) == 3
    assert skip_source(CAPSNET_GENOTYPE) is None  # -1
    genes = DEEPCAPS_GENOTYPE.to_nascaps()
    assert skip_source(Genotype.from_nascaps(genes[:-2] + [[5], [2]])) is None  # last cell
    assert skip_source(Genotype.from_nascaps(genes[:-2] + [[1], [2]])) is None  # a conv
    assert skip_source(Genotype.from_nascaps(genes[:-2] + [[2], [2]])) == 1


def test_capsnet_genotype_builds_runs_and_counts():
    model = create_model("genotype", genotype=CAPSNET_GENOTYPE.to_nascaps(), in_channels=1,
                         image_size=28, num_classes=10)
    rows = describe_layers(model, (1, 28, 28))
    table = {r["name"]: (r["output_shape"], r["parameters"]) for r in rows}
    # conv 9x9 1 -> 256, same padding, no bias (BatchNorm follows): 81*256 + BN 2*256
    assert table["layers.0_conv"] == ((256, 28, 28), 81 * 256 + 512)
    # primary capsules: conv 9x9/2 256 -> 32*8 channels + biases; 14x14 grid (same padding)
    assert table["layers.1_primary"] == ((32, 8, 14, 14), 256 * 81 * 256 + 256)
    # class capsules: 14*14*32 = 6,272 inputs x 8-D -> 10 x 16-D
    assert table["layers.2_class"] == ((10, 16), 6272 * 8 * 160)
    assert table["decoder"][0] == (1, 28, 28)
    assert [r["name"] for r in rows] == [
        "input_norm", "layers.0_conv", "layers.1_primary", "layers.2_class", "decoder",
    ]
    finite_backward(model, (1, 28, 28))


def test_deepcaps_genotype_builds_like_the_deepcaps_model():
    model = create_model("genotype", genotype=DEEPCAPS_GENOTYPE, in_channels=3, image_size=32)
    reference = DeepCaps(in_channels=3, image_size=32, resize=2)  # DeepCaps' default skip
    # the model's skip and resize mean what the genotype's do
    assert (reference.skip, reference.resize) == (DEEPCAPS_GENOTYPE.skip, DEEPCAPS_GENOTYPE.resize)
    cells = [m for name, m in model.layers.items() if "cell" in name]
    assert [n_params(c) for c in cells] == [n_params(c) for c in reference.cells]
    assert type(cells[-1].skip).__name__ == "ConvCaps3D"
    assert all(type(c.skip).__name__ == "ConvCaps2D" for c in cells[:-1])
    # class stage: 4x4x32 (last cell) + 8x8x32 (skip 4 = layer index 3, the third cell) =
    # 2,560 capsules x 8-D, as in the model
    assert model.skip_source == reference.skip_layer == 3
    assert n_params(model.layers["5_class"]) == 2560 * 8 * 10 * 16 == n_params(reference.class_caps)
    rows = {r["name"]: r["output_shape"] for r in describe_layers(model, (3, 32, 32))}
    assert rows["layers.0_conv"] == (128, 64, 64)  # resize 2: 32 -> 64
    assert rows["layers.4_cell3d"] == (32, 8, 4, 4)
    assert rows["layers.5_class"] == (10, 16)
    finite_backward(model, (3, 32, 32))


def test_deepcaps_genotype_on_mnist_sizes_and_class_count():
    model = GenotypeNet(DEEPCAPS_GENOTYPE, in_channels=1, image_size=28, num_classes=5,
                        decoder=False)
    rows = {r["name"]: r["output_shape"] for r in describe_layers(model, (1, 28, 28))}
    assert rows["layers.0_conv"] == (128, 56, 56)
    assert rows["layers.4_cell3d"] == (32, 8, 4, 4)  # 56 -> 28 -> 14 -> 7 -> 4
    assert rows["layers.5_class"] == (5, 16)  # classes come from the data, not the genotype


def test_every_genotype_format_is_accepted(tmp_path: Path):
    small = Genotype.from_nascaps(SMALL_GENES)
    save_genotype(small, tmp_path / "g.json")
    save_genotype(small, tmp_path / "g.chr", format="nascaps")
    sources = [small, SMALL_GENES, small.to_dict(), json.dumps(SMALL_GENES),
               str(tmp_path / "g.json"), tmp_path / "g.chr"]
    for src in sources:
        model = GenotypeNet(src, decoder=False)  # sizes from the genotype: 1 x 28 x 28
        assert model.image_shape == (1, 28, 28)
        assert model.genotype == small
    assert "genotype" in model_options("genotype")


def test_recorded_options_hold_the_genotype_as_json(tmp_path: Path):
    save_genotype(Genotype.from_nascaps(SMALL_GENES), tmp_path / "g.json")
    for src in (Genotype.from_nascaps(SMALL_GENES), tmp_path / "g.json"):
        model = create_model("genotype", genotype=src, decoder=False)
        options = json.loads(json.dumps(model.model_options))  # what a checkpoint keeps
        assert options == {"genotype": SMALL_GENES, "decoder": False}
        rebuilt = create_model("genotype", **options)
        rebuilt.load_state_dict(model.state_dict())


def test_invalid_genotypes_raise_genotype_error(tmp_path: Path):
    conv_after_caps = CAPSNET_GENOTYPE.to_nascaps()
    conv_after_caps.insert(2, [0, 14, 32, 8, 3, 1, 14, 32, 1])
    with pytest.raises(GenotypeError, match="layer 2"):
        create_model("genotype", genotype=conv_after_caps)
    broken_chain = CAPSNET_GENOTYPE.to_nascaps()
    broken_chain[2][2] = 16  # class layer reads 16 types, primary caps give 32
    with pytest.raises(GenotypeError, match="in_channels"):
        GenotypeNet(broken_chain)
    with pytest.raises(GenotypeError, match="9 integers"):
        GenotypeNet([[0, 28, 1], [-1], [1]])
    with pytest.raises(GenotypeError, match="missing.json"):
        GenotypeNet(tmp_path / "missing.json")
    with pytest.raises(GenotypeError, match="must be a Genotype"):
        GenotypeNet(3.5)


def test_skip_from_a_cell_with_other_capsule_dims():
    g = [[0, 28, 1, 1, 3, 1, 28, 64, 1], [2, 28, 32, 2, 3, 2, 14, 8, 4],
         [2, 14, 8, 4, 3, 2, 7, 8, 8], [2, 7, 8, 8, 3, 2, 4, 8, 8],
         [2, 4, 8, 8, 4, 1, 1, 10, 8], [2], [1]]
    model = GenotypeNet(g, num_classes=10, decoder=False)
    assert model.skip_source == 1
    # the last cell's 4x4x8 8-D capsules and layer 1's 14x14x8 4-D capsules, each source with
    # its own matrices: 128*8*80 + 1568*4*80
    assert n_params(model.layers["4_class"]) == 128 * 8 * 80 + 1568 * 4 * 80 == 583_680
    finite_backward(model, (1, 28, 28))


def test_middle_capsule_genes_are_convcaps_with_optional_routing():
    g = [[0, 28, 1, 1, 5, 2, 14, 16, 1], [1, 14, 16, 1, 3, 2, 7, 8, 4],
         [1, 7, 8, 4, 3, 1, 7, 6, 8], [1, 7, 6, 8, 7, 1, 1, 10, 16], [-1], [1]]
    model = GenotypeNet(g, conv_caps_routing=2, batchnorm=False, decoder=False)
    rows = {r["name"]: (r["output_shape"], r["parameters"]) for r in describe_layers(model, (1, 28, 28))}
    assert rows["layers.0_conv"] == ((16, 14, 14), 25 * 16 + 16)  # conv with bias, no BN
    assert rows["layers.1_primary"] == ((8, 4, 7, 7), 16 * 9 * 32 + 32)
    # routed ConvCaps2D: 8 input types, each its own 4 -> 6*8 kernel 3x3, + 8*48 biases
    assert rows["layers.2_convcaps"] == ((6, 8, 7, 7), 8 * 4 * 9 * 48 + 8 * 48)
    assert rows["layers.3_class"] == ((10, 16), 7 * 7 * 6 * 8 * 160)
    finite_backward(model, (1, 28, 28))


# --------------------------------------------------------------------------- published shapes
# Shapes the NASCaps authors' search published (outside the paper's search space), written
# here small: the class layer as the only capsule gene, convolutions with capsule fields,
# a kernel larger than its input, the final DeepCaps stage right after the convolutions.
ONLY_CLASS_CAPS = [[0, 8, 1, 1, 3, 1, 8, 4, 1], [1, 8, 4, 1, 8, 1, 1, 10, 4], [-1], [1]]
CONV_CAPSULE_FIELDS = [[0, 8, 1, 1, 3, 1, 8, 2, 4], [0, 8, 2, 4, 3, 2, 4, 4, 1],
                       [1, 4, 4, 1, 3, 1, 4, 6, 2], [1, 4, 6, 2, 4, 1, 1, 10, 4], [-1], [1]]  # fmt: skip
BIG_KERNEL_CELLS = [[0, 8, 1, 1, 3, 1, 8, 8, 2], [2, 8, 8, 2, 3, 2, 4, 8, 4],
                    [2, 4, 8, 4, 9, 1, 4, 8, 8], [2, 4, 8, 8, 4, 1, 1, 10, 8], [-1], [1]]  # fmt: skip
ONLY_FINAL_CELL = [[0, 8, 1, 1, 3, 2, 4, 8, 1], [2, 4, 8, 1, 4, 1, 1, 10, 4], [-1], [1]]


@pytest.mark.parametrize(
    "genes",
    [ONLY_CLASS_CAPS, CONV_CAPSULE_FIELDS, BIG_KERNEL_CELLS, ONLY_FINAL_CELL],
    ids=["only-class-caps", "conv-capsule-fields", "big-kernel-cells", "only-final-cell"],
)
def test_published_shapes_build_and_train(genes):
    model = create_model("genotype", genotype=genes, num_classes=10)  # 1 x 8 x 8 from the genes
    assert model.image_shape == (1, 8, 8)
    class_dim = genes[-3][8]
    out = model(torch.rand(2, 1, 8, 8))
    assert out.caps.shape == (2, 10, class_dim) and out.lengths.shape == (2, 10)
    assert out.reconstruction.shape == (2, 1, 8, 8)
    finite_backward(model, (1, 8, 8))


def test_built_weights_are_the_weights_the_hardware_model_counts():
    """A convolution's capsule fields multiply its maps, in the network as in the estimator:
    the multiply weights are equal; the estimator adds one bias per outch * outcaps * incaps."""
    from capslab.hw import estimate

    model = GenotypeNet(CONV_CAPSULE_FIELDS, decoder=False)
    hw = {le.name: le.weights for le in estimate(CONV_CAPSULE_FIELDS).layers}
    conv0 = model.layers["0_conv"][0].weight  # 1 map -> 2 x 4 = 8 maps, 3x3
    conv1 = model.layers["1_conv"][0].weight  # 2 x 4 = 8 maps -> 4 maps, stride 2
    assert tuple(conv0.shape) == (8, 1, 3, 3) and tuple(conv1.shape) == (4, 8, 3, 3)
    assert hw["L0 conv"] == conv0.numel() + 2 * 4 * 1  # (1*9 + 1) * 2 * 4 * 1 = 80 = 72 + 8
    assert hw["L1 conv"] == conv1.numel() + 4 * 1 * 4  # (2*9 + 1) * 4 * 1 * 4 = 304 = 288 + 16
    # The class layer as the only capsule gene reads the 4 conv maps at 8x8 as 256 1-D
    # capsules; its kernel is its input size, so its matrices are the class-layer weights of
    # the hardware model: (4*64 + 1) * 10 * 4 * 1 = 10,280 = 256 * 1 * 10 * 4 + 40.
    model = GenotypeNet(ONLY_CLASS_CAPS, decoder=False)
    hw = {le.name: le.weights for le in estimate(ONLY_CLASS_CAPS).layers}
    assert n_params(model.layers["1_class"]) == 256 * 10 * 4 == hw["L1 class"] - 10 * 4 * 1
    rows = {r["name"]: r["output_shape"] for r in describe_layers(model, (1, 8, 8))}
    assert rows["layers.0_conv"] == (4, 8, 8) and rows["layers.1_class"] == (10, 4)


# --------------------------------------------------------------------------- learning


def _mnist_available() -> bool:
    try:
        from capslab.data import load_dataset

        load_dataset("mnist", "test")
    except Exception:  # noqa: BLE001 - any failure means: no data here
        return False
    return True


@pytest.mark.skipif(not _mnist_available(), reason="MNIST not found (set CAPSLAB_DATA to the "
                    "folder holding mnist/, e.g. /work/shared/datasets)")
def test_small_genotype_network_learns_mnist_subset():
    torch.manual_seed(0)
    train, test = mnist_subsets(2000, 500)
    model = create_model("genotype", genotype=SMALL_GENES, in_channels=1, image_size=28,
                         num_classes=10, decoder=False, mean=train.info.mean, std=train.info.std)
    accuracy = fit_and_score(
        model, lambda epoch: BatchLoader(train, 64, shuffle=True, seed=epoch), test, epochs=2
    )
    print(f"small genotype network: {accuracy:.3f} test accuracy on 500 MNIST images")
    assert accuracy > 0.75, f"test accuracy {accuracy:.3f} after 2 epochs (chance is 0.10)"
