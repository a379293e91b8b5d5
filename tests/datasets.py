"""Hand-written files in the public datasets' formats, with their oddities (nothing is
downloaded): MedCalc-Bench rows for the medicine source tests."""

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
