"""The FasTrCaps study's table maths, plots and resume logic, on hand-made histories."""

from __future__ import annotations

import csv
import io
import json

import pytest

from capslab.cli.study import split_policy_options
from capslab.errors import ConfigError, RunMismatchError
from capslab.results import table_csv
from capslab.studies.fastrcaps import (
    StudyConfig,
    build_table,
    epochs_to_target,
    mean_curve,
    pareto_mask,
    plot_curves,
    plot_pareto,
    run_study,
    select_configuration,
    summarize_configuration,
    table_markdown,
)
from capslab.train.policies import build_schedule


def history(accs, secs=1.0, lr=1e-3):
    secs = secs if isinstance(secs, list) else [secs] * len(accs)
    return [
        {"epoch": e + 1, "test_accuracy": a, "epoch_seconds": s, "lr": lr, "batch_size": 16}
        for e, (a, s) in enumerate(zip(accs, secs, strict=True))
    ]


# -- pure maths -----------------------------------------------------------------------------


def test_mean_curve_and_epochs_to_target():
    h = [history([0.5, 0.8, 0.9]), history([0.7, 0.8, 0.7])]
    assert mean_curve(h) == pytest.approx([0.6, 0.8, 0.8])
    assert epochs_to_target([0.6, 0.8, 0.8], 0.8) == 2
    assert epochs_to_target([0.6, 0.8, 0.8], 0.81) is None
    assert epochs_to_target([0.9], 0.5) == 1
    with pytest.raises(ConfigError, match="different lengths"):
        mean_curve([history([0.5]), history([0.5, 0.6])])


def test_summarize_configuration():
    h = [history([0.90, 0.95, 0.94], [10.0, 2.0, 2.0]), history([0.92, 0.93, 0.96], [12.0, 2.0, 2.0])]
    row = summarize_configuration(h, parameters=1000, target=0.935)
    # per-run bests 0.95 and 0.96: mean 95.5 %, sample std 0.707 points (fractions in the row)
    assert row["best_acc_mean"] == pytest.approx(0.955)
    assert row["best_acc_std"] == pytest.approx(0.01 / 2**0.5)
    # mean curve 0.91, 0.94, 0.95: peak at epoch 3, target reached at epoch 2
    assert row["best_epoch"] == 3
    assert row["peak_mean_acc"] == pytest.approx(0.95)
    assert row["epochs_to_target"] == 2
    # mean epoch seconds 11, 2, 2: measured time is cumulative, the paper's is epochs x mean
    assert row["seconds_to_target"] == pytest.approx(13.0)
    assert row["seconds_to_best"] == pytest.approx(15.0)
    assert row["seconds_per_epoch"] == pytest.approx(5.0)
    assert row["train_time_paper_s"] == pytest.approx(15.0)
    assert row["parameters"] == 1000 and row["runs"] == 2
    assert summarize_configuration(h, 1000, target=0.99)["seconds_to_target"] is None
    # the earliest epoch wins a tie for the peak
    assert summarize_configuration([history([0.5, 0.9, 0.9])], 1, None)["best_epoch"] == 2


def test_pareto_mask_hand_made():
    # (accuracy max, time min, params min)
    points = [
        (99.45, 100.0, 8.2),  # most accurate: optimal
        (99.37, 500.0, 8.2),  # dominated by the first (less accurate, slower, same size)
        (99.38, 300.0, 6.7),  # smaller: optimal
        (99.26, 400.0, 6.7),  # dominated by the third
        (99.00, 50.0, 8.2),  # fastest: optimal
        (99.38, 300.0, 6.7),  # duplicate of an optimal point: kept
    ]
    assert pareto_mask(points, (True, False, False)) == [True, False, True, False, True, True]
    assert pareto_mask([(1, 1)], (True, True)) == [True]
    assert pareto_mask([(1, 2), (2, 1), (2, 2)], (True, True)) == [False, False, True]
    assert pareto_mask([(1, 2), (2, 1), (2, 2)], (False, False)) == [True, True, False]


ROWS = [
    {"policy": "fixed", "variant": "baseline", "best_acc_mean": 0.9937, "train_time_paper_s": 1421.0, "parameters": 8_215_568},
    {"policy": "warm-adabatch", "variant": "baseline", "best_acc_mean": 0.9945, "train_time_paper_s": 1307.0, "parameters": 8_215_568},
    {"policy": "warm-restarts", "variant": "baseline", "best_acc_mean": 0.9944, "train_time_paper_s": 308.0, "parameters": 8_215_568},
    {"policy": "warm-adabatch", "variant": "ws", "best_acc_mean": 0.9938, "train_time_paper_s": 900.0, "parameters": 6_708_240},
    {"policy": "fixed", "variant": "ws", "best_acc_mean": 0.9926, "train_time_paper_s": 200.0, "parameters": 6_708_240},
]


