"""Prompt injection in case notes changes no verifier score: the verifiers grade against
ground truth only, while the note (and so the injected text) still reaches the prompt.

That control-token strings stay plain text once the prompt is tokenized, for the policy,
the reward models and training rows, is checked in ``tests/models/test_chat.py``; that the
report escapes them, in ``tests/tasks/test_report.py``. Feedback rationales are stored as
data and read by no model, so no test claims more for them."""

from __future__ import annotations

import pytest

from domains.base import Case, get_domain
from tests.injection import CORPUS, inject


def _cases() -> list[Case]:
    out = []
    for name in ("finance_risk", "medicine"):
        d = get_domain(name)
        out += [c for f in sorted(d.families) for c in d.generate(6, 4, family=f)]
    return out


@pytest.mark.parametrize("injection", CORPUS)
def test_injected_notes_leave_verifier_scores_unchanged(injection: str) -> None:
    cases = _cases()
    answers = (
        [c.reference for c in cases]
        + [cases[(i + 1) % len(cases)].reference for i in range(len(cases))]
        + [injection]
    )
    changed = 0
    for case in cases:
        d = get_domain(case.domain)
        poisoned = case.model_copy(update={"inputs": inject(case.inputs, injection)})
        assert poisoned.inputs != case.inputs
        prompt = d.prompt(poisoned)[-1]["content"]
        assert injection.splitlines()[0] in prompt  # the text is passed on as data
        for text in answers:
            before, after = d.check(text, case), d.check(text, poisoned)
            changed += (before.score, before.correct) != (after.score, after.correct)
    assert changed == 0
