"""The plug-in contract: registry, entry points, and a whole new domain in under 50 lines."""

from __future__ import annotations

import inspect
import random

import pytest
from pydantic import BaseModel

from domains.base import DOMAINS, Domain, Family, Verdict, get_domain, register
from domains.errors import PonderError


# --- a complete tiny vertical: the README's "add a domain" example --------------------------
class SumInputs(BaseModel):
    a: int
    b: int


class SumAnswer(BaseModel):
    total: int


class Addition(Family):
    name = "addition"
    Inputs, Answer = SumInputs, SumAnswer
    instructions = "Add the two numbers."
    answer_example = '{"total": 3}'

    def sample(self, rng: random.Random, difficulty: int):
        a, b = rng.randrange(10**difficulty), rng.randrange(10**difficulty)
        return {"a": a, "b": b}, {"total": a + b}, [f"{a} + {b} = {a + b}."]

    def render(self, x: SumInputs) -> str:
        return f"a = {x.a}, b = {x.b}"

    def grade(self, inputs, truth: SumAnswer, answer: SumAnswer) -> Verdict:
        ok = truth.total == answer.total
        return Verdict(score=float(ok), correct=ok, detail="ok" if ok else "wrong sum")


class Arithmetic(Domain):
    name = "arithmetic"
    persona = "You are a careful calculator."
    families = {"addition": Addition()}


# --------------------------------------------------------------------------------------------


def test_tiny_domain_under_50_lines_and_works() -> None:
    source = inspect.getsource(SumInputs) + inspect.getsource(SumAnswer)
    source += inspect.getsource(Addition) + inspect.getsource(Arithmetic)
    assert len([line for line in source.splitlines() if line.strip()]) < 50
    register(Arithmetic)
    try:
        d = get_domain("arithmetic")
        case = d.generate(1, seed=0, difficulty=2)[0]
        assert d.check(case.reference, case).correct
        assert not d.check('## Step 1: guess.\n\nAnswer: {"total": -1}', case).correct
        assert d.prompt(case)[1]["content"].count("a = ") == 1
    finally:
        DOMAINS.pop("arithmetic")


def test_unknown_domain_lists_valid_names() -> None:
    with pytest.raises(PonderError) as err:
        get_domain("astrology")
    assert "finance_risk" in err.value.fix and "medicine" in err.value.fix


def test_entry_points_registered() -> None:
    from importlib.metadata import entry_points

    names = {ep.name for ep in entry_points(group="ponder.domains")}
    assert {"finance_risk", "medicine"} <= names


def test_unknown_family_and_difficulty() -> None:
    d = get_domain("finance_risk")
    with pytest.raises(PonderError, match="no family"):
        d.generate(1, 0, family="tax")
    with pytest.raises(PonderError, match="out of range"):
        d.generate(1, 0, difficulty=6)


def test_generation_is_deterministic_by_seed() -> None:
    d = get_domain("medicine")
    assert d.generate(5, 7) == d.generate(5, 7)
    assert d.generate(5, 7) != d.generate(5, 8)
