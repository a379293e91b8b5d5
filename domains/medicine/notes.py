"""Patient-note generation: facts drawn per calculator, rendered as a clinician writes them.

Difficulty turns on: distractor history and labs (2+), negated findings and unit
conversions (3+: lb, ft/in, umol/L creatinine and bilirubin, urea mmol/L, mmol/L calcium,
g/L albumin), values exactly on a threshold (4+), and identifiers, dates and long histories
(5). Every number in the facts is the one the note states, converted back to canonical
units, so the truth follows from the note alone.
"""

from __future__ import annotations

import random
from typing import NamedTuple

from domains.medicine.calculators import (
    CALCULATORS,
    CONDITIONS,
    CONDITIONS_USED,
    DISTRACTORS,
    NEAR_MISSES,
    PatientFacts,
)

LB = 0.45359237  # kg per lb (the international pound), the factor the prompt states

FIRST = {
    "M": ["James", "Ahmed", "Wei", "Carlos", "Tomasz", "Kwame"],
    "F": ["Maria", "Aisha", "Mei", "Sofia", "Olga", "Amara"],
}
LAST = ["Okonkwo", "Lindqvist", "Haddad", "Nakamura", "Fernandes", "Kowalski", "Brennan"]
PHRASES = {
    "chf": "congestive heart failure",
    "hypertension": "hypertension",
    "diabetes": "type 2 diabetes mellitus",
    "stroke": "a previous ischaemic stroke",
    "tia": "a prior transient ischaemic attack",
    "thromboembolism": "a previous systemic arterial embolism",
    "vascular_disease": "peripheral arterial disease",
    "dialysis_or_transplant": "end-stage renal disease on haemodialysis",
    "cirrhosis": "alcoholic cirrhosis",
    "bleeding_history": "a previous major gastrointestinal bleed",
    "labile_inr": "labile INRs on warfarin",
    "antiplatelet_nsaid": "daily aspirin use",
    "confusion": "new confusion (disoriented to time and place)",
    "dvt_signs": "unilateral leg swelling with pain on deep-vein palpation",
    "pe_most_likely": "a presentation in which PE is judged the most likely diagnosis",
    "immobilization_surgery": "a hip replacement 2 weeks ago",
    "prior_vte": "a previous deep vein thrombosis",
    "hemoptysis": "haemoptysis",
    "malignancy": "active pancreatic cancer on chemotherapy",
    "bedridden_or_surgery_12wk": "being bedridden for 4 days after knee surgery 6 weeks ago",
    "calf_swelling_3cm": "calf circumference 4 cm larger than the other side",
    "collateral_veins": "collateral non-varicose superficial veins",
    "entire_leg_swollen": "swelling of the entire left leg",
    "deep_vein_tenderness": "tenderness along the deep venous system",
    "pitting_edema": "pitting oedema confined to the symptomatic leg",
    "paralysis_or_cast": "a below-knee plaster cast",
    "alternative_diagnosis_likely": "a ruptured Baker's cyst considered at least as likely as DVT",
    "dialysis_twice_last_week": "two dialysis sessions in the past week",
    "asthma": "asthma",
    "hypothyroidism": "hypothyroidism",
    "gerd": "reflux disease",
    "osteoarthritis": "knee osteoarthritis",
    "migraine": "migraine",
    "depression": "depression",
}
assert set(PHRASES) == set(CONDITIONS)


