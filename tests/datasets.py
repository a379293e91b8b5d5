"""Hand-written files in the public datasets' formats, with their oddities (nothing is
downloaded): MedCalc-Bench rows for the medicine source tests and an IBM AML set for finance."""

from __future__ import annotations

import csv
from pathlib import Path

from domains.medicine import medcalc_bench as mb

NOTE = "A 64-year-old man presented with fatigue. Labs: sodium 140 mmol/L, chloride 100 mEq/L."


def _row(n: int, name: str, **kw: object) -> dict[str, object]:
    base = {
        "Row Number": n,
        "Calculator ID": 0,
        "Calculator Name": name,
        "Category": "lab",
        "Output Type": "decimal",
        "Note ID": f"pmc-{n}",
        "Note Type": "Extracted",
        "Patient Note": NOTE,
        "Question": "What is the patient's anion gap in terms of mEq/L?",
        "Relevant Entities": "{}",
        "Ground Truth Answer": "16",
        "Lower Limit": "15.2",
        "Upper Limit": "16.8",
        "Ground Truth Explanation": "",
    }
    return base | kw


ROWS = [
    _row(
        1,
        "Anion Gap",
        **{
            "Relevant Entities": "{'Sodium': [140.0, 'mmol/L'], 'Chloride': [100.0, 'mEq/L'], "
            "'Bicarbonate': [24.0, 'mmol/L']}",
            "Ground Truth Explanation": "The formula is sodium - (chloride + bicarbonate). "
            "The sodium is 140 mmol/L. Plugging in, 140 - (100 + 24) = 16 mEq/L. So the "
            "anion gap is 16 mEq/L.",
        },
    ),
    _row(  # ponder's BMI from 154 lbs and 70 in is 22.1: the dataset's 30.0 is disputed
        2,
        "Body Mass Index (BMI)",
        **{
            "Relevant Entities": "{'weight': [154.0, 'lbs'], 'height': [70.0, 'in']}",
            "Ground Truth Answer": "30.0",
            "Lower Limit": "28.5",
            "Upper Limit": "31.5",
        },
    ),
    _row(
        3,
        "CURB-65 Score for Pneumonia Severity",
        **{
            "Output Type": "integer",
            "Relevant Entities": "{'age': [80, 'years'], 'Confusion': True}",
            "Ground Truth Answer": "2",
            "Lower Limit": "2",
            "Upper Limit": "2",
        },
    ),
    _row(4, "Free Water Deficit"),
    _row(
        5,
        "Estimated Due Date",
        **{"Output Type": "date", "Ground Truth Answer": "08/31/2023"},
    ),
    _row(6, "Anion Gap", **{"Relevant Entities": "__import__('os').system('true')"}),
    _row(7, "Anion Gap", **{"Lower Limit": "17", "Upper Limit": "18"}),  # limits miss the truth
]


def write_medcalc(
    path: Path, rows: list[dict[str, object]], columns: tuple[str, ...] = mb.COLUMNS
) -> Path:
    with path.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(columns)
        out.writerows([[r.get(c, "") for c in columns] for r in rows])
    return path


# a supported row whose note (about 9,000 characters) does not fit a short context
LONG = _row(8, "Anion Gap", **{"Patient Note": (NOTE + " ") * 100})


