"""Read a rendered patient note back into ``PatientFacts``, from the text alone.

The fidelity check uses it: the truth recomputed from what the note says must equal the
stored truth, so a truth that depends on a hidden fact or a unit round trip is caught. It
knows the note layout that ``notes.render_note`` writes, and the prompt's conversion
factors; it never sees the generator's facts.
"""

from __future__ import annotations

import re

from domains.medicine.calculators import PatientFacts
from domains.medicine.notes import LB, PHRASES

_AGE = re.compile(r"(\d+)-year-old (man|woman)")
_HISTORY = re.compile(r"with a history of (.*?)\.(?: |$)")
_DRINKS = re.compile(r"Drinks about (\d+) alcoholic drinks per week")
_VITALS = re.compile(
    r"HR (\d+) bpm, BP (\d+)/(\d+) mmHg, RR (\d+)/min, weight ([\d.]+) (kg|lb), "
    r"height (?:(\d+) cm|(\d+) ft (\d+) in)"
)
_LABS = {
    "sodium": (r"\bNa ([\d.]+) mmol/L", 1.0),
    "chloride": (r"\bCl ([\d.]+) mmol/L", 1.0),
    "bicarbonate": (r"\bHCO3 ([\d.]+) mmol/L", 1.0),
    "potassium": (r"\bK ([\d.]+) mmol/L", 1.0),
    "creatinine": (r"creatinine ([\d.]+) mg/dL", 1.0),
    "creatinine_umol": (r"creatinine ([\d.]+) umol/L", 1.0),
    "bun": (r"BUN ([\d.]+) mg/dL", 1.0),
    "urea_mmol": (r"urea ([\d.]+) mmol/L", 1.0),
    "calcium": (r"calcium ([\d.]+) mg/dL", 1.0),
    "calcium_mmol": (r"calcium ([\d.]+) mmol/L", 4.008),
    "albumin": (r"albumin ([\d.]+) g/dL", 1.0),
    "albumin_g_l": (r"albumin ([\d.]+) g/L", 0.1),
    "bilirubin": (r"bilirubin ([\d.]+) mg/dL", 1.0),
    "bilirubin_umol": (r"bilirubin ([\d.]+) umol/L", 1 / 17.1),
    "inr": (r"\bINR ([\d.]+)", 1.0),
    "qt_ms": (r"QT ([\d.]+) ms", 1.0),
}
# values stated in another unit that PatientFacts keeps in its canonical field
_CANONICAL = {"calcium_mmol": "calcium", "albumin_g_l": "albumin", "bilirubin_umol": "bilirubin"}


def read_note(note: str) -> PatientFacts:
    """The facts a reader takes from the note (findings not mentioned are absent)."""
    age, who = _AGE.search(note).groups()  # type: ignore[union-attr]
    values: dict = {"age": int(age), "sex": "M" if who == "man" else "F"}
    values["conditions"] = _findings(note)
    drinks = _DRINKS.search(note)
    values["alcohol_per_week"] = int(drinks.group(1)) if drinks else 0
    values.update(_vitals(note))
    for name, (pattern, factor) in _LABS.items():
        match = re.search(pattern, note)
        if match:
            number = float(match.group(1))
            if name in _CANONICAL:
                values[_CANONICAL[name]] = _convert(name, number, factor)
            else:
                values[name] = number
    return PatientFacts.model_validate(values)


def _convert(name: str, number: float, factor: float) -> float:
    if name == "albumin_g_l":
        return number / 10
    if name == "bilirubin_umol":
        return number / 17.1
    return number * factor


def _findings(note: str) -> list[str]:
    match = _HISTORY.search(note)
    text = match.group(1) if match else ""
    found = []
    for name, phrase in sorted(PHRASES.items(), key=lambda kv: -len(kv[1])):
        if phrase in text:
            found.append(name)
            text = text.replace(phrase, "")
    return sorted(found)


def _vitals(note: str) -> dict:
    m = _VITALS.search(note)
    if m is None:
        return {}
    hr, sbp, dbp, rr, weight, unit, cm, ft, inch = m.groups()
    return {
        "hr": float(hr),
        "sbp": float(sbp),
        "dbp": float(dbp),
        "rr": float(rr),
        "weight_kg": int(weight) * LB if unit == "lb" else float(weight),
        "height_cm": float(cm) if cm else (int(ft) * 12 + int(inch)) * 2.54,
    }
