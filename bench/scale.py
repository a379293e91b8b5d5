"""``make bench-scale``: batch scoring at scale, with the tiny random model so that the engine
is not the bottleneck (issue 24).

Every measured run is a fresh child process (``python -m bench.scale one ...``) that calls
the real ``infer`` flow and writes its ``InferResult``; this process samples the child's
memory with psutil every 0.2 s. Two parts:

1. **sizes**: one in-process run each on N = 1,000, 10,000 and 100,000 generated medicine
   cases (cot, width 1, ``--max-tokens`` tokens, shards of 1,000). Prints wall seconds per
   stage, the time per case of everything after the fixed start (search + commit +
   report: the part that grows with N) with a 95% bootstrap CI over shards for the search
   part, and the peak RSS of the infer process and of its whole process tree (the vLLM
   engine core and the temporary Prefect server included).
   Goals: time per case at 100,000 at most 1.1x that at 1,000; peak RSS at most 1.2x.
2. **fan-out**: ``ponder serve --gpu-workers 2`` (one pool, two process workers) in a home of
   its own, then the same cases scored with workers=1 (in-process) and workers=2 (two child
   runs of the infer deployment), first on the tiny model with vLLM, then on the simulated
   engine (``PONDER_BACKEND=simulated``: sleeps per generated token and uses no CPU, what a
   worker bound by its GPU looks like). Prints generated tokens/s, how busy the machine's
   CPUs were (the CPU profile: run it on an idle box), the throughput ratio, and the overhead per
   case that is not generation (wall minus the longest child's search time, over N; it
   includes the engines' start). Goals: overhead at most 10 ms per case; 2 workers at
   least 1.6x the throughput of 1.

Writes ``scale.json`` and ``scale.png`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

OUT = Console(highlight=False, markup=False)
BIN = Path(sys.executable).parent
SEARCH = {"strategy": "cot", "width": 1, "step_tokens": 16, "max_depth": 1}


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__)
    sub = ap.add_subparsers(dest="cmd")
    one = sub.add_parser("one", help="one measured run (used by this bench)")
    one.add_argument("--cases", type=Path, required=True)
    one.add_argument("--model", required=True)
    one.add_argument("--workers", type=int, default=1)
    one.add_argument("--max-tokens", type=int, default=16)
    one.add_argument("--shard-size", type=int, default=1000)
    one.add_argument("--result", type=Path, required=True)
    ap.add_argument("--sizes", type=int, nargs="*", default=[1000, 10_000, 100_000])
    ap.add_argument("--fanout-cases", type=int, default=4000, help="fan-out cases, tiny model")
    ap.add_argument(
        "--simulated-cases", type=int, default=20_000, help="fan-out cases, simulated engine"
    )
    ap.add_argument("--fanout-shard-size", type=int, default=250)
    ap.add_argument("--max-tokens", type=int, default=16, help="generated tokens per case")
    ap.add_argument("--simulated-ms", type=float, default=0.5, help="ms per simulated token")
    ap.add_argument("--skip-fanout", action="store_true")
    ap.add_argument("--out", type=Path, default=Path(".ponder/bench/scale"))
    return ap.parse_args()


def run_one(args: argparse.Namespace) -> None:
    """The child: one infer run, its result as JSON."""
    from flows.infer import InferParams, infer

    params = InferParams(domain="medicine", input=str(args.cases), split=None, model=args.model,
                         max_tokens=args.max_tokens, shard_size=args.shard_size,
                         workers=args.workers, dtype="float32", max_model_len=2048,
                         log_traces=5, review_k=10, **SEARCH)  # fmt: skip
    out = infer(params)
    args.result.write_text(out.model_dump_json())


def write_cases(path: Path, n: int, seed: int = 5) -> Path:
    """``n`` generated medicine cases (difficulty 1) as a CSV, made once per size."""
    import polars as pl

    from domains.base import get_domain

    if not path.exists():
        rows = [
            {"family": c.family, "inputs": json.dumps(c.inputs), "truth": json.dumps(c.truth)}
            for c in get_domain("medicine").generate(n, seed, difficulty=1)
        ]
        pl.DataFrame(rows).write_csv(path)
    return path


class Peak:
    """Peak RSS of a process and of its process tree, sampled every 0.2 s."""

    def __init__(self, pid: int) -> None:
        import psutil

        self.proc, self.main, self.tree = psutil.Process(pid), 0, 0
        self.cpu_start = psutil.cpu_times()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                main = self.proc.memory_info().rss
                kids = sum(_rss(p) for p in self.proc.children(recursive=True))
            except psutil.Error:
                break
            self.main, self.tree = max(self.main, main), max(self.tree, main + kids)
            time.sleep(0.2)

    def stop(self) -> tuple[float, float, float]:
        """(peak RSS of the process, of its tree, in MB; the share of the machine's CPU time
        that was busy meanwhile, from psutil's system-wide counters)."""
        import psutil

        self._stop.set()
        self._thread.join()
        end = psutil.cpu_times()
        total = sum(end) - sum(self.cpu_start)
        idle = (end.idle + end.iowait) - (self.cpu_start.idle + self.cpu_start.iowait)
        return self.main / 2**20, self.tree / 2**20, 1 - idle / total if total else 0.0


def _rss(proc: Any) -> int:
    import psutil

    try:
        return proc.memory_info().rss
    except psutil.Error:
        return 0


def measured(
    cases: Path, *, model: str, home: Path, env: dict[str, str], workers: int, shard_size: int,
    max_tokens: int,
) -> dict[str, Any]:  # fmt: skip
    """One child run: its InferResult, wall seconds, peak RSS, and per-shard search times."""
    result = home / f"result-{time.time_ns()}.json"
    argv = [sys.executable, "-m", "bench.scale", "one", "--cases", str(cases), "--model", model]
    argv += ["--workers", str(workers), "--shard-size", str(shard_size)]
    argv += ["--max-tokens", str(max_tokens), "--result", str(result)]
    start, clock = time.perf_counter(), time.time()
    with open(home / "runs.log", "a") as log:
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        peak = Peak(proc.pid)
        code = proc.wait()
    wall = time.perf_counter() - start
    main_mb, tree_mb, busy = peak.stop()
    if code != 0:
        raise SystemExit(f"[scale] a run failed ({code}); see {home / 'runs.log'}")
    out = json.loads(result.read_text())
    return {"result": out, "wall_s": wall, "rss_main_mb": main_mb, "rss_tree_mb": tree_mb,
            "cpu_busy": busy, "shards": shard_times(home, out["version"]),
            "window": (clock, clock + wall)}  # fmt: skip


SERVER_WAIT = re.compile(r"^(\d\d):(\d\d):(\d\d)\.\d+ \|.*?(?:\[\s*(\d+)ms\]|(Error flushing))")


def server_waits(log: Path, window: tuple[float, float], *, at_least_s: float = 30) -> list[str]:
    """What the Prefect server logged, inside ``window`` (epoch seconds), of a write that
    waited out SQLite's busy timeout: a service call of ``at_least_s`` or more, or a failed
    flush of the task-run recorder (it comes at the end of such a wait). A measured run with
    one waited on the server's database, not on its own work (README, "Operating ponder").
    The log's times are this machine's local clock, to the second."""
    if not log.exists():
        return []
    day = time.localtime(window[0])
    midnight = time.mktime((day.tm_year, day.tm_mon, day.tm_mday, 0, 0, 0, 0, 0, -1))
    lo, hi = window[0] - midnight - 1, window[1] - midnight + 1
    found = []
    for line in log.read_text(errors="replace").splitlines():
        m = SERVER_WAIT.match(line)
        if not m:
            continue
        at = int(m[1]) * 3600 + int(m[2]) * 60 + int(m[3])
        at += 86_400 if at < lo - 43_200 else 0  # past midnight
        waited = int(m[4]) / 1000 if m[4] else None
        if lo <= at <= hi and (waited is None or waited >= at_least_s):
            what = "a task-run flush failed" if waited is None else f"a call waited {waited:.0f} s"
            found.append(f"{m[1]}:{m[2]}:{m[3]} {what}")
    return found


def shard_times(home: Path, version: str) -> list[dict[str, float]]:
    """Per shard of the version: cases, search seconds (its cases' latencies) and tokens."""
    import polars as pl

    path = home / "lake" / "medicine" / "predictions" / version
    frame = pl.scan_parquet(path / "part-*.parquet").select("tree_ref", "latency_s", "tokens")
    per = (
        frame.with_columns(pl.col("tree_ref").str.split("#").list.first().alias("shard"))
        .group_by("shard")
        .agg(pl.len().alias("cases"), pl.col("latency_s").sum(), pl.col("tokens").sum())
        .sort("shard")
        .collect()
    )
    return per.to_dicts()


def ci_per_case(shards: list[dict[str, float]], seed: int = 0) -> tuple[float, float, float]:
    """Search ms per case: the mean over cases, and a 95% bootstrap CI over shards."""
    secs = np.array([s["latency_s"] for s in shards])
    n = np.array([s["cases"] for s in shards], dtype=float)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(secs), size=(2000, len(secs)))
    boots = secs[picks].sum(axis=1) / n[picks].sum(axis=1)
    mean = secs.sum() / n.sum()
    return (
        1000 * mean,
        1000 * float(np.quantile(boots, 0.025)),
        1000 * float(np.quantile(boots, 0.975)),
    )


