"""How ponder's commands show their results on the terminal: rich tables of stage results,
the registry and the served stack. ``flows/cli.py`` dispatches; this module only renders.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from flows.collect import CollectResult
from flows.evaluate_promote import EvaluateResult
from flows.pipeline import PipelineResult
from tasks.evaluate import incumbent

console = Console()
err_console = Console(stderr=True)


def fields(out: Any) -> None:
    """Any stage result, one field a row, titled with its type (``InferResult``)."""
    table = Table(title=type(out).__name__, show_header=False)
    for key, value in out.model_dump().items():
        table.add_row(key, "-" if value is None else str(value))
    console.print(table)


def evaluated(out: EvaluateResult) -> None:
    """The gate's decision in a few lines."""
    verdict = "[green]promoted[/]" if out.promoted else "[yellow]not promoted[/]"
    console.print(f"{out.name} v{out.challenger} vs {incumbent(out.model_dump())}: {verdict}")
    for reason in out.reasons:
        console.print(f"  {reason}")
    console.print(f"MLflow run {out.run_id}")


def doctor(settings: Any, versions: dict[str, str | None], *, backend: str, device: str,
           problems: list[Any]) -> None:  # fmt: skip
    """Resolved settings, library versions, the backend and what is missing."""
    table = Table(title="settings (env prefix PONDER_)", show_header=False)
    for key, value in settings.model_dump().items():
        table.add_row(key, str(value))
    table.add_row("prefect_home", str(settings.prefect_home))
    console.print(table)
    libs = Table(title="libraries", show_header=False)
    for name, version in versions.items():
        libs.add_row(name, version or "[red]missing[/]")
    console.print(libs)
    console.print(f"generation backend: [bold]{backend}[/]   device: [bold]{device}[/]")
    for problem in problems:
        console.print(f"[red]missing[/] {problem.what}  [yellow]fix:[/] {problem.fix}")
    if not problems:
        console.print("[green]nothing missing[/]")


def described(info: dict[str, Any]) -> None:
    """One registry version: aliases, run, source and every tag."""
    table = Table(title=f"{info['name']} version {info['version']}", show_header=False)
    for key in ("aliases", "all_aliases", "run_id", "source", "status"):
        table.add_row(key, str(info[key]))
    for key, value in info["tags"].items():
        table.add_row(key, value)
    console.print(table)


