"""Flow ``evaluate_promote``: challenger vs champion on a frozen eval set, then the gate.

Both policies run through the ``infer`` flow (same strategy, width and token cap; one
engine at a time) on one exact cases version. The paired comparison, its reasons and
metrics are recorded as version tags and an MLflow run, with a Prefect markdown artifact;
when the gate passes, ``champion`` moves to the challenger and ``previous`` to the old
champion inside one Prefect transaction keyed by the model name, serialized per model and
checked against the champion that was evaluated (a concurrent promotion makes this one
refuse, never leaves two champions). Bad input fails before anything is touched.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import polars as pl
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.transactions import Transaction, get_transaction, transaction
from pydantic import BaseModel, ConfigDict, Field

from domains.base import DomainName
from domains.calc import ToolNames
from domains.errors import PonderError
from flows.infer import InferParams, infer
from models.registry import (
    alias_version,
    connect,
    ensure_experiment,
    get_version,
    model_name,
    parse_models_uri,
    promote,
    set_version_tags,
)
from models.runs import tracked_run
from models.search import StrategyName
from tasks import evaluate as ev
from tasks.artifacts import markdown_artifact
from tasks.context import StageContext
from tasks.events import POLICY_PROMOTED, announce
from tasks.lake import Lake


class EvaluateParams(BaseModel):
    """Parameters of one evaluation (a form in the Prefect UI)."""

    model_config = ConfigDict(extra="forbid")

    domain: DomainName = Field(default="medicine", description="Registered domain name.")
    dataset_version: str | None = Field(
        default=None, description="Frozen cases version (vNNNNN); None = latest, pinned."
    )
    split: str = Field(default="test", description="Split of the cases evaluated.")
    challenger: str | None = Field(
        default=None, description="models:/ URI; default ponder-<domain>-policy@challenger."
    )
    strategy: StrategyName = Field(
        default="self_consistency", description="Search strategy, both sides."
    )
    width: int = Field(default=4, ge=1, le=256, description="N: samples, beams or rollouts.")
    max_tokens: int = Field(
        default=512, ge=16, le=262_144, description="Generated-token cap per case."
    )
    temperature: float = Field(default=0.8, ge=0, le=2, description="Sampling temperature.")
    seed: int = Field(
        ge=0, le=2**32 - 1, default=0, description="Sampling seed (same for both sides)."
    )
    tools: ToolNames = None
    gate: ev.GateConfig = Field(default_factory=ev.GateConfig, description="Promotion rules.")
    promote: bool = Field(default=True, description="Move the aliases when the gate passes.")


class EvaluateResult(BaseModel):
    """The gate's decision on one challenger, with the evidence."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Registered model name.")
    challenger: str = Field(description="The challenger's version.")
    champion: str | None = Field(description="The champion's version; None for a first one.")
    baseline: str | None = Field(description="What the challenger was measured against.")
    dataset: str = Field(description="Frozen cases version evaluated on.")
    strategy: str = Field(description="Search strategy and budget, both sides.")
    promote: bool = Field(description="Whether the gate passed.")
    promoted: bool = Field(description="Whether the aliases moved (gate passed and promote on).")
    reasons: list[str] = Field(description="One PASS/FAIL line per gate check.")
    cases: int = Field(description="Cases both sides answered.")
    unmatched: int = Field(description="Cases only one side answered.")
    accuracy_diff: float | None = Field(description="Challenger minus incumbent accuracy.")
    ci: list[float] | None = Field(description="95% paired bootstrap CI of the difference.")
    metrics: dict[str, dict[str, float]] = Field(description="Metrics per side.")
    run_id: str = Field(description="The MLflow run.")

    @property
    def uri(self) -> str:
        """The challenger as a registry URI."""
        return f"models:/{self.name}/{self.challenger}"


@flow(name="evaluate_promote")
def evaluate_promote(
    params: EvaluateParams | None = None, challenger: str | None = None
) -> EvaluateResult:
    """Evaluate both sides, decide with a paired bootstrap, record, promote. ``challenger``
    (a models:/ URI) overrides ``params.challenger``: the ``ponder.policy.challenger``
    trigger passes the announced version here, keeping the deployment's ``params``."""
    params = params or EvaluateParams()
    ctx = StageContext.open(params.domain)
    if challenger is not None:
        params = params.model_copy(update={"challenger": challenger})
    client = connect()  # an unreachable registry fails here, before anything runs
    name = model_name(params.domain, "policy")
    version, champion = _sides(client, params, name)
    challenger = str(version.version)
    dataset = _dataset(params, ctx.lake)
    preds = {
        "challenger": _predict(params, ctx, dataset=dataset, uri=f"models:/{name}/{challenger}")
    }
    incumbent = f"models:/{name}/{champion}" if champion else gate_baseline(version, params.gate)
    if incumbent is not None:
        preds["champion"] = _predict(params, ctx, dataset=dataset, uri=incumbent)
    result = _compare(preds, params.gate, first=champion is None)
    summary = {
        "name": name,
        "challenger": challenger,
        "champion": champion,
        "baseline": incumbent,
        "dataset": f"{params.domain}/cases@{dataset}",
        "strategy": f"{params.strategy} N={params.width} max_tokens={params.max_tokens}",
        **result["summary"],
    }
    summary["run_id"] = _log_run(params, summary, result)
    record_decision(name, challenger, summary)
    if summary["promote"] and params.promote:
        _promote(name, challenger, champion, summary)
        announce(POLICY_PROMOTED, params.domain, uri=f"models:/{name}/{challenger}")
    summary["promoted"] = bool(summary["promote"] and params.promote)
    markdown_artifact(
        domain=params.domain,
        key=f"evaluate-{params.domain.replace('_', '-')}",
        markdown=ev.markdown(summary, result["metrics"], result["table"], result.get("plot_png")),
        description=f"{name}: challenger v{challenger} vs champion",
    )
    get_run_logger().info("decision: %s", summary["reasons"])
    return EvaluateResult(**summary)


