"""The training loop on small MNIST subsets: learning, resume equivalence, guards, CLI."""

import json

import pytest
import torch
from helpers import image_numbers, numbered_dataset
from typer.testing import CliRunner

from capslab.checkpoint import load_checkpoint
from capslab.cli.main import app
from capslab.data import BatchLoader
from capslab.errors import CheckpointError, ConfigError, NonFiniteLossError
from capslab.models.pretrained import load_model_and_checkpoint
from capslab.train import LambdaCallback, TrainConfig, train

TINY = {"conv_channels": 16, "primary_types": 4}


def tiny_config(out, **kw):
    base = dict(model="capsnet", model_options=TINY, dataset="mnist", epochs=2, batch_size=32,
                subset=600, test_subset=200, out=None if out is None else str(out), seed=3,
                plots=False)
    base.update(kw)
    return TrainConfig(**base)


def test_tiny_capsnet_learns_mnist_subset(mnist_root, tmp_path):
    summary = train(tiny_config(tmp_path / "run", subset=2000, test_subset=500, epochs=2,
                                model_options={"conv_channels": 32, "primary_types": 8}, plots=True),
                    progress=False)
    assert summary["best_test_accuracy"] > 0.6  # chance is 0.1
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    rec = json.loads(lines[-1])
    for key in ("epoch", "train_loss", "test_loss", "test_accuracy", "lr", "batch_size",
                "epoch_seconds", "images_per_second"):
        assert key in rec
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    for key in ("best_test_accuracy", "best_epoch", "total_seconds", "parameters", "config"):
        assert key in saved
    assert (tmp_path / "run" / "curves.png").stat().st_size > 0
    assert (tmp_path / "run" / "reconstructions.png").stat().st_size > 0


class Stop(Exception):
    pass


