"""The infer flow on the tiny model (vLLM): shards, resume, predictions, report, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from pydantic import ValidationError

from domains.base import get_domain
from domains.errors import PonderError
from flows.infer import InferParams, infer
from tasks import infer as infer_tasks
from tasks.lake import Lake

pytestmark = pytest.mark.usefixtures("prefect_harness")


def _cases_file(path: Path, n: int = 3, long_note: bool = False) -> Path:
    d = get_domain("medicine")
    cases = d.generate(n, 11, difficulty=1)
    rows = [
        {"family": c.family, "inputs": json.dumps(c.inputs), "truth": json.dumps(c.truth)}
        for c in cases
    ]
    if long_note:
        inputs = {**cases[0].inputs, "note": "Patient stable. " * 900}
        rows.append(
            {
                "family": "clinical_calc",
                "inputs": json.dumps(inputs),
                "truth": json.dumps(cases[0].truth),
            }
        )
    rows.append({"family": "clinical_calc", "inputs": "{broken", "truth": None})
    pl.DataFrame(rows).write_csv(path)
    return path


def _params(tiny_model: Path, source: Path, **kw) -> InferParams:
    base = {
        "domain": "medicine",
        "input": str(source),
        "model": str(tiny_model),
        "strategy": "beam",
        "width": 2,
        "max_tokens": 96,
        "step_tokens": 16,
        "max_depth": 2,
        "shard_size": 2,
        "dtype": "float32",
        "max_model_len": 2048,
        "log_traces": 1,
    }
    return InferParams(**(base | kw))


def test_infer_end_to_end(fresh_lake: Path, tiny_model: Path, vllm_engine) -> None:
    src = _cases_file(fresh_lake / "cases.csv", long_note=True)
    out = infer(_params(tiny_model, src))
    assert out.cases == 3 and out.rejected == 1 and out.too_long == 1
    assert out.queued == 3  # review_k 10 > 3 cases: every case waits for a reviewer
    lake = Lake(fresh_lake / "lake")
    info = lake.latest("medicine", "predictions")
    assert info.version == out.version == "v00001"
    preds = pl.read_parquet(info.path / "part-*.parquet")
    assert preds.height == 3 and preds["case_id"].n_unique() == 3
    assert set(preds["model_version"]) == {f"path:{tiny_model.resolve()}"}
    assert preds["correct"].is_not_null().all() and (preds["tokens"] > 0).all()
    trees = pl.read_parquet(info.path / "trees.parquet")
    assert set(trees["case_id"]) == set(preds["case_id"])
    page = "".join(p.read_text() for p in sorted(Path(out.report).parent.glob("*.html")))
    from models.redaction import redactor

    # each case's report texts were masked where its shard was searched, and kept
    assert set(trees["masked_by"]) == {redactor("medicine").fingerprint()}
    assert all(len(json.loads(m)) >= 3 for m in trees["masked"])  # input, expected, steps

    ref = redactor("medicine").case_ref  # the page shows references: an id may be an MRN
    assert all(ref(cid) in page and cid not in page for cid in preds["case_id"])
    assert "<details" in page
    quarantine = pl.concat(
        [pl.read_parquet(p) for p in (info.path.parent / "_quarantine").glob("*.parquet")],
        how="diagonal_relaxed",
    )
    assert "prompt longer than the model context" in quarantine["reason"].to_list()
    import mlflow

    traces = mlflow.search_traces(
        locations=[mlflow.get_experiment_by_name("ponder-traces").experiment_id], return_type="list"
    )
    refs = {ref(c) for c in preds["case_id"]}
    logged = [t for t in traces if t.info.tags.get("ponder.case_ref") in refs]
    assert logged, "a sample case is logged as a reviewable trace"
    raw_ids = set(preds["case_id"])  # a case id may be an MRN: none leaves the lake
    assert not any(t.info.tags.get("ponder.case_id") in raw_ids for t in traces)
    assert not any(c in s.name for t in logged for s in t.data.spans for c in raw_ids)
    spans = logged[0].data.spans
    assert spans[0].name.startswith("case ") and all(s.name.startswith("step ") for s in spans[1:])
    again = infer(_params(tiny_model, src))  # all shards exist: nothing recomputed
    assert again.version == "v00001"
    from typer.testing import CliRunner

    from flows.cli import app

    target = fresh_lake / "report"
    result = CliRunner().invoke(app, ["report", "--domain", "medicine", "--output", str(target)])
    assert result.exit_code == 0, result.output
    assert (target / "index.html").is_file() and (target / "cases-001.html").is_file()
    cli_page = "".join(p.read_text() for p in sorted(target.glob("*.html")))
    assert all(ref(cid) in cli_page and cid not in cli_page for cid in preds["case_id"])


def _shard_files(lake: Lake) -> dict[str, tuple[int, str]]:
    """Each finished shard file's mtime_ns and content hash."""
    import hashlib

    runs = lake.root / "medicine" / "predictions" / "_runs"
    return {
        str(p.relative_to(runs)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
        for p in sorted(runs.glob("*/shard-*.parquet"))
    }


def test_resume_after_crash_between_shards(fresh_lake, tiny_model, vllm_engine, monkeypatch):
    src = _cases_file(fresh_lake / "c.csv", n=3)
    real, searched = infer_tasks.run_search, []
    crashed = []

    def flaky(strategy, problems, *args, **kwargs):  # the search itself, below the skip
        if len(searched) == 1 and not crashed:
            crashed.append(True)
            raise KeyboardInterrupt("killed between shards")
        searched.append([p.id for p in problems])
        return real(strategy, problems, *args, **kwargs)

    monkeypatch.setattr(infer_tasks, "run_search", flaky)
    with pytest.raises(BaseException, match="killed"):
        infer(_params(tiny_model, src, strategy="best_of_n"))
    lake = Lake(fresh_lake / "lake")
    assert lake.latest("medicine", "predictions") is None, "no partial version is visible"
    before = _shard_files(lake)
    (shard0,) = before  # only shard 0 finished before the crash
    assert shard0.endswith("/shard-00000.parquet")
    out = infer(_params(tiny_model, src, strategy="best_of_n"))
    after = _shard_files(lake)
    assert len(after) == 2 and after[shard0] == before[shard0], (
        "the same run resumes and reuses shard 0's file, not a recomputed one"
    )
    assert len(searched) == 2 and len(searched[0]) == 2 and len(searched[1]) == 1, (
        "the resume searches shard 1 only"
    )
    preds = lake.scan("medicine", "predictions").collect()
    assert preds.height == 3 and preds["case_id"].n_unique() == 3 and out.cases == 3


def test_bad_inputs(fresh_lake: Path, tiny_model: Path, vllm_engine) -> None:
    empty = fresh_lake / "empty.csv"
    empty.write_text("family,inputs,truth\n")
    assert infer(_params(tiny_model, empty)).cases == 0
    src = _cases_file(fresh_lake / "c.csv", n=1)
    with pytest.raises(ValidationError, match="unknown strategy"):  # before anything runs
        _params(tiny_model, src, strategy="astar")
    with pytest.raises(PonderError, match="no registered model"):
        infer(_params(tiny_model, src, model="models:/ponder-nope-policy@champion"))
    with pytest.raises(ValidationError, match="width"):
        _params(tiny_model, src, width=0)


def test_a_medcalc_bench_file_is_read_as_it_ships(fresh_lake: Path, tiny_model: Path, vllm_engine):
    """``--input medcalc_bench:FILE``: the supported rows are scored against the rows' own
    limits; the others are counted as rejected, with their reasons, and never scored."""
    from tests.datasets import ROWS, write_medcalc

    path = write_medcalc(fresh_lake / "medcalc.csv", ROWS)
    out = infer(_params(tiny_model, path, input=f"medcalc_bench:{path}", log_traces=0, review_k=0))
    assert out.cases == 3 and out.rejected == 4, out
    assert out.input.startswith("medcalc_bench:medcalc.csv:")


def test_workers_without_a_deployment_search_in_process(fresh_lake, tiny_model, vllm_engine):
    """workers=2 where the Prefect server holds no infer deployment: the run says so and
    searches in-process, to the same predictions a plain run commits."""
    src = _cases_file(fresh_lake / "c.csv", n=3)
    out = infer(_params(tiny_model, src, workers=2, log_traces=0, review_k=0))
    assert out.cases == 3 and out.version == "v00001"
    lake = Lake(fresh_lake / "lake")
    (run_dir,) = (lake.dataset_dir("medicine", "predictions") / "_runs").iterdir()
    assert not (run_dir / "_epoch").exists(), "no fan-out happened, so nothing was fenced"


def test_a_child_checks_its_run_key_and_its_parents_fence(fresh_lake, tiny_model, vllm_engine):
    """A fan-out child searches only its shards, refuses a run key that is not its own (the
    input changed under the parent), and writes nothing once a newer parent fenced the
    run folder."""
    from flows.infer import ChildShards, ShardRange
    from tasks.fanout import claim

    src = _cases_file(fresh_lake / "c.csv", n=3)
    plain = infer(_params(tiny_model, src, log_traces=0, review_k=0))
    lake = Lake(fresh_lake / "lake")
    preds = lake.scan("medicine", "predictions").collect()
    key = preds["run_key"][0]
    run_dir = lake.dataset_dir("medicine", "predictions") / "_runs" / key
    (run_dir / "shard-00001.parquet").unlink()

    last = preds.sort("case_id")["case_id"][2]
    shard1 = ShardRange(index=1, first=last, last=last)

    def child(**kw) -> ChildShards:
        return ChildShards(**({"run_key": key, "shards": [shard1], "epoch": "p1",
                               "model_uri": str(tiny_model)} | kw))  # fmt: skip

    with pytest.raises(PonderError, match="child.run_key"):
        infer(_params(tiny_model, src, child=child(run_key="0" * 16)))
    claim(run_dir, "p2")  # a newer parent took over
    with pytest.raises(PonderError, match="child.epoch"):
        infer(_params(tiny_model, src, child=child()))
    assert not (run_dir / "shard-00001.parquet").exists(), "the fenced child wrote nothing"
    claim(run_dir, "p1")
    out = infer(_params(tiny_model, src, child=child()))
    assert out.version is None and out.cases == 1, "a child commits nothing"
    redone = pl.read_parquet(run_dir / "shard-00001.parquet")
    assert redone["case_id"].to_list() == preds["case_id"].to_list()[2:]
    assert lake.latest("medicine", "predictions").version == plain.version
    with pytest.raises(ValidationError, match="workers to 1"):
        _params(tiny_model, src, workers=2, child=child())
    gone = ShardRange(index=1, first=f"{last}~", last=f"{last}~")  # the input lost the case
    with pytest.raises(PonderError, match="child.shards"):
        infer(_params(tiny_model, src, child=child(shards=[gone])))
