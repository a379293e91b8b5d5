"""1,000 planted identifiers go through collect and infer; none may reach any output channel.

The notes of 125 medicine cases carry eight identifiers each (patient, relative and
physician names, MRN, date of birth, phone, email, SSN). Inference runs with a stand-in
policy, ``EchoGenerator``, that repeats the note in its answer and logs the prompt the way
a chatty engine does: the worst case for leaks, which a random tiny model cannot produce.
Then refresh_reward, finetune and evaluate_promote run on the same lake (reward models
trained on the echoed answers, SFT and GRPO with TRL's completion sample, a gate that runs
inference again). Every channel that leaves the lake is searched for every identifier: the
MLflow store (tracking DB with runs, params, metrics and traces, and every artifact file,
including the uploaded TRL completions), the HTML report, Prefect artifacts, and logs
(Prefect's API logs and the Python log records).
"""

from __future__ import annotations

import json
import logging
import random
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from domains.base import get_domain
from domains.identifiers import Maker
from flows.collect import CollectParams, collect
from flows.evaluate_promote import EvaluateParams, evaluate_promote
from flows.finetune import FinetuneParams, finetune
from flows.infer import InferParams, infer
from flows.refresh_reward import RefreshParams, refresh_reward
from models import engine
from models.engine import Completion, GenerationOutput, Generator
from models.registry import model_name
from models.settings import get_settings
from tasks.lake import Lake
from tests.aliases import clear_aliases

pytestmark = pytest.mark.usefixtures("prefect_harness")
CASES = 125


def _fresh(used: set[str], make: Any) -> str:
    """A value not planted before (so 1,000 means 1,000 distinct identifiers)."""
    while (value := make()) in used:
        pass
    used.add(value)
    return value


def _planted(m: Maker, used: set[str]) -> dict[str, str]:
    """Eight identifiers in the formats of the redaction evaluation set
    (``domains.identifiers``): names in any case or "Last, First", international phones,
    SSNs with any separator, MRNs and dates of birth in their real formats."""
    return {
        "patient": _fresh(used, m.name_format),
        "relative": _fresh(used, m.person),
        "doctor": _fresh(used, m.person),
        "mrn": _fresh(used, lambda: m.mrn()[1]),
        "dob": _fresh(used, lambda: m.dob()[1]),
        "phone": _fresh(used, m.phone),
        "email": _fresh(used, m.email),
        "ssn": _fresh(used, m.ssn),
    }


def _note(p: dict[str, str], note: str, labels: tuple[str, str]) -> str:
    mrn_label, dob_label = labels
    return (
        f"Patient: {p['patient']}, {dob_label} {p['dob']}, {mrn_label} {p['mrn']}, phone "
        f"{p['phone']}, email {p['email']}, SSN {p['ssn']}. Daughter {p['relative']} was "
        f"present. Seen by Dr. {p['doctor']}. {note}"
    )


