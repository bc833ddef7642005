"""What each scale plans, without training: the paper scale uses the papers' settings, the cpu
scale includes the CapsNet on all 60,000 MNIST images, and every run has its own folder."""

from __future__ import annotations

from pathlib import Path

from capslab.repro import EXPERIMENTS, default_device
from capslab.repro.common import Context
from capslab.repro.nascaps import pcc_config


def _plan(name: str, scale: str, tmp_path: Path):
    ctx = Context(scale, tmp_path, default_device(scale))
    return ctx, EXPERIMENTS[name].plan(ctx)


def _configs(plan):
    return [r.config for r in plan.runs]


def test_paper_scale_uses_the_papers_settings(tmp_path):
    _, capsnet = _plan("capsnet", "paper", tmp_path)
    configs = _configs(capsnet)
    assert len(configs) == 10  # MNIST and Fashion-MNIST, 5 runs each (FasTrCaps' protocol)
    assert {(c.dataset, c.subset, c.test_subset, c.epochs, c.batch_size) for c in configs} == {
        ("mnist", None, None, 30, 128), ("fashion-mnist", None, None, 30, 128)}
    assert {c.device for c in configs} == {"auto"}  # a GPU when one is present

    _, fastrcaps = _plan("fastrcaps", "paper", tmp_path)
    configs = _configs(fastrcaps)
    mnist = [c for c in configs if c.dataset == "mnist"]
    assert len(mnist) == 8 * 5 and len(configs) == 8 * 5 + 4 * 5
    assert {c.policy for c in mnist} == {"fixed", "exp-decay", "one-cycle", "warm-restarts",
                                         "adabatch", "warm-adabatch"}
    assert all(c.epochs == 30 and c.subset is None for c in configs)

    _, mocaps = _plan("mocaps", "paper", tmp_path)
    configs = _configs(mocaps)
    mnist = [c for c in configs if c.dataset == "mnist"]
    assert {c.model_options["num_blocks"] for c in mnist} == set(range(1, 9))
    assert all(c.epochs == 30 and c.batch_size == 128 and c.policy == "exp-decay" for c in mnist)
    assert all(c.epochs == 60 for c in configs if c.dataset.startswith("cifar"))
    authors = [c.model_options for c in configs if c.model_options["shortcut"] == "layer"]
    assert authors and all(o.get("sda_bias", False) == (o["routing"] == "sda") for o in authors)
    assert len({c.out for c in configs}) == len(configs)  # one folder per run

    ctx, _ = _plan("nascaps", "paper", tmp_path)
    pcc = pcc_config(ctx)
    assert pcc.networks == 66 and pcc.training.subset is None and pcc.space == {}


def test_cpu_scale_trains_the_capsnet_on_all_of_mnist(tmp_path):
    _, plan = _plan("capsnet", "cpu", tmp_path)
    mnist = [c for c in _configs(plan) if c.dataset == "mnist"]
    assert len(mnist) == 1 and mnist[0].subset is None and mnist[0].test_subset is None
    assert mnist[0].epochs == 2 and mnist[0].batch_size == 128 and mnist[0].device == "cpu"
    assert mnist[0].model_options == {}  # the full model


def test_paper_scale_announces_its_duration_before_anything_runs(tmp_path, monkeypatch):
    import dataclasses

    import capslab.repro as repro
    from capslab.repro.common import Outcome

    events = []

    def fake_estimate(name, scale, out, **kwargs):
        events.append(("estimate", scale))
        return {"name": name, "scale": scale, "device": "cpu", "total_seconds": 7200.0,
                "machine": {"cpu": "x", "threads": 2, "device": "cpu"},
                "items": [{"experiment": name, "label": "run", "seconds": 7200.0, "done": False}]}

    def fake_execute(ctx, plan):
        events.append(("execute", ctx.device))
        return Outcome(rows=[])

    experiment = dataclasses.replace(repro.EXPERIMENTS["nascaps"], execute=fake_execute)
    monkeypatch.setitem(repro.EXPERIMENTS, "nascaps", experiment)
    monkeypatch.setattr(repro, "estimate_repro", fake_estimate)
    notes = []
    repro.run_repro("nascaps", "paper", tmp_path, note=notes.append)
    assert events == [("estimate", "paper"), ("execute", "auto")]
    assert notes[0].startswith("estimated time of `nascaps` at the paper scale") and "2 h 00 min" in notes[0]
    events.clear()
    repro.run_repro("nascaps", "smoke", tmp_path / "smoke", note=notes.append)
    assert events == [("execute", "cpu")]  # no estimate below the paper scale unless asked
