"""Learning-rate and batch-size schedules of FasTrCaps: pinned values from the paper."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capslab.cli.options import parse_key_values
from capslab.errors import ConfigError
from capslab.train.policies import (
    POLICIES,
    build_schedule,
    cosine_restart_lr,
    one_cycle_lr,
)
from capslab.train.policy_options import make_policy_options, policy_options_class

MID = (1e-4 + 1e-3) / 2  # lr halfway through a cosine cycle over [1e-4, 1e-3]


def lr_at(schedule, global_step: int) -> float:
    """Learning rate of a 0-based global step, through the (epoch, step) interface."""
    for e in range(schedule.epochs):
        if global_step < schedule.epoch_start(e + 1):
            return schedule.lr(e, global_step - schedule.epoch_start(e))
    raise IndexError(global_step)


def test_policies_list():
    assert POLICIES == ["fixed", "exp-decay", "one-cycle", "warm-restarts", "adabatch", "warm-adabatch"]


# -- fixed ----------------------------------------------------------------------------------


def test_fixed_is_constant_and_lr_overrides():
    s = build_schedule("fixed", epochs=3, train_size=1000, batch_size=100)
    assert {x["lr"] for x in s.steps()} == {1e-3}
    assert build_schedule("fixed", 1, 10, lr=0.05).lr(0, 0) == 0.05


# -- exponential decay ----------------------------------------------------------------------


def test_exp_decay_after_2000_steps():
    # 60,000 images at batch 128: 469 steps per epoch; step 2000 is in epoch 4
    s = build_schedule("exp-decay", epochs=30, train_size=60_000, batch_size=128)
    assert s.lr(0, 0) == pytest.approx(1e-3)
    assert lr_at(s, 2000) == pytest.approx(9.6e-4, rel=1e-12)
    assert lr_at(s, 4000) == pytest.approx(1e-3 * 0.96**2, rel=1e-12)
    assert lr_at(s, 1000) == pytest.approx(1e-3 * 0.96**0.5, rel=1e-12)
    # the global step runs on across epochs: the first step of epoch 1 is global step 469
    assert s.lr(1, 0) == pytest.approx(1e-3 * 0.96 ** (469 / 2000))


def test_exp_decay_staircase_and_authors_4000():
    s = build_schedule("exp-decay", 30, 60_000, 128, options={"staircase": True})
    assert lr_at(s, 1999) == pytest.approx(1e-3)
    assert lr_at(s, 2000) == pytest.approx(9.6e-4)
    assert lr_at(s, 3999) == pytest.approx(9.6e-4)
    s = build_schedule("exp-decay", 30, 60_000, 128, options={"decay_steps": 4000})
    assert lr_at(s, 4000) == pytest.approx(9.6e-4)


def test_exp_decay_per_epoch():
    s = build_schedule("exp-decay", 5, 1000, 100, options={"decay_every": "epoch"})
    for e in range(5):
        assert s.lr(e, 0) == s.lr(e, 9) == pytest.approx(1e-3 * 0.96**e)


# -- one-cycle ------------------------------------------------------------------------------


def test_one_cycle_pinned_points():
    s = build_schedule("one-cycle", epochs=10, train_size=1000, batch_size=10)  # 1,000 steps
    assert s.total_steps == 1000
    assert lr_at(s, 0) == pytest.approx(1e-4)
    assert lr_at(s, 225) == pytest.approx(5.5e-4)  # halfway up
    assert lr_at(s, 450) == pytest.approx(1e-3)  # peak at 45%
    assert lr_at(s, 675) == pytest.approx(5.5e-4)  # halfway down
    assert lr_at(s, 900) == pytest.approx(1e-4)  # back to lr_min at 90%
    assert lr_at(s, 950) == pytest.approx(0.5 * (1e-4 + 1e-5))  # annealing
    assert lr_at(s, 999) == pytest.approx(1e-4 - 9e-5 * 99 / 100)
    # at T the annealing ends at 1e-5 (= 9 * lr_min / T slope of the paper, over 0.1 T)
    assert one_cycle_lr(1000, 1000, 1e-4, 1e-3, 1e-5) == pytest.approx(1e-5)


def test_one_cycle_fractions_overridable():
    s = build_schedule("one-cycle", 1, 100, 1, options={"peak_fraction": 0.3, "end_fraction": 0.6, "lr_max": 2e-3})
    assert lr_at(s, 30) == pytest.approx(2e-3)
    assert lr_at(s, 60) == pytest.approx(1e-4)
    assert lr_at(s, 80) == pytest.approx(1e-4 - 9e-5 * 0.5)


# -- warm restarts --------------------------------------------------------------------------


def test_warm_restarts_one_epoch_cycles():
    s = build_schedule("warm-restarts", epochs=3, train_size=1000, batch_size=10)  # 100/epoch
    assert s.cycle_starts == [0, 100, 200]
    assert s.lr(0, 0) == pytest.approx(1e-3)
    assert s.lr(0, 50) == pytest.approx(MID)  # half a cycle
    assert s.lr(0, 25) == pytest.approx(1e-4 + 0.5 * 9e-4 * (1 + math.cos(math.pi / 4)))
    assert s.lr(0, 99) == pytest.approx(cosine_restart_lr(99, 100, 1e-4, 1e-3))
    assert s.lr(0, 99) < 1.01e-4
    assert s.lr(1, 0) == pytest.approx(1e-3)  # restart: t back to 0
    assert s.lr(2, 50) == pytest.approx(MID)


def test_warm_restarts_multiplier_and_fractional_cycles():
    s = build_schedule("warm-restarts", 7, 1000, 10, options={"cycle_mult": 2})  # cycles of 1, 2, 4 epochs
    assert s.cycle_starts == [0, 100, 300]
    assert lr_at(s, 300) == pytest.approx(1e-3)
    assert lr_at(s, 500) == pytest.approx(MID)  # half of the 400-step third cycle
    s = build_schedule("warm-restarts", 2, 1000, 10, options={"cycle_epochs": 0.5})
    assert s.cycle_starts == [0, 50, 100, 150]
    assert s.lr(0, 25) == pytest.approx(MID)


# -- adaptive batch size --------------------------------------------------------------------


def test_adabatch_paper_sequence():
    s = build_schedule("adabatch", epochs=30, train_size=60_000)
    sizes = [s.batch_size(e) for e in range(30)]
    # batch 1 for epochs 1-3, 2^4 for 4-8, 2^5 for 9-13, 2^6 after (not the authors' 2^P bug)
    assert sizes == [1] * 3 + [16] * 5 + [32] * 5 + [64] * 17
    assert [s.steps_in_epoch(e) for e in (0, 3, 8, 13)] == [60_000, 3750, 1875, 938]
    assert {x["lr"] for x in s.steps()} == {1e-3}
    assert s.total_steps == 3 * 60_000 + 5 * 3750 + 5 * 1875 + 17 * 938


def test_adabatch_overrides():
    s = build_schedule("adabatch", 20, 100, options={"p": 2})
    assert [s.batch_size(e) for e in (0, 2, 3, 7, 8, 12, 13, 19)] == [1, 1, 4, 4, 8, 8, 16, 16]
    s = build_schedule("adabatch", 3, 100, options={"batch_sizes": [8, 32], "phase_epochs": [1], "lr": 5e-3})
    assert [s.batch_size(e) for e in range(3)] == [8, 32, 32]
    assert [s.steps_in_epoch(e) for e in range(3)] == [13, 4, 4]
    assert s.lr(2, 3) == 5e-3
    s = build_schedule("adabatch", 4, 100, options={"batch_sizes": [8, 16, 64]})  # phase_epochs -> [3, 5]
    assert [s.batch_size(e) for e in range(4)] == [8, 8, 8, 16]


def test_warm_adabatch_paper_setting():
    n = 60_000
    s = build_schedule("warm-adabatch", epochs=30, train_size=n)
    assert [s.batch_size(e) for e in range(30)] == [1] * 3 + [16] * 27
    warm_steps = 3 * n  # one cycle spanning exactly the first 3 epochs at batch 1
    rest = 27 * 3750  # a second cycle spanning the 27 epochs at batch 16
    assert s.total_steps == warm_steps + rest
    assert s.cycle_starts == [0, warm_steps]
    assert s.lr(0, 0) == pytest.approx(1e-3)
    assert s.lr(1, n // 2) == pytest.approx(MID)  # global step 1.5 n: half the first cycle
    assert s.lr(2, n - 1) == pytest.approx(cosine_restart_lr(warm_steps - 1, warm_steps, 1e-4, 1e-3))
    assert s.lr(2, n - 1) < 1.0001e-4
    # the restart and the batch change happen together
    assert s.lr(3, 0) == pytest.approx(1e-3) and s.batch_size(3) == 16
    assert lr_at(s, warm_steps + rest // 2) == pytest.approx(MID)
    assert s.lr(29, 3749) < 1.0001e-4


def test_warm_adabatch_reduced_scale():
    s = build_schedule(
        "warm-adabatch", 3, 100, options={"warm_epochs": 1, "batch_sizes": [8, 32], "lr_min": 1e-5}
    )
    assert [s.batch_size(e) for e in range(3)] == [8, 32, 32]
    assert s.cycle_starts == [0, 13]
    assert s.lr(1, 0) == pytest.approx(1e-3)
    assert lr_at(s, 13 + 4) == pytest.approx((1e-5 + 1e-3) / 2)  # half of the 8-step cycle
    # training not longer than the warm phase: the first cycle spans the whole run
    s = build_schedule("warm-adabatch", 2, 100, options={"batch_sizes": [10, 20]})
    assert s.cycle_starts == [0] and s.lr(1, 0) == pytest.approx(MID)


# -- scaling: no hard-coded step counts -----------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    policy=st.sampled_from(POLICIES),
    epochs=st.integers(1, 6),
    train_size=st.integers(1, 500),
    batch_size=st.integers(1, 64),
)
def test_schedules_scale_with_data_and_batch(policy, epochs, train_size, batch_size):
    opts = {"batch_sizes": [batch_size, 2 * batch_size]} if "adabatch" in policy else {}
    if policy == "adabatch":
        opts["phase_epochs"] = [1]
    s = build_schedule(policy, epochs, train_size, batch_size, options=opts)
    steps = list(s.steps())
    assert len(steps) == s.total_steps == sum(s.steps_in_epoch(e) for e in range(epochs))
    for e in range(epochs):
        assert s.steps_in_epoch(e) == math.ceil(train_size / s.batch_size(e))
    assert [x["step"] for x in steps] == list(range(s.total_steps))
    assert [x["epoch"] for x in steps] == sorted(x["epoch"] for x in steps)
    assert steps[0]["epoch"] == 1 and steps[-1]["epoch"] == epochs
    assert all(1e-5 - 1e-12 <= x["lr"] <= 1e-3 + 1e-12 for x in steps)
    d = s.to_dict()  # everything needed to rebuild the schedule
    assert build_schedule(d["policy"], d["epochs"], d["train_size"], d["batch_size"], options=d["options"]).to_dict() == d


def test_one_cycle_peak_follows_train_size():
    for n, b in [(1000, 10), (2000, 10), (1000, 7)]:
        s = build_schedule("one-cycle", 2, n, b)
        peak = 0.45 * s.total_steps
        if peak.is_integer():
            assert lr_at(s, int(peak)) == pytest.approx(1e-3)
        lrs = [x["lr"] for x in s.steps()]
        assert lrs.index(max(lrs)) == math.floor(peak) or lrs.index(max(lrs)) == math.ceil(peak)


# -- validation and parsing -----------------------------------------------------------------


def test_unknown_option_lists_valid_ones():
    with pytest.raises(ConfigError, match=r"no option\(s\) cycle_epochs; valid options: lr, p, "):
        build_schedule("adabatch", 3, 100, options={"cycle_epochs": 2})
    with pytest.raises(ConfigError, match=r"unknown policy 'cosine'; choose one of \['fixed', "):
        build_schedule("cosine", 3, 100)
    with pytest.raises(ConfigError, match="unknown policy 'cosine'"):
        make_policy_options("cosine")
    # class attributes are not options
    with pytest.raises(ConfigError, match=r"policy 'fixed' has no option\(s\) LR_FIELD; valid options: lr$"):
        make_policy_options("fixed", {"LR_FIELD": "x"})


@pytest.mark.parametrize(
    "policy, options, message",
    [
        ("one-cycle", {"lr_min": 1e-2}, "lr_max .* is below lr_min"),
        ("one-cycle", {"peak_fraction": 0.95}, "peak_fraction < end_fraction"),
        ("exp-decay", {"rate": 1.5}, r"policy 'exp-decay': option rate must be in \(0, 1\], got 1.5"),
        ("exp-decay", {"decay_every": "batch"}, "decay_every"),
        ("exp-decay", {"decay_steps": "many"}, "policy 'exp-decay': option decay_steps must be a int, got 'many'"),
        ("warm-restarts", {"cycle_mult": 0.5}, "cycle_mult"),
        ("adabatch", {"batch_sizes": [8, 16], "phase_epochs": [1, 2]}, "need 1 phase_epochs"),
        ("adabatch", {"batch_sizes": [0, 16]}, "integers >= 1"),
        ("adabatch", {"phase_epochs": ["x"]}, r"policy 'adabatch': option phase_epochs must be a list of int"),
        ("warm-adabatch", {"batch_sizes": [1, 16, 32]}, "needs 2 values"),
        ("fixed", {"lr": -1.0}, "lr must be > 0"),
    ],
)
def test_option_validation(policy, options, message):
    with pytest.raises(ConfigError, match=message):
        build_schedule(policy, 3, 100, options=options)


def test_bad_epochs_and_steps():
    with pytest.raises(ConfigError, match="epochs must be"):
        build_schedule("fixed", 0, 100)
    for bad in ({"train_size": 2.5}, {"batch_size": True}, {"epochs": "3"}):
        args = {"epochs": 2, "train_size": 100, "batch_size": 10, **bad}
        with pytest.raises(ConfigError, match=f"{next(iter(bad))} must be an integer >= 1"):
            build_schedule("fixed", **args)
    fixed_schedule = type(build_schedule("fixed", 1, 1))
    assert fixed_schedule(2, 100, 10).options == make_policy_options("fixed")  # the defaults
    with pytest.raises(ConfigError, match="options must be FixedOptions, got AdaBatchOptions"):
        fixed_schedule(2, 100, 10, make_policy_options("adabatch"))
    s = build_schedule("fixed", 2, 100, 10)
    with pytest.raises(IndexError, match="0-based"):
        s.lr(2, 0)
    with pytest.raises(IndexError, match="step 10 is outside"):
        s.lr(0, 10)


def test_options_classes_are_settings():
    for policy in POLICIES:
        cls = policy_options_class(policy)
        assert cls.POLICY == policy
        defaults = cls()
        assert make_policy_options(policy) == defaults
        assert cls.from_dict(defaults.to_dict()) == defaults  # the dict round trip
    # adabatch: derived defaults, from p
    o = make_policy_options("adabatch", {"p": 2})
    assert (o.batch_sizes, o.phase_epochs) == ((1, 4, 8, 16), (3, 5, 5))
    o = make_policy_options("adabatch", {"batch_sizes": [8, 16, 64]})
    assert o.phase_epochs == (3, 5)
    o = make_policy_options("adabatch", {"batch_sizes": [8]})
    assert o.phase_epochs == ()


def test_command_line_options_are_parsed_then_coerced():
    # the command line parses key=value (capslab.cli.options) ...
    raw = parse_key_values(["batch_sizes=8,64", "phase-epochs=1", "staircase=yes", "lr=1e-3", "x=abc"])
    assert raw == {"batch_sizes": [8, 64], "phase_epochs": 1, "staircase": True, "lr": 1e-3, "x": "abc"}
    # ... and the policy's options convert to the declared types
    typed = make_policy_options("adabatch", parse_key_values(["batch_sizes=8,64", "phase_epochs=1", "lr=0.01"]))
    assert (typed.batch_sizes, typed.phase_epochs, typed.lr) == ((8, 64), (1,), 0.01)
    assert make_policy_options("warm-restarts", parse_key_values(["cycle_epochs=2"])).cycle_epochs == 2.0
    assert make_policy_options("exp-decay", parse_key_values(["staircase=yes"])).staircase is True
    # strings from a config file are read too
    o = make_policy_options("exp-decay", {"staircase": "off", "decay_steps": "4000", "rate": "0.5"})
    assert (o.staircase, o.decay_steps, o.rate) == (False, 4000, 0.5)
    s = build_schedule("adabatch", 3, 100, options=parse_key_values(["batch_sizes=8,64", "phase_epochs=1"]))
    assert [s.batch_size(e) for e in range(3)] == [8, 64, 64]
    with pytest.raises(ConfigError, match="valid options: lr_min, lr_max, warm_epochs, batch_sizes"):
        make_policy_options("warm-adabatch", parse_key_values(["p=3"]))
    with pytest.raises(ConfigError, match="not of the form key=value"):
        parse_key_values(["lr"], "policy option")
    with pytest.raises(ConfigError, match="given twice"):
        parse_key_values(["lr=1", "lr=2"], "policy option")
    with pytest.raises(ConfigError, match="policy 'exp-decay': option staircase must be a bool, got 'maybe'"):
        make_policy_options("exp-decay", parse_key_values(["staircase=maybe"]))
    with pytest.raises(ConfigError, match="policy 'fixed': option lr must be a float, got True"):
        make_policy_options("fixed", {"lr": True})  # a bool is not a number


def test_lr_argument_maps_to_main_rate():
    assert build_schedule("warm-restarts", 1, 10, 1, lr=2e-3).options.lr_max == 2e-3
    assert build_schedule("adabatch", 1, 10, lr=2e-3).options.lr == 2e-3
    assert make_policy_options("one-cycle", lr=2e-3).lr_max == 2e-3
    # an explicit option wins over the generic lr
    assert build_schedule("one-cycle", 1, 10, 1, lr=2e-3, options={"lr_max": 5e-3}).options.lr_max == 5e-3
    d = build_schedule("warm-adabatch", 4, 50, options={"batch_sizes": [2, 8]}).to_dict()
    assert d["options"] == {"lr_min": 1e-4, "lr_max": 1e-3, "warm_epochs": 3, "batch_sizes": [2, 8]}
    assert d["total_steps"] == 3 * 25 + 7


def test_an_lr_option_next_to_the_lr_argument():
    s = build_schedule("fixed", 1, 10, 5, 1e-3, {"lr": 0.02})
    assert s.lr(0, 1) == 0.02
    s = build_schedule("warm-restarts", 1, 10, 5, 2e-3, {"lr_min": 1e-5})
    assert (s.options.lr_max, s.options.lr_min) == (2e-3, 1e-5)
