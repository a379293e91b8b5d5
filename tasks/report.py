"""The HTML report of one inference batch, built for a reviewer: which cases to look at,
and in each, which step to check first.

- ``index.html``: the batch's settings and one row per case (verdict, expected answer,
  confidence, the suspect step), with filters for wrong only, low confidence and family.
- ``cases-001.html``, ...: at most ``PAGE_SIZE`` cases each, so a 10,000-case batch stays
  usable. Per case: the input as the model read it and the expected answer, the verdict,
  and the thought tree as nested ``<details>`` (collapsible without JavaScript). The chosen
  path is open and highlighted; each step shows its PRM score and the change from the step
  before; calculator results are marked as computed; the suspect step
  (``models.search.suspect``) is flagged and open.

All model text is redacted (identifiers masked, ``domains.privacy``) and then HTML-escaped.
"""

from __future__ import annotations

import hashlib
import html
import itertools
import json
import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import polars as pl

from domains.base import Case, Domain
from models.search.suspect import suspect_step
from models.search.tree import Node, ThoughtTree

PAGE_SIZE = 200  # cases per page: a 10,000-case batch stays usable in a browser
# The index lists every case. Its rows come in tables of INDEX_CHUNK with fixed column
# widths, each table skipped by layout and paint until it nears the screen
# (content-visibility): one 10,000-row table took 3 s to lay out.
INDEX_CHUNK = 200
HEADERS = ("case", "family", "level", "answer", "expected", "confidence", "verdict",
           "suspect step", "tokens", "review")  # fmt: skip
COLUMNS = (
    "<colgroup>"
    + "".join(f"<col style='width:{w}%'>" for w in (13, 9, 4, 16, 16, 7, 6, 7, 6, 16))
    + "</colgroup>"
)
LOW_CONFIDENCE = 0.5  # the "low confidence" filter's default threshold

