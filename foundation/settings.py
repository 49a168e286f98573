"""TOML settings: one schema library (msgspec) for every file, errors that name the field.

Every TOML file the project reads (the agent's, the orchestrator's, an operator's
``profile.toml``) is declared as :class:`Settings` structs: each value typed, unknown keys
refused, and checks that need more than a type in ``__post_init__``. :func:`load` reads a
file and :func:`convert` checks one table; anything wrong raises :class:`ConfigError`
naming the dotted path of the field (``signals[0].poll_intervall_s``) and why, in words an
installer understands, before anything starts.

msgspec says what is wrong as text (``Object contains unknown field `x` - at `$.a[0]```);
:func:`convert` turns it into the field and today's reasons ("unknown setting", "is
required", "must be an integer", "must be at least 1", ...), reading the expected type
from the schema so a list of strings or a choice of words is named as such. A check in a
``__post_init__`` raises ``ConfigError(field, reason)`` with the field relative to its own
table; the path of the table is put in front.

Any key can also come from the environment (containers, balena's device variables):
:func:`apply_environment` sets ``PREFIX`` + the key's path in capitals, tables separated by
two underscores (``ONDIJON_ORCHESTRATOR__STORE__URL`` is ``[store] url``, and
``ONDIJON_AGENT__LAMPS__0__PIN`` the ``pin`` of the first ``[[lamps]]``), over the file's
value, before the checks; a variable that names no key is refused, naming the variable.

Why msgspec rather than pydantic: the agent runs on cabinet gateways, and msgspec adds
about 0.7 MiB to the agent against 8.2 MiB (bench/config_schema_bench.py); it is strict
by default (``true`` is not a pin number).
"""

from __future__ import annotations

import copy
import math
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import msgspec.inspect as mi

from foundation.errors import FieldError, split_field

T = TypeVar("T")


class ConfigError(FieldError, ValueError):
    """A configuration file is unreadable or a field in it is wrong.

    A ValueError too: raised in a ``__post_init__``, msgspec adds where the table is.
    """


