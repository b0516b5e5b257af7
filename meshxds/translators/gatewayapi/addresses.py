"""A Gateway's ``status.addresses``, and what its ``spec.addresses`` asks that meshxds cannot give.

meshxds deploys no proxies and allocates no addresses: the addresses it knows a Gateway's proxies
by are the operator's (``serve --gateway-address``, e.g. a load balancer in front of them) and the
listener address when it is a concrete IP (the proxies bind it). So:

- ``spec.addresses`` given: each ``IPAddress`` or ``Hostname`` it names is reported when meshxds
  knows no address (proxies binding every interface may well be reached there) or it is one of
  those known; otherwise it is unusable. An entry without a value is given the known addresses of
  its type, or is unassigned. Any other type (``NamedAddress``, a vendor's ``example.com/type``)
  is unsupported.
- no ``spec.addresses``: the known addresses — ``--gateway-address`` first, else the concrete
  listener address — or none when proxies bind 0.0.0.0 and nothing else is known.

Problems become conditions (status.py) with the spec's reasons; the listeners stay served
either way: the address is outside the proxies, and withdrawing their config over it would cut
traffic a load balancer may already send.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from meshxds.model import gatewayapi
from meshxds.options import MAX_GATEWAY_ADDRESSES, TranslateOptions, gateway_address_type

__all__ = ["GatewayAddresses", "StatusAddress", "decide_gateway_addresses"]

_SUPPORTED_TYPES = ("IPAddress", "Hostname")


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusAddress:
    type: str
    value: str

    def as_dict(self) -> dict[str, str]:
        return {"type": self.type, "value": self.value}


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayAddresses:
    """What one Gateway's addresses come to, and why."""

    addresses: tuple[StatusAddress, ...]
    """``status.addresses``, in the order of the source they came from."""
    source: str
    """Where they came from: ``spec.addresses``, ``--gateway-address``, the listener address, or
    ``""`` (none known)."""
    unsupported: tuple[str, ...] = ()
    """``spec.addresses`` entries of a type meshxds does not support (→ Accepted False)."""
    unusable: tuple[str, ...] = ()
    """Entries meshxds cannot honour, each with the reason (→ Programmed False)."""
    unassigned: tuple[str, ...] = ()
    """Entries without a value meshxds had no address to assign to (→ Programmed False)."""


def _flagged(options: TranslateOptions) -> tuple[StatusAddress, ...]:
    return tuple(
        StatusAddress(type=kind, value=value)
        for value in options.gateway_addresses
        if (kind := gateway_address_type(value)) is not None
    )


def _bound(options: TranslateOptions) -> StatusAddress | None:
    """The listener address, when it is one address (not 0.0.0.0 or ``::``, every interface)."""
    try:
        bound = ipaddress.ip_address(options.listener_address)
    except ValueError:
        return None
    return None if bound.is_unspecified else StatusAddress(type="IPAddress", value=options.listener_address)


def _same(a: StatusAddress, b: StatusAddress) -> bool:
    if a.type != b.type:
        return False
    if a.type == "IPAddress":
        return ipaddress.ip_address(a.value) == ipaddress.ip_address(b.value)
    return a.value.lower() == b.value.lower()


def decide_gateway_addresses(gw: gatewayapi.Gateway, options: TranslateOptions) -> GatewayAddresses:
    flagged, bound = _flagged(options), _bound(options)
    # What status reports unasked: the operator's addresses, else where the proxies bind.
    known, known_source = (flagged, "--gateway-address") if flagged else ((), "")
    if not known and bound is not None:
        known, known_source = (bound,), "the listener address"
    # What spec.addresses may ask for: those, and where the proxies bind in any case.
    acceptable = flagged + ((bound,) if bound is not None else ())
    acceptable_source = " and ".join(
        name
        for name, present in (
            ("--gateway-address", bool(flagged)),
            ("the listener address", bound is not None),
        )
        if present
    )
    if not gw.spec.addresses:
        return GatewayAddresses(addresses=known[:MAX_GATEWAY_ADDRESSES], source=known_source)
    found: list[StatusAddress] = []
    unsupported: list[str] = []
    unusable: list[str] = []
    unassigned: list[str] = []
    for index, spec in enumerate(gw.spec.addresses):
        where = f"spec.addresses[{index}]"
        if spec.type not in _SUPPORTED_TYPES:
            unsupported.append(f"{where}: type {spec.type} is not supported (IPAddress and Hostname are)")
            continue
        if not spec.value:
            assigned = [a for a in known if a.type == spec.type and a not in found]
            if assigned:
                found.extend(assigned)
            else:
                unassigned.append(
                    f"{where}: no {spec.type} to assign ({_describe(known, known_source)}; "
                    "set serve --gateway-address)"
                )
            continue
        if gateway_address_type(spec.value) != spec.type:
            unusable.append(f"{where}: {spec.value!r} is not a valid {spec.type}")
            continue
        if spec.type == "IPAddress" and ipaddress.ip_address(spec.value).is_unspecified:
            unusable.append(f"{where}: {spec.value} is every interface, not an address to reach")
            continue
        wanted = StatusAddress(type=spec.type, value=spec.value)
        if acceptable and not any(_same(wanted, a) for a in acceptable):
            unusable.append(
                f"{where}: {spec.value} is not where this Gateway's proxies are reachable "
                f"({_describe(acceptable, acceptable_source)})"
            )
            continue
        if not any(_same(wanted, a) for a in found):
            found.append(wanted)
    return GatewayAddresses(
        addresses=tuple(found[:MAX_GATEWAY_ADDRESSES]),
        source="spec.addresses",
        unsupported=tuple(unsupported),
        unusable=tuple(unusable),
        unassigned=tuple(unassigned),
    )


def _describe(addresses: tuple[StatusAddress, ...], source: str) -> str:
    if not addresses:
        return "meshxds knows no address of the proxies: listeners bind every interface"
    return f"meshxds knows them by {', '.join(a.value for a in addresses)}, from {source}"
