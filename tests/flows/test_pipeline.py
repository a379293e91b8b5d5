"""pipeline on the tiny model: every stage in order, references passed along, the GPU
stages as subflows in their own process, and bad configuration refused up front."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from prefect import flow
from prefect.runtime import flow_run
from pydantic import BaseModel, ValidationError

from domains.errors import PonderError
from flows.pipeline import PipelineParams, PipelineResult, run_stage
from models.registry import connect, model_name
from models.settings import get_settings
from tests.aliases import clear_aliases

pytestmark = pytest.mark.usefixtures("prefect_harness")
DOMAIN = "medicine"


def _params(tiny: Path, **kw) -> PipelineParams:
    model = str(tiny)
    search = {"model": model, "width": 2, "max_tokens": 24, "step_tokens": 8, "max_depth": 3}
    base = {
        "domain": DOMAIN,
        "collect": {"per_cell": 2, "sources": ["generator"], "train": 0.6, "test": 0.3},
        "rollouts": {"split": None, "strategy": "self_consistency", **search},
        "refresh": {
            "policy": model,
            "mc_rollouts": 2,
            "mc_max_tokens": 8,
            "floor": 0.0,
            "train": {"max_steps": 1, "batch_size": 2, "max_length": 2048},
        },
        "finetune": {
            "base_model": model,
            "curriculum": False,
            "max_rows": 4,
            "train": {
                "sft_max_steps": 1,
                "grpo_max_steps": 1,
                "num_generations": 2,
                "batch_size": 2,
                "max_completion_length": 8,
            },
        },
        "evaluate": {
            "strategy": "cot",
            "width": 1,
            "max_tokens": 16,
            "gate": {"floor": 0.0, "first_baseline": "none"},  # plumbing: a random model
        },
        "infer": {"strategy": "beam", **(search | {"model": None})},
        "isolate": False,
    }
    return PipelineParams(**(base | kw))


def _through_the_cli(params: PipelineParams, tmp_path: Path, monkeypatch) -> PipelineResult:
    """``ponder pipeline --config`` on ``params`` written as YAML: exit code 0, the summary
    printed; returns the flow's result as the CLI received it (wrapped, not replaced)."""
    import yaml
    from typer.testing import CliRunner

    import flows.cli as cli
    from flows import views

    seen: list = []
    show = views.pipeline
    monkeypatch.setattr(views, "pipeline", lambda out: (seen.append(out), show(out)))
    config = tmp_path / "pipeline.yaml"
    config.write_text(yaml.safe_dump(params.model_dump(mode="json", exclude_unset=True)))
    done = CliRunner().invoke(cli.app, ["pipeline", "--config", str(config)])
    assert done.exit_code == 0, done.output
    assert "MLflow registry after the run" in done.output and "HTML report" in done.output
    return seen[0]


def test_pipeline_runs_every_stage_and_passes_references(
    fresh_lake, tiny_model, tmp_path, monkeypatch
) -> None:
    """Through `ponder pipeline --config` (the CLI's success path for the whole loop)."""
    monkeypatch.setenv("PONDER_BACKEND", "transformers")
    get_settings.cache_clear()
    for kind in ("policy", "orm", "prm"):
        clear_aliases(model_name(DOMAIN, kind))
    out = _through_the_cli(_params(tiny_model), tmp_path, monkeypatch)
    refs, stages = out.references, out.stages
    ran = [name for name, result in stages if result is not None]
    assert ran == ["collect", "rollouts", "refresh", "finetune", "evaluate", "infer"]
    assert refs.cases == f"lake:cases@{stages.collect.cases.version}"
    policy = model_name(DOMAIN, "policy")
    # finetune's challenger is what evaluate judged, and (floor 0, no champion) promoted
    assert refs.challenger == f"models:/{policy}/{stages.finetune.version}"
    assert stages.evaluate.challenger == stages.finetune.version
    assert stages.evaluate.promoted and refs.champion == refs.challenger
    # the final scoring used the new champion, on the collected cases
    assert stages.infer.model == f"models:/{policy}/{stages.finetune.version}"
    version = refs.cases.rsplit("@", 1)[1]
    assert stages.infer.input == f"lake:{DOMAIN}/cases@{version}[test]"
    assert Path(stages.infer.report).is_file()
    # the ORM the refresh promoted is the one finetune trained against
    orm = stages.refresh.orm
    run = connect().get_run(stages.finetune.run_id)
    # aliases were cleared and the floor is 0, so a held-out metric must be promoted
    assert orm.heldout_examples > 0 and orm.decision == "promoted", orm
    assert refs.orm == f"models:/{model_name(DOMAIN, 'orm')}/{orm.version}"
    assert run.data.params["orm"] == refs.orm
    champion = [r for r in out.registry if r["name"] == policy and "champion" in r["aliases"]]
    assert champion[0]["version"] == stages.finetune.version