def sizes_part(args: argparse.Namespace, model: str, home: Path) -> list[dict[str, Any]]:
    """Part 1: one in-process run per size on a home of its own."""
    rows = []
    for n in args.sizes:
        run_home = home / f"size-{n}"
        shutil.rmtree(run_home, ignore_errors=True)  # a rerun must search afresh, not resume
        run_home.mkdir(parents=True)
        env = _env(run_home) | {"PONDER_BACKEND": "vllm"}
        cases = write_cases(home / f"cases-{n}.csv", n)
        OUT.print(f"[sizes] N={n:,}: scoring ...")
        got = measured(cases, model=model, home=run_home, env=env, workers=1,
                       shard_size=1000, max_tokens=args.max_tokens)  # fmt: skip
        secs = got["result"]["seconds"]
        grows = secs["search"] + secs["commit"] + secs["report"]
        row = {"n": n, **got, "per_case_ms": 1000 * grows / n,
               "search_ms": ci_per_case(got["shards"])}  # fmt: skip
        rows.append(row)
        mean, lo, hi = row["search_ms"]
        OUT.print(
            f"[sizes] N={n:,}: wall {got['wall_s']:.0f} s (prepare {secs['prepare']:.1f}, search "
            f"{secs['search']:.1f}, commit {secs['commit']:.2f}, report {secs['report']:.1f}); "
            f"{row['per_case_ms']:.2f} ms/case after the start (search {mean:.2f} ms/case "
            f"[{lo:.2f}, {hi:.2f}]); peak RSS infer {got['rss_main_mb']:.0f} MB, tree "
            f"{got['rss_tree_mb']:.0f} MB; infer's peak at the end of each stage "
            + ", ".join(f"{k} {v:.0f}" for k, v in got["result"].get("peak_mb", {}).items())
            + " MB"
        )
    return rows


