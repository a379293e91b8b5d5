"""The reviewer's report: structure, escaping, paging, the suspect step, and a reviewer's
clicks in headless Chromium (Debian's chromium and chromedriver, through Selenium)."""

from __future__ import annotations

import html
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import polars as pl
import pytest

from models.search.tree import ThoughtTree
from tasks.report import Batch, Memo, case_masks, chosen_path, digest, render_pages
from tests.injection import CORPUS


def _tree() -> tuple[ThoughtTree, str]:
    """Two first steps; the chosen path reads, then answers 4."""
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
        prm_score=0.35,
        visits=2,
        value=0.9,
    )
    tree.add(b, text="cut", token_ids=[10], n_tokens=1, finish_reason="length", terminal=True)
    return tree, tree.text(end)


def _frame(n: int, *, correct: list[bool | None] | None = None) -> pl.DataFrame:
    ids = [f"c{k:05d}" for k in range(n)]
    return pl.DataFrame(
        {
            "case_id": ids,
            "family": ["clinical_calc" if k % 3 else "ctr" for k in range(n)],
            "difficulty": [2] * n,
            "answer": ['{"value": 4}'] * n,
            "confidence": [0.9 if k % 2 else 0.3 for k in range(n)],
            "correct": correct if correct is not None else [k % 2 == 1 for k in range(n)],
            "tokens": [5] * n,
        },
        schema_overrides={"correct": pl.Boolean},
    )


def _batch(n: int = 3, **kw: object) -> Batch:
    tree, text = _tree()
    frame = _frame(n)
    ids = list(frame["case_id"])
    return Batch(
        title="test batch",
        predictions=frame,
        trees=dict.fromkeys(ids, tree),
        texts=dict.fromkeys(ids, text),
        meta={"model": "m"},
        inputs={i: ("Na 140\nWhat is the anion gap?", '{"value": 5}') for i in ids},
        **kw,  # type: ignore[arg-type]
    )


def test_structure_escaping_and_the_suspect_step() -> None:
    tree, text = _tree()
    assert chosen_path(tree, text) == {1, 3}
    pages = render_pages(_batch(3))
    assert sorted(pages) == ["cases-001.html", "index.html"]
    index, cases = pages["index.html"], pages["cases-001.html"]
    assert index.count("<tr data-family=") == 3 and "cases-001.html#c00001" in index
    assert "What is the anion gap?" in cases and "{&quot;value&quot;: 5}" in cases
    assert "<script>alert" not in cases and "&lt;script&gt;" in cases
    assert "cut at length" in cases and "visits 3" in cases
    # c00000 and c00002 are wrong, with no right path known: the sibling rule flags step 1,
    # the one the PRM ranks least above the steps tried beside it (SUSPECT_RULE)
    assert cases.count('class="chosen suspect"') == 2
    assert "suspect</span> step 1: of this path&#x27;s steps, the PRM ranks this one" in cases
    assert "(0.90 against 0.10)" in cases
    assert "PRM 0.350 (&Delta; -0.550)" in cases  # each step's change from the one before


def test_a_right_sibling_path_moves_the_suspect_to_its_first_foreign_number() -> None:
    """When the other path is known to reach the truth, the suspect is the chosen path's
    first step that states a number the right path does not: not "Step 1" (the right path
    states 1 too) but the answer 4."""
    batch = _batch(1, good={"c00000": {4}})
    cases = render_pages(batch)["cases-001.html"]
    assert "suspect</span> step 2: here the path states a number no path to the right" in cases
    assert cases.index("read the note") < cases.index('class="chosen suspect"')


@pytest.mark.parametrize("injection", CORPUS)
def test_injected_input_is_shown_escaped(injection: str) -> None:
    """The case input a reviewer reads carries injected text as text, never as markup."""
    pages = []
    for t in ("", injection):
        batch = _batch(1)
        inputs = {"c00000": (f"Na 140\n{t}", f"4 {t}")}
        pages.append(render_pages(replace(batch, inputs=inputs)))
    for name in ("index.html", "cases-001.html"):
        before, after = pages[0][name], pages[1][name]
        for tag in ("<script", "<pre", "</pre>", "</details>", "<|", "<tr"):
            assert after.count(tag) == before.count(tag), (name, tag)
    assert html.escape(injection) in pages[1]["cases-001.html"]


