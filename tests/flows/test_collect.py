"""The collect flow under a Prefect test server with the session's SQLite MLflow."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import polars as pl
import pytest

from flows.collect import CollectParams, collect
from tasks import lake as lake_module
from tasks.lake import Lake

pytestmark = pytest.mark.usefixtures("prefect_harness")

FEEDBACK_COLS = ["case_id", "trace_id", "reviewer_id", "timestamp", "kind", "rating"]


def _params(home: Path, **kw) -> CollectParams:
    base = {
        "domain": "medicine",
        "per_cell": 2,
        "inbox": home / "inbox",
        "check_traces": False,
        "sources": ["generator", "files"],
    }
    return CollectParams(**(base | kw))


def _lake(home: Path) -> Lake:
    return Lake(home / "lake")


def test_generator_idempotent_and_splits_stable(fresh_lake: Path) -> None:
    first = collect(_params(fresh_lake))
    assert first.cases.new_version and first.cases.valid == 10
    from typer.testing import CliRunner

    from flows.cli import app

    args = ["collect", "--domain", "medicine", "--per-cell", "2", "--no-check-traces"]
    again = CliRunner().invoke(app, [*args, "--sources", "generator", "--sources", "files"])
    assert again.exit_code == 0, again.output  # the CLI's success path: same cases, no version
    assert "v00001" in again.output and "v00002" not in again.output
    assert _lake(fresh_lake).versions("medicine", "cases") == ["v00001"]
    bigger = collect(_params(fresh_lake, per_cell=4))
    assert bigger.cases.version == "v00002"
    lake = _lake(fresh_lake)
    v1 = lake.scan("medicine", "cases", "v00001").select("id", "split").collect()
    v2 = lake.scan("medicine", "cases", "v00002").select("id", "split").collect()
    joined = v1.join(v2, on="id", suffix="_v2")
    assert joined.height == v1.height and (joined["split"] == joined["split_v2"]).all()
    manifest = lake.latest("medicine", "cases").manifest
    assert manifest["parent"] == "v00001" and manifest["rows"] == v2.height == 20
    assert sum(manifest["splits"].values()) == 20
    _assert_recorded(bigger)


def _assert_recorded(result: dict) -> None:
    """The version is an MLflow dataset input of a collect run; Prefect has the artifacts."""
    import mlflow
    from prefect.artifacts import Artifact

    runs = mlflow.search_runs(
        search_all_experiments=True,
        output_format="list",
        filter_string="tags.`ponder.stage` = 'collect'",
        order_by=["attributes.start_time DESC"],
    )
    # this run's own version: the input's source is this test's lake path, not an earlier one
    ours = [
        d.dataset.name
        for r in runs
        for d in r.inputs.dataset_inputs
        if result.cases.path in d.dataset.source
    ]
    assert ours == [f"medicine/cases@{result.cases.version}"], ours
    table = Artifact.get("collect-medicine")
    assert table is not None and result.cases.version in str(table.data)
    assert Artifact.get("quarantine-medicine") is not None


def test_files_bad_input_and_quarantine(fresh_lake: Path) -> None:
    inbox = fresh_lake / "inbox"
    from domains.base import get_domain

    good = get_domain("medicine").generate(2, 5)
    rows = [
        {"family": c.family, "inputs": json.dumps(c.inputs), "truth": json.dumps(c.truth)}
        for c in good
    ]
    bad_facts = {**good[0].inputs, "facts": {**good[0].inputs["facts"], "age": 400}}
    rows.append({"family": "clinical_calc", "inputs": json.dumps(bad_facts), "truth": None})
    pl.DataFrame(rows).write_csv(inbox / "cases" / "drop.csv")
    fb = inbox / "feedback"
    pl.DataFrame(
        {
            "case_id": ["c1", "c2"],
            "trace_id": ["t1", "t2"],
            "reviewer_id": ["r", "r"],
            "timestamp": ["2026-01-01T09:00:00Z"] * 2,
            "kind": ["rating", "rating"],
            "rating": ["4", "five"],
        }
    ).write_csv(fb / "typed.csv")
    (fb / "header_only.csv").write_text(",".join(FEEDBACK_COLS) + "\n")
    (fb / "mixed.csv").write_bytes(
        (",".join(FEEDBACK_COLS) + "\n").encode()
        + "c3,t3,rév,2026-01-01T09:00:00Z,rating,3\n".encode("latin-1")
        + b"c4,t4,rev,2026-01-01T09:00:00Z,rating,2\n"
    )
    (fb / "huge.csv").write_text("x" * 300_000)
    result = collect(_params(fresh_lake, per_cell=0, max_file_mb=0.2))
    cases, feedback = result.cases, result.feedback
    assert cases.valid == 2 and cases.quarantined == 1
    assert feedback.valid == 2  # c1 (typed.csv) and c4 (mixed.csv)
    reasons = pl.read_parquet(feedback.quarantine_file)["reason"].to_list()
    assert "rating is not an integer" in reasons
    assert any("not valid UTF-8" in r for r in reasons)
    assert any("over max_file_mb" in r for r in reasons)
    case_reasons = pl.read_parquet(cases.quarantine_file)["reason"].to_list()
    assert any("inputs.facts.age" in r for r in case_reasons)
    processed = sorted(p.name for p in (inbox / "processed").rglob("*.csv"))
    assert processed == ["drop.csv", "header_only.csv", "huge.csv", "mixed.csv", "typed.csv"]
    assert not list((inbox / "feedback").glob("*.csv")), "no file may be read twice"
    assert (inbox / "processed" / "v00001" / "cases" / "drop.csv").is_file()


def test_sql_source(fresh_lake: Path) -> None:
    from domains.base import get_domain

    db = fresh_lake / "src.db"
    cases = get_domain("medicine").generate(3, 9)
    with sqlite3.connect(db) as conn:
        conn.execute("create table cases (family text, inputs text, truth text)")
        conn.executemany(
            "insert into cases values (?, ?, ?)",
            [(c.family, json.dumps(c.inputs), json.dumps(c.truth)) for c in cases],
        )
        conn.execute(
            "create table fb (case_id text, trace_id text, reviewer_id text, "
            "timestamp text, kind text, thumbs text)"
        )
        conn.execute("insert into fb values ('c1','t1','r1','2026-02-01T00:00:00','thumbs','true')")
    result = collect(
        _params(
            fresh_lake,
            sources=["sql"],
            sql_uri=f"sqlite:///{db}",
            sql_cases_query="select * from cases",
            sql_feedback_query="select * from fb",
        )
    )
    assert result.cases.valid == 3 and result.feedback.valid == 1
    row = _lake(fresh_lake).scan("medicine", "feedback").collect().row(0, named=True)
    assert row["thumbs"] is True and row["source"] == "sql"


def test_simulated_crash_before_rename_leaves_no_version_and_rerun_completes(
    fresh_lake, monkeypatch
):
    """Simulated in-process: os.rename raises KeyboardInterrupt and the staging cleanup is
    disabled, as if the process died there (both patches are undone right after). The real
    SIGKILL at lake.commit is tests/reliability/test_kill.py."""
    inbox = fresh_lake / "inbox"
    pl.DataFrame(
        {
            "case_id": ["c1"],
            "trace_id": ["t1"],
            "reviewer_id": ["r"],
            "timestamp": ["2026-01-01T00:00:00Z"],
            "kind": ["rating"],
            "rating": ["5"],
        }
    ).write_csv(inbox / "feedback" / "fb.csv")

    def crash(*args, **kwargs):  # the process dies between writing the parts and the rename
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(lake_module.os, "rename", crash)
    monkeypatch.setattr(lake_module.shutil, "rmtree", lambda *a, **k: None)  # no cleanup
    with pytest.raises(BaseException, match="killed"):
        collect(_params(fresh_lake))
    monkeypatch.undo()
    monkeypatch.setenv("PONDER_LAKE_ROOT", str(fresh_lake / "lake"))
    lake = _lake(fresh_lake)
    assert lake.versions("medicine", "cases") == [] and lake.latest("medicine", "cases") is None
    assert list((fresh_lake / "lake" / "medicine" / "cases").glob(".tmp-*")), "crash residue"
    assert (inbox / "feedback" / "fb.csv").is_file(), "input is not consumed by a failed run"
    result = collect(_params(fresh_lake))
    assert result.cases.version == "v00001" and result.feedback.valid == 1
    assert not list((fresh_lake / "lake" / "medicine" / "cases").glob(".tmp-*"))
    assert lake.latest("medicine", "cases").rows == 10


def test_mlflow_feedback_round_trip_and_unknown_trace(fresh_lake: Path) -> None:
    import mlflow

    from models.registry import connect
    from tasks.feedback import log_feedback

    connect()
    mlflow.set_experiment("ponder-traces")
    with mlflow.start_span(name="case") as span:
        span.set_inputs({"case": "c-42"})
        mlflow.update_current_trace(tags={"ponder.case_id": "c-42"})
    trace_id = span.trace_id
    log_feedback(trace_id, "first_wrong_step", "2", "dr-who", rationale="step 2 misreads K")
    log_feedback(trace_id, "rating", "4", "dr-who")
    (fresh_lake / "inbox" / "feedback" / "orphan.csv").write_text(
        ",".join(FEEDBACK_COLS) + "\nc9,tr-unknown,r,2026-01-01T00:00:00Z,rating,3\n"
    )
    params = _params(
        fresh_lake, per_cell=0, sources=["files", "mlflow_feedback"], check_traces=True
    )
    result = collect(params)
    rows = _lake(fresh_lake).scan("medicine", "feedback").collect()
    assert result.feedback.valid == rows.height  # every valid row landed
    # the session's MLflow store may hold other tests' assessments: read only this trace's
    rows = rows.filter(pl.col("trace_id") == trace_id)
    assert sorted(rows["kind"]) == ["first_wrong_step", "rating"]
    step = rows.filter(pl.col("kind") == "first_wrong_step").row(0, named=True)
    assert step["case_id"] == "c-42" and step["first_wrong_step"] == 2
    assert step["reviewer_id"] == "dr-who" and step["trace_id"] == trace_id
    reasons = pl.read_parquet(result.feedback.quarantine_file)["reason"].to_list()
    assert reasons == ["trace_id points at an unknown trace"]
    again = collect(params)  # the watermark means nothing is read twice
    assert not again.feedback.new_version and again.feedback.valid == 0


def test_duplicates_within_and_across_files(fresh_lake: Path) -> None:
    fb = fresh_lake / "inbox" / "feedback"
    rows = pl.DataFrame(
        {
            "case_id": ["c1", "c1", "c2"],
            "trace_id": ["t1", "t1", "t2"],
            "reviewer_id": ["r", "r", "r"],
            "timestamp": ["2026-01-01T00:00:00Z"] * 3,
            "kind": ["rating"] * 3,
            "rating": ["4", "4", "2"],
        }
    )
    rows.write_csv(fb / "a.csv")
    first = collect(_params(fresh_lake, per_cell=0))
    assert first.feedback.valid == 3 and first.feedback.duplicates == 1
    rows.write_parquet(fb / "b.parquet")  # the same judgements again, another format
    second = collect(_params(fresh_lake, per_cell=0))
    assert not second.feedback.new_version and second.feedback.duplicates == 3
    assert _lake(fresh_lake).latest("medicine", "feedback").rows == 2


def test_cli_feedback_log_and_import(fresh_lake: Path) -> None:
    import mlflow
    from typer.testing import CliRunner

    from flows.cli import app
    from models.registry import connect

    connect()
    mlflow.set_experiment("ponder-traces")
    with mlflow.start_span(name="case") as span:
        mlflow.update_current_trace(tags={"ponder.case_id": "c-7"})
    trace_id = span.trace_id
    runner = CliRunner()
    ok = runner.invoke(
        app,
        [
            "feedback",
            "log",
            "--trace-id",
            trace_id,
            "--name",
            "step_labels",
            "--value",
            "[1, 1, 0]",
            "--reviewer",
            "analyst-3",
            "--rationale",
            "Step 3 misread Patient: Ann Okafor's sodium (MRN QX4821390)",
        ],
    )
    assert ok.exit_code == 0, ok.output
    stored = [a for a in mlflow.get_trace(trace_id).info.assessments if a.name == "step_labels"]
    assert "Okafor" not in stored[0].rationale and "QX4821390" not in stored[0].rationale
    assert "[NAME-" in stored[0].rationale  # masked, not dropped
    missing = runner.invoke(
        app,
        [
            "feedback",
            "log",
            "--trace-id",
            "tr-nope",
            "--name",
            "rating",
            "--value",
            "3",
            "--reviewer",
            "a",
        ],
    )
    assert missing.exit_code == 2 and "trace_id" in missing.output
    bad_kind = runner.invoke(
        app,
        [
            "feedback",
            "log",
            "--trace-id",
            trace_id,
            "--name",
            "stars",
            "--value",
            "3",
            "--reviewer",
            "a",
        ],
    )
    assert bad_kind.exit_code == 2 and "unknown feedback kind" in bad_kind.output
    src = fresh_lake / "reviews.csv"
    src.write_text(
        ",".join(FEEDBACK_COLS) + f"\nc-7,{trace_id},analyst-4,2026-02-02T10:00:00Z,rating,5\n"
    )
    imported = runner.invoke(app, ["feedback", "import", str(src), "--domain", "medicine"])
    assert imported.exit_code == 0, imported.output
    rows = Lake(fresh_lake / "lake").scan("medicine", "feedback").collect()
    assert rows.filter(pl.col("reviewer_id") == "analyst-4")["rating"].to_list() == [5]


def test_feedback_ready_event_after_threshold(fresh_lake: Path, monkeypatch) -> None:
    import tasks.events as ponder_events

    events: list[dict] = []
    monkeypatch.setattr(ponder_events, "emit_event", lambda **kw: events.append(kw))
    fb = fresh_lake / "inbox" / "feedback"

    def drop(name: str, ratings: list[str]) -> None:
        pl.DataFrame(
            {
                "case_id": [f"c{i}" for i in range(len(ratings))],
                "trace_id": [f"{name}{i}" for i in range(len(ratings))],
                "reviewer_id": ["r"] * len(ratings),
                "timestamp": ["2026-01-01T00:00:00Z"] * len(ratings),
                "kind": ["rating"] * len(ratings),
                "rating": ratings,
            }
        ).write_csv(fb / f"{name}.csv")

    drop("a", ["4", "2"])
    collect(_params(fresh_lake, per_cell=0, refresh_min_feedback=3))
    assert events == [], "2 new rows < 3: no event yet"
    drop("b", ["5", "1"])
    collect(_params(fresh_lake, per_cell=0, refresh_min_feedback=3))
    assert len(events) == 1 and events[0]["event"] == "ponder.feedback.ready"
    assert events[0]["payload"]["new_rows"] == 4 and events[0]["payload"]["domain"] == "medicine"
    assert events[0]["resource"] == {"prefect.resource.id": "ponder.feedback.medicine"}
    collect(_params(fresh_lake, per_cell=0, refresh_min_feedback=3))  # nothing new
    assert len(events) == 1


def test_inbox_refuses_links_and_devices_and_never_overwrites(fresh_lake: Path, record) -> None:
    """A link (to a secret, or to /proc/self/environ, which reports size 0) and a FIFO are
    quarantined whole without being read; two runs that each drop ``same.csv`` keep both
    files in ``processed/``."""
    import os

    fb = fresh_lake / "inbox" / "feedback"
    secret = fresh_lake / "secret.txt"
    secret.write_text("PONDER_REDACT_KEY=do-not-leak\n")
    (fb / "link.csv").symlink_to(secret)
    (fb / "environ.csv").symlink_to("/proc/self/environ")
    os.mkfifo(fb / "pipe.csv")  # reading it would block forever
    leaked = refused = 0
    for run in range(2):
        (fb / "same.csv").write_text("x" * 300_000)  # quarantined whole both times
        result = collect(_params(fresh_lake, per_cell=0, max_file_mb=0.2))
        bad = pl.read_parquet(result.feedback.quarantine_file)
        text = bad.write_csv()
        leaked += "do-not-leak" in text or "PONDER" in text
        if run == 0:
            reasons = dict(zip(bad["source"], bad["reason"], strict=True))
            assert "symbolic link refused" in reasons["file:link.csv"]
            assert "symbolic link refused" in reasons["file:environ.csv"]
            assert "not a regular file" in reasons["file:pipe.csv"]
            refused = sum(
                (
                    "symbolic link" in reasons[f"file:{n}.csv"]
                    or "not a regular" in reasons[f"file:{n}.csv"]
                )
                for n in ("link", "environ", "pipe")
            )
    processed = [p for p in (fresh_lake / "inbox" / "processed").rglob("*") if p.suffix == ".csv"]
    kept = sum(p.name.startswith("same") for p in processed)
    assert kept == 2, sorted(p.name for p in processed)
    assert any(p.name == "link.csv" and p.is_symlink() for p in processed)  # moved as a link
    assert secret.read_text().startswith("PONDER_REDACT_KEY")  # the target is untouched
    assert leaked == 0 and refused == 3
    record("inbox links, devices and same-name files", 5, refused + kept - leaked, 2 - kept)


def test_an_id_reused_with_other_content_is_quarantined_naming_both_rows(
    fresh_lake: Path, record
) -> None:
    from domains.base import get_domain

    a, b = get_domain("medicine").generate(2, 7)
    rows = [
        {"id": "MRN-0042", "family": c.family, "inputs": json.dumps(c.inputs), "truth": None}
        for c in (a, b, a)  # row 2 is an exact repeat of row 0: a duplicate, not a conflict
    ]
    cases_dir = fresh_lake / "inbox" / "cases"
    pl.DataFrame(rows).write_csv(cases_dir / "ids.csv")
    first = collect(_params(fresh_lake, per_cell=0)).cases
    assert first.valid == 1 and first.quarantined == 1
    bad = pl.read_parquet(first.quarantine_file)
    reason = bad["reason"][0]
    assert bad["row"][0] == 1 and "row 1 of file:ids.csv" in reason
    assert "row 0 of file:ids.csv" in reason and "MRN-0042" not in bad.write_csv()
    pl.DataFrame(rows[1:2]).write_csv(cases_dir / "later.csv")  # the same conflict, later
    second = collect(_params(fresh_lake, per_cell=0)).cases
    assert second.quarantined == 1 and second.version == first.version
    later = pl.read_parquet(second.quarantine_file)["reason"][0]
    assert "latest committed version" in later
    stored = _lake(fresh_lake).scan("medicine", "cases").collect()
    assert stored["id"].to_list() == ["MRN-0042"]
    assert json.loads(stored["inputs"][0]) == json.loads(rows[0]["inputs"])
    caught = first.quarantined + second.quarantined
    record("duplicate case ids with other content", 2, caught, 2 - caught)


def test_a_database_password_never_travels_with_the_parameters(monkeypatch) -> None:
    from pydantic import ValidationError

    from domains.privacy import RedactionConfig, Redactor
    from flows.collect import sql_password
    from tasks.collect import SqlSource

    with pytest.raises(
        ValidationError, match="(?s)sql_uri carries a password.*PONDER_SQL_PASSWORD"
    ):
        CollectParams(domain="medicine", sources=["sql"], sql_uri="postgresql://ann:s3cr3t@db/x")
    monkeypatch.setenv("PONDER_SQL_PASSWORD", "s3cr3t")
    source = SqlSource(uri="postgresql://ann@db/x", password=sql_password(None))
    assert source.url().password == "s3cr3t" and "s3cr3t" not in repr(source)
    line = "connecting to postgresql://ann:s3cr3t@db/x failed"
    assert "s3cr3t" not in Redactor(RedactionConfig(), b"k" * 32).text(line)


def test_medcalc_bench_file_through_collect_and_the_cli(fresh_lake: Path, tmp_path: Path) -> None:
    """A MedCalc-Bench CSV as it ships: supported rows land as cases, the rest go to the
    quarantine with their reasons; wrong columns are one error naming both lists."""
    from typer.testing import CliRunner

    from flows.cli import app
    from tests.datasets import ROWS, write_medcalc

    path = write_medcalc(tmp_path / "medcalc.csv", ROWS)
    result = collect(_params(fresh_lake, per_cell=0, sources=["medcalc_bench"], path=path))
    assert result.cases.valid == 3 and result.cases.quarantined == 4
    reasons = sorted(pl.read_parquet(result.cases.quarantine_file)["reason"].to_list())
    assert "calculator not implemented: Free Water Deficit" in reasons
    assert any("label_disagreement: bmi 1" in s for s in result.cases.sources)
    again = collect(_params(fresh_lake, per_cell=0, sources=["medcalc_bench"], path=path))
    assert not again.cases.new_version  # the same file gives the same ids and content
    write_medcalc(tmp_path / "bad.csv", ROWS[:1], columns=mb_columns_without_question())
    shown = CliRunner().invoke(
        app,
        ["collect", "--domain", "medicine", "--source", "medcalc_bench", "--path",
         str(tmp_path / "bad.csv"), "--per-cell", "0", "--no-check-traces"],
    )  # fmt: skip
    assert shown.exit_code != 0
    assert "missing columns ['Question']" in shown.output and "Patient Note" in shown.output


def test_an_ibm_aml_set_through_collect_and_the_cli(fresh_lake: Path, tmp_path: Path) -> None:
    """An IBM AML folder as it ships: attempts and negative alerts land as finance cases,
    unreadable rows and the unclosed block go to the quarantine; the CLI reads it too, and
    a folder that is not a set is one error naming the fix."""
    from typer.testing import CliRunner

    from flows.cli import app
    from tests.datasets import write_ibm

    folder = write_ibm(tmp_path / "HI-Small")
    params = _params(fresh_lake, domain="finance_risk", per_cell=0, sources=["ibm_aml"],
                     path=folder)  # fmt: skip
    result = collect(params)
    assert result.cases.valid == 4 and result.cases.quarantined == 3
    assert result.cases.per_family == {"aml_typology": 4} and result.cases.rows_in == 18
    assert any("2 attempts, 2 negative alerts" in s for s in result.cases.sources)
    assert not collect(params).cases.new_version  # the same files give the same cases
    shown = CliRunner().invoke(
        app,
        ["collect", "--domain", "finance_risk", "--source", "ibm_aml", "--path",
         str(tmp_path), "--per-cell", "0", "--no-check-traces"],
    )  # fmt: skip
    said = " ".join(shown.output.split())
    assert shown.exit_code != 0 and "0 files like *trans*.csv" in said
    assert "fix: put one IBM AML set" in said


def test_a_case_over_the_context_is_quarantined_with_its_token_count(
    fresh_lake: Path, tmp_path: Path, tiny_model: Path
) -> None:
    from tests.datasets import LONG, ROWS, write_medcalc

    path = write_medcalc(tmp_path / "medcalc.csv", [ROWS[0], LONG])
    params = _params(fresh_lake, per_cell=0, sources=["medcalc_bench"], path=path,
                     max_prompt_tokens=2048, tokenizer_model=str(tiny_model))  # fmt: skip
    result = collect(params)
    assert result.cases.valid == 1 and result.cases.quarantined == 1
    (reason,) = pl.read_parquet(result.cases.quarantine_file)["reason"].to_list()
    assert re.fullmatch(r"prompt is \d{4,} tokens > max_prompt_tokens 2048: not cut; .*", reason)


def mb_columns_without_question() -> tuple[str, ...]:
    from domains.medicine.medcalc_bench import COLUMNS

    return tuple(c for c in COLUMNS if c != "Question")
