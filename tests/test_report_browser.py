"""The report in a real browser: headless Chromium on a file:// URL.

Checks what a person sees: the index lists every component, filters narrow it,
a component page shows its examples with correct UTF-8, and hostile tokens are
shown as text while nothing runs. Skipped (with the reason) where Chromium or
playwright is missing; CI installs Debian's chromium.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from report_fixture import DEAD, INJECT_IMG, INJECT_SCRIPT, N_COMPONENTS, make_harvest, make_run

from autointerp.report import write_report

CHROMIUM = os.environ.get("AUTOINTERP_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")
expect = sync_api.expect
if not Path(CHROMIUM).exists():
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set AUTOINTERP_CHROMIUM)", allow_module_level=True)

CUSTOM_JS = """
AUTOINTERP.registerExtras("activation_histogram", function (value, box, h) {
  box.appendChild(h.el("p", {class: "custom-hist"}, "custom renderer: " + value.length + " bins"));
  box.appendChild(h.bars(value, {title: "activation histogram"}));
});
"""


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    paths = make_run(tmp_path_factory.mktemp("runs"))
    return write_report(paths, extras_renderers={"activation_histogram": CUSTOM_JS})


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = ctx.new_page()
    pg.dialogs = []
    pg.errors = []
    pg.requests = []

    def on_dialog(d):
        pg.dialogs.append(d.message)
        d.dismiss()

    pg.on("dialog", on_dialog)
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    pg.on("request", lambda r: pg.requests.append(r.url))
    yield pg
    ctx.close()


def _open(page, index: Path, hash_: str = ""):
    page.goto(index.as_uri() + hash_)
    page.wait_for_selector("body[data-ready='1']", timeout=15000)


def test_index_lists_every_component(page, report, tmp_path):
    _open(page, report)
    assert page.locator("#components tbody tr").count() == N_COMPONENTS
    assert page.get_attribute("#count", "data-matching") == str(N_COMPONENTS)
    assert page.locator("#components tbody tr[data-key='h.0.mlp:1'] td.label").inner_text() == "em dash — and café"
    page.screenshot(path=str(tmp_path / "index.png"), full_page=True)
    assert (tmp_path / "index.png").stat().st_size > 0
    assert not page.errors
    # the page and its data load from disk only
    assert all(u.startswith("file://") for u in page.requests), page.requests


def test_filters_narrow_the_index(page, report):
    _open(page, report)
    page.fill("#f-text", "pattern")
    expect(page.locator("#count")).to_have_attribute("data-matching", "6")
    assert page.locator("#components tbody tr").count() == 6
    page.fill("#f-text", "")
    page.select_option("#f-layer", "1")
    expect(page.locator("#count")).to_have_attribute("data-matching", "4")
    keys = page.locator("#components tbody tr").evaluate_all("rs => rs.map(r => r.dataset.key)")
    assert keys == [f"h.1.mlp:{i}" for i in range(4)]
    page.select_option("#f-layer", "")
    page.select_option("#f-scorer", "detection")
    page.fill("#f-min", "0.8")
    # scores are 0.5 + 0.05 * i over the labeled components: i = 6, 7, 8 reach 0.8
    expect(page.locator("#count")).to_have_attribute("data-matching", "3")
    page.fill("#f-min", "")
    page.check("#f-labeled")
    expect(page.locator("#count")).to_have_attribute("data-matching", f"{N_COMPONENTS - 2}")


def test_sorting_by_score(page, report):
    _open(page, report)
    page.click("th[data-col='score:detection']")
    first = page.locator("#components tbody tr").first.get_attribute("data-key")
    assert first == "h.1.mlp:2"  # the highest score sorts first
    page.click("th[data-col='score:detection']")
    first = page.locator("#components tbody tr").first.get_attribute("data-key")
    assert first == "h.0.mlp:0"


def test_component_page_shows_examples(page, report, tmp_path):
    comp = make_harvest()["h.0.mlp:1"]
    _open(page, report)
    page.click("#components tbody tr[data-key='h.0.mlp:1'] a")
    page.wait_for_selector("#component .example")
    assert page.locator(".examples.random .example").count() == len(comp.examples)
    assert page.locator(".examples.top .example").count() == len(comp.top_examples)
    assert page.locator("h2.comp-label").inner_text() == "em dash — and café"
    # every example marks its firing token, with the activation on hover
    assert page.locator(".examples.random .tok.fire").count() == len(comp.examples)
    title = page.locator(".examples.random .tok.fire").first.get_attribute("title")
    assert title.startswith("activation 0.")
    # multi-byte characters split across GPT-2 byte tokens come out whole
    text = page.locator("#component .examples").first.inner_text() + page.locator("#component .examples.random").inner_text()
    assert "—" in text and "café" in text
    # (a window cut inside a character may end in U+FFFD; GPT-2's byte letters must never show)
    assert "â" not in text and "Ã" not in text
    # scores next to the baselines, firing-rate histogram, custom extras renderer, partners with labels
    cells = page.locator(".panel.scores tbody tr").first.locator("td").all_inner_texts()
    assert cells[:4] == ["detection", "0.55", "0.5", "0.55"]
    assert page.locator(".panel.rate svg rect.bar.hi").count() == 1
    assert "percentile" in page.locator(".panel.rate p").first.inner_text()
    assert page.locator(".custom-hist").inner_text() == "custom renderer: 5 bins"
    partner = page.locator("a.partner").first
    key = partner.inner_text()
    partner.click()
    page.wait_for_selector(f"#component[data-key='{key}'] .comp-label")
    page.screenshot(path=str(tmp_path / "component.png"), full_page=True)
    assert not page.errors


def test_injection_tokens_render_as_text_and_run_nothing(page, report, tmp_path):
    _open(page, report, "#c/" + "h.0.mlp%3A0")
    page.wait_for_selector("#component .example")
    toks = page.locator(".tok").all_text_contents()
    joined = "".join(toks).replace("·", " ")
    assert INJECT_IMG in joined
    assert INJECT_SCRIPT in joined
    assert page.locator("h2.comp-label").inner_text() == "HTML-looking tokens " + INJECT_SCRIPT
    assert INJECT_IMG in page.locator(".reasoning").inner_text()
    # and nothing ran: no flag, no dialog, no injected elements
    assert page.evaluate("window.__pwned") is None
    assert page.locator("img").count() == 0
    assert page.locator("#app script").count() == 0
    assert page.dialogs == []
    page.screenshot(path=str(tmp_path / "injection.png"), full_page=True)
    # the index shows the hostile label as text too
    page.goto(report.as_uri() + "#")
    page.wait_for_selector("#components tbody tr")
    assert INJECT_SCRIPT in page.locator("#components tbody tr[data-key='h.0.mlp:0'] td.label").inner_text()
    assert page.evaluate("window.__pwned") is None and page.dialogs == []


def test_dead_component_and_unknown_key(page, report):
    _open(page, report, "#c/" + DEAD)  # an unencoded key works too
    page.wait_for_selector("#component .comp-label")
    assert "(not labeled)" in page.locator("h2.comp-label").inner_text()
    assert "dead" in page.locator(".panel.rate p").first.inner_text()
    page.goto(report.as_uri() + "#c/nope%3A1")
    page.wait_for_selector("#app .error")
    assert "No component" in page.locator("#app .error").inner_text()


# -- 60-character component keys (issue 12 item 7) -------------------------------------

LONG_LAYER = "model.encoder.layers.11.intermediate.intermediate_act_fn.gelu"


@pytest.fixture(scope="module")
def long_key_report(tmp_path_factory):
    """A run whose keys are 63 characters, as a real encoder's module names give."""
    import torch

    from autointerp.accumulators import CorrelationAcc, ReservoirAcc
    from autointerp.batch import HarvestBatch
    from autointerp.harvest import HarvestLoop
    from autointerp.paths import RunPaths

    loop = HarvestLoop([CorrelationAcc(top_k=4), ReservoirAcc(k=4, context_tokens=3)], threshold=0.0, vocab_size=10,
                       decode=lambda i: f" w{i}", progress=False)
    g = torch.Generator().manual_seed(0)
    for _ in range(2):
        toks = torch.randint(0, 10, (4, 16), generator=g)
        acts = torch.stack([(toks == c).float() + (toks == c + 1).float() for c in range(4)], -1)
        loop.update(HarvestBatch(tokens=toks, activations={LONG_LAYER: acts}))
    paths = RunPaths.of("long-keys", tmp_path_factory.mktemp("runs"))
    loop.finalize().save(paths.harvest)
    return write_report(paths)


