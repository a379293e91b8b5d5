"""Prefect artifacts with identifiers masked: the one way ponder publishes to the Prefect UI.

Artifacts leave the lake (anyone with UI access reads them), so every markdown and table
artifact goes through the domain's redactor first. Progress artifacts carry only numbers
and stay with Prefect's own functions.
"""

from __future__ import annotations

from typing import Any

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from domains.privacy import Redactor
from models.redaction import redactor


def markdown_artifact(
    markdown: str, key: str, domain: str | None, description: str | None = None
) -> Any:
    """A markdown artifact; ``key`` must be lowercase letters, digits and dashes."""
    red = redactor(domain)
    return create_markdown_artifact(
        markdown=red.text(markdown), key=key, description=_described(red, description)
    )


def table_artifact(
    table: list[dict[str, Any]], key: str, domain: str | None, description: str | None = None
) -> Any:
    """A table artifact (rows as dicts), every string cell redacted."""
    red = redactor(domain)
    return create_table_artifact(
        table=red.value(table), key=key, description=_described(red, description)
    )


def _described(red: Redactor, description: str | None) -> str | None:
    return red.text(description) if description else None
