"""The readable format's newer genes: depthwise primary capsules, momentum and residual block
genes, the routing and shared options. Format, validation, repair, the network they build."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from typer.testing import CliRunner

from capslab.cli.main import app
from capslab.genotype import (
    CAPSNET_GENOTYPE,
    Genotype,
    GenotypeError,
    LayerDescriptor,
    LayerKind,
    load_genotype,
    parse_genotype,
    repair,
    save_genotype,
)
from capslab.models import create_model
from capslab.models.genotype_net import BlockGene, DepthwiseGene
from capslab.training_cost import genotype_training_cost

L = LayerDescriptor


def efficient(block: int = LayerKind.MOMENTUM, blocks: int = 1, routing="self-attention",
              shared=True) -> Genotype:
    """conv 28->28 (16 maps) -> conv stride 2 (32 maps) -> dwcaps (4 x 8D) -> block (8 x 6D)
    -> class 10 x 16D."""
    return Genotype((
        L(0, 28, 1, 1, 5, 1, 28, 16, 1),
        L(0, 28, 16, 1, 3, 2, 14, 32, 1),
        L(3, 14, 32, 1, 14, 1, 1, 4, 8),
        L(block, 1, 4, 8, 1, 1, 1, 8, 6, routing=routing, blocks=blocks),
        L(1, 1, 8, 6, 1, 1, 1, 10, 16, routing=routing, shared=shared),
    )).validate()


def test_readable_format_round_trips_and_names_its_version(tmp_path):
    g = efficient()
    d = g.to_dict()
    assert d["version"] == 2
    assert d["layers"][2]["kind"] == "dwcaps" and d["layers"][3]["blocks"] == 1
    assert d["layers"][4]["routing"] == "self-attention" and d["layers"][4]["shared"] is True
    assert "routing" not in d["layers"][0]  # options at their default stay out of the file
    assert parse_genotype(json.loads(json.dumps(d))) == g
    save_genotype(g, tmp_path / "g.json")
    assert load_genotype(tmp_path / "g.json") == g
    assert g.exchange() == d  # not representable as NASCaps: the readable object
    # the paper's genotypes keep version 1 and the NASCaps list as their exchange form
    assert CAPSNET_GENOTYPE.to_dict()["version"] == 1
    assert CAPSNET_GENOTYPE.exchange() == CAPSNET_GENOTYPE.to_nascaps()
    assert str(g).startswith("conv5/1x16 -> conv3/2x32 -> dwcaps14:4x8D -> momentum1:8x6D[self-attention]")


def test_the_nascaps_format_refuses_the_newer_kinds_with_one_line(tmp_path):
    g = efficient()
    with pytest.raises(GenotypeError, match=r"layer 2: the NASCaps 9-integer format holds only "
                       r"conv, caps and cell genes without options, not a dwcaps gene"):
        g.to_nascaps()
    option_only = replace(CAPSNET_GENOTYPE, layers=CAPSNET_GENOTYPE.layers[:-1] + (
        replace(CAPSNET_GENOTYPE.layers[-1], routing="sda"),))
    with pytest.raises(GenotypeError, match=r"layer 2: .* not the option\(s\) \['routing'\]"):
        option_only.to_nascaps()
    with pytest.raises(GenotypeError, match="in the NASCaps format, got 3"):
        Genotype.from_nascaps([[0, 28, 1, 1, 9, 1, 28, 64, 1], [3, 28, 64, 1, 28, 1, 1, 8, 8],
                               [-1], [1]])
    with pytest.raises(GenotypeError, match="use the capslab format"):
        save_genotype(g, tmp_path / "g.json", format="nascaps")
    assert not (tmp_path / "g.json").exists()
    # the command line: one line, exit 2
    (tmp_path / "bad.json").write_text(json.dumps({**g.to_dict(), "layers": [
        *g.to_dict()["layers"][:3], {**g.to_dict()["layers"][3], "blocks": 0},
        g.to_dict()["layers"][4]]}))
    result = CliRunner().invoke(app, ["hw", "--genotype", str(tmp_path / "bad.json")])
    assert result.exit_code == 2
    assert "field blocks of a momentum gene must be >= 1, got 0" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("change, message", [
    # depthwise capsules cover their input and regroup the maps of a convolution
    (lambda g: _with(g, 2, kernel=3), r"layer 2: a dwcaps gene covers its input: kernel must be in_size \(14\)"),
    (lambda g: _with(_with(g, 2, out_channels=5), 3, in_channels=5), r"layer 2: fields out_channels x out_capsules = 5 x 8 must regroup the 32 maps"),
    # a block gene sits just before the class stage and reads capsules
    (lambda g: repair(Genotype(g.layers[:2] + g.layers[3:])), r"layer 2: field kind: a momentum gene reads capsules"),
    (lambda g: _with(g, 3, blocks=0), r"field blocks of a momentum gene must be >= 1"),
    (lambda g: _with(g, 0, blocks=2), r"field blocks belongs to momentum and residual genes, not conv"),
    # options where they belong
    (lambda g: _with(g, 2, routing="rba"), r"layer 2: field routing belongs to the genes that route"),
    (lambda g: _with(g, 3, shared=True), r"layer 3: field shared belongs to the class stage"),
    (lambda g: _with(g, 4, routing="em"), r"field routing must be one of \['rba', 'sda', 'self-attention'\]"),
    # the class stage stays a caps (or cell) gene
    (lambda g: Genotype(g.layers[:3] + (replace(g.layers[3], kind=LayerKind.RESIDUAL),)), r"the last gene must be the class capsule stage .* got residual"),
])
def test_each_rule_of_the_newer_genes(change, message):
    with pytest.raises(GenotypeError, match=message):
        change(efficient()).validate()


def _with(g: Genotype, i: int, **fields) -> Genotype:
    return replace(g, layers=g.layers[:i] + (replace(g.layers[i], **fields),) + g.layers[i + 1:])


def test_repair_makes_covering_genes_cover_and_regroup():
    g = efficient()
    broken = _with(_with(g, 1, out_channels=24), 2, kernel=5, stride=2, out_size=7)
    fixed = repair(broken).validate()
    dw = fixed.layers[2]
    assert (dw.kernel, dw.stride, dw.out_size) == (14, 1, 1)
    assert dw.out_capsules == 8 and dw.out_channels == 3  # 24 maps = 3 capsules of 8
    odd = repair(_with(g, 1, out_channels=20)).layers[2]  # 8 does not divide 20: nearest divisor
    assert (odd.out_channels, odd.out_capsules) == (2, 10)
    assert fixed.layers[3].routing == "self-attention" and fixed.layers[4].shared  # kept


def test_the_network_of_the_newer_genes():
    torch.manual_seed(0)
    for kind in (LayerKind.MOMENTUM, LayerKind.RESIDUAL):
        g = efficient(kind, blocks=2)
        model = create_model("genotype", genotype=g.to_dict(), decoder=False)
        assert isinstance(model.layers["2_dwcaps"], DepthwiseGene)
        block = model.layers[f"3_{kind.name.lower()}"]
        assert isinstance(block, BlockGene) and len(block.stack.blocks) == 2
        caps = model.layers["4_class"].caps[0]
        assert caps.routing == "self-attention" and caps.share_types == 8
        out = model(torch.rand(3, 1, 28, 28))
        assert out.lengths.shape == (3, 10) and torch.isfinite(out.lengths).all()
        # the options go to checkpoints as the readable object, which rebuilds the same network
        assert model.model_options["genotype"] == g.to_dict()
    # a gene's routing overrides the model's; without one the model's routing applies
    plain = efficient(routing=None, shared=False)
    sda = create_model("genotype", genotype=plain.to_dict(), routing="sda", decoder=False)
    assert sda.layers["4_class"].caps[0].routing == "sda"
    assert sda.layers["3_momentum"].project.routing == "sda"


def test_parameters_of_the_newer_genes_by_hand():
    g = efficient(LayerKind.RESIDUAL, blocks=1, routing="rba", shared=False)
    model = create_model("genotype", genotype=g.to_dict(), decoder=False, batchnorm=False)
    count = {name: sum(p.numel() for p in m.parameters()) for name, m in model.layers.items()}
    assert count["2_dwcaps"] == 32 * (14 * 14 + 1)  # one 14x14 filter and a bias per map
    # projection 4 capsules x (6x8) to 8 outputs; 2 layers of 8 x 8 matrices of 6x6
    assert count["3_residual"] == 4 * 8 * 6 * 8 + 2 * 8 * 8 * 6 * 6
    assert count["4_class"] == 8 * 6 * 10 * 16
    shared = create_model("genotype", genotype=_with(g, 1, out_channels=32).to_dict(),
                          decoder=False)
    assert sum(p.numel() for p in shared.layers["4_class"].parameters()) == count["4_class"]


def test_a_momentum_gene_saves_no_activations_per_block_a_residual_gene_does():
    mo = [genotype_training_cost(efficient(LayerKind.MOMENTUM, blocks=n)) for n in (1, 3)]
    res = [genotype_training_cost(efficient(LayerKind.RESIDUAL, blocks=n)) for n in (1, 3)]
    assert mo[1].activation_bytes == mo[0].activation_bytes
    assert res[1].activation_bytes > res[0].activation_bytes
    assert mo[1].train_flops > res[1].train_flops  # the reversible stack recomputes


def test_a_network_of_the_newer_genes_learns(mnist_root, tmp_path):
    from capslab.train import TrainConfig, train

    g = efficient(LayerKind.MOMENTUM, blocks=1)
    cfg = TrainConfig(model="genotype", model_options={"genotype": g.to_dict(), "decoder": False},
                      dataset="mnist", subset=3000, test_subset=500, epochs=5, batch_size=32,
                      seed=0, out=str(tmp_path / "run"), plots=False)
    summary = train(cfg, progress=False)
    assert summary["final_test_accuracy"] > 0.7  # chance is 0.1; 0.89 when written
