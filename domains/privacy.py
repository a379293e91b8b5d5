"""Redaction: identifiers masked consistently before any text leaves the lake.

Patient notes carry PHI (names, record numbers, dates of birth, phone numbers) and finance
cases carry names and account numbers. The lake keeps the raw text, because models must
read it; everything that leaves it (MLflow traces and artifacts, HTML reports, Prefect
artifacts, logs) goes through a ``Redactor`` first.

A detector is a regular expression whose group ``id`` is the identifier (labels such as
``MRN`` stay, so a masked note still reads). Each identifier becomes ``[KIND-xxxxxxxx]``,
an HMAC of its normalised form under a secret key, so the same person or account always
gets the same mask (across runs with the same key) and the mask reveals nothing without
the key. Identifiers once detected are remembered (``Known``) and masked wherever they
appear again, even cut off from the label that marked them. Detectors are plug-ins in
``DETECTORS``; each domain names the ones it uses and may add its own patterns
(``RedactionConfig``).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import regex
from pydantic import BaseModel, Field, field_validator

from domains.errors import PonderError

_WORD = r"[A-Z][a-z][A-Za-z'\-]*"
_NAME = rf"(?:[A-Z]\.\s?)?{_WORD}(?:\s+[A-Z]\.)?(?:\s+{_WORD}){{0,2}}"
_TITLE = r"(?:Mr|Mrs|Ms|Miss|Dr|Prof)\.?\s++"


def _trie(words: list[str]) -> str:
    """An alternation as a prefix tree (``p(?:atient|hysician|t)``): at each word boundary
    the engine follows one branch per first letter instead of trying every word, which
    keeps the name detector within its time bound on long texts. Same matches as the
    longest-first alternation of ``words``."""
    groups: dict[str, list[str]] = {}
    for w in words:
        groups.setdefault(w[0], []).append(w[1:])
    branches = []
    for first, rests in sorted(groups.items()):
        if len(rests) == 1:  # one word left on this branch: spell it out
            branches.append(re.escape(first + rests[0]))
            continue
        tails = [r for r in rests if r]
        inner = f"(?:{_trie(tails)})" if tails else ""
        optional = "?" if tails and "" in rests else ""
        branches.append(re.escape(first) + inner + optional)
    return "|".join(branches)


_NAME_LABELS = _trie(
    [
        "patient",
        "pt",
        "name",
        "customer under review",
        "customer",
        "client",
        "obligor",
        "beneficiary",
        "originator",
        "account holder",
        "next of kin",
        "emergency contact",
        "contact",
        "daughter",
        "son",
        "wife",
        "husband",
        "mother",
        "father",
        "spouse",
        "guardian",
        "physician",
        "attending",
        "referred by",
        "seen by",
        "signed",
    ]
)
DETECTORS: dict[str, str] = {
    # (?<!...) and possessive repeats (*+, ++) keep every detector linear in the text's
    # length: no start inside a run is retried, and no repeat gives back what it took
    "email": r"(?<![\w.+-])(?P<id>[\w.+-]++@[\w-]++(?:\.[\w-]++)+)",
    "phone": r"(?<![\w-])(?P<id>(?:\+?1[ .-]?)?(?:\(\d{3}\)\s?|\d{3}[ .-])\d{3}[ .-]\d{4})(?!\d)",
    "ssn": r"(?<![\d-])(?P<id>\d{3}-\d{2}-\d{4})(?![\d-])",
    "mrn": r"(?i:\b(?:MRN|medical record(?: number| no\.?)?|chart(?: no\.?| #))(?>\s*[:#]?\s*))"
    r"(?P<id>[A-Z0-9][A-Z0-9-]{4,15})\b",
    "dob": r"(?i:\b(?:DOB|D\.O\.B\.|date of birth|born(?: on)?)(?>\s*:?\s*))"
    r"(?P<id>\d{4}-\d{2}-\d{2}|\d{1,2}/\d{1,2}/\d{2,4}|[A-Z][a-z]+ \d{1,2},? \d{4})",
    # the name must not itself be a label ("name Patient: Ann Lee" names Ann Lee)
    "name": rf"(?:\b(?i:{_NAME_LABELS})(?:\s*+[:\-])?\s++(?:{_TITLE})?|\b{_TITLE})"
    rf"(?!(?i:{_NAME_LABELS})\b)(?P<id>{_NAME})",
    "name_before_record": rf"(?P<id>{_WORD}(?:\s+{_WORD}){{1,2}})(?=\s*\((?:MRN|DOB|SSN))",
    "kyc_name": r"(?:\bKYC:\s*)(?P<id>[^,\n]+)",
    "card": r"(?<!\d)(?P<id>(?:\d{4}[ -]){3}\d{4})(?!\d)",
    "iban": r"\b(?P<id>[A-Z]{2}\d{2}[A-Z0-9]{11,30})\b",
    "account_number": r"(?i:\b(?:acct|account)(?: no\.?| number| #)?(?>\s*[:#]?\s*))"
    r"(?P<id>\d{6,17})\b",
    # a password inside a URI (scheme://user:password@host): masked in every record
    "url_password": r"://[^\s:/@]{1,256}:(?P<id>[^\s@/]{1,256})@",
}
_KIND = {"name_before_record": "name", "kyc_name": "name"}


def _normal(kind: str, value: str) -> str:
    """The form that decides "same identifier": digits for numbers, casefold for names."""
    if kind in ("phone", "ssn", "card", "account_number"):
        digits = re.sub(r"\D", "", value)
        return digits[1:] if kind == "phone" and len(digits) == 11 else digits
    return re.sub(r"\s+", " ", value).strip().casefold()


class RedactionConfig(BaseModel):
    """Which identifiers a domain masks."""

    enabled: bool = Field(default=True, description="Mask identifiers in every output channel.")
    detectors: list[str] = Field(
        default_factory=lambda: sorted(DETECTORS), description="Built-in detectors to use."
    )
    patterns: dict[str, str] = Field(
        default_factory=dict,
        description="Extra detectors, kind -> regex; the group `id` (or the whole match) is "
        "what gets masked.",
    )

    @field_validator("detectors")
    @classmethod
    def _known(cls, names: list[str]) -> list[str]:
        unknown = sorted(set(names) - set(DETECTORS))
        if unknown:
            raise ValueError(f"unknown detectors {unknown}; use any of {sorted(DETECTORS)}")
        return names

    @field_validator("patterns")
    @classmethod
    def _safe(cls, patterns: dict[str, str]) -> dict[str, str]:
        for kind, pattern in patterns.items():
            check_pattern(kind, pattern)
        return patterns


# texts a custom pattern must get through quickly: long runs of what identifiers are made of
_PROBES = [c * 20_000 + "!" for c in ("a", " ", "1", "\n", "A1-", "x@", "MRN ", "Name: ")]
PATTERN_SECONDS = 0.2  # the most one custom pattern may spend on one probe or one text


def check_pattern(kind: str, pattern: str) -> None:
    """Refuse a custom pattern that shadows a built-in detector, does not compile, can
    match the empty string (it would garble the text) or takes longer than
    ``PATTERN_SECONDS`` on a 20,000-character probe (catastrophic backtracking)."""
    if kind in DETECTORS or kind in set(_KIND.values()):
        raise ValueError(
            f"pattern {kind!r} has the name of a built-in detector and would replace it; give "
            f"it its own name (e.g. 'custom_{kind}')"
        )
    try:
        rule = regex.compile(pattern)
    except regex.error as err:
        raise ValueError(f"pattern {kind!r} is not a valid regex: {err}") from None
    if any(m.start() == m.end() for t in ("", "ab 12", "\n") for m in rule.finditer(t)):
        raise ValueError(
            f"pattern {kind!r} matches the empty string; make it match at least one character"
        )
    for probe in _PROBES:
        try:
            rule.search(probe, timeout=PATTERN_SECONDS)
        except TimeoutError:
            raise ValueError(
                f"pattern {kind!r} takes over {PATTERN_SECONDS:g} s on a 20,000-character "
                "input (nested or overlapping repeats backtrack); rewrite it without them"
            ) from None


_TOKEN = re.compile(r"\w+")


class Known:
    """Identifiers already seen, shared by the redactors of one process.

    Context finds an identifier ("Patient: Ann Lee"); text cut out of that context (a
    log line that starts mid-sentence, a truncated answer) no longer shows it. Every
    identifier a redactor detects is remembered here with its mask, and later text is
    searched for the remembered strings themselves, wherever they appear. Lookup is by
    each word of the text (one dict probe per word), so the cost does not grow with the
    number of identifiers remembered.
    """

    def __init__(self) -> None:
        self.masks: dict[str, str] = {}
        self._by_word: dict[str, list[tuple[int, str]]] = {}

    def add(self, value: str, mask: str) -> None:
        first = _TOKEN.search(value)
        if len(value) < 4 or value in self.masks or first is None:
            return
        self.masks[value] = mask
        bucket = self._by_word.setdefault(first.group(0), [])
        bucket.append((first.start(), value))
        bucket.sort(key=lambda item: -len(item[1]))  # longest match first

    def sub(self, text: str) -> str:
        if not self.masks:
            return text
        out, last = [], 0
        for word in _TOKEN.finditer(text):
            if word.start() < last:
                continue
            for offset, value in self._by_word.get(word.group(0), ()):
                start, end = word.start() - offset, word.start() - offset + len(value)
                if start >= last and text.startswith(value, start) and _bounded(text, start, end):
                    out += [text[last:start], self.masks[value]]
                    last = end
                    break
        return "".join(out) + text[last:]


def _bounded(text: str, start: int, end: int) -> bool:
    """No word character runs on across either end of ``text[start:end]``."""
    before = start > 0 and (text[start - 1].isalnum() or text[start - 1] == "_")
    after = end < len(text) and (text[end].isalnum() or text[end] == "_")
    return not (before and text[start].isalnum()) and not (after and text[end - 1].isalnum())


@dataclass(frozen=True)
class Redactor:
    """Masks identifiers in text and in nested JSON-like values."""

    config: RedactionConfig
    key: bytes
    known: Known = field(default_factory=Known)

    def __post_init__(self) -> None:
        if len(self.key) < 16:
            raise PonderError(
                "redact_key",
                "the redaction key is shorter than 16 bytes",
                "set PONDER_REDACT_KEY to 32+ random characters",
            )
        rules = [(name, re.compile(DETECTORS[name])) for name in self.config.detectors]
        rules += [(k, regex.compile(p)) for k, p in self.config.patterns.items()]
        object.__setattr__(self, "_rules", rules)

    def case_ref(self, case_id: str) -> str:
        """The case's id as shown outside the lake (reports, trace names and tags): 64 bits
        of HMAC, because a hospital's case id is often an MRN. The raw id stays in the lake,
        and ``case_refs`` maps a reference back for feedback."""
        digest = hmac.new(self.key, f"case:{case_id}".encode(), hashlib.sha256)
        return f"case-{digest.hexdigest()[:16]}"

    def mask(self, kind: str, value: str) -> str:
        kind = _KIND.get(kind, kind)
        digest = hmac.new(self.key, f"{kind}:{_normal(kind, value)}".encode(), hashlib.sha256)
        return f"[{kind.upper()}-{digest.hexdigest()[:8]}]"

    def text(self, text: str) -> str:
        """``text`` with every detected identifier replaced by its mask."""
        if not self.config.enabled or not text:
            return text
        return self.known.sub(self._detect(text))

    def _detect(self, text: str) -> str:
        for kind, rule in self._rules:  # type: ignore[attr-defined]
            if isinstance(rule, re.Pattern):
                text = rule.sub(self._replacer(kind), text)
                continue
            try:  # a custom pattern, with a time limit; over it, the text is withheld whole
                text = rule.sub(self._replacer(kind), text, timeout=PATTERN_SECONDS)
            except TimeoutError:
                return f"[WITHHELD: pattern {kind!r} timed out on {len(text)} characters]"
        return text

    def learn(self, value: Any) -> None:
        """Detect and remember the identifiers in ``value`` (e.g. a case's inputs as they
        leave the lake), so they are masked later even without their context."""
        _walk(value, self._detect)

    def _replacer(self, kind: str) -> Callable[[re.Match[str]], str]:
        def replace(m: re.Match[str]) -> str:
            group = "id" if "id" in m.re.groupindex else 0
            start, end = m.span(group)
            value = m.group(group)
            if value.startswith("[") and value.endswith("]"):  # already a mask
                return m.group(0)
            s, mask = m.start(), self.mask(kind, value)
            self.known.add(value, mask)
            return m.group(0)[: start - s] + mask + m.group(0)[end - s :]

        return replace

    def value(self, value: Any) -> Any:
        """Strings anywhere inside dicts, lists and tuples, redacted; other values as is."""
        return _walk(value, self.text)


def _walk(value: Any, fn: Callable[[str], str]) -> Any:
    """``value`` with ``fn`` applied to every string inside dicts, lists and tuples."""
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, dict):
        return {k: _walk(v, fn) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_walk(v, fn) for v in value)
    return value


def merge(configs: list[RedactionConfig]) -> RedactionConfig:
    """One config that masks what any of ``configs`` masks (for process-wide logs)."""
    on = [c for c in configs if c.enabled]
    detectors = sorted({d for c in on for d in c.detectors})
    patterns = {k: v for c in on for k, v in c.patterns.items()}
    return RedactionConfig(enabled=bool(on), detectors=detectors, patterns=patterns)
