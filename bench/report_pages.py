"""Whether a 10,000-case report stays usable: page sizes and page open times in Chromium.

``python -m bench.report_pages`` builds a batch of ``--cases`` cases whose trees are the size
deep search leaves (``--paths`` paths of ``--depth`` steps of about 250 characters, one
calculator call per step), renders it with the report's own ``render_pages``, and opens the
index and every case page in headless Chromium (Debian's chromium and chromedriver, as the
browser tests use). A page's open time is the wall time from asking for the page to the
end of its first full layout (``open_ms``). Each page is opened ``--repeats`` times, on a
machine that may be busy: the CI is over those opens.

Goals (issue 22): every page under 5 MB, and each opens in under 2 s. Prints the settings,
the largest page, the median and slowest open time with a 95% bootstrap CI on the median,
and the slowest page; writes ``report_pages.json`` in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from rich.console import Console

from bench.screenshots import browser

OUT = Console(highlight=False, markup=False, soft_wrap=True)
STEP = (
    "## Step {k}: The note gives sodium {na} mmol/L, chloride {cl} mmol/L and bicarbonate "
    "{hco3} mmol/L; the albumin of {alb} g/dL is below 4, so the gap is corrected by 2.5 per "
    "g/dL below 4. <<{na} - ({cl} + {hco3})>> = {gap}.\n\n"
)


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cases", type=int, default=10_000)
    ap.add_argument("--paths", type=int, default=16, help="leaves per tree")
    ap.add_argument("--depth", type=int, default=4, help="steps per path")
    ap.add_argument("--repeats", type=int, default=3, help="opens per page")
    ap.add_argument("--out", type=Path, default=Path(".ponder/bench/report_pages"))
    return ap.parse_args()


def tree_of(k: int, *, paths: int, depth: int) -> tuple[Any, str]:
    """A search tree with ``paths`` leaves of ``depth`` steps (shared first steps, as beam
    and MCTS grow them) and the chosen answer text."""
    from domains.calc import CalcCall
    from models.search.tree import ThoughtTree

    rng = np.random.default_rng(k)
    tree = ThoughtTree(prompt_token_ids=[1, 2, 3])
    frontier = [tree.root]
    for d in range(1, depth + 1):
        per = max(1, round(paths ** (1 / depth)))
        nxt = []
        for parent in frontier:
            for _ in range(per if len(nxt) < paths else 0):
                na, cl, hco3 = (int(x) for x in rng.integers([130, 95, 18], [150, 110, 30]))
                gap = na - cl - hco3
                text = STEP.format(k=d, na=na, cl=cl, hco3=hco3, alb=3.1, gap=gap)
                last = d == depth
                call = CalcCall(expression=f"{na} - ({cl} + {hco3})", value=gap, result=str(gap))
                nxt.append(
                    tree.add(
                        parent,
                        text=text + (f'Answer: {{"value": {gap}}}' if last else ""),
                        token_ids=[5] * 80,
                        n_tokens=80,
                        prm_score=float(rng.uniform()),
                        visits=int(rng.integers(1, 9)),
                        value=float(rng.uniform()),
                        terminal=last,
                        answer=f'{{"value": {gap}}}' if last else None,
                        calls=[call],
                    )
                )
        frontier = nxt
    return tree, tree.text(frontier[0])


def batch(n: int, *, paths: int, depth: int) -> Any:
    """``n`` cases over a few distinct trees (rendering does not cache by tree)."""
    from tasks.report import Batch

    shapes = [tree_of(k, paths=paths, depth=depth) for k in range(16)]
    ids = [f"case{k:05d}" for k in range(n)]
    frame = pl.DataFrame(
        {
            "case_id": ids,
            "family": [("anion_gap", "bmi", "ctr")[k % 3] for k in range(n)],
            "difficulty": [1 + k % 5 for k in range(n)],
            "answer": ['{"value": 12}'] * n,
            "confidence": [(k % 10) / 10 for k in range(n)],
            "correct": [k % 4 != 0 for k in range(n)],
            "tokens": [paths * depth * 80] * n,
        }
    )
    note = "Na 140, Cl 104, HCO3 24, albumin 3.1 g/dL. " * 12 + "What is the anion gap?"
    return Batch(
        title="bench: 10,000-case report",
        predictions=frame,
        trees={i: shapes[k % 16][0] for k, i in enumerate(ids)},
        texts={i: shapes[k % 16][1] for k, i in enumerate(ids)},
        meta={"model": "bench"},
        inputs={i: (note, '{"value": 12}') for i in ids},
        links={
            i: f"http://127.0.0.1:5000/#/experiments/1/traces?selectedTraceId=tr-{i}" for i in ids
        },
    )


def open_ms(driver: Any, url: str) -> float:
    """Wall time from asking for the page to its first full layout: the load (parsing, the
    inline script) and then a forced layout of the whole body, which a table of 10,000 rows
    pays for after the load event. Includes the driver's round trips, so it errs high."""
    start = time.perf_counter()
    driver.get(url)
    driver.execute_script("return document.body.getBoundingClientRect().height;")
    return (time.perf_counter() - start) * 1000


