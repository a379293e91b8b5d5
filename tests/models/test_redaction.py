"""The process-wide redaction key: created once, whole, even when processes race for it."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path


def _race(path: str, barrier: mp.Barrier, out: mp.Queue) -> None:
    from models.redaction import create_key

    barrier.wait()
    create_key(Path(path))
    out.put(Path(path).read_text())


def test_racing_processes_all_read_one_whole_key(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    n = 6
    barrier, out = ctx.Barrier(n), ctx.Queue()
    path = tmp_path / "home" / ".redact-key"
    procs = [ctx.Process(target=_race, args=(str(path), barrier, out)) for _ in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    keys = [out.get(timeout=5) for _ in procs]
    assert all(p.exitcode == 0 for p in procs)
    assert len(set(keys)) == 1 and len(keys[0]) == 64  # one key, never an empty read
    assert sorted(x.name for x in path.parent.iterdir()) == [".redact-key"]  # no temp left
    assert path.stat().st_mode & 0o077 == 0


def test_tracebacks_and_stacks_in_log_records_are_masked(fresh_lake) -> None:
    """A formatter renders ``exc_info`` after the record factory ran: the traceback is
    masked in the factory, before any handler sees it."""
    import logging

    from models.redaction import install

    install()
    record = None
    try:
        raise ValueError("bad row: Patient: Ann Okafor, MRN QX4821390")
    except ValueError:
        import sys

        record = logging.getLogger("ponder.test").makeRecord(
            "ponder.test",
            logging.ERROR,
            __file__,
            1,
            "failed on %s",
            ("Dr. Tomas Herrera",),
            sys.exc_info(),
            sinfo="Stack: Patient: Ann Okafor",
        )
    text = logging.Formatter("%(message)s").format(record)
    assert "ValueError" in text and "Traceback" in text  # the traceback is kept, masked
    for raw in ("Okafor", "QX4821390", "Herrera"):
        assert raw not in text


def test_a_span_whose_redaction_fails_leaves_withheld(monkeypatch) -> None:
    import models.redaction as r

    class Span:
        inputs = {"note": "Patient: Ann Okafor"}
        outputs = "Ann Okafor's score is 3"

        def set_inputs(self, v: object) -> None:
            self.inputs = v

        def set_outputs(self, v: object) -> None:
            self.outputs = v

    def broken(domain: str | None = None) -> None:
        raise RuntimeError("key file unreadable")

    monkeypatch.setattr(r, "redactor", broken)
    span = Span()
    r.redact_span(span)
    assert span.inputs == r.WITHHELD and span.outputs == r.WITHHELD