class Probe(BaseModel):
    """Parameters of the probe flow below."""

    tag: str = "probe"


@flow(name="probe")
def probe(params: Probe | None = None) -> dict:
    """Where it ran: process, its parent flow run, the environment; tag 'fail' raises."""
    if params is not None and params.tag == "fail":
        raise PonderError("tag", "probe failed on purpose", "pass another tag")
    return {
        "pid": os.getpid(),
        "tag": (params or Probe()).tag,
        "parent": flow_run.get_parent_flow_run_id(),
        "env": os.environ.get("PONDER_BACKEND"),
    }


def test_isolated_stage_is_a_subflow_in_another_process(monkeypatch) -> None:
    """The child imports the flow by reference, carries the parent's context and API
    address (one server, parent link) and the environment; its result comes back."""
    monkeypatch.setenv("PONDER_BACKEND", "transformers")

    @flow(name="parent-of-isolated")
    def parent() -> tuple[str, dict]:
        ref = "tests.flows.test_pipeline:probe"
        return flow_run.get_id(), run_stage(ref, Probe(tag="t1"), isolate=True)

    parent_id, out = parent()
    assert out["pid"] != os.getpid() and out["tag"] == "t1"
    assert out["parent"] == parent_id and out["env"] == "transformers"


def test_an_isolated_vllm_stage_returns(fresh_lake, tiny_model, monkeypatch) -> None:
    """A stage that started a vLLM engine (its own process) still comes back: the engine is
    closed before the child returns (it used to keep the child, and the parent, waiting)."""
    from flows.collect import CollectParams
    from flows.infer import InferParams

    monkeypatch.setenv("PONDER_BACKEND", "vllm")
    get_settings.cache_clear()
    run_stage(
        "flows.collect:collect", CollectParams(domain=DOMAIN, per_cell=1, test=0.5, train=0.4)
    )
    cfg = InferParams(
        domain=DOMAIN,
        model=str(tiny_model),
        strategy="cot",
        width=1,
        max_tokens=16,
        dtype="float32",
        max_model_len=2048,
        log_traces=0,
    )

    @flow(name="parent-of-vllm")
    def parent() -> dict:
        return run_stage("flows.infer:infer", cfg, isolate=True)

    out = parent()
    assert out.cases > 0 and out.version


def test_a_failing_isolated_stage_raises_its_error() -> None:
    @flow(name="parent-of-failing")
    def parent() -> None:
        run_stage("tests.flows.test_pipeline:probe", Probe(tag="fail"), isolate=True)

    with pytest.raises(PonderError, match="probe failed on purpose"):
        parent()


def test_bad_configuration_is_refused_before_anything_runs() -> None:
    with pytest.raises(ValidationError, match="finetune.domain is 'finance_risk'"):
        PipelineParams(domain="medicine", finetune={"domain": "finance_risk"})
    with pytest.raises(ValidationError, match="grpo_max_steps"):
        PipelineParams(finetune={"train": {"grpo_max_steps": 0}})
    cfg = PipelineParams(domain="finance_risk", rollouts=None)
    assert cfg.collect.domain == "finance_risk" and cfg.infer.domain == "finance_risk"