def _plant(inbox: Path) -> set[str]:
    m, used, ids, rows = Maker(random.Random(11)), set(), set(), []
    for case in get_domain("medicine").generate(CASES, seed=3):
        p = _planted(m, used)
        ids |= set(p.values())
        labels = (m.mrn()[0], m.dob()[0])
        inputs = {**case.inputs, "note": _note(p, case.inputs["note"], labels)}
        rows.append(
            {
                "family": case.family,
                "inputs": json.dumps(inputs),
                "truth": json.dumps(case.truth),
                "reference": case.reference,  # so finetune has SFT rows
            }
        )
    (inbox / "cases" / "phi.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert len(ids) == 8 * CASES == 1000
    return ids


class EchoGenerator(Generator):
    """Stand-in policy: answers with the note it was given and logs its prompt."""

    backend = "echo"

    def _generate(self, prompt_ids, sampling, progress) -> list[GenerationOutput]:  # noqa: ANN001
        outs = []
        for ids in prompt_ids:
            prompt = self.tokenizer.decode(ids)
            note = re.search(r"Note: (.*?)\n", prompt, re.S)
            text = f"## Step 1: Reading the note: {note.group(1) if note else ''}\n\nAnswer: 0"
            logging.getLogger("vllm.echo").warning("prompt: %s", prompt[-600:])
            tokens = self.tokenizer.encode(text, add_special_tokens=False)
            done = Completion(
                text=text, token_ids=tokens, finish_reason="stop", cumulative_logprob=-1.0
            )
            outs.append(GenerationOutput(prompt_token_ids=ids, completions=[done] * sampling.n))
        return outs

    def close(self) -> None:
        pass


def _files_text(root: Path) -> str:
    """Everything readable under ``root``: Parquet as its rows, other files as bytes."""
    parts = []
    for path in (p for p in root.rglob("*") if p.is_file() and p.stat().st_size < 50e6):
        if path.suffix == ".safetensors":
            continue
        if path.suffix == ".parquet":
            parts.append(str(pl.read_parquet(path).to_dicts()))
        else:
            parts.append(path.read_bytes().decode("utf-8", errors="replace"))
    return "\n".join(parts)


CONTROL = "Zebulon Quartermaine, MRN 99887766"  # planted unredacted on purpose below


def _prefect_text(since) -> tuple[str, str]:
    """This test's Prefect artifacts and API logs: every flow run started since ``since``,
    paged through to the end (the shared server holds other tests' rows too)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import LogCreate
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        FlowRunFilter,
        FlowRunFilterStartTime,
        LogFilter,
        LogFilterFlowRunId,
    )
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(start_time=FlowRunFilterStartTime(after_=since))
        )
        ids = [r.id for r in runs]
        assert len(ids) >= 5, "collect, infer, refresh_reward, finetune and evaluate_promote"
        control = LogCreate(
            name="test", level=40, message=CONTROL, timestamp=since, flow_run_id=ids[0]
        )
        client.create_logs([control])  # positive control: the reader must find this line
        logs = _paged(
            lambda limit, offset: client.read_logs(
                LogFilter(flow_run_id=LogFilterFlowRunId(any_=ids)), limit=limit, offset=offset
            )
        )
        artifacts = _paged(
            lambda limit, offset: client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=ids)),
                limit=limit,
                offset=offset,
            )
        )
    assert artifacts, "the flows' own artifacts were read"
    art = "\n".join(f"{a.key} {a.description} {json.dumps(a.data, default=str)}" for a in artifacts)
    return art, "\n".join(log.message for log in logs)


def _later_stages(model: str) -> dict[str, Any]:
    """refresh_reward, finetune and evaluate_promote over the planted lake, tiny budgets."""
    for kind in ("policy", "orm", "prm"):
        clear_aliases(model_name("medicine", kind))
    refresh = refresh_reward(
        RefreshParams(
            domain="medicine",
            policy=model,
            mc_rollouts=1,
            mc_paths_per_case=1,
            mc_max_tokens=8,
            floor=0.0,
            train={"max_steps": 1, "batch_size": 2, "max_length": 2048},
        )
    )
    train = {"sft_max_steps": 1, "grpo_max_steps": 1, "num_generations": 2, "batch_size": 2}
    tuned = finetune(
        FinetuneParams(
            domain="medicine",
            base_model=model,
            curriculum=False,
            max_rows=4,
            train=train | {"max_completion_length": 8},
        )
    )
    gate = {"floor": 0.0, "first_baseline": "none"}  # plumbing: a random model, no bar
    judged = evaluate_promote(
        EvaluateParams(domain="medicine", strategy="cot", width=1, max_tokens=64, gate=gate)
    )
    return {"refresh": refresh, "finetune": tuned, "evaluate": judged}


def _paged(read, limit: int = 200) -> list:
    rows, offset = [], 0
    while page := read(limit, offset):
        rows += page
        offset += len(page)
    return rows


def _forms(identifier: str) -> set[str]:
    """The identifier as text, and as JSON or a Python repr escape it ("Jos\\u00e9",
    "O\\'Brien"), once or twice (a JSON string inside a repr): an artifact holding an
    escaped form leaks it all the same."""
    once = {
        identifier,
        json.dumps(identifier)[1:-1],
        json.dumps(identifier, ensure_ascii=False)[1:-1],
        identifier.encode("unicode_escape").decode(),
    }
    reprs = {repr(f)[1:-1] for f in once} | {repr(f + '"')[1:-2] for f in once}  # \' too
    return once | reprs | {json.dumps(f)[1:-1] for f in once}


def _leaks(ids: set[str], text: str) -> list[str]:
    return sorted(i for i in ids if any(f in text for f in _forms(i)))


def test_no_planted_identifier_leaves_the_lake(fresh_lake, tiny_model, monkeypatch, caplog) -> None:
    ids = _plant(fresh_lake / "inbox")
    since = datetime.now(UTC)
    monkeypatch.setitem(engine.BACKENDS, "echo", EchoGenerator)
    monkeypatch.setattr(engine, "choose_backend", lambda requested=None: "echo")
    caplog.set_level(logging.INFO)
    params = {"domain": "medicine", "inbox": fresh_lake / "inbox", "sources": ["files"]}
    got = collect(CollectParams(**params, per_cell=0, check_traces=False))
    assert got.cases.valid == CASES
    out = infer(
        InferParams(
            domain="medicine",
            model=str(tiny_model),
            strategy="cot",
            width=1,
            max_tokens=512,
            split=None,
            log_traces=CASES,
            shard_size=64,
        )
    )
    stages = _later_stages(str(tiny_model))
    assert stages["refresh"].status == "trained" and stages["evaluate"].cases > 0
    settings, lake = get_settings(), Lake(fresh_lake / "lake")
    uploaded = [p for p in Path(settings.artifact_root).rglob("completions/*") if p.is_file()]
    assert uploaded, "TRL's completion sample was uploaded (and is scanned below)"
    # positive controls: the raw lake holds them, and the policy's answers repeat them
    raw = set(_leaks(ids, _files_text(lake.latest("medicine", "cases").path)))
    assert raw == ids, f"not found in the raw lake: {sorted(ids - raw)[:10]}"
    predictions = lake.scan("medicine", "predictions", out.version).collect()
    assert len(_leaks(ids, "\n".join(predictions["text"]))) == 1000
    report = "".join(p.read_text() for p in sorted(Path(out.report).parent.glob("*.html")))
    assert "[NAME-" in report and "[MRN-" in report
    artifacts, api_logs = _prefect_text(since)
    assert CONTROL in api_logs, "the log reader sees this test's own runs"
    api_logs = api_logs.replace(CONTROL, "")
    channels: dict[str, Any] = {
        "mlflow tracking store (runs, traces)": Path(settings.home, "mlflow.db")
        .read_bytes()
        .decode("latin-1"),
        "mlflow artifacts": _files_text(Path(settings.artifact_root)),
        "HTML report": report,
        "Prefect artifacts": artifacts,
        "Prefect API logs": api_logs,
        "Python log records": "\n".join(r.getMessage() for r in caplog.records),
    }
    leaked = {name: _leaks(ids, text)[:5] for name, text in channels.items()}
    bad = [(r.name, r.getMessage()[:300]) for r in caplog.records if _leaks(ids, r.getMessage())]
    assert not bad, bad[:3]
    assert not any(leaked.values()), leaked
    assert "vllm.echo" in {r.name for r in caplog.records}  # the chatty log lines were made
