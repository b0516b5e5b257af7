"""Golden-file helpers: IR as plain data, and compare-or-rewrite of ``<case>.out.yaml`` files.

``MESHXDS_UPDATE_GOLDEN=1`` rewrites every output and deletes outputs whose input is gone; the
diff is then reviewed in the commit like any other change.
"""

from __future__ import annotations

import dataclasses
import os
import re
from enum import Enum
from pathlib import Path
from typing import Any

import yaml

__all__ = ["UPDATE", "check_golden", "dump_yaml", "stale_outputs", "to_plain"]

UPDATE = os.environ.get("MESHXDS_UPDATE_GOLDEN") == "1"

_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


def _tag(value: object) -> str:
    return _CAMEL.sub("_", type(value).__name__).lower()


def _is_choice(annotation: object) -> bool:
    """A field that may hold one of several dataclasses (``ForwardAction | Redirect | ...``)."""
    text = annotation if isinstance(annotation, str) else repr(annotation)
    alternatives = [a.strip() for a in text.split("|") if a.strip() != "None"]
    return len(alternatives) > 1


def _empty(plain: Any) -> bool:
    return plain is None or plain == "" or (isinstance(plain, list | dict) and not plain)


def to_plain(value: Any) -> Any:
    """Dataclasses → dicts in field order, enums → values, tuples → lists; recursively.

    Fields that are ``None``, ``""`` or empty collections are left out (as protojson does), so the
    files show what is set and a new optional IR field does not rewrite every golden file. A field
    that may hold one of several dataclass types is written as ``{type_name: {...}}`` so the file
    says which one it is (``action: {forward_action: ...}``).
    """
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(value):
            item = getattr(value, f.name)
            plain = to_plain(item)
            if _empty(plain):
                continue
            if dataclasses.is_dataclass(item) and _is_choice(f.type):
                plain = {_tag(item): plain}
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


def dump_yaml(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True, width=120)


def check_golden(path: Path, actual: Any) -> None:
    """Compare ``actual`` with the golden file (text-exact), or rewrite it under UPDATE."""
    text = dump_yaml(actual)
    if UPDATE:
        path.write_text(text, encoding="utf-8")
        return
    assert path.exists(), f"{path.name} is missing; run with MESHXDS_UPDATE_GOLDEN=1 and review it"
    expected = path.read_text(encoding="utf-8")
    assert text == expected, f"{path.name} differs (MESHXDS_UPDATE_GOLDEN=1 rewrites it)"


def stale_outputs(folder: Path, *, inputs: str = ".in.yaml", outputs: str = ".out.yaml") -> list[Path]:
    """Outputs whose input is gone; deleted under UPDATE."""
    cases = {p.name.removesuffix(inputs) for p in folder.glob(f"*{inputs}")}
    stale = sorted(p for p in folder.glob(f"*{outputs}") if p.name.removesuffix(outputs) not in cases)
    if UPDATE:
        for path in stale:
            path.unlink()
        return []
    return stale