def _boxes(page, selector):
    return page.locator(selector).evaluate_all(
        "els => els.map(e => { const r = e.getBoundingClientRect(); "
        "return {x: r.x, y: r.y, w: r.width, h: r.height, title: e.title || e.closest('[title]')?.title || '', "
        "text: e.textContent, lh: parseFloat(getComputedStyle(e).lineHeight) || 18}; })")


def _overlap(a, b):
    return a["x"] < b["x"] + b["w"] - 0.5 and b["x"] < a["x"] + a["w"] - 0.5 and a["y"] < b["y"] + b["h"] - 0.5 and b["y"] < a["y"] + a["h"] - 0.5


def test_long_keys_stay_readable(page, long_key_report):
    key = f"{LONG_LAYER}:0"
    _open(page, long_key_report)
    for box in _boxes(page, "#components tbody td.key a"):
        assert box["h"] < 2 * box["lh"], box  # one line, not one letter per line
        assert box["title"].startswith(LONG_LAYER), box  # the full key on hover
    _open(page, long_key_report, "#c/" + key)
    page.wait_for_selector(".partner-table td.key a")
    links = _boxes(page, ".partner-table td.key a")
    assert links
    for box in links:
        assert box["h"] < 2 * box["lh"], box
        assert box["title"].startswith(LONG_LAYER) and len(box["title"]) > 60, box
        assert box["w"] <= 300, box  # cut short, leaving room for the label and numbers
        assert "…" in box["text"] and box["text"].endswith(box["title"][-8:]), box  # the index stays visible
    for table in page.locator(".partner-table").all():
        heads = table.locator("th").evaluate_all(
            "els => els.map(e => { const r = e.getBoundingClientRect(); return {x: r.x, y: r.y, w: r.width, h: r.height}; })")
        for i, a in enumerate(heads):
            assert a["w"] > 0
            for b in heads[i + 1:]:
                assert not _overlap(a, b), (a, b)
        cells = table.locator("tbody tr:first-child td").evaluate_all(
            "els => els.map(e => { const r = e.getBoundingClientRect(); return {x: r.x, y: r.y, w: r.width, h: r.height}; })")
        for i, a in enumerate(cells):
            for b in cells[i + 1:]:
                assert not _overlap(a, b), (a, b)


