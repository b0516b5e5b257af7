"""IR classes keep the dataclass ``__init__`` contract with their faster, slot-storing ``__init__``:
keyword-only, the same defaults and factories, everything stored, still frozen."""

from __future__ import annotations

import dataclasses
import pickle
from typing import Any

import pytest

from meshxds import ir

CLASSES = [
    cls for name in ir.__all__ if isinstance(cls := getattr(ir, name), type) and dataclasses.is_dataclass(cls)
]


def _required(cls: type) -> dict[str, Any]:
    return {
        f.name: object()
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_omitted_fields_take_the_declared_default_or_a_fresh_factory_value(cls: type) -> None:
    given = _required(cls)
    one, two = cls(**given), cls(**given)
    for f in dataclasses.fields(cls):
        value = getattr(one, f.name)
        if f.name in given:
            assert value is given[f.name]
        elif f.default is not dataclasses.MISSING:
            assert value is f.default
        else:
            assert value == f.default_factory()  # type: ignore[misc]
            assert value is not getattr(two, f.name)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_every_field_given_is_stored_and_the_object_stays_frozen(cls: type) -> None:
    given = {f.name: object() for f in dataclasses.fields(cls)}
    obj = cls(**given)
    assert all(getattr(obj, name) is value for name, value in given.items())
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(obj, dataclasses.fields(cls)[0].name, None)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_the_signature_is_keyword_only_and_checked(cls: type) -> None:
    required = _required(cls)
    with pytest.raises(TypeError):
        cls(*required.values(), **({} if required else {"unknown": 1}))
    with pytest.raises(TypeError):
        cls(**required, unknown=1)
    if required:
        with pytest.raises(TypeError, match="missing"):
            cls()


def test_ir_values_compare_hash_and_pickle_as_before() -> None:
    route = ir.Route(
        name="r",
        match=ir.RouteMatch(path=ir.PathMatch(kind="exact", value="/a")),
        action=ir.ForwardAction(backends=(ir.WeightedCluster(cluster="c", weight=1),)),
    )
    same = ir.Route(
        name="r",
        match=ir.RouteMatch(path=ir.PathMatch(kind="exact", value="/a")),
        action=ir.ForwardAction(backends=(ir.WeightedCluster(cluster="c", weight=1),)),
    )
    assert route == same and hash(route) == hash(same)
    assert pickle.loads(pickle.dumps(route)) == route
    assert dataclasses.replace(route, name="s").name == "s"
    assert ir.Route.__init__.__qualname__ == "Route.__init__"
