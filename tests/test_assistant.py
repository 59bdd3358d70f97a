"""The customer-service assistant: answers with citations, asking back, hand-offs, calibration,
the CLI, the HTTP routes and the official ``openai`` client talking to ``kb:NAME``."""

from __future__ import annotations

import json

import pytest

import aigc
from aigc.apps import assistant
from aigc.apps.assistant.answer import check_question, sentences
from aigc.apps.assistant.confidence import confidence, fit_calibration
from aigc.apps.assistant.handoff import wants_person
from aigc.errors import InvalidInput, NotFound

FAQ = """question,answer
How long do I have to return an item?,You can return unused items within 30 days of delivery. Refunds reach your original payment method within 5 business days.
退货需要多久退款？,我们收到退货后5个工作日内退款到原支付账户。
How do I reset my password?,Click Forgot password on the sign-in page and follow the link we e-mail you. The link expires after 24 hours.
发票怎么开？,下单时在结算页选择开具发票。电子发票会在发货后3天内发送到您的邮箱。
What is SKU LM-1029?,"LM-1029 is the linen throw blanket in off-white, 130 x 170 cm."
"""
CARE = """# Care guide
## Linen
Wash linen at 30 degrees on a gentle cycle. Do not tumble dry; hang it in the shade. Iron while slightly damp.
## Ceramics
Our stoneware is dishwasher safe. Avoid sudden temperature changes, which can crack the glaze.
"""


@pytest.fixture(scope="module")
def kb_ws(tmp_path_factory):
    root = tmp_path_factory.mktemp("kbws")
    (root / "faq.csv").write_text(FAQ, encoding="utf-8")
    (root / "care.md").write_text(CARE, encoding="utf-8")
    ws = aigc.open_workspace(root / "ws")
    assistant.kb_add("help", [root / "faq.csv", root / "care.md"], workspace=ws)
    return ws


def test_faq_question_gets_the_curated_answer_with_a_citation_on_every_sentence(kb_ws):
    r = assistant.ask("help", "How long do I have to return an item?", workspace=kb_ws)
    assert r["mode"] == "faq" and not r["handoff"]
    assert "30 days" in r["answer"]
    assert r["citations"][0]["doc"] == "faq.csv"
    assert all("[1]" in r["answer"][a:b] for a, b in sentences(r["answer"]))


def test_document_question_is_answered_from_the_chunk_that_says_it(kb_ws):
    r = assistant.ask("help", "how should I wash my linen sheets?", workspace=kb_ws)
    assert r["mode"] == "extractive"
    assert "30 degrees" in r["answer"]
    assert r["citations"][0]["chunk_id"].startswith("care.md#")
    assert r["citations"][0]["quote"] in r["citations"][0]["text"]


def test_sku_finds_its_entry(kb_ws):
    hits = assistant.search("help", "LM-1029", k=3, workspace=kb_ws)
    assert "LM-1029" in hits[0]["text"]


def test_asking_for_a_person_hands_off_at_once_and_is_queued(kb_ws):
    before = len(assistant.handoffs("help", workspace=kb_ws))
    r = assistant.ask("help", "我要转人工", workspace=kb_ws)
    assert r["handoff"] and r["reason"] == "requested"
    rows = assistant.handoffs("help", workspace=kb_ws)
    assert len(rows) == before + 1 and rows[0]["reason"] == "requested"
    assistant.close_handoff(rows[0]["id"], workspace=kb_ws)
    assert len(assistant.handoffs("help", workspace=kb_ws)) == before


def test_off_topic_question_asks_back_then_hands_off(kb_ws):
    q = "What will the weather be in Paris tomorrow?"
    first = assistant.ask("help", q, workspace=kb_ws)
    assert first["clarify"] and not first["handoff"] and first["suggestions"]
    second = assistant.ask("help", q, workspace=kb_ws, history=[
        {"role": "user", "content": q}, {"role": "assistant", "content": first["answer"]}])
    assert second["handoff"] and second["reason"] == "low_confidence"


def test_phone_number_in_a_hand_off_is_not_stored(kb_ws):
    assistant.ask("help", "human agent please, call me at 13812345678", workspace=kb_ws)
    row = assistant.handoffs("help", workspace=kb_ws)[0]
    assert "13812345678" not in row["question"] and "13812345678" not in json.dumps(row["conversation"])


@pytest.mark.parametrize("question, message", [
    ("", "empty"), ("🙂🙂", "no words"), ("ᏣᎳᎩ ᎦᏬᏂᎯᏍᏗ ᏗᎧᎾᎵᏍᏔᏅ", "script"), ("x" * 2001, "at most")])
def test_bad_questions_say_what_is_wrong(question, message):
    with pytest.raises(InvalidInput, match=message):
        check_question(question)


def test_handoff_phrases():
    assert wants_person("转人工") and wants_person("Can I talk to a human?") and wants_person("agent please")
    assert not wants_person("人工智能生成的文案可以商用吗") and not wants_person("how do I return a lamp")


def test_calibration_reaches_the_asked_precision():
    import numpy as np

    rng = np.random.default_rng(0)
    good = np.c_[rng.normal(0.9, 0.02, 60), rng.normal(0.08, 0.02, 60)]
    bad = np.c_[rng.normal(0.8, 0.02, 60), rng.normal(0.02, 0.01, 60)]
    cal = fit_calibration(np.r_[good, bad], np.r_[np.ones(60, bool), np.zeros(60, bool)], precision=0.95)
    answered = np.array([confidence(f, cal) for f in np.r_[good, bad]]) >= cal["threshold"]
    assert answered[:60].mean() > 0.9 and answered[60:].mean() < 0.1