def test_resume_reaches_the_same_result(mnist_root, tmp_path):
    full = train(tiny_config(tmp_path / "full"), progress=False)

    def interrupt(record):
        if record["epoch"] == 1:
            raise Stop

    with pytest.raises(Stop):
        train(tiny_config(tmp_path / "cut"), progress=False,
              callbacks=[LambdaCallback(on_epoch_end=interrupt)])
    assert load_checkpoint(tmp_path / "cut" / "last.pt")["epoch"] == 1
    resumed = train(tiny_config(tmp_path / "cut", resume=True), progress=False)
    a = load_checkpoint(tmp_path / "full" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "cut" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [h["test_accuracy"] for h in full["history"]] == [h["test_accuracy"] for h in resumed["history"]]


def test_resume_refuses_other_config_and_existing_run(mnist_root, tmp_path):
    train(tiny_config(tmp_path / "r", epochs=1), progress=False)
    with pytest.raises(CheckpointError, match="another model or config.*lr"):
        train(tiny_config(tmp_path / "r", epochs=1, lr=0.5, resume=True), progress=False)
    with pytest.raises(CheckpointError, match="already holds a run.*resume it"):
        train(tiny_config(tmp_path / "r", epochs=1), progress=False)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(mnist_root, tmp_path, monkeypatch):
    import capslab.train.loop as trainer

    cfg = tiny_config(tmp_path / "n", epochs=2)
    real = trainer.capsule_loss
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        total, m, r = real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] > 25:  # epoch 1 has 19 steps: poison the second epoch
            total = total * float("nan")
        return total, m, r

    monkeypatch.setattr(trainer, "capsule_loss", poisoned)
    with pytest.raises(NonFiniteLossError, match="nan at epoch 2.*last good checkpoint"):
        train(cfg, progress=False)
    ckpt = load_checkpoint(tmp_path / "n" / "last.pt")
    assert ckpt["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_config_errors():
    with pytest.raises(ConfigError, match="unknown training setting.*bogus"):
        TrainConfig.from_dict({"bogus": 1})
    with pytest.raises(ConfigError, match="optimizer"):
        TrainConfig(optimizer="adamw2")
    with pytest.raises(ConfigError, match="epochs"):
        TrainConfig(epochs=0)


def test_corrupt_and_foreign_checkpoints(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a CapsLab checkpoint"):
        load_checkpoint(bad)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(CheckpointError, match="not a CapsLab checkpoint"):
        load_checkpoint(foreign)
    pickled = tmp_path / "pickled.pt"
    torch.save({"object": Stop()}, pickled)  # arbitrary objects: refused in one line, no advice
    with pytest.raises(CheckpointError, match="not a CapsLab checkpoint") as info:
        load_checkpoint(pickled)
    assert "weights_only" not in str(info.value) and "\n" not in str(info.value)


def test_cli_train_then_eval(mnist_root, tmp_path):
    runner = CliRunner()
    out = tmp_path / "cli"
    res = runner.invoke(app, ["train", "--epochs", "1", "--subset", "300", "--test-subset", "100",
                              "--model-opt", "conv_channels=8", "--model-opt", "primary_types=2",
                              "--out", str(out), "--quiet", "--eval-final-only"])
    assert res.exit_code == 0, res.output
    assert json.loads((out / "config.json").read_text())["eval_final_only"] is True
    model, ckpt = load_model_and_checkpoint(out / "best.pt")
    assert ckpt["model_name"] == "capsnet" and model.class_caps.num_in == 2 * 36
    res = runner.invoke(app, ["eval", "--checkpoint", str(out / "best.pt"), "--test-subset", "100", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["images"] == 100
    res = runner.invoke(app, ["eval", "--checkpoint", str(out / "best.pt"), "--dataset", "cifar10"])
    assert res.exit_code == 2 and "classes" in res.output
    res = runner.invoke(app, ["train", "--model", "capsnet", "--model-opt", "bogus=1", "--epochs", "1",
                              "--out", str(tmp_path / "never")])
    assert res.exit_code == 2 and "bogus" in res.output
    assert not (tmp_path / "never").exists()


def test_tensorboard_logs_per_step_lr_and_batch_size(mnist_root, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train(tiny_config(tmp_path / "tb", epochs=1, subset=200, tensorboard=True,
                      policy="warm-restarts"), progress=False)
    acc = EventAccumulator(str(tmp_path / "tb" / "tensorboard"))
    acc.Reload()
    lrs = [e.value for e in acc.Scalars("step/lr")]
    assert len(lrs) == 7  # ceil(200 / 32) optimiser steps
    assert lrs[0] > lrs[-1]  # the cosine cycle decays within the epoch
    assert {e.value for e in acc.Scalars("step/batch_size")} == {32}
    assert len(acc.Scalars("epoch/test_accuracy")) == 1


def test_ranger21_refuses_an_external_schedule():
    with pytest.raises(ConfigError, match="ranger21 plans its own"):
        TrainConfig(optimizer="ranger21", policy="one-cycle")
    TrainConfig(optimizer="ranger21", policy="fixed")


def test_atomic_writes_get_ordinary_file_permissions(tmp_path):
    import os

    from capslab.io import atomic_write_json

    atomic_write_json(tmp_path / "r.json", {"a": 1})
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "r.json").stat().st_mode & 0o777 == 0o666 & ~mask


def test_cli_config_file_with_command_line_overrides(mnist_root, tmp_path):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"model_options": {"conv_channels": 8, "primary_types": 2},
                               "epochs": 1, "subset": 200, "test_subset": 100, "batch_size": 50}))
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["train", "--config", str(cfg), "--out", str(out), "--quiet",
                                   "--model-opt", "primary_types=3", "--seed", "7"])
    assert res.exit_code == 0, res.output
    saved = json.loads((out / "config.json").read_text())
    assert saved["model_options"] == {"conv_channels": 8, "primary_types": 3}  # merged per key
    assert (saved["subset"], saved["batch_size"], saved["seed"]) == (200, 50, 7)
    assert saved["epochs"] == 1  # from the file although the flag has a default
    assert saved["format"] == "capslab-config" and saved["version"] == 1
    # a run's own config.json can be given back (its format keys are not settings)
    res = CliRunner().invoke(app, ["train", "--config", str(out / "config.json"), "--out",
                                   str(tmp_path / "again"), "--quiet"])
    assert res.exit_code == 0, res.output
    cfg.write_text(json.dumps({"bogus": 1}))
    res = CliRunner().invoke(app, ["train", "--config", str(cfg), "--out", str(tmp_path / "b")])
    assert res.exit_code == 2 and "unknown training setting(s) bogus" in res.output
    assert not (tmp_path / "b").exists()  # validated before anything is written


