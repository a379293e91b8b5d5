"""Finance risk vertical: AML typologies, cash structuring / CTR, Basel IRB capital."""

from __future__ import annotations

from domains.base import Domain, register
from domains.finance_risk.aml import AMLTypology
from domains.finance_risk.credit import CreditCapital
from domains.finance_risk.structuring import Structuring


@register
class FinanceRisk(Domain):
    """Financial-crime and credit-risk analysis."""

    name = "finance_risk"
    persona = "You are a senior financial-crime and credit-risk analyst at a US bank."
    families = {f.name: f for f in (AMLTypology(), Structuring(), CreditCapital())}
