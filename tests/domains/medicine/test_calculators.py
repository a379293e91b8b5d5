"""Each calculator against literal values worked out by hand (in the comments)."""

from __future__ import annotations

import pytest

from domains.medicine.calculators import (
    PatientFacts,
    anion_gap,
    bmi,
    cha2ds2_vasc,
    cockcroft_gault,
    corrected_calcium,
    curb_65,
    has_bled,
    meld_na,
    qtc_bazett,
    wells_dvt,
    wells_pe,
)


def f(**kw) -> PatientFacts:
    return PatientFacts(**{"age": 50, "sex": "M", **kw})


def test_cha2ds2_vasc() -> None:
    # 72 F with HTN and DM: age 65-74 (1) + female (1) + HTN (1) + DM (1) = 4
    value, crit, _ = cha2ds2_vasc(f(age=72, sex="F", conditions=["hypertension", "diabetes"]))
    assert value == 4 and set(crit) == {"age_65_to_74", "female", "hypertension", "diabetes"}
    # 80 M with prior stroke: age>=75 (2) + stroke (2) = 4; age 65-74 does not also count
    assert cha2ds2_vasc(f(age=80, conditions=["stroke_tia"]))[0] == 4


def test_has_bled() -> None:
    # 70 y, SBP 170, aspirin, 10 drinks/wk: H 1 + E 1 + D(drug) 1 + D(alcohol) 1 = 4
    value, _, _ = has_bled(
        f(age=70, sbp=170, alcohol_per_week=10, conditions=["antiplatelet_nsaid"])
    )
    assert value == 4
    # SBP exactly 160 is not > 160; age 65 is not > 65; creatinine 2.26 mg/dL is renal
    assert has_bled(f(age=65, sbp=160, creatinine=2.26))[0] == 1


def test_curb_65() -> None:
    # confused, BUN 25, RR 32, BP 85/55, age 70: all five
    assert curb_65(f(age=70, bun=25, rr=32, sbp=85, dbp=55, conditions=["confusion"]))[0] == 5
    # BUN exactly 19 is not > 19; RR 30 counts; DBP 60 counts (<= 60)
    assert curb_65(f(age=40, bun=19, rr=30, sbp=120, dbp=60))[0] == 2


def test_wells_pe_and_dvt() -> None:
    # HR 110 (1.5) + prior VTE (1.5) + haemoptysis (1) = 4.0
    assert wells_pe(f(hr=110, conditions=["prior_vte", "hemoptysis"]))[0] == 4.0
    assert wells_pe(f(hr=100))[0] == 0  # 100 is not > 100
    # cancer (1) + calf swelling (1) - alternative diagnosis (2) = 0
    assert (
        wells_dvt(
            f(conditions=["malignancy", "calf_swelling_3cm", "alternative_diagnosis_likely"])
        )[0]
        == 0
    )


def test_cockcroft_gault_weight_rule() -> None:
    # 60 M, 80 kg, 180 cm, Cr 1.2: BMI 24.69 (normal) -> min(IBW, actual);
    # IBW = 50 + 2.3 x (70.866 - 60) = 74.99 kg; CrCl = 80 x 74.99 / (72 x 1.2) = 69.44
    assert cockcroft_gault(f(age=60, weight_kg=80, height_cm=180, creatinine=1.2))[
        0
    ] == pytest.approx(69.44, abs=0.05)
    # 70 F, 100 kg, 160 cm, Cr 1.0: BMI 39.1 -> adjusted; IBW = 45.5 + 2.3 x 2.992 = 52.38;
    # AdjBW = 52.38 + 0.4 x 47.62 = 71.43; CrCl = 70 x 71.43 x 0.85 / 72 = 59.03
    assert cockcroft_gault(f(age=70, sex="F", weight_kg=100, height_cm=160, creatinine=1.0))[
        0
    ] == pytest.approx(59.03, abs=0.05)
    # underweight: 30 M 50 kg 180 cm (BMI 15.4) uses actual: 110 x 50 / 72 = 76.39
    assert cockcroft_gault(f(age=30, weight_kg=50, height_cm=180, creatinine=1.0))[
        0
    ] == pytest.approx(76.39, abs=0.05)


def test_formulas() -> None:
    assert bmi(f(weight_kg=80, height_cm=175))[0] == pytest.approx(26.12, abs=0.01)
    assert anion_gap(f(sodium=140, chloride=104, bicarbonate=24))[0] == 12
    assert corrected_calcium(f(calcium=8.0, albumin=2.5))[0] == pytest.approx(9.2)
    # QT 400 ms at HR 90: RR 0.6667 s, sqrt 0.8165 -> 489.9 ms
    assert qtc_bazett(f(qt_ms=400, hr=90))[0] == pytest.approx(489.9, abs=0.1)


def test_meld_na() -> None:
    # Cr 1.9, bili 3.1, INR 1.6, Na 130: MELD(i) = 2.2113 -> 2.2 -> 22;
    # 22 + 1.32 x 7 - 0.033 x 22 x 7 = 26.158 -> 26
    assert meld_na(f(creatinine=1.9, bilirubin=3.1, inr=1.6, sodium=130))[0] == 26
    # low values floor at 1.0: MELD(i) = 0.643 -> 0.6 -> 6, no Na adjustment (<= 11)
    assert meld_na(f(creatinine=0.5, bilirubin=0.3, inr=0.9, sodium=120))[0] == 6
    # dialysis sets Cr to 4.0 and the result caps at 40
    assert (
        meld_na(
            f(
                creatinine=1.0,
                bilirubin=40,
                inr=9,
                sodium=120,
                conditions=["dialysis_twice_last_week"],
            )
        )[0]
        == 40
    )