def _sides(client: Any, params: EvaluateParams, name: str) -> tuple[Any, str | None]:
    """The challenger's registry version and the champion's version (None for none yet)."""
    version = _challenger(client, params, name)
    champion = alias_version(client, name, "champion")
    if champion == str(version.version):
        raise PonderError(
            "challenger",
            f"{name}/{champion} is already the champion",
            "register a new challenger (ponder finetune) before evaluating",
        )
    return version, champion


def _challenger(client: Any, params: EvaluateParams, name: str) -> Any:
    uri = params.challenger or f"models:/{name}@challenger"
    ref = parse_models_uri(uri)
    if ref.name != name:
        raise PonderError(
            "challenger",
            f"{uri} is not a {params.domain} policy (expected {name})",
            f"evaluate models:/{name}@challenger, or set --domain to the model's domain",
        )
    return get_version(ref, client)


def _dataset(params: EvaluateParams, lake: Lake) -> str:
    try:
        info = (
            lake.info(params.domain, "cases", params.dataset_version)
            if params.dataset_version
            else lake.latest(params.domain, "cases")
        )
    except PonderError:  # an unknown version; the error below lists the real ones
        info = None
    if info is None:
        have = lake.versions(params.domain, "cases")
        raise PonderError(
            "dataset_version",
            f"{params.domain}/cases@{params.dataset_version or 'latest'} does not exist",
            f"use one of {have} or run `ponder collect`" if have else "run `ponder collect`",
        )
    return info.version


def _predict(params: EvaluateParams, ctx: StageContext, *, dataset: str, uri: str) -> pl.DataFrame:
    """One side's predictions through the infer flow; the engine is closed afterwards, so
    only one model is in memory at a time."""
    with ctx.engines():
        out = infer(
            InferParams(
                domain=params.domain,
                input=f"lake:cases@{dataset}",
                split=params.split,
                model=uri,
                strategy=params.strategy,
                width=params.width,
                max_tokens=params.max_tokens,
                temperature=params.temperature,
                seed=params.seed,
                log_traces=0,
                tools=params.tools,
            )
        )
    if not out.version:
        raise PonderError(
            "dataset_version",
            f"{params.domain}/cases@{dataset} has no {params.split} cases",
            "evaluate a version with test cases: collect more, or a larger `test` share",
        )
    frame = ctx.lake.scan(params.domain, "predictions", out.version)
    return frame.filter(pl.col("model_version") == out.model).collect()


def gate_baseline(version: Any, gate: ev.GateConfig) -> str | None:
    """What a first challenger must beat: the base model it was fine-tuned from (its
    ``ponder.base`` tag); None when the gate asks for the floor alone or the version has
    no such lineage."""
    if gate.first_baseline == "none":
        return None
    base = (version.tags or {}).get("ponder.base", "")
    if base.startswith("models:/"):
        return base
    if base.startswith("path:"):
        return base.removeprefix("path:")
    return None


def _compare(
    preds: dict[str, pl.DataFrame], gate: ev.GateConfig, first: bool = False
) -> dict[str, Any]:
    """The gate on both sides' predictions. ``first``: no champion yet, so the challenger
    must also reach the floor (and, when its base model was evaluated as the incumbent,
    beat it like a champion)."""
    if "champion" not in preds:
        frame = preds["challenger"].filter(pl.col("correct").is_not_null())
        metrics = {"challenger": ev.side_metrics(frame)}
        table = ev.by_group({"challenger": frame}, ["family", "difficulty"])
        decision = ev.decide_first(metrics["challenger"], gate)
        return _result(decision, metrics, table, None, cases=frame.height, unmatched=0)
    joined, unmatched = ev.pair(preds["champion"], preds["challenger"])
    sides = ev.split_sides(joined)
    metrics = {side: ev.side_metrics(sides[side]) for side in ev.SIDES}
    ci = ev.paired_bootstrap(
        sides["champion"]["correct"].to_numpy(), sides["challenger"]["correct"].to_numpy(), gate
    )
    decision = ev.decide(metrics, ci, ev.by_group(sides, ["family"]), gate)
    if first:
        floor = ev.decide_first(metrics["challenger"], gate)
        decision = ev.Decision(decision.promote and floor.promote, floor.reasons + decision.reasons)
    table = ev.by_group(sides, ["family", "difficulty"])
    return _result(decision, metrics, table, ci, cases=joined.height, unmatched=unmatched)