# IBM AML (HI-Small layout): the transactions CSV names `Account` twice and writes bank ids
# bare; the patterns file pads them with zeros. Rows 3-5 are a FAN-OUT attempt, 6-8 a CYCLE
# (its header has a detail suffix), 9-10 benign context of the fan-out (a member's payment
# and its counterparty's), 11 the fan-out's hub far outside the window, 12-14 clean accounts
# for negative alerts, 15-16 unreadable rows (an ISO timestamp, an unknown payment format),
# 17-18 a FAN-IN attempt whose block is never closed.
IBM_HEADER = (
    "Timestamp,From Bank,Account,To Bank,Account,Amount Received,Receiving Currency,"
    "Amount Paid,Payment Currency,Payment Format,Is Laundering\n"
)
IBM_TRANS = IBM_HEADER + """\
2022/09/01 00:20,10,8000EBD30,10,8000EBD30,3697.34,US Dollar,3697.34,US Dollar,Reinvestment,0
2022/09/01 01:00,3208,8000F4580,1,8000F5340,0.01,US Dollar,0.01,US Dollar,Cheque,0
2022/09/02 10:05,70,8100A0001,12,8100A0002,9000.00,US Dollar,9000.00,US Dollar,ACH,1
2022/09/02 10:40,70,8100A0001,12,8100A0003,8800.00,US Dollar,8800.00,US Dollar,ACH,1
2022/09/02 11:15,70,8100A0001,220,8100A0004,9100.00,US Dollar,9100.00,US Dollar,ACH,1
2022/09/03 08:00,5,8200B0001,6,8200B0002,20000.00,US Dollar,20000.00,US Dollar,Wire,1
2022/09/03 20:00,6,8200B0002,7,8200B0003,18000.00,US Dollar,18000.00,US Dollar,Wire,1
2022/09/04 09:30,7,8200B0003,5,8200B0001,16300.00,Euro,16250.00,US Dollar,Wire,1
2022/09/02 15:00,12,8100A0002,31,8300C0001,120.50,US Dollar,120.50,US Dollar,Credit Card,0
2022/09/02 18:00,31,8300C0001,32,8300C0002,75.25,US Dollar,75.25,US Dollar,Cash,0
2022/09/20 12:00,70,8100A0001,40,8300C0003,50.00,US Dollar,50.00,US Dollar,Cheque,0
2022/09/06 09:00,41,8400D0001,42,8400D0002,410.00,US Dollar,410.00,US Dollar,ACH,0
2022/09/06 13:00,42,8400D0002,43,8400D0003,220.00,US Dollar,220.00,US Dollar,Cheque,0
2022/09/07 09:00,44,8400D0004,41,8400D0001,905.10,US Dollar,905.10,US Dollar,Wire,0
2022-09-03T10:00:00,41,8400D0001,42,8400D0002,10.00,US Dollar,10.00,US Dollar,ACH,0
2022/09/03 10:00,41,8400D0001,42,8400D0002,10.00,US Dollar,10.00,US Dollar,Telegraph,0
2022/09/08 10:00,50,8500E0001,51,8500E0003,7000.00,US Dollar,7000.00,US Dollar,ACH,1
2022/09/08 11:00,52,8500E0002,51,8500E0003,6900.00,US Dollar,6900.00,US Dollar,ACH,1
"""
IBM_PATTERNS = """\
BEGIN LAUNDERING ATTEMPT - FAN-OUT
2022/09/02 10:05,00070,8100A0001,00012,8100A0002,9000.00,US Dollar,9000.00,US Dollar,ACH,1
2022/09/02 10:40,00070,8100A0001,00012,8100A0003,8800.00,US Dollar,8800.00,US Dollar,ACH,1
2022/09/02 11:15,00070,8100A0001,00220,8100A0004,9100.00,US Dollar,9100.00,US Dollar,ACH,1
END LAUNDERING ATTEMPT - FAN-OUT

BEGIN LAUNDERING ATTEMPT - CYCLE:  Max 3 hops
2022/09/03 08:00,005,8200B0001,006,8200B0002,20000.00,US Dollar,20000.00,US Dollar,Wire,1
2022/09/03 20:00,006,8200B0002,007,8200B0003,18000.00,US Dollar,18000.00,US Dollar,Wire,1
2022/09/04 09:30,007,8200B0003,005,8200B0001,16300.00,Euro,16250.00,US Dollar,Wire,1
END LAUNDERING ATTEMPT - CYCLE

BEGIN LAUNDERING ATTEMPT - FAN-IN
2022/09/08 10:00,00050,8500E0001,00051,8500E0003,7000.00,US Dollar,7000.00,US Dollar,ACH,1
2022/09/08 11:00,00052,8500E0002,00051,8500E0003,6900.00,US Dollar,6900.00,US Dollar,ACH,1
"""
IBM_ACCOUNTS = """\
Bank Name,Bank ID,Account Number,Entity ID,Entity Name
First Bank #70,070,8100A0001,80067C180,Corporation #33520
Second Bank #5,005,8200B0001,800A3B4C0,Ana Lima
"""


def write_ibm(folder: Path, *, trans: str = IBM_TRANS, patterns: str = IBM_PATTERNS,
              accounts: str | None = IBM_ACCOUNTS) -> Path:  # fmt: skip
    """One IBM AML set in ``folder`` as it ships (HI-Small's file names)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "HI-Small_Trans.csv").write_text(trans)
    (folder / "HI-Small_Patterns.txt").write_text(patterns)
    if accounts is not None:
        (folder / "HI-Small_accounts.csv").write_text(accounts)
    return folder
