"""MLflow side of inference: metrics, the HTML report, and reviewable traces.

A sample of cases becomes MLflow traces (one span per step of the chosen path, tagged with
the case id and domain, identifiers masked) in the ``ponder-traces`` experiment, where
reviewers leave feedback in the UI or with ``ponder feedback log``; ``collect`` reads it
back.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import polars as pl
from prefect import task
from prefect.cache_policies import NO_CACHE

from domains.base import Case
from models.redaction import learn as learn_identifiers
from models.registry import TRACE_EXPERIMENT
from tasks.artifacts import table_artifact
from tasks.context import StageContext
from tasks.infer import CaseStore
from tasks.report import PAGE_SIZE, Batch, PageWriter, case_inputs, load_trees, right_leaves
from tasks.review import fill_review_queue, needs_review

CASE_REF_TAG = "ponder.case_ref"  # a trace's case, as a keyed reference (never the raw id)


def metrics_table(frame: pl.DataFrame) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Overall metrics and a family x difficulty table."""
    labelled = frame.filter(pl.col("correct").is_not_null())
    metrics = {
        "cases": float(frame.height),
        "tokens_per_case": float(frame["tokens"].mean()),
        "parse_rate": float(frame["parsed"].mean()),
    }
    if labelled.height:
        metrics["accuracy"] = float(labelled["correct"].cast(pl.Float64).mean())
    table = (
        frame.group_by("family", "difficulty")
        .agg(
            pl.len().alias("n"),
            pl.col("correct").cast(pl.Float64).mean().alias("accuracy"),
            pl.col("tokens").mean().round(1).alias("tokens_per_case"),
            pl.col("confidence").mean().round(3).alias("confidence"),
        )
        .sort("family", "difficulty")
    )
    return metrics, table.to_dicts()


def run_metrics(frame: pl.DataFrame, generator: Any) -> tuple[dict[str, float], list[dict]]:
    """``metrics_table`` plus throughput and, when the engine counts it, the prefix-cache
    hit rate."""
    metrics, table = metrics_table(frame)
    seconds = float(frame["latency_s"].sum()) or 1e-9
    metrics["cases_per_s"] = frame.height / seconds
    stats = generator.prefix_cache_stats() or {}
    if stats.get("queries"):
        metrics["prefix_cache_hit_rate"] = stats["hits"] / stats["queries"]
    return metrics, table


def log_inference_run(
    ctx: StageContext,
    *,
    params: dict[str, Any],
    frame: pl.DataFrame,
    version: str | None,
    cases: CaseStore,
    generator: Any,
) -> dict[str, Any]:
    """Metrics, the HTML report, one MLflow run, a sample of traces and the Prefect table
    artifact for a committed predictions version. ``frame`` holds the version's rows without
    their texts; the traced cases' trees and the report's pages are read from the version as
    they are needed, so memory does not grow with the batch. Each side effect is its own
    task without retries: a retry of a whole step could log a second run or traces."""
    domain = ctx.name
    metrics, table = run_metrics(frame, generator)
    info = ctx.lake.info(domain, "predictions", version) if version else None
    review = needs_review(frame, k=params["review_k"])
    traced = _traced(cases, sample=params["log_traces"], review=review)
    learn_identifiers(domain, [c.inputs for c in traced])  # before their traces leave
    trees, texts = version_rows(info.path, {c.id for c in traced}) if info else ({}, {})
    traces = log_traces(ctx, cases=traced, trees=trees, texts=texts)
    queue = fill_review_queue(ctx, traces={c: traces[c] for c in review if traces.get(c)})
    meta = {
        "model": frame["model_version"][0],
        "input": frame["input"][0],
        **{k: round(v, 4) for k, v in metrics.items()},
    }
    target = ctx.lake.dataset_dir(domain, "predictions") / "_reports"
    title = f"ponder infer: {domain} {params['strategy']} ({version})"
    pages = version_pages(ctx, info.path if info else None, cases=cases,
                          title=title, meta=meta, links=trace_links(traces))  # fmt: skip
    report = write_report(
        ctx, pages=pages, title=title, meta=meta, target=target / (version or key_of(frame))
    )
    run = {"metrics": metrics, "table": table, "report": report, "version": version}
    log_mlflow_run(ctx, params=params, frame=frame, **run)
    table_artifact(
        domain=domain,
        table=table,
        key=f"infer-{domain.replace('_', '-')}",
        description="accuracy / tokens by family and difficulty",
    )
    queued = queue.added if queue else 0
    return {"metrics": metrics, "table": table, "report": str(report), "queued": queued}


