"""Basel II/III IRB capital for one exposure: correlation R, capital K and RWA.

Formulas from BCBS "International Convergence of Capital Measurement" (2006), paras 272
(corporate, with the SME firm-size adjustment of para 273) and 328-330 (retail:
residential mortgage, qualifying revolving, other retail). PD is floored at 0.03% (para
285) and maturity is clamped to [1, 5] years (para 320). Retail has no maturity adjustment.
"""

from __future__ import annotations

import math
import random
from statistics import NormalDist
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from domains.base import Family, Verdict
from domains.calc import Work
from domains.errors import PonderError
from domains.parsing import key_values, to_float
from domains.schema import Record

AssetClass = Literal[
    "corporate", "sme_corporate", "residential_mortgage", "qualifying_revolving", "other_retail"
]
PD_FLOOR = 0.0003
_N = NormalDist()
G999 = _N.inv_cdf(0.999)


class CreditInputs(Record):
    """One exposure as a credit officer records it."""

    exposure_id: str = Field(description="Facility reference.")
    obligor: str = Field(description="Borrower name.")
    asset_class: AssetClass = Field(description="IRB asset class.")
    pd: float = Field(gt=0.0, le=1.0, description="Probability of default, as a fraction.")
    lgd: float = Field(ge=0.0, le=1.0, description="Loss given default, as a fraction.")
    ead: float = Field(ge=0.0, description="Exposure at default, in currency units.")
    maturity: float = Field(gt=0.0, le=30.0, description="Effective maturity in years.")
    sales_m: float | None = Field(default=None, gt=0, description="Annual sales, EUR millions.")
    currency: str = Field(default="USD", description="Currency of EAD.")
    elbe: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Defaulted exposures only: the bank's best estimate of expected loss "
        "(fraction of EAD); absent means it equals LGD.",
    )

    @model_validator(mode="after")
    def _sme_needs_sales(self) -> CreditInputs:
        if self.asset_class == "sme_corporate" and self.sales_m is None:
            raise ValueError(
                "sales_m: an sme_corporate exposure needs annual sales (EUR m) for the "
                "firm-size adjustment; give sales_m, or use asset_class corporate"
            )
        return self


class CreditAnswer(Record):
    """IRB results."""

    R: float = Field(description="Asset correlation.")
    K: float = Field(description="Capital requirement per unit EAD.")
    RWA: float = Field(description="Risk-weighted assets.")

    @field_validator("R", "K", "RWA", mode="before")
    @classmethod
    def _number(cls, value: Any) -> float:
        return to_float(value, percent_as_fraction=True)


def correlation(asset_class: str, pd: float, sales_m: float | None = None) -> float:
    """Asset correlation R for an asset class (BCBS 2006 paras 272-273, 328-330)."""
    if asset_class == "residential_mortgage":
        return 0.15
    if asset_class == "qualifying_revolving":
        return 0.04
    if asset_class == "other_retail":
        w = (1 - math.exp(-35 * pd)) / (1 - math.exp(-35))
        return 0.03 * w + 0.16 * (1 - w)
    w = (1 - math.exp(-50 * pd)) / (1 - math.exp(-50))
    r = 0.12 * w + 0.24 * (1 - w)
    if asset_class == "sme_corporate" and sales_m is not None:
        s = min(max(sales_m, 5.0), 50.0)
        r -= 0.04 * (1 - (s - 5.0) / 45.0)
    return r


def maturity_b(pd: float) -> float:
    return (0.11852 - 0.05478 * math.log(pd)) ** 2


def conditional_pd(pd: float, r: float) -> float:
    return _N.cdf((_N.inv_cdf(pd) + math.sqrt(r) * G999) / math.sqrt(1 - r))


RETAIL = ("residential_mortgage", "qualifying_revolving", "other_retail")


