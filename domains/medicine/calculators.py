"""Clinical calculators, each from its original definition, over canonical units.

Every calculator is a pure function: it takes ``PatientFacts`` (canonical units: kg, cm,
mg/dL, mmol/L for electrolytes, ms, bpm, mmHg, or the unit the note states where a rule is
defined on it) and returns a typed ``CalcResult`` (value, criteria met, every named
intermediate, reference steps). Findings
that are not recorded count as absent. Sources: Lip 2010 (CHA2DS2-VASc), Pisters 2010
(HAS-BLED), Lim 2003 (CURB-65), Wells 2000 (PE) and 2003 (DVT), Cockcroft & Gault 1976
with the MedCalc BMI weight rule, Bazett 1920, UNOS/OPTN MELD-Na policy (2016).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal
from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from domains.errors import PonderError

Sex = Literal["M", "F"]
DISTRACTORS = ("asthma", "hypothyroidism", "gerd", "osteoarthritis", "migraine", "depression")


class PatientFacts(BaseModel):
    """Structured facts behind a note, in canonical units, with plausibility ranges."""

    age: int = Field(ge=0, le=120, description="Years.")
    sex: Sex = Field(description="M or F.")
    weight_kg: float | None = Field(default=None, gt=0.5, le=400)
    height_cm: float | None = Field(default=None, ge=30, le=250)
    hr: float | None = Field(default=None, ge=20, le=250, description="Heart rate, bpm.")
    sbp: float | None = Field(default=None, ge=40, le=300, description="Systolic BP, mmHg.")
    dbp: float | None = Field(default=None, ge=20, le=200, description="Diastolic BP, mmHg.")
    rr: float | None = Field(default=None, ge=4, le=80, description="Respiratory rate, /min.")
    sodium: float | None = Field(default=None, ge=100, le=180, description="mmol/L.")
    chloride: float | None = Field(default=None, ge=60, le=140, description="mmol/L.")
    bicarbonate: float | None = Field(default=None, ge=2, le=60, description="mmol/L.")
    potassium: float | None = Field(default=None, ge=1.5, le=9.0, description="mmol/L.")
    creatinine: float | None = Field(default=None, ge=0.1, le=25, description="mg/dL.")
    creatinine_umol: float | None = Field(
        default=None,
        ge=8,
        le=2200,
        description="Creatinine as stated, umol/L.",
    )
    bun: float | None = Field(default=None, ge=1, le=250, description="BUN, mg/dL.")
    urea_mmol: float | None = Field(
        default=None, ge=0.3, le=90, description="Urea as stated in mmol/L (instead of BUN)."
    )
    calcium: float | None = Field(default=None, ge=3, le=20, description="mg/dL.")
    albumin: float | None = Field(default=None, ge=0.5, le=7, description="g/dL.")
    bilirubin: float | None = Field(default=None, ge=0.1, le=60, description="mg/dL.")
    inr: float | None = Field(default=None, ge=0.5, le=15)
    qt_ms: float | None = Field(default=None, ge=200, le=800, description="QT interval, ms.")
    alcohol_per_week: int = Field(default=0, ge=0, le=200, description="Drinks per week.")
    conditions: list[str] = Field(
        default_factory=list, description="Findings present (closed vocabulary: CONDITIONS)."
    )

    @field_validator("conditions")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(CONDITIONS))
        if unknown:
            raise ValueError(f"unknown finding(s) {unknown}; valid findings: {list(CONDITIONS)}")
        return value

    @model_validator(mode="after")
    def _one_unit(self) -> PatientFacts:
        for canon, stated in (("creatinine", "creatinine_umol"), ("bun", "urea_mmol")):
            if getattr(self, canon) is not None and getattr(self, stated) is not None:
                raise ValueError(f"give {canon} or {stated}, not both (the note states one)")
        return self

    def has(self, name: str) -> bool:
        return name in self.conditions

    def creatinine_mg_dl(self) -> float | None:
        """Creatinine in mg/dL: as stated, or the stated umol/L / 88.4."""
        if self.creatinine_umol is not None:
            return self.creatinine_umol / 88.4
        return self.creatinine

    def bun_mg_dl(self) -> float | None:
        """BUN in mg/dL: as stated, or the stated urea mmol/L x 2.8."""
        return self.urea_mmol * 2.8 if self.urea_mmol is not None else self.bun


class CalcResult(BaseModel):
    """What a calculator returns: the value, and how it got there."""

    value: float = Field(description="The score or measurement, unrounded.")
    criteria: list[str] = Field(default_factory=list, description="Criteria met (scores).")
    steps: list[str] = Field(description="Reference solution steps.")


class PointsResult(CalcResult):
    points: dict[str, float] = Field(description="Points of each criterion met.")


class BMIResult(CalcResult):
    height_m: float = Field(description="Height in metres.")


class CockcroftGaultResult(CalcResult):
    bmi: float = Field(description="Body mass index, kg/m^2.")
    ideal_body_weight: float = Field(description="Devine IBW, kg.")
    weight_used: float = Field(description="Weight in the formula, kg (MedCalc BMI rule).")
    weight_rule: str = Field(description="Which BMI band chose the weight.")
    creatinine_mg_dl: float = Field(description="Serum creatinine, mg/dL.")
    sex_factor: float = Field(description="0.85 for women, else 1.")


class QTcResult(CalcResult):
    rr_s: float = Field(description="RR interval, seconds.")


class MeldNaResult(CalcResult):
    creatinine: float = Field(description="Creatinine bounded to [1, 4] (4 if dialysed).")
    bilirubin: float = Field(description="Bilirubin floored at 1.")
    inr: float = Field(description="INR floored at 1.")
    sodium: float = Field(description="Sodium bounded to [125, 137].")
    meld_raw: float = Field(description="0.957 ln Cr + 0.378 ln bili + 1.120 ln INR + 0.643.")
    meld_i: int = Field(description="MELD(i): raw rounded to tenths, times 10.")
    meld_na_unrounded: float = Field(description="Sodium-adjusted score before rounding.")


def _points(items: list[tuple[str, bool, float]], label: str) -> PointsResult:
    met = [(name, pts) for name, ok, pts in items if ok]
    total = sum(p for _, p in met)
    listing = ", ".join(f"{n} (+{p:g})" if p > 0 else f"{n} ({p:g})" for n, p in met) or "none"
    steps = [
        f"Criteria met: {listing}.",
        f"{label} = {' + '.join(f'{p:g}' for _, p in met) or '0'} = {total:g}.",
    ]
    return PointsResult(value=total, criteria=[n for n, _ in met], points=dict(met), steps=steps)


def cha2ds2_vasc(f: PatientFacts) -> PointsResult:
    return _points(
        [
            ("chf", f.has("chf"), 1),
            ("hypertension", f.has("hypertension"), 1),
            ("age_75_or_older", f.age >= 75, 2),
            ("diabetes", f.has("diabetes"), 1),
            (
                "stroke_tia_thromboembolism",
                f.has("stroke") or f.has("tia") or f.has("thromboembolism"),
                2,
            ),
            ("vascular_disease", f.has("vascular_disease"), 1),
            ("age_65_to_74", 65 <= f.age <= 74, 1),
            ("female", f.sex == "F", 1),
        ],
        "CHA2DS2-VASc",
    )


def renal_creatinine(f: PatientFacts) -> bool:
    """Pisters 2010: serum creatinine >= 200 umol/L; stated in mg/dL, MDCalc's > 2.26 mg/dL
    (200 umol/L = 2.262 mg/dL). The rule follows the unit the note states."""
    if f.creatinine_umol is not None:
        return f.creatinine_umol >= 200
    return (f.creatinine or 0) > 2.26


def has_bled(f: PatientFacts) -> PointsResult:
    renal = f.has("dialysis_or_transplant") or renal_creatinine(f)
    return _points(
        [
            ("uncontrolled_hypertension_sbp_over_160", (f.sbp or 0) > 160, 1),
            ("abnormal_renal_function", renal, 1),
            ("abnormal_liver_function", f.has("cirrhosis"), 1),
            ("stroke", f.has("stroke"), 1),  # a previous stroke only: TIA does not score
            ("bleeding", f.has("bleeding_history"), 1),
            ("labile_inr", f.has("labile_inr"), 1),
            ("elderly_over_65", f.age > 65, 1),
            ("drugs_antiplatelet_nsaid", f.has("antiplatelet_nsaid"), 1),
            ("alcohol_8_or_more_per_week", f.alcohol_per_week >= 8, 1),
        ],
        "HAS-BLED",
    )


def urea_high(f: PatientFacts) -> bool:
    """Lim 2003: urea > 7 mmol/L; the US form is BUN > 19 mg/dL. The rule follows the unit
    the note states, on the value as written (no unit round trip)."""
    if f.urea_mmol is not None:
        return f.urea_mmol > 7
    return (f.bun or 0) > 19


def curb_65(f: PatientFacts) -> PointsResult:
    low_bp = (f.sbp is not None and f.sbp < 90) or (f.dbp is not None and f.dbp <= 60)
    return _points(
        [
            ("confusion", f.has("confusion"), 1),
            ("urea_over_7_or_bun_over_19", urea_high(f), 1),
            ("rr_30_or_more", (f.rr or 0) >= 30, 1),
            ("low_blood_pressure", low_bp, 1),
            ("age_65_or_older", f.age >= 65, 1),
        ],
        "CURB-65",
    )


def wells_pe(f: PatientFacts) -> PointsResult:
    return _points(
        [
            ("clinical_signs_of_dvt", f.has("dvt_signs"), 3),
            ("pe_most_likely_diagnosis", f.has("pe_most_likely"), 3),
            ("heart_rate_over_100", (f.hr or 0) > 100, 1.5),
            ("immobilization_or_recent_surgery", f.has("immobilization_surgery"), 1.5),
            ("previous_dvt_or_pe", f.has("prior_vte"), 1.5),
            ("hemoptysis", f.has("hemoptysis"), 1),
            ("malignancy", f.has("malignancy"), 1),
        ],
        "Wells PE",
    )


WELLS_DVT_CRITERIA = (
    "malignancy",
    "bedridden_or_surgery_12wk",
    "calf_swelling_3cm",
    "collateral_veins",
    "entire_leg_swollen",
    "deep_vein_tenderness",
    "pitting_edema",
    "paralysis_or_cast",
    "prior_vte",
)


# Findings each calculator reads from ``conditions`` (order matters: generation draws them).
CONDITIONS_USED: dict[str, tuple[str, ...]] = {
    "cha2ds2_vasc": (
        "chf",
        "hypertension",
        "diabetes",
        "stroke",
        "tia",
        "thromboembolism",
        "vascular_disease",
    ),
    "has_bled": (
        "dialysis_or_transplant",
        "cirrhosis",
        "stroke",
        "bleeding_history",
        "labile_inr",
        "antiplatelet_nsaid",
    ),
    "curb_65": ("confusion",),
    "wells_pe": (
        "dvt_signs",
        "pe_most_likely",
        "immobilization_surgery",
        "prior_vte",
        "hemoptysis",
        "malignancy",
    ),
    "wells_dvt": (*WELLS_DVT_CRITERIA, "alternative_diagnosis_likely"),
    "meld_na": ("dialysis_twice_last_week",),
}
# Findings a note may carry that look relevant but that the calculator's definition does
# not name (HAS-BLED scores a previous stroke, not a TIA or a systemic embolism).
NEAR_MISSES: dict[str, tuple[str, ...]] = {"has_bled": ("tia", "thromboembolism")}
# The whole vocabulary: every finding some calculator reads, plus the distractors.
CONDITIONS = tuple(dict.fromkeys(c for used in CONDITIONS_USED.values() for c in used)) + (
    DISTRACTORS
)


def wells_dvt(f: PatientFacts) -> PointsResult:
    items = [(n, f.has(n), 1.0) for n in WELLS_DVT_CRITERIA]
    items.append(("alternative_diagnosis_likely", f.has("alternative_diagnosis_likely"), -2.0))
    return _points(items, "Wells DVT")


def ideal_body_weight(f: PatientFacts) -> float:
    inches = (f.height_cm or 0) / 2.54
    return (50.0 if f.sex == "M" else 45.5) + 2.3 * (inches - 60)


def bmi(f: PatientFacts) -> BMIResult:
    h = (f.height_cm or 0) / 100
    value = (f.weight_kg or 0) / (h * h)
    return BMIResult(
        value=value,
        height_m=h,
        steps=[
            f"Height {h:.3f} m, weight {f.weight_kg:.1f} kg.",
            f"BMI = {f.weight_kg:.1f} / {h:.3f}^2 = {value:.2f} kg/m^2.",
        ],
    )


def cockcroft_gault(f: PatientFacts) -> CockcroftGaultResult:
    body = bmi(f).value
    ibw = ideal_body_weight(f)
    actual = f.weight_kg or 0
    if body < 18.5:
        w, rule = actual, "BMI < 18.5: use actual weight"
    elif body < 25:
        w, rule = min(ibw, actual), "BMI 18.5-24.9: use min(ideal, actual)"
    else:
        w, rule = ibw + 0.4 * (actual - ibw), "BMI >= 25: adjusted = IBW + 0.4 x (actual - IBW)"
    sex = 0.85 if f.sex == "F" else 1.0
    scr = f.creatinine_mg_dl() or 1.0
    value = (140 - f.age) * w * sex / (72 * scr)
    return CockcroftGaultResult(
        value=value,
        bmi=body,
        ideal_body_weight=ibw,
        weight_used=w,
        weight_rule=rule,
        creatinine_mg_dl=scr,
        sex_factor=sex,
        steps=[
            f"BMI = {body:.1f}; IBW = {'50' if f.sex == 'M' else '45.5'} + 2.3 x "
            f"({(f.height_cm or 0) / 2.54:.2f} - 60) = {ibw:.1f} kg.",
            f"{rule} -> weight {w:.1f} kg.",
            f"CrCl = (140 - {f.age}) x {w:.1f}{' x 0.85' if sex < 1 else ''} / (72 x "
            f"{scr:.2f}) = {value:.1f} mL/min.",
        ],
    )


def anion_gap(f: PatientFacts) -> CalcResult:
    value = (f.sodium or 0) - ((f.chloride or 0) + (f.bicarbonate or 0))
    return CalcResult(
        value=value,
        steps=[
            f"AG = Na - (Cl + HCO3) = {f.sodium:g} - ({f.chloride:g} + "
            f"{f.bicarbonate:g}) = {value:g} mmol/L."
        ],
    )


def corrected_calcium(f: PatientFacts) -> CalcResult:
    value = (f.calcium or 0) + 0.8 * (4 - (f.albumin or 0))
    return CalcResult(
        value=value,
        steps=[
            f"Calcium {f.calcium:.2f} mg/dL, albumin {f.albumin:.2f} g/dL.",
            f"Corrected Ca = {f.calcium:.2f} + 0.8 x (4 - {f.albumin:.2f}) = {value:.2f} mg/dL.",
        ],
    )


def qtc_bazett(f: PatientFacts) -> QTcResult:
    rr_s = 60 / (f.hr or 60)
    value = (f.qt_ms or 0) / math.sqrt(rr_s)
    return QTcResult(
        value=value,
        rr_s=rr_s,
        steps=[
            f"RR interval = 60 / {f.hr:g} = {rr_s:.4f} s.",
            f"QTc = {f.qt_ms:g} / sqrt({rr_s:.4f}) = {value:.1f} ms.",
        ],
    )


def meld_na(f: PatientFacts) -> MeldNaResult:
    cr = 4.0 if f.has("dialysis_twice_last_week") else min(max(f.creatinine_mg_dl() or 1, 1.0), 4.0)
    bili, inr = max(f.bilirubin or 1, 1.0), max(f.inr or 1, 1.0)
    raw = 0.957 * math.log(cr) + 0.378 * math.log(bili) + 1.120 * math.log(inr) + 0.643
    meld_i = round(round(raw, 1) * 10)  # tenths x 10 as an integer (no 11.000000000000002)
    na = min(max(f.sodium or 137, 125.0), 137.0)
    score = meld_i + 1.32 * (137 - na) - 0.033 * meld_i * (137 - na) if meld_i > 11 else meld_i
    value = float(min(_half_up(score), 40))
    return MeldNaResult(
        value=value,
        creatinine=cr,
        bilirubin=bili,
        inr=inr,
        sodium=na,
        meld_raw=raw,
        meld_i=meld_i,
        meld_na_unrounded=score,
        steps=[
            f"Bounds: creatinine {cr:.2f} (1.0-4.0, 4.0 if dialysed), bilirubin {bili:.2f}, "
            f"INR {inr:.2f} (floor 1.0), sodium {na:g} (125-137).",
            f"MELD(i) = 0.957 ln(Cr) + 0.378 ln(bili) + 1.120 ln(INR) + 0.643 = {raw:.4f} -> "
            f"rounded to tenths x 10 = {meld_i:.0f}.",
            (
                f"MELD(i) > 11: MELD-Na = MELD(i) + 1.32 (137 - Na) - 0.033 MELD(i) (137 - Na)"
                f" = {score:.2f} -> {value:.0f} (cap 40)."
                if meld_i > 11
                else f"MELD(i) <= 11: no sodium adjustment; MELD-Na = {value:.0f}."
            ),
        ],
    )


def _half_up(x: float) -> int:
    """Round half away from zero (UNOS rounds 26.5 to 27; Python's round gives 26)."""
    return int(Decimal(repr(x)).quantize(Decimal(1), rounding=ROUND_HALF_UP))


class Calculator(BaseModel):
    """A calculator's registry entry."""

    key: str
    title: str
    fn: Callable[[PatientFacts], CalcResult]
    integer: bool
    unit: str
    needs: tuple[str, ...]

    def rounded(self, value: float) -> float:
        """The value as the truth stores it: integers for integer scores, else 4 places."""
        return round(value) if self.integer else round(value, 4)

    def compute(self, f: PatientFacts) -> CalcResult:
        """Run the calculator; a missing required input names the field and the calculator."""
        for name in self.needs:
            if _value(f, name) is None:
                alt = {"creatinine": " (or creatinine_umol)", "bun": " (or urea_mmol)"}
                raise PonderError(
                    f"facts.{name}",
                    f"{self.title} ({self.key}) needs {name}{alt.get(name, '')}, which is missing",
                    f"state {name} in the note or the facts",
                )
        return self.fn(f)


def _value(f: PatientFacts, name: str) -> float | None:
    if name == "creatinine":
        return f.creatinine_mg_dl()
    if name == "bun":
        return f.bun_mg_dl()
    return getattr(f, name)


def _calc(
    key: str, title: str, fn: Callable, integer: bool, unit: str, needs: tuple[str, ...]
) -> Calculator:
    return Calculator(key=key, title=title, fn=fn, integer=integer, unit=unit, needs=needs)


CALCULATORS: dict[str, Calculator] = {
    c.key: c
    for c in [
        _calc("cha2ds2_vasc", "CHA2DS2-VASc score", cha2ds2_vasc, True, "points", ()),
        _calc("has_bled", "HAS-BLED score", has_bled, True, "points", ("sbp", "creatinine")),
        _calc("curb_65", "CURB-65 score", curb_65, True, "points", ("bun", "rr", "sbp", "dbp")),
        _calc("wells_pe", "Wells score for pulmonary embolism", wells_pe, False, "points", ("hr",)),
        _calc("wells_dvt", "Wells score for DVT", wells_dvt, True, "points", ()),
        _calc(
            "cockcroft_gault",
            "Cockcroft-Gault creatinine clearance",
            cockcroft_gault,
            False,
            "mL/min",
            ("weight_kg", "height_cm", "creatinine"),
        ),
        _calc("bmi", "body mass index", bmi, False, "kg/m^2", ("weight_kg", "height_cm")),
        _calc(
            "anion_gap",
            "anion gap",
            anion_gap,
            False,
            "mmol/L",
            ("sodium", "chloride", "bicarbonate"),
        ),
        _calc(
            "corrected_calcium",
            "albumin-corrected calcium",
            corrected_calcium,
            False,
            "mg/dL",
            ("calcium", "albumin"),
        ),
        _calc("qtc_bazett", "QTc by Bazett", qtc_bazett, False, "ms", ("qt_ms", "hr")),
        _calc(
            "meld_na",
            "MELD-Na (UNOS 2016)",
            meld_na,
            True,
            "points",
            ("creatinine", "bilirubin", "inr", "sodium"),
        ),
    ]
}