def generation(texts: list[str], results: list[Any], backend: str, output: Path | None) -> None:
    """The first completion per prompt; all of them to ``output`` as JSONL."""
    table = Table(title=f"first completion per prompt ({backend})")
    for col in ("prompt", "completion", "finish", "tokens"):
        table.add_column(col)
    rows = []
    for text, result in zip(texts, results, strict=True):
        first = result.completions[0]
        table.add_row(
            text[:48],
            " ".join(first.text.split())[:160],
            first.finish_reason,
            str(len(first.token_ids)),
        )
        rows += [{"prompt": text, **c.model_dump()} for c in result.completions]
    console.print(table)
    generated = sum(r.n_generated_tokens for r in results)
    console.print(f"{len(texts)} prompts, {len(rows)} completions, {generated} generated tokens")
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        tmp = output.with_suffix(output.suffix + ".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
        tmp.rename(output)
        console.print(f"wrote {len(rows)} rows to {output}")


def stack(stack: Any) -> None:
    """Where the served Prefect and MLflow are, and the environment for other shells."""
    table = Table(title="ponder serve", show_header=False)
    table.add_row("Prefect UI", stack.config.prefect_url)
    table.add_row("MLflow UI", stack.config.mlflow_url)
    gpu = stack.config.gpu_workers
    table.add_row(
        "work pools",
        f"ponder-cpu (process), ponder-gpu (process, {gpu} worker(s), 1 run each)",
    )
    table.add_row("logs", str(stack.logs))
    console.print(table)
    console.print("other shells (and `ponder deploy`) use it with:")
    for key in ("PREFECT_API_URL", "PONDER_TRACKING_URI", "PONDER_HOME"):
        console.print(f"  export {key}={stack.env[key]}")
    if stack.config.auth:  # the password itself is never printed
        console.print(
            "  plus the credentials: PREFECT_API_AUTH_STRING=user:password, "
            "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (the user and password "
            "of PONDER_SERVE_USER/PONDER_SERVE_PASSWORD or $PONDER_HOME/serve-credentials.json)"
        )
    console.print("ready", highlight=False)


def pipeline(out: PipelineResult) -> None:
    """What each stage produced, the registry, the decision and where to look."""
    from models.settings import get_settings

    table = Table(title=f"pipeline {out.domain}: what each stage produced")
    table.add_column("reference")
    table.add_column("value")
    for key, value in out.references.model_dump().items():
        table.add_row(key, str(value or "-"))
    console.print(table)
    registry(out.registry, "MLflow registry after the run", metrics=False)
    if out.stages.evaluate:
        decision(out.stages.evaluate)
    settings = get_settings()
    if out.stages.infer and out.stages.infer.report:
        console.print(f"HTML report:   [bold]{out.stages.infer.report}[/]", soft_wrap=True)
    console.print(f"lake:          {settings.lake_root}")
    console.print(
        f"MLflow UI:     mlflow ui --backend-store-uri {settings.tracking_uri} --port 5000"
        if settings.tracking_uri.startswith("sqlite")
        else f"MLflow UI:     {settings.tracking_uri}",
        soft_wrap=True,
    )
    console.print("Prefect UI:    `ponder serve` (a local server, pools and a worker)")


def decision(result: EvaluateResult) -> None:
    """Held-out accuracy before and after, the paired CI, the decision and its reasons."""
    ev = result.model_dump()
    metrics = ev["metrics"]
    table = Table(
        title=f"held-out accuracy on {ev['dataset']} ({ev['cases']} cases, {ev['strategy']})"
    )
    for col in ("model", "accuracy", "tokens/case", "parse failures"):
        table.add_column(col)
    names = {"champion": f"before: {incumbent(ev)}", "challenger": f"after: v{ev['challenger']}"}
    for side, m in metrics.items():
        table.add_row(
            names[side],
            f"{m['accuracy']:.1%}",
            f"{m['tokens_per_case']:.0f}",
            f"{m['parse_failure_rate']:.1%}",
        )
    console.print(table)
    if ev.get("ci"):
        low, high = ev["ci"]
        console.print(
            f"difference (after - before): {ev['accuracy_diff']:+.1%}, 95% paired bootstrap CI "
            f"[{low:+.1%}, {high:+.1%}]"
        )
    verdict = "[green]PROMOTED[/]" if ev["promoted"] else "[yellow]not promoted[/]"
    console.print(f"decision: {verdict}")
    for reason in ev["reasons"]:
        console.print(f"  {reason}")


def registry(rows: list[dict[str, Any]], title: str, metrics: bool = True) -> None:
    """Registered versions with aliases, decisions and a few metrics."""
    table = Table(title=title)
    cols = ("name", "version", "aliases", "created", "decision") + (("metrics",) if metrics else ())
    for col in cols:
        table.add_column(col, no_wrap=col == "name")
    for r in rows:
        aliases = ", ".join(f"@{a}" for a in r["aliases"])
        cells = [r["name"], r["version"], aliases, r["created"], r["decision"]]
        if metrics:
            cells.append(", ".join(f"{k}={v}" for k, v in list(r["metrics"].items())[:4]))
        table.add_row(*cells)
    console.print(table)


def collected(result: CollectResult) -> None:
    """Rows in, valid, quarantined and duplicates per dataset."""
    table = Table(title="collect")
    cols = ("dataset", "version", "new_version", "rows_in", "valid", "quarantined", "duplicates")
    for col in cols:
        table.add_column(col)
    for summary in (result.cases, result.feedback):
        table.add_row(*(str(getattr(summary, c)) for c in cols))
    console.print(table)
    for summary in (result.cases, result.feedback):
        if summary.quarantine_file:
            console.print(f"quarantine: {summary.quarantine_file}")


def review_queues(statuses: list[Any]) -> None:
    """``ponder review``: each queue's pending and finished items, who finished them, and
    where to review (the MLflow UI, when the tracking URI is a server)."""
    if not statuses:
        console.print("no review queue yet: `ponder infer` fills one per domain (review_k)")
        return
    table = Table(title="review queues (MLflow, experiment ponder-traces)")
    for column in ("queue", "pending", "done", "declined", "done by"):
        table.add_column(column)
    for s in statuses:
        by = ", ".join(f"{who} {n}" for who, n in sorted(s.by_reviewer.items())) or "-"
        table.add_row(s.name, str(s.pending), str(s.complete), str(s.declined), by)
    console.print(table)
    url = statuses[0].url
    console.print(
        f"review at: {url}"
        if url
        else "the tracking store is local: start `ponder serve` (or `mlflow server`) to review "
        "in the MLflow UI"
    )
