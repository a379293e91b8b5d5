"""Basel IRB formulas against the DESIGN.md worked example and hand-computed values."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from domains.errors import PonderError
from domains.finance_risk.credit import (
    CreditInputs,
    conditional_pd,
    correlation,
    irb,
    irb_inputs,
    maturity_b,
)


def test_worked_example_pd_1_5_lgd_40_m_3() -> None:
    # By hand: w = 1 - e^-0.75 = 0.527633; R = 0.12 w + 0.24 (1 - w) = 0.176684.
    # DESIGN.md quotes R = 0.1768 and conditional PD 16.87%; re-deriving gives 0.17668 and
    # N((G(0.015) + sqrt(R) G(0.999)) / sqrt(1 - R)) = N((-2.170090 + 1.298942) / 0.907370)
    # = N(-0.960083) = 0.16851, so the design's figures are off in the fourth digit.
    r = correlation("corporate", 0.015)
    assert r == pytest.approx(0.176684, abs=2e-6)
    assert r == pytest.approx(0.1768, abs=2e-4)
    assert conditional_pd(0.015, r) == pytest.approx(0.16851, abs=2e-5)
    # by hand: b = (0.11852 - 0.05478 ln 0.015)^2 = 0.348580^2 = 0.121508
    assert maturity_b(0.015) == pytest.approx(0.121508, abs=1e-5)
    x = CreditInputs(
        exposure_id="F1",
        obligor="X",
        asset_class="corporate",
        pd=0.015,
        lgd=0.40,
        ead=1_000_000,
        maturity=3,
    )
    answer = irb_inputs(x)
    # by hand: conditional PD 0.168507; maturity factor (1 + 0.5 b) / (1 - 1.5 b) =
    # 1.060754 / 0.817738 = 1.297180; K = (0.4 x 0.168507 - 0.015 x 0.4) x 1.297180
    # = 0.061403 x 1.297180 = 0.079650 (the old 0.079750 came from the design's 0.16870)
    assert answer.conditional_pd == pytest.approx(0.168507, rel=1e-5)
    assert answer.maturity_factor == pytest.approx(1.297180, rel=1e-5)
    assert pytest.approx(0.0796503, rel=1e-5) == answer.K
    assert pytest.approx(12.5 * answer.K * 1_000_000) == answer.RWA


def test_retail_classes_and_floors() -> None:
    assert correlation("residential_mortgage", 0.02) == 0.15
    assert correlation("qualifying_revolving", 0.02) == 0.04
    # other retail at PD -> 0 tends to 0.16, at PD -> 1 to 0.03
    assert correlation("other_retail", 1e-9) == pytest.approx(0.16, abs=1e-6)
    # SME with sales 5m: full 0.04 reduction
    assert correlation("sme_corporate", 0.015, 5.0) == pytest.approx(0.136684, abs=2e-6)
    tiny = CreditInputs(
        exposure_id="F",
        obligor="X",
        asset_class="corporate",
        pd=0.0001,
        lgd=0.45,
        ead=100.0,
        maturity=9,
    )
    floored = irb_inputs(tiny)
    assert floored.pd == 0.0003 and floored.maturity == 5.0
    mortgage = CreditInputs(
        exposure_id="F",
        obligor="X",
        asset_class="residential_mortgage",
        pd=0.01,
        lgd=0.2,
        ead=100.0,
        maturity=9,
    )
    answer = irb_inputs(mortgage)
    assert answer.maturity_factor == 1.0 and math.isfinite(answer.K)


def test_pure_call_needs_no_ids_and_exposes_conditional_pd() -> None:
    res = irb("corporate", 0.015, 0.40, 1_000_000, 3)
    assert res.conditional_pd == pytest.approx(0.16851, abs=2e-5)
    assert pytest.approx(0.015 * 0.4 * 1_000_000) == res.EL


def test_defaulted_exposure_para_272() -> None:
    # PD = 1: K = max(0, LGD - ELBE); with no separate best estimate ELBE = LGD, so K = 0,
    # RWA = 0 and EL = LGD x EAD = 0.45 x 200,000 = 90,000
    res = irb("corporate", 1.0, 0.45, 200_000, 2.5)
    assert res.defaulted and res.K == 0.0 and res.RWA == 0.0
    assert pytest.approx(90_000) == res.EL
    # an A-IRB best estimate of 0.40 leaves K = 0.05: RWA = 12.5 x 0.05 x 200,000 = 125,000
    res = irb("corporate", 1.0, 0.45, 200_000, 2.5, elbe=0.40)
    assert pytest.approx(0.05) == res.K and pytest.approx(125_000) == res.RWA


def test_maturity_clamp_both_sides() -> None:
    low, one = irb("corporate", 0.01, 0.45, 1.0, 0.3), irb("corporate", 0.01, 0.45, 1.0, 1.0)
    high, five = irb("corporate", 0.01, 0.45, 1.0, 9.0), irb("corporate", 0.01, 0.45, 1.0, 5.0)
    assert low.K == one.K and high.K == five.K and low.maturity == 1.0 and high.maturity == 5.0


def test_pd_floor() -> None:
    assert irb("corporate", 0.0001, 0.45, 1.0, 2.5).K == irb("corporate", 0.0003, 0.45, 1.0, 2.5).K


@pytest.mark.parametrize(
    ("sales", "reduction"),
    # 0.04 x (1 - (S - 5) / 45) with S clamped to [5, 50]
    [(4.9, 0.04), (5.0, 0.04), (50.0, 0.0), (51.0, 0.0)],
)
def test_sme_sales_bounds(sales: float, reduction: float) -> None:
    corp = correlation("corporate", 0.015)
    assert correlation("sme_corporate", 0.015, sales) == pytest.approx(corp - reduction)


def test_sme_without_sales_is_an_error_unless_corporate_is_asked() -> None:
    with pytest.raises(PonderError, match="sales_m"):
        irb("sme_corporate", 0.015, 0.4, 1.0, 2.5)
    plain = irb("sme_corporate", 0.015, 0.4, 1.0, 2.5, corporate_formula=True)
    assert pytest.approx(correlation("corporate", 0.015)) == plain.R
    with pytest.raises(ValidationError, match="sales_m"):
        CreditInputs(
            exposure_id="F",
            obligor="X",
            asset_class="sme_corporate",
            pd=0.01,
            lgd=0.4,
            ead=1.0,
            maturity=2.5,
        )
