"""The web studio in headless Chromium (Debian's `chromium`, driven by Playwright): type a
prompt, watch the text stream in, give a thumbs-up and find it in the log, and make an
image grid; on the run page, read the evaluation, the loss chart and the sample grids off the page."""

from __future__ import annotations

import os
import shutil
import time
from contextlib import contextmanager

import pytest

from aigc import logbook
from aigc.server import Settings

from helpers import LiveServer, never_ending_text

CHROMIUM = os.environ.get("AIGC_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                reason="Debian's chromium is not installed (`make test` installs it as root)")
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def page_url(served_ws):
    with LiveServer(served_ws, Settings(max_tokens=5000)) as server:
        yield server.url


@contextmanager
def open_page(url):
    """The studio at ``url`` in headless Chromium; fails the test if the page threw a JS error."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        context = browser.new_context(locale="en-US", viewport={"width": 1200, "height": 900})
        pg = context.new_page()
        errors = []
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.goto(url)
        yield pg
        browser.close()
        assert not errors, errors


@pytest.fixture()
def page(page_url):
    with open_page(page_url) as pg:
        yield pg


def ask(page, prompt: str, max_tokens: int, seed: int, **fields: str) -> None:
    """Run g, fruit=apple, in the playground with these settings (and any other field by id)."""
    page.select_option("#run-select", "g")
    page.select_option("#cond-box select[data-cond=fruit]", "apple")
    page.fill("#prompt", prompt)
    page.fill("#max-tokens", str(max_tokens))
    page.fill("#seed", str(seed))
    for field, value in fields.items():
        page.fill(f"#{field}", value)
    page.click("#generate")


def test_prompt_streams_text_and_thumbs_up_lands_in_the_log(page, served_ws):
    ask(page, "apple", 60, 7)
    page.wait_for_function("document.querySelector('#output-0') && "
                           "document.querySelector('#output-0').textContent.length > 'apple'.length")
    page.wait_for_selector("#thumb-up-0:not([disabled])", timeout=30_000)
    out = page.text_content("#output-0")
    assert out.startswith("apple") and len(out) > len("apple")
    page.click("#thumb-up-0")
    page.wait_for_selector("#feedback-status-0:has-text('saved')")
    rows = [g for g in logbook.list_generations(served_ws, run="g", limit=20) if g["up"] == 1]
    assert any(out[len("apple"):] == g["output"]["texts"][0] for g in rows)
    page.click("button[data-tab=log]")
    page.wait_for_selector("#log-table tbody tr")
    assert page.locator("#log-table tbody tr td.up", has_text="1").count() >= 1


def test_best_of_n_reranks_through_the_server_and_shows_the_pick(page, served_ws):
    ask(page, "", 30, 3, rerank="4")
    page.wait_for_selector("#thumb-up-0:not([disabled])", timeout=30_000)
    shown = page.text_content("#output-0")
    rows = [g for g in logbook.list_generations(served_ws, run="g", limit=20) if g["options"].get("rerank") == 4]
    assert rows and rows[0]["output"]["texts"][0] == shown  # the judge's pick, whole, as the server logged it
    assert " tokens · " in page.text_content("#stats-0")  # the stats line of a whole answer


def test_image_run_shows_a_grid_and_the_page_speaks_chinese(page):
    page.select_option("#run-select", "d")
    page.select_option("#class-select", "top")
    page.fill("#image-n", "4")
    page.fill("#steps", "2")
    page.click("#generate")
    page.wait_for_selector("#image-grid img >> nth=3", timeout=30_000)
    assert page.locator("#image-grid img").count() == 4
    page.click("#lang")
    assert page.text_content("#generate") == "生成" and page.text_content("button[data-tab=log]") == "生成记录"


def test_stop_button_ends_a_stream(page, served_ws, monkeypatch):
    never_ending_text(monkeypatch, served_ws)  # a stream that only the stop button ends
    page.select_option("#run-select", "g")
    page.fill("#prompt", "apple")
    page.fill("#max-tokens", "5000")
    page.fill("#temperature", "1.5")
    page.fill("#seed", "")
    page.click("#generate")
    page.wait_for_function("document.querySelector('#output-0') && "
                           "document.querySelector('#output-0').textContent.length > 5")
    page.click("#stop")
    page.wait_for_selector("#generate:not([disabled])", timeout=10_000)
    assert page.text_content("#stats-0") == "stopped"
    page.wait_for_selector("#thumb-up-0:not([disabled])")  # a stopped output can still be rated
    deadline = time.time() + 10  # the engine drops it at its next step, then writes the row
    while logbook.list_generations(served_ws, run="g", limit=1)[0]["status"] != "cancelled" and time.time() < deadline:
        time.sleep(0.05)
    assert logbook.list_generations(served_ws, run="g", limit=1)[0]["status"] == "cancelled"


# -- the run page: what `aigc eval` wrote, read off the page ------------------------------------------

MARKUP = "<img src=x onerror=window.__pwned=1>"  # a condition value that is also HTML


def js_number(v) -> str:
    """The page's number format (app.js fmtNum): whole numbers with thousands commas, else 4
    significant digits without trailing zeros."""
    if float(v).is_integer() or abs(v) >= 1000:
        return f"{round(v):,}"
    return repr(float(f"{v:.4g}"))


@pytest.fixture(scope="module")
def evaluated_ws(tmp_path_factory):
    """A text run "t" whose condition values include markup and an image run "d", both evaluated;
    "t"'s eval.json gets one section the page has no code for."""
    import csv
    import json

    import aigc

    from helpers import write_blocks_npz

    root = tmp_path_factory.mktemp("evaluated")
    with open(root / "f.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["text", "fruit"])
        writer.writeheader()
        for i in range(120):
            words = ["apple", "red", "sweet"] if i % 2 == 0 else ["猕猴桃", "绿色", "酸甜"]
            writer.writerow({"text": " ".join(words[(i + j) % 3] for j in range(3 + i % 7)) + f" {i}",
                             "fruit": "apple" if i % 2 == 0 else MARKUP})
    ws = aigc.open_workspace(root / "ws")
    aigc.ingest(root / "f.csv", "fruit", workspace=ws, text_column="text", cond_columns=["fruit"])
    aigc.train("fruit", family="gpt", preset="tiny", name="t", workspace=ws, max_steps=20, eval_every=5)
    aigc.evaluate("t", workspace=ws, n_prompts=4, n_samples=4, max_new_tokens=16)
    path = ws.run_path("t") / "eval.json"
    ev = json.loads(path.read_text(encoding="utf-8"))
    ev["a_new_section"] = {"fruit": {"accuracy": 0.8125, "ceiling": 0.96875, "per_value": {MARKUP: 0.75}}}
    path.write_text(json.dumps(ev, ensure_ascii=False), encoding="utf-8")
    aigc.ingest(write_blocks_npz(root / "blocks.npz"), "blocks", workspace=ws)
    aigc.train("blocks", family="diffusion", preset="tiny", name="d", workspace=ws, max_steps=8, eval_every=4,
               batch_size=8)
    aigc.evaluate("d", workspace=ws, n_samples=16, steps=2)
    return ws


@pytest.fixture()
def run_page(evaluated_ws):
    with LiveServer(evaluated_ws) as server, open_page(server.url) as pg:
        yield pg


def open_run(page, name: str) -> None:
    page.click("button[data-tab=runs]")
    page.click(f"#runs-table tbody tr:has(td:text-is('{name}'))")
    page.wait_for_selector("#run-view")


def cell(page, section: str, row: str, col: str | None = None, view: str = "#eval") -> str:
    """The text of a row's value (or of its column ``col``) in a section of an evaluation (or of
    another ``view`` drawn the same way, the dataset card)."""
    rows = page.locator(f"{view} [data-section={section}] tr[data-key]")
    keys = [rows.nth(i).get_attribute("data-key") for i in range(rows.count())]
    assert row in keys, f"no row {row!r} in section {section!r}: {keys}"
    return rows.nth(keys.index(row)).locator(f"td[data-col={col}]" if col else "td").first.text_content()


def test_text_run_page_shows_every_evaluation_section_as_tables(run_page, evaluated_ws):
    import json

    ev = json.loads((evaluated_ws.run_path("t") / "eval.json").read_text(encoding="utf-8"))
    open_run(run_page, "t")
    likelihood = ev["likelihood"]
    assert cell(run_page, "likelihood", "perplexity") == js_number(likelihood["perplexity"])
    assert cell(run_page, "likelihood", "bits_per_char") == js_number(likelihood["bits_per_char"])
    assert cell(run_page, "continuation", "bleu") == js_number(ev["continuation"]["bleu"])
    assert cell(run_page, "continuation", "chrf") == js_number(ev["continuation"]["chrf"])
    assert cell(run_page, "example", "generated") == ev["continuation"]["example"]["generated"]
    for k in (1, 2, 3):
        assert cell(run_page, "diversity", f"distinct_{k}") == js_number(ev["diversity"][f"distinct_{k}"])
    assert cell(run_page, "memorization", "spans") == js_number(ev["memorization"]["spans"])
    assert set(ev["by_condition"]) == {"fruit=apple", f"fruit={MARKUP}"}
    for key, row in ev["by_condition"].items():  # the per-condition table: one row per condition
        assert cell(run_page, "by_condition", key, "bits_per_char") == js_number(row["bits_per_char"])
        assert cell(run_page, "by_condition", key, "n_test") == js_number(row["n_test"])
    # a section the page has no code for shows as a table too, nested values as tables in its cells
    assert cell(run_page, "a_new_section", "fruit", "accuracy") == "0.8125"
    assert cell(run_page, "a_new_section", "fruit", "ceiling") == "0.9688"
    run_page.click("#lang")  # Chinese labels, same numbers
    assert run_page.text_content("#eval [data-section=likelihood] tr[data-key=perplexity] th") == "困惑度（每词元）"
    assert cell(run_page, "likelihood", "perplexity") == js_number(likelihood["perplexity"])


def test_loss_chart_has_a_log_axis_and_a_marker_per_validation(run_page, evaluated_ws):
    import json
    import math

    rows = [json.loads(line) for line in (evaluated_ws.run_path("t") / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in rows if "val_loss" in r]
    open_run(run_page, "t")
    chart = run_page.locator("#loss-curve")
    assert chart.get_attribute("data-scale") == "log"
    ticks = run_page.locator("#loss-curve text.tick-y")
    ys = {float(ticks.nth(i).get_attribute("data-value")): float(ticks.nth(i).get_attribute("y"))  # label y = line + 4
          for i in range(ticks.count())}
    assert len(ys) >= 3
    (a, ya), (b, yb) = sorted(ys.items())[0], sorted(ys.items())[-1]
    per_decade = (ya - yb) / (math.log10(b) - math.log10(a))  # pixels per factor of 10
    for v, y in ys.items():  # every tick sits at its logarithm's place (unequal steps of a linear axis fail)
        assert y == pytest.approx(ya - (math.log10(v) - math.log10(a)) * per_decade, abs=0.6)
    points = run_page.locator("#loss-curve circle.val-point")
    assert points.count() == len(val) >= 2
    for i, r in enumerate(val):  # each validation loss drawn where the log axis puts it
        cy = float(points.nth(i).get_attribute("cy"))
        assert cy == pytest.approx(ya - 4 - (math.log10(r["val_loss"]) - math.log10(a)) * per_decade, abs=0.6)
        assert int(points.nth(i).get_attribute("data-step")) == r["step"]
    labels = [run_page.locator("#loss-curve text.tick-x").nth(i).text_content()
              for i in range(run_page.locator("#loss-curve text.tick-x").count())]
    assert str(val[-1]["step"]) in labels and run_page.locator("#loss-curve .axis-label").count() == 2


def test_user_data_on_the_run_page_is_text_never_markup(run_page):
    open_run(run_page, "t")
    heads = run_page.locator("#eval [data-section=by_condition] tbody th")
    assert f"fruit={MARKUP}" in [heads.nth(i).text_content() for i in range(heads.count())]
    assert MARKUP in run_page.text_content("#eval [data-section=a_new_section]")
    assert run_page.locator("#run-detail img").count() == 0  # the text run has no images: none was made
    run_page.click("button[data-tab=play]")  # the playground's condition menu lists it as text too
    run_page.select_option("#run-select", "t")
    assert MARKUP in run_page.locator("#cond-box select[data-cond=fruit] option").all_text_contents()
    assert run_page.evaluate("window.__pwned") is None


def test_dataset_card_shows_as_tables_with_user_values_as_text(run_page, evaluated_ws):
    import json

    card = json.loads((evaluated_ws.dataset_path("fruit") / "card.json").read_text(encoding="utf-8"))
    run_page.click("button[data-tab=datasets]")
    run_page.click("#datasets-table tbody tr:has(td:text-is('fruit'))")
    run_page.wait_for_selector("#card")
    assert cell(run_page, "overview", "text_column", view="#card") == "text"
    for key in ("read", "kept", "train", "val", "test"):
        assert cell(run_page, "counts", key, view="#card") == js_number(card["counts"][key])
    stats = card["condition_stats"]["fruit"]
    assert cell(run_page, "condition_stats", "fruit", "cardinality", view="#card") == js_number(stats["cardinality"]) == "2"
    assert MARKUP in run_page.text_content("#card [data-section=conditions]")  # a value, shown as text
    assert run_page.locator("#card pre").count() == 0  # no raw JSON left on the page
    assert run_page.evaluate("window.__pwned") is None


def test_image_run_page_shows_metrics_and_sample_grids_newest_first(run_page, evaluated_ws):
    import json

    ev = json.loads((evaluated_ws.run_path("d") / "eval.json").read_text(encoding="utf-8"))
    open_run(run_page, "d")
    for key in ("fid", "kid_mean", "precision", "recall", "conditional_accuracy", "fid_floor_train_vs_test"):
        assert cell(run_page, "metrics", key) == js_number(ev[key])
    assert cell(run_page, "classifier", "test_accuracy") == js_number(ev["classifier"]["test_accuracy"])
    run_page.wait_for_function("[...document.querySelectorAll('#run-view img.sheet')].length === 3 && "
                               "[...document.querySelectorAll('#run-view img.sheet')].every((i) => i.naturalWidth > 0)")
    grids = run_page.locator("#sample-grids img.sheet")
    assert [grids.nth(i).get_attribute("data-path") for i in range(grids.count())] == \
        ["samples/step-0000008.png", "samples/step-0000004.png"]
    assert run_page.locator("#sample-grids figcaption").first.text_content() == "step 8"


def test_a_long_tailed_condition_is_a_search_field_not_a_menu(run_page, evaluated_ws):
    """A column with more values than a menu can hold (authors, SKUs) becomes a text field with
    suggestions, and what is typed there is the condition sent."""
    import json

    path = evaluated_ws.run_path("t") / "run.json"
    original = path.read_text(encoding="utf-8")
    spec = json.loads(original)
    spec["conditions"]["fruit"] = sorted(spec["conditions"]["fruit"] + [f"sku-{i:03d}" for i in range(60)])
    path.write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    try:
        run_page.reload()  # the page read the runs when it opened
        run_page.click("button[data-tab=play]")
        run_page.wait_for_selector("#run-select option[value=t]", state="attached")
        run_page.select_option("#run-select", "t")
        field = run_page.locator("#cond-box input[data-cond=fruit]")
        assert field.count() == 1 and run_page.locator("#cond-box select[data-cond=fruit]").count() == 0
        options = run_page.locator(f"#{field.get_attribute('list')} option")
        assert options.count() == 62 and MARKUP in [options.nth(i).get_attribute("value") for i in range(62)]
        field.fill("apple")
        run_page.fill("#prompt", "a")
        with run_page.expect_request(lambda r: r.url.endswith("/api/generate")) as req:
            run_page.click("#generate")
        assert json.loads(req.value.post_data)["cond"] == {"fruit": "apple"}
    finally:
        path.write_text(original, encoding="utf-8")


def test_outputs_show_the_safety_verdict_and_the_policy_page_checks_text(page):
    ask(page, "apple", 20, 5)
    page.wait_for_selector("#safety-0 .badge", timeout=30_000)
    assert page.text_content("#safety-0 .badge") == "AI-generated"  # the visible label on every output
    page.click("button[data-tab=policy]")
    page.wait_for_function("document.querySelector('#policy-yaml').value.includes('categories:')")
    assert page.text_content("#policy-version").startswith("Policy 1-")
    page.fill("#policy-text", "教你刷单套现，日赚三千")
    page.click("#policy-check")
    page.wait_for_selector("#policy-result:has-text('Flagged')")
    assert "fraud" in page.text_content("#policy-result") or "illicit" in page.text_content("#policy-result")
    page.fill("#policy-text", "这款绿茶清香回甘")
    page.click("#policy-check")
    page.wait_for_selector("#policy-result:has-text('Allowed')")


def script_text(monkeypatch, ws, text: str, run: str = "g") -> None:
    """Make the engine's next text sample say ``text`` and end: each drawn token is forced to the next of
    ``text``'s tokens, then end-of-text. A tiny model neither echoes a phone number nor copies a whole
    training line on cue; the rails, the copy guard and the page run as they do on any output."""
    import torch

    import aigc
    import aigc.sampling as sampling_module

    tokenizer = aigc.load(run, workspace=ws).tokenizer
    queue = [*tokenizer.encode(text), tokenizer.eos_id]
    original = sampling_module.next_token_probs

    def forced(logits, *args, **kw):
        forced_logits = torch.full_like(logits, float("-inf"))
        forced_logits[:, queue.pop(0) if len(queue) > 1 else queue[0]] = 0.0
        return original(forced_logits, *args, **kw)

    # every token the engine draws goes through next_token_probs (as in helpers.never_ending_text)
    monkeypatch.setattr(sampling_module, "next_token_probs", forced)


def test_a_phone_number_is_redacted_and_the_copy_verdict_names_its_threshold(page, served_ws, monkeypatch):
    from aigc.data.dataset import read_text_split

    copied = max((r.text for r in read_text_split(served_ws.dataset_path("fruit"), "train")
                  if r.cond.get("fruit") == "apple"), key=len)
    assert len(copied) > 50  # longer than the default policy's copy-guard threshold
    script_text(monkeypatch, served_ws, f" 13812345678 {copied}")
    ask(page, "apple 13812345678", 200, 11)  # the prompt's phone number goes to the model (prompt: keep)
    page.wait_for_selector("#safety-0 .flag", timeout=30_000)
    row = logbook.list_generations(served_ws, run="g", limit=1)[0]
    copy = row["output"]["safety"][0]["copy"]
    assert copy["threshold"] == 50 and copy["length"] >= len(copied)
    shown = page.text_content("#output-0")
    assert shown.startswith("apple 13812345678") and shown.endswith(copied)
    generated = shown[len("apple 13812345678"):]
    assert "<CN_MOBILE>" in generated and "13812345678" not in generated  # the output rail replaced it
    flags = page.locator("#safety-0 .flag").all_text_contents()
    assert "Personal information redacted: CN_MOBILE ×1" in flags
    assert (f"Longest span copied from the training text: {copy['length']} characters "
            "(over the threshold of 50)") in flags


@pytest.fixture(scope="module")
def table_ws(tmp_path_factory):
    """A copula run "cop" on a small customer table whose category names hold markup."""
    import aigc

    from test_synthesis import write_people

    root = tmp_path_factory.mktemp("tables")
    ws = aigc.open_workspace(root / "ws")
    aigc.ingest(write_people(root / "people.csv"), "people", workspace=ws, split=(0.8, 0.1, 0.1))
    aigc.train("people", family="copula", preset="small", name="cop", workspace=ws)
    return ws


def test_synthesize_page_runs_a_job_and_shows_its_report(table_ws):
    with LiveServer(table_ws) as server, open_page(server.url) as pg:
        pg.click("button[data-tab=synth]")
        pg.wait_for_selector("#synth-run option[value=cop]", state="attached")
        pg.select_option("#synth-run", "cop")
        pg.fill("#synth-n", "150")
        pg.select_option("#synth-target", "member")
        pg.select_option("#synth-cond-box select[data-col=city]", "Shenzhen")
        pg.click("#synth-start")
        pg.wait_for_selector("#synth-report", state="attached", timeout=120_000)
        pg.wait_for_function("document.querySelector('#synth-report').srcdoc.includes('<svg')", timeout=60_000)
        assert "Quality" in pg.text_content("#synth-result")
        assert pg.locator("#synth-jobs tbody tr").count() == 1
        job = table_ws.root / "synthetic"
        data = next(job.glob("syn-*/synthetic.csv")).read_text(encoding="utf-8").splitlines()
        assert len(data) == 151 and all(",Shenzhen," in line for line in data[1:])
