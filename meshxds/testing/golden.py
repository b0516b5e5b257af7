"""Golden files: IR as plain data and back, compare-or-rewrite of outputs, stale outputs.

``to_plain`` writes IR (or any dataclass tree) as the plain data of the ``*.out.yaml`` goldens;
``load_ir`` reads a ``ProxyConfig`` back from that form, so an ``xds/<case>.ir.yaml`` can start
as a copy of one proxy's config from a manifest golden. Key material is never in these files:
``to_plain`` writes bytes as ``<N bytes>`` / ``[redacted]``, and the reader takes any text for
bytes (its UTF-8), to be replaced by real test certificates where Envoy needs them.

``MESHXDS_UPDATE_GOLDEN=1`` rewrites every output and deletes outputs whose input is gone; the
diff is then reviewed in the commit like any other change.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import types
import typing
from collections import OrderedDict
from collections.abc import Iterable
from enum import Enum
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

from meshxds import ir

__all__ = [
    "UPDATE",
    "GoldenFormatError",
    "check_golden",
    "dump_yaml",
    "from_plain",
    "load_ir",
    "stale_outputs",
    "to_plain",
]

UPDATE = os.environ.get("MESHXDS_UPDATE_GOLDEN") == "1"

_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")

T = TypeVar("T")


# --- writing ----------------------------------------------------------------------------------


def _tag(cls: type) -> str:
    return _CAMEL.sub("_", cls.__name__).lower()


def _is_choice(annotation: object) -> bool:
    """A field that may hold one of several dataclasses (``ForwardAction | Redirect | ...``)."""
    text = annotation if isinstance(annotation, str) else repr(annotation)
    alternatives = [a.strip() for a in text.split("|") if a.strip() != "None"]
    return len(alternatives) > 1


def _empty(plain: Any) -> bool:
    return plain is None or plain == "" or (isinstance(plain, list | dict) and not plain)


def _default_is_empty(f: dataclasses.Field[Any]) -> bool:
    if f.default is not dataclasses.MISSING:
        return _empty(to_plain(f.default))
    if f.default_factory is not dataclasses.MISSING:
        return _empty(to_plain(f.default_factory()))
    return True


def to_plain(value: Any) -> Any:
    """Dataclasses → dicts in field order, enums → values, tuples → lists; recursively.

    Fields that are ``None``, ``""`` or empty collections are left out (as protojson does), so the
    files show what is set and a new optional IR field does not rewrite every golden file; an
    empty value is kept where the default is not empty (``alpn: []``), so ``from_plain`` reads
    back the same IR. A field that may hold one of several dataclass types is written as
    ``{type_name: {...}}`` so the file says which one it is (``action: {forward_action: ...}``).
    """
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(value):
            item = getattr(value, f.name)
            plain = to_plain(item)
            if _empty(plain) and _default_is_empty(f):
                continue
            if dataclasses.is_dataclass(item) and _is_choice(f.type):
                plain = {_tag(type(item)): plain}
            out[f.name] = plain
        return out
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, bytes):
        # Key material stays out of golden files; a certificate is summarised by its size.
        return repr(value) if type(value) is not bytes else f"<{len(value)} bytes>"
    if isinstance(value, list | tuple):
        return [to_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    return value


class _Dumper(yaml.SafeDumper):
    """Multi-line strings as ``|`` blocks (an access log format ends with a newline); the
    ``OrderedDict`` protobuf's ``json_format`` makes of an ``Any`` as a mapping."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    # PyYAML falls back to a quoted scalar where a block cannot hold the text exactly.
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_Dumper.add_representer(str, _represent_str)
_Dumper.add_representer(OrderedDict, yaml.SafeDumper.represent_dict)


def dump_yaml(data: Any, *, sort_keys: bool = False) -> str:
    text: str = yaml.dump(
        data, Dumper=_Dumper, sort_keys=sort_keys, default_flow_style=False, allow_unicode=True, width=120
    )
    return text


def check_golden(path: Path, actual: Any, *, sort_keys: bool = False) -> None:
    """Compare ``actual`` with the golden file (text-exact), or rewrite it under UPDATE."""
    text = dump_yaml(actual, sort_keys=sort_keys)
    if UPDATE:
        path.write_text(text, encoding="utf-8")
        return
    assert path.exists(), f"{path.name} is missing; run with MESHXDS_UPDATE_GOLDEN=1 and review it"
    expected = path.read_text(encoding="utf-8")
    assert text == expected, f"{path.name} differs (MESHXDS_UPDATE_GOLDEN=1 rewrites it)"


def stale_outputs(
    folder: Path, *, inputs: str = ".in.yaml", outputs: Iterable[str] = (".out.yaml",)
) -> list[Path]:
    """Outputs whose input is gone; deleted under UPDATE."""
    cases = {p.name.removesuffix(inputs) for p in folder.glob(f"*{inputs}")}
    stale = sorted(
        p for suffix in outputs for p in folder.glob(f"*{suffix}") if p.name.removesuffix(suffix) not in cases
    )
    if UPDATE:
        for path in stale:
            path.unlink()
        return []
    return stale


# --- reading ----------------------------------------------------------------------------------


