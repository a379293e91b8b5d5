"""bench.loop's own logic: the simulated reviewer's first wrong step and the paired CI."""

from __future__ import annotations

import numpy as np

from bench.loop import bootstrap, first_wrong_step, paired

REFERENCE = (
    "## Step 1: Read from the note:\n- Na 136 mmol/L\n- Cl 93 mmol/L\n- HCO3 21 mmol/L\n"
    "## Step 2: Compute:\n- anion gap = <<136 - (93 + 21)>> = 22 mmol/L\n"
    'Answer: {"value": 22.0, "criteria": []}'
)


def test_the_first_step_with_a_number_the_reference_lacks_is_blamed() -> None:
    good = ["## Step 1: Na 136, Cl 93, HCO3 21", "## Step 2: <<136 - (93 + 21)>> = 22"]
    misread = ["## Step 1: Na 136, Cl 98, HCO3 21", "## Step 2: <<136 - (98 + 21)>> = 17"]
    late = ["## Step 1: Na 136, Cl 93, HCO3 21", "## Step 2: <<136 - (93 + 21)>> = 24"]
    assert first_wrong_step(good, REFERENCE, correct=True) == 0
    assert first_wrong_step(misread, REFERENCE, correct=False) == 1
    assert first_wrong_step(late, REFERENCE, correct=False) == 2
    # a wrong answer whose numbers all appear in the reference blames its last step
    assert first_wrong_step(good[:1], REFERENCE, correct=False) == 1
    assert first_wrong_step(["## Step 1: 136.0 and 93"], REFERENCE, correct=True) == 0


def test_paired_difference_and_its_interval() -> None:
    before = {"case_id": ["a", "b", "c", "d"], "correct": [0.0, 0.0, 1.0, 0.0]}
    after = {"case_id": ["d", "c", "b", "a"], "correct": [1.0, 1.0, 1.0, 1.0]}
    mean, low, high = paired(before, after)
    assert mean == 0.75 and 0.0 <= low <= mean <= high <= 1.0
    assert bootstrap(np.ones(5)) == (1.0, 1.0, 1.0)
