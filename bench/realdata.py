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

``--part ibm`` writes IBM-AML-format sets (HI-Small's three files) of 1 million and
``--rows`` (5 million) transactions: background payments among accounts at their banks,
self-transfers booked as Reinvestment, a share in other currencies, and one planted
laundering attempt (AMLSim's eight typologies, ``aml.pattern_edges``) per ~13,000
transactions, as in HI-Small, listed in the patterns file with zero-padded banks. Each set
is read by the ``ibm_aml`` source (``tasks.ibm_aml.read_ibm_aml``) in a fresh process,
``--repeats`` times: transactions/s (median and range) and the process's peak RSS, at each
size; the goals are RSS at 5M <= 1.2x RSS at 1M, and >= 500,000 transactions/s. It also
checks every planted attempt came back with its typology, members and transactions.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import shutil
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
    ap.add_argument("--part", choices=["medcalc", "ibm", "ibm-read"], default="medcalc")
    ap.add_argument("--rows", type=int, default=1000, help="medcalc rows, or the large IBM set")
    ap.add_argument("--path", type=Path, help="ibm-read: the set's folder (one run, as JSON)")
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
    if args.part == "ibm-read":
        return ibm_read(args.path)
    if args.part == "ibm":
        return ibm_bench(max(args.rows, 1_000_000), args.repeats, args.seed)
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


IBM_CURRENCIES = ("US Dollar", "Euro", "Yuan", "Rupee", "UK Pound", "Yen", "Swiss Franc")
IBM_FORMATS = ("Cheque", "Credit Card", "ACH", "Cash", "Reinvestment", "Wire", "Bitcoin")
DAY_MIN = 24 * 60


def ibm_set(folder: Path, *, rows: int, seed: int, chunk: int = 500_000) -> list[dict]:
    """Write an IBM-format set of ``rows`` transactions; returns the planted attempts
    (typology, members) in patterns-file order."""
    import numpy as np

    from domains.finance_risk.ibm_aml import COLUMNS, TYPOLOGY

    g, rng = np.random.default_rng(seed), random.Random(seed)
    n_acc = max(rows // 10, 200)
    ids = np.unique(g.integers(16**7, 16**8, int(n_acc * 1.05)))[:n_acc]
    accts = np.char.add("8", np.char.upper(np.char.mod("%08x", g.permutation(ids))))
    banks = g.integers(1, max(n_acc // 20, 10), n_acc)
    chunks, span = (rows + chunk - 1) // chunk, 18 * DAY_MIN
    attempts = [_ibm_attempt(rng, n_acc, span) for _ in range(max(rows // 13_000, 4))]
    folder.mkdir(parents=True, exist_ok=True)
    names = {v: k for k, v in TYPOLOGY.items()}
    with (folder / "HI-Small_Trans.csv").open("wb") as fh:
        fh.write((",".join(COLUMNS) + "\n").encode())
        for c in range(chunks):
            lo, hi = c * span // chunks, (c + 1) * span // chunks
            last = c == chunks - 1  # the last slice takes every later edge too
            mine = [e for a in attempts for e in a["edges"] if lo <= e[0] and (last or e[0] < hi)]
            n = min(chunk, rows - c * chunk) - len(mine)
            _ibm_chunk(g, n, mine, lo, hi, accts, banks).write_csv(fh, include_header=False)
    with (folder / "HI-Small_Patterns.txt").open("w") as fh:
        for a in attempts:
            fh.write(f"BEGIN LAUNDERING ATTEMPT - {names[a['typology']]}{a['detail']}\n")
            for minute, s, d, amount, fmt in sorted(a["edges"]):
                when = _ibm_time(minute)
                fh.write(f"{when},{banks[s]:05d},{accts[s]},{banks[d]:05d},{accts[d]},"
                         f"{amount:.2f},US Dollar,{amount:.2f},US Dollar,{fmt},1\n")  # fmt: skip
            fh.write(f"END LAUNDERING ATTEMPT - {names[a['typology']]}\n\n")
    return [{"typology": a["typology"], "members": sorted(str(accts[i]) for i in a["members"]),
             "n": len(a["edges"])} for a in attempts]  # fmt: skip


def _ibm_attempt(rng: random.Random, n_acc: int, span: int) -> dict:
    from domains.finance_risk.aml import MEMBER_COUNTS, TYPOLOGIES, edge_amounts, pattern_edges

    typology = rng.choice(TYPOLOGIES)
    members = rng.sample(range(n_acc), rng.randint(*MEMBER_COUNTS[typology]))
    edges = pattern_edges(typology, members, rng)
    start, fmt = rng.randrange(0, span - 8 * DAY_MIN), rng.choice(("ACH", "Wire", "Cheque"))
    hop = rng.randint(4, 30) * 60
    out = [(start + h * hop + rng.randrange(240), s, d, amount, fmt)
           for (s, d, h), amount in zip(edges, edge_amounts(edges, rng), strict=True)]  # fmt: skip
    detail = {"fan_out": f":  Max {len(edges)}-degree Fan-Out",
              "fan_in": f":  Max {len(edges)}-degree Fan-In",
              "cycle": f":  Max {len(edges)} hops"}.get(typology, "")  # fmt: skip
    return {"typology": typology, "members": members, "edges": out, "detail": detail}


def _ibm_time(minute: int) -> str:
    import datetime as dt

    return (dt.datetime(2022, 9, 1) + dt.timedelta(minutes=int(minute))).strftime("%Y/%m/%d %H:%M")


def _ibm_chunk(g, n: int, planted: list, lo: int, hi: int, accts, banks):  # noqa: ANN001, ANN202
    """One time slice of the transactions file: ``n`` background rows and the planted ones,
    in time order, as the CSV's columns."""
    import numpy as np
    import polars as pl

    src = g.integers(0, len(accts), n)
    dst = np.where(g.random(n) < 0.1, src, g.integers(0, len(accts), n))
    frame = pl.DataFrame({
        "m": g.integers(lo, hi, n), "s": src, "d": dst, "amt": np.round(g.lognormal(7, 1.5, n), 2),
        "cur": np.array(IBM_CURRENCIES)[np.where(g.random(n) < 0.85, 0,
                                                 g.integers(1, len(IBM_CURRENCIES), n))],
        "fmt": np.where(src == dst, "Reinvestment", np.array(IBM_FORMATS)[g.integers(0, 7, n)]),
        "lab": np.zeros(n, dtype=np.int8),
    })  # fmt: skip
    if planted:
        m, s, d, amt, fmt = (list(x) for x in zip(*planted, strict=True))
        extra = pl.DataFrame({"m": m, "s": s, "d": d, "amt": amt, "cur": ["US Dollar"] * len(m),
                              "fmt": fmt, "lab": [1] * len(m)}, schema=frame.schema)  # fmt: skip
        frame = pl.concat([frame, extra])
    frame = frame.sort("m")
    s, d = frame["s"].to_numpy(), frame["d"].to_numpy()
    when = pl.select(pl.datetime(2022, 9, 1) + pl.duration(minutes=frame["m"])).to_series()
    return pl.DataFrame({
        "Timestamp": when.dt.strftime("%Y/%m/%d %H:%M"), "From Bank": banks[s],
        "Account": accts[s], "To Bank": banks[d], "Account.1": accts[d],
        "Amount Received": frame["amt"], "Receiving Currency": frame["cur"],
        "Amount Paid": frame["amt"], "Payment Currency": frame["cur"],
        "Payment Format": frame["fmt"], "Is Laundering": frame["lab"],
    })  # fmt: skip


def ibm_read(folder: Path) -> None:
    """One read of a set in this process; prints JSON: seconds, transactions, peak RSS,
    and each attempt's truth (for the check against what was planted)."""
    import json
    import resource

    from tasks.ibm_aml import IBMAmlOptions, read_ibm_aml

    start = time.perf_counter()
    alerts = read_ibm_aml(folder, options=IBMAmlOptions(), scratch_root=folder / "_scratch")
    took = time.perf_counter() - start
    truths = [c["truth"] for _, c in alerts.cases if c["truth"]["typology"] != "none"]
    OUT.print(json.dumps({"seconds": took, "rows": alerts.rows_in, "negatives": alerts.negatives,
                          "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                          "rejected": len(alerts.rejected), "truths": truths}))  # fmt: skip


def ibm_bench(rows: int, repeats: int, seed: int) -> None:
    import json
    import subprocess
    import sys

    OUT.print(f"settings: IBM AML format, sets of 1,000,000 and {rows:,} transactions, "
              f"{repeats} reads each in a fresh process, seed {seed}; ibm_aml defaults "
              "(negative_ratio 1, window_pad_hours 24, max_transactions 200)")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="ponder-ibm-") as tmp:
        figures = {}
        for n in sorted({1_000_000, rows}):
            folder = Path(tmp) / f"set-{n}"
            start = time.perf_counter()
            planted = ibm_set(folder, rows=n, seed=seed)
            OUT.print(f"wrote {n:,} transactions, {len(planted)} attempts in "
                      f"{time.perf_counter() - start:.1f} s")  # fmt: skip
            runs = []
            for _ in range(repeats):
                done = subprocess.run([sys.executable, "-m", "bench.realdata", "--part", "ibm-read",
                                       "--path", str(folder)], capture_output=True, text=True,
                                      check=True)  # fmt: skip
                runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
            figures[n] = _ibm_report(n, runs, planted)
            shutil.rmtree(folder)
    small, large = figures[1_000_000], figures[rows]
    ratio = large["rss"] / small["rss"]
    OUT.print(f"peak RSS {rows:,} / 1,000,000: x{ratio:.2f} (goal <= 1.2: "
              f"{'met' if ratio <= 1.2 else 'missed'})")  # fmt: skip
    best = min(f["rate"] for f in figures.values())
    OUT.print(f"slowest median: {best:,.0f} transactions/s (goal >= 500,000: "
              f"{'met' if best >= 500_000 else 'missed'})")  # fmt: skip


def _ibm_report(n: int, runs: list[dict], planted: list[dict]) -> dict:
    rates = sorted(r["rows"] / r["seconds"] for r in runs)
    rss = max(r["rss_mb"] for r in runs)
    got = {(t["typology"], tuple(t["accounts"])) for t in runs[0]["truths"]}
    want = {(p["typology"], tuple(p["members"])) for p in planted}
    OUT.print(
        f"{n:,} transactions: median {statistics.median(rates):,.0f} transactions/s "
        f"[{rates[0]:,.0f}, {rates[-1]:,.0f}] over {len(runs)} reads; peak RSS {rss:,.0f} MB; "
        f"attempts back {len(got & want)}/{len(want)} with typology and members; "
        f"{runs[0]['negatives']} negative alerts; {runs[0]['rejected']} rows quarantined"
    )
    return {"rate": statistics.median(rates), "rss": rss}


if __name__ == "__main__":
    main()