class GoldenFormatError(ValueError):
    """A golden input that does not describe an IR value; ``where`` is the path to the bad part."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where or '<top>'}: {message}")
        self.where = where
        self.message = message


def load_ir(path: Path) -> ir.ProxyConfig:
    """The ``ProxyConfig`` an ``<case>.ir.yaml`` file describes (the form ``to_plain`` writes)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise GoldenFormatError(path.name, f"not YAML: {exc}") from exc
    try:
        return from_plain(ir.ProxyConfig, data)
    except GoldenFormatError as exc:
        raise GoldenFormatError(f"{path.name}: {exc.where}", exc.message) from exc


def from_plain(cls: type[T], data: Any) -> T:
    """The inverse of ``to_plain`` for a dataclass type: strict, typed by the dataclass's
    annotations; an unknown or missing field, or a value of the wrong type, is an error naming
    where it is."""
    value: T = _read(cls, data, "")
    return value


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _read(tp: Any, data: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return _read_union(tp, data, where)
    if origin is Literal:
        if data not in typing.get_args(tp):
            raise GoldenFormatError(where, f"{data!r} is not one of {list(typing.get_args(tp))}")
        return data
    if origin is tuple:
        return _read_tuple(typing.get_args(tp), data, where)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _read_dataclass(tp, data, where)
    if isinstance(tp, type) and issubclass(tp, Enum):
        try:
            return tp(data)
        except ValueError:
            raise GoldenFormatError(where, f"{data!r} is not one of {[e.value for e in tp]}") from None
    if tp is bool:
        return _expect(data, bool, where)
    if tp is int:
        if isinstance(data, bool):
            raise GoldenFormatError(where, f"expected int, got {data!r}")
        return _expect(data, int, where)
    if tp is float:
        if isinstance(data, bool) or not isinstance(data, int | float):
            raise GoldenFormatError(where, f"expected a number, got {data!r}")
        return float(data)
    if tp is str:
        return _expect(data, str, where)
    if isinstance(tp, type) and issubclass(tp, bytes):
        # Text stands for key material (``<N bytes>``, ``[redacted]``, or a PEM block).
        return tp(_expect(data, str, where).encode())
    raise GoldenFormatError(where, f"cannot read type {tp!r}")


def _at(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _expect(data: Any, tp: type[T], where: str) -> T:
    if not isinstance(data, tp):
        raise GoldenFormatError(where, f"expected {tp.__name__}, got {data!r}")
    return data


def _read_union(tp: Any, data: Any, where: str) -> Any:
    alternatives = [a for a in typing.get_args(tp) if a is not type(None)]
    if data is None:
        if len(alternatives) < len(typing.get_args(tp)):
            return None
        raise GoldenFormatError(where, "null is not allowed here")
    if len(alternatives) == 1:
        return _read(alternatives[0], data, where)
    # A choice of dataclasses, written as ``{type_name: {...}}``.
    by_tag = {_tag(a): a for a in alternatives if isinstance(a, type) and dataclasses.is_dataclass(a)}
    if len(by_tag) != len(alternatives):
        raise GoldenFormatError(where, f"cannot read type {tp!r}")
    if not isinstance(data, dict) or len(data) != 1:
        raise GoldenFormatError(where, f"expected one of {sorted(by_tag)} as a one-key mapping")
    ((tag, body),) = data.items()
    if tag not in by_tag:
        raise GoldenFormatError(where, f"{tag!r} is not one of {sorted(by_tag)}")
    return _read(by_tag[tag], body, _at(where, tag))


def _read_tuple(args: tuple[Any, ...], data: Any, where: str) -> tuple[Any, ...]:
    items = _expect(data, list, where)
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(_read(args[0], item, f"{where}[{i}]") for i, item in enumerate(items))
    if len(items) != len(args):
        raise GoldenFormatError(where, f"expected {len(args)} items, got {len(items)}")
    return tuple(_read(a, item, f"{where}[{i}]") for i, (a, item) in enumerate(zip(args, items, strict=True)))


def _read_dataclass(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise GoldenFormatError(where, f"expected a mapping for {cls.__name__}, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(str(k) for k in data if k not in fields)
    if unknown:
        raise GoldenFormatError(
            where, f"unknown field(s) {unknown} of {cls.__name__}; known: {sorted(fields)}"
        )
    hints = _hints(cls)
    kwargs = {name: _read(hints[name], value, _at(where, name)) for name, value in data.items()}
    for name, f in fields.items():
        if (
            name in kwargs
            or f.default is not dataclasses.MISSING
            or f.default_factory is not dataclasses.MISSING
        ):
            continue
        # ``to_plain`` leaves out empty values, required fields' included.
        empty = _empty_value(hints[name])
        if empty is _NO_EMPTY:
            raise GoldenFormatError(_at(where, name), f"{cls.__name__} needs this field")
        kwargs[name] = empty
    return cls(**kwargs)


_NO_EMPTY = object()


def _empty_value(tp: Any) -> Any:
    """What an omitted value of this type was: ``None``, ``""`` or ``()``; else ``_NO_EMPTY``."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType) and type(None) in typing.get_args(tp):
        return None
    if origin is tuple:
        return ()
    if tp is str:
        return ""
    return _NO_EMPTY
