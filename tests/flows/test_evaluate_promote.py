"""evaluate_promote: real inference on the tiny model, the gate, promotion and rollback,
and bad input that leaves the aliases untouched."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import polars as pl
import pytest

import flows.evaluate_promote as ep
from domains.base import get_domain
from domains.errors import PonderError
from flows.evaluate_promote import EvaluateParams, evaluate_promote
from models.registry import connect, get_version, parse_models_uri, register_hf_dir
from models.settings import get_settings
from tasks import evaluate as ev
from tasks.lake import Lake
from tasks.records import case_row, cases_frame

pytestmark = pytest.mark.usefixtures("prefect_harness")
DOMAIN = "medicine"
NAME = f"ponder-{DOMAIN}-policy"


@pytest.fixture(scope="module")
def versions(tiny_model: Path) -> list[str]:
    """Two registered versions of the tiny policy (same weights)."""
    return [str(register_hf_dir(tiny_model, NAME).version) for _ in range(2)]


def _aliases() -> dict[str, str]:
    return {a: str(v) for a, v in connect().get_registered_model(NAME).aliases.items()}


def _set(**aliases: str | None) -> None:
    client = connect()
    for alias in ("champion", "challenger", "previous"):
        if alias in _aliases():
            client.delete_registered_model_alias(NAME, alias)
    for alias, version in aliases.items():
        if version:
            client.set_registered_model_alias(NAME, alias, version)


def _seed(root: Path, n: int = 3) -> None:
    cases = get_domain(DOMAIN).generate(n, 21, difficulty=1)
    rows = [case_row(c, "test", 0.0, 0.0) for c in cases]  # all test
    Lake(root / "lake").write_version(DOMAIN, "cases", cases_frame(rows), ["test"])


def _params(**kw) -> EvaluateParams:
    base = {"domain": DOMAIN, "strategy": "cot", "width": 1, "max_tokens": 16}
    return EvaluateParams(**(base | kw))


def test_equal_challenger_is_not_promoted(fresh_lake, versions, monkeypatch) -> None:
    """Real inference (transformers backend): identical models, zero difference."""
    monkeypatch.setenv("PONDER_BACKEND", "transformers")
    get_settings.cache_clear()
    _seed(fresh_lake)
    v1, v2 = versions
    _set(champion=v1, challenger=v2)
    out = evaluate_promote(_params())
    assert not out.promoted and out.cases == 3 and out.accuracy_diff == 0.0
    assert out.reasons[0].startswith("FAIL accuracy +0.000")
    assert _aliases() == {"champion": v1, "challenger": v2}
    tags = connect().get_model_version(NAME, v2).tags
    assert tags["ponder.eval.decision"] == "fail" and tags["ponder.eval.run_id"] == out.run_id
    assert tags["ponder.eval.dataset"] == f"{DOMAIN}/cases@v00001"
    run = connect().get_run(out.run_id)
    assert {"challenger.accuracy", "champion.ece", "ci_low"} <= set(run.data.metrics)
    assert "plots/compare.png" in {a.path for a in connect().list_artifacts(out.run_id, "plots")}


def _seed_one_answer(root: Path, value: int = 2, n: int = 4) -> None:
    """Test cases that all have the same true value, so a fixed answer gets them right."""
    pool = get_domain(DOMAIN).generate(200, 31, difficulty=1)
    cases = [c for c in pool if c.truth["value"] == value][:n]
    rows = [case_row(c, "test", 0.0, 0.0) for c in cases]
    Lake(root / "lake").write_version(DOMAIN, "cases", cases_frame(rows), ["test"])


def _good_and_broken(root: Path, tmp_path: Path, monkeypatch) -> tuple[Path, Path]:
    """Seed cases whose answer is 2, and build two real models on the transformers
    backend: one that always answers ``Answer: 2``, and its twin with the LM head negated
    (never an answer line)."""
    import torch
    from safetensors.torch import load_file, save_file

    from tests.answering_lm import build_answering_lm

    monkeypatch.setenv("PONDER_BACKEND", "transformers")
    get_settings.cache_clear()
    _seed_one_answer(root)
    good = build_answering_lm(tmp_path / "good", "Answer: 2")
    broken = build_answering_lm(tmp_path / "broken", "Answer: 2")
    weights = load_file(broken / "model.safetensors")
    weights["lm_head.weight"] = torch.neg(weights["lm_head.weight"])
    save_file(weights, broken / "model.safetensors", metadata={"format": "pt"})
    return good, broken


def test_a_broken_challenger_is_refused_with_real_inference(
    fresh_lake, tmp_path, monkeypatch
) -> None:
    """Real inference (transformers backend) on two real models: a policy whose weights
    make it answer ``Answer: 2`` (right on every seeded case), and the same weights with
    the LM head negated (broken: no answer line). The gate must refuse the broken one as
    challenger, and, as a positive control, promote the good one over it."""
    good, broken = _good_and_broken(fresh_lake, tmp_path, monkeypatch)
    vg, vb = (str(register_hf_dir(p, NAME).version) for p in (good, broken))
    _set(champion=vg, challenger=vb)
    out = evaluate_promote(_params(gate={"max_cost_ratio": 100.0}))  # accuracy alone decides
    assert out.cases == 4 and out.accuracy_diff == -1.0 and not out.promoted
    assert out.reasons[0].startswith("FAIL accuracy -1.000")
    assert _aliases() == {"champion": vg, "challenger": vb}
    assert connect().get_model_version(NAME, vb).tags["ponder.eval.decision"] == "fail"
    _set(champion=vb, challenger=vg)  # positive control, through the CLI: the gate says yes
    from typer.testing import CliRunner

    from flows.cli import app

    args = ["evaluate", "--domain", DOMAIN, "--strategy", "cot", "--width", "1"]
    done = CliRunner().invoke(app, [*args, "--max-tokens", "16"])
    assert done.exit_code == 0, done.output
    assert "promoted" in done.output and "not promoted" not in done.output
    assert "PASS accuracy +1.000" in done.output
    assert _aliases() == {"champion": vg, "challenger": vg, "previous": vb}


def test_a_first_challenger_must_beat_its_base_model(fresh_lake, tmp_path, monkeypatch) -> None:
    """No champion yet: the challenger is measured against the base model it was tuned
    from (its ``ponder.base`` tag), with the same paired CI as against a champion; the
    floor is 0 here, so only that comparison can refuse it. Real inference on the
    answering model (right on every case) and its broken twin (never right)."""
    good, broken = _good_and_broken(fresh_lake, tmp_path, monkeypatch)
    base_good, base_broken = (str(register_hf_dir(p, NAME).version) for p in (good, broken))
    lineage = {"ponder.base": f"models:/{NAME}/{base_good}"}
    worse = str(register_hf_dir(broken, NAME, tags=lineage).version)
    _set(challenger=worse)
    gate = {"max_cost_ratio": 100.0, "floor": 0.0}
    out = evaluate_promote(_params(gate=gate))
    assert not out.promoted and out.champion is None
    assert out.baseline == f"models:/{NAME}/{base_good}" and out.accuracy_diff == -1.0
    assert out.reasons[0] == "PASS no champion yet: accuracy 0.000 >= floor 0.000"
    assert out.reasons[1].startswith("FAIL accuracy -1.000")
    assert "champion" not in _aliases()
    better = register_hf_dir(good, NAME, tags={"ponder.base": f"models:/{NAME}/{base_broken}"})
    _set(challenger=str(better.version))  # positive control: it beats its base, promoted
    out = evaluate_promote(_params(gate=gate))
    assert out.promoted and out.reasons[1].startswith("PASS accuracy +1.000")
    assert _aliases()["champion"] == str(better.version)
    lineage = SimpleNamespace(tags={"ponder.base": f"models:/{NAME}/{base_good}"})
    assert ep.gate_baseline(lineage, ev.GateConfig(first_baseline="none")) is None  # floor alone
    assert ep.gate_baseline(SimpleNamespace(tags={}), ev.GateConfig()) is None  # no lineage


def _canned(correct: dict[str, list[bool]]):
    """Stand-in for inference (named): per-model verdicts on the same four cases."""

    def predict(params, ctx, *, dataset, uri):
        verdicts = correct[uri.rsplit("/", 1)[1]]
        n = len(verdicts)
        return pl.DataFrame(
            {
                "case_id": [f"c{i}" for i in range(n)],
                "family": ["clinical_calc"] * n,
                "difficulty": [1] * n,
                "correct": verdicts,
                "parsed": [True] * n,
                "tokens": [20] * n,
                "latency_s": [0.01] * n,
                "confidence": [0.5] * n,
                "model_version": [uri] * n,
            }
        )

    return predict


def test_better_is_promoted_worse_is_not_and_a_failed_step_rolls_back(
    fresh_lake, versions, monkeypatch
) -> None:
    _seed(fresh_lake)
    v1, v2 = versions
    _set(champion=v1, challenger=v2)
    good, bad = [True] * 30, [False] * 30
    monkeypatch.setattr(ep, "_predict", _canned({v1: bad, v2: good}))
    import tasks.events as ponder_events

    events: list[dict] = []
    monkeypatch.setattr(ponder_events, "emit_event", lambda **kw: events.append(kw))
    out = evaluate_promote(_params())
    assert out.promoted and all(r.startswith("PASS") for r in out.reasons)
    assert [e["event"] for e in events] == ["ponder.policy.promoted"]
    assert _aliases() == {"champion": v2, "challenger": v2, "previous": v1}
    champion = get_version(parse_models_uri(f"models:/{NAME}@champion"))
    assert str(champion.version) == v2
    assert "evaluate_promote" in champion.tags["ponder.promoted_reason"]
    # the old champion, now worse than the new one, comes back as challenger: refused
    _set(champion=v2, challenger=v1, previous=v1)
    monkeypatch.setattr(ep, "_predict", _canned({v1: [True] * 10 + bad[10:], v2: good}))
    assert not evaluate_promote(_params()).promoted
    assert _aliases()["champion"] == v2
    # a step after the alias move fails: the transaction puts the aliases back
    _set(champion=v1, challenger=v2)
    monkeypatch.setattr(ep, "_predict", _canned({v1: bad, v2: good}))

    @ep.task
    def broken(name: str, version: str) -> None:
        raise RuntimeError("registry hiccup after the move")

    monkeypatch.setattr(ep, "check_champion", broken)
    with pytest.raises(RuntimeError, match="hiccup"):
        evaluate_promote(_params())
    assert _aliases() == {"champion": v1, "challenger": v2}


def test_bad_input_leaves_aliases_untouched(fresh_lake, versions, monkeypatch) -> None:
    v1, v2 = versions
    _set(champion=v1, challenger=v2)
    before = _aliases()
    with pytest.raises(PonderError, match="does not exist") as err:
        evaluate_promote(_params())  # nothing collected in this lake
    assert err.value.field == "dataset_version"
    _seed(fresh_lake)
    with pytest.raises(PonderError, match="v00009 does not exist"):
        evaluate_promote(_params(dataset_version="v00009"))
    with pytest.raises(PonderError, match="already the champion"):
        evaluate_promote(_params(challenger=f"models:/{NAME}/{v1}"))
    with pytest.raises(PonderError, match="not a medicine policy"):
        evaluate_promote(_params(challenger="models:/ponder-finance_risk-policy@challenger"))
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("PONDER_TRACKING_URI", f"http://127.0.0.1:{port}")
    get_settings.cache_clear()
    with pytest.raises(PonderError, match="127.0.0.1"):
        evaluate_promote(_params())
    monkeypatch.delenv("PONDER_TRACKING_URI")
    get_settings.cache_clear()
    connect()
    assert _aliases() == before
