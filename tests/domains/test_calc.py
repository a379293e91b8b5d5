"""The safe calculator: exact results, bounded work, and errors as text (never raised)."""

from __future__ import annotations

import re

import pytest

from domains.calc import CalcLimits, annotate, calls_in, evaluate, format_number, open_call


@pytest.mark.parametrize(
    ("expr", "shown"),
    [
        ("140 - (100 + 24)", "16"),
        ("136 - (93 + 21)", "22"),
        ("(140 - 60) * 74.99 / (72 * 1.2)", "69.435185"),
        ("400 / sqrt(60 / 90)", "489.897949"),
        ("norm_ppf(0.999)", "3.090232"),
        ("norm_cdf(0)", "0.5"),
        ("ln(exp(2))", "2"),
        ("log10(1000)", "3"),
        ("min(4, 1.0, 3) + max(2, 5)", "6"),
        ("round(26.158) + floor(2.9) + ceil(0.1) + abs(-1)", "30"),
        ("2 ** 10", "1024"),
        ("3 ^ 2", "9"),
        ("0.1 + 0.2", "0.3"),
        ("4000.10 + 3500.20", "7500.3"),
        ("1e-12 * 1", "0.000000000001"),
        ("1 / 3", "0.333333"),
        ("0.001 / 3", "0.0003333333333"),
    ],
)
def test_exact_results(expr: str, shown: str) -> None:
    call = evaluate(expr)
    assert call.ok and call.result == shown and call.inserted == f" = {shown}"


@pytest.mark.parametrize(
    ("expr", "error"),
    [
        ("1 / 0", "division by zero"),
        ("10 ** 10 ** 10", "exponent larger than 64"),
        ("exp(1000)", "result too large"),
        ("sqrt(-1)", "outside the function's domain"),
        ("norm_ppf(1)", "norm_ppf needs 0 < p < 1"),
        ("x + 1", "unknown name 'x'"),
        ("__import__('os')", "unknown function '__import__'"),
        ("__import__('os').system('id')", "only numbers"),
        ("(1).real", "only numbers"),
        ("'a' * 3", "only numbers"),
        ("[1, 2]", "only numbers"),
        ("1 +", "not an arithmetic expression"),
        ("min()", "min takes 1-16 argument(s)"),
        ("sqrt(1, 2)", "sqrt takes 1 argument(s)"),
        ("round(1.5, 0.5)", "round digits must be a whole number"),
        ("(-8) ** (1 / 3)", "fractional power of a negative number"),
        ("-(" * 30 + "1" + ")" * 30, "nested deeper than 24"),
        ("-" * 100 + "1", "more than 120 parts"),
        ("1" + "+1" * 200, "longer than 240 characters"),
    ],
)
def test_bad_expressions_are_error_results(expr: str, error: str) -> None:
    call = evaluate(expr)
    assert not call.ok and call.value is None and error in (call.error or "")
    assert call.inserted.startswith(" = error: ")


def test_limits_are_configurable() -> None:
    assert not evaluate("2 ** 8", CalcLimits(max_exponent=4)).ok
    assert not evaluate("1000 * 1000", CalcLimits(max_magnitude=1e5)).ok


def test_notation_helpers() -> None:
    assert annotate("140 - (100 + 24)") == "<<140 - (100 + 24)>> = 16"
    with pytest.raises(ValueError, match="division by zero"):
        annotate("1 / 0")
    text = "AG = <<140 - (100 + 24)>> = 16 mmol/L; then <<1/0>> = error: division by zero"
    assert [c.result for c in calls_in(text)] == ["16", None]
    assert open_call("AG = <<140 - (100 + 24)>>") == "140 - (100 + 24)"
    assert open_call("<<1>> = 1, and <<2 + 2>>") == "2 + 2"
    assert open_call("a >> b") is None and open_call("<<1>> = 1 >>") is None
    assert format_number(-3.0) == "-3" and format_number(0.5) == "0.5"


def _shape(expr: str) -> str:
    return re.sub(r"\d+(?:\.\d+)?", "n", expr.replace(" ", ""))


def test_the_prompt_example_matches_no_formula_a_reference_uses() -> None:
    """A small model copies the prompt's example into its own expression (an anion-gap
    example made the SFT model write ``<<118 - (100 + 24)>>``): the example must share no
    shape with any expression of any domain's reference solutions."""
    from domains.base import domain_names, get_domain
    from domains.calc import prompt_paragraph

    *_, example = calls_in(prompt_paragraph())  # after the "<<expression>>" placeholder
    shapes = set()
    for name in domain_names():
        for case in get_domain(name).generate(120, 3):
            shapes |= {_shape(c.expression) for c in calls_in(case.reference or "")}
    assert len(shapes) > 10  # the references were read
    assert _shape(example.expression) not in shapes
