"""Clinical calculators, each from its original definition, over canonical units.

Every calculator is a pure function: it takes ``PatientFacts`` (canonical units: kg, cm,
mg/dL, mmol/L for electrolytes, ms, bpm, mmHg, or the unit the note states where a rule is
defined on it) and returns a typed ``CalcResult`` (value, criteria met, every named
intermediate); ``domains.medicine.solutions`` writes the worked reference from them. Findings
that are not recorded count as absent. Sources: Lip 2010 (CHA2DS2-VASc), Pisters 2010
(HAS-BLED), Lim 2003 (CURB-65), Wells 2000 (PE) and 2003 (DVT), Cockcroft & Gault 1976
with the MedCalc BMI weight rule, Bazett 1920, UNOS/OPTN MELD-Na policy (2016).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, Field, field_validator, model_validator

from domains.errors import PonderError
from domains.schema import MAX_ITEMS, Record

Sex = Literal["M", "F"]
DISTRACTORS = ("asthma", "hypothyroidism", "gerd", "osteoarthritis", "migraine", "depression")


class PatientFacts(Record):
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
        default_factory=list,
        max_length=MAX_ITEMS,
        description="Findings present (closed vocabulary: CONDITIONS).",
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


class PointsResult(CalcResult):
    points: dict[str, float] = Field(description="Points of each criterion met.")
    checked: list[Criterion] = Field(description="Every criterion, met or not, in order.")


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


class Check(NamedTuple):
    """A threshold test on one fact, as the reference solution writes it out."""

    field: str
    op: Literal[">", ">=", "<", "<=", "=="]
    limit: float | str

    def holds(self, f: PatientFacts) -> bool:
        value = getattr(f, self.field)
        return value is not None and _OPS[self.op](value, self.limit)


_OPS: dict[str, Callable[[Any, Any], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
}


class Criterion(BaseModel):
    """One scoring item: what it reads (findings by name, or threshold checks), how the
    reads combine, its points, and whether it is met for these facts."""

    name: str = Field(description="Criterion name as the answer lists it.")
    points: float = Field(description="Points when met.")
    reads: tuple[str | Check, ...] = Field(description="Findings or checks it depends on.")
    how: Literal["any", "all"] = Field(default="any", description="How the reads combine.")
    met: bool = Field(default=False, description="Whether it scores for these facts.")


def _item(name: str, points: float, *reads: str | Check, how: str = "any") -> Criterion:
    return Criterion(name=name, points=points, reads=reads, how=how)


def _points(f: PatientFacts, items: list[Criterion]) -> PointsResult:
    for c in items:
        hits = [f.has(r) if isinstance(r, str) else r.holds(f) for r in c.reads]
        c.met = all(hits) if c.how == "all" else any(hits)
    met = [c for c in items if c.met]
    total = sum(c.points for c in met)
    return PointsResult(
        value=total,
        criteria=[c.name for c in met],
        points={c.name: c.points for c in met},
        checked=items,
    )


def cha2ds2_vasc(f: PatientFacts) -> PointsResult:
    return _points(
        f,
        [
            _item("chf", 1, "chf"),
            _item("hypertension", 1, "hypertension"),
            _item("age_75_or_older", 2, Check("age", ">=", 75)),
            _item("diabetes", 1, "diabetes"),
            _item("stroke_tia_thromboembolism", 2, "stroke", "tia", "thromboembolism"),
            _item("vascular_disease", 1, "vascular_disease"),
            _item("age_65_to_74", 1, Check("age", ">=", 65), Check("age", "<=", 74), how="all"),
            _item("female", 1, Check("sex", "==", "F")),
        ],
    )


def renal_check(f: PatientFacts) -> Check:
    """Pisters 2010: serum creatinine >= 200 umol/L; stated in mg/dL, MDCalc's > 2.26 mg/dL
    (200 umol/L = 2.262 mg/dL). The rule follows the unit the note states."""
    if f.creatinine_umol is not None:
        return Check("creatinine_umol", ">=", 200)
    return Check("creatinine", ">", 2.26)


def renal_creatinine(f: PatientFacts) -> bool:
    return renal_check(f).holds(f)


def has_bled(f: PatientFacts) -> PointsResult:
    return _points(
        f,
        [
            _item("uncontrolled_hypertension_sbp_over_160", 1, Check("sbp", ">", 160)),
            _item("abnormal_renal_function", 1, "dialysis_or_transplant", renal_check(f)),
            _item("abnormal_liver_function", 1, "cirrhosis"),
            _item("stroke", 1, "stroke"),  # a previous stroke only: TIA does not score
            _item("bleeding", 1, "bleeding_history"),
            _item("labile_inr", 1, "labile_inr"),
            _item("elderly_over_65", 1, Check("age", ">", 65)),
            _item("drugs_antiplatelet_nsaid", 1, "antiplatelet_nsaid"),
            _item("alcohol_8_or_more_per_week", 1, Check("alcohol_per_week", ">=", 8)),
        ],
    )


def urea_check(f: PatientFacts) -> Check:
    """Lim 2003: urea > 7 mmol/L; the US form is BUN > 19 mg/dL. The rule follows the unit
    the note states, on the value as written (no unit round trip)."""
    if f.urea_mmol is not None:
        return Check("urea_mmol", ">", 7)
    return Check("bun", ">", 19)


def urea_high(f: PatientFacts) -> bool:
    return urea_check(f).holds(f)


def curb_65(f: PatientFacts) -> PointsResult:
    return _points(
        f,
        [
            _item("confusion", 1, "confusion"),
            _item("urea_over_7_or_bun_over_19", 1, urea_check(f)),
            _item("rr_30_or_more", 1, Check("rr", ">=", 30)),
            _item("low_blood_pressure", 1, Check("sbp", "<", 90), Check("dbp", "<=", 60)),
            _item("age_65_or_older", 1, Check("age", ">=", 65)),
        ],
    )


def wells_pe(f: PatientFacts) -> PointsResult:
    return _points(
        f,
        [
            _item("clinical_signs_of_dvt", 3, "dvt_signs"),
            _item("pe_most_likely_diagnosis", 3, "pe_most_likely"),
            _item("heart_rate_over_100", 1.5, Check("hr", ">", 100)),
            _item("immobilization_or_recent_surgery", 1.5, "immobilization_surgery"),
            _item("previous_dvt_or_pe", 1.5, "prior_vte"),
            _item("hemoptysis", 1, "hemoptysis"),
            _item("malignancy", 1, "malignancy"),
        ],
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
    items = [_item(n, 1, n) for n in WELLS_DVT_CRITERIA]
    items.append(_item("alternative_diagnosis_likely", -2, "alternative_diagnosis_likely"))
    return _points(f, items)


def ideal_body_weight(f: PatientFacts) -> float:
    inches = (f.height_cm or 0) / 2.54
    return (50.0 if f.sex == "M" else 45.5) + 2.3 * (inches - 60)


def bmi(f: PatientFacts) -> BMIResult:
    h = (f.height_cm or 0) / 100
    value = (f.weight_kg or 0) / (h * h)
    return BMIResult(
        value=value,
        height_m=h,
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
    )


def anion_gap(f: PatientFacts) -> CalcResult:
    value = (f.sodium or 0) - ((f.chloride or 0) + (f.bicarbonate or 0))
    return CalcResult(
        value=value,
    )


def corrected_calcium(f: PatientFacts) -> CalcResult:
    value = (f.calcium or 0) + 0.8 * (4 - (f.albumin or 0))
    return CalcResult(
        value=value,
    )


def qtc_bazett(f: PatientFacts) -> QTcResult:
    rr_s = 60 / (f.hr or 60)
    value = (f.qt_ms or 0) / math.sqrt(rr_s)
    return QTcResult(
        value=value,
        rr_s=rr_s,
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
    key: str, title: str, fn: Callable, integer: bool, *, unit: str, needs: tuple[str, ...]
) -> Calculator:
    return Calculator(key=key, title=title, fn=fn, integer=integer, unit=unit, needs=needs)


CALCULATORS: dict[str, Calculator] = {
    c.key: c
    for c in [
        _calc("cha2ds2_vasc", "CHA2DS2-VASc score", cha2ds2_vasc, True, unit="points", needs=()),
        _calc(
            "has_bled", "HAS-BLED score", has_bled, True, unit="points", needs=("sbp", "creatinine")
        ),
        _calc(
            "curb_65",
            "CURB-65 score",
            curb_65,
            True,
            unit="points",
            needs=("bun", "rr", "sbp", "dbp"),
        ),
        _calc(
            "wells_pe",
            "Wells score for pulmonary embolism",
            wells_pe,
            False,
            unit="points",
            needs=("hr",),
        ),
        _calc("wells_dvt", "Wells score for DVT", wells_dvt, True, unit="points", needs=()),
        _calc(
            "cockcroft_gault",
            "Cockcroft-Gault creatinine clearance",
            cockcroft_gault,
            False,
            unit="mL/min",
            needs=("weight_kg", "height_cm", "creatinine"),
        ),
        _calc(
            "bmi", "body mass index", bmi, False, unit="kg/m^2", needs=("weight_kg", "height_cm")
        ),
        _calc(
            "anion_gap",
            "anion gap",
            anion_gap,
            False,
            unit="mmol/L",
            needs=("sodium", "chloride", "bicarbonate"),
        ),
        _calc(
            "corrected_calcium",
            "albumin-corrected calcium",
            corrected_calcium,
            False,
            unit="mg/dL",
            needs=("calcium", "albumin"),
        ),
        _calc("qtc_bazett", "QTc by Bazett", qtc_bazett, False, unit="ms", needs=("qt_ms", "hr")),
        _calc(
            "meld_na",
            "MELD-Na (UNOS 2016)",
            meld_na,
            True,
            unit="points",
            needs=("creatinine", "bilirubin", "inr", "sodium"),
        ),
    ]
}