def test_select_configuration_goals():
    assert select_configuration(ROWS, "accuracy") == 1
    assert select_configuration(ROWS, "time") == 4  # fastest at any accuracy
    assert select_configuration(ROWS, "time", tolerance=0.05) == 2  # within 0.05 points of 99.45
    assert select_configuration(ROWS, "params") == 3  # fewest parameters, the more accurate of two
    assert select_configuration(ROWS, "params", tolerance=0.01) == 1  # only 99.45 qualifies
    assert select_configuration(ROWS, "params", tolerance=0.1) == 3
    with pytest.raises(ConfigError, match="goal must be one of"):
        select_configuration(ROWS, "energy")
    with pytest.raises(ConfigError, match="tolerance"):
        select_configuration(ROWS, "time", tolerance=-1)


def test_build_table_uses_the_baseline_peak_as_target():
    configs = {
        ("fixed", "baseline"): ([history([0.80, 0.90, 0.85], 5.0)], 100),
        ("warm-adabatch", "baseline"): ([history([0.91, 0.92, 0.93], [6.0, 1.0, 1.0])], 100),
        ("fixed", "ws"): ([history([0.70, 0.88, 0.89], 1.0)], 80),
    }
    rows, target = build_table(configs)
    assert target == pytest.approx(0.90)
    by = {(r["policy"], r["variant"]): r for r in rows}
    assert by[("fixed", "baseline")]["epochs_to_target"] == 2
    assert by[("warm-adabatch", "baseline")]["epochs_to_target"] == 1
    assert by[("warm-adabatch", "baseline")]["seconds_to_target"] == pytest.approx(6.0)
    assert by[("fixed", "ws")]["epochs_to_target"] is None
    # paper time: fixed 2 x 5 s = 10 s (dominated by WAB), WAB 3 x 8/3 s = 8 s, WS 3 x 1 s = 3 s
    assert [r["pareto"] for r in rows] == [False, True, True]
    rows, _ = build_table(configs, time_metric="measured")
    assert [r["pareto"] for r in rows] == [False, True, True]
    rows, target = build_table({("fixed", "ws"): configs[("fixed", "ws")]})
    assert target is None and rows[0]["epochs_to_target"] is None

    text = table_csv(rows, list(rows[0]))
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert parsed[0]["policy"] == "fixed" and parsed[0]["epochs_to_target"] == ""
    md = table_markdown(build_table(configs)[0], 0.9)
    assert "| warm-adabatch | baseline | 1 | 93.00 | 0.00 | 3 | 1 | 6.0 | 2.67 | 8.0 | 8.0 | 100 | yes |" in md
    assert md.count("\n| ") == 4 and "Target accuracy" in md


def test_plots_from_synthetic_histories(tmp_path):
    configs = {
        ("fixed", "baseline"): ([history([0.80, 0.90, 0.85]), history([0.82, 0.88, 0.9])], 100),
        ("warm-adabatch", "baseline"): ([history([0.91, 0.92, 0.93])], 100),
        ("warm-adabatch", "ws"): ([history([0.90, 0.91, 0.91])], 80),
    }
    rows, _ = build_table(configs)
    p = plot_pareto(rows, tmp_path / "pareto.png")
    schedules = {"warm-adabatch": build_schedule("warm-adabatch", 3, 100, options={"warm_epochs": 1, "batch_sizes": [4, 16]})}
    c = plot_curves({k: v[0] for k, v in configs.items()}, tmp_path / "curves.png", schedules)
    for path in (p, c):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
    assert sorted(f.name for f in tmp_path.iterdir()) == ["curves.png", "pareto.png"]  # no temp files


# -- configuration and resume ---------------------------------------------------------------


def test_split_policy_options():
    opts = split_policy_options(
        ["batch_sizes=8,64", "warm-adabatch:warm_epochs=1", "lr_min=1e-5"],
        ["fixed", "adabatch", "warm-adabatch", "one-cycle"],
    )
    assert opts == {
        "adabatch": {"batch_sizes": [8, 64]},
        "warm-adabatch": {"batch_sizes": [8, 64], "warm_epochs": 1, "lr_min": 1e-5},
        "one-cycle": {"lr_min": 1e-5},
    }
    # the study holds them as the policies' declared types
    study = StudyConfig(policies=("fixed", "adabatch", "warm-adabatch", "one-cycle"), policy_options=opts)
    assert study.policy_options["warm-adabatch"]["batch_sizes"] == (8, 64)
    with pytest.raises(ConfigError, match="none of the policies"):
        split_policy_options(["cycle_mult=2"], ["fixed", "adabatch"])
    with pytest.raises(ConfigError, match="not in the study"):
        split_policy_options(["one-cycle:lr_min=1e-5"], ["fixed"])
    with pytest.raises(ConfigError, match="valid options"):
        StudyConfig(policies=("fixed",), policy_options=split_policy_options(["fixed:rate=0.5"], ["fixed"]))