def draw_facts(rng: random.Random, calc: str, difficulty: int) -> tuple[PatientFacts, dict]:
    """Facts plus display choices (units, borderline flags) for one note."""
    sex = rng.choice(["M", "F"])
    border = difficulty >= 4 and rng.random() < 0.5
    age = (
        rng.choice([64, 65, 74, 75])
        if border and calc in ("cha2ds2_vasc", "curb_65", "has_bled")
        else rng.randint(22, 92)
    )
    present = [c for c in CONDITIONS_USED.get(calc, ()) if rng.random() < 0.4]
    present += [c for c in NEAR_MISSES.get(calc, ()) if rng.random() < 0.3]
    if difficulty >= 2:
        present += rng.sample(list(DISTRACTORS), k=min(difficulty - 1, len(DISTRACTORS)))
    v = {
        "age": age,
        "sex": sex,
        "conditions": sorted(set(present)),
        "weight_kg": round(rng.uniform(42, 130), 1),
        "height_cm": float(rng.randint(150, 195)),
        "hr": float(100 if border and calc in ("wells_pe",) else rng.randint(55, 130)),
        "sbp": float(160 if border and calc == "has_bled" else rng.randint(80, 185)),
        "dbp": float(60 if border and calc == "curb_65" else rng.randint(45, 105)),
        "rr": float(30 if border and calc == "curb_65" else rng.randint(12, 36)),
        "sodium": float(rng.randint(124, 146)),
        "chloride": float(rng.randint(92, 112)),
        "bicarbonate": float(rng.randint(12, 30)),
        "potassium": round(rng.uniform(3.2, 5.4), 1),
        "creatinine": round(rng.uniform(0.6, 4.5), 2),
        "bun": float(rng.randint(8, 45)),
        "calcium": round(rng.uniform(7.0, 11.0), 1),
        "albumin": round(rng.uniform(1.8, 4.8), 1),
        "bilirubin": round(rng.uniform(0.4, 12.0), 1),
        "inr": round(rng.uniform(0.9, 3.5), 1),
        "qt_ms": float(rng.randint(340, 520)),
        "alcohol_per_week": rng.choice([0, 2, 6, 8, 12]) if calc == "has_bled" else 0,
    }
    if border and calc == "curb_65":
        v["bun"] = rng.choice([19.0, 19.1])
        v["_border_urea"] = rng.choice([7.0, 7.1])
    if border and calc == "has_bled":
        v["creatinine"] = rng.choice([2.26, 2.27])
    if calc == "anion_gap":  # keep the gap physiological (3-30 mmol/L)
        v["chloride"] = float(v["sodium"] - v["bicarbonate"] - rng.randint(3, 30))
    units = {
        k: difficulty >= 3 and rng.random() < 0.6
        for k in ("weight", "height", "creatinine", "bun", "calcium", "albumin", "bilirubin")
    }
    return _apply_display(v, units), units


def _apply_display(v: dict, units: dict) -> PatientFacts:
    """Round-trip every converted value through its displayed form."""
    if units["weight"]:
        v["weight_kg"] = round(v["weight_kg"] / LB) * LB
    if units["height"]:
        v["height_cm"] = round(v["height_cm"] / 2.54) * 2.54
    if units["creatinine"]:  # stated in umol/L: keep the stated number, not a round trip
        v["creatinine_umol"] = float(round(v.pop("creatinine") * 88.4))
    if units["bun"]:  # stated as urea mmol/L (Lim 2003's own unit)
        urea = round(v.pop("bun") / 2.8, 1)
        v["urea_mmol"] = urea if not v.get("_border_urea") else v["_border_urea"]
    v.pop("_border_urea", None)
    if units["calcium"]:
        v["calcium"] = round(v["calcium"] / 4.008, 2) * 4.008
    if units["albumin"]:
        v["albumin"] = round(v["albumin"] * 10) / 10
    if units["bilirubin"]:
        v["bilirubin"] = round(v["bilirubin"] * 17.1) / 17.1
    return PatientFacts.model_construct(**v)


def render_note(
    f: PatientFacts, calc: str, units: dict, difficulty: int, rng: random.Random
) -> str:
    """The note text for these facts."""
    name = f"{rng.choice(FIRST[f.sex])} {rng.choice(LAST)}"
    who = "man" if f.sex == "M" else "woman"
    head = f"A {f.age}-year-old {who}"
    if difficulty >= 5:
        head = (
            f"{name} (MRN {rng.randrange(10**7):07d}, DOB on file, seen 2026-"
            f"{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}) is a {f.age}-year-old {who}"
        )
    hx = [PHRASES[c] for c in f.conditions]
    lines = [f"{head} with a history of {_join(hx)}." if hx else f"{head}, previously well."]
    if difficulty >= 3:
        absent = [c for c in CONDITIONS_USED.get(calc, ()) if c not in f.conditions][:3]
        if absent:
            lines.append(f"Denies {_join([PHRASES[c] for c in absent])}.")
    if f.alcohol_per_week:
        lines.append(f"Drinks about {f.alcohol_per_week} alcoholic drinks per week.")
    lines.append(_vitals(f, units))
    lines.append(_labs(f, calc, units, difficulty, rng))
    return " ".join(lines)


class Stated(NamedTuple):
    """A value as the note writes it: label, number text and unit."""

    label: str
    number: str
    unit: str

    def __str__(self) -> str:
        gap = "" if self.unit.startswith("/") or not self.unit else " "
        return f"{self.label} {self.number}{gap}{self.unit}"