# -- bidirectional controls (issue 10 item 12) ---------------------------------------------

BIDI_TOKEN = "Ġreport\u202Efdp.exe"  # shows as "reportexe.pdf" where the override is obeyed
BIDI_LABEL = "file names \u2067ending\u2069 in \u202Eexe.txt\u202C"
BIDI_CHARS = "\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"


@pytest.fixture(scope="module")
def bidi_report(tmp_path_factory):
    """The toy run with an override character in one token and bidi controls in a label."""
    import report_fixture

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(report_fixture, "decode", lambda i: BIDI_TOKEN if report_fixture.VOCAB[i] == INJECT_IMG else report_fixture.VOCAB[i])
        plain_labels = report_fixture.labels_for
        mp.setattr(report_fixture, "labels_for", lambda keys: {**plain_labels(keys), "h.0.mlp:0": BIDI_LABEL})
        paths = make_run(tmp_path_factory.mktemp("runs"))
    return write_report(paths)


def test_bidi_controls_in_tokens_and_labels_are_shown_as_escapes(page, bidi_report):
    _open(page, bidi_report, "#c/" + "h.0.mlp%3A0")
    page.wait_for_selector("#component .example")
    seen = page.evaluate(
        "() => document.body.innerText + [...document.querySelectorAll('[title]')].map(e => e.title).join('\\n')")
    assert not any(c in seen for c in BIDI_CHARS), [hex(ord(c)) for c in seen if c in BIDI_CHARS]
    toks = "".join(page.locator(".tok").all_text_contents())
    assert "report⟨U+202E⟩fdp.exe" in toks
    label = page.locator("h2.comp-label").inner_text()
    assert label == "file names ⟨U+2067⟩ending⟨U+2069⟩ in ⟨U+202E⟩exe.txt⟨U+202C⟩", label
    page.goto(bidi_report.as_uri() + "#")
    page.wait_for_selector("#components tbody tr")
    row = page.locator("#components tbody tr[data-key='h.0.mlp:0'] td.label").inner_text()
    assert "⟨U+202E⟩exe.txt" in row and not any(c in row for c in BIDI_CHARS)


# -- label set comparison page (issue 13 item 3) ---------------------------------------

HOSTILE_LABEL = INJECT_IMG + " v2 \u202Eexe.txt " + INJECT_SCRIPT


