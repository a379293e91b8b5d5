"""The base of every domain schema: bounded text, so one crafted row cannot stall a stage.

A case's note, a transaction's fields and a reference solution all reach regular
expressions, tokenizers and HTML pages; with no bound, one 10 MB field in a case file would
cost every stage that reads it. Every ``str`` field of a model built on ``Record`` holds at
most ``MAX_TEXT_CHARS`` characters, and every list field of free text at most ``MAX_ITEMS``
items where the schema says so; a longer value fails validation, and the row is
quarantined with the field named.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

MAX_TEXT_CHARS = 50_000  # a long clinical note is ~30,000 characters
MAX_ITEMS = 5_000  # transactions in one alert, findings in one note, ...


class Record(BaseModel):
    """A domain schema whose strings are at most ``MAX_TEXT_CHARS`` characters and whose
    numbers are finite (``ead=inf`` is refused, not carried into the capital formula)."""

    model_config = ConfigDict(str_max_length=MAX_TEXT_CHARS, allow_inf_nan=False)
