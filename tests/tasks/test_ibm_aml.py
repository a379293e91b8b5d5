"""IBM AML sets streamed into alert cases: matching, context, negatives, quarantine."""

from __future__ import annotations

from pathlib import Path

import pytest

from domains.errors import PonderError
from tasks.ibm_aml import IBMAmlOptions, read_ibm_aml
from tests.datasets import IBM_PATTERNS, IBM_TRANS, write_ibm


def _read(folder: Path, tmp_path: Path, **kw):
    return read_ibm_aml(folder, options=IBMAmlOptions(**kw), scratch_root=tmp_path / "scratch")


def _by_typology(alerts) -> dict:
    return {
        case["truth"]["typology"]: case
        for _, case in alerts.cases
        if case["truth"]["typology"] != "none"
    }


def test_attempts_become_alerts_with_their_window_context(tmp_path: Path) -> None:
    alerts = _read(write_ibm(tmp_path / "set"), tmp_path)
    assert (alerts.rows_in, alerts.attempts, alerts.negatives) == (18, 2, 2)
    fan, cycle = _by_typology(alerts)["fan_out"], _by_typology(alerts)["cycle"]
    members = ["8100A0001", "8100A0002", "8100A0003", "8100A0004"]
    assert fan["truth"] == {"typology": "fan_out", "transactions": ["T3", "T4", "T5"],
                            "accounts": members}  # fmt: skip
    # a member's own payment (T9) and its counterparty's (T10) are context; the hub's
    # payment two weeks later (T11) is outside the window
    assert [t["txn_id"] for t in fan["inputs"]["transactions"]] == ["T3", "T4", "T5", "T9", "T10"]
    assert fan["inputs"]["subject_account"] == "8100A0001"
    assert fan["inputs"]["entity_type"] == "Corporation"
    assert cycle["inputs"]["entity_type"] is None  # "Ana Lima" is a name, never kept
    assert cycle["inputs"]["origin"]["detail"] == "Max 3 hops"
    paid = {t["txn_id"]: (t["amount"], t["currency"]) for t in cycle["inputs"]["transactions"]}
    assert paid["T8"] == (16250.0, "US Dollar")  # the amount paid, in the payment currency
    assert not list((tmp_path / "scratch").iterdir())  # the typed copy is gone


def test_unreadable_rows_and_broken_blocks_are_quarantined_with_where_and_why(
    tmp_path: Path,
) -> None:
    alerts = _read(write_ibm(tmp_path / "set"), tmp_path)
    reasons = {r["row"]: r["reason"] for r in alerts.rejected}
    assert reasons[15] == "HI-Small_Trans.csv row 15: Timestamp: not YYYY/MM/DD HH:MM"
    assert reasons[16].startswith("HI-Small_Trans.csv row 16: Payment Format: not one of")
    assert reasons[13].startswith("HI-Small_Patterns.txt line 13: unterminated block")
    assert len(alerts.rejected) == 3


def test_ragged_quoted_and_blank_lines_never_stop_the_file(tmp_path: Path) -> None:
    """A row with a field too few or too many, or an unclosed quote, is quarantined alone;
    a blank line holds nothing and is skipped."""
    good = "2022/09/06 10:00,41,8400D0001,42,8400D0002,10.00,US Dollar,10.00,US Dollar,ACH,0"
    extra = "\n".join([good.rsplit(",", 1)[0], good + ",9", good.replace(",8400D0001", ',"8400'),
                       "", good])  # fmt: skip
    alerts = _read(write_ibm(tmp_path / "set", trans=IBM_TRANS + extra + "\n"), tmp_path)
    reasons = {r["row"]: r["reason"].split(": ", 1)[1] for r in alerts.rejected}
    assert reasons[19] == "fewer than the 11 fields of the header"
    assert reasons[20] == "more than the 11 fields of the header"
    assert reasons[21] == "Account: holds a quote"
    assert 22 not in reasons and 23 not in reasons and alerts.rows_in == 22


def test_negative_alerts_avoid_every_laundering_account(tmp_path: Path) -> None:
    alerts = _read(write_ibm(tmp_path / "set"), tmp_path, negative_ratio=1.0)
    laundering = {"8100A0001", "8100A0002", "8100A0003", "8100A0004", "8200B0001",
                  "8200B0002", "8200B0003", "8500E0001", "8500E0002", "8500E0003"}  # fmt: skip
    negatives = [c for _, c in alerts.cases if c["truth"]["typology"] == "none"]
    assert len(negatives) == 2
    for case in negatives:
        assert case["inputs"]["subject_account"] not in laundering
        assert case["truth"] == {"typology": "none", "accounts": [], "transactions": []}
        assert all(t["txn_id"] not in {"T3", "T4", "T5", "T6", "T7", "T8"}
                   for t in case["inputs"]["transactions"])  # fmt: skip
    assert _read(write_ibm(tmp_path / "set"), tmp_path, negative_ratio=0).negatives == 0


def test_the_same_files_give_the_same_cases(tmp_path: Path) -> None:
    folder = write_ibm(tmp_path / "set")
    assert _read(folder, tmp_path).cases == _read(folder, tmp_path).cases
    other = _read(folder, tmp_path, seed=7)
    assert {c["id"] for _, c in other.cases if c["truth"]["typology"] != "none"} == {
        c["id"] for _, c in _read(folder, tmp_path).cases if c["truth"]["typology"] != "none"
    }


def test_the_size_cap_samples_context_and_refuses_oversized_attempts(tmp_path: Path) -> None:
    alerts = _read(write_ibm(tmp_path / "set"), tmp_path, max_transactions=4)
    fan = _by_typology(alerts)["fan_out"]
    ids = [t["txn_id"] for t in fan["inputs"]["transactions"]]
    assert len(ids) == 4 and {"T3", "T4", "T5"} <= set(ids)
    small = _read(write_ibm(tmp_path / "set"), tmp_path, max_transactions=2)
    assert small.attempts == 0
    assert any("3 transactions > max_transactions 2" in r["reason"] for r in small.rejected)


def test_a_pattern_line_without_its_transaction_refuses_the_attempt(tmp_path: Path) -> None:
    patterns = IBM_PATTERNS.replace("9000.00,US Dollar,9000.00", "9000.01,US Dollar,9000.01")
    alerts = _read(write_ibm(tmp_path / "set", patterns=patterns), tmp_path)
    assert set(_by_typology(alerts)) == {"cycle"}
    assert any(r["row"] == 1 and "1 of 3 transactions of the block have no matching row"
               in r["reason"] for r in alerts.rejected)  # fmt: skip


def test_wrong_columns_and_missing_files_name_what_was_expected_and_found(tmp_path: Path) -> None:
    trans = IBM_TRANS.replace("Amount Paid,", "Paid,", 1)
    with pytest.raises(PonderError, match=r"expected the columns .*'Amount Paid'.*found .*'Paid'"):
        _read(write_ibm(tmp_path / "bad", trans=trans), tmp_path)
    folder = write_ibm(tmp_path / "two")
    (folder / "LI-Small_Trans.csv").write_text(IBM_TRANS)
    with pytest.raises(PonderError, match="one IBM AML set"):
        _read(folder, tmp_path)
    (tmp_path / "none").mkdir()
    with pytest.raises(PonderError, match="0 files like \\*trans\\*.csv"):
        _read(tmp_path / "none", tmp_path)
