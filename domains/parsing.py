"""Tolerant reading of model answers: JSON objects, `Answer:` lines, numbers with units.

Models write answers in many ways (a JSON object, a fenced block, ``Answer: 42 points``,
``RWA = $1,234,567``). These helpers pull out the answer payload and numbers without
``eval`` and without raising on arbitrary text; schema errors are the caller's to report.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal, InvalidOperation
from typing import Any

MAX_TEXT = 200_000
# line-anchored patterns match only horizontal space before their keyword: a leading \s*
# would run across every following newline from every line start (quadratic)
_ANSWER = re.compile(r"(?im)^[ \t>*#_`-]*+(?:final[ \t]++)?answer[ \t]*+[:=]\**[ \t]*+")
_STEP = re.compile(r"(?m)^[ \t]*+#{1,4}[ \t]*+Step[ \t]++(\d+)[ \t]*+[:.)-]")
_NUMBER = re.compile(r"[-+−]?\d[\d,]*(?:\.\d+)?(?:[eE][-+]?\d+)?|[-+−]?\.\d+")
_KV = re.compile(
    r"([A-Za-z_][\w ]{0,40}?)\s*[=:]\s*(.+?)(?=\s*[,;]\s*[A-Za-z_][\w ]{0,40}?\s*[=:]|[;\n]|$)"
)


def step_headers(text: str) -> list[int]:
    """The k of every ``## Step k:`` header, in order."""
    return [int(m.group(1)) for m in _STEP.finditer(text[:MAX_TEXT])]


def extract_answer_payload(text: str) -> dict[str, Any] | str | None:
    """The answer after the last `Answer:` line (JSON object if present), else the last JSON
    object in the text, else None."""
    if not isinstance(text, str):
        return None
    text = text[:MAX_TEXT]
    matches = list(_ANSWER.finditer(text))
    tail = text[matches[-1].end() :] if matches else text
    obj = last_json_object(tail)
    if obj is not None:
        return obj
    if not matches:
        return None
    line = tail.strip().splitlines()[0] if tail.strip() else ""
    line = line.strip().strip("*`_").strip().rstrip(".")
    return line or None


MAX_OBJECT_STARTS = 64  # "{" positions tried, counted from the end of the text


def last_json_object(text: str) -> dict[str, Any] | None:
    """The last top-level JSON object in ``text`` (code fences and prose around it allowed)
    that starts at one of the last ``MAX_OBJECT_STARTS`` braces: every failed start costs a
    parse, so text full of unclosed ``{"a":[`` would otherwise take quadratic time."""
    decoder = json.JSONDecoder()
    found = None
    pos = _nth_last(text, "{", MAX_OBJECT_STARTS)
    while pos != -1:
        try:
            obj, end = decoder.raw_decode(text, pos)
        except (ValueError, RecursionError):
            pos = text.find("{", pos + 1)
            continue
        if isinstance(obj, dict):
            found = obj
        pos = text.find("{", max(end, pos + 1))
    return found


MAX_KV_TEXT = 2_000  # an answer line; the pattern's bounded key search is O(n * 40)


def _nth_last(text: str, char: str, n: int) -> int:
    """Index of the n-th last ``char`` in ``text`` (the first one if there are fewer; -1
    if none)."""
    pos = len(text)
    for _ in range(n):
        found = text.rfind(char, 0, pos)
        if found == -1:
            break
        pos = found
    return pos if pos < len(text) else -1


def key_values(text: str) -> dict[str, str]:
    """``R = 0.17, K: 0.05`` -> {"r": "0.17", "k": "0.05"} (keys lower-cased, spaces -> _),
    from the first ``MAX_KV_TEXT`` characters."""
    pairs = _KV.findall(text[:MAX_KV_TEXT])
    return {k.strip().lower().replace(" ", "_"): v.strip() for k, v in pairs}


def to_decimal(value: Any) -> Decimal:
    """A number from int/float/str, tolerating $, commas, units and a trailing %. A percent
    stays in percent units (``"1.5%"`` -> 1.5); callers decide what it means."""
    if isinstance(value, bool):
        raise ValueError("expected a number, got a boolean")
    if isinstance(value, int | float | Decimal):
        number = Decimal(str(value))
    elif isinstance(value, str):
        match = _NUMBER.search(value.replace("−", "-"))
        if not match:
            raise ValueError(f"no number in {value[:40]!r}")
        try:
            number = Decimal(match.group(0).replace(",", "").replace("−", "-"))
        except InvalidOperation as err:
            raise ValueError(f"bad number {match.group(0)!r}") from err
    else:
        raise ValueError(f"expected a number, got {type(value).__name__}")
    if not number.is_finite():
        raise ValueError("number is not finite")
    return number


def to_float(value: Any, percent_as_fraction: bool = False) -> float:
    """Float from model text; with ``percent_as_fraction`` "17.68%" reads as 0.1768."""
    number = float(to_decimal(value))
    if percent_as_fraction and isinstance(value, str) and "%" in value:
        number /= 100.0
    return number


def to_bool(value: Any) -> bool:
    """yes/no/true/false/1/0 (case-insensitive) as a bool."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().strip(".").lower()
        if word in {"yes", "true", "y", "1", "due", "indicated", "met"}:
            return True
        if word in {"no", "false", "n", "0", "not due", "not indicated", "not met", "none"}:
            return False
    raise ValueError(f"expected yes/no, got {str(value)[:40]!r}")


def to_str_list(value: Any) -> list[str]:
    """A list of ids from a JSON list or a comma/space separated string."""
    if isinstance(value, str):
        return [v for v in re.split(r"[\s,;]+", value.strip("[]() ")) if v]
    if isinstance(value, list | tuple | set):
        return [str(v).strip() for v in value if str(v).strip()]
    raise ValueError(f"expected a list, got {type(value).__name__}")
