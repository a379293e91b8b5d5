"""Real-data formats at size: how fast a MedCalc-Bench file comes in, and what it disputes.

``python -m bench.realdata --part medcalc`` writes a MedCalc-Bench-format CSV of ``--rows``
rows (the dataset's 14 columns) from ponder's own generator: the formula calculators' notes
as Patient Note, their facts as Relevant Entities in the dataset's names and units, the
truth with limits of +/-5%, and the reference as the explanation. A share of the rows
(``--unsupported``) name calculators ponder does not implement, and a share
(``--disputed``) carry a ground truth 20% off, so the label cross-check has something to
find. Then ``collect --source medcalc_bench`` imports the file in a home of its own.

Prints the settings, the import time and rows/s (the first run, which starts Prefect and the
libraries, apart; then the median and range of the others), the
rows kept and quarantined, and the label disagreements found per calculator against those
planted. One-run figures on a shared box: compare within a run.

The IBM AML part (a 5-million-transaction IBM-format file, rows/s and peak RSS at 1M and 5M)
is not built yet (issue 23).
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

from rich.console import Console

OUT = Console(highlight=False, markup=False, soft_wrap=True)
FORMULAS = ("anion_gap", "corrected_calcium", "bmi", "qtc_bazett")
ENTITY = {  # ponder's fact -> (MedCalc-Bench entity, unit)
    "sodium": ("Sodium", "mmol/L"),
    "chloride": ("Chloride", "mEq/L"),
    "bicarbonate": ("Bicarbonate", "mmol/L"),
    "calcium": ("Calcium", "mg/dL"),
    "albumin": ("Albumin", "g/dL"),
    "weight_kg": ("weight", "kg"),
    "height_cm": ("height", "cm"),
    "hr": ("Heart Rate or Pulse", "beats per minute"),
    "qt_ms": ("QT Interval", "msec"),
}


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--part", choices=["medcalc"], default="medcalc")
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--unsupported", type=float, default=0.1)
    ap.add_argument("--disputed", type=float, default=0.05)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    return ap.parse_args()


def medcalc_file(
    path: Path, *, rows: int, unsupported: float, disputed: float, seed: int
) -> Counter:
    """Write the file; returns the planted disagreements per calculator."""
    from domains.base import get_domain
    from domains.medicine.medcalc_bench import COLUMNS, NAMES

    names = {v: k for k, v in NAMES.items()}
    rng, planted = random.Random(seed), Counter()
    cases = get_domain("medicine").generate(rows, seed, "clinical_calc", 2,
                                            where={"calculator": list(FORMULAS)})  # fmt: skip
    with path.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(COLUMNS)
        for n, case in enumerate(cases[:rows], start=1):
            calc, facts = case.inputs["calculator"], case.inputs["facts"]
            value = float(case.truth["value"])
            if rng.random() < disputed:
                value, planted[calc] = round(value * 1.2, 4), planted[calc] + 1
            name = names[calc] if rng.random() >= unsupported else "Free Water Deficit"
            if name == "Free Water Deficit" and value != float(case.truth["value"]):
                planted[calc] -= 1  # refused before any cross-check
            entities = {ENTITY[k][0]: [v, ENTITY[k][1]] for k, v in facts.items()
                        if k in ENTITY and v is not None}  # fmt: skip
            out.writerow([n, 0, name, "lab", "decimal", f"note-{n}", "synthetic",
                          case.inputs["note"], f"What is the patient's {calc}?", repr(entities),
                          value, round(value * 0.95, 4), round(value * 1.05, 4),
                          (case.reference or "").replace("## Step", "Step")])  # fmt: skip
    return +planted


def main() -> None:
    args = _args()
    OUT.print(f"settings: MedCalc-Bench format, {args.rows:,} rows ({args.unsupported:.0%} "
              f"unsupported calculators, {args.disputed:.0%} disputed labels), "
              f"{args.repeats} imports, seed {args.seed}")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="ponder-realdata-") as tmp:
        root = Path(tmp)
        os.environ["PONDER_HOME"] = str(root / "home")
        from flows.collect import CollectParams, collect
        from flows.console import quiet
        from models.settings import get_settings

        get_settings.cache_clear()
        path = root / "medcalc.csv"
        planted = medcalc_file(path, rows=args.rows, unsupported=args.unsupported,
                               disputed=args.disputed, seed=args.seed)  # fmt: skip
        times, result = [], None
        with quiet("bench-realdata", [OUT]):
            for k in range(args.repeats):
                os.environ["PONDER_LAKE_ROOT"] = str(root / f"lake-{k}")  # a fresh lake each
                get_settings.cache_clear()
                params = CollectParams(domain="medicine", sources=["medcalc_bench"], path=path,
                                       per_cell=0, check_traces=False)  # fmt: skip
                start = time.perf_counter()
                result = collect(params)
                times.append(time.perf_counter() - start)
    assert result is not None
    cold, warm = times[0], times[1:] or times
    med = statistics.median(warm)
    OUT.print(f"import, first run (Prefect and library start-up included): {cold:.2f} s")
    OUT.print(
        f"import, later runs: median {med:.2f} s [{min(warm):.2f}, {max(warm):.2f}] "
        f"for {args.rows:,} rows = {args.rows / med:,.0f} rows/s (the whole collect flow)"
    )
    OUT.print(f"kept {result.cases.valid:,}, quarantined {result.cases.quarantined:,}")
    found = next(s for s in result.cases.sources if s.startswith("medcalc_bench:"))
    OUT.print(f"label disagreements found: {found.partition('(')[2].rstrip(')')}")
    OUT.print(f"label disagreements planted: {dict(sorted(planted.items())) or 'none'}")


if __name__ == "__main__":
    main()
