"""Label selection: the one check that a set of labels carries every pair a selector asks for.

Istio subsets and workload selectors, ``sourceLabels``, Gateway ``selector``s and Gateway API
``matchLabels`` all select this way (Kubernetes' equality-based selectors); an empty selector
selects everything.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

__all__ = ["labels_match"]


def labels_match(labels: Mapping[str, str], selector: Mapping[str, str] | Iterable[tuple[str, str]]) -> bool:
    """``labels`` has every ``(key, value)`` of ``selector``."""
    pairs = selector.items() if isinstance(selector, Mapping) else selector
    return all(labels.get(k) == v for k, v in pairs)
