"""Medicine vertical: clinical scores and formulas computed from free-text patient notes."""

from __future__ import annotations

import random
import re
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from domains.base import Domain, Family, Verdict, set_f1
from domains.medicine.calculators import CALCULATORS, PatientFacts
from domains.medicine.medcalc_bench import Origin
from domains.medicine.notes import draw_facts, render_note
from domains.medicine.solutions import solution
from domains.parsing import key_values, to_float, to_str_list
from domains.schema import Record

CalcName = Literal[tuple(CALCULATORS)]  # type: ignore[valid-type]
CONVERSIONS = (
    "Conversions: BUN mg/dL = urea mmol/L x 2.8; creatinine mg/dL = umol/L / 88.4; calcium "
    "mg/dL = mmol/L x 4.008; albumin g/dL = g/L / 10; bilirubin mg/dL = umol/L / 17.1; "
    "1 lb = 0.45359237 kg; 1 in = 2.54 cm. Findings not mentioned are absent."
)


class ClinicalInputs(Record):
    """A patient note and the calculator to apply; facts are the structured truth source."""

    calculator: CalcName = Field(description="Calculator key, e.g. cha2ds2_vasc.")
    note: str = Field(min_length=1, max_length=20_000, description="Free-text patient note.")
    facts: PatientFacts | None = Field(default=None, description="Structured facts, if known.")
    question: str | None = Field(
        default=None,
        max_length=4_000,
        description="The dataset's question, when the case came with one (MedCalc-Bench).",
        exclude_if=lambda v: v is None,
    )
    origin: Origin | None = Field(
        default=None,
        description="Where the case came from and the label cross-check (never shown).",
        exclude_if=lambda v: v is None,
    )


class ClinicalAnswer(Record):
    value: float = Field(description="Score or computed value.")
    criteria: list[str] = Field(default_factory=list, description="Criteria met (scores).")
    lower: float | None = Field(
        default=None,
        description="Lowest accepted value: a dataset's own tolerance (truth only).",
        exclude_if=lambda v: v is None,
    )
    upper: float | None = Field(
        default=None,
        description="Highest accepted value: a dataset's own tolerance (truth only).",
        exclude_if=lambda v: v is None,
    )

    @field_validator("value", mode="before")
    @classmethod
    def _value(cls, value: Any) -> float:
        return to_float(value)

    @field_validator("criteria", mode="before")
    @classmethod
    def _criteria(cls, value: Any) -> list[str]:
        return sorted({_norm(c) for c in to_str_list(value or [])})


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


class ClinicalCalc(Family):
    """Compute a named clinical calculator from a patient note."""

    name = "clinical_calc"
    Inputs = ClinicalInputs
    Answer = ClinicalAnswer
    instructions = (
        "Compute the requested clinical calculator from the patient note. "
        f"{CONVERSIONS} List the criteria that score points (empty for formulas)."
    )
    # Placeholders, not values: a model that copies the example must not score by luck.
    answer_example = '{"value": <number>, "criteria": ["<criterion>", ...]}'

    def sample(self, rng: random.Random, difficulty: int) -> tuple[dict, dict, list[str]]:
        calc = rng.choice(sorted(CALCULATORS))
        facts, units = draw_facts(rng, calc, difficulty)
        note = render_note(facts, calc, units, difficulty, rng)
        spec = CALCULATORS[calc]
        result = spec.compute(facts)
        truth = {"value": spec.rounded(result.value), "criteria": sorted(result.criteria)}
        inputs = {"calculator": calc, "note": note, "facts": facts.model_dump()}
        return inputs, truth, solution(calc, facts, units, note)

    def render(self, x: BaseModel) -> str:
        assert isinstance(x, ClinicalInputs)
        spec = CALCULATORS[x.calculator]
        asked = f"\nQuestion: {x.question}" if x.question else ""
        return f"Calculator: {spec.title} ({spec.unit})\nNote: {x.note}{asked}"

    def coerce(self, payload: dict[str, Any] | str) -> BaseModel:
        if isinstance(payload, str):
            kv = key_values(payload)
            payload = {"value": kv.get("value", kv.get("score", payload))}
        return ClinicalAnswer.model_validate(payload)

    def grade(self, inputs: BaseModel, truth: BaseModel, answer: BaseModel) -> Verdict:
        assert isinstance(inputs, ClinicalInputs) and isinstance(truth, ClinicalAnswer)
        assert isinstance(answer, ClinicalAnswer)
        spec = CALCULATORS[inputs.calculator]
        if spec.unit == "points":  # scores are exact, including Wells PE half points
            ok = abs(answer.value - truth.value) < 1e-9
        elif truth.lower is not None and truth.upper is not None:  # the dataset's tolerance
            ok = truth.lower - 1e-9 <= answer.value <= truth.upper + 1e-9
        else:
            ok = abs(answer.value - truth.value) <= 0.05 * abs(truth.value) + 1e-9
        crit = set_f1(set(truth.criteria), set(answer.criteria))
        rel = abs(answer.value - truth.value) / max(abs(truth.value), 1.0)
        value_credit = 1.0 if ok else 0.5 * max(0.0, 1.0 - rel)
        return Verdict(
            score=0.8 * value_credit + 0.2 * crit,
            correct=ok,
            detail=f"value {answer.value:g} vs {truth.value:g} "
            f"({'ok' if ok else 'wrong'}); criteria F1 {crit:.2f}",
        )


class Medicine(Domain):
    """Clinical calculators from patient notes."""

    name = "medicine"
    persona = "You are a careful clinician computing bedside scores from patient notes."
    families = {ClinicalCalc.name: ClinicalCalc()}