def test_files_carry_format_and_version_and_identity(mnist_root, tmp_path):
    summary = train(tiny_config(tmp_path / "v", epochs=1, subset=200, test_subset=100), progress=False)
    saved = json.loads((tmp_path / "v" / "summary.json").read_text())
    assert (saved["format"], saved["version"]) == ("capslab-summary", 1)
    assert saved["identity"] == summary["identity"] == tiny_config("x", epochs=1, subset=200,
                                                                   test_subset=100).identity()
    assert "device" not in saved["identity"] and "out" not in saved["identity"]
    line = json.loads((tmp_path / "v" / "metrics.jsonl").read_text().splitlines()[0])
    assert (line["format"], line["version"], line["epoch"]) == ("capslab-metrics", 1, 1)
    assert 0.0 <= line["test_accuracy"] <= 1.0  # a fraction in every file


def test_callbacks_see_every_step_and_epoch_in_order(mnist_root, tmp_path):
    from capslab.train import Callback

    events = []

    class Recorder(Callback):
        def on_train_start(self, config, start_epoch):
            events.append(("start", start_epoch))

        def on_step_end(self, step):
            events.append(("step", step.epoch, step.step, step.global_step, step.batch_size))

        def on_epoch_end(self, record):
            events.append(("epoch", record["epoch"], record["steps"]))

        def close(self):
            events.append(("close",))

    train(tiny_config(None, epochs=2, subset=100, test_subset=50, batch_size=40),
          progress=False, callbacks=[Recorder()])
    steps = [e for e in events if e[0] == "step"]
    assert events[0] == ("start", 0) and events[-1] == ("close",)
    assert [s[3] for s in steps] == list(range(6))  # ceil(100 / 40) = 3 steps per epoch
    assert [(s[1], s[2]) for s in steps] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    assert [e for e in events if e[0] == "epoch"] == [("epoch", 1, 3), ("epoch", 2, 6)]


def test_time_budget_stops_a_run(mnist_root, tmp_path):
    from capslab.errors import TrainingTimeout

    with pytest.raises(TrainingTimeout, match="time limit"):
        train(tiny_config(None, epochs=50, time_limit=0.01), progress=False)


def test_run_or_reuse_by_identity(mnist_root, tmp_path):
    from capslab.errors import RunMismatchError
    from capslab.experiments import run_or_reuse

    cfg = tiny_config(tmp_path / "r", epochs=1, subset=200, test_subset=100)
    first = run_or_reuse(cfg, progress=False)
    assert not first.reused
    again = run_or_reuse(cfg.replace(device="cpu", plots=True), progress=False)  # same identity
    assert again.reused and again.summary["history"] == first.summary["history"]
    with pytest.raises(RunMismatchError, match=r"other settings \(epochs\)"):
        run_or_reuse(cfg.replace(epochs=2), progress=False)


@pytest.mark.parametrize("name", ["adam", "sgd", "ranger21"])
def test_optimisers_take_their_multi_tensor_step_and_train(name):
    from capslab.optim import create_optimizer

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    opt = create_optimizer(name, model.parameters(), lr=0.05, total_steps=60)
    flag = "foreach" if name == "ranger21" else "fused"
    assert opt.defaults[flag] is True
    x = torch.randn(64, 4)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]])
    first = None
    for _ in range(60):
        loss = torch.nn.functional.mse_loss(model(x), y)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.8 * first  # it descends: the fused/foreach step is a real step


# ---------------------------------------------------------------------- validation split
def _ids(ds) -> list[int]:
    return image_numbers(ds.images)


