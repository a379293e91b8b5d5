"""Exact computation: accuracy after SFT with the calculator against without it, and search
throughput with calls against without.

Part 1 trains two SFT arms from the same base model, with the same budget and the same
cases. Only the notation differs:
- "calc": the prompt explains the calculator, references write ``<<expr>> = result``, and
  generation executes the calls;
- "none": no paragraph, and references say ``expr = result``.

Both arms are evaluated greedily on held-out cases for every family and difficulty: the 11
calculators at 1-5, credit_capital at 1-5, structuring at 1-3 and aml_typology at 1-2. For
each cell the benchmark prints accuracy with a 95% bootstrap CI.

Part 2 runs beam and MCTS (width 4) on the same cases with the calculator model, with and
without calls. It reports generated tokens/s (inserted results excluded) as a ratio within
the run, and the prefix-cache hit rate of resumed prompts.

Run: ``python -m bench.compute`` (hours on a 2-core CPU; see --help for the budget).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import Any

from domains.base import Case, ParseFailure, get_domain
from domains.medicine.calculators import CALCULATORS
from models.engine import SamplingConfig, close_generators, get_generator
from models.loading import ModelSpec
from models.tools import ToolGenerator, with_tools

ARMS = {"calc": ["calc"], "none": []}
CELLS = (
    [("medicine", "clinical_calc", d, calc) for calc in sorted(CALCULATORS) for d in range(1, 6)]
    + [("finance_risk", "credit_capital", d, None) for d in range(1, 6)]
    + [("finance_risk", "structuring", d, None) for d in range(1, 4)]
    + [("finance_risk", "aml_typology", d, None) for d in range(1, 3)]
)


def cell_cases(domain: str, family: str, difficulty: int, calc: str | None, n: int, seed: int):
    """``n`` generated cases of one cell (clinical cells filter by calculator)."""
    d = get_domain(domain)
    if calc is None:
        return d.generate(n, seed, family, difficulty)
    out, batch = [], 0
    while len(out) < n:
        more = d.generate(40, seed * 1000 + batch, family, difficulty)
        out += [c for c in more if c.inputs["calculator"] == calc]
        batch += 1
    return out[:n]


def datasets(train_n: int, eval_n: int) -> tuple[list[Case], list[tuple[tuple, list[Case]]]]:
    train = [c for cell in CELLS for c in cell_cases(*cell, n=_train_n(cell, train_n), seed=1)]
    held = [(cell, cell_cases(*cell, n=eval_n, seed=2)) for cell in CELLS]
    train_ids = {c.id for c in train}
    held = [(cell, [c for c in cases if c.id not in train_ids]) for cell, cases in held]
    return train, held


def _train_n(cell: tuple, n: int) -> int:
    """Clinical cells are many (11 x 5); the others get more cases each, so every family
    has a comparable share of the SFT data."""
    return n if cell[1] == "clinical_calc" else n * 3


def train_arm(base: Path, work: Path, train: list[Case], tools: list[str], args) -> Path:
    from models.policy import PolicyTrainConfig, train_sft
    from tasks.finetune import row_of

    done = work / "sft" / "config.json"
    if done.is_file():  # resumable: a finished arm is reused
        return done.parent
    rows = [row_of(get_domain(c.domain), c, tools) for c in train]
    random.Random(0).shuffle(rows)
    cfg = PolicyTrainConfig(
        sft_max_steps=args.sft_steps,
        sft_learning_rate=args.lr,
        batch_size=2 * args.batch,
        num_generations=2,
        max_length=args.max_length,
    )
    return train_sft(rows, base, work, cfg)


def evaluate_arm(model: Path, held: list, tools: list[str], args) -> list[dict[str, Any]]:
    spec = ModelSpec(model=str(model), max_model_len=args.max_model_len)
    generator = with_tools(get_generator(spec, "vllm"), tools)
    cases = [c for _, cs in held for c in cs]
    prompts = [get_domain(c.domain).prompt(c, tools) for c in cases]
    start = time.perf_counter()
    outs = generator.generate(prompts, SamplingConfig(max_tokens=args.max_tokens), progress=True)
    took = time.perf_counter() - start
    by_id = {c.id: o.completions[0] for c, o in zip(cases, outs, strict=True)}
    rows = [_cell_row(cell, cs, by_id) for cell, cs in held]
    rows.append({"cell": "timing", "seconds": took, "cases": len(cases)})
    close_generators()
    return rows


def _cell_row(cell: tuple, cases: list[Case], by_id: dict) -> dict[str, Any]:
    domain, family, difficulty, calc = cell
    d = get_domain(domain)
    hits, totals, calls, failed = [], [], 0, 0
    for c in cases:
        comp = by_id[c.id]
        verdict = d.check(comp.text, c)
        hits.append(float(verdict.correct))
        totals.append(_daily_totals_ok(d, c, comp.text) if family == "structuring" else None)
        calls += len(comp.calls)
        failed += sum(not k.ok for k in comp.calls)
    row = {
        "family": calc or family,
        "difficulty": difficulty,
        "n": len(cases),
        "accuracy": _mean(hits),
        "ci": bootstrap_ci(hits),
        "hits": hits,
        "calls_per_case": calls / max(len(cases), 1),
        "failed_calls": failed,
    }
    if family == "structuring":
        ok = [float(t) for t in totals if t is not None]
        row["daily_totals"], row["daily_totals_ci"] = _mean(ok), bootstrap_ci(ok)
    return row


def _daily_totals_ok(d, case: Case, text: str) -> bool:
    parsed = d.parse(text, case)
    if isinstance(parsed, ParseFailure):
        return False
    want = {k: (v["cash_in"], v["cash_out"]) for k, v in case.truth["daily_totals"].items()}
    got = {k: (str(v.cash_in), str(v.cash_out)) for k, v in parsed.daily_totals.items()}
    return got == want


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def bootstrap_ci(xs: list[float], n: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% percentile bootstrap interval of the mean."""
    if not xs:
        return (float("nan"), float("nan"))
    rng = random.Random(seed)
    means = sorted(sum(rng.choices(xs, k=len(xs))) / len(xs) for _ in range(n))
    return (means[int(0.025 * n)], means[int(0.975 * n) - 1])


