"""The strict settings base: coercion to declared types, unknown keys, nested settings,
identity, and the configs built on it refusing bad input before anything is written."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import pytest

from capslab.errors import ConfigError, UnknownDatasetError
from capslab.settings import Settings, coerce


@dataclass
class Inner(Settings):
    rate: float = 0.5
    names: tuple[str, ...] = ("a",)


@dataclass
class Outer(Settings):
    inner: Inner = field(default_factory=Inner)
    epochs: int = 3
    mode: Literal["fast", "slow"] = "fast"
    sizes: tuple[int, int] = (1, 2)
    flag: bool = False
    limit: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"

    IDENTITY_EXCLUDE: ClassVar[tuple[str, ...]] = ("device",)

    def validate(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"epochs must be >= 1, got {self.epochs}")


@pytest.mark.parametrize(("value", "hint", "expected"), [
    ("3", int, 3), (4.0, int, 4), ("1e-3", float, 1e-3), (2, float, 2.0), ("yes", bool, True),
    ("off", bool, False), (5, tuple[int, ...], (5,)), ([8, "64"], tuple[int, ...], (8, 64)),
    (None, int | None, None), ("7", int | None, 7), (3, str, "3"), ("fast", Literal["fast", "slow"], "fast"),
])
def test_coerce_accepts_what_reads_unambiguously(value, hint, expected):
    out = coerce(value, hint, "x")
    assert out == expected and type(out) is type(expected)


@pytest.mark.parametrize(("value", "hint"), [
    (True, int), (2.5, int), ("two", int), (True, float), ("maybe", bool), ([1, 2, 3], tuple[int, int]),
    ("medium", Literal["fast", "slow"]), ([1], dict), (None, int),
])
def test_coerce_refuses_the_rest_naming_the_field(value, hint):
    with pytest.raises(ConfigError, match=r"^x\b"):
        coerce(value, hint, "x")


def test_construction_coerces_and_validates():
    s = Outer(epochs="5", sizes=[3, 4], flag="true", inner={"rate": "0.25", "names": "b"})
    assert (s.epochs, s.sizes, s.flag) == (5, (3, 4), True)
    assert isinstance(s.inner, Inner) and s.inner.rate == 0.25 and s.inner.names == ("b",)
    with pytest.raises(ConfigError, match="epochs must be >= 1"):
        Outer(epochs=0)
    with pytest.raises(ConfigError, match="^mode must be one of 'fast', 'slow', got 'medium'"):
        Outer(mode="medium")
    with pytest.raises(ConfigError, match=r"inner: unknown setting\(s\) ratio; valid: rate, names"):
        Outer(inner={"ratio": 1})


def test_from_dict_round_trip_and_unknown_keys():
    s = Outer(epochs=4, sizes=(5, 6), inner=Inner(names=("x", "y")), extra={"k": [1]})
    d = s.to_dict()
    assert d["sizes"] == [5, 6] and d["inner"] == {"rate": 0.5, "names": ["x", "y"]}
    assert Outer.from_dict(d) == s
    with pytest.raises(ConfigError, match=r"unknown setting\(s\) epoch; valid: inner, epochs"):
        Outer.from_dict({"epoch": 3})
    with pytest.raises(ConfigError, match="expected a mapping"):
        Outer.from_dict([1, 2])


def test_identity_leaves_out_what_does_not_change_results():
    a, b = Outer(device="cpu"), Outer(device="cuda")
    assert a.identity() == b.identity() and "device" not in a.identity()
    c = a.replace(epochs=9)
    assert c.identity_difference(a.identity()) == ["epochs"]
    assert a.identity_difference({**a.identity(), "x": 1}) == ["x"]  # a field no longer known


def test_a_record_older_than_a_field_matches_its_default_nested_too():
    """Records written before a field existed (journals, checkpoints, summaries) lack its key:
    that matches the field's default, in nested settings as well, and nothing else."""
    a = Outer()
    older = a.identity()
    del older["flag"], older["inner"]["rate"]
    assert a.identity_difference(older) == [] and a.identity_matches(older)
    assert a.replace(flag=True).identity_difference(older) == ["flag"]
    assert a.replace(inner=Inner(rate=0.1)).identity_difference(older) == ["inner"]
    assert not a.replace(inner=Inner(rate=0.1)).identity_matches(older)
    with pytest.raises(ConfigError):
        a.replace(epochs=0)  # replace validates too


def test_training_settings_validate_models_policies_and_datasets():
    from capslab.train import TrainConfig, TrainingSettings

    with pytest.raises(ConfigError, match="unknown model 'capsnett'"):
        TrainingSettings(model="capsnett")
    with pytest.raises(ConfigError, match="model 'capsnet' has no option.*routingg"):
        TrainingSettings(model_options={"routingg": "sda"})
    with pytest.raises(ConfigError, match="policy 'one-cycle' has no option"):
        TrainingSettings(policy="one-cycle", policy_options={"lr": 1})
    with pytest.raises(UnknownDatasetError, match="unknown dataset 'imagenet'"):
        TrainingSettings(dataset="imagenet")
    # policy options are held as their declared types: one identity for equal settings
    a = TrainingSettings(policy="adabatch", policy_options={"batch_sizes": "8,64".split(","), "phase_epochs": 1})
    assert a.policy_options == {"batch_sizes": (8, 64), "phase_epochs": (1,)}
    b = TrainingSettings(policy="adabatch", policy_options={"batch_sizes": [8, 64], "phase_epochs": [1]})
    assert a.identity() == b.identity()
    run = TrainConfig.of(a, out="x", resume=True)
    assert run.identity() == a.identity() and run.out == "x"
