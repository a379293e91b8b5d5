"""MedCalc-Bench rows as medicine cases, read as the dataset ships them.

MedCalc-Bench (Khandekar et al., NeurIPS 2024 Datasets and Benchmarks; corrected labels in
MedCalc-Bench-Verified) has one row per (patient note, calculator): a real case report from
PubMed Central, a question, the entities a calculator needs, the ground-truth answer with
its own lower and upper limits, and an explanation.

A row becomes a ``clinical_calc`` case when ponder implements its calculator (``NAMES``, the
one table from MedCalc-Bench's calculator names to ponder's). The prompt carries the note
and the question; the truth is the ground truth with the row's limits as its tolerance
(scores stay exact). Every other row is refused with its reason, and the caller
quarantines it.

``Relevant Entities`` is a Python-literal dict (``{'age': [87, 'years'], 'sex': 'Male'}``).
It is parsed without ``eval``: the syntax tree is checked to hold only literals, then
``ast.literal_eval`` reads it. Where the entities give a formula calculator's inputs, ponder's
own calculator recomputes the answer. A result outside the row's limits tags the case
``label_disagreement`` with both values (the dataset's labels are known to have errors).

The explanation becomes the reference solution, marked as derived: its sentences become
``## Step k:`` steps, and each ``a op b ... = c`` in it whose left side ponder's calculator
evaluates to c (within rounding) is rewritten as a calculator call, ``<<a op b>> = c``.
"""

from __future__ import annotations

import ast
import hashlib
import json
import math
import re
from typing import Any

from pydantic import BaseModel, Field

from domains.calc import CLOSE, OPEN, evaluate
from domains.errors import SafeReason
from domains.medicine.calculators import CALCULATORS, PatientFacts

COLUMNS = (
    "Row Number",
    "Calculator ID",
    "Calculator Name",
    "Category",
    "Output Type",
    "Note ID",
    "Note Type",
    "Patient Note",
    "Question",
    "Relevant Entities",
    "Ground Truth Answer",
    "Lower Limit",
    "Upper Limit",
    "Ground Truth Explanation",
)
# MedCalc-Bench's calculator name -> ponder's calculator (domains.medicine.calculators)
NAMES: dict[str, str] = {
    "CHA2DS2-VASc Score for Atrial Fibrillation Stroke Risk": "cha2ds2_vasc",
    "HAS-BLED Score for Major Bleeding Risk": "has_bled",
    "CURB-65 Score for Pneumonia Severity": "curb_65",
    "Wells' Criteria for Pulmonary Embolism": "wells_pe",
    "Wells' Criteria for DVT": "wells_dvt",
    "Creatinine Clearance (Cockcroft-Gault Equation)": "cockcroft_gault",
    "Body Mass Index (BMI)": "bmi",
    "Anion Gap": "anion_gap",
    "Calcium Correction for Hypoalbuminemia": "corrected_calcium",
    "QTc Bazett Calculator": "qtc_bazett",
    "MELD Na (UNOS/OPTN)": "meld_na",
}
MAX_ENTITIES_CHARS = 20_000  # a longer literal is refused before it is parsed
DIFFICULTY = 3  # real notes carry mixed units, negations and distractors


class Refused(SafeReason):
    """A row that cannot become a case; the message (fields, rules and the dataset's own
    vocabulary, never a note's text) is its quarantine reason."""


class Origin(BaseModel):
    """Where a case came from, and what ponder found when it checked the label."""

    dataset: str = Field(description="The source dataset.")
    row: int = Field(description="The row's 'Row Number'.")
    tags: list[str] = Field(default_factory=list, description="e.g. label_disagreement.")
    dataset_value: float = Field(description="The dataset's ground-truth answer.")
    ponder_value: float | None = Field(
        default=None, description="Ponder's calculator on the row's entities (None: not run)."
    )
    check: str = Field(description="What the cross-check did, in words.")
    reference: str = Field(description="How the reference solution was made.")


# -- entities -------------------------------------------------------------------------------

_LITERALS = (ast.Expression, ast.Dict, ast.List, ast.Tuple, ast.Constant, ast.UnaryOp, ast.USub,
             ast.UAdd, ast.Load)  # fmt: skip


def parse_entities(text: str) -> dict[str, Any]:
    """``Relevant Entities`` as a dict, never through ``eval``: only literal syntax parses."""
    if len(text) > MAX_ENTITIES_CHARS:
        raise Refused(f"Relevant Entities: {len(text)} characters > {MAX_ENTITIES_CHARS}")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as err:
        raise Refused(f"Relevant Entities: not a Python literal ({err.msg})") from None
    bad = sorted({type(n).__name__ for n in ast.walk(tree) if not isinstance(n, _LITERALS)})
    if bad:
        raise Refused(f"Relevant Entities: only literals are read, found {', '.join(bad)}")
    value = ast.literal_eval(tree)
    if not isinstance(value, dict):
        raise Refused("Relevant Entities: expected a dict of entity -> value")
    return value