def test_hold_out_is_stratified_disjoint_and_fixed_by_the_seed():
    from capslab.train.loop import hold_out

    labels = [0] * 500 + [1] * 300 + [2] * 200  # 50 / 30 / 20 %
    ds = numbered_dataset(labels)
    rest, val = hold_out(ds, 100, seed=7)
    assert val.split == "val" and len(val) == 100 and len(rest) == 900
    assert torch.bincount(val.labels).tolist() == [50, 30, 20]  # class proportions kept
    assert torch.bincount(rest.labels).tolist() == [450, 270, 180]
    assert set(_ids(val)).isdisjoint(_ids(rest)) and sorted(_ids(val) + _ids(rest)) == list(range(1000))
    for v, i in zip(val.labels.tolist(), _ids(val), strict=True):
        assert labels[i] == v  # each image keeps its own label
    assert _ids(hold_out(ds, 100, seed=7)[1]) == _ids(val)  # the seed fixes the split
    assert _ids(hold_out(ds, 100, seed=8)[1]) != _ids(val)
    with pytest.raises(ConfigError, match="leaves no training image"):
        hold_out(ds, 1000, seed=7)


def test_val_size_holds_out_before_the_subset_and_never_reads_the_test_split(mnist_root, monkeypatch):
    import capslab.train.loop as trainer

    read = []
    real = trainer.load_dataset

    def recording(name, split, **kw):
        read.append(split)
        return real(name, split, **kw)

    monkeypatch.setattr(trainer, "load_dataset", recording)
    cfg = tiny_config(None, subset=300, val_size=100, test_subset=50)
    train_set, val_set = trainer.prepare_data(cfg)
    assert read == ["train"]  # the test split is not even loaded
    assert (len(train_set), len(val_set), val_set.split) == (300, 100, "val")
    assert torch.bincount(val_set.labels, minlength=10).min() >= 8  # stratified: ~10 per class
    # the subset is drawn from what the validation split left: no image in both
    full = real("mnist", "train")
    rest, val = trainer.hold_out(full, 100, cfg.seed)
    assert torch.equal(val.images, val_set.images)
    seen = {bytes(x.numpy()) for x in val_set.images}
    assert not any(bytes(x.numpy()) in seen for x in train_set.images)
    # the same split whatever the subset: it depends on val_size and the seed only
    assert torch.equal(trainer.prepare_data(cfg.replace(subset=200))[1].images, val_set.images)


def test_a_run_with_val_size_is_evaluated_and_selected_on_the_validation_split(mnist_root, tmp_path,
                                                                              monkeypatch):
    import capslab.train.loop as trainer

    evaluated = []
    real = trainer.evaluate

    def recording(model, loader, *args, **kw):
        evaluated.append(len(loader.dataset))
        return real(model, loader, *args, **kw)

    monkeypatch.setattr(trainer, "evaluate", recording)
    cfg = tiny_config(tmp_path / "v", epochs=2, subset=200, val_size=60)
    summary = train(cfg, progress=False)
    assert evaluated == [60, 60]  # every epoch on the 60 validation images, never the test split
    assert summary["evaluated_on"] == "val" and summary["val_size"] == 60
    assert "best_test_accuracy" not in summary and "test_size" not in summary
    history = summary["history"]
    assert all("val_accuracy" in h and "test_accuracy" not in h for h in history)
    best = max(history, key=lambda h: h["val_accuracy"])
    assert summary["best_val_accuracy"] == best["val_accuracy"]
    assert summary["best_epoch"] == best["epoch"]
    assert summary["final_val_accuracy"] == history[-1]["val_accuracy"]
    lines = (tmp_path / "v" / "metrics.jsonl").read_text().splitlines()
    assert "val_accuracy" in json.loads(lines[0])
    # val_size changes the results: it is part of the identity; without it, the test split
    assert cfg.identity()["val_size"] == 60
    assert tiny_config(None).identity()["val_size"] is None


def test_val_size_must_be_positive_and_leave_training_images():
    with pytest.raises(ConfigError, match="val_size must be a positive number"):
        tiny_config(None, val_size=0)
    with pytest.raises(ConfigError, match="val_size 60000 leaves no training image"):
        tiny_config(None, val_size=60000)