def _result(
    decision: ev.Decision,
    metrics: dict[str, dict[str, float]],
    table: pl.DataFrame,
    ci: tuple[float, float, float] | None,
    *,
    cases: int,
    unmatched: int,
) -> dict[str, Any]:
    summary = {
        "promote": decision.promote,
        "reasons": decision.reasons,
        "cases": cases,
        "unmatched": unmatched,
        "accuracy_diff": ci[0] if ci else None,
        "ci": [ci[1], ci[2]] if ci else None,
        "metrics": metrics,
    }
    return {"summary": summary, "metrics": metrics, "table": table, "ci": ci}


def _log_run(params: EvaluateParams, summary: dict[str, Any], result: dict[str, Any]) -> str:
    ensure_experiment()
    with tracked_run(f"evaluate-{params.domain}") as run:
        mlflow.log_params(
            {
                "challenger": f"{summary['name']}/{summary['challenger']}",
                "champion": summary["champion"] or "none",
                "baseline": summary["baseline"] or "none",
                "dataset": summary["dataset"],
                "strategy": summary["strategy"],
                **{f"gate.{k}": v for k, v in params.gate.model_dump().items()},
            }
        )
        for side, m in result["metrics"].items():
            mlflow.log_metrics({f"{side}.{k}": v for k, v in m.items()})
        if result["ci"]:
            diff, low, high = result["ci"]
            mlflow.log_metrics({"accuracy_diff": diff, "ci_low": low, "ci_high": high})
        mlflow.log_dict({k: summary[k] for k in ("promote", "reasons")}, "decision.json")
        with tempfile.TemporaryDirectory() as tmp:
            table = result["table"]
            table.write_csv(Path(tmp) / "by_family_difficulty.csv")
            mlflow.log_artifact(str(Path(tmp) / "by_family_difficulty.csv"))
            fam = table.group_by("family").agg(
                pl.col(c).mean() for c in ev.SIDES if c in table.columns
            )
            png = ev.comparison_plot(fam.sort("family"), result["ci"], Path(tmp) / "compare.png")
            mlflow.log_artifact(str(png), artifact_path="plots")
            result["plot_png"] = png.read_bytes()
        return run.info.run_id


@task(cache_policy=NO_CACHE)
def record_decision(name: str, version: str, summary: dict[str, Any]) -> None:
    """The decision, its reasons and the metrics as tags on the challenger version."""
    client = connect()
    tags = {
        "ponder.eval.decision": "pass" if summary["promote"] else "fail",
        "ponder.eval.reasons": json.dumps(summary["reasons"]),
        "ponder.eval.run_id": summary["run_id"],
        "ponder.eval.dataset": summary["dataset"],
        "ponder.eval.champion": summary["champion"] or "none",
        **{f"ponder.metric.{k}": f"{v:.4f}" for k, v in summary["metrics"]["challenger"].items()},
    }
    if summary["ci"]:
        tags["ponder.metric.accuracy_diff_ci"] = json.dumps([round(x, 4) for x in summary["ci"]])
    set_version_tags(client, name, version, tags)


@task(cache_policy=NO_CACHE)
def move_champion(name: str, version: str, expected: str | None, reason: str) -> str | None:
    """champion -> version, previous -> the evaluated champion (compare-and-set). The
    aliases as they were are kept in the transaction for the rollback hook."""
    client = connect()
    before = {a: alias_version(client, name, a) for a in ("champion", "previous")}
    old = promote(name, version, client, expect_champion=expected, reason=reason)
    current = get_transaction()
    if current is not None:
        current.set("restore", {"name": name, "aliases": before})
    return old


@move_champion.on_rollback
def _restore(txn: Transaction) -> None:
    """A later step of the promotion failed: put both aliases back exactly as they were."""
    restore = txn.get("restore", None)
    if not restore:
        return
    client, name = connect(), restore["name"]
    for alias, version in restore["aliases"].items():
        if version is None and alias_version(client, name, alias) is not None:
            client.delete_registered_model_alias(name, alias)
        elif version is not None:
            client.set_registered_model_alias(name, alias, version)


@task(cache_policy=NO_CACHE)
def check_champion(name: str, version: str) -> None:
    """``models:/NAME@champion`` must resolve to the promoted version right now."""
    got = get_version(parse_models_uri(f"models:/{name}@champion"))
    if str(got.version) != str(version):
        raise PonderError("champion", f"{name}@champion is {got.version}, not {version}", "retry")


def _promote(name: str, version: str, champion: str | None, summary: dict[str, Any]) -> None:
    reason = "evaluate_promote: " + "; ".join(summary["reasons"])
    with transaction(key=f"promote/{name}", overwrite=True, write_on_commit=False):
        move_champion(name, version, champion, reason[:4000])
        check_champion(name, version)