def _body(f: PatientFacts, units: dict) -> dict[str, Stated]:
    """Weight and height, in pounds and feet/inches when the note's units say so."""
    inches = round((f.height_cm or 0) / 2.54)
    return {
        "weight_kg": (
            Stated("weight", f"{f.weight_kg / LB:.0f}", "lb")
            if units["weight"]
            else Stated("weight", f"{f.weight_kg:.1f}", "kg")
        ),
        "height_cm": (
            Stated("height", f"{inches // 12} ft {inches % 12}", "in")
            if units["height"]
            else Stated("height", f"{f.height_cm:.0f}", "cm")
        ),
    }


def stated(f: PatientFacts, units: dict) -> dict[str, Stated]:
    """Every value the note can show, as it shows it (the note and the reference solution
    both read this, so they cannot drift apart)."""
    out = {
        "hr": Stated("HR", f"{f.hr:.0f}", "bpm"),
        "sbp": Stated("SBP", f"{f.sbp:.0f}", "mmHg"),
        "dbp": Stated("DBP", f"{f.dbp:.0f}", "mmHg"),
        "rr": Stated("RR", f"{f.rr:.0f}", "/min"),
        **_body(f, units),
        "sodium": Stated("Na", f"{f.sodium:.0f}", "mmol/L"),
        "chloride": Stated("Cl", f"{f.chloride:.0f}", "mmol/L"),
        "bicarbonate": Stated("HCO3", f"{f.bicarbonate:.0f}", "mmol/L"),
        "potassium": Stated("K", f"{f.potassium}", "mmol/L"),
        "creatinine": (
            Stated("creatinine", f"{f.creatinine_umol:.0f}", "umol/L")
            if f.creatinine_umol is not None
            else Stated("creatinine", f"{f.creatinine:.2f}", "mg/dL")
        ),
        "bun": (
            Stated("urea", f"{f.urea_mmol:.1f}", "mmol/L")
            if f.urea_mmol is not None
            else Stated("BUN", f"{f.bun:g}", "mg/dL")
        ),
        "calcium": (
            Stated("calcium", f"{f.calcium / 4.008:.2f}", "mmol/L")
            if units["calcium"]
            else Stated("calcium", f"{f.calcium:.1f}", "mg/dL")
        ),
        "albumin": (
            Stated("albumin", f"{f.albumin * 10:.0f}", "g/L")
            if units["albumin"]
            else Stated("albumin", f"{f.albumin:.1f}", "g/dL")
        ),
        "bilirubin": (
            Stated("bilirubin", f"{f.bilirubin * 17.1:.0f}", "umol/L")
            if units["bilirubin"]
            else Stated("bilirubin", f"{f.bilirubin:.1f}", "mg/dL")
        ),
        "inr": Stated("INR", f"{f.inr}", ""),
        "qt_ms": Stated("QT", f"{f.qt_ms:.0f}", "ms"),
    }
    return out


def _vitals(f: PatientFacts, units: dict) -> str:
    v = stated(f, units)
    return (
        f"Vitals: HR {v['hr'].number} bpm, BP {v['sbp'].number}/{v['dbp'].number} mmHg, "
        f"RR {v['rr'].number}/min, {v['weight_kg']}, {v['height_cm']}."
    )


def shown_labs(f: PatientFacts, calc: str, difficulty: int, rng: random.Random) -> list[str]:
    """The lab fields a note shows: what the calculator needs, plus distractors (2+)."""
    needed = set(CALCULATORS[calc].needs) | ({"sodium"} if calc == "meld_na" else set())
    extra = ["potassium", "sodium", "calcium", "albumin", "bun"]
    shown = needed | (set(rng.sample(extra, k=min(difficulty, 5))) if difficulty >= 2 else set())
    return sorted(k for k in shown if k in LABS)


LABS = (
    "sodium",
    "chloride",
    "bicarbonate",
    "potassium",
    "creatinine",
    "bun",
    "calcium",
    "albumin",
    "bilirubin",
    "inr",
    "qt_ms",
)


def _labs(f: PatientFacts, calc: str, units: dict, difficulty: int, rng: random.Random) -> str:
    v = stated(f, units)
    parts = [
        f"ECG: {v[k]}" if k == "qt_ms" else str(v[k]) for k in shown_labs(f, calc, difficulty, rng)
    ]
    return f"Results: {', '.join(parts)}." if parts else ""


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