def _env(home: Path) -> dict[str, str]:
    env = {**os.environ, "PONDER_HOME": str(home), "PREFECT_HOME": str(home / "prefect")}
    env.pop("PREFECT_API_URL", None)
    return env


def fanout_part(args: argparse.Namespace, model: str, home: Path) -> dict[str, Any]:
    """Part 2: 1 worker (in-process) against 2 (fan-out) on one served stack, per engine."""
    from flows.serve import free_port

    out: dict[str, Any] = {}
    for backend, n in (("vllm", args.fanout_cases), ("simulated", args.simulated_cases)):
        cases = write_cases(home / f"cases-{n}.csv", n, seed=6)
        stack_home = home / f"fanout-{backend}"
        stack_home.mkdir(parents=True, exist_ok=True)
        simulated = {"PONDER_SIMULATED_MS_PER_TOKEN": str(args.simulated_ms)}
        env = _env(stack_home) | {"PONDER_BACKEND": backend} | simulated
        ports = [free_port(), free_port()]
        served = serve(env, stack_home, ports)
        try:
            env |= {"PREFECT_API_URL": f"http://127.0.0.1:{ports[0]}/api",
                    "PONDER_TRACKING_URI": f"http://127.0.0.1:{ports[1]}"}  # fmt: skip
            deploy = subprocess.run([str(BIN / "ponder"), "deploy", "--name", "infer-medicine"],
                                    env=env, capture_output=True, text=True)  # fmt: skip
            if deploy.returncode:
                raise SystemExit(f"[scale] ponder deploy failed:\n{deploy.stdout}{deploy.stderr}")
            out[backend] = {
                str(w): one_fanout(
                    cases, model=model, home=stack_home, env=env, workers=w, args=args
                )  # fmt: skip
                for w in (1, 2)
            }
        finally:
            served.send_signal(signal.SIGINT)
            served.wait(60)
        one, two = out[backend]["1"], out[backend]["2"]
        ratio = one["wall_s"] / two["wall_s"]
        out[backend]["ratio"] = ratio
        OUT.print(f"[fan-out {backend}] 2 workers / 1 worker throughput: x{ratio:.2f}")
    return out


