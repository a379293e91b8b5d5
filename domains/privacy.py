"""Redaction: identifiers masked consistently before any text leaves the lake.

Patient notes carry PHI (names, record numbers, dates of birth, phone numbers) and finance
cases carry names and account numbers. The lake keeps the raw text, because models must
read it; everything that leaves it (MLflow traces and artifacts, HTML reports, Prefect
artifacts, logs) goes through a ``Redactor`` first.

Text is normalised first (NFKC, invisible characters removed), then the detectors of
``domains.recognizers`` (Presidio with a named-entity model for names, validated patterns
for numbers) find identifiers; labels such as ``MRN`` stay, so a masked note still reads.
Each identifier becomes ``[KIND-`` + 16 hex digits ``]``, 64 bits of an HMAC of its
normalised form under a secret key, so the same person or account always gets the same
mask (across runs with the same key) and the mask reveals nothing without the key.
Identifiers once detected are remembered (``Known``) and masked wherever they appear
again, even cut off from the label that marked them, in another case or across a line
break. Each domain names the detectors it uses and may add its own patterns
(``RedactionConfig``).
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import hmac
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import regex
from pydantic import BaseModel, Field, field_validator

from domains.errors import PonderError
from domains.recognizers import PATTERNS, detectors, person_spans

DETECTORS: tuple[str, ...] = tuple(PATTERNS)  # the built-in detector names
_DIGITS = ("phone", "ssn", "card", "account_number")
# zero-width and other invisible format characters (Unicode category Cf) split an
# identifier for a pattern but not for a reader: they are removed before detection
_INVISIBLE = regex.compile(r"\p{Cf}++")


def normalize(text: str) -> str:
    """``text`` as detection sees it: Unicode NFKC (full-width digits and ligatures become
    plain ones) without invisible format characters. Redacted output is this form."""
    return _INVISIBLE.sub("", unicodedata.normalize("NFKC", text))


def _normal(kind: str, value: str) -> str:
    """The form that decides "same identifier": digits for numbers, casefold for names."""
    if kind in _DIGITS:
        digits = re.sub(r"\D", "", value)
        return digits[1:] if kind == "phone" and len(digits) == 11 and digits[0] == "1" else digits
    if kind in ("iban", "mrn"):
        return re.sub(r"[\s\-]", "", value).upper()
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
    if kind in DETECTORS:
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


_TOKEN = regex.compile(r"\w++")
_NAME_SPLIT = regex.compile(r"[\s,]++")  # a name's words keep O'Brien and Smith-Jones whole
# name parts that are also ordinary capitalised words (months, weekdays, particles) are
# not remembered alone: "May Chen" must not mask every "May 3"
_COMMON = frozenset(
    [
        "january",
        "february",
        "march",
        "april",
        "may",
        "june",
        "july",
        "august",
        "september",
        "october",
        "november",
        "december",
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
        "de",
        "del",
        "della",
        "der",
        "den",
        "di",
        "da",
        "dos",
        "das",
        "du",
        "la",
        "le",
        "van",
        "von",
        "bin",
        "ibn",
        "al",
        "el",
        "st",
        "mr",
        "mrs",
        "ms",
        "dr",
        "prof",
    ]
)


@dataclass(frozen=True)
class _Entry:
    words: tuple[str, ...]  # casefolded
    gaps: tuple[str, ...]  # what lies between the words: " " for any whitespace
    mask: str
    part: bool  # one word of a longer name: matched only where it is capitalised


def _gap(text: str) -> str:
    return " " if not text.strip() else text


class Known:
    """Identifiers already seen, shared by the redactors of one process.

    Context finds an identifier ("Patient: Ann Lee"); text cut out of that context (a
    log line that starts mid-sentence, a truncated answer) no longer shows it. Every
    identifier a redactor detects is remembered here with its mask, and later text is
    searched for it wherever it appears: case-insensitively, across any whitespace (a line
    break inside "John\nSmith"), and for names word by word ("Smith" alone, "J. Smith").
    Identifiers are indexed by their first word, so a text is searched only for those
    whose first word it contains, however many are remembered.
    """

    def __init__(self) -> None:
        self.masks: dict[str, str] = {}
        self._by_word: dict[str, set[_Entry]] = {}

    def add(self, value: str, mask: str, parts: dict[str, str] | None = None) -> None:
        """Remember ``value`` (4+ characters) as ``mask``; ``parts`` maps single words of a
        name to their own masks."""
        if len(value) < 4 or value in self.masks:
            return
        self.masks[value] = mask
        self._index(value, mask, part=False)
        for word, part_mask in (parts or {}).items():
            if len(word) >= 3 and word.casefold() not in _COMMON:
                self._index(word, part_mask, part=True)

    def _index(self, value: str, mask: str, part: bool) -> None:
        words = list(_TOKEN.finditer(value))
        if not words:
            return
        gaps = tuple(
            _gap(value[a.end() : b.start()]) for a, b in zip(words, words[1:], strict=False)
        )
        entry = _Entry(tuple(w.group(0).casefold() for w in words), gaps, mask, part)
        self._by_word.setdefault(entry.words[0], set()).add(entry)

    def sub(self, text: str) -> str:
        """``text`` with every remembered identifier masked. Candidates are the identifiers
        whose every word is a word of ``text`` (found with C-level set operations, via the
        first-word index); each has its own compiled pattern, applied whole identifiers
        first, longest first. So an ordinary text costs a few microseconds per kilobyte, a
        text with hits one scan per candidate, and neither grows with how many identifiers
        are remembered (one pattern of all candidates, compiled per text, grew with them:
        1.9 ms a text after 15,000 cases of a batch)."""
        if not self.masks:
            return text
        words = set(_TOKEN.findall(text.casefold()))
        present = self._by_word.keys() & words
        if not present:
            return text
        candidates = {e for w in present for e in self._by_word[w] if words.issuperset(e.words)}
        for entry in sorted(candidates, key=_order):
            text = _pattern(entry).sub(functools.partial(_replace, entry), text)
        return text


def _replace(entry: _Entry, m: regex.Match[str]) -> str:
    if m.lastindex == 1:  # a mask already there
        return m.group(0)
    if entry.part and not _TOKEN.findall(m.group(0))[-1][0].isupper():
        return m.group(0)  # one word of a name counts only where it is capitalised
    return entry.mask


def _order(e: _Entry) -> tuple[bool, int, tuple[str, ...]]:
    return e.part, -len(e.words), e.words  # whole identifiers first, longest first


@functools.lru_cache(maxsize=8192)
def _pattern(e: _Entry) -> regex.Pattern[str]:
    """Masks first (kept as they are), then the entry: its words in any case, any
    whitespace for a space, a name part with the initial before it ("J. Smith")."""
    body = regex.escape(e.words[0])
    for word, gap in zip(e.words[1:], e.gaps, strict=True):
        body += (r"\s++" if gap == " " else regex.escape(gap)) + regex.escape(word)
    initial = r"(?:(?-i:\p{Lu})\.[ \t]?)?" if e.part else ""
    return regex.compile(f"({MASK.pattern})|({initial}(?<!\\w)(?fi:{body})(?!\\w))")


MASK = regex.compile(r"\[[A-Z][A-Z0-9_]*+-[0-9a-f]{16}\]")


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
        builtin = {d: PATTERNS[d] for d in self.config.detectors}
        custom = {kind: [p] for kind, p in self.config.patterns.items()}
        object.__setattr__(self, "_detectors", detectors(builtin))
        object.__setattr__(self, "_custom", detectors(custom))

    def case_ref(self, case_id: str) -> str:
        """The case's id as shown outside the lake (reports, trace names and tags): 64 bits
        of HMAC, because a hospital's case id is often an MRN. The raw id stays in the lake,
        and ``case_refs`` maps a reference back for feedback."""
        digest = hmac.new(self.key, f"case:{case_id}".encode(), hashlib.sha256)
        return f"case-{digest.hexdigest()[:16]}"

    def fingerprint(self) -> str:
        """64 bits of HMAC of this redactor's config: texts masked earlier (a shard's report
        texts) are reused only by a redactor with the same key and detectors."""
        config = self.config.model_dump_json().encode()
        return hmac.new(self.key, b"fingerprint:" + config, hashlib.sha256).hexdigest()[:16]

    def mask(self, kind: str, value: str) -> str:
        """``[KIND-`` + 64 bits of HMAC of the value's normal form + ``]``: at 20,000
        identifiers two masks collide with a probability of about 1e-11."""
        digest = hmac.new(self.key, f"{kind}:{_normal(kind, value)}".encode(), hashlib.sha256)
        return f"[{kind.upper()}-{digest.hexdigest()[:16]}]"

    def text(self, text: str) -> str:
        """``text`` with every detected identifier replaced by its mask."""
        if not self.config.enabled or not text:
            return text
        return self.known.sub(self._detect(normalize(text)))

    def _detect(self, text: str) -> str:
        try:
            spans = self._spans(text)
        except TimeoutError as err:  # a custom pattern over its time: withhold the text
            return f"[WITHHELD: pattern {err.args[0]!r} timed out on {len(text)} characters]"
        out, last = [], 0
        for start, end, kind in spans:
            value = text[start:end]
            out += [text[last:start], self._remember(kind, value)]
            last = end
        return "".join(out) + text[last:]

    def _spans(self, text: str) -> list[tuple[int, int, str]]:
        """Non-overlapping ``(start, end, kind)``, in order: overlapping names merge (the
        model and a label pattern often see parts of one name); otherwise the higher-scored
        kind wins (an IBAN over the card shape inside it), then the longer span."""
        found = [(s, e, d.kind) for d in self._detectors for s, e in d.spans(text)]  # type: ignore[attr-defined]
        for d in self._custom:  # type: ignore[attr-defined]
            found += [(s, e, d.kind) for s, e in d.spans(text, timeout=PATTERN_SECONDS)]
        if "name" in self.config.detectors:
            found += [(s, e, "name") for s, e in person_spans(text)]
        masks = [(*m.span(), "mask") for m in MASK.finditer(text)]  # never masked again
        return [x for x in _resolve(masks + _merge_names(found)) if x[2] != "mask"]

    def _remember(self, kind: str, value: str) -> str:
        mask = self.mask(kind, value)
        parts = None
        if kind == "name":
            words = (w.strip(".'’-") for w in _NAME_SPLIT.split(value))
            parts = {w: self.mask("name", w) for w in words if w}
        self.known.add(value, mask, parts)
        return mask

    def learn(self, value: Any) -> None:
        """Detect and remember the identifiers in ``value`` (e.g. a case's inputs as they
        leave the lake), so they are masked later even without their context."""
        _walk(value, lambda t: self._detect(normalize(t)))

    def value(self, value: Any) -> Any:
        """Strings anywhere inside dicts, lists and tuples, redacted; other values as is."""
        return _walk(value, self.text)


_RANK = {"mask": 9, "iban": 3, "card": 2}  # a mask already there outranks everything


def _merge_names(spans: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    names = sorted((s, e) for s, e, k in spans if k == "name")
    merged: list[list[int]] = []
    for s, e in names:
        if merged and s <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    return [x for x in spans if x[2] != "name"] + [(s, e, "name") for s, e in merged]


def _resolve(spans: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    """Greedy by rank, then length; kept spans stay sorted, so each overlap check is two
    neighbours found by bisection (a text with 10,000 identifiers stays fast)."""
    taken: list[tuple[int, int, str]] = []
    for s, e, k in sorted(spans, key=lambda x: (-_RANK.get(x[2], 1), x[0] - x[1], x[0])):
        i = bisect.bisect_left(taken, (s,))
        if (i == 0 or taken[i - 1][1] <= s) and (i == len(taken) or taken[i][0] >= e):
            taken.insert(i, (s, e, k))
    return taken


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
