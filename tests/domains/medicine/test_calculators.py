"""Each calculator against literal values worked out by hand (in the comments)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from domains.errors import PonderError
from domains.medicine.calculators import (
    CALCULATORS,
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
    r = cha2ds2_vasc(f(age=72, sex="F", conditions=["hypertension", "diabetes"]))
    value, crit = r.value, r.criteria
    assert value == 4 and set(crit) == {"age_65_to_74", "female", "hypertension", "diabetes"}
    # 80 M with prior stroke: age>=75 (2) + stroke (2) = 4; age 65-74 does not also count
    assert cha2ds2_vasc(f(age=80, conditions=["stroke"])).value == 4
    # Lip 2010: stroke, TIA and thromboembolism each give the S2 item (2 points)
    for finding in ("stroke", "tia", "thromboembolism"):
        assert cha2ds2_vasc(f(age=50, conditions=[finding])).value == 2


@pytest.mark.parametrize(("age", "points"), [(64, 0), (65, 1), (74, 1), (75, 2)])
def test_cha2ds2_vasc_age_bands(age: int, points: int) -> None:
    assert cha2ds2_vasc(f(age=age)).value == points


def test_has_bled_scores_stroke_not_tia() -> None:
    # Pisters 2010: "S" is a previous stroke; a TIA or systemic embolism does not score
    assert has_bled(f(sbp=120, creatinine=1.0, conditions=["stroke"])).value == 1
    assert has_bled(f(sbp=120, creatinine=1.0, conditions=["tia", "thromboembolism"])).value == 0


@pytest.mark.parametrize(
    ("stated", "renal"),
    [
        ({"creatinine": 2.26}, False),  # 2.26 mg/dL = 199.8 umol/L < 200
        ({"creatinine": 2.27}, True),
        ({"creatinine_umol": 199.0}, False),
        ({"creatinine_umol": 200.0}, True),  # >= 200 umol/L
    ],
)
def test_has_bled_renal_threshold(stated: dict, renal: bool) -> None:
    assert has_bled(f(age=40, sbp=120, **stated)).value == int(renal)


@pytest.mark.parametrize(
    ("stated", "met"),
    [
        ({"bun": 19.0}, False),  # BUN > 19 mg/dL
        ({"bun": 19.1}, True),
        ({"urea_mmol": 7.0}, False),  # urea > 7 mmol/L, on the value as written
        ({"urea_mmol": 7.1}, True),
        ({"urea_mmol": 6.8}, False),  # BUN 19 rendered as urea 6.8: 6.8 x 2.8 = 19.04
    ],
)
def test_curb_65_urea_follows_the_stated_unit(stated: dict, met: bool) -> None:
    r = curb_65(f(age=40, rr=20, sbp=120, dbp=80, **stated))
    value, crit = r.value, r.criteria
    assert value == int(met) and ("urea_over_7_or_bun_over_19" in crit) == met


@pytest.mark.parametrize(
    ("vitals", "points"),
    [
        ({"rr": 29, "sbp": 90, "dbp": 61}, 0),
        ({"rr": 30, "sbp": 90, "dbp": 61}, 1),
        ({"rr": 20, "sbp": 89, "dbp": 61}, 1),
        ({"rr": 20, "sbp": 120, "dbp": 60}, 1),
    ],
)
def test_curb_65_rr_and_bp(vitals: dict, points: int) -> None:
    assert curb_65(f(age=40, bun=10, **vitals)).value == points


@pytest.mark.parametrize(("age", "points"), [(64, 0), (65, 1)])
def test_curb_65_age(age: int, points: int) -> None:
    assert curb_65(f(age=age, bun=10, rr=20, sbp=120, dbp=80)).value == points


def test_unknown_finding_is_a_validation_error() -> None:
    with pytest.raises(ValidationError, match="unknown finding.*stroke_tia.*valid findings"):
        f(conditions=["stroke_tia"])


def test_missing_required_input_names_field_and_calculator() -> None:
    with pytest.raises(PonderError, match="facts.creatinine.*cockcroft_gault"):
        CALCULATORS["cockcroft_gault"].compute(f(weight_kg=70, height_cm=170))
    with pytest.raises(ValidationError, match="not both"):
        f(bun=20, urea_mmol=7.1)


def test_has_bled() -> None:
    # 70 y, SBP 170, aspirin, 10 drinks/wk: H 1 + E 1 + D(drug) 1 + D(alcohol) 1 = 4
    value = has_bled(
        f(age=70, sbp=170, alcohol_per_week=10, conditions=["antiplatelet_nsaid"])
    ).value
    assert value == 4
    # SBP exactly 160 is not > 160; age 65 is not > 65; creatinine 2.26 mg/dL is not renal
    assert has_bled(f(age=65, sbp=160, creatinine=2.26)).value == 0
    assert has_bled(f(age=66, sbp=161, creatinine=1.0)).value == 2


def test_curb_65() -> None:
    # confused, BUN 25, RR 32, BP 85/55, age 70: all five
    assert curb_65(f(age=70, bun=25, rr=32, sbp=85, dbp=55, conditions=["confusion"])).value == 5
    # BUN exactly 19 is not > 19; RR 30 counts; DBP 60 counts (<= 60)
    assert curb_65(f(age=40, bun=19, rr=30, sbp=120, dbp=60)).value == 2


def test_wells_pe_and_dvt() -> None:
    # HR 110 (1.5) + prior VTE (1.5) + haemoptysis (1) = 4.0
    assert wells_pe(f(hr=110, conditions=["prior_vte", "hemoptysis"])).value == 4.0
    assert wells_pe(f(hr=100)).value == 0  # 100 is not > 100
    # cancer (1) + calf swelling (1) - alternative diagnosis (2) = 0
    assert (
        wells_dvt(
            f(conditions=["malignancy", "calf_swelling_3cm", "alternative_diagnosis_likely"])
        ).value
        == 0
    )


def test_cockcroft_gault_weight_rule() -> None:
    # 60 M, 80 kg, 180 cm, Cr 1.2: BMI 24.69 (normal) -> min(IBW, actual);
    # IBW = 50 + 2.3 x (70.866 - 60) = 74.99 kg; CrCl = 80 x 74.99 / (72 x 1.2) = 69.44
    assert cockcroft_gault(
        f(age=60, weight_kg=80, height_cm=180, creatinine=1.2)
    ).value == pytest.approx(69.44, abs=0.05)
    # 70 F, 100 kg, 160 cm, Cr 1.0: BMI 39.1 -> adjusted; IBW = 45.5 + 2.3 x 2.992 = 52.38;
    # AdjBW = 52.38 + 0.4 x 47.62 = 71.43; CrCl = 70 x 71.43 x 0.85 / 72 = 59.03
    assert cockcroft_gault(
        f(age=70, sex="F", weight_kg=100, height_cm=160, creatinine=1.0)
    ).value == pytest.approx(59.03, abs=0.05)
    # BMI bands at 200 cm (h^2 = 4): 73.96 kg -> 18.49 actual; 74 kg -> 18.5 min(IBW, actual);
    # 99.96 kg -> 24.99 min(IBW, actual); 100 kg -> 25 adjusted. IBW(200 cm M) = 50 + 2.3 x
    # (78.740 - 60) = 93.10 kg. Age 40, Cr 1: CrCl = 100 x W / 72.
    for kg, weight in ((73.96, 73.96), (74.0, 74.0), (99.96, 93.10), (100.0, 93.10 + 0.4 * 6.90)):
        got = cockcroft_gault(f(age=40, weight_kg=kg, height_cm=200, creatinine=1.0)).value
        assert got == pytest.approx(100 * weight / 72, abs=0.02), kg
    # underweight: 30 M 50 kg 180 cm (BMI 15.4) uses actual: 110 x 50 / 72 = 76.39
    assert cockcroft_gault(
        f(age=30, weight_kg=50, height_cm=180, creatinine=1.0)
    ).value == pytest.approx(76.39, abs=0.05)


def test_formulas() -> None:
    assert bmi(f(weight_kg=80, height_cm=175)).value == pytest.approx(26.12, abs=0.01)
    assert anion_gap(f(sodium=140, chloride=104, bicarbonate=24)).value == 12
    assert corrected_calcium(f(calcium=8.0, albumin=2.5)).value == pytest.approx(9.2)
    # QT 400 ms at HR 90: RR 0.6667 s, sqrt 0.8165 -> 489.9 ms
    assert qtc_bazett(f(qt_ms=400, hr=90)).value == pytest.approx(489.9, abs=0.1)


def test_meld_na() -> None:
    # Cr 1.9, bili 3.1, INR 1.6, Na 130: MELD(i) = 2.2113 -> 2.2 -> 22;
    # 22 + 1.32 x 7 - 0.033 x 22 x 7 = 26.158 -> 26
    assert meld_na(f(creatinine=1.9, bilirubin=3.1, inr=1.6, sodium=130)).value == 26
    # low values floor at 1.0: MELD(i) = 0.643 -> 0.6 -> 6, no Na adjustment (<= 11)
    assert meld_na(f(creatinine=0.5, bilirubin=0.3, inr=0.9, sodium=120)).value == 6
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
        ).value
        == 40
    )


def test_meld_na_bounds() -> None:
    # Na 120 is bounded to 125, Na 140 to 137 (no adjustment). Cr 1.9, bili 3.1, INR 1.6:
    # MELD(i) 22; Na 125: 22 + 1.32 x 12 - 0.033 x 22 x 12 = 29.128 -> 29
    base = {"creatinine": 1.9, "bilirubin": 3.1, "inr": 1.6}
    assert meld_na(f(sodium=120, **base)).value == meld_na(f(sodium=125, **base)).value == 29
    assert meld_na(f(sodium=140, **base)).value == 22
    # creatinine below 1 counts as 1: ln 1 = 0; bili 3.1, INR 1.6: 0.378 ln 3.1 + 1.120 ln 1.6
    # + 0.643 = 0.4277 + 0.5264 + 0.643 = 1.5971 -> 1.6 -> 16; Na 137: 16
    assert meld_na(f(creatinine=0.7, bilirubin=3.1, inr=1.6, sodium=137)).value == 16
    # MELD(i) exactly 11 takes no sodium adjustment (11 is not > 11): Cr 1, bili 1, INR e^x
    # with 1.120 ln INR = 0.457 -> INR 1.5036; 0.457 + 0.643 = 1.1 -> 11
    assert meld_na(f(creatinine=1.0, bilirubin=1.0, inr=1.5036, sodium=125)).value == 11


def test_results_carry_named_intermediates() -> None:
    # the BMI band and weight rule are visible to a caller, not just buried in the steps
    cg = cockcroft_gault(f(age=40, weight_kg=100.0, height_cm=200, creatinine=1.0))
    assert cg.bmi == pytest.approx(25.0) and cg.weight_rule.startswith("BMI >= 25")
    assert cg.ideal_body_weight == pytest.approx(93.10, abs=0.01)
    assert cg.weight_used == pytest.approx(93.10 + 0.4 * 6.90, abs=0.01)
    m = meld_na(f(creatinine=1.9, bilirubin=3.1, inr=1.6, sodium=120))
    assert (m.sodium, m.meld_i) == (125.0, 22) and m.meld_na_unrounded == pytest.approx(29.128)
    assert qtc_bazett(f(qt_ms=400, hr=90)).rr_s == pytest.approx(0.6667, abs=1e-4)
    hb = has_bled(f(age=70, sbp=170, creatinine=1.0))
    assert hb.points == {"uncontrolled_hypertension_sbp_over_160": 1, "elderly_over_65": 1}
