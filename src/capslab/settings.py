"""One strict mechanism for typed configuration: the :class:`Settings` dataclass base.

Every configuration of CapsLab (training, policy options, search, search space, studies, memory
study) is a dataclass that derives from :class:`Settings`. Constructing one coerces each field
to its declared type and runs :meth:`Settings.validate`, so a config is valid once it exists;
:meth:`Settings.from_dict` refuses unknown keys and names the valid ones. Nothing has been written
to disk by then. Why a dataclass base and not pydantic: see docs/architecture.md.

Supported field types: ``bool``, ``int``, ``float``, ``str``, ``Literal[...]`` (choices),
``tuple[T, ...]`` and fixed ``tuple[T1, T2]``, ``dict[str, Any]``, a nested ``Settings``
subclass (built from a dict), and ``X | None``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import types
import typing
from typing import Any, ClassVar, Literal, TypeVar

from capslab.errors import ConfigError

S = TypeVar("S", bound="Settings")

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def plain(value: Any) -> Any:
    """A JSON-ready copy: tuples become lists, nested settings become dicts."""
    if isinstance(value, Settings):
        return value.to_dict()
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def type_name(hint: Any) -> str:
    """A readable name of a declared type, for error messages."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list of {type_name(args[0])}"
        return f"list of {len(args)} values ({', '.join(type_name(a) for a in args)})"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in args if a is not type(None)) + " (or none)"
    return getattr(hint, "__name__", str(hint))


def coerce(value: Any, hint: Any, where: str) -> Any:
    """``value`` converted to the declared type ``hint``, or :class:`ConfigError` naming
    ``where`` (the field's path, e.g. ``training.epochs``).

    Strings from the command line are accepted where they read unambiguously (``"true"`` for a
    bool, ``"3"`` for an int); a scalar becomes a 1-tuple for a list field; an integral float
    becomes an int; a bool is never a number.
    """
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    bad = ConfigError(f"{where} must be a {type_name(hint)}, got {value!r}")
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return coerce(value, option, where)
            except ConfigError:
                pass
        raise bad
    if origin is Literal:
        if value in args:
            return value
        raise ConfigError(f"{where} must be {type_name(hint)}, got {value!r}")
    if isinstance(hint, type) and issubclass(hint, Settings):
        if isinstance(value, hint):
            return value
        if isinstance(value, dict):
            return hint.from_dict(value, where=where)
        raise bad
    if origin is tuple:
        items = list(value) if isinstance(value, list | tuple) else [value]
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(items))
        if len(items) != len(args):
            raise bad
        return tuple(coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(items, args, strict=True)))
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise bad
        return dict(value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        raise bad
    if hint is int or hint is float:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, str):
            try:
                value = hint(value)
            except ValueError:
                raise bad from None
        if hint is int and isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int) or (hint is float and isinstance(value, float)):
            return hint(value)
        raise bad
    if hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        raise bad
    return value


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


@dataclasses.dataclass
class Settings:
    """Base of every typed, strict config (subclasses are ``@dataclass``es).

    Subclasses override :meth:`validate` for checks across fields (raise :class:`ConfigError`)
    and list in ``IDENTITY_EXCLUDE`` the fields that do not change a run's results (the device,
    the data folder): :meth:`identity` leaves them out, so "is this the same run?" has one
    answer for resume, study reuse and ``finalize``.
    """

    IDENTITY_EXCLUDE: ClassVar[tuple[str, ...]] = ()
    #: How error messages name this kind of settings ("training setting", "policy 'fixed'").
    WHAT: ClassVar[str] = "setting"

    def __post_init__(self) -> None:
        where = self._where()
        for name, hint in _hints(type(self)).items():
            value = getattr(self, name)
            object.__setattr__(self, name, coerce(value, hint, f"{where}{name}"))
        self.validate()

    def _where(self) -> str:
        return ""

    def validate(self) -> None:
        """Checks across fields; raise :class:`ConfigError`."""

    # ------------------------------------------------------------------ dict round trip
    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls: type[S], data: dict[str, Any], *, where: str = "") -> S:
        """Build from a plain dict (JSON file, command line); unknown keys are refused."""
        if not isinstance(data, dict):
            raise ConfigError(f"{where or cls.WHAT}: expected a mapping of settings, got {data!r}")
        valid = cls.field_names()
        unknown = sorted(set(data) - set(valid))
        if unknown:
            prefix = f"{where}: " if where else ""
            raise ConfigError(
                f"{prefix}unknown {cls.WHAT}(s) {', '.join(map(str, unknown))}; "
                f"valid: {', '.join(valid)}"
            )
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """Every field, JSON-ready (tuples as lists, nested settings as dicts)."""
        return {name: plain(getattr(self, name)) for name in self.field_names()}

    def identity(self) -> dict[str, Any]:
        """The fields that define the results of a run (``IDENTITY_EXCLUDE`` left out),
        JSON-ready; nested settings contribute their own identity."""
        out = {}
        for name in self.field_names():
            if name in self.IDENTITY_EXCLUDE:
                continue
            value = getattr(self, name)
            out[name] = value.identity() if isinstance(value, Settings) else plain(value)
        return json.loads(json.dumps(out))

    def identity_difference(self, recorded: dict[str, Any]) -> list[str]:
        """The identity keys in which an identity recorded earlier (a journal's, a checkpoint's,
        a summary's) differs from this one's. A key the record lacks (written before the field
        existed) matches when this config leaves that field at its default, nested settings
        included, so adding a field with a default keeps older runs resumable."""
        fields = {f.name: f for f in dataclasses.fields(self)}

        def default(name: str) -> Any:
            f = fields[name]
            return plain(f.default if f.default is not dataclasses.MISSING else f.default_factory())

        def differs(name: str, value: Any) -> bool:
            if name not in recorded:
                return value != default(name)
            nested = getattr(self, name)
            if isinstance(nested, Settings) and isinstance(recorded[name], dict):
                return bool(nested.identity_difference(recorded[name]))
            return recorded[name] != value

        wanted = self.identity()
        extra = set(recorded) - set(wanted)  # a field since removed: another run's settings
        return sorted(extra | {k for k, v in wanted.items() if differs(k, v)})

    def identity_matches(self, recorded: dict[str, Any]) -> bool:
        """Whether an identity recorded earlier is this one's (see :meth:`identity_difference`)."""
        return not self.identity_difference(recorded)

    def replace(self: S, **changes: Any) -> S:
        """A validated copy with ``changes``."""
        return dataclasses.replace(self, **changes)
