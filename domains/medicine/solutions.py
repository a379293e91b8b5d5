"""Reference solutions for clinical cases that show the work, one item per line.

Each value is read from the note with the unit the note uses. Each unit conversion and each
intermediate is computed through the calculator (``<<expr>> = result``). Each criterion is
checked against its threshold, with the value, whether it scores and why, including "not
mentioned, so absent" and denials. A small model learns what the references show. These
lines are also the steps the process reward model scores and a reviewer labels.
"""

from __future__ import annotations

from collections.abc import Callable

from domains.calc import Work, annotate
from domains.medicine.calculators import (
    CALCULATORS,
    NEAR_MISSES,
    Check,
    Criterion,
    PatientFacts,
    PointsResult,
)
from domains.medicine.notes import PHRASES, Stated, stated


def solution(calc: str, f: PatientFacts, units: dict, note: str) -> list[str]:
    """The reference steps for one clinical case."""
    spec = CALCULATORS[calc]
    values = stated(f, units)
    read = [f"age {f.age} years", f"sex {f.sex}"] + [str(values[k]) for k in _reads(calc)]
    steps = [f"Calculator: {spec.title} ({spec.unit}). Read from the note:\n- " + "\n- ".join(read)]
    if calc in FORMULAS:
        return steps + FORMULAS[calc](f, values)
    return steps + _score_steps(calc, f, note, values)


def _reads(calc: str) -> list[str]:
    """The stated values a calculator uses besides age and sex: the inputs it needs."""
    return list(CALCULATORS[calc].needs)


# -- criteria scores ------------------------------------------------------------------------


def _score_steps(calc: str, f: PatientFacts, note: str, values: dict[str, Stated]) -> list[str]:
    result = CALCULATORS[calc].compute(f)
    assert isinstance(result, PointsResult)
    lines = [_criterion_line(c, f, note, values) for c in result.checked]
    lines += [
        f"- {name}: '{PHRASES[name]}' is in the note, but {CALCULATORS[calc].title} does not "
        "score it"
        for name in NEAR_MISSES.get(calc, ())
        if f.has(name)
    ]
    chunks = [lines[i : i + 4] for i in range(0, len(lines), 4)]
    steps = [
        f"Check each criterion ({k + 1}/{len(chunks)}):\n" + "\n".join(chunk)
        for k, chunk in enumerate(chunks)
    ]
    return steps + [_total(result)]


def _criterion_line(c: Criterion, f: PatientFacts, note: str, values: dict[str, Stated]) -> str:
    parts = [_read_text(r, f, note, values) for r in c.reads]
    joined = (" and " if c.how == "all" else "; ").join(parts)
    verdict = f"met, {c.points:+g}" if c.met else "not met, 0"
    return f"- {c.name} ({c.points:+g}): {joined} -> {verdict}"


def _read_text(read: str | Check, f: PatientFacts, note: str, values: dict[str, Stated]) -> str:
    if isinstance(read, str):
        if f.has(read):
            return f"'{PHRASES[read]}' is in the note"
        denied = any(PHRASES[read] in s for s in note.split(". ") if s.startswith("Denies"))
        return f"{read.replace('_', ' ')} {'denied' if denied else 'not mentioned'}, so absent"
    value = _value_text(read.field, f, values)
    ok = read.holds(f)
    limit = read.limit if isinstance(read.limit, str) else f"{read.limit:g}"
    return f"{value} {read.op} {limit}? {'yes' if ok else 'no'}"


def _value_text(field: str, f: PatientFacts, values: dict[str, Stated]) -> str:
    if field == "age":
        return f"age {f.age}"
    if field == "sex":
        return f"sex {f.sex}"
    if field == "alcohol_per_week":
        return f"alcohol {f.alcohol_per_week} drinks/week"
    key = {"creatinine_umol": "creatinine", "urea_mmol": "bun"}.get(field, field)
    return str(values[key])