class Settings(
    msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True, omit_defaults=True
):
    """A table of a configuration file: typed fields, unknown keys refused.

    Numbers must be finite (TOML allows ``inf`` and ``nan``); subclasses that define
    ``__post_init__`` call ``super().__post_init__()``.
    """

    def __post_init__(self) -> None:
        for name in self.__struct_fields__:
            value = getattr(self, name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(_encoded(type(self), name), "must be a number")


def load_toml(path: Path) -> dict[str, Any]:
    """Parse ``path``; unreadable or malformed files raise :class:`ConfigError`."""
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(str(path), "no such configuration file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), f"not valid TOML ({exc})") from None


def load(path: Path, schema: type[T]) -> T:
    """The file at ``path`` as ``schema``, or :class:`ConfigError` naming the field."""
    return convert(load_toml(path), schema)


def convert(
    data: object, schema: type[T], *, at: str = "", error: type[ConfigError] = ConfigError
) -> T:
    """``data`` (a parsed table) as ``schema``; ``at`` is its path in the file.

    Raises:
        ConfigError: (or ``error``) naming the field and why.
    """
    try:
        return msgspec.convert(data, schema, strict=True)
    except msgspec.ValidationError as exc:
        field, reason = _explain(str(exc), data, mi.type_info(schema))
        raise error(_join(at, field), reason) from None


def apply_environment(
    data: dict[str, Any], schema: type[Any], prefix: str, environ: Mapping[str, str]
) -> dict[str, Any]:
    """``data`` (a parsed file of ``schema``) with the keys ``environ`` sets under ``prefix``.

    A key whose type is a string takes the variable's value as it is; any other value is
    read as a TOML value (``15``, ``true``, ``["a", "b"]``, ``"text"``).

    Raises:
        ConfigError: naming the variable, when it names no key of ``schema``, an entry of
            an array of tables the file does not have, or holds no TOML value.
    """
    result = copy.deepcopy(data)
    for name in sorted(environ):
        if not name.startswith(prefix):
            continue
        parts = name[len(prefix) :].lower().split("__")
        table: Any = result
        kind: mi.Type = mi.type_info(schema)
        for i, part in enumerate(parts):
            kind = _unwrap(kind, None)
            last = i == len(parts) - 1
            if part.isdigit() and isinstance(kind, mi.ListType | mi.VarTupleType):
                index = int(part)
                if not isinstance(table, list) or index >= len(table):
                    raise ConfigError(name, f"the file has no entry {index} there")
                kind = kind.item_type
                if last:
                    table[index] = _env_value(name, environ[name], kind)
                else:
                    table = table[index]
                continue
            if isinstance(kind, mi.StructType):
                match = [f for f in kind.fields if f.encode_name == part]
                if not match:
                    raise ConfigError(name, f"names no setting ({part!r} is not a key there)")
                kind = match[0].type
            elif isinstance(kind, mi.DictType):
                kind = kind.value_type
            elif not isinstance(kind, mi.AnyType):
                raise ConfigError(name, f"names no setting ({part!r} is below a value)")
            if not isinstance(table, dict):
                raise ConfigError(name, "names no setting (a value is not a table)")
            if last:
                table[part] = _env_value(name, environ[name], kind)
            else:
                table = table.setdefault(part, {})
    return result


def _env_value(name: str, text: str, kind: mi.Type) -> Any:
    kinds = kind.types if isinstance(kind, mi.UnionType) else (kind,)
    words = any(
        isinstance(k, mi.LiteralType) and all(isinstance(v, str) for v in k.values) for k in kinds
    )
    text_only = not any(isinstance(k, mi.IntType | mi.FloatType | mi.BoolType) for k in kinds)
    if text_only and (words or any(isinstance(k, mi.StrType) for k in kinds)):
        return text
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        if any(isinstance(k, mi.StrType | mi.AnyType | mi.DateTimeType) for k in kinds):
            return text  # a pin name, or a date-time msgspec reads from a string
        raise ConfigError(name, f"{text!r} is not a TOML value (quote text)") from None


def check_address(field: str, value: str) -> None:
    """Refuse ``value`` unless it is ``host:port``, naming ``field``."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(field, f"{value!r} is not host:port")


# -- from msgspec's words to the field and the reason ----------------------------------------

_WHERE = re.compile(r"^(?P<what>.*) - at `\$(?P<path>[^`]*)`$", re.S)
_SEGMENT = re.compile(r"\.([^.\[]+)|\[(\d+|\.\.\.)\]")
_EXPECTED = re.compile(r"^Expected `(?P<type>[^`]+)`(?P<rest>.*)$")
_BOUND = re.compile(r"^ (?P<op>>=|<=|>|<) (?P<n>\S+)$")


def _join(*parts: str) -> str:
    path = ""
    for part in parts:
        if not part:
            continue
        # An index follows its list: `lamps[0]`, never `lamps.[0]` nor a lost `lamps`.
        sep = "" if not path or part.startswith("[") else "."
        path = f"{path}{sep}{part}"
    return path


def _segments(path: str) -> list[str]:
    return [m.group(1) or f"[{m.group(2)}]" for m in _SEGMENT.finditer(path)]


def _explain(message: str, data: object, root: mi.Type) -> tuple[str, str]:
    """(field, reason) of msgspec's ``message`` about ``data`` checked against ``root``."""
    where = _WHERE.match(message)
    what, path = (where["what"], where["path"]) if where else (message, "")
    segments = _segments(path)
    if "[...]" in segments:
        # A dict's key is not in msgspec's path: find the entry that fails, and say why.
        cut = segments.index("[...]")
        table, table_type = _walk(data, root, segments[:cut])
        if isinstance(table, Mapping) and isinstance(table_type, mi.DictType):
            value_type = table_type.value_type
            for key, value in table.items():
                try:
                    msgspec.convert(value, _python(value_type), strict=True)
                except (msgspec.ValidationError, TypeError) as exc:
                    field, reason = _explain(str(exc), value, value_type)
                    return _join(*segments[:cut], str(key), field), reason
    field = "".join(s if s.startswith("[") else f".{s}" for s in segments).lstrip(".")
    kind = _walk(data, root, segments)[1]
    if what.startswith("Object contains unknown field "):
        return _join(field, what.split("`")[1]), "unknown setting"
    if what.startswith("Object missing required field "):
        return _join(field, what.split("`")[1]), "is required"
    if what.startswith("Invalid enum value ") and isinstance(kind, mi.LiteralType):
        return field, _choices(_in_order(data, root, segments, kind.values))
    if what.startswith("Invalid RFC3339"):
        return field, "not an ISO 8601 date-time"
    expected = _EXPECTED.match(what)
    if expected:
        bound = _BOUND.match(expected["rest"])
        if bound:
            words = {">=": "at least", "<=": "at most", ">": "more than", "<": "less than"}
            return field, f"must be {words[bound['op']]} {_number(bound['n'])}"
        if "with a timezone" in expected["rest"]:
            return field, "must be a date-time with its UTC offset"
        if "of length >= 1" in expected["rest"]:
            return field, "must not be empty"
        if isinstance(kind, mi.LiteralType):
            return field, _choices(_in_order(data, root, segments, kind.values))
        return field, _must_be(kind)
    inner, reason = split_field(what)
    if inner:  # a __post_init__ check: "field: reason", the field relative to its table
        return _join(field, inner), reason
    return field, what


def _walk(data: object, kind: mi.Type, segments: list[str]) -> tuple[object, mi.Type]:
    """The value and the expected type at ``segments`` below ``data``/``kind``."""
    for segment in segments:
        kind = _unwrap(kind, data)
        if segment.startswith("["):
            index = segment[1:-1]
            if isinstance(kind, mi.ListType | mi.VarTupleType | mi.SetType | mi.FrozenSetType):
                kind = kind.item_type
            elif isinstance(kind, mi.TupleType) and index.isdigit():
                kind = kind.item_types[min(int(index), len(kind.item_types) - 1)]
            elif isinstance(kind, mi.DictType):
                kind = kind.value_type
            if isinstance(data, list | tuple) and index.isdigit() and int(index) < len(data):
                data = data[int(index)]
            else:
                data = None
            continue
        if isinstance(kind, mi.StructType):
            match = [f for f in kind.fields if f.encode_name == segment]
            kind = match[0].type if match else mi.AnyType()
        elif isinstance(kind, mi.DictType):
            kind = kind.value_type
        data = data.get(segment) if isinstance(data, Mapping) else None
    return data, _unwrap(kind, data)


def _unwrap(kind: mi.Type, data: object) -> mi.Type:
    """An optional table or list as the table or list (``X | None`` -> ``X``)."""
    if isinstance(kind, mi.UnionType):
        concrete = [t for t in kind.types if not isinstance(t, mi.NoneType)]
        if len(concrete) == 1:
            return concrete[0]
    return kind


def _python(kind: mi.Type) -> Any:
    """The Python type msgspec described as ``kind`` (for dict values: structs, scalars)."""
    if isinstance(kind, mi.StructType):
        return kind.cls
    simple = {mi.StrType: str, mi.IntType: int, mi.FloatType: float, mi.BoolType: bool}
    for described, python in simple.items():
        if isinstance(kind, described):
            return python
    if isinstance(kind, mi.UnionType):
        return _union(tuple(_python(t) for t in kind.types))
    return Any


def _union(types: tuple[Any, ...]) -> Any:
    result = types[0]
    for python in types[1:]:
        result = result | python
    return result


def _must_be(kind: mi.Type) -> str:
    if isinstance(kind, mi.StrType):
        return "must be a string"
    if isinstance(kind, mi.IntType):
        return "must be an integer"
    if isinstance(kind, mi.FloatType):
        return "must be a number"
    if isinstance(kind, mi.BoolType):
        return "must be true or false"
    if isinstance(kind, mi.StructType | mi.DictType):
        return "must be a table"
    if isinstance(kind, mi.DateTimeType):
        return "must be a date-time with its UTC offset"
    if isinstance(kind, mi.ListType | mi.VarTupleType):
        if isinstance(kind.item_type, mi.StrType):
            return "must be a list of strings"
        if isinstance(kind.item_type, mi.StructType):
            return "must be an array of tables"
        return "must be a list"
    if isinstance(kind, mi.TupleType):
        return f"must be a list of {len(kind.item_types)} values"
    if isinstance(kind, mi.UnionType):
        kinds = {type(t) for t in kind.types} - {mi.NoneType}
        if kinds == {mi.IntType, mi.StrType}:
            return "must be a pin number or name"
        if kinds == {mi.IntType, mi.FloatType}:
            return "must be a number"
    return "has the wrong type"


def _in_order(
    data: object, root: mi.Type, segments: list[str], values: tuple[Any, ...]
) -> tuple[Any, ...]:
    """The choices of a ``Literal`` in the order the schema writes them (msgspec sorts)."""
    parent = _walk(data, root, segments[:-1])[1]
    if isinstance(parent, mi.StructType) and segments:
        for field in parent.fields:
            if field.encode_name == segments[-1]:
                hint = typing.get_type_hints(parent.cls, include_extras=True)[field.name]
                for arg in _flatten(hint):
                    if typing.get_origin(arg) is typing.Literal:
                        return typing.get_args(arg)
    return values


def _flatten(hint: Any) -> list[Any]:
    """``Annotated[X, ...] | None`` -> ``[X, None]``."""
    if typing.get_origin(hint) is typing.Annotated:
        return _flatten(typing.get_args(hint)[0])
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return [a for arg in typing.get_args(hint) for a in _flatten(arg)]
    return [hint]


def _choices(values: tuple[Any, ...]) -> str:
    words = [repr(v) for v in values]
    if len(words) == 2:
        return f"must be {words[0]} or {words[1]}"
    return f"must be one of {', '.join(words)}"


def _number(text: str) -> str:
    """msgspec's bound as written in the schema (``1.0`` stays, ``1048576`` stays)."""
    return text


def _encoded(cls: type[msgspec.Struct], name: str) -> str:
    """The name a field has in the file (``device_id`` is written ``id``)."""
    for field in mi.type_info(cls).fields:  # type: ignore[attr-defined]
        if field.name == name:
            return str(field.encode_name)
    return name