# entity name -> (PatientFacts field, {unit: factor to the field's unit})
_MASS = {"kg": 1.0, "g": 0.001, "lb": 0.453592, "lbs": 0.453592, "oz": 0.0283495}
_LENGTH = {"cm": 1.0, "m": 100.0, "mm": 0.1, "in": 2.54, "ft": 30.48}
_MMOL = {"mmol/L": 1.0, "mEq/L": 1.0}
QUANTITIES: dict[str, tuple[str, dict[str, float]]] = {
    "weight": ("weight_kg", _MASS),
    "height": ("height_cm", _LENGTH),
    "Sodium": ("sodium", _MMOL),
    "Chloride": ("chloride", _MMOL),
    "Bicarbonate": ("bicarbonate", _MMOL),
    "creatinine": ("creatinine", {"mg/dL": 1.0, "µmol/L": 1 / 88.4, "umol/L": 1 / 88.4}),
    "Calcium": ("calcium", {"mg/dL": 1.0, "mmol/L": 4.008}),
    "Albumin": ("albumin", {"g/dL": 1.0, "g/L": 0.1}),
    "Bilirubin": ("bilirubin", {"mg/dL": 1.0, "µmol/L": 1 / 17.1, "umol/L": 1 / 17.1}),
    "Heart Rate or Pulse": ("hr", {"beats per minute": 1.0, "bpm": 1.0}),
    "QT Interval": ("qt_ms", {"msec": 1.0, "ms": 1.0}),
    "international normalized ratio": ("inr", {"": 1.0}),
}
_YEARS = {"years": 1.0, "year": 1.0, "months": 1 / 12, "weeks": 1 / 52.18, "days": 1 / 365.25}


def facts_of(entities: dict[str, Any]) -> PatientFacts:
    """The entities in ponder's canonical units; an entity ponder cannot convert raises."""
    out: dict[str, Any] = {"age": 0, "sex": "M"}
    for name, value in entities.items():
        if name == "age":
            out["age"] = int(_amount(name, value, _YEARS))
        elif name == "sex":
            out["sex"] = {"male": "M", "female": "F"}.get(str(value).strip().lower(), "?")
        elif name in QUANTITIES:
            field, units = QUANTITIES[name]
            out[field] = _amount(name, value, units)
        elif name == "Dialysis at least twice in the past week" and value is True:
            out.setdefault("conditions", []).append("dialysis_twice_last_week")
    return PatientFacts.model_validate(out)


def _amount(name: str, value: Any, units: dict[str, float]) -> float:
    """A ``[number, 'unit']`` (or a bare number for a unitless entity) in the target unit."""
    if isinstance(value, int | float) and not isinstance(value, bool) and "" in units:
        return float(value)
    if not (isinstance(value, list | tuple) and len(value) == 2):
        raise ValueError(f"{name}: expected [number, 'unit'], got {value!r}")
    number, unit = value
    factor = units.get(str(unit).strip())
    if factor is None or not isinstance(number, int | float):
        raise ValueError(f"{name}: unit {unit!r} not converted (known: {sorted(units)})")
    return float(number) * factor


def cross_check(calc: str, entities: dict[str, Any], lower: float, upper: float) -> tuple:
    """(ponder's value or None, tags, what was done), for one row's entities."""
    spec = CALCULATORS[calc]
    if spec.unit == "points":
        return None, [], "not run: ponder maps a score's criteria from the note, not entities"
    try:
        value = spec.rounded(spec.compute(facts_of(entities)).value)
    except Exception as err:  # noqa: BLE001 - any failure is recorded, never fatal
        return None, [], f"not run: {str(err).splitlines()[0][:200]}"
    if lower - 1e-9 <= value <= upper + 1e-9:
        return value, [], f"ponder's {calc} gives {value:g}, inside [{lower:g}, {upper:g}]"
    return (
        value,
        ["label_disagreement"],
        (f"ponder's {calc} gives {value:g}, outside the dataset's [{lower:g}, {upper:g}]"),
    )


# -- the explanation as a reference ---------------------------------------------------------

