"""The efficient blocks in the search: space fields, the ``efficient`` preset, operators that
stay inside it, and a tiny real search with the preset and a limit."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from typer.testing import CliRunner

from capslab.cli.main import app
from capslab.errors import ConfigError
from capslab.genotype import GenotypeError, LayerKind, parse_genotype
from capslab.nas.journal import Journal
from capslab.nas.operators import cross, mutate, valid_cut_points
from capslab.nas.schema import database_url
from capslab.nas.space import SPACE_PRESETS, SearchSpace, genotype_key, sample
from tests.test_newer_genes import efficient


@pytest.fixture(scope="module")
def space():
    return SearchSpace.for_dataset("mnist", preset="efficient")


def test_the_preset_and_its_overrides():
    sp = SearchSpace.for_dataset("mnist", preset="efficient", block_kinds=["momentum"])
    assert sp.primary == ("dwcaps",) and sp.block_kinds == ("momentum",)
    assert sp.routings == SPACE_PRESETS["efficient"]["routings"]
    assert SearchSpace.for_dataset("mnist") == SearchSpace.for_dataset("mnist", preset="nascaps")
    with pytest.raises(ConfigError, match="unknown preset 'tiny'; valid: \\['nascaps', 'efficient'\\]"):
        SearchSpace.for_dataset("mnist", preset="tiny")
    with pytest.raises(ConfigError, match="unknown block_kinds \\['reversible'\\]"):
        SearchSpace.for_dataset("mnist", block_kinds=["reversible"])
    with pytest.raises(ConfigError, match="unknown routings \\['em'\\]"):
        SearchSpace.for_dataset("mnist", routings=["em"])


def test_the_papers_space_samples_only_the_papers_genes():
    sp = SearchSpace.for_dataset("mnist")
    rng = np.random.default_rng(0)
    assert all(sample(sp, rng).is_nascaps for _ in range(50))
    # and refuses the newer genes
    sp = SearchSpace.for_dataset("mnist", conv_layers=[2, 6])
    with pytest.raises(GenotypeError, match="field kind momentum is outside the search space"):
        sp.check(efficient(routing=None, shared=False).validate())


def test_sampling_and_the_operators_stay_inside_the_efficient_space(space):
    rng = np.random.default_rng(7)
    population = [sample(space, rng) for _ in range(40)]
    seen = Counter()
    for g in population:
        space.check(g)
        seen.update(layer.kind_name for layer in g.layers)
        seen.update(str(layer.routing) for layer in g.layers if layer.routing)
        seen.update(["shared"] if g.layers[-1].shared else [])
    # every newer gene and option is drawn
    assert {"dwcaps", "momentum", "residual", "self-attention", "shared"} <= set(seen)
    crossed = mutated = 0
    for _ in range(300):
        a, b = (population[i] for i in rng.integers(len(population), size=2))
        cuts = valid_cut_points(a, b, space)
        if cuts:
            for child in cross(a, b, cuts[int(rng.integers(len(cuts)))], space):
                space.check(child)
            crossed += 1
        m = mutate(a, space, rng)
        space.check(m)
        mutated += genotype_key(m) != genotype_key(a)
    assert crossed > 250 and mutated > 150


def test_mutation_reaches_the_newer_options(space):
    rng = np.random.default_rng(3)
    g = next(g for g in iter(lambda: sample(space, rng), None)
             if any(layer.kind in (LayerKind.MOMENTUM, LayerKind.RESIDUAL) for layer in g.layers))
    changed = Counter()
    for _ in range(200):
        m = mutate(g, space, rng)
        for old, new in zip(g.layers, m.layers, strict=True):
            for field in ("routing", "shared", "blocks", "out_capsules"):
                if getattr(old, field) != getattr(new, field):
                    changed[field] += 1
    assert {"routing", "shared", "blocks", "out_capsules"} <= set(changed)


def test_a_tiny_search_with_the_efficient_preset_and_a_limit(mnist_root, tmp_path):
    out = tmp_path / "run"
    args = ["search", "run", "--dataset", "mnist", "--space", "preset=efficient",
            "--generations", "1", "--population", "4", "--offspring", "2", "--epochs", "1",
            "--subset", "300", "--test-subset", "100", "--limit", "memory_KiB=150", "--seed", "0",
            "--out", str(out), "--json", "--quiet"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "run.json").read_text())["config"]
    assert saved["space"] == {"preset": "efficient"} and saved["limits"] == {"memory_KiB": 150.0}
    (run_id,) = [json.loads((out / "run.json").read_text())["run_id"]]
    with Journal(database_url(out / "journal.sqlite"), run_id) as journal:
        records = journal.evaluations()
    assert len(records) >= 4
    infeasible = [r for r in records if r.status == "infeasible"]
    trained = [r for r in records if r.ok]
    assert trained and all(r.memory_KiB <= 150 for r in trained)
    assert all(r.memory_KiB > 150 for r in infeasible)
    space = SearchSpace.for_dataset("mnist", preset="efficient")
    for r in records:  # journaled in the readable form, inside the preset's space
        g = space.check(parse_genotype(r.genotype_nascaps))
        assert any(layer.kind == LayerKind.DWCAPS for layer in g.layers)
    report = CliRunner().invoke(app, ["search", "report", str(out)])
    assert report.exit_code == 0, report.output
    front = json.loads((out / "report" / "pareto.json").read_text())
    assert front and all(item["memory_KiB"] <= 150 for item in _records(front))


def _records(front):
    return front["front"] if isinstance(front, dict) and "front" in front else front
