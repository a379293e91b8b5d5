"""Finance risk vertical: AML typologies, cash structuring / CTR, Basel IRB capital."""

from __future__ import annotations

from domains.base import Domain
from domains.finance_risk.aml import AMLTypology
from domains.finance_risk.credit import CreditCapital
from domains.finance_risk.structuring import Structuring
from domains.privacy import RedactionConfig


class FinanceRisk(Domain):
    """Financial-crime and credit-risk analysis."""

    name = "finance_risk"
    persona = "You are a senior financial-crime and credit-risk analyst at a US bank."
    families = {f.name: f for f in (AMLTypology(), Structuring(), CreditCapital())}
    # account ids in alerts and transaction lists are customer identifiers: the generator's
    # (A2126, C004512) and IBM AML's nine hex digits (8000EBD30; a number with a decimal
    # part is an amount, not an account)
    redaction = RedactionConfig(
        patterns={
            "account": r"(?<![\w-])(?P<id>[AC]\d{4,8})(?![\w-])",
            "ibm_account": r"(?<![\w.-])(?P<id>[0-9A-F]{9})(?![\w-])(?!\.\d)",
        }
    )