STYLE = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:4px 8px}
th{background:#f4f4f4}.ok{color:#137333}.bad{color:#b3261e}
details{margin-left:18px;border-left:2px solid #ddd;padding-left:8px}
summary{cursor:pointer;font-size:13px}.chosen>summary{background:#fff3c4;font-weight:600}
.suspect>summary{background:#fde7e9;outline:2px solid #b3261e}
.flag{color:#fff;background:#b3261e;border-radius:3px;padding:0 5px;margin-left:6px}
pre{white-space:pre-wrap;margin:4px 0 8px 0;font-size:12px;background:#fafafa;padding:6px}
.meta{color:#666;font-size:12px}.filters{margin:12px 0;font-size:13px}
.calc{font-size:12px;margin:2px 0 8px 0}.calc code{background:#e8f0fe;padding:1px 4px}
mark.exact{background:#e6f4ea}
#cases table{table-layout:fixed;width:100%;margin:0}
#cases td{overflow:hidden;text-overflow:ellipsis}
.chunk{content-visibility:auto;contain-intrinsic-size:auto 5000px}
"""

# the index page's filters: rows carry their family, verdict and confidence as data-*
FILTER_JS = """
function applyFilters(){
 const wrong=document.getElementById('wrong').checked,low=document.getElementById('low').checked,
  below=parseFloat(document.getElementById('below').value),fam=document.getElementById('family').value;
 let shown=0;
 for(const r of document.querySelectorAll('#cases tr[data-family]')){
  const ok=(!wrong||r.dataset.correct==='0')&&(!low||parseFloat(r.dataset.confidence)<below)
   &&(!fam||r.dataset.family===fam);
  r.hidden=!ok; if(ok) shown++;
 }
 for(const c of document.querySelectorAll('#cases .chunk'))
  c.hidden=!c.querySelector('tr:not([hidden])');
 document.getElementById('shown').textContent=shown;
}
"""

Redact = Callable[[str], str]


def _plain(text: str) -> str:
    return text


@dataclass(frozen=True)
class Batch:
    """What a report shows: one predictions version, its trees, and what is known of each
    case (all keyed by case id)."""

    title: str
    predictions: pl.DataFrame
    trees: dict[str, ThoughtTree]
    texts: dict[str, str]  # the chosen answer text
    meta: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, tuple[str, str | None]] = field(default_factory=dict)  # shown, expected
    good: dict[str, set[int]] = field(default_factory=dict)  # leaves that reach the truth
    links: dict[str, str] = field(default_factory=dict)  # "review in MLflow" URLs
    # per case, its texts as masked where its shard was searched (``case_masks``)
    masks: dict[str, dict[str, str | None]] = field(default_factory=dict)


@dataclass(frozen=True)
class _Case:
    """One case as the pages show it."""

    row: dict[str, Any]
    ref: str
    page: str
    chosen: set[int]
    suspect: Node | None
    why: str


def chosen_path(tree: ThoughtTree, text: str) -> set[int]:
    """Node ids of the path whose text is the chosen answer text (deepest match)."""
    return {n.id for n in chosen_nodes(tree, text)}


def chosen_nodes(tree: ThoughtTree, text: str) -> list[Node]:
    """The path whose text is the chosen answer text (deepest match), root excluded."""
    best: list[Node] = []
    for leaf in tree.leaves():
        path = tree.path(leaf)
        if tree.text(leaf) == text and len(path) > len(best):
            best = path
    return best


def render_pages(
    batch: Batch,
    *,
    redact: Redact | None = None,
    case_ref: Redact | None = None,
    page_size: int = PAGE_SIZE,
) -> dict[str, str]:
    """File name -> page: ``index.html`` and the case pages. ``redact`` masks identifiers in
    every text shown; ``case_ref`` turns a case id into the reference shown (an id may be
    an MRN). For a batch too large to hold, feed a ``PageWriter`` page by page."""
    writer = PageWriter(batch.title, batch.meta, redact=redact, case_ref=case_ref,
                        page_size=page_size)  # fmt: skip
    frame = batch.predictions.sort("case_id")
    pages = dict(
        writer.page(replace(batch, predictions=frame.slice(start, page_size)))
        for start in range(0, frame.height, page_size)
    )
    return {"index.html": writer.index(), **pages}


class PageWriter:
    """A report rendered one case page at a time, so that a 100,000-case batch is never held
    whole: each ``page(batch)`` gets the next cases in case-id order (at most ``page_size``,
    with their trees, texts and inputs) and returns that page. The index's rows wait in a
    temporary file until ``index_parts()`` streams the index out."""

    def __init__(
        self,
        title: str,
        meta: dict[str, Any],
        *,
        redact: Redact | None = None,
        case_ref: Redact | None = None,
        page_size: int = PAGE_SIZE,
    ) -> None:
        self.title, self.meta, self.page_size = title, meta, page_size
        self.redact, self.case_ref = redact or _plain, case_ref or _plain
        # one row per line (a newline inside a row is written as its character reference);
        # the file lives as long as the writer and is deleted when it is collected
        self.rows = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115
        self.count = 0
        self.families: set[str] = set()

    def page(self, batch: Batch) -> tuple[str, str]:
        """(file name, HTML) of the next case page, made of ``batch``'s predictions."""
        if batch.predictions.height > self.page_size:
            raise ValueError(f"a page holds at most {self.page_size} cases")
        number = self.count // self.page_size
        rows = batch.predictions.sort("case_id").iter_rows(named=True)
        cases = [_case(batch, r, number, self.case_ref) for r in rows]
        red = Memo(batch.masks, self.redact) if batch.masks else self.redact
        self.rows.writelines(_row_html(batch, c, red).replace("\n", "&#10;") + "\n" for c in cases)
        self.count += len(cases)
        self.families |= {str(c.row["family"]) for c in cases}
        sections = "".join(_case_section(batch, c, red) for c in cases)
        body = f"<h2>Thought trees</h2>{sections}"
        return cases[0].page, _page(self.title, self.meta, body, self.redact, back=True)

    def index(self) -> str:
        """The index page over every case paged so far."""
        return "".join(self.index_parts())

    def index_parts(self) -> Iterator[str]:
        """The index page in pieces of ``INDEX_CHUNK`` rows, to be written as they come."""
        head, tail = _index_html(self.title, self.meta, self.count, self.families,
                                 self.redact).split(_ROWS)  # fmt: skip
        yield head
        self.rows.seek(0)
        for part in iter(lambda: list(itertools.islice(self.rows, INDEX_CHUNK)), []):
            rows = "".join(r[:-1] for r in part)
            yield f"<div class='chunk'><table>{COLUMNS}{rows}</table></div>"
        yield tail


_ROWS = "<!-- rows -->"  # where the index's row tables go


def digest(text: str) -> str:
    """The key a masked text is kept under: 64 bits of BLAKE2b of the raw text (the raw
    text itself stays in the lake's ``tree`` column)."""
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


class Recorder:
    """A ``Redact`` that remembers what it returned for each text, by ``digest`` (None: the
    text is shown as it is)."""

    def __init__(self, redact: Redact) -> None:
        self.redact = redact
        self.seen: dict[str, str | None] = {}

    def __call__(self, text: str) -> str:
        shown = self.redact(text)
        self.seen[digest(text)] = None if shown == text else shown
        return shown


class Memo:
    """A ``Redact`` that shows each text as it was masked before (``case_masks``), and masks
    a text it was not given (the page's settings, a case searched before masks were kept)
    with ``redact``."""

    def __init__(self, masks: dict[str, dict[str, str | None]], redact: Redact) -> None:
        self.known = {k: v for per_case in masks.values() for k, v in per_case.items()}
        self.redact = redact

    def __call__(self, text: str) -> str:
        key = digest(text)
        if key not in self.known:
            return self.redact(text)
        shown = self.known[key]
        return text if shown is None else shown


def case_masks(batch: Batch, redact: Redact) -> dict[str, dict[str, str | None]]:
    """Per case of ``batch``, every text its index row and case section show, masked by
    ``redact``: made where a shard is searched (by a fan-out child, on its own worker) and
    kept beside its trees, so the report reuses them instead of running the name model
    again in one process. The texts are found by rendering the case with a ``Recorder``,
    so they are exactly the ones the pages mask."""
    out = {}
    for row in batch.predictions.iter_rows(named=True):
        record = Recorder(redact)
        c = _case(batch, row, 0, _plain)
        _row_html(batch, c, record)
        _case_section(batch, c, record)
        out[row["case_id"]] = record.seen
    return out


def case_inputs(d: Domain, cases: list[Case]) -> dict[str, tuple[str, str | None]]:
    """(the case as the model reads it, the expected answer JSON) per case id."""
    out = {}
    for c in cases:
        fam = d.family(c.family)
        shown = fam.render(fam.Inputs.model_validate(c.inputs))
        out[c.id] = (shown, json.dumps(c.truth) if c.truth is not None else None)
    return out


def right_leaves(d: Domain, cases: list[Case], trees: dict[str, Any]) -> dict[str, set[int]]:
    """Per case with a known answer, the ids of its tree's leaves whose answer is right:
    the paths the suspect-step rule compares a wrong chosen path with."""
    out = {}
    for case in cases:
        tree = trees.get(case.id)
        if tree is None or case.truth is None:
            continue
        out[case.id] = {leaf.id for leaf in tree.leaves() if d.check(tree.text(leaf), case).correct}
    return out


def _case(batch: Batch, row: dict[str, Any], page: int, ref: Redact) -> _Case:
    case_id = row["case_id"]
    tree = batch.trees.get(case_id)
    path = chosen_nodes(tree, batch.texts.get(case_id, "")) if tree else []
    found = None
    if tree is not None and row["correct"] is not True:
        found = suspect_step(tree, path, good=batch.good.get(case_id))
    return _Case(
        row=row,
        ref=ref(case_id),
        page=f"cases-{page + 1:03d}.html",
        chosen={n.id for n in path},
        suspect=path[found.index] if found else None,
        why=found.reason if found else "",
    )


def _index_html(
    title: str, meta: dict[str, Any], count: int, families: set[str], red: Redact
) -> str:
    """The index page with ``_ROWS`` where the rows' tables go."""
    options = "".join(f"<option>{html.escape(f)}</option>" for f in sorted(families))
    filters = (
        "<div class='filters'><label><input type='checkbox' id='wrong'> wrong only</label> "
        "<label><input type='checkbox' id='low'> confidence below</label> "
        f"<input type='number' id='below' value='{LOW_CONFIDENCE}' step='0.05' min='0' max='1' "
        "style='width:4em'> <label>family <select id='family'><option value=''>all</option>"
        f"{options}</select></label> <span class='meta'><span id='shown'>{count}</span>"
        f" of {count} cases shown</span></div>"
    )
    head = f"<table>{COLUMNS}<tr>{''.join(f'<th>{h}</th>' for h in HEADERS)}</tr></table>"
    script = (
        f"<script>{FILTER_JS}for(const id of ['wrong','low','below','family'])"
        "for(const ev of ['input','change'])"
        "document.getElementById(id).addEventListener(ev,applyFilters);</script>"
    )
    body = f"<h2>Cases</h2>{filters}<div id='cases'>{head}{_ROWS}</div>{script}"
    return _page(title, meta, body, red)


def _page(title: str, meta: dict[str, Any], body: str, red: Redact, *, back: bool = False) -> str:
    shown = "".join(
        f"<div class='meta'>{html.escape(k)}: {html.escape(red(str(v)))}</div>"
        for k, v in meta.items()
    )
    title = html.escape(title)
    up = "<p><a href='index.html'>&larr; all cases</a></p>" if back else ""
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
        f"<style>{STYLE}</style></head><body>{up}<h1>{title}</h1>{shown}{body}</body></html>"
    )


def _verdict(correct: bool | None) -> str:
    if correct is None:
        return ""
    return '<span class="ok">correct</span>' if correct else '<span class="bad">wrong</span>'


def _row_html(batch: Batch, c: _Case, red: Redact) -> str:
    """One case's line in the index: data-* attributes feed the filters."""
    r, ref = c.row, html.escape(c.ref)
    expected = (batch.inputs.get(r["case_id"]) or ("", None))[1]
    flag = "-" if c.suspect is None else f"step {c.suspect.depth}"
    link = batch.links.get(r["case_id"])
    review = f"<a href='{html.escape(link)}'>review in MLflow</a>" if link else ""
    correct = "" if r["correct"] is None else str(int(r["correct"]))
    return (
        f"<tr data-family='{html.escape(str(r['family']))}' data-correct='{correct}' "
        f"data-confidence='{r['confidence']:.3f}'><td><a href='{c.page}#{ref}'>{ref}</a></td>"
        f"<td>{html.escape(str(r['family']))}</td><td>{r['difficulty']}</td>"
        f"<td>{html.escape(red(str(r['answer']))[:80])}</td>"
        f"<td>{html.escape(red(expected or '')[:80])}</td><td>{r['confidence']:.2f}</td>"
        f"<td>{_verdict(r['correct'])}</td><td>{flag}</td><td>{r['tokens']}</td>"
        f"<td>{review}</td></tr>"
    )


def _case_section(batch: Batch, c: _Case, red: Redact) -> str:
    """One case: input, expected answer and verdict, the suspect step's reason, the tree."""
    case_id, ref = c.row["case_id"], html.escape(c.ref)
    tree = batch.trees.get(case_id)
    if tree is None:
        return f"<h3 id='{ref}'>{ref}</h3><div class='meta'>no tree stored</div>"
    flag = (
        f"<div class='meta'><span class='flag'>suspect</span> step {c.suspect.depth}: "
        f"{html.escape(c.why)}</div>"
        if c.suspect
        else ""
    )
    link = batch.links.get(case_id)
    review = f" <a href='{html.escape(link)}'>review in MLflow</a>" if link else ""
    body = "".join(_node_html(tree, k, c, red) for k in tree.children(tree.root))
    return (
        f"<h3 id='{ref}'>{ref} {_verdict(c.row['correct'])}{review}</h3>"
        f"{_case_html(batch.inputs.get(case_id), red)}{flag}"
        f"<div class='meta'>{len(tree.nodes) - 1} steps in the tree, "
        f"{tree.tokens_generated} tokens</div>{body}"
    )


def _node_html(tree: ThoughtTree, node: Node, c: _Case, red: Redact) -> str:
    kids = "".join(_node_html(tree, k, c, red) for k in tree.children(node))
    answer = html.escape(red(node.answer or "unparsed"))
    label = (
        f"step {node.depth} &middot; {_score(tree, node)} &middot; value {node.value:.3f} "
        f"&middot; visits {node.visits} &middot; {node.n_tokens} tok"
        + (f" &middot; answer {answer}" if node.terminal else "")
        + (" &middot; cut at length" if node.finish_reason == "length" else "")
        + (f" &middot; {len(node.calls)} computed" if node.calls else "")
        + (f" &middot; {html.escape(node.stop_reason)}" if node.stop_reason else "")
        + ("<span class='flag'>suspect</span>" if node is c.suspect else "")
    )
    classes = " ".join(
        name for name, on in (("chosen", node.id in c.chosen), ("suspect", node is c.suspect)) if on
    )
    cls = f' class="{classes}"' if classes else ""
    opened = " open" if classes else ""
    return (
        f"<details{cls}{opened}><summary>{label}</summary>"
        f"<pre>{_marked(red(node.text))}</pre>{_calls_html(node, red)}{kids}</details>"
    )


def _score(tree: ThoughtTree, node: Node) -> str:
    """The step's PRM score and its change from the step before (the first from 1)."""
    if node.prm_score is None:
        return "PRM -"
    parent = tree.nodes[node.parent] if node.parent is not None else None
    before = 1.0 if parent is None or parent.parent is None else parent.prm_score
    change = "" if before is None else f" (&Delta; {node.prm_score - before:+.3f})"
    return f"PRM {node.prm_score:.3f}{change}"


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
            f"<b>{html.escape(c.result or '')}</b>{html.escape(' ' + c.unit if c.unit else '')}"
            " <span class='ok'>computed</span>"
            if c.ok
            else f"<span class='bad'>error: {html.escape(c.error or '')}</span>"
        )
        + "</li>"
        for c in node.calls
    )
    return f"<ul class='calc'>{items}</ul>"


def _case_html(case: tuple[str, str | None] | None, red: Redact) -> str:
    """The case as the model read it (the question is its last line) and the answer
    expected, open: a reviewer judges each step against them."""
    if case is None:
        return ""
    shown, expected = case
    return (
        f"<details open><summary>input</summary><pre>{html.escape(red(shown))}</pre></details>"
        f"<div class='meta'>expected answer: <code>{html.escape(red(expected or 'unknown'))}"
        "</code></div>"
    )


def load_trees(frame: pl.DataFrame) -> dict[str, ThoughtTree]:
    return {
        r["case_id"]: ThoughtTree.model_validate(json.loads(r["tree"]))
        for r in frame.iter_rows(named=True)
    }