def test_study_config_validation():
    with pytest.raises(ConfigError, match="unknown policy"):
        StudyConfig(policies=("fixed", "cosine"))
    with pytest.raises(ConfigError, match="unknown model variant"):
        StudyConfig(variants=("tiny",))
    with pytest.raises(ConfigError, match="no option"):
        StudyConfig(policies=("fixed",), policy_options={"fixed": {"rate": 0.5}})
    with pytest.raises(ConfigError, match="unknown training setting"):
        StudyConfig(training={"epoch": 2})
    cfg = StudyConfig(training={"epochs": 2}, repeats=2, policies=("fixed", "adabatch"), out="/tmp/x",
                      policy_options={"adabatch": {"batch_sizes": (8, 32), "phase_epochs": (1,)}})
    assert len(cfg.runs()) == 2 * 2 * 2
    tc = cfg.train_config("adabatch", "ws", 1)
    assert tc.model_options == {"weight_sharing": True, "small_decoder": True}
    assert tc.seed == 1 and tc.resume and tc.out.endswith("runs/adabatch__ws/seed1")
    assert tc.policy_options == {"batch_sizes": (8, 32), "phase_epochs": (1,)}


def fake_trainer(calls):
    """Writes a summary like the trainer's; accuracy rises faster for warm-adabatch."""

    def train(config, progress=False, callbacks=()):
        from capslab.results import write_json

        calls.append((config.policy, config.model_options.get("weight_sharing", False), config.seed))
        speed = 0.3 if config.policy == "warm-adabatch" else 0.1
        hist = history([min(0.99, 0.5 + speed * (e + 1)) for e in range(config.epochs)], 2.0)
        for record in hist:
            for cb in callbacks:
                cb.on_epoch_end(record)
        summary = {"best_test_accuracy": max(h["test_accuracy"] for h in hist), "history": hist,
                   "parameters": 50 if config.model_options else 60, "train_size": 100,
                   "config": config.to_dict(), "identity": config.identity()}
        write_json(f"{config.out}/summary.json", "summary", summary)
        return summary

    return train


def test_run_study_resumes_and_writes_files(tmp_path):
    calls = []
    cfg = StudyConfig(training={"epochs": 3}, repeats=2, policies=("fixed", "warm-adabatch"), out=str(tmp_path))
    result = run_study(cfg, progress=False, train_fn=fake_trainer(calls), plots=False)
    assert result.trained == 8 and result.reused == 0 and len(calls) == 8
    assert result.choice["policy"] == "warm-adabatch"
    for name in ("study.csv", "study.md", "study.json"):
        assert (tmp_path / name).stat().st_size > 0
    # a second call trains nothing; a goal change only re-selects
    result = run_study(cfg, goal="params", progress=False, train_fn=fake_trainer(calls), plots=False)
    assert result.trained == 0 and result.reused == 8 and len(calls) == 8
    assert result.choice["variant"] == "ws"
    saved = json.loads((tmp_path / "study.json").read_text())
    assert saved["goal"] == "params" and len(saved["rows"]) == 4
    assert (saved["format"], saved["version"]) == ("capslab-fastrcaps-study", 1)
    assert all(0 < r["best_acc_mean"] <= 1 for r in saved["rows"])  # fractions in files
    # an unfinished run (summary lost) is retrained, the others are reused
    (tmp_path / "runs" / "fixed__ws" / "seed1" / "summary.json").unlink()
    result = run_study(cfg, progress=False, train_fn=fake_trainer(calls), plots=False)
    assert result.trained == 1 and calls[-1] == ("fixed", True, 1)
    # a folder holding runs with other settings is refused
    other = StudyConfig(training={"epochs": 3, "batch_size": 64}, repeats=1, policies=("fixed",),
                        out=str(tmp_path))
    with pytest.raises(RunMismatchError, match="other settings"):
        run_study(other, progress=False, train_fn=fake_trainer(calls), plots=False)
    # also when only the number of epochs differs: the finished 3-epoch run is not silently
    # retrained from scratch (its checkpoints are gone) and overwritten
    longer = StudyConfig(training={"epochs": 4}, repeats=2, policies=("fixed", "warm-adabatch"),
                         out=str(tmp_path))
    with pytest.raises(RunMismatchError, match=r"other settings \(epochs\)"):
        run_study(longer, progress=False, train_fn=fake_trainer(calls), plots=False)
    assert len(calls) == 9


def test_class_constants_are_not_options():
    with pytest.raises(ConfigError, match="no option"):
        StudyConfig(policies=("fixed",), policy_options={"fixed": {"LR_FIELD": "x"}})
    with pytest.raises(ConfigError, match="none of the policies"):
        split_policy_options(["LR_FIELD=lr"], ["fixed"])
