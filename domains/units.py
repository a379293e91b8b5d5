"""Unit conversion as a calculator call, so no reasoning step decides whether to convert.

A step writes ``<<weight 96 lb to kg>>`` (the value as the note states it, then the target
unit) and `` = 43.544868 kg`` is inserted. Values already in the target unit go through the
same call (``<<height 188 cm to m>>``, ``<<calcium 9.0 mg/dL to mg/dL>>``), so every input
line has one shape. The example model's measured failure was the branch: with "calcium is in
mg/dL, convert to ..." it multiplied values already in mg/dL by the mmol/L factor (every
wrong corrected-calcium and BMI answer of a bench-loop run, formulas-hard, round 1).

Pint does the dimensional work. A conversion between amount and mass concentration
(mmol/L to mg/dL) needs the substance's molar mass, so the label before the number must name
one in ``SUBSTANCES``; their masses reproduce the clinical factors the medicine prompt states
(calcium x 4.008, creatinine / 88.4, bilirubin / 17.1).
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any, NamedTuple

# g/mol, chosen so that mg/dL = umol/L x mass / 10^4 gives the stated clinical factors
SUBSTANCES: dict[str, float] = {
    "calcium": 40.08,  # mg/dL = mmol/L x 4.008
    "creatinine": 1e4 / 88.4,  # mg/dL = umol/L / 88.4 (113.12 g/mol)
    "bilirubin": 1e4 / 17.1,  # mg/dL = umol/L / 17.1 (584.8 g/mol)
}
# units pint does not define, as a note writes them
_DEFINITIONS = ("bpm = 1 / minute", "breaths_per_minute = 1 / minute")
_ALIASES = {"/min": "breaths_per_minute", "in": "inch"}
_NUMBER = r"[-+]?\d+(?:\.\d+)?"
# label words, a number, what follows it (its unit, or "ft N in"), then " to " and a unit
_SHAPE = re.compile(
    rf"^\s*(?P<label>(?:[A-Za-z][\w]*\s+)*?)(?P<number>{_NUMBER})\s*(?P<unit>.*?)\s+to\s+"
    r"(?P<target>\S+)\s*$"
)
_FEET = re.compile(rf"^ft\s+(?P<inches>{_NUMBER})\s+in$")


class Converted(NamedTuple):
    """A conversion's outcome: the value in the target unit, or why there is none."""

    value: float | None
    unit: str
    error: str | None = None


def looks_like(expression: str) -> bool:
    """Whether an expression is a conversion (`` to `` and a unit), not arithmetic."""
    return " to " in expression and _SHAPE.match(expression) is not None


def convert(expression: str) -> Converted:
    """Convert ``[label] number unit to target``; every failure is an ``error`` (never
    raises), in words the model can act on."""
    m = _SHAPE.match(expression)
    if m is None:
        return Converted(None, "", "write a conversion as <<label number unit to unit>>")
    label, target = m["label"].strip().lower(), m["target"]
    try:
        quantity = _quantity(float(m["number"]), m["unit"].strip())
        value = _to(quantity, target, label=label, source=m["unit"].strip())
    except _Refused as err:
        return Converted(None, target, str(err))
    return Converted(value, target)


class _Refused(Exception):
    """A conversion the calculator will not do; the message is shown to the model."""


@cache
def _registry() -> Any:
    import pint

    ureg = pint.UnitRegistry()
    for line in _DEFINITIONS:
        ureg.define(line)
    return ureg


def _unit(text: str) -> Any:
    import pint

    try:
        return _registry().parse_units(_ALIASES.get(text, text))
    except (pint.errors.UndefinedUnitError, AttributeError, TypeError, ValueError, SyntaxError):
        raise _Refused(f"unknown unit {text!r}") from None


def _quantity(number: float, unit: str) -> Any:
    ureg = _registry()
    feet = _FEET.match(unit)
    if feet is not None:  # "5 ft 1 in": feet and inches, as heights are written
        return ureg.Quantity(number, "foot") + ureg.Quantity(float(feet["inches"]), "inch")
    if not unit:
        raise _Refused("the value has no unit; write it as the note states it, e.g. 96 lb")
    return ureg.Quantity(number, _unit(unit))


def _to(quantity: Any, target_text: str, *, label: str, source: str) -> float:
    import pint

    ureg, target = _registry(), _unit(target_text)
    have, want = quantity.dimensionality, (1 * target).dimensionality
    if have == want:
        return float(quantity.to(target).magnitude)
    molar = "[substance]" in have and "[mass]" in want or "[mass]" in have and "[substance]" in want
    if have / want not in (ureg("mol/g").dimensionality, ureg("g/mol").dimensionality) or not molar:
        raise _Refused(f"cannot convert {source} to {target_text}: different quantities")
    if label not in SUBSTANCES:
        raise _Refused(
            f"converting {source} to {target_text} needs the substance: start with one of "
            f"{', '.join(SUBSTANCES)}, e.g. <<calcium 2.1 mmol/L to mg/dL>>"
        )
    try:
        mass = SUBSTANCES[label] * ureg("g/mol")
        return float(quantity.to(target, "chemistry", mw=mass).magnitude)
    except pint.errors.DimensionalityError:
        raise _Refused(f"cannot convert {source} to {target_text}") from None