def _total(result: PointsResult) -> str:
    met = [c for c in result.checked if c.met]
    if not met:
        return "Total: no criterion met, so 0 points."
    if len(met) == 1:
        return f"Total: one criterion met, {met[0].points:g} points."
    expr = " + ".join(f"{c.points:g}" for c in met).replace("+ -", "- ")
    return f"Total: {annotate(expr)} points."


# -- formulas --------------------------------------------------------------------------------


def _unit(w: Work, v: Stated, target: str) -> str:
    """One unit line, the same call whether or not the unit changes: "<<calcium 2.7 mmol/L
    to mg/dL>> = 10.8216 mg/dL" or "<<calcium 10.8 mg/dL to mg/dL>> = 10.8 mg/dL". The model
    copies the read step's value and writes the target, which depends only on the input;
    with a branch ("calcium is in mg/dL, no conversion" or "convert to mg/dL: <<x * 4.008>>")
    it converted values already in the target unit: every wrong corrected-calcium and BMI
    answer of round 1 in a bench-loop run (formulas-hard)."""
    return w.convert(str(v), target)


def _layout(units: Work, compute: Work) -> list[str]:
    """The two steps every formula calculator starts with: "Units:" (one line per input,
    its unit restated, in the order the read step lists the inputs) and then "Compute:".
    One layout for all: with three layouts across the four demo formulas, GRPO round 1
    moved anion gap to BMI's and added a wrong third step to every answer (bench-loop,
    formulas-hard: 87.5% -> 25%)."""
    return ["Units:\n" + "\n".join(units.lines), "Compute:\n" + "\n".join(compute.lines)]


def _bmi(f: PatientFacts, values: dict[str, Stated]) -> list[str]:
    w = Work()
    kg = _unit(w, values["weight_kg"], "kg")
    metres = _unit(w, values["height_cm"], "m")
    c = Work()
    c.calc("BMI = weight / height^2", f"{kg} / {metres} ** 2", "kg/m^2")
    return _layout(w, c)


def _cockcroft_gault(f: PatientFacts, values: dict[str, Stated]) -> list[str]:
    units = Work()  # in the order the read step lists them: weight, height, creatinine
    kg = _unit(units, values["weight_kg"], "kg")
    metres = _unit(units, values["height_cm"], "m")
    inches = _unit(units, values["height_cm"], "in")
    scr = _unit(units, values["creatinine"], "mg/dL")
    w = Work()
    bmi = float(w.calc("BMI", f"{kg} / {metres} ** 2", "kg/m^2"))
    base = "50" if f.sex == "M" else "45.5"
    ibw = w.calc(
        f"ideal body weight ({'male' if f.sex == 'M' else 'female'})",
        f"{base} + 2.3 * ({inches} - 60)",
        "kg",
    )
    weights = Work()
    if bmi < 18.5:
        weights.say(f"BMI {bmi:g} < 18.5: use the actual weight, {kg} kg")
        used = kg
    elif bmi < 25:
        weights.say(f"BMI {bmi:g} is 18.5-24.9: use the lower of ideal and actual weight")
        used = weights.calc("weight used", f"min({ibw}, {kg})", "kg")
    else:
        weights.say(f"BMI {bmi:g} >= 25: use the adjusted weight IBW + 0.4 x (actual - IBW)")
        used = weights.calc("weight used", f"{ibw} + 0.4 * ({kg} - {ibw})", "kg")
    sex = " * 0.85" if f.sex == "F" else ""
    weights.calc(
        f"CrCl = (140 - age) x weight{' x 0.85 (female)' if sex else ''} / (72 x creatinine)",
        f"(140 - {f.age}) * {used}{sex} / (72 * {scr})",
        "mL/min",
    )
    return _layout(units, w) + ["Weight rule and clearance:\n" + "\n".join(weights.lines)]