def median_ci(xs: list[float], seed: int = 0) -> tuple[float, float, float]:
    rng = np.random.default_rng(seed)
    arr = np.asarray(xs)
    meds = np.median(rng.choice(arr, size=(2000, arr.size)), axis=1)
    return float(np.median(arr)), float(np.percentile(meds, 2.5)), float(np.percentile(meds, 97.5))


def main() -> None:
    from tasks.report import render_pages

    args = _args()
    OUT.print(f"settings: cases {args.cases:,}, tree {args.paths} paths x {args.depth} steps, "
              f"{args.repeats} opens per page, headless Chromium")  # fmt: skip
    start = time.perf_counter()
    pages = render_pages(batch(args.cases, paths=args.paths, depth=args.depth))
    render_s = time.perf_counter() - start
    with tempfile.TemporaryDirectory(prefix="ponder-report-bench-") as tmp:
        folder = Path(tmp)
        for name, page in pages.items():
            (folder / name).write_text(page)
        sizes = {name: (folder / name).stat().st_size for name in pages}
        times: dict[str, list[float]] = {}
        with browser(folder / "profile") as driver:
            driver.set_page_load_timeout(120)
            for _ in range(args.repeats):
                for name in sorted(pages):
                    times.setdefault(name, []).append(open_ms(driver, (folder / name).as_uri()))
    report(args, pages=len(pages), sizes=sizes, times=times, render_s=render_s)


def report(
    args: argparse.Namespace,
    *,
    pages: int,
    sizes: dict[str, int],
    times: dict[str, list[float]],
    render_s: float,
) -> None:
    every = [t for ts in times.values() for t in ts]
    med, lo, hi = median_ci(every)
    slowest = max(times, key=lambda n: max(times[n]))
    biggest = max(sizes, key=sizes.get)
    index_med = float(np.median(times["index.html"]))
    OUT.print(f"rendered {pages} pages in {render_s:.1f} s")
    OUT.print(f"largest page   {biggest}: {sizes[biggest] / 1e6:.2f} MB   (goal < 5 MB)")
    OUT.print(
        f"index.html     {sizes['index.html'] / 1e6:.2f} MB, opens in {index_med:.0f} ms (median)"
    )
    OUT.print(
        f"open time      median {med:.0f} ms [95% CI {lo:.0f}, {hi:.0f}] over {len(every)} opens"
    )
    OUT.print(f"slowest open   {slowest}: {max(times[slowest]):.0f} ms   (goal < 2,000 ms)")
    ok = sizes[biggest] < 5_000_000 and max(every) < 2000
    OUT.print("goals met" if ok else "goals NOT met")
    args.out.mkdir(parents=True, exist_ok=True)
    result = {
        "settings": {k: str(v) for k, v in vars(args).items()},
        "pages": pages,
        "render_s": render_s,
        "bytes": sizes,
        "open_ms": times,
        "median_ms": [med, lo, hi],
        "goals_met": ok,
    }
    (args.out / "report_pages.json").write_text(json.dumps(result, indent=1))
    OUT.print(f"written: {args.out / 'report_pages.json'}")


if __name__ == "__main__":
    main()
