"""One self-contained HTML page per inference batch: the case table and every thought tree.

Trees are nested ``<details>`` elements (collapsible without JavaScript); each step shows
its PRM score, value and visits, terminal steps show their parsed answer, and the chosen
path is highlighted so a reviewer can see where the reasoning went wrong. All model text is
redacted (identifiers masked, ``domains.privacy``) and then HTML-escaped.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable
from typing import Any

import polars as pl

from models.search.tree import Node, ThoughtTree

STYLE = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:4px 8px}
th{background:#f4f4f4}.ok{color:#137333}.bad{color:#b3261e}
details{margin-left:18px;border-left:2px solid #ddd;padding-left:8px}
summary{cursor:pointer;font-size:13px}.chosen>summary{background:#fff3c4;font-weight:600}
pre{white-space:pre-wrap;margin:4px 0 8px 0;font-size:12px;background:#fafafa;padding:6px}
.meta{color:#666;font-size:12px}
.calc{font-size:12px;margin:2px 0 8px 0}.calc code{background:#e8f0fe;padding:1px 4px}
mark.exact{background:#e6f4ea}
"""


def chosen_path(tree: ThoughtTree, text: str) -> set[int]:
    """Node ids of the path whose text is the chosen answer text (deepest match)."""
    best: list[Node] = []
    for leaf in tree.leaves():
        path = tree.path(leaf)
        if tree.text(leaf) == text and len(path) > len(best):
            best = path
    return {n.id for n in best}


Redact = Callable[[str], str]


def _plain(text: str) -> str:
    return text


def _node_html(tree: ThoughtTree, node: Node, chosen: set[int], red: Redact = _plain) -> str:
    kids = "".join(_node_html(tree, k, chosen, red) for k in tree.children(node))
    score = "-" if node.prm_score is None else f"{node.prm_score:.3f}"
    answer = html.escape(red(node.answer or "unparsed"))
    label = (
        f"step {node.depth} &middot; score {score} &middot; value {node.value:.3f} "
        f"&middot; visits {node.visits} &middot; {node.n_tokens} tok"
        + (f" &middot; answer {answer}" if node.terminal else "")
        + (" &middot; cut at length" if node.finish_reason == "length" else "")
        + (f" &middot; {len(node.calls)} computed" if node.calls else "")
        + (f" &middot; {html.escape(node.stop_reason)}" if node.stop_reason else "")
    )
    cls = ' class="chosen"' if node.id in chosen else ""
    opened = " open" if node.id in chosen else ""
    return (
        f"<details{cls}{opened}><summary>{label}</summary>"
        f"<pre>{_marked(red(node.text))}</pre>{_calls_html(node, red)}{kids}</details>"
    )


_EXACT = re.compile(r"&lt;&lt;(.*?)&gt;&gt; = ((?:error: [^\n]*)|[-0-9.]+)")


def _marked(text: str) -> str:
    """Escaped step text with every calculator result marked as computed (green): the rest
    is the model's own claim."""
    return _EXACT.sub(
        lambda m: f"<mark class='exact' title='computed by the calculator'>{m.group(0)}</mark>",
        html.escape(text),
    )


def _calls_html(node: Node, red: Redact) -> str:
    if not node.calls:
        return ""
    items = "".join(
        f"<li><code>{html.escape(red(c.expression))}</code> = "
        + (
            f"<b>{html.escape(c.result or '')}</b> <span class='ok'>computed</span>"
            if c.ok
            else f"<span class='bad'>error: {html.escape(c.error or '')}</span>"
        )
        + "</li>"
        for c in node.calls
    )
    return f"<ul class='calc'>{items}</ul>"


def render(
    title: str,
    predictions: pl.DataFrame,
    trees: dict[str, ThoughtTree],
    texts: dict[str, str],
    *,
    meta: dict[str, Any],
    redact: Redact | None = None,
    inputs: dict[str, tuple[str, str | None]] | None = None,
    case_ref: Redact | None = None,
) -> str:
    """The whole page as a string; ``redact`` masks identifiers in every text shown.
    ``inputs`` maps a case id to (the case as the model read it, the expected answer), shown
    above its tree so a reviewer can judge each step. ``case_ref`` turns a case id into the
    reference the page shows (a case id may be an MRN)."""
    red = redact or _plain
    ref = case_ref or _plain
    rows = [_row_html(r, red, ref) for r in predictions.sort("case_id").iter_rows(named=True)]
    sections = [
        _tree_html(
            case_id, tree, texts.get(case_id, ""), (inputs or {}).get(case_id), red=red, ref=ref
        )
        for case_id, tree in sorted(trees.items())
    ]
    head = "".join(
        f"<div class='meta'>{html.escape(k)}: {html.escape(red(str(v)))}</div>"
        for k, v in meta.items()
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
        f"</title><style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{head}"
        "<h2>Cases</h2><table><tr><th>case</th><th>family</th><th>difficulty</th>"
        "<th>answer</th><th>confidence</th><th>verdict</th><th>tokens</th></tr>"
        f"{''.join(rows)}</table><h2>Thought trees</h2>{''.join(sections)}</body></html>"
    )


def _row_html(r: dict[str, Any], red: Redact, ref: Redact) -> str:
    """One case's line in the cases table."""
    mark = (
        ""
        if r["correct"] is None
        else '<span class="ok">correct</span>'
        if r["correct"]
        else '<span class="bad">wrong</span>'
    )
    return (
        f"<tr><td><a href='#{html.escape(ref(r['case_id']))}'>"
        f"{html.escape(ref(r['case_id']))}</a></td><td>{r['family']}</td>"
        f"<td>{r['difficulty']}</td><td>{html.escape(red(str(r['answer'])))[:120]}</td>"
        f"<td>{r['confidence']:.2f}</td><td>{mark}</td><td>{r['tokens']}</td></tr>"
    )


def _tree_html(
    case_id: str,
    tree: ThoughtTree,
    text: str,
    case: tuple[str, str | None] | None,
    *,
    red: Redact,
    ref: Redact,
) -> str:
    """One case's section: its input and expected answer, then its thought tree."""
    chosen = chosen_path(tree, text)
    body = "".join(_node_html(tree, k, chosen, red) for k in tree.children(tree.root))
    return (
        f"<h3 id='{html.escape(ref(case_id))}'>{html.escape(ref(case_id))}</h3>"
        f"{_case_html(case, red)}"
        f"<div class='meta'>{len(tree.nodes) - 1} steps in the tree, "
        f"{tree.tokens_generated} tokens</div>{body}"
    )


def _case_html(case: tuple[str, str | None] | None, red: Redact) -> str:
    if case is None:
        return ""
    shown, expected = case
    return (
        f"<details><summary>input</summary><pre>{html.escape(red(shown))}</pre></details>"
        f"<div class='meta'>expected answer: <code>{html.escape(red(expected or 'unknown'))}"
        "</code></div>"
    )


def load_trees(frame: pl.DataFrame) -> dict[str, ThoughtTree]:
    return {
        r["case_id"]: ThoughtTree.model_validate(json.loads(r["tree"]))
        for r in frame.iter_rows(named=True)
    }
