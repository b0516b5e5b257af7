"""labels_match: the one equality-based selector check (subsets, workload selectors, sourceLabels,
Gateway selectors, matchLabels)."""

from __future__ import annotations

import pytest

from meshxds.translators.labels import labels_match

LABELS = {"app": "reviews", "version": "v1"}


@pytest.mark.parametrize(
    ("selector", "selected"),
    [
        pytest.param({}, True, id="an empty selector selects everything"),
        pytest.param({"version": "v1"}, True, id="a subset of the labels selects"),
        pytest.param({"app": "reviews", "version": "v1"}, True, id="all the labels select"),
        pytest.param({"version": "v2"}, False, id="another value does not select"),
        pytest.param({"zone": "a"}, False, id="a missing key does not select"),
        pytest.param((("app", "reviews"),), True, id="pairs select as a mapping does"),
        pytest.param((("app", "reviews"), ("version", "v2")), False, id="every pair must match"),
    ],
)
def test_labels_match(selector: dict[str, str] | tuple[tuple[str, str], ...], selected: bool) -> None:
    assert labels_match(LABELS, selector) is selected


def test_no_labels_are_selected_only_by_an_empty_selector() -> None:
    assert labels_match({}, {})
    assert not labels_match({}, {"app": "reviews"})
