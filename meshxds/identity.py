"""Who a proxy is, as far as config selection cares.

Envoy tells us its ``node.id``, ``node.metadata.namespace`` and ``node.metadata.labels``.
Only namespace and labels decide which config a proxy gets, so two proxies with the same
``ProxyIdentity`` share one computed snapshot (``node.id`` is kept for status only).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["ProxyIdentity"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ProxyIdentity:
    """The part of an Envoy node that selects its configuration."""

    namespace: str = "default"
    """``node.metadata.namespace``; ``default`` when the proxy does not say."""
    labels: tuple[tuple[str, str], ...] = ()
    """``node.metadata.labels``, sorted by key so equal maps compare equal."""

    @classmethod
    def of(cls, *, namespace: str | None = None, labels: Mapping[str, str] | None = None) -> ProxyIdentity:
        return cls(
            namespace=namespace or "default",
            labels=tuple(sorted((str(k), str(v)) for k, v in (labels or {}).items())),
        )

    @property
    def label_map(self) -> dict[str, str]:
        return dict(self.labels)

    def __str__(self) -> str:
        labels = ",".join(f"{k}={v}" for k, v in self.labels)
        return f"{self.namespace}[{labels}]"
