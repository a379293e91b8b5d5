"""The redaction evaluation set: synthetic identifiers of every kind, in the formats real
notes and transactions use, embedded in clinical and finance text with clinical values and
amounts around them, each with its exact place in the text.

Redaction is judged on it (``score``): an identifier counts as caught only when every one
of its letters and digits was masked (a kept "de la Cruz" or a kept last four digits is a
leak), and precision is the share of masked letters and digits that belonged to an
identifier. Clinical values (lab results, doses, dates of service) and amounts are planted
in the same texts, and their survival is reported too: a redactor that masks them makes
the notes useless. The set is generated from a seed, so it is the same in every run, and
its identifiers are made up (cards and IBANs carry valid check digits, so validators see
them as real).
"""

from __future__ import annotations

import difflib
import random
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

FIRST = [
    "Mary", "John", "Ann", "Robert", "Patricia", "Michael", "Linda", "David", "Susan",
    "James", "Karen", "Thomas", "Nancy", "Daniel", "Lisa", "Marisol", "Ines", "Tomas",
    "Yusuf", "Greta", "Anouk", "Kwame", "Ilse", "Solveig", "Dariusz", "Noor", "Aiko",
    "Chidi", "Priya", "Mateo", "Fatima", "Lars", "Oksana", "Wei", "Amara", "Björn",
    "José", "Zoë", "Renée", "Łukasz", "Siobhán", "François", "Anna Maria", "Mary Ellen",
]  # fmt: skip
LAST = [
    "Johnson", "Smith", "Lee", "Garcia", "Brown", "Miller", "Davis", "Wilson", "Moore",
    "Taylor", "Anderson", "Okonkwo", "Lindqvist", "Haverkamp", "Oyelaran", "Brannigan",
    "Szczepanski", "Mbeki", "Vasquez", "Nakamura", "Kowalski", "Haddad", "Chen", "Patel",
    "Nguyen", "O'Brien", "Smith-Jones", "Álvarez", "Müller", "Søndergaard", "Dvořák",
    "de la Cruz", "van der Berg", "von Stein", "da Silva", "McAllister", "Fitzgerald",
]  # fmt: skip
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December"]  # fmt: skip


@dataclass
class Sample:
    """One text with its identifiers' and clinical values' spans."""

    domain: str
    text: str = ""
    ids: list[tuple[int, int, str]] = field(default_factory=list)  # start, end, kind
    values: list[tuple[int, int]] = field(default_factory=list)  # must survive

    def put(self, label: str, piece: str, kind: str) -> None:
        """``label`` as plain text, then ``piece`` as an identifier of ``kind``."""
        self.add(label)
        self.add(piece, kind)

    def add(self, piece: str, kind: str | None = None, value: bool = False) -> None:
        start = len(self.text)
        self.text += piece
        if kind:
            self.ids.append((start, len(self.text), kind))
        elif value:
            self.values.append((start, len(self.text)))


