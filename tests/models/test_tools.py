"""The calculator tool loop, against a scripted stand-in generator (tests/models/scripted.py)
and the real tiny tokenizer: results are inserted, every paused sequence of the batch resumes
in one call per round, prefixes stay token-identical, and caps stop runaway calls."""

from __future__ import annotations

import pytest

from domains.calc import CalcLimits
from domains.errors import PonderError
from models.engine import SamplingConfig
from models.example import train_tiny_tokenizer
from models.tools import ToolGenerator, with_tools
from tests.models.scripted import ScriptedGenerator

AG = "Na 140, Cl 100, HCO3 24. AG = <<140 - (100 + 24)>> mmol/L.\n\nAnswer: 16"
CRCL = "w <<2 * 3>>, k <<1 / 0>>, done.\n\nAnswer: x"


@pytest.fixture(scope="module")
def tok():
    return train_tiny_tokenizer()


def _engine(tok, scripts: dict[str, str], **kw) -> tuple[ToolGenerator, ScriptedGenerator]:
    inner = ScriptedGenerator(tok, scripts, **kw)
    return ToolGenerator(inner), inner


def test_result_is_inserted_and_generation_resumes(tok) -> None:
    tools, inner = _engine(tok, {"Q1:": AG})
    out = tools.generate(["Q1:"], SamplingConfig(max_tokens=200))[0].completions[0]
    assert out.text == AG.replace(">> mmol", ">> = 16 mmol")
    assert [(c.expression, c.result) for c in out.calls] == [("140 - (100 + 24)", "16")]
    assert tok.decode(out.token_ids) == out.text
    assert out.n_inserted == len(tok.encode(" = 16")) and out.n_generated > 0
    assert inner.calls == 2  # first pass, then one resume


def test_one_inner_call_per_round_for_the_whole_batch(tok) -> None:
    scripts = {f"Q{i}:": AG if i % 2 else CRCL for i in range(4)}
    tools, inner = _engine(tok, scripts)
    outs = tools.generate(list(scripts), SamplingConfig(n=3, max_tokens=200))
    assert [len(o.completions) for o in outs] == [3, 3, 3, 3]
    assert inner.calls == 3  # round 0, then two rounds: CRCL has two calls in a row
    crcl = outs[0].completions[0]
    assert [c.result for c in crcl.calls] == ["6", None]
    assert "<<1 / 0>> = error: division by zero" in crcl.text


def test_resumed_prompts_extend_the_old_token_ids(tok) -> None:
    tools, inner = _engine(tok, {"Q1:": AG})
    tools.generate(["Q1:"], SamplingConfig(max_tokens=200))
    first, resumed = inner.prompts
    assert resumed[: len(first)] == first  # the prefix cache sees the same ids


def test_a_stop_inside_a_token_is_cut_back_to_the_marker(tok) -> None:
    tools, _ = _engine(tok, {"Q1:": AG}, overrun=True)
    out = tools.generate(["Q1:"], SamplingConfig(max_tokens=200))[0].completions[0]
    assert tok.decode(out.token_ids) == out.text
    assert ">> = 16 mmol/L." in out.text


def test_step_stops_are_kept_and_calls_inside_a_step_run(tok) -> None:
    tools, _ = _engine(tok, {"Q1:": AG})
    out = tools.generate(["Q1:"], SamplingConfig(max_tokens=200, stop=["\n\n"]))
    text = out[0].completions[0].text
    assert text.endswith("mmol/L.\n\n") and "= 16" in text


def test_caps_stop_a_model_that_loops_on_calls(tok) -> None:
    loop = "x" + " <<1 + 1>>" * 12 + " end"
    tools = ToolGenerator(ScriptedGenerator(tok, {"Q:": loop}), CalcLimits(per_step=3))
    out = tools.generate(["Q:"], SamplingConfig(max_tokens=400))[0].completions[0]
    assert out.stop_reason == "calculator call limit"
    assert [c.error for c in out.calls][-1] == "call limit reached" and len(out.calls) == 4
    tools = ToolGenerator(ScriptedGenerator(tok, {"Q:": loop}), CalcLimits(per_path=5))
    out = tools.generate(["Q:"], SamplingConfig(max_tokens=400))[0].completions[0]
    assert len(out.calls) == 6 and out.stop_reason == "calculator call limit"


def test_unclosed_marker_at_the_token_cap_is_a_clean_stop(tok) -> None:
    tools, _ = _engine(tok, {"Q:": "a <<1 + 2 + 3 + 4 + 5 + 6 + 7 + 8 + 9>> b"})
    out = tools.generate(["Q:"], SamplingConfig(max_tokens=6))[0].completions[0]
    assert out.finish_reason == "length" and not out.calls
    assert out.stop_reason == "token cap inside a calculator call"


def test_budget_counts_generated_tokens_only(tok) -> None:
    tools, _ = _engine(tok, {"Q1:": AG})
    out = tools.generate(["Q1:"], SamplingConfig(max_tokens=200))[0].completions[0]
    head, tail = AG.split(">>")
    assert out.n_generated == len(tok.encode(head + ">>")) + len(tok.encode(tail))
    capped = tools.generate(["Q1:"], SamplingConfig(max_tokens=25))[0].completions[0]
    assert capped.n_generated <= 25 and capped.finish_reason == "length"


def test_plain_double_angle_text_is_not_a_call(tok) -> None:
    tools, _ = _engine(tok, {"Q:": "shift a >> b then stop"})
    out = tools.generate(["Q:"], SamplingConfig(max_tokens=100))[0].completions[0]
    assert out.text == "shift a >> b then stop" and not out.calls


def test_no_tools_leaves_the_generator_alone(tok) -> None:
    inner = ScriptedGenerator(tok, {"Q1:": AG})
    assert with_tools(inner, []) is inner
    assert isinstance(with_tools(inner, ["calc"]), ToolGenerator)
    with pytest.raises(PonderError, match="calc"):
        with_tools(inner, ["python"])
    out = inner.generate(["Q1:"], SamplingConfig(max_tokens=200))[0].completions[0]
    assert out.text == AG and not out.calls


@pytest.mark.parametrize("strategy", ["best_of_n", "beam", "mcts"])
def test_search_trees_record_calls_with_one_inner_call_per_round(tok, strategy: str) -> None:
    from models.search import SearchConfig, run_search
    from models.search.base import Problem
    from models.search.scorers import LogprobScorer

    scripts = {f"Q{i}:": AG if i % 2 else CRCL for i in range(3)}
    tools, inner = _engine(tok, scripts)
    problems = [
        Problem(id=p, prompt=tok.encode(p), answer_of=lambda t: t.rsplit(":", 1)[-1].strip())
        for p in scripts
    ]
    cfg = SearchConfig(width=2, branch=2, max_tokens=300, step_tokens=100, simulations=3)
    results = run_search(strategy, problems, cfg, tools, LogprobScorer())
    for r in results:
        calls = [c for n in r.tree.nodes for c in n.calls]
        assert calls and all(c.expression for c in calls)
        assert all(n.n_inserted <= n.n_tokens for n in r.tree.nodes)
    # every Generator call the strategy makes costs at most 1 + (calls in a row) inner rounds
    assert inner.calls <= results[0].generator_calls * 3
