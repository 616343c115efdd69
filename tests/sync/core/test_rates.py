"""Rate strings (sync/core/rates.py): ``5/1m`` and the like, and what is refused."""

from __future__ import annotations

import pytest

from sync.core.rates import Rate, parse_rate

# Rate strings -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("1000/15m", Rate(limit=1000, window=900)),
        ("100/10s", Rate(limit=100, window=10)),
        ("60/m", Rate(limit=60, window=60)),
        ("3/1m", Rate(limit=3, window=60)),
        ("5/2h", Rate(limit=5, window=7200)),
        ("1/d", Rate(limit=1, window=86400)),
        (" 10 / 30 s ", Rate(limit=10, window=30)),
    ],
)
def test_parse_rate(text, rate):
    assert parse_rate(text) == rate


@pytest.mark.parametrize(
    "text",
    [
        "",
        "1000",
        "1000/",
        "/15m",
        "abc",
        "1000/15",
        "1000/15x",
        "1000/15M",
        "1000 per 15m",
        "-5/m",
        "1.5/m",
        "0/m",
        "10/0s",
        "10/m\nextra",
        "10/ms",
    ],
)
def test_parse_rate_refuses_bad_strings(text):
    with pytest.raises(ValueError, match="Invalid rate"):
        parse_rate(text)


def test_parse_rate_refuses_none():
    with pytest.raises(ValueError, match="Invalid rate"):
        parse_rate(None)
