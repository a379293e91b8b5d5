"""Feedback ingest throughput: 2M rows from Parquet and from CSV through the real path.

Each format runs in its own subprocess so its peak RSS is its own: scan the file lazily,
normalize and validate with polars expressions (``tasks.records``), deduplicate, and
stream the new lake version to Parquet (``tasks.collect.commit_feedback``). About 1% of
rows are deliberately bad so the quarantine path is exercised. Prints rows/s and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

KINDS = ["rating", "thumbs", "preference", "first_wrong_step", "step_labels", "rationale"]


def make_rows(n: int, seed: int = 0) -> pl.DataFrame:
    """n synthetic feedback records, ~1% invalid (bad rating, missing reviewer)."""
    idx = pl.int_range(0, n, eager=True)
    kind = pl.Series(KINDS).sample(n, with_replacement=True, seed=seed)
    frame = pl.DataFrame(
        {
            "case_id": "case-" + (idx % 50_000).cast(pl.String),
            "trace_id": "tr-" + (idx % 400_000).cast(pl.String),
            "reviewer_id": "rev-" + (idx % 97).cast(pl.String),
            "timestamp": pl.datetime_range(
                pl.datetime(2026, 1, 1), pl.datetime(2026, 11, 1), interval="1s", eager=True
            )
            .head(n)
            .dt.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "kind": kind,
        }
    )
    bad = (idx % 100) == 0
    return frame.with_columns(
        rating=pl.when(pl.col("kind") == "rating")
        .then(pl.when(bad).then(9).otherwise(1 + idx % 5))
        .cast(pl.String),
        thumbs=pl.when(pl.col("kind") == "thumbs").then((idx % 2 == 0).cast(pl.String)),
        chosen=pl.when(pl.col("kind") == "preference").then("c-" + idx.cast(pl.String)),
        rejected=pl.when(pl.col("kind") == "preference").then("r-" + idx.cast(pl.String)),
        first_wrong_step=pl.when(pl.col("kind") == "first_wrong_step").then(
            (idx % 6).cast(pl.String)
        ),
        step_labels=pl.when(pl.col("kind") == "step_labels").then(pl.lit("1101")),
        rationale=pl.when(pl.col("kind") == "rationale").then(
            "step " + (idx % 7).cast(pl.String) + " misreads the amount"
        ),
        reviewer_id=pl.when(bad & (pl.col("kind") != "rating"))
        .then(None)
        .otherwise(pl.col("reviewer_id")),
    )


def ingest(path: Path, lake_root: Path) -> dict:
    """One ingest through commit_feedback; runs inside the child process."""
    from tasks.collect import Batch, commit_feedback, scan_feedback_file
    from tasks.lake import Lake
    from tasks.records import normalize_feedback

    start = time.perf_counter()
    batch = Batch(
        frames=[normalize_feedback(scan_feedback_file(path)[0], f"file:{path.name}")],
        sources=[path.name],
    )
    summary = commit_feedback.fn(Lake(lake_root), "bench", batch, "bench", None)
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "file": path.name,
        "rows_in": summary["rows_in"],
        "valid": summary["valid"],
        "quarantined": summary["quarantined"],
        "seconds": seconds,
        "rows_per_s": summary["rows_in"] / seconds,
        "peak_rss_mb": peak_mb,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--child", nargs=2, metavar=("FILE", "LAKE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(ingest(Path(args.child[0]), Path(args.child[1]))))
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rows = make_rows(args.rows)
        rows.write_parquet(root / "feedback.parquet")
        rows.write_csv(root / "feedback.csv")
        sizes = {p.name: p.stat().st_size / 2**20 for p in root.glob("feedback.*")}
        del rows
        print(
            f"# bench/collect: {args.rows:,} feedback rows (~1% invalid), lazy scan -> "
            "polars validation -> streamed Parquet version; one process per file"
        )
        for name in ("feedback.parquet", "feedback.csv"):
            out = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "bench.collect",
                    "--child",
                    str(root / name),
                    str(root / f"lake-{name}"),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(
                f"{name:17s} {sizes[name]:7.1f} MB  rows {r['rows_in']:,}  valid "
                f"{r['valid']:,}  quarantined {r['quarantined']:,}  {r['seconds']:6.2f} s  "
                f"{r['rows_per_s']:>10,.0f} rows/s  peak RSS {r['peak_rss_mb']:,.0f} MB"
            )
        print("goal: >= 200,000 rows/s and peak RSS < 2,048 MB")


if __name__ == "__main__":
    main()