def throughput(model: Path, held: list, args) -> list[dict[str, Any]]:
    """Beam and MCTS at width 4, with calls against without, on the same cases."""
    from models.search import SearchConfig, run_search
    from models.search.scorers import LogprobScorer

    spec = ModelSpec(model=str(model), max_model_len=args.max_model_len)
    base = get_generator(spec, "vllm")
    cases = [cs[0] for _, cs in held if cs][:: max(1, len(held) // args.search_cases)]
    cfg = SearchConfig(
        width=4,
        branch=2,
        max_tokens=args.max_tokens,
        step_tokens=160,
        max_depth=10,
        simulations=6,
        temperature=0.8,
    )
    out = []
    for strategy in ("beam", "mcts"):
        for arm, tools in (("none", []), ("calc", ["calc"])):
            generator = with_tools(base, tools)
            problems = [_problem(c) for c in cases]
            start = time.perf_counter()
            results = run_search(strategy, problems, cfg, generator, LogprobScorer())
            took = time.perf_counter() - start
            gen = sum(n.n_tokens - n.n_inserted for r in results for n in r.tree.nodes)
            cache = generator.resume_cache if isinstance(generator, ToolGenerator) else {}
            out.append(
                {
                    "strategy": strategy,
                    "arm": arm,
                    "cases": len(cases),
                    "seconds": took,
                    "generated_tokens": gen,
                    "tokens_per_s": gen / took,
                    "calls": sum(len(n.calls) for r in results for n in r.tree.nodes),
                    "resume_cache_hit_rate": cache.get("hits", 0) / max(cache.get("queries", 0), 1)
                    if cache
                    else None,
                }
            )
    close_generators()
    return out


MARKER_CONTEXTS = [
    "AG = <<140 - (100 + 24)>> = 16 mmol/L.",
    "- K: <<(0.6 * 0.207291 - 0.0246 * 0.6) * 1.183466>> = 0.129725\n",
    "(<<3 * 4>>)",
    "total <<9818.56 + 229.96>>; next",
    "x <<1 + 2>>.",
]


def marker_tokens(model: Path) -> list[dict[str, Any]]:
    """How the example tokenizer splits the markers in context: the closing marker should
    be a token of its own, so a stop at it never cuts a token (ToolGenerator repairs the
    ids when it does)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model)
    rows = []
    for text in MARKER_CONTEXTS:
        pieces = [tok.decode([i]) for i in tok.encode(text, add_special_tokens=False)]
        rows.append({"text": text, "pieces": pieces, "close_alone": ">>" in pieces})
    return rows


def example_tree(model: Path, held: list, args) -> str:
    """One real thought tree (beam, width 2) from the calculator model on a held-out clinical
    case, as text: each step with its computed calls, the chosen path marked."""
    from models.search import SearchConfig, run_search
    from models.search.scorers import LogprobScorer

    case = next(cs[0] for cell, cs in held if cell[3] == args.tree_calculator and cs)
    spec = ModelSpec(model=str(model), max_model_len=args.max_model_len)
    generator = with_tools(get_generator(spec, "vllm"), ["calc"])
    cfg = SearchConfig(
        width=2,
        branch=2,
        max_tokens=args.max_tokens,
        step_tokens=200,
        max_depth=8,
        temperature=0.7,
        seed=1,
    )
    result = run_search("beam", [_problem(case)], cfg, generator, LogprobScorer())[0]
    close_generators()
    verdict = get_domain(case.domain).check(result.text, case)
    lines = [
        f"case {case.id} ({args.tree_calculator}, difficulty {case.difficulty}); truth "
        f"{case.truth}; chosen answer {'correct' if verdict.correct else 'wrong'}: "
        f"{verdict.detail}"
    ]
    lines += _tree_lines(result.tree, result.text)
    return "\n".join(lines)


def _tree_lines(tree: Any, chosen_text: str) -> list[str]:
    from tasks.report import chosen_path

    chosen = chosen_path(tree, chosen_text)
    out = []

    def walk(node: Any, indent: int) -> None:
        for kid in tree.children(node):
            mark = "*" if kid.id in chosen else "-"
            first = kid.text.strip().splitlines()[0][:90] if kid.text.strip() else "(empty)"
            score = f"{kid.prm_score:.2f}" if kid.prm_score is not None else "-"
            out.append(f"{'  ' * indent}{mark} step {kid.depth} [score {score}] {first}")
            for call in kid.calls:
                shown = call.result if call.ok else f"error: {call.error}"
                out.append(f"{'  ' * indent}    computed: {call.expression} = {shown}")
            walk(kid, indent + 1)

    walk(tree.root, 0)
    return out


def _problem(case: Case) -> Any:
    from models.search.base import Problem
    from tasks.infer import answer_key

    d = get_domain(case.domain)
    return Problem(
        id=case.id, prompt=d.prompt(case, ["calc"]), answer_of=lambda t: answer_key(d, case, t)
    )


def print_tables(acc: dict[str, list], speed: list[dict]) -> None:
    print(
        f"{'family':24s} {'d':>2s} {'n':>3s} {'with calc (95% CI)':>24s} {'without (95% CI)':>24s}"
    )
    for a, b in zip(acc["calc"], acc["none"], strict=True):
        if a.get("cell") == "timing":
            continue
        extra = ""
        if "daily_totals" in a:
            extra = f"  daily totals {a['daily_totals']:.0%} vs {b['daily_totals']:.0%}"
        print(
            f"{a['family']:24s} {a['difficulty']:2d} {a['n']:3d} "
            f"{_fmt(a['accuracy'], a['ci']):>24s} {_fmt(b['accuracy'], b['ci']):>24s}{extra}"
        )
    for arm, rows in acc.items():
        pooled = [h for r in rows for h in r.get("hits", [])]
        if pooled:
            print(f"overall {arm:5s} {_fmt(_mean(pooled), bootstrap_ci(pooled))} on {len(pooled)}")
    for s in speed:
        hit = s["resume_cache_hit_rate"]
        print(
            f"{s['strategy']:5s} {s['arm']:5s} {s['tokens_per_s']:8.1f} gen tok/s  "
            f"{s['calls']:4d} calls  resumed-prompt cache hits "
            f"{'-' if hit is None else f'{hit:.0%}'}"
        )
    for strategy in ("beam", "mcts"):
        pair = {s["arm"]: s for s in speed if s["strategy"] == strategy}
        if len(pair) == 2:
            ratio = pair["calc"]["tokens_per_s"] / pair["none"]["tokens_per_s"]
            print(f"{strategy}: tokens/s with calls / without = {ratio:.2f} (goal >= 0.85)")


def _fmt(x: float, ci: tuple[float, float]) -> str:
    return f"{x:.0%} [{ci[0]:.0%}, {ci[1]:.0%}]"


def write_html(acc: dict[str, list], speed: list[dict], path: Path) -> None:
    from jinja2 import Environment

    template = Environment(autoescape=True).from_string(
        "<html><body><h2>Accuracy after SFT: with the calculator vs without</h2>"
        "<table border=1><tr><th>family</th><th>difficulty</th><th>n</th><th>with calc</th>"
        "<th>95% CI</th><th>without</th><th>95% CI</th></tr>"
        "{% for a, b in pairs %}<tr><td>{{a.family}}</td><td>{{a.difficulty}}</td>"
        "<td>{{a.n}}</td><td>{{'%.0f%%' % (100*a.accuracy)}}</td>"
        "<td>{{'%.0f-%.0f%%' % (100*a.ci[0], 100*a.ci[1])}}</td>"
        "<td>{{'%.0f%%' % (100*b.accuracy)}}</td>"
        "<td>{{'%.0f-%.0f%%' % (100*b.ci[0], 100*b.ci[1])}}</td></tr>{% endfor %}</table>"
        "<h2>Search throughput</h2><table border=1><tr><th>strategy</th><th>arm</th>"
        "<th>gen tokens/s</th><th>calls</th><th>resumed-prompt cache hits</th></tr>"
        "{% for s in speed %}<tr><td>{{s.strategy}}</td><td>{{s.arm}}</td>"
        "<td>{{'%.1f' % s.tokens_per_s}}</td><td>{{s.calls}}</td>"
        "<td>{{s.resume_cache_hit_rate}}</td></tr>{% endfor %}</table></body></html>"
    )
    pairs = [
        (a, b) for a, b in zip(acc["calc"], acc["none"], strict=True) if a.get("cell") != "timing"
    ]
    path.write_text(template.render(pairs=pairs, speed=speed))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=None, help="Base model dir (default: the example)")
    parser.add_argument("--train-per-cell", type=int, default=4)
    parser.add_argument("--eval-per-cell", type=int, default=6)
    parser.add_argument("--sft-steps", type=int, default=160)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--max-length", type=int, default=2048)
    parser.add_argument("--max-tokens", type=int, default=768)
    parser.add_argument("--max-model-len", type=int, default=4096)
    parser.add_argument("--search-cases", type=int, default=12)
    parser.add_argument("--tree-calculator", default="cockcroft_gault")
    parser.add_argument("--parts", nargs="+", default=["tokens", "accuracy", "throughput"])
    parser.add_argument(
        "--arms",
        nargs="+",
        choices=sorted(ARMS),
        default=sorted(ARMS),
        help="Accuracy arms to run now; a finished arm's saved figures are read back",
    )
    parser.add_argument("--out", type=Path, default=Path(".ponder/bench/compute"))
    args = parser.parse_args()
    base = Path(args.model) if args.model else _example()
    args.out.mkdir(parents=True, exist_ok=True)
    train, held = datasets(args.train_per_cell, args.eval_per_cell)
    print(
        f"# bench/compute base={base.name} train={len(train)} cases, SFT {args.sft_steps} steps "
        f"x batch {args.batch}, lr {args.lr}; eval {sum(len(c) for _, c in held)} held-out cases "
        f"({args.eval_per_cell} per cell), greedy, max_tokens {args.max_tokens}"
    )
    results: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}}
    if "tokens" in args.parts:
        results["marker_tokens"] = marker_tokens(base)
        for r in results["marker_tokens"]:
            print(f"{'ok ' if r['close_alone'] else 'CUT'} {r['pieces']}")
    acc: dict[str, list] = {}
    if "accuracy" in args.parts:
        for arm, tools in ARMS.items():
            saved = args.out / f"accuracy-{arm}.json"
            if arm not in args.arms:  # not run now: its figures from an earlier run, if any
                if saved.is_file():
                    acc[arm] = json.loads(saved.read_text())
                continue
            t0 = time.perf_counter()
            model = train_arm(base, args.out / arm, train, tools, args)
            print(f"[{arm}] SFT done in {time.perf_counter() - t0:.0f}s -> {model}", flush=True)
            acc[arm] = evaluate_arm(model, held, tools, args)
            print(f"[{arm}] evaluated: {acc[arm][-1]}", flush=True)
            saved.write_text(json.dumps(acc[arm], indent=1))
        results["accuracy"] = acc
    if "tree" in args.parts:
        text = example_tree(args.out / "calc" / "sft", held, args)
        (args.out / "tree.txt").write_text(text)
        print(text)
    speed: list[dict] = []
    if "throughput" in args.parts:
        speed = throughput(args.out / "calc" / "sft", held, args)
        results["throughput"] = speed
    name = "compute.json" if "accuracy" in args.parts else f"compute-{'-'.join(args.parts)}.json"
    (args.out / name).write_text(json.dumps(results, indent=1, default=str))
    if set(acc) == set(ARMS):
        print_tables(acc, speed)
        write_html(acc, speed, args.out / "compute.html")
        print(f"wrote {args.out / 'compute.html'}")
    elif speed:
        print_tables({"calc": [], "none": []}, speed)


def _example() -> Path:
    """The example model directory, built locally from its wheel once."""
    from models.example import EXAMPLE_DIRNAME, build_example_model
    from models.settings import get_settings

    out = Path(get_settings().models_dir, EXAMPLE_DIRNAME)
    if not (out / "config.json").is_file():
        build_example_model(out)
    return out


if __name__ == "__main__":
    main()