def test_a_large_batch_is_paged_and_every_page_stays_small() -> None:
    """10,000 cases: pages of at most 200 cases, each under 5 MB, every row linked to the
    page its tree is on."""
    pages = render_pages(_batch(10_000))
    assert len(pages) == 1 + 50
    assert max(len(p.encode()) for p in pages.values()) < 5_000_000
    assert pages["cases-050.html"].count("<h3 id=") == 200
    assert "cases-050.html#c09999" in pages["index.html"]
    # the index's rows come in 50 tables that layout skips until they near the screen
    assert pages["index.html"].count("<div class='chunk'><table>") == 50


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """Headless Chromium driven by Debian's chromedriver; Selenium Manager stays offline."""
    if CHROMIUM is None or DRIVER is None:
        pytest.skip("chromium or chromedriver not installed (make test installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_OFFLINE", "true")
    opts = Options()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run"):
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={tmp_path / 'profile'}")
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=opts)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def _write(pages: dict[str, str], folder: Path) -> Path:
    folder.mkdir()
    for name, page in pages.items():
        (folder / name).write_text(page)
    return folder / "index.html"


def test_a_reviewer_filters_follows_a_link_and_sees_the_suspect(browser, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    d = browser
    d.get(_write(render_pages(_batch(6)), tmp_path / "report").as_uri())
    rows = d.find_elements(By.CSS_SELECTOR, "#cases tr[data-family]")

    def shown() -> list[str]:
        return [r.get_attribute("data-correct") for r in rows if r.is_displayed()]

    assert len(shown()) == 6
    d.find_element(By.ID, "wrong").click()
    assert shown() == ["0", "0", "0"] and d.find_element(By.ID, "shown").text == "3"
    Select(d.find_element(By.ID, "family")).select_by_visible_text("ctr")
    assert len(shown()) == 1  # wrong and ctr: c00000 only (c00003 is right)
    d.find_element(By.ID, "wrong").click()
    Select(d.find_element(By.ID, "family")).select_by_visible_text("all")
    d.find_element(By.ID, "low").click()  # confidence below 0.5: the even cases (0.3)
    assert len(shown()) == 3 and d.find_element(By.ID, "shown").text == "3"
    d.find_element(By.LINK_TEXT, "c00000").click()
    assert d.current_url.endswith("cases-001.html#c00000")
    flagged = d.find_element(By.CSS_SELECTOR, "#c00000 ~ details.suspect > summary")
    assert flagged.is_displayed() and "suspect" in flagged.text
    closed = d.find_elements(By.CSS_SELECTOR, "details:not([open]) > summary")[0]
    closed.click()  # a reviewer opens a collapsed branch
    assert closed.find_element(By.XPATH, "..").get_attribute("open") is not None


def test_a_conversion_call_shows_its_computed_value_with_the_unit() -> None:
    from domains.calc import evaluate
    from tasks.report import _calls_html

    tree = ThoughtTree(prompt_token_ids=[1])
    node = tree.add(
        tree.root,
        text="- <<calcium 2.7 mmol/L to mg/dL>> = 10.8216 mg/dL",
        calls=[evaluate("calcium 2.7 mmol/L to mg/dL")],
    )
    shown = _calls_html(node, lambda t: t)
    assert "<b>10.8216</b> mg/dL <span class='ok'>computed</span>" in shown


def _upper(text: str) -> str:
    """A stand-in redactor whose every change is visible: capitals become masks."""
    return "".join("[M]" if ch.isupper() else ch for ch in text)


def test_masks_made_at_the_shard_render_the_same_pages_without_masking_again() -> None:
    """``case_masks`` records exactly the texts a case's row and section mask, so a page
    rendered from them (``Batch.masks``) equals the page masked live, and the live
    redactor then sees only the page's settings, never a case's text."""
    batch = _batch(3)
    masks = case_masks(batch, _upper)
    assert set(masks) == {"c00000", "c00001", "c00002"}
    assert (
        masks["c00000"][digest("Na 140\nWhat is the anion gap?")]
        == "[M]a 140\n[M]hat is the anion gap?"
    )
    assert masks["c00000"][digest('{"value": 5}')] is None  # unchanged: kept as None
    seen: list[str] = []

    def live(text: str) -> str:
        seen.append(text)
        return _upper(text)

    assert render_pages(replace(batch, masks=masks), redact=live) == render_pages(
        batch, redact=_upper
    )
    assert seen and set(seen) <= {"m"}  # the one meta value


def test_a_text_without_a_stored_mask_is_masked_live() -> None:
    masks = case_masks(_batch(1), _upper)
    memo = Memo(masks, lambda text: "live")
    assert memo("Na 140\nWhat is the anion gap?") == "[M]a 140\n[M]hat is the anion gap?"
    assert memo('{"value": 5}') == '{"value": 5}'  # stored as unchanged
    assert memo("Lee wrote this") == "live"
