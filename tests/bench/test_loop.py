"""bench.loop's own logic: the simulated reviewer's first wrong step and the paired CI."""

from __future__ import annotations

import numpy as np
import pytest

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


def _stage(correct: list[float]) -> dict:
    cases = [f"c{i}" for i in range(len(correct))]
    return {
        "case_id": cases,
        "family": ["clinical_calc/bmi"] * len(correct),
        "correct": correct,
        "tokens": 100.0,
        "ece": 0.1,
        "accuracy": bootstrap(np.array(correct)),
    }


def test_the_report_states_every_goal_and_writes_both_plots(tmp_path, capsys) -> None:
    import argparse

    from bench.loop import Clock, plots, report

    search = [
        {"strategy": s, "n": 4, "accuracy": bootstrap(np.array(c)), "tokens_per_case": 400.0}
        | {"case_id": ["c0", "c1", "c2"], "correct": c, "ece": None}
        for s, c in (("self_consistency", [0.0, 1.0, 0.0]), ("beam", [1.0, 1.0, 0.0]))
    ]
    gate = {"promoted": True, "reasons": ["PASS accuracy"]}
    results = {
        "medicine": {
            "accuracy": {
                "base": _stage([0.0, 0.0, 0.0]),
                "sft": _stage([1.0, 0.0, 0.0]),
                "round1": _stage([1.0, 1.0, 0.0]),
                "round2": _stage([1.0, 1.0, 1.0]),
            },
            "orm": {"heldout_accuracy": 0.9, "heldout_examples": 8},
            "prm": {"heldout_auroc": 0.7, "heldout_examples": 5},
            "simulated_labels": 12,
            "gates": {"round1": gate, "round2": gate},
            "search": search,
        }
    }
    report(results, argparse.Namespace(), Clock(stages={"medicine: collect": 6.0}))
    plots(results, tmp_path)
    out = capsys.readouterr().out
    for goal in ("goal 1", "goal 2", "goal 3 at N=4", "goal 4", "goal 5"):
        assert goal in out
    assert "beam - self_consistency +33.3%" in out  # paired over the same three cases
    assert "clinical_calc/bmi" in out and "ECE n/a" in out
    assert (tmp_path / "stages.png").stat().st_size > 0
    assert (tmp_path / "search.png").stat().st_size > 0


def test_a_stopped_run_reports_and_plots_the_stages_it_reached(tmp_path, capsys) -> None:
    import argparse

    from bench.loop import Clock, plots, report

    results = {
        "medicine": {
            "accuracy": {"base": _stage([0.0, 0.0, 0.0]), "sft": _stage([1.0, 1.0, 0.0])},
            "orm": {"heldout_accuracy": 0.9, "heldout_examples": 8},
        }
    }
    report(results, argparse.Namespace(), Clock(stages={"medicine: collect": 6.0}))
    plots(results, tmp_path)
    out = capsys.readouterr().out
    assert "sft     66.7%" in out and "ORM held-out pairwise accuracy: 0.9" in out
    assert "goal 1" not in out and "round2" not in out  # no figure for a stage not run
    assert (tmp_path / "stages.png").stat().st_size > 0


def test_a_resumed_run_takes_finished_stages_from_the_journal(tmp_path) -> None:
    from bench.loop import Clock

    calls: list[str] = []

    def stage(name: str) -> dict:
        calls.append(name)
        return {"version": name, "accuracy": [1.0, 0.0]}

    first = Clock(journal=tmp_path / "journal.json")
    assert first.run("collect", stage, "v1") == {"version": "v1", "accuracy": [1.0, 0.0]}
    with pytest.raises(ZeroDivisionError):  # the run stops here
        first.run("finetune", lambda: 1 / 0)
    again = Clock(journal=tmp_path / "journal.json")
    assert again.run("collect", stage, "v2") == {"version": "v1", "accuracy": [1.0, 0.0]}
    assert again.run("finetune", stage, "v3") == {"version": "v3", "accuracy": [1.0, 0.0]}
    assert calls == ["v1", "v3"]  # collect ran once; the failed stage ran again


def test_a_stage_closes_only_the_engines_it_started(monkeypatch) -> None:
    """Engines the caller already ran (a test session's shared engine, say) stay up."""
    from bench.loop import Clock
    from models import engine

    class Engine:
        closed = False

        def close(self) -> None:
            self.closed = True

    theirs, ours = Engine(), Engine()
    monkeypatch.setattr(engine, "_ENGINES", {("theirs", "vllm"): theirs})

    def stage() -> dict:
        engine._ENGINES[("ours", "vllm")] = ours
        return {}

    Clock().run("infer", stage)
    assert ours.closed and not theirs.closed
    assert list(engine._ENGINES) == [("theirs", "vllm")]


def test_simulated_labels_pass_collects_validation(tmp_path) -> None:
    """The labels go through the path a person's CSV takes; none may be quarantined."""
    import polars as pl

    from bench.loop import label_row
    from tasks.records import check_feedback, normalize_feedback, split_feedback

    path = tmp_path / "simulated.csv"
    pl.DataFrame([label_row("case-1", 3, 2), label_row("case-2", 5, 0)]).write_csv(path)
    frame = normalize_feedback(pl.scan_csv(path), "file:simulated.csv")
    valid, rejected = split_feedback(check_feedback(frame))
    assert rejected.collect().height == 0, rejected.collect()["reason"].to_list()
    assert valid.collect()["first_wrong_step"].to_list() == [2, 0]