class IRBResult(BaseModel):
    """Every named intermediate of the IRB calculation, and the results."""

    pd: float = Field(description="PD after the 0.03% floor (1.0 when defaulted).")
    maturity: float = Field(description="Maturity clamped to [1, 5] years.")
    defaulted: bool = Field(description="PD = 1: para 272's defaulted-exposure rule applies.")
    R: float = Field(description="Asset correlation (not used when defaulted).")
    conditional_pd: float = Field(description="PD at the 99.9% systematic quantile.")
    b: float = Field(description="Maturity adjustment b (0 for retail).")
    maturity_factor: float = Field(description="(1 + (M - 2.5) b) / (1 - 1.5 b); 1 for retail.")
    K: float = Field(description="Capital requirement per unit EAD.")
    RWA: float = Field(description="12.5 x K x EAD.")
    EL: float = Field(description="Expected loss PD x LGD x EAD.")


def irb(
    asset_class: str,
    pd: float,
    lgd: float,
    ead: float,
    maturity: float,
    *,
    sales_m: float | None = None,
    elbe: float | None = None,
    corporate_formula: bool = False,
) -> IRBResult:
    """BCBS 2006 IRB capital; a pure function of the risk inputs.

    PD = 1 is a defaulted exposure: K = max(0, LGD - ELBE) (para 272), with ELBE = LGD when
    no separate best estimate is given, so K = 0 and EL = LGD x EAD. An SME exposure without
    sales is an error unless ``corporate_formula`` asks for the plain corporate formula."""
    if asset_class == "sme_corporate" and sales_m is None and not corporate_formula:
        raise PonderError(
            "sales_m",
            "an sme_corporate exposure needs annual sales for the firm-size adjustment",
            "give sales_m (EUR millions), or pass corporate_formula=True",
        )
    floored = 1.0 if pd >= 1.0 else max(pd, PD_FLOOR)
    m = min(max(maturity, 1.0), 5.0)
    retail = asset_class in RETAIL
    r = correlation(asset_class, floored, sales_m)
    b = 0.0 if retail else maturity_b(floored)
    adj = 1.0 if retail else (1 + (m - 2.5) * b) / (1 - 1.5 * b)
    if floored >= 1.0:
        cond, k = 1.0, max(0.0, lgd - (lgd if elbe is None else elbe))
    else:
        cond = conditional_pd(floored, r)
        k = max(0.0, (lgd * cond - floored * lgd) * adj)
    return IRBResult(
        pd=floored,
        maturity=m,
        defaulted=floored >= 1.0,
        R=r,
        conditional_pd=cond,
        b=b,
        maturity_factor=adj,
        K=k,
        RWA=12.5 * k * ead,
        EL=floored * lgd * ead,
    )


def irb_inputs(x: CreditInputs) -> IRBResult:
    """``irb`` over a validated exposure record."""
    return irb(x.asset_class, x.pd, x.lgd, x.ead, x.maturity, sales_m=x.sales_m, elbe=x.elbe)


NAMES = [
    "Acme Tooling GmbH",
    "Northwind Foods Ltd",
    "Blue Harbor Shipping",
    "Kestrel Homes",
    "Orchid Retail SA",
    "Granite Logistics",
    "J. Alvarez (retail)",
    "M. Chen (retail)",
]
CLASSES_BY_LEVEL: dict[int, list[str]] = {
    1: ["corporate"],
    2: ["corporate"],
    3: ["corporate", "sme_corporate"],
    4: ["corporate", "sme_corporate", "residential_mortgage", "qualifying_revolving"],
    5: [
        "corporate",
        "sme_corporate",
        "residential_mortgage",
        "qualifying_revolving",
        "other_retail",
    ],
}


