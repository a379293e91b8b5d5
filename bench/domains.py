"""Domain baselines: truth fidelity, the example model's greedy chain-of-thought accuracy,
and case throughput.

Fidelity (``--fidelity-only`` runs just this, in seconds): for each family with a text
reader, how many of 1,000 generated cases per difficulty had their truth recomputed from
the rendered text alone (note or transaction table, parsed back) and matched.

For every family x difficulty (1, 3, 5) it generates cases, prompts the example model
through ponder's Generator (greedy), parses and verifies the answers, and prints accuracy,
mean score and parse-failure rate: the baseline RL has to raise. It also times case
generation per family (cases/s, goal >= 10,000/s). An HTML table is written next to the
JSON results.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from domains.base import Domain, ParseFailure, get_domain
from models.engine import SamplingConfig, get_generator
from models.loading import ModelSpec

FAMILIES = [
    ("finance_risk", "aml_typology"),
    ("finance_risk", "structuring"),
    ("finance_risk", "credit_capital"),
    ("medicine", "clinical_calc"),
]


def throughput(domain: Domain, family: str, n: int) -> float:
    """Cases generated per second, cycling difficulties 1-5."""
    start = time.perf_counter()
    for level in range(1, 6):
        domain.generate(n // 5, seed=level, family=family, difficulty=level)
    return n / (time.perf_counter() - start)


def fidelity_rows(n: int) -> list[dict]:
    """Cases whose truth, recomputed from the rendered text, equals the stored truth. For AML
    the text cannot name the laundering rows at difficulty 3+ (finding them is the task), so
    a case matches when its laundering rows, read from the text, fit the prompt's definition
    of the label, span the member accounts, forward ~90% per hop in time order, and (1-2)
    carry exactly the alert tags."""
    from domains.finance_risk.aml import MARGIN
    from domains.finance_risk.credit import irb_inputs
    from domains.finance_risk.readback import (
        classify,
        forwarding_ratios,
        read_aml,
        read_credit,
        read_structuring,
    )
    from domains.finance_risk.structuring import assess
    from domains.medicine.calculators import CALCULATORS
    from domains.medicine.readback import read_note

    def text(domain: Domain, case) -> str:
        fam = domain.family(case.family)
        return fam.render(fam.Inputs.model_validate(case.inputs))

    def clinical(domain: Domain, case) -> bool:
        spec = CALCULATORS[case.inputs["calculator"]]
        got = spec.compute(read_note(case.inputs["note"]))
        return {"value": spec.rounded(got.value), "criteria": sorted(got.criteria)} == case.truth

    def structuring(domain: Domain, case) -> bool:
        return assess(read_structuring(text(domain, case))).model_dump(mode="json") == case.truth

    def credit(domain: Domain, case) -> bool:
        got = irb_inputs(read_credit(text(domain, case)))
        return all(
            math.isclose(getattr(got, k), case.truth[k], rel_tol=1e-9) for k in ("R", "K", "RWA")
        )

    def aml(domain: Domain, case) -> bool:
        alert, subject, rows = read_aml(text(domain, case))
        t = case.truth
        bad = [r for r in rows if r.txn_id in set(t["transactions"])]
        origin = subject if t["typology"] == "cycle" else None
        ratios = forwarding_ratios(bad, origin)
        tagged = sorted(r.txn_id for r in rows if r.alert == alert)
        return (
            classify([(r.src, r.dst) for r in bad]) == t["typology"]
            and sorted({r.src for r in bad} | {r.dst for r in bad}) == t["accounts"]
            and all(1 - MARGIN[1] - 1e-4 <= x <= 1 - MARGIN[0] + 1e-4 for x in ratios)
            and tagged == (t["transactions"] if case.difficulty <= 2 else [])
        )

    readers = {
        ("medicine", "clinical_calc"): clinical,
        ("finance_risk", "structuring"): structuring,
        ("finance_risk", "credit_capital"): credit,
        ("finance_risk", "aml_typology"): aml,
    }
    rows = []
    for (dom, fam), read in readers.items():
        domain = get_domain(dom)
        for level in range(1, 6):
            cases = domain.generate(n, seed=7000 + level, family=fam, difficulty=level)
            ok = sum(read(domain, c) for c in cases)
            rows.append({"family": fam, "difficulty": level, "n": n, "matched": ok})
    return rows


def accuracy_rows(args: argparse.Namespace) -> list[dict]:
    engine = get_generator(ModelSpec(model=args.model, max_model_len=args.max_model_len), "vllm")
    sampling = SamplingConfig(temperature=0.0, max_tokens=args.max_tokens)
    jobs = []
    for dom, fam in FAMILIES:
        domain = get_domain(dom)
        for level in args.levels:
            for case in domain.generate(args.cases, seed=100 + level, family=fam, difficulty=level):
                jobs.append((domain, case))
    prompts = [d.prompt(c) for d, c in jobs]
    lengths = [len(engine.encode(p)) for p in prompts]
    fits = [n + args.max_tokens <= args.max_model_len for n in lengths]
    outputs = engine.generate(
        [p for p, ok in zip(prompts, fits, strict=True) if ok], sampling, progress=True
    )
    results = iter(outputs)
    rows: dict[tuple, dict] = {}
    for (domain, case), ok, n_prompt in zip(jobs, fits, lengths, strict=True):
        row = rows.setdefault(
            (case.family, case.difficulty),
            {
                "family": case.family,
                "difficulty": case.difficulty,
                "n": 0,
                "correct": 0,
                "score": 0.0,
                "parse_failures": 0,
                "too_long": 0,
                "tokens": 0,
                "prompt_tokens": 0,
            },
        )
        row["n"] += 1
        row["prompt_tokens"] += n_prompt
        if not ok:
            row["too_long"] += 1
            continue
        comp = next(results).completions[0]
        parsed = domain.parse(comp.text, case)
        verdict = domain.verify(case, parsed)
        row["correct"] += verdict.correct
        row["score"] += verdict.score
        row["parse_failures"] += isinstance(parsed, ParseFailure)
        row["tokens"] += len(comp.token_ids)
    return list(rows.values())


def write_html(rows: list[dict], speeds: dict[str, float], path: Path) -> None:
    cells = "".join(
        f"<tr><td>{r['family']}</td><td>{r['difficulty']}</td><td>{r['n']}</td>"
        f"<td>{r['correct'] / r['n']:.1%}</td><td>{r['score'] / r['n']:.3f}</td>"
        f"<td>{r['parse_failures'] / r['n']:.1%}</td><td>{r['too_long']}</td></tr>"
        for r in rows
    )
    speed = "".join(f"<tr><td>{k}</td><td>{v:,.0f}</td></tr>" for k, v in speeds.items())
    path.write_text(
        "<html><body><h2>Baseline accuracy (greedy CoT)</h2><table border=1><tr><th>family</th>"
        "<th>difficulty</th><th>n</th><th>accuracy</th><th>mean score</th><th>parse fail</th>"
        f"<th>prompt too long</th></tr>{cells}</table><h2>Case generation</h2><table border=1>"
        f"<tr><th>family</th><th>cases/s</th></tr>{speed}</table></body></html>"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="models:/ponder-base-policy@champion")
    parser.add_argument("--cases", type=int, default=50)
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 3, 5])
    parser.add_argument("--max-tokens", type=int, default=384)
    parser.add_argument("--max-model-len", type=int, default=8192)
    parser.add_argument("--throughput-cases", type=int, default=5000)
    parser.add_argument("--out", type=Path, default=Path(".ponder/bench"))
    parser.add_argument("--fidelity-cases", type=int, default=1000)
    parser.add_argument("--fidelity-only", action="store_true")
    args = parser.parse_args()
    print(f"# truth recomputed from the rendered text: {args.fidelity_cases} cases per cell")
    for r in fidelity_rows(args.fidelity_cases):
        print(f"{r['family']:16s} difficulty {r['difficulty']}: {r['matched']}/{r['n']} matched")
    if args.fidelity_only:
        return
    speeds = {fam: throughput(get_domain(dom), fam, args.throughput_cases) for dom, fam in FAMILIES}
    rows = accuracy_rows(args)
    print(
        f"# bench/domains model={args.model} greedy max_tokens={args.max_tokens} "
        f"cases={args.cases} per family x difficulty {args.levels}"
    )
    print(
        f"{'family':16s} {'diff':>4s} {'n':>4s} {'acc':>7s} {'score':>6s} {'parsefail':>9s} "
        f"{'toolong':>7s} {'tok/case':>8s} {'prompt':>7s}"
    )
    for r in rows:
        done = max(r["n"] - r["too_long"], 1)
        print(
            f"{r['family']:16s} {r['difficulty']:4d} {r['n']:4d} {r['correct'] / r['n']:7.1%} "
            f"{r['score'] / r['n']:6.3f} {r['parse_failures'] / r['n']:9.1%} "
            f"{r['too_long']:7d} {r['tokens'] / done:8.0f} {r['prompt_tokens'] / r['n']:7.0f}"
        )
    print(f"# case generation ({args.throughput_cases} cases, difficulties 1-5), goal >= 10,000/s")
    for fam, speed in speeds.items():
        print(f"{fam:16s} {speed:10,.0f} cases/s")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "domains.json").write_text(
        json.dumps({"rows": rows, "cases_per_s": speeds}, indent=2)
    )
    write_html(rows, speeds, args.out / "domains.html")
    print(f"wrote {args.out / 'domains.html'}")


if __name__ == "__main__":
    main()
