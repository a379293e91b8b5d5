"""The converters that read numbers, yes/no and key=value pairs out of model text, checked
against a literal table of inputs and the values worked out by hand."""

from __future__ import annotations

from decimal import Decimal

import pytest

from domains.parsing import key_values, to_bool, to_decimal, to_float

DECIMALS = [
    ("42", Decimal("42")),
    ("$1,234,567.89", Decimal("1234567.89")),
    ("RWA = 1,000 USD", Decimal("1000")),
    ("−3.5", Decimal("-3.5")),  # a Unicode minus sign
    ("-0.25", Decimal("-0.25")),
    (".5 mg", Decimal(".5")),
    ("1.5%", Decimal("1.5")),  # percent stays in percent units
    ("2.5e3", Decimal("2500")),
    ("about 17 points", Decimal("17")),
    (7, Decimal("7")),
    (0.1, Decimal("0.1")),  # through str(), not the binary float
    (Decimal("3.14"), Decimal("3.14")),
]


@pytest.mark.parametrize(("value", "want"), DECIMALS)
def test_to_decimal_table(value, want: Decimal) -> None:
    assert to_decimal(value) == want


@pytest.mark.parametrize("value", ["no digits", "", True, None, [1], "inf", float("nan")])
def test_to_decimal_refuses(value) -> None:
    with pytest.raises(ValueError):
        to_decimal(value)


@pytest.mark.parametrize(
    ("value", "fraction", "want"),
    [("17.68%", True, 0.1768), ("17.68%", False, 17.68), ("0.5", True, 0.5), (3, True, 3.0)],
)
def test_to_float_table(value, fraction: bool, want: float) -> None:
    assert to_float(value, percent_as_fraction=fraction) == pytest.approx(want, rel=1e-12)


BOOLS = [
    ("yes", True), ("Yes.", True), (" TRUE ", True), ("y", True), ("1", True), ("met", True),
    ("due", True), ("indicated", True), (1, True), (True, True),
    ("no", False), ("No.", False), ("false", False), ("n", False), ("0", False),
    ("not met", False), ("not due", False), ("not indicated", False), ("none", False),
    (0, False), (False, False),
]  # fmt: skip


@pytest.mark.parametrize(("value", "want"), BOOLS)
def test_to_bool_table(value, want: bool) -> None:
    assert to_bool(value) is want


@pytest.mark.parametrize("value", ["maybe", "", 2, 0.5, None, "yess"])
def test_to_bool_refuses(value) -> None:
    with pytest.raises(ValueError, match="expected yes/no"):
        to_bool(value)


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("R = 0.17, K: 0.05", {"r": "0.17", "k": "0.05"}),
        ("Anion gap = 12", {"anion_gap": "12"}),
        ("a=1; b=2\nc: 3", {"a": "1", "b": "2", "c": "3"}),
        ("no pairs here", {}),
    ],
)
def test_key_values_table(text: str, want: dict[str, str]) -> None:
    assert key_values(text) == want