class CreditCapital(Family):
    """Basel IRB R, K and RWA; difficulty adds classes, SME sales, floors and clamps."""

    name = "credit_capital"
    Inputs = CreditInputs
    Answer = CreditAnswer
    instructions = (
        "Compute the Basel IRB (foundation formulas, BCBS 2006) asset correlation R, capital "
        "requirement K and risk-weighted assets RWA = 12.5 x K x EAD for this exposure. Apply "
        "the PD floor of 0.03% and clamp maturity to [1, 5] years; retail classes have no "
        "maturity adjustment. Give R and K as fractions (not percent)."
    )
    # Placeholders, not values: a model that copies the example must not score by luck.
    answer_example = '{"R": <fraction>, "K": <fraction>, "RWA": <amount>}'

    def sample(self, rng: random.Random, difficulty: int) -> tuple[dict, dict, list[str]]:
        asset_class = rng.choice(CLASSES_BY_LEVEL[difficulty])
        pd = round(rng.uniform(0.0005, 0.08), 4)
        if difficulty == 5 and rng.random() < 0.5:
            pd = round(rng.uniform(0.00005, 0.00029), 5)  # below the floor
        elif difficulty == 5 and rng.random() < 0.2:
            pd = 1.0  # a defaulted exposure (para 272)
        maturity = (
            2.5
            if difficulty == 1
            else round(rng.uniform(0.5 if difficulty >= 4 else 1, 7 if difficulty >= 4 else 5), 2)
        )
        x = CreditInputs.model_construct(
            exposure_id=f"FAC-{rng.randrange(10**6):06d}",
            obligor=rng.choice(NAMES),
            asset_class=asset_class,
            pd=pd,
            lgd=rng.choice([0.25, 0.35, 0.4, 0.45, 0.6]),
            ead=float(rng.randrange(50, 5000) * 1000),
            maturity=maturity,
            sales_m=round(rng.uniform(2, 70), 1) if asset_class == "sme_corporate" else None,
            currency=rng.choice(["USD", "EUR", "GBP"]),
        )
        res = irb_inputs(x)
        answer = CreditAnswer(R=res.R, K=res.K, RWA=res.RWA)
        return x.model_dump(), answer.model_dump(), _steps(x, res)

    def render(self, x: BaseModel) -> str:
        assert isinstance(x, CreditInputs)
        lines = [
            f"Facility {x.exposure_id}, obligor {x.obligor}",
            f"Asset class: {x.asset_class.replace('_', ' ')}",
            f"PD: {x.pd * 100:.4g}%",
            f"LGD: {x.lgd * 100:.4g}%",
            f"EAD: {x.currency} {x.ead:,.2f}",
            f"Effective maturity: {x.maturity:g} years",
        ]
        if x.sales_m is not None:
            lines.append(f"Annual sales: EUR {x.sales_m:g} million")
        if x.elbe is not None:
            lines.append(f"Best estimate of expected loss: {x.elbe * 100:.4g}%")
        return "\n".join(lines)

    def coerce(self, payload: dict[str, Any] | str) -> BaseModel:
        if isinstance(payload, str):
            kv = key_values(payload)
            payload = {
                k.upper() if k in ("r", "k") else "RWA": v
                for k, v in kv.items()
                if k in ("r", "k", "rwa")
            }
        return CreditAnswer.model_validate({_canon(k): v for k, v in payload.items()})

    def grade(self, inputs: BaseModel, truth: BaseModel, answer: BaseModel) -> Verdict:
        assert isinstance(truth, CreditAnswer) and isinstance(answer, CreditAnswer)
        credits, notes = [], []
        for key in ("R", "K", "RWA"):
            want, got = getattr(truth, key), getattr(answer, key)
            rel = abs(got - want) / max(abs(want), 1e-12)
            credits.append(1.0 if rel <= 1e-3 else 0.5 * max(0.0, 1.0 - rel / 0.1))
            notes.append(f"{key} {'ok' if rel <= 1e-3 else f'off by {rel:.2%}'}")
        exact = all(c == 1.0 for c in credits)
        return Verdict(score=sum(credits) / 3, correct=exact, detail="; ".join(notes))


def _canon(key: str) -> str:
    k = key.strip().lower()
    return {"r": "R", "k": "K", "rwa": "RWA", "correlation": "R", "capital": "K"}.get(k, key)