_ARITH = re.compile(r"(?<![\w.])((?:[\d.]+|[()])(?:\s*(?:[-+*/^×÷]|\*\*)?\s*(?:[\d.]+|[()]))*)"
                    r"\s*=\s*(-?\d+(?:\.\d+)?)")  # fmt: skip
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def with_calls(text: str) -> str:
    """Each ``expr = c`` whose expr the calculator evaluates to c (to c's rounding) as a call."""

    def swap(m: re.Match) -> str:
        expr = m.group(1).replace("^", "**").replace("×", "*").replace("÷", "/").strip()
        if not re.search(r"[-+*/]", expr):
            return m.group(0)
        call = evaluate(expr)
        places = len(m.group(2).split(".")[1]) if "." in m.group(2) else 0
        # the stated result must be the value rounded to the places it shows
        if call.value is None or abs(call.value - float(m.group(2))) > 0.5 * 10**-places + 1e-9:
            return m.group(0)
        return f"{OPEN}{expr}{CLOSE} = {m.group(2)}"

    return _ARITH.sub(swap, text)


def reference_of(explanation: str, answer: str, per_step: int = 2) -> str:
    """The explanation in ``## Step k:`` form, with calculator calls, then the answer."""
    sentences = [s.strip() for s in _SENTENCE.split(explanation.strip()) if s.strip()]
    chunks = [" ".join(sentences[i : i + per_step]) for i in range(0, len(sentences), per_step)]
    steps = [f"## Step {k + 1}: {with_calls(c)}" for k, c in enumerate(chunks)]
    return "\n\n".join([*steps, f"Answer: {answer}"])


# -- rows -----------------------------------------------------------------------------------


def missing_columns(found: list[str]) -> list[str]:
    """The expected columns a file lacks (a file-level error names these)."""
    return [c for c in COLUMNS if c not in found]


def row_case(row: dict[str, Any]) -> dict[str, Any]:
    """One row as a case dump (``id, domain, family, difficulty, inputs, truth, reference``);
    raises ``Refused`` with the quarantine reason."""
    name = str(row.get("Calculator Name") or "").strip()
    calc = NAMES.get(name)
    if calc is None:
        raise Refused(f"calculator not implemented: {name or '(empty)'}")
    spec = CALCULATORS[calc]
    truth, lower, upper = _truth(row, integer=spec.unit == "points")
    entities = parse_entities(str(row.get("Relevant Entities") or "{}"))
    ponder, tags, check = cross_check(calc, entities, lower, upper)
    answer = json.dumps({"value": truth["value"], "criteria": []})
    origin = Origin(
        dataset="medcalc_bench",
        row=int(row["Row Number"]),
        tags=tags,
        dataset_value=truth["value"],
        ponder_value=ponder,
        check=check,
        reference="derived: the dataset's Ground Truth Explanation, split into steps, "
        "arithmetic rewritten as calculator calls",
    )
    note, question = str(row.get("Patient Note") or ""), str(row.get("Question") or "")
    if not note.strip():
        raise Refused("Patient Note: empty")
    inputs = {"calculator": calc, "note": note, "question": question, "origin": origin.model_dump()}
    explanation = str(row.get("Ground Truth Explanation") or "")
    return {
        "id": case_key(row, calc),
        "domain": "medicine",
        "family": "clinical_calc",
        "difficulty": DIFFICULTY,
        "inputs": inputs,
        "truth": truth,
        "reference": reference_of(explanation, answer) if explanation.strip() else None,
    }


def case_key(row: dict[str, Any], calc: str) -> str:
    """A stable id from the note id, the calculator and the row number (the same file gives
    the same ids). It is a hash: the note id never shows; reports redact it like any id."""
    raw = f"{row.get('Note ID')}|{calc}|{row.get('Row Number')}"
    return "medcalc-" + hashlib.blake2b(raw.encode(), digest_size=8).hexdigest()


def _truth(row: dict[str, Any], *, integer: bool) -> tuple[dict[str, Any], float, float]:
    kind = str(row.get("Output Type") or "").strip().lower()
    if kind not in ("integer", "decimal"):
        raise Refused(f"Output Type {kind or '(empty)'}: only integer and decimal answers are read")
    try:
        value = float(row["Ground Truth Answer"])
        lower, upper = float(row["Lower Limit"]), float(row["Upper Limit"])
    except (TypeError, ValueError):
        raise Refused("Ground Truth Answer, Lower Limit, Upper Limit: must be numbers") from None
    if not all(math.isfinite(x) for x in (value, lower, upper)) or not lower <= value <= upper:
        raise Refused(f"limits [{lower:g}, {upper:g}] must be finite and hold {value:g}")
    if integer:  # scores are exact, whatever limits the row gives
        return {"value": value, "criteria": []}, value, value
    return {"value": value, "criteria": [], "lower": lower, "upper": upper}, lower, upper