def one_fanout(cases: Path, *, model: str, home: Path, env: dict[str, str], workers: int,
               args: argparse.Namespace) -> dict[str, Any]:  # fmt: skip
    """One run of the fan-out part, with its generation time and overhead per case."""
    from tasks.fanout import split_children

    for old in (home / "lake" / "medicine" / "predictions" / "_runs").glob("*"):
        shutil.rmtree(old)  # every run searches afresh
    got = measured(cases, model=model, home=home, env=env, workers=workers,
                   shard_size=args.fanout_shard_size, max_tokens=args.max_tokens)  # fmt: skip
    shards = got["shards"]
    blocks = split_children(len(shards), workers) if workers > 1 else [list(range(len(shards)))]
    gen = max(sum(shards[i]["latency_s"] for i in block) for block in blocks)
    tokens = sum(s["tokens"] for s in shards)
    n = sum(s["cases"] for s in shards)
    waits = server_waits(home / "serve" / "prefect-server.log", got["window"])
    row = {**got, "generation_s": gen, "overhead_ms": 1000 * (got["wall_s"] - gen) / n,
           "tokens_per_s": tokens / got["wall_s"], "cases_per_s": n / got["wall_s"],
           "server_waits": waits}  # fmt: skip
    OUT.print(
        f"[fan-out {env['PONDER_BACKEND']}] workers={workers}: {n} cases in {got['wall_s']:.0f} s"
        f" ({row['cases_per_s']:.1f} cases/s, {row['tokens_per_s']:.0f} generated tokens/s); "
        f"generation {gen:.0f} s, overhead {row['overhead_ms']:.1f} ms/case; CPUs "
        f"{100 * got['cpu_busy']:.0f}% busy; Prefect server waits of 30 s or more: "
        + ("; ".join(waits) if waits else "none")
    )
    return row


def serve(env: dict[str, str], home: Path, ports: list[int]) -> subprocess.Popen:
    """``ponder serve --gpu-workers 2`` on ``ports``, once it says ready."""
    cmd = [str(BIN / "ponder"), "serve", "--prefect-port", str(ports[0]), "--mlflow-port",
           str(ports[1]), "--poll-seconds", "1", "--gpu-workers", "2"]  # fmt: skip
    log = home / "serve.out"
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while "ready" not in log.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"[scale] ponder serve did not start:\n{log.read_text()}")
        time.sleep(1)
    return proc


def report(doc: dict[str, Any], out: Path) -> None:
    """The goals against what was measured, and scale.png."""
    sizes = {r["n"]: r for r in doc.get("sizes", [])}
    if len(sizes) >= 2:
        lo, hi = min(sizes), max(sizes)
        t = sizes[hi]["per_case_ms"] / sizes[lo]["per_case_ms"]
        m = sizes[hi]["rss_main_mb"] / sizes[lo]["rss_main_mb"]
        tree = sizes[hi]["rss_tree_mb"] / sizes[lo]["rss_tree_mb"]
        OUT.print(f"\ntime per case at {hi:,} / at {lo:,}: x{t:.2f} (goal <= 1.1)")
        OUT.print(f"peak RSS at {hi:,} / at {lo:,}: infer x{m:.2f}, tree x{tree:.2f} (goal <= 1.2)")
    for backend, runs in doc.get("fanout", {}).items():
        waited = [w for k in ("1", "2") for w in runs[k].get("server_waits", [])]
        flag = f"; NOT CLEAN: {len(waited)} Prefect server wait(s) in the pair" if waited else ""
        OUT.print(
            f"fan-out {backend}: x{runs['ratio']:.2f} with 2 workers (goal >= 1.6); overhead "
            f"{runs['2']['overhead_ms']:.1f} ms/case with fan-out (goal <= 10){flag}"
        )
    _plot(sizes, out)


def _plot(sizes: dict[int, dict[str, Any]], out: Path) -> None:
    if not sizes:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = sorted(sizes)
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    a.plot(ns, [sizes[n]["per_case_ms"] for n in ns], marker="o")
    a.set(xscale="log", xlabel="cases in one run", ylabel="ms per case (after the start)")
    b.plot(ns, [sizes[n]["rss_main_mb"] for n in ns], marker="o", label="infer process")
    b.plot(ns, [sizes[n]["rss_tree_mb"] for n in ns], marker="o", label="process tree")
    b.set(xscale="log", xlabel="cases in one run", ylabel="peak RSS (MB)")
    b.legend()
    fig.tight_layout()
    fig.savefig(out / "scale.png", dpi=120)
    plt.close(fig)


def main() -> None:
    args = _args()
    if args.cmd == "one":
        run_one(args)
        return
    from models.example import build_tiny_causal_lm

    args.out.mkdir(parents=True, exist_ok=True)
    home = args.out.resolve()
    model = home / "tiny-model"
    if not model.exists():
        build_tiny_causal_lm(model)
    settings = {k: v for k, v in vars(args).items() if k != "cmd"} | {"search": SEARCH}
    OUT.print(f"[settings] {settings} cpus={os.cpu_count()}")
    doc: dict[str, Any] = {"settings": {k: str(v) for k, v in settings.items()}}
    doc["sizes"] = sizes_part(args, str(model), home) if args.sizes else []
    (args.out / "scale.json").write_text(json.dumps(doc, indent=1, default=str))
    if not args.skip_fanout:
        doc["fanout"] = fanout_part(args, str(model), home)
    (args.out / "scale.json").write_text(json.dumps(doc, indent=1, default=str))
    report(doc, args.out)
    OUT.print(f"wrote {args.out / 'scale.json'}")


if __name__ == "__main__":
    main()