def _steps(x: CreditInputs, a: IRBResult) -> list[str]:
    w = Work()
    w.say(f"asset class {x.asset_class.replace('_', ' ')}")
    w.say(f"PD {x.pd * 100:.4g}% = {x.pd:.6g}; LGD {x.lgd * 100:.4g}% = {x.lgd:g}")
    w.say(f"EAD {x.ead:.2f}; maturity {x.maturity:g} years")
    if x.sales_m is not None:
        w.say(f"annual sales EUR {x.sales_m:g} million")
    steps = [w.step("Read the exposure")]
    pd = "1" if a.defaulted else w.calc("PD floored at 0.0003", f"max({x.pd:.6g}, 0.0003)")
    if a.defaulted:
        w.say("PD = 100%: the exposure is in default (Basel II para 272)")
    m = "1"
    if x.asset_class not in RETAIL:
        m = w.calc("maturity clamped to 1-5 years", f"min(max({x.maturity:g}, 1), 5)")
    steps.append(w.step("Floors and clamps"))
    r = _correlation(w, x, pd)
    steps.append(w.step("Asset correlation"))
    if a.defaulted:
        elbe = x.lgd if x.elbe is None else x.elbe
        why = " (no separate best estimate given: it equals LGD)" if x.elbe is None else ""
        k = w.calc(f"K = max(0, LGD - best-estimate EL){why}", f"max(0, {x.lgd:g} - {elbe:g})")
        w.calc("expected loss = LGD x EAD", f"{x.lgd:g} * {x.ead:.2f}")
    else:
        k = _capital(w, x, pd, r, m)
    w.calc("RWA = 12.5 x K x EAD", f"12.5 * {k} * {x.ead:.2f}")
    return [*steps, w.step("Capital and RWA")]


def _correlation(w: Work, x: CreditInputs, pd: str) -> str:
    if x.asset_class == "residential_mortgage":
        w.say("residential mortgage: R = 0.15 (fixed)")
        return "0.15"
    if x.asset_class == "qualifying_revolving":
        w.say("qualifying revolving retail: R = 0.04 (fixed)")
        return "0.04"
    if x.asset_class == "other_retail":
        wt = w.calc(
            "w = (1 - e^(-35 PD)) / (1 - e^(-35))", f"(1 - exp(-35 * {pd})) / (1 - exp(-35))"
        )
        return w.calc("R = 0.03 w + 0.16 (1 - w)", f"0.03 * {wt} + 0.16 * (1 - {wt})")
    wt = w.calc("w = (1 - e^(-50 PD)) / (1 - e^(-50))", f"(1 - exp(-50 * {pd})) / (1 - exp(-50))")
    r = w.calc("R = 0.12 w + 0.24 (1 - w)", f"0.12 * {wt} + 0.24 * (1 - {wt})")
    if x.asset_class != "sme_corporate" or x.sales_m is None:
        return r
    sales = w.calc("SME: sales S bounded to 5-50", f"min(max({x.sales_m:g}, 5), 50)")
    return w.calc(
        "R less the firm-size adjustment 0.04 (1 - (S - 5) / 45)",
        f"{r} - 0.04 * (1 - ({sales} - 5) / 45)",
    )


def _capital(w: Work, x: CreditInputs, pd: str, r: str, m: str) -> str:
    cond = w.calc(
        "conditional PD = N((G(PD) + sqrt(R) G(0.999)) / sqrt(1 - R))",
        f"norm_cdf((norm_ppf({pd}) + sqrt({r}) * norm_ppf(0.999)) / sqrt(1 - {r}))",
    )
    if x.asset_class in RETAIL:
        w.say("retail: no maturity adjustment")
        return w.calc(
            "K = LGD x conditional PD - PD x LGD", f"{x.lgd:g} * {cond} - {pd} * {x.lgd:g}"
        )
    b = w.calc("b = (0.11852 - 0.05478 ln(PD))^2", f"(0.11852 - 0.05478 * ln({pd})) ** 2")
    adj = w.calc(
        "maturity factor = (1 + (M - 2.5) b) / (1 - 1.5 b)",
        f"(1 + ({m} - 2.5) * {b}) / (1 - 1.5 * {b})",
    )
    return w.calc(
        "K = (LGD x conditional PD - PD x LGD) x maturity factor",
        f"({x.lgd:g} * {cond} - {pd} * {x.lgd:g}) * {adj}",
    )
