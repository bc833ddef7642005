"""Every reproduction at the smoke scale (tiny subsets of the real MNIST files, tiny models):
the table's structure, every number traced back to the run files it names, resuming, and
refusing a folder of another scale."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

import capslab.memory
import capslab.train
from capslab.errors import RunMismatchError
from capslab.repro import EXPERIMENTS, run_repro
from capslab.repro.rows import COLUMNS, UNITS, VARIANTS
from capslab.results import read_json, write_json
from capslab.studies.fastrcaps import build_table

FIELDS = {"experiment", "claim", "paper", "source", "measured", "unit", "settings", "seeds",
          "variant", "scale_note", "measured_by", "key", "criterion", "verdict", "note"}
VERDICTS = {"reproduced", "not reproduced", "no paper number", "not measured"}


@pytest.fixture(scope="module")
def smoke(mnist_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("repro") / "smoke"
    results = run_repro("all", "smoke", out, data_dir=mnist_root)
    return out, results


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def test_results_files_and_structure(smoke):
    out, results = smoke
    merged = _json(out / "results.json")
    assert merged["format"] == "capslab-repro" and merged["version"] == 1
    assert merged["scale"] == "smoke" and set(merged["experiments"]) == set(EXPERIMENTS)
    assert merged["rows"] == results["rows"] and merged["machine"]["cpu"]
    for name, result in merged["experiments"].items():
        assert result["command"] == f"capslab repro all --scale smoke --out {out}"
        own = _json(out / name / "results.json")
        assert own["format"] == "capslab-repro-result" and own["rows"] == result["rows"]
        assert result["rows"], name
        assert (out / name / "results.md").is_file()
    for row in merged["rows"]:
        assert set(row) == FIELDS, row["claim"]
        assert row["variant"] in VARIANTS and row["unit"] in UNITS
        assert row["verdict"] in VERDICTS and row["source"] and row["settings"]
        assert row["measured_by"] and row["key"], row["claim"]
        assert (row["paper"] is None) == (row["verdict"] == "no paper number") or \
            row["measured"] is None
        if row["experiment"] != "nascaps" or "genotype" not in row["claim"]:
            assert row["scale_note"], row["claim"]  # smoke differs from the paper everywhere
    # both readings of the residual block, and the authors' one is trained as well
    mocaps = [r for r in merged["rows"] if r["experiment"] == "mocaps"]
    assert {r["variant"] for r in mocaps} == set(VARIANTS)
    assert any(r["variant"] == "authors" and r["unit"] == "accuracy" for r in mocaps)
    # the headline claims of each paper have rows
    claims = " / ".join(r["claim"] for r in merged["rows"])
    for needle in ("CapsNet MNIST test accuracy", "Fashion-MNIST", "warm-adabatch: best",
                   "WarmAdaBatch: epochs to reach the fixed-lr best", "weight sharing",
                   "activation memory", "added training time", "CapsNet genotype on CapsAcc: energy",
                   "DeepCaps genotype on CapsAcc: latency", "Pearson correlation"):
        assert needle in claims, needle


def test_markdown_tables(smoke):
    out, results = smoke
    text = (out / "results.md").read_text()
    header = "| " + " | ".join(COLUMNS) + " |"
    assert text.count(header) == len(EXPERIMENTS)
    assert "capslab repro all --scale smoke" in text
    table_lines = [line for line in text.splitlines() if line.startswith("| ") and line != header]
    assert len(table_lines) == len(results["rows"])
    for name in EXPERIMENTS:
        assert f"## `{name}`" in text


def _mean(values):
    values = list(values)
    return sum(values) / len(values)


def _fastrcaps_table(out: Path, files: list[str]):
    """The study table rebuilt from the run summaries on disk (folder ``<policy>__<variant>``)."""
    grid: dict[tuple[str, str], list[dict]] = {}
    for f in files:
        summary = _json(out / f)
        policy, variant = Path(f).parent.parent.name.split("__")
        grid.setdefault((policy, variant), []).append(summary)
    table, _ = build_table({k: ([s["history"] for s in v], v[0]["parameters"])
                            for k, v in grid.items()})
    return {(r["policy"], r["variant"]): r for r in table}


def value_from_files(out: Path, row: dict) -> float | None:
    """The row's value recomputed from the files it names (every key CapsLab writes)."""
    key, files = row["key"], row["measured_by"]
    docs = [_json(out / f) for f in files]
    if key == "best_test_accuracy, mean over runs":
        return _mean(d["best_test_accuracy"] for d in docs)
    if key == "final_test_accuracy, mean over runs":
        return _mean(d["final_test_accuracy"] for d in docs)
    if key == "parameters":
        return float(docs[0]["parameters"])
    if key == "encoder_parameters":
        return float(docs[0]["encoder_parameters"])
    if key == "peak of the mean history[].test_accuracy curve":
        (only,) = _fastrcaps_table(out, files).values()  # the runs of one configuration
        return only["best_epoch"]
    if m := re.fullmatch(r"fits\.(\w+)\.(\w+)\.slope / 2\*\*20", key):
        return docs[0]["fits"][m[1]][m[2]]["slope"] / 2**20
    if m := re.fullmatch(r"fits\.(\w+)\.(\w+)\.slope / fits\.(\w+)\.(\w+)\.slope", key):
        fits = docs[0]["fits"]
        return fits[m[1]][m[2]]["slope"] / fits[m[3]][m[4]]["slope"]
    if m := re.fullmatch(r"rows\[epoch=(\d+)\]\.pcc", key):
        return next(r["pcc"] for r in docs[0]["rows"] if r["epoch"] == int(m[1]))
    if m := re.fullmatch(r"(CapsNet|DeepCaps)\.(\w+)", key):
        return docs[0][m[1]][m[2]]
    table = _fastrcaps_table(out, files)
    fixed, wab = table[("fixed", "baseline")], table.get(("warm-adabatch", "baseline"))
    if key.startswith("first epoch whose mean test accuracy"):
        return wab["epochs_to_target"]
    if key.startswith("1 - parameters(ws)"):
        return 1 - table[("fixed", "ws")]["parameters"] / fixed["parameters"]
    if key.startswith("1 - seconds_to_target"):
        return 1 - wab["seconds_to_target"] / fixed["seconds_to_best"]
    if key.startswith("1 - train_time_paper_s"):
        return max(1 - r["train_time_paper_s"] / fixed["train_time_paper_s"]
                   for (p, v), r in table.items() if v == "baseline" and p != "fixed"
                   and r["best_acc_mean"] >= fixed["best_acc_mean"])
    raise AssertionError(f"no way to check key {key!r} of {row['claim']!r}")