def test_unknown_kb_and_settings(kb_ws):
    with pytest.raises(NotFound):
        assistant.ask("nope", "hello", workspace=kb_ws)
    with pytest.raises(InvalidInput, match="answer mode"):
        assistant.configure("help", workspace=kb_ws, mode="magic")
    conf = assistant.configure("help", workspace=kb_ws, webhook="http://127.0.0.1:9/hook")
    assert conf["webhook"] == "http://127.0.0.1:9/hook"
    assistant.configure("help", workspace=kb_ws, webhook=None)


def test_cli_ask_json_and_bad_input_exit_2(kb_ws, monkeypatch, capsys):
    from typer.testing import CliRunner

    from aigc.cli.main import app

    runner = CliRunner()
    res = runner.invoke(app, ["kb", "ask", "help", "发票怎么开？", "--json", "--workspace", str(kb_ws.root)])
    assert res.exit_code == 0, res.output
    reply = json.loads(res.stdout)
    assert set(reply) >= {"answer", "citations", "handoff", "confidence"} and "邮箱" in reply["answer"]
    res = runner.invoke(app, ["kb", "add", "help", "/nonexistent/file.csv", "--workspace", str(kb_ws.root)])
    assert res.exit_code == 2 and "Traceback" not in res.output


def test_http_ask_and_the_openai_client_chat_with_kb_name(kb_ws):
    import httpx
    import openai
    from helpers import LiveServer

    with LiveServer(kb_ws) as server:
        base = server.url

        r = httpx.post(f"{base}/api/kb/help/ask", json={"question": "How do I reset my password?"}, timeout=60)
        assert r.status_code == 200 and "24 hours" in r.json()["answer"]
        bad = httpx.post(f"{base}/api/kb/help/ask", json={"question": ""}, timeout=60)
        assert bad.status_code == 422 or bad.status_code == 400
        models = httpx.get(f"{base}/v1/models", timeout=30).json()["data"]
        assert "kb:help" in [m["id"] for m in models]
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="none")
        chat = client.chat.completions.create(model="kb:help", messages=[
            {"role": "user", "content": "How long do I have to return an item?"}])
        assert "30 days" in chat.choices[0].message.content
        assert chat.model_extra["citations"][0]["doc"] == "faq.csv"
        handed = client.chat.completions.create(model="kb:help", messages=[{"role": "user", "content": "转人工"}])
        assert handed.model_extra["handoff"] is True
        stream = client.chat.completions.create(model="kb:help", stream=True, messages=[
            {"role": "user", "content": "How do I reset my password?"}])
        chunks = list(stream)
        assert "24 hours" in "".join(c.choices[0].delta.content or "" for c in chunks)
        assert chunks[-1].choices[0].finish_reason == "stop"
        missing = httpx.post(f"{base}/v1/chat/completions", json={"model": "kb:nope", "messages": [
            {"role": "user", "content": "hi"}]}, timeout=30)
        assert missing.status_code == 404 and missing.json()["error"]["param"] == "model"


def test_a_handoff_is_posted_to_the_webhook(kb_ws):
    import time

    from helpers import WebhookSink

    with WebhookSink() as sink:
        try:
            assistant.configure("help", workspace=kb_ws, webhook=sink.url)
            assistant.ask("help", "talk to a human", workspace=kb_ws)
            got = sink.wait()
            assert got and got[0]["event"] == "handoff" and got[0]["reason"] == "requested"
            assert got[0]["conversation"][-1]["content"] == "talk to a human"
            deadline = time.time() + 10
            while time.time() < deadline and assistant.handoffs("help", workspace=kb_ws)[0]["delivered"] is None:
                time.sleep(0.05)
            assert assistant.handoffs("help", workspace=kb_ws)[0]["delivered"] == "200"
        finally:
            assistant.configure("help", workspace=kb_ws, webhook=None)


def test_upload_adds_a_document_and_a_too_large_one_is_a_4xx(kb_ws, monkeypatch):
    from fastapi.testclient import TestClient

    from aigc.server import Settings, create_app
    from aigc.server.routers import assistant as routes

    with TestClient(create_app(kb_ws, Settings())) as client:
        r = client.put("/api/kb/help/documents/extra.md", content="# Gift cards\nGift cards never expire.".encode())
        assert r.status_code == 200 and "extra.md" in r.json()["added"]
        assert client.post("/api/kb/help/ask", json={"question": "Do gift cards expire?"}).json()["citations"][0][
            "doc"] == "extra.md"
        monkeypatch.setattr(routes, "MAX_UPLOAD", 10)
        r = client.put("/api/kb/help/documents/big.md", content=b"# x\n" + b"y" * 100)
        assert 400 <= r.status_code < 500 and "MB" in r.json()["error"]["message"]
        r = client.put("/api/kb/help/documents/empty.md", content=b"")
        assert 400 <= r.status_code < 500
        assert "big.md" not in client.get("/api/kb/help").json()["files"]
        assert client.delete("/api/kb/help/documents/extra.md").status_code == 200