@pytest.fixture(scope="module")
def compare_report(tmp_path_factory):
    """The toy run with a second label set ``v2``: hostile labels, every detection score 0.2 lower."""
    from autointerp.records import read_scores
    from autointerp.schemas import InterpretationResult, ScoreResult
    from autointerp.storage import append_jsonl

    paths = make_run(tmp_path_factory.mktemp("runs"))
    v2 = paths.with_label_set("v2")
    for k, by_src in read_scores(paths)["detection"].items():
        label = HOSTILE_LABEL if k == "h.0.mlp:4" else f"v2 label of {k}"
        append_jsonl(v2.interpretation_results, InterpretationResult(k, label, "high", ""))
        drop = 0.4 if k == "h.0.mlp:4" else 0.2
        append_jsonl(v2.score_file("detection"), ScoreResult(k, "detection", "label", label, by_src["label"].score - drop))
    return paths, write_report(paths)


def test_comparison_page_shows_the_paired_difference_as_text(page, compare_report):
    paths, index = compare_report
    _open(page, index)
    link = page.locator("#comparisons a")
    assert link.inner_text() == "label set default vs v2"
    link.click()
    page.wait_for_selector("#comparison-table tbody tr")
    row = page.locator("#comparison-table tbody tr[data-scorer='detection']")
    cells = row.locator("td").all_text_contents()
    assert cells[0] == "detection" and cells[4] == "+0.225" and cells[-1] == "A ahead", cells
    assert cells[6] == "10 / 0 / 0" or cells[6].endswith(" / 0 / 0"), cells
    lo, hi = (float(x.replace("−", "-")) for x in cells[5].strip("[]").split(", "))
    from autointerp.compare import compare_label_sets

    want = compare_label_sets(paths, "default", "v2")["detection"]  # the page shows what the library computes
    assert (lo, hi) == (round(want.ci_low, 3), round(want.ci_high, 3)) and 0.2 <= lo < hi <= 0.4
    assert "intruder: not compared (scored only in label set 'default')" in page.locator("#comparison").inner_text()
    # the hostile label is text: nothing ran, no element was made from it, its override is shown as an escape
    first = page.locator(".disagreements tbody tr").first
    assert first.locator("td.key").inner_text() == "h.0.mlp:4"
    shown = first.locator("td.label").nth(1).inner_text()
    assert INJECT_IMG in shown and INJECT_SCRIPT in shown and "⟨U+202E⟩exe.txt" in shown
    assert page.evaluate("window.__pwned") is None and page.locator("img").count() == 0 and page.dialogs == []
    seen = page.evaluate("() => document.body.innerText + document.title")
    assert not any(c in seen for c in BIDI_CHARS)
    assert all(u.startswith("file://") for u in page.requests)
    # a disagreement links to its component page
    first.locator("td.key a").click()
    page.wait_for_selector("#component .comp-label")
    assert page.locator("h2.comp-label").inner_text() == labels_for_key("h.0.mlp:4")
    page.goto(index.as_uri() + "#compare/7")
    page.wait_for_selector("#comparison .error")
    assert "No label set comparison number 7" in page.locator("#comparison .error").inner_text()


def labels_for_key(key: str) -> str:
    import report_fixture

    return report_fixture.labels_for(report_fixture.make_harvest().keys())[key]


def test_report_of_a_named_set_compares_it_back(compare_report, tmp_path):
    paths, _ = compare_report
    import json as _json

    from autointerp.report.writer import write_report as wr

    index = wr(paths, label_set="v2")
    assert index == paths.with_label_set("v2").report / "index.html"
    text = index.read_text()
    manifest = _json.loads(text.split('id="autointerp-manifest">', 1)[1].split("</script>", 1)[0])
    assert manifest["label_set"] == "v2"
    [c] = manifest["comparisons"]
    assert (c["set_a"], c["set_b"]) == ("v2", "default") and c["scorers"][0]["mean_diff"] == pytest.approx(-0.225)
    assert "<img" not in text.split("<body>", 1)[0]  # the hostile label is escaped JSON in the head
    assert _json.loads(wr(paths, label_set="v2", compare=[]).read_text().split('id="autointerp-manifest">', 1)[1]
                       .split("</script>", 1)[0])["comparisons"] == []


# -- the label's history: refinement rounds and the neighbour pass (issue 13) --------------


def js_fmt3(x: float) -> str:
    """What report.js's fmt(x, 3) prints for a number from 1e-3 to 1e4."""
    v = float(f"{x:.3g}")
    return str(int(v)) if v.is_integer() else repr(v)