def test_cli_train_with_a_validation_split(mnist_root, tmp_path):
    out = tmp_path / "val"
    res = CliRunner().invoke(app, ["train", "--epochs", "1", "--subset", "200", "--val-size", "50",
                                   "--model-opt", "conv_channels=8", "--model-opt", "primary_types=2",
                                   "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    assert "best validation accuracy" in res.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["evaluated_on"] == "val" and summary["val_size"] == 50
    assert summary["train_size"] == 200
    bad = CliRunner().invoke(app, ["train", "--val-size", "0", "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and not (tmp_path / "bad").exists()


def test_stop_after_then_resume_continues_the_same_schedule(mnist_root, tmp_path):
    """The search's rungs: training to epoch 1 of a 2-epoch schedule, then resuming up to epoch
    2, trains one more epoch only and ends exactly where the uninterrupted run ends."""
    full = train(tiny_config(tmp_path / "full"), progress=False)
    first = train(tiny_config(tmp_path / "rung", stop_after=1, resume=True), progress=False)
    assert first["epochs_done"] == 1 and len(first["history"]) == 1
    steps = []
    second = train(tiny_config(tmp_path / "rung", stop_after=2, resume=True), progress=False,
                   callbacks=[LambdaCallback(on_step_end=lambda s: steps.append(s.epoch))])
    assert set(steps) == {1}  # only the second epoch ran
    a = load_checkpoint(tmp_path / "full" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "rung" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert second["best_test_accuracy"] == full["best_test_accuracy"]
    with pytest.raises(ConfigError, match="stop_after 3 is beyond the run's 2 epochs"):
        tiny_config(None, stop_after=3)


def test_cli_stop_after_trains_a_long_run_in_parts(mnist_root, tmp_path):
    """`capslab train --stop-after`: the first call ends after one of the two planned epochs, at
    the 2-epoch schedule's learning rate; `--resume --stop-after 2` adds the second and ends
    where one uninterrupted call ends; a stop beyond --epochs is one line and exit code 2."""
    args = ["train", "--epochs", "2", "--subset", "64", "--test-subset", "32", "--batch-size", "32",
            "--policy", "exp-decay", "--policy-opt", "decay_every=epoch", "--policy-opt", "rate=0.5",
            "--model-opt", "conv_channels=8", "--model-opt", "primary_types=2", "--quiet"]
    full, parts = tmp_path / "full", tmp_path / "parts"
    assert CliRunner().invoke(app, [*args, "--out", str(full)]).exit_code == 0
    first = CliRunner().invoke(app, [*args, "--stop-after", "1", "--out", str(parts)])
    assert first.exit_code == 0, first.output
    assert "stopped after 1 of 2 epochs" in first.output
    assert json.loads((parts / "summary.json").read_text())["epochs_done"] == 1
    second = CliRunner().invoke(app, [*args, "--stop-after", "2", "--resume", "--out", str(parts)])
    assert second.exit_code == 0, second.output
    assert "stopped after" not in second.output
    records = [json.loads(line) for line in (parts / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert [r["lr"] for r in records] == pytest.approx([1e-3, 5e-4])
    a = load_checkpoint(full / "last.pt")["model"]
    b = load_checkpoint(parts / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    bad = CliRunner().invoke(app, [*args, "--stop-after", "3", "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "stop_after 3 is beyond the run's 2 epochs" in bad.output
    assert not (tmp_path / "bad").exists()


def test_eval_weight_bits_adds_the_quantized_accuracy(mnist_root):
    coarse = train(tiny_config(None, eval_weight_bits=2), progress=False)
    fine = train(tiny_config(None, eval_weight_bits=16), progress=False)
    record = max(coarse["history"], key=lambda h: h["test_quantized_accuracy"])
    assert coarse["quantized_weight_bits"] == 2
    assert coarse["best_test_quantized_accuracy"] == record["test_quantized_accuracy"]
    # same training (the bits change no weight); 16 bits keep the float accuracy, 2 bits do not
    assert coarse["best_test_accuracy"] == fine["best_test_accuracy"] > 0.5
    assert abs(fine["best_test_quantized_accuracy"] - fine["best_test_accuracy"]) <= 0.01
    assert coarse["best_test_quantized_accuracy"] < coarse["best_test_accuracy"] - 0.1
    with pytest.raises(ConfigError, match="eval_weight_bits must be an integer from 2 to 16"):
        tiny_config(None, eval_weight_bits=1)


def test_the_accelerator_mode_of_the_quantized_accuracy(mnist_root, monkeypatch):
    import capslab.train.loop as loop
    from capslab.data import load_dataset

    config = tiny_config(None, eval_weight_bits=3, eval_accelerator=True, subset=300)
    train_set = load_dataset("mnist", "train").stratified(300, 0)
    test = load_dataset("mnist", "test").stratified(100, 0)
    calibration = loop.calibration_batches(config, train_set)
    assert sum(len(x) for x in calibration) == 256
    assert loop.calibration_batches(config.replace(eval_accelerator=False), train_set) is None
    torch.manual_seed(0)
    model = loop.build_model(config, train_set.info).eval()
    loader = BatchLoader(test, 50, shuffle=False, augment=False)
    calls = []
    real = loop.calibrate
    monkeypatch.setattr(loop, "calibrate", lambda *a, **k: calls.append(k) or real(*a, **k))
    device = torch.device("cpu")
    accelerator = loop.evaluate_epoch(config, model, model, loader, device, "test", calibration)
    weights = loop.evaluate_epoch(config, model, model, loader, device, "test")
    assert calls == [{"weight_bits": 3, "activation_bits": 3, "routing_bits": 3, "device": device}]
    assert "test_quantized_accuracy" in accelerator and "test_quantized_accuracy" in weights
    with pytest.raises(ConfigError, match="eval_accelerator quantizes at eval_weight_bits"):
        tiny_config(None, eval_accelerator=True)


def test_the_search_takes_the_accelerator_mode():
    from capslab.nas.config import SearchConfig
    from capslab.nas.report import accuracy_meaning

    cfg = SearchConfig(training={"model": "genotype"}, accuracy_bits=8, accuracy_mode="accelerator")
    assert cfg.evaluator().accuracy_fn.accelerator_mode
    assert accuracy_meaning(cfg.to_dict()) == "8-bit weights, activations (calibrated) and routing"
    assert accuracy_meaning({"accuracy_bits": 8}) == "8-bit weights"
    assert accuracy_meaning({}) == "float32"
    with pytest.raises(ConfigError, match="accuracy_mode accelerator quantizes at accuracy_bits"):
        SearchConfig(training={"model": "genotype"}, accuracy_mode="accelerator")


def test_a_quantization_aware_run(mnist_root, tmp_path):
    result = CliRunner().invoke(app, [
        "train", "--model", "capsnet", "--model-opt", "conv_channels=16",
        "--model-opt", "primary_types=4", "--dataset", "mnist", "--subset", "300",
        "--test-subset", "100", "--epochs", "1", "--batch-size", "32", "--qat", "4",
        "--out", str(tmp_path / "q"), "--json", "--quiet"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["config"]["qat_bits"] == 4 and summary["quantized_weight_bits"] == 4
    assert 0 <= summary["best_test_quantized_accuracy"] <= 1
    assert "test_quantized_accuracy" in summary["history"][0]
    # the checkpoint holds float weights (the masters), not grid values
    w = load_model_and_checkpoint(tmp_path / "q" / "last.pt")[0].class_caps.weight
    assert len(torch.unique(w)) > 2 ** 4


def test_eval_final_only_reads_the_held_out_split_once_after_the_last_epoch(mnist_root, tmp_path,
                                                                            monkeypatch):
    """The finalists' test: one reading, after the last epoch, equal to that epoch's reading in
    a run evaluated every epoch (same training: evaluating changes no weight)."""
    import capslab.train.loop as loop
    from capslab.report.run import build_page

    every = train(tiny_config(None), progress=False)
    reads = []
    real = loop.evaluate
    monkeypatch.setattr(loop, "evaluate", lambda *a, **k: reads.append(1) or real(*a, **k))
    once = train(tiny_config(tmp_path / "once", eval_final_only=True, plots=True), progress=True)
    assert len(reads) == 1
    first, last = once["history"]
    assert "test_accuracy" not in first and "train_accuracy" in first
    assert once["final_test_accuracy"] == last["test_accuracy"] == every["history"][-1]["test_accuracy"]
    assert once["best_epoch"] == 2 and (tmp_path / "once" / "best.pt").is_file()
    assert (tmp_path / "once" / "curves.png").stat().st_size > 0
    assert "final test accuracy" in build_page(tmp_path / "once", evaluate=False).render()
    # the search's rungs: a run stopped after epoch 1 and resumed is read once, at epoch 2
    reads.clear()
    train(tiny_config(tmp_path / "rung", eval_final_only=True, stop_after=1, resume=True), progress=False)
    assert len(reads) == 1  # stop_after's epoch is that run's last
    assert not tiny_config(None, eval_final_only=True).identity().keys() - tiny_config(None).identity().keys()


def test_hflip_is_part_of_the_augmentation_and_of_the_run_identity(mnist_root, monkeypatch):
    import capslab.train.loop as loop

    seen = []
    real = loop.BatchLoader
    monkeypatch.setattr(loop, "BatchLoader", lambda *a, **k: seen.append(k.get("hflip")) or real(*a, **k))
    flipped = train(tiny_config(None, epochs=1, hflip=True), progress=False)
    assert seen.count(True) == 1  # the training loader flips (1 epoch); the evaluation loader not
    plain = train(tiny_config(None, epochs=1), progress=False)
    assert flipped["history"][0]["train_loss"] != plain["history"][0]["train_loss"]
    assert tiny_config(None, hflip=True).identity()["hflip"] is True
    assert tiny_config(None).identity_matches({k: v for k, v in tiny_config(None).identity().items()
                                               if k != "hflip"})  # runs from before it still match
    with pytest.raises(ConfigError, match="hflip is part of the training augmentation"):
        tiny_config(None, hflip=True, augment=False)


def test_a_checkpoint_written_before_a_field_existed_resumes(tmp_path, mnist_root):
    """A search's candidates continue from their rung-1 checkpoints: one saved before
    ``hflip`` existed must resume (its key missing matches the default), and not with hflip."""
    from capslab.checkpoint import load_checkpoint, save_checkpoint

    first = train(tiny_config(tmp_path, epochs=2, stop_after=1, resume=True), progress=False)
    last = tmp_path / "last.pt"
    ckpt = load_checkpoint(last)
    del ckpt["identity"]["hflip"]
    save_checkpoint(last, **{k: v for k, v in ckpt.items() if k not in ("format", "version")})
    with pytest.raises(CheckpointError, match=r"\(hflip: checkpoint None vs now True\)"):
        train(tiny_config(tmp_path, epochs=2, hflip=True, resume=True), progress=False)
    done = train(tiny_config(tmp_path, epochs=2, resume=True), progress=False)
    assert [h["epoch"] for h in done["history"]] == [1, 2] and done["history"][0] == first["history"][0]


def test_held_out_history_names_the_split_from_the_evaluated_epochs():
    from capslab.train.callbacks import held_out_history

    trained_only = {"epoch": 1, "train_accuracy": 0.5}
    # a validation run with eval_final_only: its first epoch says nothing of the split
    assert held_out_history([trained_only, {"epoch": 2, "val_accuracy": 0.7}]) == (
        "val", [{"epoch": 2, "val_accuracy": 0.7}])
    assert held_out_history([trained_only]) == ("test", [])  # unfinished: nothing read yet
    assert held_out_history([]) == ("test", [])
    every = [{"epoch": e, "test_accuracy": 0.1 * e} for e in (1, 2)]
    assert held_out_history(every) == ("test", every)
