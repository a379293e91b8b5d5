"""finetune on the tiny model: SFT + GRPO, challenger with lineage tags, resume, bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from domains.base import Case, get_domain
from domains.errors import PonderError
from flows.finetune import FinetuneParams, finetune
from models.engine import Completion, GenerationOutput
from models.policy import PolicyTrainConfig
from models.registry import connect, model_name
from models.settings import get_settings
from tasks import finetune as ft
from tasks.lake import Lake
from tasks.records import case_row, cases_frame

pytestmark = pytest.mark.usefixtures("prefect_harness")
DOMAIN = "medicine"
TRAIN = PolicyTrainConfig(
    sft_max_steps=1,
    grpo_max_steps=2,
    num_generations=2,
    batch_size=2,
    max_completion_length=8,
    save_steps=1,
    learning_rate=1e-3,
)


def _seed(root: Path, n: int = 4) -> list[Case]:
    cases = get_domain(DOMAIN).generate(n, 8, difficulty=1)
    rows = [case_row(c, "test", 1.0, 0.0) for c in cases]  # all train
    Lake(root / "lake").write_version(DOMAIN, "cases", cases_frame(rows), ["test"])
    return cases


def _params(tiny_model: Path, **kw) -> FinetuneParams:
    base = {
        "domain": DOMAIN,
        "base_model": str(tiny_model),
        "orm": None,
        "train": TRAIN,
        "curriculum": False,
    }
    return FinetuneParams(**(base | kw))


def test_finetune_registers_challenger_and_resumes(
    fresh_lake, tiny_model, tiny_prm, monkeypatch
) -> None:
    import tasks.events as ponder_events

    events: list[dict] = []
    monkeypatch.setattr(ponder_events, "emit_event", lambda **kw: events.append(kw))
    _seed(fresh_lake)
    out = finetune(_params(tiny_model, prm=str(tiny_prm)))
    (event,) = events  # evaluate-promote's trigger
    assert event["event"] == "ponder.policy.challenger"
    assert event["payload"]["uri"] == f"models:/{model_name(DOMAIN, 'policy')}/{out.version}"
    assert out.steps == 2 and out.rows == 4
    client = connect()
    version = client.get_model_version_by_alias(model_name(DOMAIN, "policy"), "challenger")
    assert str(version.version) == out.version
    tags = version.tags
    assert tags["ponder.dataset"].startswith(f"{DOMAIN}/cases@v00001:")
    assert tags["ponder.base"].startswith("path:") and tags["ponder.config_hash"]
    assert tags["ponder.rewards"] == "correctness,format,brevity,efficiency,prm"
    assert tags["ponder.prm"].startswith("path:") and tags["ponder.orm"] == "none"
    import mlflow

    run = mlflow.get_run(out.run_id)
    assert "train_loss" in run.data.metrics or "loss" in run.data.metrics
    arts = {a.path for a in client.list_artifacts(out.run_id, "plots")}
    assert "plots/reward_curves.png" in arts


def test_resume_after_an_interrupt_continues_the_same_run(fresh_lake, tiny_model, monkeypatch):
    """Simulated in-process: a KeyboardInterrupt after checkpoint 1 (cleanup handlers still
    run). The real SIGKILL of a child process is tests/reliability/test_kill.py."""
    import flows.finetune as flow_module

    _seed(fresh_lake, n=3)  # other data than the test above: its own work folder
    real = flow_module.grpo_job

    def killed_after_step_1(rows, start, work, rewards, *, cfg, **kw):
        real(rows, start, work, rewards, cfg=cfg.model_copy(update={"grpo_max_steps": 1}), **kw)
        raise KeyboardInterrupt("interrupted after checkpoint-1")

    monkeypatch.setattr(flow_module, "grpo_job", killed_after_step_1)
    folders = Path(get_settings().home, "runs", "finetune")
    before = set(folders.glob("*"))
    with pytest.raises(BaseException, match="interrupted"):
        finetune(_params(tiny_model))
    monkeypatch.setattr(flow_module, "grpo_job", real)
    (work,) = set(folders.glob("*")) - before  # this run's own folder, not the newest one
    killed_run = (work / "mlflow_run_id").read_text()
    assert [p.name for p in (work / "grpo-checkpoints").glob("checkpoint-*")] == ["checkpoint-1"]
    out = finetune(_params(tiny_model))
    assert out.run_id == killed_run and out.steps == 2
    assert sorted(p.name for p in (work / "grpo-checkpoints").glob("checkpoint-*")) == [
        "checkpoint-1",
        "checkpoint-2",
    ]


def test_isolated_training_reports_into_the_same_run(fresh_lake, tiny_model) -> None:
    """The GPU default (a spawned training process) forced on CPU: TRL's metrics from the
    child land in the parent's MLflow run, and the model comes back registered."""
    _seed(fresh_lake, n=2)
    train = TRAIN.model_copy(update={"isolate": True, "grpo_max_steps": 1})
    out = finetune(_params(tiny_model, train=train))
    assert out.steps == 1
    client = connect()
    history = client.get_metric_history(out.run_id, "reward")
    assert [m.step for m in history] == [1]
    assert (Path(out.work_dir) / "progress").read_text() == "1"


def test_bad_input(fresh_lake, tiny_model, tiny_reward_model) -> None:
    with pytest.raises(PonderError, match="no versions"):
        finetune(_params(tiny_model))
    _seed(fresh_lake)
    with pytest.raises(PonderError, match="no train rows for family"):
        finetune(_params(tiny_model, family="nope_calc"))
    with pytest.raises(PonderError, match="not a causal LM"):
        finetune(_params(tiny_model, base_model=str(tiny_reward_model)))
    with pytest.raises(PonderError, match="reward_weights"):
        finetune(_params(tiny_model, reward_weights={"correctness": 1.0}))


class _Canned:
    """A generator that answers each prompt with the reference K/2 times and junk K/2."""

    def __init__(self, cases: list[Case], solved: set[str]) -> None:
        self.by_prompt = {str(get_domain(DOMAIN).prompt(c)): c for c in cases}
        self.solved = solved

    def generate(self, prompts, params):
        outs = []
        for p in prompts:
            case = self.by_prompt[str(p)]
            good = case.id in self.solved
            texts = [case.reference if (good and i % 2 == 0) else "junk" for i in range(params.n)]
            outs.append(
                GenerationOutput(
                    prompt_token_ids=[1],
                    completions=[
                        Completion(
                            text=t, token_ids=[1, 2], finish_reason="stop", cumulative_logprob=0.0
                        )
                        for t in texts
                    ],
                )
            )
        return outs


def test_curriculum_band_and_zero_variance() -> None:
    d = get_domain(DOMAIN)
    easy, hard = d.generate(2, 3, difficulty=1), d.generate(2, 3, difficulty=4)
    rows = [ft.row_of(d, c) for c in easy + hard]
    rewards = ft.reward_setup(d, {}, None)
    funcs, weights = rewards.build(), rewards.weight_values
    gen = _Canned(easy + hard, solved={easy[0].id})  # easy[1] and hard never solved
    kept, report = ft.curriculum.fn(
        rows, gen, d, funcs, weights=weights, samples=4, max_tokens=64, band=(0.1, 0.9)
    )
    assert report["pass_rate_by_difficulty"] == {1: 0.25, 4: 0.0}
    assert report["levels"] == [1] and report["in_band"]
    assert [r["case"] for r in kept] == [easy[0].model_dump_json()]
    assert report["zero_variance_groups"] == 1  # easy[1]: all junk, all rewards equal