def test_every_number_comes_from_the_files_it_names(smoke):
    out, results = smoke
    checked = 0
    for row in results["rows"]:
        for f in row["measured_by"]:
            assert (out / f).is_file(), f
        if row["measured"] is None:
            assert row["verdict"] == "not measured" or row["note"]  # a note says why
            continue
        assert value_from_files(out, row) == pytest.approx(row["measured"], rel=1e-12), row["claim"]
        checked += 1
    assert checked >= len(results["rows"]) - 3
    # the runs really trained: one metrics line and one history record per epoch
    for row in results["rows"]:
        for f in row["measured_by"]:
            if f.endswith("summary.json"):
                summary = _json(out / f)
                lines = (out / f).with_name("metrics.jsonl").read_text().splitlines()
                assert len(summary["history"]) == len(lines) == summary["config"]["epochs"]
                assert not (out / f).with_name("last.pt").exists()  # dropped once finished


def test_hardware_rows_are_the_estimators_numbers(smoke):
    from capslab.genotype import CAPSNET_GENOTYPE
    from capslab.hw import estimate

    _, results = smoke
    energy = next(r for r in results["rows"] if r["claim"] == "CapsNet genotype on CapsAcc: energy")
    assert energy["measured"] == estimate(CAPSNET_GENOTYPE).energy_mJ
    assert energy["verdict"] == "reproduced" and energy["scale_note"] == ""


@pytest.fixture
def copy(smoke, tmp_path):
    out, _ = smoke
    target = tmp_path / "copy"
    shutil.copytree(out, target)
    return target


def test_rerun_reuses_every_run_and_reads_the_files_again(copy, mnist_root, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    summary_path = copy / "capsnet" / "mnist" / "seed0" / "summary.json"
    summary = read_json(summary_path, "summary")
    write_json(summary_path, "summary", {**summary, "best_test_accuracy": 0.5})
    monkeypatch.setattr(capslab.train, "train", no_training)
    monkeypatch.setattr(capslab.memory, "run_memory_study", no_training)
    results = run_repro("all", "smoke", copy, data_dir=mnist_root)
    row = next(r for r in results["rows"] if r["claim"] == "CapsNet MNIST test accuracy")
    assert row["measured"] == 0.5  # read from the run's summary, not kept anywhere else
    assert row["verdict"] == "not reproduced"


def test_rerun_trains_only_the_unfinished_run(copy, mnist_root, monkeypatch):
    real, calls = capslab.train.train, []

    def counting(config, **kwargs):
        calls.append(Path(config.out).relative_to(copy).as_posix())
        return real(config, **kwargs)

    (copy / "capsnet" / "fashion-mnist" / "seed0" / "summary.json").unlink()
    monkeypatch.setattr(capslab.train, "train", counting)
    results = run_repro("capsnet", "smoke", copy, data_dir=mnist_root)
    assert calls == ["capsnet/fashion-mnist/seed0"]
    assert set(results["experiments"]) == set(EXPERIMENTS)  # the merge keeps the others


def test_a_folder_of_another_scale_is_refused(copy, mnist_root):
    with pytest.raises(RunMismatchError, match="'smoke' scale"):
        run_repro("capsnet", "cpu", copy, data_dir=mnist_root)
