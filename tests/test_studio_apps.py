"""The studio's business pages in headless Chromium (Debian's `chromium`, driven by Playwright):
the assistant answers a FAQ question with a citation that opens its chunk, and a request for a
person lands in the hand-off queue; the copy desk shows candidates with the banned claim marked in
the text and records shown / chosen events. The copy desk's language model is stubbed (the server
runs in this process), so nothing large is loaded."""

from __future__ import annotations

import csv
import os

import pytest

from helpers import LiveServer
from test_studio import CHROMIUM, open_page

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                reason="Debian's chromium is not installed (`make test` installs it as root)")

FAQ = [
    ("如何申请退货？", "收到商品后7天内可在订单页面申请无理由退货。"),
    ("发货需要多久？", "下单后48小时内发货，偏远地区顺延。"),
    ("可以开发票吗？", "可以，在订单详情页申请电子发票。"),
    ("How long is the warranty?", "All devices carry a 12-month warranty from the delivery date."),
]
PRODUCT = {"类型": "衬衫", "材质": "亚麻", "颜色": "米白"}
DRAFTS = ["这款米白色亚麻衬衫是今夏最好的选择，透气舒适，通勤休闲都合适，洗后不易变形，穿着轻盈凉爽，适合炎热的天气，也适合出差旅行时携带。",
          "米白亚麻衬衫，面料透气，版型宽松，日常通勤与周末出游皆宜，简单百搭，洗后平整，是衣橱里实用的一件基础款单品，搭配牛仔裤或半身裙都好看。"]


@pytest.fixture(scope="module")
def apps_ws(tmp_path_factory):
    """A workspace with knowledge base "help": a 4-entry FAQ."""
    import aigc
    from aigc.apps import assistant

    root = tmp_path_factory.mktemp("apps")
    faq = root / "faq.csv"
    with open(faq, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["question", "answer"])
        writer.writerows(FAQ)
    ws = aigc.open_workspace(root / "ws")
    assistant.kb_add("help", [faq], workspace=ws)
    return ws


@pytest.fixture()
def page(apps_ws):
    with LiveServer(apps_ws) as server, open_page(server.url) as pg:  # fails on any JS error of the page
        yield pg


def test_assistant_cites_its_source_and_hands_off_on_request(page, apps_ws):
    from aigc.apps import assistant

    page.click("button[data-tab=assist]")
    page.wait_for_selector("#kb-select option[value=help]", state="attached")
    page.fill("#chat-input", "发货需要多久？")
    page.click("#chat-send")
    page.wait_for_selector("#chat .msg.bot:not(.pending)", timeout=30_000)
    answer = page.locator("#chat .msg.bot").last
    assert answer.locator(".text a.cite").count() == 1, answer.inner_html()
    assert "48小时内发货" in answer.locator(".text").text_content()
    answer.locator(".text a.cite").first.click()
    page.wait_for_selector("#chunk-panel:not([hidden]) .chunk-text")
    assert page.text_content("#chunk-panel .chunk-title") == "发货需要多久？"
    assert page.text_content("#chunk-panel .chunk-text") == FAQ[1][1]
    assert page.text_content("#chunk-panel mark.quote") == FAQ[1][1]  # the quoted words, highlighted
    assert "faq.csv" in page.text_content("#chunk-panel .chunk-meta")

    page.fill("#chat-input", "转人工")
    page.click("#chat-send")
    page.wait_for_selector("#chat .msg.bot .handoff-notice", timeout=30_000)
    page.wait_for_selector("#handoff-table tbody tr[data-id] td.question:text-is('转人工')")
    rows = assistant.handoffs("help", workspace=apps_ws)
    assert rows and rows[0]["question"] == "转人工"
    # the page sent the conversation so far: the first question went with the hand-off
    assert [t["content"] for t in rows[0]["conversation"]][0] == "发货需要多久？"
    page.click(f"#handoff-table tr[data-id='{rows[0]['id']}'] button.handoff-close")
    page.wait_for_selector(f"#handoff-table tr[data-id='{rows[0]['id']}']", state="detached")
    assert assistant.handoffs("help", workspace=apps_ws) == []


def test_copy_page_marks_the_banned_claim_and_records_events(page, apps_ws, monkeypatch):
    from aigc.apps.copy import experiments
    from aigc.apps.copy.desk import Desk

    # the instruct model is stubbed: fixed drafts, fixed fluency scores (the server runs in this process)
    monkeypatch.setattr(Desk, "drafts", lambda self, prompt, n, max_new_tokens, seed: DRAFTS[:n])
    monkeypatch.setattr(Desk, "model_scores", lambda self, prompt, texts: [-1.0 - 0.1 * i for i in range(len(texts))])
    page.click("button[data-tab=copy]")
    page.wait_for_function("document.querySelector('#copy-rules').value.includes('banned_claims')")
    for i, (k, v) in enumerate(PRODUCT.items()):
        if i:
            page.click("#copy-add-attr")
        page.locator("#copy-attrs .attr-key").nth(i).fill(k)
        page.locator("#copy-attrs .attr-value").nth(i).fill(v)
    page.fill("#copy-n", "2")
    page.click("#copy-generate")
    page.wait_for_selector("#copy-cands[data-shown='2']", timeout=30_000)
    cards = page.locator("#copy-cands .copy-card")
    assert cards.count() == 2
    flagged = page.locator("#copy-cands .copy-card:has(mark.violation)")
    assert flagged.count() == 1
    mark = flagged.locator("mark.violation").first
    assert mark.text_content() == "最好" and mark.get_attribute("data-rule") == "banned_claim"
    text = flagged.locator(".copy-text").text_content()
    assert text.startswith(DRAFTS[0]) and text[text.index("最好") - 2:text.index("最好")] == "今夏"
    assert flagged.locator(".badge.failed").count() == 1
    assert page.locator("#copy-cands .copy-card .badge.passed").count() == 1

    experiment = page.get_attribute("#copy-cands", "data-experiment")
    seen = experiments.counts(apps_ws, experiment)
    assert len(seen) == 2 and all(v["shown"] == 1 for v in seen.values())
    best = cards.first
    best.locator("button.copy-choose").click()
    page.wait_for_selector("#copy-cands .copy-card.chosen")
    seen = experiments.counts(apps_ws, experiment)
    assert seen[best.get_attribute("data-id")]["successes"] == 1
    assert sum(v["successes"] for v in seen.values()) == 1

    with page.expect_download() as dl:
        best.locator("button.copy-export").click()
    exported = open(dl.value.path(), encoding="utf-8").read()
    assert exported == best.locator(".copy-text").text_content() + "\n【AI生成】\n"  # Chinese copy, Chinese label
