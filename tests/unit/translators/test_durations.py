"""GEP-2257 durations: ``^([0-9]{1,5}(h|m|s|ms)){1,4}$``, read as seconds."""

from __future__ import annotations

import pytest

from meshxds.translators.durations import parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        pytest.param("0s", 0.0, id="zero"),
        pytest.param("10s", 10.0, id="seconds"),
        pytest.param("500ms", 0.5, id="ms is milliseconds, not minutes then seconds"),
        pytest.param("1m30s", 90.0, id="two units"),
        pytest.param("1h", 3600.0, id="hours"),
        pytest.param("1h2m3s4ms", 3723.004, id="four units: 1h2m3s4ms"),
        pytest.param("00060m", 3600.0, id="leading zeroes are decimal"),
        pytest.param("99999h", 99999 * 3600.0, id="five digits is the maximum"),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("10", id="no unit"),
        pytest.param("s", id="no number"),
        pytest.param("1d", id="days are not a unit"),
        pytest.param("1us", id="microseconds are not a unit"),
        pytest.param("1.5s", id="no fractions"),
        pytest.param("-1s", id="no negatives"),
        pytest.param("1S", id="units are lower case"),
        pytest.param("1h 2m", id="no spaces"),
        pytest.param(" 1s", id="no leading space"),
        pytest.param("1s\n", id="no trailing newline"),
        pytest.param("1h1m1s1ms1h", id="at most four components"),
        pytest.param("123456s", id="at most five digits per component"),
        pytest.param("\u0661s", id="only ASCII digits"),
    ],
)
def test_invalid_durations_raise_value_error_naming_the_value(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration") as info:
        parse_duration(text)
    assert repr(text) in str(info.value)