@pytest.fixture(scope="module")
def refined_report(tmp_path_factory):
    from report_fixture import make_refined_run

    paths, keys, hostile, neighbour, _ = make_refined_run(tmp_path_factory.mktemp("runs"))
    return paths, keys, hostile, neighbour, write_report(paths)


def _no_harm(page):
    assert page.evaluate("window.__pwned") is None and page.locator("img").count() == 0 and page.dialogs == []
    assert page.locator("#app script").count() == 0
    seen = page.evaluate("() => document.body.innerText + [...document.querySelectorAll('[title]')].map(e => e.title).join('\\n')")
    assert not any(c in seen for c in BIDI_CHARS), [hex(ord(c)) for c in seen if c in BIDI_CHARS]
    assert not page.errors and all(u.startswith("file://") for u in page.requests)


def test_refinement_rounds_show_scores_the_kept_one_and_what_each_was_shown(page, refined_report):
    from urllib.parse import quote

    from report_fixture import HOSTILE_REVISION

    from autointerp.records import read_refinement

    paths, keys, hostile, _, index = refined_report
    hist = read_refinement(paths)[hostile]
    first, revision = hist.rounds
    _open(page, index, "#c/" + quote(hostile))
    page.wait_for_selector("#refinement-rounds tbody tr")
    rows = page.locator("#refinement-rounds tbody tr")
    assert rows.count() == 2
    # the hostile revision validated worse: round 0 is kept
    assert revision.score < first.score
    assert page.locator("#refinement-rounds tr.kept").get_attribute("data-round") == "0"
    c0, c1 = (rows.nth(i).locator("td").all_text_contents() for i in (0, 1))
    assert c0[:4] == ["0", "candidate · kept", first.label, js_fmt3(first.score)], c0
    assert c1[1] == "revision" and c1[3] == js_fmt3(revision.score), c1
    assert c1[2] == HOSTILE_REVISION.replace("\u202E", "⟨U+202E⟩"), c1  # text, with its override shown
    m0 = sum(e["miss"] for e in first.wrong)
    f0 = sum(e["false_positive"] for e in first.wrong)
    assert c0[-2].startswith(f"{m0} miss") and f"{f0} false positive" in c0[-2] and f"in {first.n_windows} windows" in c0[-2]
    assert c1[-1] == f"round 0's {m0} {'miss' if m0 == 1 else 'misses'}, {f0} false positive{'' if f0 == 1 else 's'}", c1
    # the windows it was shown are built only when asked for
    det = page.locator("details.shown-windows[data-round='1']")
    shown = hist.shown[1]
    assert f"{len(shown['misses'])} of {m0} misses" in det.locator("summary").inner_text()
    assert page.locator(".shown-window").count() == 0
    det.locator("summary").click()
    expect(page.locator(".shown-window")).to_have_count(len(shown["misses"]) + len(shown["false_positives"]))
    # each window's outlined tokens are the ones the labeller was told it missed
    for i, w in enumerate(shown["misses"]):
        line = page.locator(".shown-misses .shown-window").nth(i)
        marked = line.locator(".tok.marked").all_text_contents()
        assert marked == [w["tokens"][j].replace(" ", "·") for j in w["marked"]], (marked, w)
        assert "".join(line.locator(".tok").all_text_contents()).replace("·", " ") == "".join(w["tokens"])
    assert "because " + INJECT_IMG in page.locator("#refinement-rounds td.label").nth(1).get_attribute("title")
    _no_harm(page)


def test_a_neighbour_pass_label_shows_what_the_first_pass_said(page, refined_report):
    from urllib.parse import quote

    from report_fixture import HOSTILE_NEIGHBOUR

    from autointerp.records import read_first_pass

    paths, _, _, neighbour, index = refined_report
    first = read_first_pass(paths)[neighbour]
    _open(page, index, "#c/" + quote(neighbour))
    page.wait_for_selector("#component .comp-label")
    want = HOSTILE_NEIGHBOUR.replace("\u2067", "⟨U+2067⟩").replace("\u2069", "⟨U+2069⟩")
    assert page.locator("h2.comp-label").inner_text() == want
    assert "Second pass" in page.locator(".passes").inner_text()
    assert page.locator("q.first-pass").inner_text() == first.label
    # the first pass was the refined label: its rounds are still shown, the kept one marked
    kept = page.locator("#refinement-rounds tr.kept")
    assert kept.get_attribute("data-round") == str(first.refinement.chosen_round)
    assert kept.locator("td.label").inner_text() == first.label
    _no_harm(page)