def _luhn_digit(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return str((10 - total % 10) % 10)


def _group(s: str, size: int = 4, sep: str = " ") -> str:
    return sep.join(s[i : i + size] for i in range(0, len(s), size))


class Maker:
    """Identifiers of each kind, each in one of its real formats (drawn at random)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def person(self) -> str:
        return f"{self.rng.choice(FIRST)} {self.rng.choice(LAST)}"

    def name_format(self) -> str:
        first, last = self.rng.choice(FIRST), self.rng.choice(LAST)
        return self.rng.choice(
            [f"{first} {last}", f"{first} {last}".upper(), f"{first} {last}".lower(),
             f"{last}, {first}", f"{first} {self.rng.choice('ABCDEHJKLMRS')}. {last}"]
        )  # fmt: skip

    def phone(self) -> str:
        r = self.rng
        a, b, c = r.randint(201, 989), r.randint(200, 999), r.randint(0, 9999)

        def pairs() -> str:
            return " ".join(str(r.randint(10, 99)) for _ in range(4))

        return r.choice(
            [f"({a}) {b}-{c:04d}", f"{a}-{b}-{c:04d}", f"{a}.{b}.{c:04d}", f"+1 {a} {b} {c:04d}",
             f"+44 20 7{r.randint(100, 999)} {r.randint(1000, 9999)}",
             f"+44 7{r.randint(100, 999)} {r.randint(100000, 999999)}",
             f"+49 30 {r.randint(100000, 999999)}{r.randint(0, 9)}",
             f"+49 151 {r.randint(1000000, 9999999)}",
             f"+33 1 {pairs()}", f"+33 6 {pairs()}"]
        )  # fmt: skip

    def ssn(self) -> str:
        r = self.rng
        a, b, c = r.randint(100, 665), r.randint(10, 99), r.randint(1000, 9999)
        return r.choice([f"{a}-{b}-{c}", f"{a} {b} {c}", f"{a}.{b}.{c}", f"{a}{b}{c}"])

    def card(self) -> str:
        r = self.rng
        if r.random() < 0.3:
            body = "3" + r.choice("47") + "".join(str(r.randrange(10)) for _ in range(12))
            num = body + _luhn_digit(body)
            amex = [f"{num[:4]}{sep}{num[4:10]}{sep}{num[10:]}" for sep in (" ", "-")]
            return r.choice([*amex, num])
        body = r.choice("45") + "".join(str(r.randrange(10)) for _ in range(14))
        num = body + _luhn_digit(body)
        return r.choice([_group(num), _group(num, sep="-"), num])

    def iban(self) -> str:
        # country, letters and digits of its account part (GB and NL start with a bank code)
        country, letters, digits = self.rng.choice(
            [("DE", 0, 18), ("GB", 4, 14), ("FR", 0, 23), ("NL", 4, 10)]
        )
        raw = _iban(self.rng, country, letters, digits)
        return self.rng.choice([raw, _group(raw), _group(raw).lower(), raw.lower()])

    def mrn(self) -> tuple[str, str]:
        r = self.rng
        digits = str(r.randint(10**6, 10**8 - 1))
        label = r.choice(["MRN", "MRN:", "MRN #", "Medical record #:", "Medical record number",
                          "Chart #", "MR#"])  # fmt: skip
        value = r.choice([digits, f"{digits[:2]} {digits[2:5]} {digits[5:]}",
                          f"QX{digits}", f"{digits[:3]}-{digits[3:]}"])  # fmt: skip
        return label, value

    def dob(self) -> tuple[str, str]:
        r = self.rng
        y, m, d = r.randint(1930, 2005), r.randint(1, 12), r.randint(1, 28)
        label = r.choice(["DOB", "DOB:", "D.O.B.", "date of birth", "born", "born on"])
        value = r.choice(
            [f"{y}-{m:02d}-{d:02d}", f"{m}/{d}/{y}", f"{d:02d}.{m:02d}.{y}",
             f"{d} {MONTHS[m - 1]} {y}", f"{MONTHS[m - 1]} {d}, {y}",
             f"{MONTHS[m - 1][:3]} {d} {y}", f"{d}th of {MONTHS[m - 1]} {y}"]
        )  # fmt: skip
        return label, value

    def email(self) -> str:
        first, last = self.rng.choice(FIRST), self.rng.choice(LAST)
        user = re.sub(r"[^a-z]", "", f"{first}.{last}".lower().replace(" ", ".")) or "pt"
        dom = self.rng.choice(["mail.example", "example.org", "clinic.example.com"])
        return f"{user}{self.rng.randint(1, 99)}@{dom}"

    def account(self) -> str:
        return str(self.rng.randint(10**7, 10**12))


def _iban(rng: random.Random, country: str, letters: int, digits: int) -> str:
    """An IBAN with valid mod-97 check digits."""
    bank = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(letters))
    bban = bank + "".join(str(rng.randrange(10)) for _ in range(digits))
    number = "".join(str(int(c, 36)) for c in bban + country + "00")
    return f"{country}{98 - int(number) % 97:02d}{bban}"


ZERO_WIDTH = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad"]


def _evade(rng: random.Random, value: str) -> str:
    """A zero-width character inside the identifier, or a line break for one space."""
    if " " in value.strip() and rng.random() < 0.5:
        spaces = [i for i, c in enumerate(value) if c == " "]
        i = rng.choice(spaces)
        return value[:i] + "\n" + value[i + 1 :]
    i = rng.randint(1, max(1, len(value) - 1))
    return value[:i] + rng.choice(ZERO_WIDTH) + value[i:]


def _clinical(s: Sample, rng: random.Random) -> None:
    na, cl, hco3 = rng.randint(128, 148), rng.randint(92, 112), rng.randint(14, 30)
    s.add(" Labs on ")
    s.add(f"{rng.randint(1, 12)}/{rng.randint(1, 28)}/2024", value=True)
    s.add(": Na ")
    s.add(f"{na} mmol/L", value=True)
    s.add(", Cl ")
    s.add(f"{cl}", value=True)
    s.add(", HCO3 ")
    s.add(f"{hco3}", value=True)
    s.add(", creatinine ")
    s.add(f"{rng.randint(5, 30) / 10:.1f} mg/dL", value=True)
    s.add(". Given furosemide ")
    s.add(f"{rng.choice([20, 40, 80])} mg", value=True)
    s.add(" IV; BP ")
    s.add(f"{rng.randint(95, 180)}/{rng.randint(55, 100)}", value=True)
    s.add(", HR ")
    s.add(f"{rng.randint(50, 130)}", value=True)
    s.add(". Seen in clinic on ")
    s.add(f"{MONTHS[rng.randrange(12)]} {rng.randint(1, 28)}, 2024", value=True)
    s.add(".")


def _finance(s: Sample, rng: random.Random) -> None:
    s.add(" Transfers: ")
    s.add(f"${rng.randint(1000, 9999)}.{rng.randint(0, 99):02d}", value=True)
    s.add(" on ")
    s.add(f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}", value=True)
    s.add(", then ")
    s.add(f"${rng.randint(100, 999)},{rng.randint(100, 999)}", value=True)
    s.add(" in ")
    s.add(f"{rng.randint(2, 9)} cash deposits", value=True)
    s.add(" below the ")
    s.add("$10,000", value=True)
    s.add(" threshold; risk weight ")
    s.add(f"{rng.choice([20, 50, 100, 150])}%", value=True)
    s.add(".")


def _medicine_note(m: Maker, rng: random.Random, evade: bool) -> Sample:
    s = Sample("medicine")
    ev = (lambda v: _evade(rng, v)) if evade else (lambda v: v)
    opener = rng.randrange(4)
    if opener == 0:
        s.add("Patient: ")
        s.add(ev(m.name_format()), "name_labelled")
        s.add(". ")
    elif opener == 1:
        s.add(ev(m.person()), "name_unlabelled")
        s.add(f" is a {rng.randint(20, 90)}-year-old {rng.choice(['woman', 'man'])} with CKD.")
    elif opener == 2:
        s.add(f"{rng.choice(['Mr.', 'Mrs.', 'Ms.'])} ")
        name = ev(rng.choice(LAST))
        s.add(name, "name_labelled")
        s.add("'s daughter called. ")
    else:
        s.add("Name: ")
        s.add(ev(f"{rng.choice(LAST)}, {rng.choice(FIRST)}"), "name_labelled")
        s.add(". ")
    label, value = m.dob()
    s.put(f" {label} ", ev(value), "dob")
    label, value = m.mrn()
    s.put(f", {label} ", ev(value), "mrn")
    s.put(". Phone ", ev(m.phone()), "phone")
    s.put(", SSN ", ev(m.ssn()), "ssn")
    s.put(", email ", ev(m.email()), "email")
    s.add(".")
    _clinical(s, rng)
    s.add(f" {rng.choice(['Seen by', 'Discussed with', 'Referred by', 'Signed:'])} ")
    s.add(rng.choice(["", "Dr. "]))
    s.add(ev(rng.choice([m.person(), m.person().lower()])), "name_labelled")
    s.put(". ", ev(m.person()), "name_unlabelled")
    s.add(rng.choice([" will follow up in two weeks.", " agreed with the plan.",
                      " reviewed the chart."]))  # fmt: skip
    return s


def _finance_case(m: Maker, rng: random.Random, evade: bool) -> Sample:
    s = Sample("finance_risk")
    ev = (lambda v: _evade(rng, v)) if evade else (lambda v: v)
    s.add(rng.choice(["Customer under review: ", "Originator: ", "Beneficiary: "]))
    s.add(ev(m.name_format()), "name_labelled")
    s.put(". IBAN ", ev(m.iban()), "iban")
    s.put(", card ", ev(m.card()), "card")
    s.put(", account no. ", ev(m.account()), "account_number")
    s.add(".")
    _finance(s, rng)
    s.put(" Funds moved to ", ev(m.person()), "name_unlabelled")
    s.put(", who can be reached at ", ev(m.phone()), "phone")
    s.put(" or ", ev(m.email()), "email")
    s.put(". SSN on file ", ev(m.ssn()), "ssn")
    s.add(".")
    return s


def _memory(m: Maker, rng: random.Random) -> tuple[Sample, Sample]:
    """A name seen once with its label, then in later text without it, in the variants
    a reader still recognises: case, surname alone, initial, a line break."""
    first, last = rng.choice(FIRST).split()[0], rng.choice(LAST)
    if " " in last:
        last = last.split()[-1].capitalize()
    seen = Sample("medicine")
    seen.add("Patient: ")
    seen.add(f"{first} {last}", "name_labelled")
    seen.add(".")
    later = Sample("medicine")
    variant = rng.choice(
        [f"{first} {last}".upper(), f"{first} {last}".lower(), last,
         f"{first[0]}. {last}", f"{first}\n{last}"]
    )  # fmt: skip
    later.add("Follow-up call: ")
    later.add(variant, "name_memory")
    later.add(" reports less dyspnoea.")
    _clinical(later, rng)
    return seen, later


def build(seed: int = 20, notes: int = 70, cases: int = 40, memory: int = 60) -> list[Sample]:
    """The evaluation set: ``notes`` clinical notes and ``cases`` finance texts, a quarter
    of each with evasions, and ``memory`` pairs (learn, then see again). In order: a
    ``memory`` pair's first sample must be redacted before its second."""
    rng = random.Random(seed)
    m = Maker(rng)
    out: list[Sample] = []
    for i in range(notes):
        out.append(_medicine_note(m, rng, evade=i % 4 == 3))
    for i in range(cases):
        out.append(_finance_case(m, rng, evade=i % 4 == 3))
    for _ in range(memory):
        out.extend(_memory(m, rng))
    return out


_MASK = re.compile(r"\[[A-Z_]+-[0-9a-f]{16}\]")


def masked_chars(original: str, redacted: str) -> list[bool]:
    """For each character of ``original``: was it replaced by a mask in ``redacted``?
    (Masks become one sentinel character, so a mask's hex digits cannot line up with the
    digits they replaced.)"""
    out = [True] * len(original)
    plain = _MASK.sub("\x00", redacted)
    matcher = difflib.SequenceMatcher(None, original, plain, autojunk=False)
    for a, _, size in matcher.get_matching_blocks():
        for i in range(a, a + size):
            out[i] = False
    return out


def _evaded(sample: Sample, start: int, end: int) -> bool:
    piece = sample.text[start:end]
    return any(z in piece for z in ZERO_WIDTH) or "\n" in piece


def score(samples: list[Sample], redact: Any) -> dict[str, Any]:
    """Recall per kind (an identifier is caught when all its letters and digits are
    masked), precision (masked letters and digits that were identifiers), and the share of
    clinical values and amounts that survived untouched; ``leaks`` lists what got out."""
    from domains.privacy import normalize

    caught: dict[str, list[bool]] = defaultdict(list)
    tp = fp = 0
    values_kept = values = 0
    leaks: list[tuple[str, str]] = []
    for s in samples:
        text = normalize(s.text)
        shift = _shifts(s.text)
        hit = masked_chars(text, redact(s.text, s.domain))
        inside = [False] * len(text)
        for start, end, kind in s.ids:
            a, b = shift[start], shift[end]
            ok = all(hit[i] for i in range(a, b) if text[i].isalnum())
            kinds = [kind] + (["evasion"] if _evaded(s, start, end) else [])
            for k in kinds:
                caught[k].append(ok)
            if not ok:
                leaks.append((kind, text[a:b]))
            for i in range(a, b):
                inside[i] = True
        for i, ch in enumerate(text):
            if hit[i] and ch.isalnum():
                tp, fp = (tp + 1, fp) if inside[i] else (tp, fp + 1)
        for start, end in s.values:
            a, b = shift[start], shift[end]
            values += 1
            values_kept += not any(hit[i] for i in range(a, b))
    recall = {k: (sum(v), len(v)) for k, v in sorted(caught.items())}
    return {
        "recall": recall,
        "identifiers": sum(len(v) for k, v in caught.items() if k != "evasion"),
        "precision": tp / max(1, tp + fp),
        "values_kept": (values_kept, values),
        "leaks": leaks,
    }


def _shifts(raw: str) -> list[int]:
    """Index in ``normalize(raw)`` of each index of ``raw`` (and its end)."""
    from domains.privacy import normalize

    out, n = [], 0
    for ch in raw:
        out.append(n)
        n += len(normalize(ch))
    return out + [n]