def _anion_gap(f: PatientFacts, values: dict[str, Stated]) -> list[str]:
    na, cl, hco3 = (values[k].number for k in ("sodium", "chloride", "bicarbonate"))
    units = Work()  # in the order the read step lists them: Na, Cl, HCO3
    for key in ("sodium", "chloride", "bicarbonate"):
        _unit(units, values[key], "mmol/L")
    # the calls take the values in that same order, Na - Cl, then - HCO3: with
    # <<Cl + HCO3>> first, the demo's SFT model wrote HCO3 twice (<<20 + 20>>, 8 of 11 wrong)
    # and with one call, <<Na - (Cl + HCO3)>>, it put Cl's value in Na's slot
    w = Work()
    first = w.calc("Na - Cl", f"{na} - {cl}", "mmol/L")
    w.calc("anion gap = Na - Cl - HCO3", f"{first} - {hco3}", "mmol/L")
    return _layout(units, w)


def _corrected_calcium(f: PatientFacts, values: dict[str, Stated]) -> list[str]:
    units = Work()
    ca_mg = _unit(units, values["calcium"], "mg/dL")
    alb_g = _unit(units, values["albumin"], "g/dL")
    w = Work()
    w.calc(
        "corrected calcium = Ca + 0.8 x (4 - albumin)", f"{ca_mg} + 0.8 * (4 - {alb_g})", "mg/dL"
    )
    return _layout(units, w)


def _qtc(f: PatientFacts, values: dict[str, Stated]) -> list[str]:
    units = Work()
    qt = _unit(units, values["qt_ms"], "ms")  # the read step's order
    hr = _unit(units, values["hr"], "bpm")
    w = Work()
    rr = w.calc("RR interval = 60 / HR", f"60 / {hr}", "s")
    w.calc("QTc = QT / sqrt(RR)", f"{qt} / sqrt({rr})", "ms")
    return _layout(units, w)


def _meld_na(f: PatientFacts, values: dict[str, Stated]) -> list[str]:
    w = Work()
    scr = _unit(w, values["creatinine"], "mg/dL")
    bili_mg = _unit(w, values["bilirubin"], "mg/dL")
    b = Work()
    if f.has("dialysis_twice_last_week"):
        b.say("dialysed twice in the past week: creatinine counts as 4.0")
        cr = "4"
    else:
        cr = b.calc("creatinine bounded to 1-4", f"min(max({scr}, 1), 4)")
    bl = b.calc("bilirubin floored at 1", f"max({bili_mg}, 1)")
    inr = b.calc("INR floored at 1", f"max({values['inr'].number}, 1)")
    na = b.calc("sodium bounded to 125-137", f"min(max({values['sodium'].number}, 125), 137)")
    m = Work()
    raw = m.calc("MELD(i) raw", f"0.957 * ln({cr}) + 0.378 * ln({bl}) + 1.120 * ln({inr}) + 0.643")
    meld_i = m.calc("MELD(i) = raw rounded to tenths x 10", f"round({raw}, 1) * 10")
    if float(meld_i) > 11:
        score = m.calc(
            "MELD(i) > 11, so MELD-Na = MELD(i) + 1.32 (137 - Na) - 0.033 MELD(i) (137 - Na)",
            f"{meld_i} + 1.32 * (137 - {na}) - 0.033 * {meld_i} * (137 - {na})",
        )
        whole = m.calc("rounded half up", f"floor({score} + 0.5)")
    else:
        m.say(f"MELD(i) {meld_i} <= 11: no sodium adjustment")
        whole = meld_i
    m.calc("capped at 40", f"min({whole}, 40)")
    return _layout(w, b) + ["Score:\n" + "\n".join(m.lines)]


FORMULAS: dict[str, Callable[[PatientFacts, dict[str, Stated]], list[str]]] = {
    "bmi": _bmi,
    "cockcroft_gault": _cockcroft_gault,
    "anion_gap": _anion_gap,
    "corrected_calcium": _corrected_calcium,
    "qtc_bazett": _qtc,
    "meld_na": _meld_na,
}
