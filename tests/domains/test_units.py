"""Unit conversion as a calculator call: pint's results, the clinical factors the medicine
prompt states, and errors the model can act on (never raised)."""

from __future__ import annotations

import pytest

from domains.calc import Work, evaluate
from domains.units import convert, looks_like


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("weight 96 lb to kg", 96 * 0.45359237),
        ("height 5 ft 1 in to m", 61 * 0.0254),
        ("height 5 ft 1 in to in", 61.0),
        ("height 188 cm to m", 1.88),
        ("albumin 43 g/L to g/dL", 4.3),
        ("calcium 1.95 mmol/L to mg/dL", 1.95 * 4.008),
        ("creatinine 175 umol/L to mg/dL", 175 / 88.4),
        ("bilirubin 171 umol/L to mg/dL", 171 / 17.1),
        ("calcium 9.0 mg/dL to mg/dL", 9.0),
        ("HR 80 bpm to bpm", 80.0),
        ("96 lb to kg", 96 * 0.45359237),
    ],
)
def test_a_conversion_gives_the_value_in_the_target_unit(expression: str, expected: float) -> None:
    out = convert(expression)
    assert out.error is None
    assert out.value == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize(
    ("expression", "words"),
    [
        ("sodium 140 mmol/L to mg/dL", "needs the substance"),
        ("weight 96 lb to m", "cannot convert lb to m"),
        ("weight 96 furlongs2 to kg", "unknown unit 'furlongs2'"),
        ("weight 96 lb to quux", "unknown unit 'quux'"),
        ("weight 96 to kg", "no unit"),
    ],
)
def test_a_bad_conversion_is_an_error_that_says_what_to_write(expression: str, words: str) -> None:
    call = evaluate(expression)
    assert not call.ok and call.value is None
    assert words in (call.error or "")
    assert call.inserted.startswith(" = error: ")


def test_evaluate_inserts_the_target_unit_after_a_converted_value() -> None:
    call = evaluate("calcium 2.7 mmol/L to mg/dL")
    assert call.inserted == " = 10.8216 mg/dL"
    assert call.result == "10.8216" and call.unit == "mg/dL"


def test_arithmetic_is_not_mistaken_for_a_conversion() -> None:
    assert not looks_like("(7 + 5) * 3")
    assert evaluate("(7 + 5) * 3").inserted == " = 36"
    assert evaluate("x to y").error == "not an arithmetic expression"


def test_work_writes_one_line_shape_whether_or_not_the_unit_changes() -> None:
    w = Work()
    assert w.convert("calcium 2.7 mmol/L", "mg/dL") == "10.8216"
    assert w.convert("calcium 9.0 mg/dL", "mg/dL") == "9"
    assert w.lines == [
        "- <<calcium 2.7 mmol/L to mg/dL>> = 10.8216 mg/dL",
        "- <<calcium 9.0 mg/dL to mg/dL>> = 9 mg/dL",
    ]
    with pytest.raises(ValueError, match="needs the substance"):
        w.convert("sodium 140 mmol/L", "mg/dL")
