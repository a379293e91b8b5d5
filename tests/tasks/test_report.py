"""The HTML report: structure, escaping, and a real render in headless Chromium."""

from __future__ import annotations

import html
import shutil
import subprocess
from pathlib import Path

import polars as pl
import pytest

from models.search.tree import ThoughtTree
from tasks.report import chosen_path, render
from tests.injection import CORPUS


def _tree() -> tuple[ThoughtTree, str]:
    tree = ThoughtTree(prompt_token_ids=[1, 2, 3])
    a = tree.add(
        tree.root,
        text="## Step 1: read the note.\n\n",
        token_ids=[5, 6],
        n_tokens=2,
        prm_score=0.9,
        visits=3,
        value=0.8,
    )
    b = tree.add(
        tree.root,
        text="## Step 1: <script>alert(1)</script>\n\n",
        token_ids=[7],
        n_tokens=1,
        prm_score=0.1,
        visits=1,
        value=0.1,
    )
    end = tree.add(
        a,
        text='Answer: {"value": 4}',
        token_ids=[8, 9],
        n_tokens=2,
        terminal=True,
        answer='{"value": 4}',
        prm_score=0.95,
        visits=2,
        value=0.9,
    )
    tree.add(b, text="cut", token_ids=[10], n_tokens=1, finish_reason="length", terminal=True)
    return tree, tree.text(end)


def _page(tmp_path: Path) -> Path:
    tree, text = _tree()
    preds = pl.DataFrame(
        {
            "case_id": ["c1"],
            "family": ["clinical_calc"],
            "difficulty": [2],
            "answer": ['{"value": 4}'],
            "confidence": [0.9],
            "correct": [True],
            "tokens": [tree.tokens_generated],
        }
    )
    path = tmp_path / "report.html"
    path.write_text(render("test batch", preds, {"c1": tree}, {"c1": text}, meta={"model": "m"}))
    return path


def test_structure_and_escaping(tmp_path: Path) -> None:
    tree, text = _tree()
    assert chosen_path(tree, text) == {1, 3}
    page = _page(tmp_path).read_text()
    assert page.count("<details") == 4 and page.count('class="chosen"') == 2
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "cut at length" in page and "visits 3" in page and "correct" in page


@pytest.mark.parametrize("injection", CORPUS)
def test_injected_input_is_shown_escaped(injection: str) -> None:
    """The case input a reviewer reads carries injected text as text, never as markup."""
    tree, text = _tree()
    preds = pl.DataFrame(
        {"case_id": ["c1"], "family": ["f"], "difficulty": [1], "answer": ["4"]}
        | {"confidence": [0.5], "correct": [False], "tokens": [3]}
    )
    pages = [
        render(
            "t",
            preds,
            {"c1": tree},
            {"c1": text},
            meta={},
            inputs={"c1": (f"Na 140\n{t}", f"4 {t}")},
        )
        for t in ("", injection)
    ]
    assert pages[1].count(html.escape(injection)) == 2
    for tag in ("<script", "<pre", "</pre>", "</details>", "<|"):
        assert pages[1].count(tag) == pages[0].count(tag), tag


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (make test installs it)")
def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    page = _page(tmp_path)
    shot = tmp_path / "report.png"
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1200,900",
    ]
    subprocess.run(
        [CHROMIUM, *flags, f"--screenshot={shot}", page.as_uri()],
        check=True,
        capture_output=True,
        timeout=120,
    )
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    dom = subprocess.run(
        [CHROMIUM, *flags, "--dump-dom", page.as_uri()],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    assert dom.count("<details") == 4 and "test batch" in dom


def test_calculator_steps_are_marked_as_computed() -> None:
    from domains.calc import evaluate

    tree = ThoughtTree(prompt_token_ids=[1])
    calls = [evaluate("140 - (100 + 24)"), evaluate("1 / 0")]
    tree.add(
        tree.root,
        text="AG = <<140 - (100 + 24)>> = 16, then <<1 / 0>> = error: division by zero\n\n",
        token_ids=[2, 3],
        n_tokens=2,
        calls=calls,
    )
    preds = pl.DataFrame(
        {
            "case_id": ["c1"],
            "family": ["clinical_calc"],
            "difficulty": [1],
            "answer": ["16"],
            "confidence": [1.0],
            "correct": [True],
            "tokens": [2],
        }
    )
    page = render(
        "calc",
        preds,
        {"c1": tree},
        {"c1": ""},
        meta={},
        inputs={"c1": ("Na 140 <b>", '{"value": 16}')},
    )
    assert "Na 140 &lt;b&gt;" in page and "expected answer: <code>{&quot;value&quot;: 16}" in page
    assert "2 computed" in page and page.count("<mark class='exact'") == 2
    assert "<b>16</b> <span class='ok'>computed</span>" in page
    assert "error: division by zero</span>" in page