def key_of(frame: pl.DataFrame) -> str:
    """The run key of a run's rows ("empty" when there are none)."""
    return str(frame["run_key"][0]) if frame.height else "empty"


def version_rows(path: Path, ids: set[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """(trees, chosen texts) of the cases ``ids`` of the predictions version at ``path``,
    read by a filtered scan (the rest of the version stays on disk)."""
    if not ids:
        return {}, {}
    wanted = pl.col("case_id").is_in(sorted(ids))
    trees = load_trees(pl.scan_parquet(path / "trees.parquet").filter(wanted).collect())
    rows = pl.scan_parquet(path / "part-*.parquet").filter(wanted).select("case_id", "text")
    return trees, dict(rows.collect().iter_rows())


def iter_pages(path: Path, size: int) -> Iterator[tuple[pl.DataFrame, pl.DataFrame]]:
    """(predictions, trees) of the version at ``path``, ``size`` rows at a time in stored
    order. Both files hold the cases in the same order (the commit writes them shard by
    shard), so the two streams are read side by side; a page whose trees do not line up
    (a version written otherwise) looks its trees up by case id."""
    trees = _row_batches([path / "trees.parquet"], size)
    for preds in _row_batches(sorted(path.glob("part-*.parquet")), size):
        tree = next(trees, None)
        ids = preds["case_id"].to_list()
        if tree is None or tree["case_id"].to_list() != ids:
            wanted = pl.col("case_id").is_in(ids)
            tree = pl.scan_parquet(path / "trees.parquet").filter(wanted).collect()
        yield preds, tree


def _row_batches(files: list[Path], size: int) -> Iterator[pl.DataFrame]:
    """The files' rows, streamed by pyarrow, as frames of exactly ``size`` rows (the last
    may be shorter)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    held: list[pa.RecordBatch] = []
    count = 0
    for file in files:
        for batch in pq.ParquetFile(file).iter_batches(batch_size=size):
            held.append(batch)
            count += batch.num_rows
            while count >= size:
                table = pa.Table.from_batches(held)
                yield pl.from_arrow(table.slice(0, size))  # type: ignore[misc]
                rest = table.slice(size)
                held, count = rest.to_batches(), rest.num_rows
    if count:
        yield pl.from_arrow(pa.Table.from_batches(held))  # type: ignore[misc]


def version_pages(
    ctx: StageContext,
    path: Path | None,
    *,
    cases: CaseStore,
    title: str,
    meta: dict[str, Any],
    links: dict[str, str],
) -> Iterator[Batch]:
    """The report's pages of the version at ``path`` as batches of at most ``PAGE_SIZE``
    cases, each with only its own trees, texts, inputs and right leaves."""
    if path is None:
        return
    for preds, tree_rows in iter_pages(path, PAGE_SIZE):
        trees = load_trees(tree_rows)
        known = cases.get(preds["case_id"])
        masks = stored_masks(tree_rows, ctx.redactor.fingerprint())
        # cases masked here, not where they were searched: their identifiers first
        learn_identifiers(ctx.name, [c.inputs for c in known if c.id not in masks])
        yield Batch(
            title=title,
            predictions=preds.drop("text"),
            trees=trees,
            texts=dict(zip(preds["case_id"], preds["text"], strict=True)),
            meta=meta,
            inputs=case_inputs(ctx.domain, known),
            good=right_leaves(ctx.domain, known, trees),
            links={c: links[c] for c in preds["case_id"] if c in links},
            masks=masks,
        )


def stored_masks(tree_rows: pl.DataFrame, fingerprint: str) -> dict[str, dict[str, str | None]]:
    """Case id -> its report texts as masked where it was searched, for the cases masked
    by a redactor with this ``fingerprint`` (same key and detectors); the others are
    masked again."""
    if "masked" not in tree_rows.columns:
        return {}
    same = tree_rows.filter(pl.col("masked_by") == fingerprint)
    return {c: json.loads(m) for c, m in zip(same["case_id"], same["masked"], strict=True)}


def _traced(cases: CaseStore, *, sample: int, review: list[str]) -> list[Case]:
    """The cases logged as traces: the first ``sample``, and every case sent for review."""
    wanted = set(review)
    return cases.get(i for k, i in enumerate(cases.ids()) if k < sample or i in wanted)


@task(cache_policy=NO_CACHE)
def write_report(
    ctx: StageContext, *, pages: Iterable[Batch], title: str, meta: dict[str, Any], target: Path
) -> Path:
    """The HTML report of one predictions version as a folder (``index.html`` and the case
    pages), rendered one page at a time (``PageWriter``) into a temporary folder that is
    then renamed into place. Returns the index. The one place a report is rendered: after
    inference, and by ``ponder report``."""
    import shutil

    from tasks.lake import tmp_beside

    writer = PageWriter(title, meta, redact=ctx.redactor.text, case_ref=ctx.redactor.case_ref)
    tmp = tmp_beside(target)
    tmp.mkdir(parents=True)
    for batch in pages:
        name, page = writer.page(batch)
        (tmp / name).write_text(page)
    with (tmp / "index.html").open("w") as index:
        index.writelines(writer.index_parts())
    old = tmp_beside(target)
    if target.exists():
        target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)
    return target / "index.html"


@task(cache_policy=NO_CACHE)
def log_mlflow_run(
    ctx: StageContext,
    *,
    params: dict[str, Any],
    metrics: dict[str, float],
    table: list[dict[str, Any]],
    report: Path,
    version: str | None,
    frame: pl.DataFrame,
) -> str:
    """One MLflow run of the inference: params, metrics per family x level, the report."""
    import mlflow

    from models.registry import connect, ensure_experiment
    from models.runs import tracked_run

    domain = ctx.name
    connect()  # retries reaching the server itself; nothing is logged twice
    with tracked_run(f"infer-{domain}", experiment_id=ensure_experiment()) as run:
        mlflow.log_params({k: str(v)[:250] for k, v in params.items()})
        mlflow.log_metrics(metrics)
        for row in table:
            if row["accuracy"] is not None:
                mlflow.log_metric(f"accuracy_{row['family']}_d{row['difficulty']}", row["accuracy"])
        mlflow.log_artifacts(str(report.parent), artifact_path="report")
        mlflow.set_tags(
            {
                "ponder.stage": "infer",
                "ponder.domain": domain,
                "ponder.predictions": str(version),
                "ponder.model_version": frame["model_version"][0],
            }
        )
    return run.info.run_id


def report_version(ctx: StageContext, *, version: str | None, output: Path | None) -> Path:
    """Render the report of a stored predictions version (default the latest) again, into
    the folder ``output`` (default beside the version), page by page; returns its index."""
    lake, domain = ctx.lake, ctx.name
    info = (
        lake.info(domain, "predictions", version) if version else lake.latest(domain, "predictions")
    )
    if info is None:
        from domains.errors import PonderError

        raise PonderError("version", f"{domain} has no predictions yet", "run `ponder infer`")
    ids = pl.scan_parquet(info.path / "part-*.parquet").select("case_id").collect()["case_id"]
    cases = CaseStore(_lake_cases(ctx, set(ids)), folder=ctx.lake.scratch)
    title = f"ponder predictions {domain} {info.version}"
    meta = {"rows": info.rows, "sources": ", ".join(info.manifest["sources"])}
    pages = version_pages(ctx, info.path, cases=cases, title=title, meta=meta, links={})
    target = output or info.path.parent / "_reports" / info.version
    return write_report(ctx, pages=pages, title=title, meta=meta, target=target)


def _lake_cases(ctx: StageContext, ids: set[str]) -> list[Case]:
    """The lake's cases with these ids (a version scored from a file has none there)."""
    from tasks.infer import row_case

    if ctx.lake.latest(ctx.name, "cases") is None:
        return []
    rows = ctx.lake.scan(ctx.name, "cases").filter(pl.col("id").is_in(list(ids))).collect()
    return [row_case(r) for r in rows.iter_rows(named=True)]


def trace_links(traces: dict[str, str]) -> dict[str, str]:
    """Case id -> the trace's page in the MLflow UI, when the tracking URI is a server
    (a local SQLite store has no UI address to link to)."""
    import mlflow

    from models.registry import ui_address

    experiment = mlflow.get_experiment_by_name(TRACE_EXPERIMENT) if traces else None
    page = ui_address(experiment.experiment_id) if experiment else None
    if page is None:
        return {}
    base = f"{page}/traces"
    return {c: f"{base}?selectedEvaluationId={t}&traceId={t}" for c, t in traces.items() if t}


def _call_spans(node: Any, red: Any) -> None:
    """One TOOL span per calculator call in the step, so a reviewer sees which numbers are
    computed (exact) and which are the model's own claims."""
    import mlflow
    from mlflow.entities import SpanType

    for call in node.calls:
        with mlflow.start_span(name="calc", span_type=SpanType.TOOL) as span:
            span.set_inputs({"expression": red.text(call.expression)})
            span.set_outputs(
                {"result": call.result, "unit": call.unit, "error": call.error, "computed": True}
            )


@task(cache_policy=NO_CACHE)  # not retried: a retry would log the traces twice
def log_traces(
    ctx: StageContext, *, cases: list[Case], trees: dict, texts: dict[str, str]
) -> dict[str, str]:
    """One trace per case, one child span per step of the chosen path; case id -> trace id."""
    import mlflow

    from models.registry import ensure_experiment
    from tasks.report import chosen_path

    red, domain = ctx.redactor, ctx.name
    ensure_experiment(TRACE_EXPERIMENT)  # connects first: this runs before the infer run
    ids = {}
    for case in cases:
        tree = trees.get(case.id)
        if tree is None:
            continue
        chosen = sorted(chosen_path(tree, texts.get(case.id, "")))
        ref = red.case_ref(case.id)  # the raw id may be an MRN: it stays in the lake
        with mlflow.start_span(name=f"case {ref}") as root:
            root.set_inputs({"case_ref": ref, "family": case.family})
            for node_id in chosen:
                node = tree.nodes[node_id]
                with mlflow.start_span(name=f"step {node.depth}") as span:
                    span.set_outputs({"text": red.text(node.text)})
                    span.set_attributes(
                        {
                            "prm_score": node.prm_score or 0.0,
                            "visits": node.visits,
                            "n_tokens": node.n_tokens,
                            "computed_calls": len(node.calls),
                        }
                    )
                    _call_spans(node, red)
            # redact before cutting: a cut can drop the label ("Dr.") that marks a name
            root.set_outputs({"answer": red.text(texts.get(case.id, ""))[-500:]})
            mlflow.update_current_trace(tags={CASE_REF_TAG: ref, "ponder.domain": domain})
        ids[case.id] = root.trace_id  # the span's own: the last active trace is process-wide
    return ids