# -- per-layer thresholds and the output scorer's trials --------------------------------------


@pytest.fixture(scope="module")
def threshold_output_report(tmp_path_factory):
    from concurrent.futures import ThreadPoolExecutor

    from report_fixture import make_threshold_output_run

    # scored in a thread of its own: under playwright's running event loop, run_coroutine_sync would score
    # in another thread, where the lazily loaded harvest's SQLite index (opened here) cannot be used
    with ThreadPoolExecutor(1) as pool:
        paths = pool.submit(make_threshold_output_run, tmp_path_factory.mktemp("runs")).result()
    return paths, write_report(paths)


def test_the_firing_threshold_line_names_each_layers_threshold(page, threshold_output_report):
    _, index = threshold_output_report
    _open(page, index)
    facts = page.locator(".facts")
    terms = facts.locator("dt").all_text_contents()
    line = facts.locator("dd").nth(terms.index("firing threshold")).inner_text()
    assert line == "h.0.mlp: activation > 0; h.1.mlp: activation > 0.75", line
    assert not page.errors


def test_output_trials_show_the_candidate_lists_as_text(page, threshold_output_report):
    from autointerp.records import read_scores
    from autointerp.report.tokens import single_token_text

    paths, index = threshold_output_report
    key = "h.0.mlp:2"
    res = read_scores(paths)["output"][key]["label"]
    _open(page, index, "#c/" + key.replace(":", "%3A"))
    page.wait_for_selector(".output-trial")
    trials = page.locator(".output-trial")
    assert trials.count() == len(res.details["trials"]) == 2
    for ti, (t, lists) in enumerate(zip(res.details["trials"], res.details["windows"])):
        items = trials.nth(ti).locator("li.candidate")
        assert items.count() == len(lists)
        assert items.nth(t["truth"]).get_attribute("class").split()[:2] == ["candidate", "truth"]
        assert "picked" in items.nth(t["answer"]).get_attribute("class")
        for li, ref in enumerate(lists):
            shown = items.nth(li).locator("code.cand-tok").all_text_contents()
            visible = [single_token_text(tok, "gpt2").replace(" ", "·").replace("\n", "↵") for tok in ref["tokens"]]
            assert shown == visible, (shown, visible)
    text = page.locator(".panel.output-trials").inner_text()
    assert not any(c in text for c in "ĠÃÐÑ"), text  # GPT-2's byte letters never show
    assert INJECT_IMG.replace(" ", "·") in text  # a hostile vocabulary token is a token, shown as text
    _no_harm(page)


def test_the_viewer_reads_every_window_as_display_tokens(page, tmp_path):
    """The chunks hold raw tokens and a per-chunk table of token forms and bytes; the viewer joins
    them back (report.js ``expandChunk``, UTF-8 runs through TextDecoder). For every token style,
    windows of tokens that read alone and of partial characters (split, stray, a BOM, a space byte
    first in a SentencePiece window) must show exactly what `display_tokens` renders."""
    import json
    import random

    from test_report_chunks import ALPHABETS, _component

    from autointerp.report import RunData, write_report_from_data
    from autointerp.report.tokens import display_tokens

    rng = random.Random(7)
    for style, alphabet in sorted(ALPHABETS.items()):
        windows = [[t] for t in alphabet] + [[rng.choice(alphabet) for _ in range(rng.randint(1, 10))] for _ in range(40)]
        comp = _component("h.0:0", windows, alphabet)
        # an example that recorded no token strings shows its ids
        comp["examples"].append({"token_ids": [3, 4], "activations": [0.0, 1.0], "firing_offset": 1,
                                 "sequence_index": 0, "position": 1, "tokens": None})
        config = {"layers": [{"name": "h.0", "width": 1}]}
        index = write_report_from_data(RunData(config, [comp]), tmp_path / style, token_style=style)
        _open(page, index, "#c/h.0%3A0")
        page.wait_for_selector("#component .example")
        shown = page.eval_on_selector_all(
            "#component .examples.top .example, #component .examples.random .example",
            "els => els.map(e => Array.from(e.querySelectorAll('.tok')).map(s => s.title.split('\\n').slice(1).join('\\n')))")
        want = [display_tokens(w, style) for w in windows] + [["⟨3⟩", "⟨4⟩"]]
        assert [[json.loads(t) for t in ex] for ex in shown] == want, style
    assert not page.errors
