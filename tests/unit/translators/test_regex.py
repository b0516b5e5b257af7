"""RE2 checks: what Envoy would reject is reported before it is sent."""

from __future__ import annotations

import pytest

from meshxds.translators.regex import re2_error


@pytest.mark.parametrize(
    "pattern",
    [
        pytest.param("^/v[0-9]+/.*$", id="anchors, classes and repetition"),
        pytest.param("(?i)foo|bar", id="flags and alternation"),
        pytest.param("[[:alpha:]]+", id="POSIX classes"),
    ],
)
def test_re2_accepts(pattern: str) -> None:
    assert re2_error(pattern) is None


@pytest.mark.parametrize(
    "pattern",
    [
        pytest.param("(?<=a)b", id="lookbehind is not RE2"),
        pytest.param("(?=a)b", id="lookahead is not RE2"),
        pytest.param(r"(a)\1", id="backreferences are not RE2"),
        pytest.param("a(", id="unbalanced parenthesis"),
        pytest.param("a{2,1}", id="bad repetition range"),
        pytest.param("", id="empty: RE2 compiles it, Envoy wants one character or more"),
    ],
)
def test_re2_rejects_with_a_reason(pattern: str, capfd: pytest.CaptureFixture[str]) -> None:
    error = re2_error(pattern)
    assert error is not None
    assert error.strip()
    out, err = capfd.readouterr()
    assert (out, err) == ("", ""), "RE2's complaint belongs in the message, not on stderr"
