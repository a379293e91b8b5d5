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
_LABS = {  # field -> pattern; a stated value in another unit maps to (canonical field, factor)
    "sodium": r"\bNa ([\d.]+) mmol/L",
    "chloride": r"\bCl ([\d.]+) mmol/L",
    "bicarbonate": r"\bHCO3 ([\d.]+) mmol/L",
    "potassium": r"\bK ([\d.]+) mmol/L",
    "creatinine": r"creatinine ([\d.]+) mg/dL",
    "creatinine_umol": r"creatinine ([\d.]+) umol/L",
    "bun": r"BUN ([\d.]+) mg/dL",
    "urea_mmol": r"urea ([\d.]+) mmol/L",
    "calcium": r"calcium ([\d.]+) mg/dL",
    "calcium_mmol": r"calcium ([\d.]+) mmol/L",
    "albumin": r"albumin ([\d.]+) g/dL",
    "albumin_g_l": r"albumin ([\d.]+) g/L",
    "bilirubin": r"bilirubin ([\d.]+) mg/dL",
    "bilirubin_umol": r"bilirubin ([\d.]+) umol/L",
    "inr": r"\bINR ([\d.]+)",
    "qt_ms": r"QT ([\d.]+) ms",
}
# stated values PatientFacts keeps only in canonical units: the prompt's conversion
_CANONICAL = {
    "calcium_mmol": ("calcium", lambda x: x * 4.008),
    "albumin_g_l": ("albumin", lambda x: x / 10),
    "bilirubin_umol": ("bilirubin", lambda x: x / 17.1),
}


def read_note(note: str) -> PatientFacts:
    """The facts a reader takes from the note (findings not mentioned are absent)."""
    age, who = _AGE.search(note).groups()  # type: ignore[union-attr]
    values: dict = {"age": int(age), "sex": "M" if who == "man" else "F"}
    values["conditions"] = _findings(note)
    drinks = _DRINKS.search(note)
    values["alcohol_per_week"] = int(drinks.group(1)) if drinks else 0
    values.update(_vitals(note))
    for name, pattern in _LABS.items():
        match = re.search(pattern, note)
        if match:
            field, convert = _CANONICAL.get(name, (name, float))
            values[field] = convert(float(match.group(1)))
    return PatientFacts.model_validate(values)


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
