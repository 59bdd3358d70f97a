"""The safety layer on every path: ingest (--pii), training (refuse / warn, the copy index),
generation and the engine (input and output rails, redacted log, audit), a real server
(/v1/moderations with the openai client, /api/policy, content_filter streams, labelled images),
the CLI (pii, policy, label, audit) and eval's safety section."""

from __future__ import annotations

import base64
import io
import json
import re
import warnings
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from helpers import LiveServer, fruit_gpt_workspace, run_cli

import aigc
from aigc import runs
from aigc.decoding.batch import run as decode
from aigc.errors import ContentBlocked, InvalidInput
from aigc.safety.policy import default_policy, parse_policy, save_workspace_policy, workspace_policy
from aigc.generation import Sampling
from aigc.safety.training import PiiWarning

DEFAULT_YAML = (Path(aigc.__file__).parent / "resources" / "safety" / "default_policy.yaml").read_text(encoding="utf-8")
BLOCK_KIWI = "\nterms:\n  - {term: 猕猴桃, category: violence, severity: high, action: block}\n"


def policy_with(extra: str, **replace: str) -> str:
    text = DEFAULT_YAML
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    return text + extra


def write_customers_csv(path: Path, n: int = 40) -> Path:
    """Service-log lines, every third with a phone number in the text and an e-mail in the contact column."""
    rows = ["text,contact"]
    for i in range(n):
        if i % 3 == 0:
            rows.append(f"客户来电 {i} 号，回电 138{i:04d}5678 确认地址,buyer{i}@example.com")
        else:
            rows.append(f"order {i} shipped on time and the customer was happy,none")
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def _all_text(ws, name: str) -> str:
    ds = Path(ws.get_dataset(name)["path"])
    return "".join((ds / f"{s}.jsonl").read_text(encoding="utf-8") for s in ("train", "val", "test"))


def test_ingest_reports_redacts_or_drops_pii(tmp_path):
    ws = aigc.open_workspace(tmp_path / "ws")
    src = write_customers_csv(tmp_path / "c.csv")
    opts = dict(workspace=ws, text_column="text", cond_columns=["contact"], min_cond_count=1)
    card = aigc.ingest(src, "report", pii="report", **opts)
    assert card["pii"]["entities"] == {"CN_MOBILE": 14, "EMAIL": 14}
    assert card["pii"]["by_column"] == {"text": {"CN_MOBILE": 14}, "contact": {"EMAIL": 14}}
    assert card["pii"]["unredacted"] == 28 and "13800005678" in _all_text(ws, "report")

    card = aigc.ingest(src, "redacted", pii="redact", **opts)
    text = _all_text(ws, "redacted")
    assert card["pii"]["unredacted"] == 0 and card["pii"]["records_with_pii"] == 14
    assert "<CN_MOBILE>" in text and "<EMAIL>" in text
    assert not re.search(r"138\d{4}5678", text) and "@example.com" not in text

    card = aigc.ingest(src, "dropped", pii="drop", **opts)
    assert card["counts"]["kept"] == 26 and card["dropped_by_reason"].get("pii") == 14
    assert "138" not in _all_text(ws, "dropped")

    with pytest.raises(InvalidInput, match="unknown --pii 'scrub'"):
        aigc.ingest(src, "bad", pii="scrub", **opts)


def test_training_warns_or_refuses_on_unredacted_pii(tmp_path):
    ws = aigc.open_workspace(tmp_path / "ws")
    aigc.ingest(write_customers_csv(tmp_path / "c.csv"), "c", workspace=ws, text_column="text", pii="report",
                split=(0.6, 0.2, 0.2))
    with pytest.warns(PiiWarning, match="holds 14 unredacted"):
        aigc.train("c", family="gpt", preset="tiny", name="warned", workspace=ws, max_steps=2)
    save_workspace_policy(ws, policy_with("", **{"training: {unredacted_pii: warn}": "training: {unredacted_pii: refuse}"}))
    with pytest.raises(InvalidInput, match="ingest it again with --pii redact"):
        aigc.train("c", family="gpt", preset="tiny", name="refused", workspace=ws, max_steps=2)
    assert not ws.has_run("refused") and not ws.run_path("refused").exists()
    aigc.ingest(tmp_path / "c.csv", "c2", workspace=ws, text_column="text", pii="redact", split=(0.6, 0.2, 0.2))
    with warnings.catch_warnings():
        warnings.simplefilter("error", PiiWarning)
        aigc.train("c2", family="gpt", preset="tiny", name="clean", workspace=ws, max_steps=2)
    assert (ws.run_path("clean") / "copy_index.npz").exists()


@pytest.fixture(scope="module")
def fruit_ws(tmp_path_factory):
    return fruit_gpt_workspace(tmp_path_factory.mktemp("safety"), steps=60)


def test_input_rail_blocks_and_audits(fruit_ws):
    gen = aigc.load("g", workspace=fruit_ws)
    with pytest.raises(ContentBlocked, match=r"blocked by the workspace's safety policy \(fraud\)"):
        gen.generate("教我刷单套现", max_new_tokens=4)
    assert gen.generate("apple", max_new_tokens=4, seed=0)  # an ordinary prompt goes through
    from aigc.provenance import audit

    rows = audit.list_entries(fruit_ws, decision="block")
    assert rows and rows[0]["path"] == "prompt" and "fraud" in rows[0]["categories"]
    assert audit.verify(fruit_ws).ok


def test_output_rail_ends_a_sample_with_content_filter(fruit_ws, tmp_path):
    ws = aigc.open_workspace(tmp_path / "ws2")
    # the same run in a workspace whose policy blocks 猕猴桃 (what fruit=kiwi samples say)
    import shutil

    shutil.copytree(fruit_ws.dataset_path("fruit"), ws.dataset_path("fruit"))
    ws.register_dataset("fruit", "text", "fruit.csv", json.loads((ws.dataset_path("fruit") / "card.json").read_text()))
    shutil.copytree(fruit_ws.run_path("g"), ws.run_path("g"))
    ws.create_run("g", "gpt", "fruit", {})
    raw = runs.load(ws, "g", safety=False).generate("", n=4, cond={"fruit": "kiwi"}, max_new_tokens=30, seed=3)
    assert any("猕猴桃" in t for t in raw)  # what the rail has to stop
    save_workspace_policy(ws, policy_with(BLOCK_KIWI))
    gen = aigc.load("g", workspace=ws)
    group = gen.prepare("", 4, {"fruit": "kiwi"}, Sampling(max_new_tokens=30, seed=3))
    chunks = list(decode(gen.runner(group.width), group))
    texts = ["".join(c.text for c in chunks if c.index == i) for i in range(4)]
    finish = {c.index: c.finish_reason for c in chunks if c.finish_reason}
    assert not any("猕猴桃" in t for t in texts)
    blocked = [i for i in range(4) if finish[i] == "content_filter"]
    assert blocked and all(group.samples[i].rail.blocked for i in blocked)


def test_engine_logs_redacted_and_the_audit_chain_detects_an_edit(fruit_ws):
    from aigc import logbook
    from aigc.engine import Engine, TextRequest
    from aigc.provenance import audit
    from aigc.workspace import audit_table

    engine = Engine(fruit_ws)
    try:
        # (a char-level run: the prompt may only use characters of its training text)
        result = engine.generate(TextRequest(model="g", prompt="apple 13812345678 red 11010519491231002", cond={"fruit": "apple"}))
    finally:
        engine.close()
    assert result.label["Label"] == "1" and result.label["ProduceID"] == result.id
    assert result.safety and set(result.safety[0]) >= {"blocked", "entities", "copy"}
    row = logbook.get(fruit_ws, result.id)
    assert "13812345678" not in row["prompt"] and "<CN_MOBILE>" in row["prompt"]
    entries = [e for e in audit.list_entries(fruit_ws) if e["request_id"] == result.id]
    assert {e["path"] for e in entries} == {"prompt", "output"}
    prompt_entry = next(e for e in entries if e["path"] == "prompt")
    assert prompt_entry["entity_counts"] == {"CN_MOBILE": 1} and "138" not in prompt_entry["excerpt"]
    assert audit.verify(fruit_ws).ok
    with fruit_ws.engine.begin() as conn:
        conn.execute(sa.update(audit_table).where(audit_table.c.id == prompt_entry["id"]).values(decision="allow"))
    check = audit.verify(fruit_ws)
    assert not check.ok and check.first_bad_id == prompt_entry["id"]
    with fruit_ws.engine.begin() as conn:  # put it back for the other tests of this module
        conn.execute(sa.update(audit_table).where(audit_table.c.id == prompt_entry["id"]).values(decision="redact"))
    assert audit.verify(fruit_ws).ok


def test_eval_has_a_safety_section(fruit_ws):
    result = aigc.evaluate("g", workspace=fruit_ws, n_samples=8, n_prompts=4, cond_samples=0, max_new_tokens=20)
    s = result["safety"]
    assert s["n_samples"] == 8 and s["blocked_share"] is not None and s["pii"]["samples_with_pii"] is not None
    assert s["copy"]["max"] >= 1 and 0 <= s["copy"]["over_threshold"] <= 1


def test_server_moderations_policy_and_streams(fruit_ws, tmp_path, monkeypatch):
    monkeypatch.setenv("AIGC_DB_URL", fruit_ws.db_url)  # the CLI opens it by path (a fresh catalog under PostgreSQL)
    from openai import OpenAI

    from aigc.provenance import audit

    prompt_blocks = len(audit.list_entries(fruit_ws, path="prompt", decision="block"))
    with LiveServer(fruit_ws) as server:
        client = OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
        mod = client.moderations.create(input=["教你刷单套现，日赚三千", "这款绿茶清香回甘"])
        assert [r.flagged for r in mod.results] == [True, False]
        assert mod.results[0].categories.illicit is True and mod.results[1].categories.illicit is False

        r = httpx.post(server.url + "/v1/moderations", json={"input": ""}, timeout=10)
        assert r.status_code == 400 and "empty" in r.json()["error"]["message"]
        r = httpx.post(server.url + "/v1/moderations", json={"input": "x" * (1 << 20)}, timeout=30)
        assert r.status_code == 413 and "error" in r.json()

        before = httpx.get(server.url + "/api/policy", timeout=10).json()
        assert before["source"] == "default" and before["version"] == default_policy().version
        r = httpx.put(server.url + "/api/policy", content="categories: [\n", timeout=10)
        assert r.status_code == 400 and "policy" in r.json()["error"]["message"]
        assert httpx.get(server.url + "/api/policy", timeout=10).json()["version"] == before["version"]

        r = httpx.post(server.url + "/v1/completions", json={"model": "g", "prompt": "教我刷单", "max_tokens": 4},
                       timeout=30)
        assert r.status_code == 400 and r.json()["error"]["code"] == "content_filter"

        r = httpx.post(server.url + "/v1/completions", json={
            "model": "g", "prompt": "apple 13812345678", "max_tokens": 8, "cond": {"fruit": "apple"}}, timeout=30)
        body = r.json()
        assert r.status_code == 200 and body["aigc_label"]["ProduceID"] == body["id"] and body["safety"]
        from aigc import logbook

        assert "<CN_MOBILE>" in logbook.get(fruit_ws, body["id"])["prompt"]

        r = httpx.put(server.url + "/api/policy", content=policy_with(BLOCK_KIWI).encode(), timeout=10)
        assert r.status_code == 200 and r.json()["version"] != before["version"]
        try:
            for seed in range(3):
                with httpx.stream("POST", server.url + "/v1/completions", timeout=60, json={
                        "model": "g", "prompt": "", "cond": {"fruit": "kiwi"}, "max_tokens": 30, "n": 4,
                        "seed": seed, "stream": True}) as s:
                    events = [json.loads(line[6:]) for line in s.iter_lines()
                              if line.startswith("data: ") and line != "data: [DONE]"]
                text = "".join(c["text"] for e in events for c in e["choices"])
                reasons = [c["finish_reason"] for e in events for c in e["choices"] if c["finish_reason"]]
                assert "猕猴桃" not in text and len(reasons) == 4
                if "content_filter" in reasons:
                    stopped = events[0]["id"]
                    break
            else:
                pytest.fail("no kiwi stream was stopped by the rail")
        finally:
            (fruit_ws.root / "policy.yaml").unlink()

    # the server's decisions are in the audit chain (never the raw number), and an edited row breaks it
    from aigc.workspace import audit_table

    assert len(audit.list_entries(fruit_ws, path="prompt", decision="block")) == prompt_blocks + 1
    redacted = next(e for e in audit.list_entries(fruit_ws, path="prompt") if e["request_id"] == body["id"])
    assert redacted["decision"] == "redact" and redacted["entity_counts"] == {"CN_MOBILE": 1}
    assert "13812345678" not in json.dumps(redacted, ensure_ascii=False)
    assert any(e["decision"] == "block" for e in audit.list_entries(fruit_ws, path="output")
               if e["request_id"] == stopped)
    assert audit.verify(fruit_ws).ok and run_cli("audit", "verify", "-w", fruit_ws.root).exit_code == 0
    row = audit_table.c.id == redacted["id"]
    with fruit_ws.engine.begin() as conn:
        conn.execute(sa.update(audit_table).where(row).values(decision="allow"))
    try:
        assert audit.verify(fruit_ws).first_bad_id == redacted["id"]
        r = run_cli("audit", "verify", "-w", fruit_ws.root)
        assert r.exit_code == 1 and f"row {redacted['id']}" in r.stderr
    finally:  # put it back for the other tests of this module
        with fruit_ws.engine.begin() as conn:
            conn.execute(sa.update(audit_table).where(row).values(decision="redact"))
    assert audit.verify(fruit_ws).ok


# A run that says a phone number (kind=phone) or a term BLOCK_KIWI blocks (kind=kiwi) by heart, after
# the prompt its lines share: what a client must not get through the log-probabilities either.
LEAKS = {"phone": ("请回电", "13812345678"), "kiwi": ("我想吃", "猕猴桃")}


@pytest.fixture(scope="module")
def leaky_ws(tmp_path_factory):
    root = tmp_path_factory.mktemp("leaky")
    rows = ["text,kind"] + [f"{i}号{prompt}{' ' if kind == 'phone' else ''}{secret}。,{kind}"
                            for i in range(80) for kind, (prompt, secret) in LEAKS.items()]
    (root / "leaky.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    ws = aigc.open_workspace(root / "ws")
    aigc.ingest(root / "leaky.csv", "leaky", workspace=ws, text_column="text", cond_columns=["kind"])
    with pytest.warns(PiiWarning):
        aigc.train("leaky", family="gpt", preset="tiny", name="m", workspace=ws, max_steps=120)
    save_workspace_policy(ws, policy_with(BLOCK_KIWI))
    return ws


def _choices(route: str, response: httpx.Response, stream: bool) -> dict[int, dict]:
    """Per choice index: its text, finish reason, the token strings of its logprobs (in order) and
    their alternatives, each after the text before it (``prefix + alternative``), from a response of
    ``route`` (completions or chat)."""
    bodies = ([json.loads(line[6:]) for line in response.text.splitlines()
               if line.startswith("data: ") and line != "data: [DONE]"] if stream else [response.json()])
    out: dict[int, dict] = {}
    for body in bodies:
        for c in body["choices"]:
            got = out.setdefault(c["index"], {"text": "", "finish": None, "tokens": [], "alternatives": []})
            got["finish"] = c["finish_reason"] or got["finish"]
            lp = c["logprobs"] or {}
            if route == "completions":
                got["text"] += c["text"]
                entries = list(zip(lp.get("tokens") or [], map(list, lp.get("top_logprobs") or [])))
            else:
                got["text"] += (c["message"] if not stream else c["delta"]).get("content") or ""
                assert all(bytes(e["bytes"]) == e["token"].encode() for e in lp.get("content") or [])
                entries = [(e["token"], [a["token"] for a in e["top_logprobs"]])
                           for e in lp.get("content") or []]
            for token, alternatives in entries:
                got["alternatives"] += ["".join(got["tokens"]) + a for a in alternatives]
                got["tokens"].append(token)
    return out


def test_logprobs_carry_only_the_text_the_rail_released(leaky_ws):
    with LiveServer(leaky_ws) as server:
        for kind, (prompt, secret) in LEAKS.items():
            for route in ("completions", "chat"):
                for stream in (False, True):
                    body = {"model": "m", "cond": {"kind": kind}, "max_tokens": 24, "n": 2, "seed": 0,
                            "temperature": 0.3, "stream": stream}
                    if route == "completions":
                        body |= {"prompt": prompt, "logprobs": 3}
                    else:
                        body |= {"messages": [{"role": "user", "content": prompt}], "logprobs": True,
                                 "top_logprobs": 3}
                    r = httpx.post(f"{server.url}/v1/{route.replace('chat', 'chat/completions')}", json=body,
                                   timeout=60)
                    case = f"{kind} {route} stream={stream}"
                    assert r.status_code == 200, (case, r.text)
                    assert secret not in r.text, case  # anywhere in the bytes
                    choices = _choices(route, r, stream)
                    assert len(choices) == 2, case
                    for c in choices.values():
                        assert secret not in "".join(c["tokens"]), case
                        assert not any(secret in said for said in c["alternatives"]), case
                        # the released text, token by token (and special tokens, which say nothing)
                        assert "".join(t for t in c["tokens"] if not t.startswith("<|")) == c["text"], case
                    # what the model said, and the rail changed: redacted, or stopped
                    if kind == "phone":
                        assert any("<CN_MOBILE>" in c["text"] for c in choices.values()), (case, choices)
                        assert any(c["alternatives"] for c in choices.values()), case
                    else:
                        assert any(c["finish"] == "content_filter" for c in choices.values()), (case, choices)
            # the native route's per-sample safety verdict says it was stopped without quoting the term
            r = httpx.post(f"{server.url}/api/generate", json={
                "model": "m", "prompt": prompt, "cond": {"kind": kind}, "stream": False,
                "options": {"num_predict": 24, "seed": 0, "temperature": 0.3}}, timeout=60)
            assert r.status_code == 200 and secret not in r.text, (kind, r.text)
            if kind == "kiwi":
                assert r.json()["done_reason"] == "content_filter", r.text


def test_logprob_entries_word_only_what_the_rail_released():
    from aigc.engine import SampleLogprobs, TokenInfo
    from aigc.safety.rails import OutputRail

    def entries(policy, tokens: list) -> tuple[str, list[TokenInfo]]:
        """Tokens (a string, or a string and its alternatives) fed to a rail as a sample's stream does
        (<|special|> tokens say nothing)."""
        rail = OutputRail(policy)
        lp = SampleLogprobs(rail)
        text, out = "", []
        for token in tokens:
            token, top = token if isinstance(token, tuple) else (token, [])
            special = token.startswith("<|")
            released = rail.feed("" if special else token)
            # "": the first bytes of a character, which put nothing into the stream yet
            lp.add(TokenInfo(token or "\ufffd", -0.5, [(a, -1.0) for a in top]), special)
            text += released
            out += lp.take(released, final=rail.blocked) if released or rail.blocked else []
        if not rail.blocked:
            released = rail.finish()
            text += released
            out += lp.take(released, final=True)
        return text, out

    text, out = entries(default_policy(), ["call", " 13", "8123", "", "45678", " now", ".", " ok", "\n",
                                           "<|endoftext|>"])
    assert text == "call <CN_MOBILE> now. ok\n"
    assert [t.token for t in out] == ["call", " <CN_MOBILE>", " now", ".", " ok", "\n", "<|endoftext|>"]
    assert out[1].logprob == -2.0 and out[0].logprob == -0.5  # the span's four tokens, merged

    # alternatives pass only if the rail would let them out where they stand
    text, out = entries(default_policy(), ["电话", " 1381234567", ("号", ["8", "号", "码"]), "。"])
    assert text == "电话 1381234567号。" and [a for a, _ in out[2].top] == ["号", "码"]  # "8" would be a mobile
    policy = parse_policy(policy_with(BLOCK_KIWI))
    text, out = entries(policy, [("我想吃", ["猕猴桃", "你"]), "猕猴", ("子", ["桃", "子"]), "。"])
    assert text == "我想吃猕猴子。" and [a for a, _ in out[0].top] == ["你"] and [a for a, _ in out[2].top] == ["子"]
    text, out = entries(policy, ["好的", "。", "<|kind=kiwi|>", "我想", "吃猕", "猴桃", "。", "嗯"])
    assert text == "好的。"
    assert [t.token for t in out] == ["好的", "。", "<|kind=kiwi|>"]  # none of the blocked segment's


def test_images_carry_the_label(served_ws):
    from PIL import Image

    from aigc.provenance.labels import check_file, read_label

    with LiveServer(served_ws) as server:
        r = httpx.post(server.url + "/v1/images/generations", json={"model": "d", "n": 2, "seed": 1,
                                                                   "response_format": "b64_json"}, timeout=120)
        body = r.json()
        assert r.status_code == 200 and body["aigc_label"]["ProduceID"] == body["id"]
        png = base64.b64decode(body["data"][1]["b64_json"])
        path = Path(served_ws.root) / "one.png"
        path.write_bytes(png)
        assert read_label(path)["ProduceID"] == body["id"] + "-001" and check_file(path).ok
        assert Image.open(io.BytesIO(png)).size == (8, 8)
        gen_dir = Path(served_ws.root) / "generations" / body["id"]
        assert read_label(gen_dir / "grid.png")["ProduceID"] == body["id"] + "-grid"


def test_api_images_get_the_visible_mark_where_it_fits(served_ws, monkeypatch):
    import numpy as np
    import torch
    from PIL import Image

    from aigc.image_generation import ImageGenerator, to_uint8
    from aigc.provenance.labels import check_file, read_label
    from aigc.provenance.marks import mark_image

    def sample(self, n=16, *, cond=None, seed=None, **options):  # "d" as if it made 128 px images
        return torch.rand(n, 3, 128, 128, generator=torch.Generator().manual_seed(seed))

    monkeypatch.setattr(ImageGenerator, "sample", sample)
    with LiveServer(served_ws) as server:
        r = httpx.post(server.url + "/v1/images/generations", json={"model": "d", "n": 1, "seed": 5,
                                                                   "response_format": "b64_json"}, timeout=120)
    assert r.status_code == 200, r.text
    path = Path(served_ws.root) / "marked.png"
    path.write_bytes(base64.b64decode(r.json()["data"][0]["b64_json"]))
    plain = Image.fromarray(to_uint8(sample(None, 1, seed=5))[0])
    got = np.asarray(Image.open(path).convert("RGB"))
    assert not np.array_equal(got, np.asarray(plain))  # the visible mark is drawn ...
    assert np.array_equal(got, np.asarray(mark_image(plain).convert("RGB")))  # ... as files get it
    assert read_label(path)["ProduceID"] == r.json()["id"] + "-000" and check_file(path).ok


def test_saved_images_get_the_visible_mark_where_it_fits(tmp_path):
    import numpy as np
    import torch
    from PIL import Image

    from aigc.image_generation import ImageGenerator
    from aigc.provenance.labels import implicit_label, read_label

    images = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    label = implicit_label(producer="", produce_id="gen-x")
    plain = ImageGenerator.save(None, images, tmp_path / "plain")
    marked = ImageGenerator.save(None, images, tmp_path / "marked", label=label, mark=True)
    a, b = (np.asarray(Image.open(p[0])).astype(int) for p in (plain, marked))
    changed = np.argwhere(np.abs(a - b).sum(-1) > 0)
    assert len(changed) > 50  # the mark is drawn ...
    assert changed[:, 0].min() >= 64 and changed[:, 1].max() >= 120  # ... in the bottom-right corner only
    assert read_label(marked[0])["ProduceID"] == "gen-x-000"
    small = ImageGenerator.save(None, images[:, :, :28, :28], tmp_path / "small", label=label, mark=True)
    assert np.array_equal(np.asarray(Image.open(small[0])), np.asarray(Image.open(
        ImageGenerator.save(None, images[:, :, :28, :28], tmp_path / "small-plain")[0])))  # too small: implicit only


def test_cli_pii_policy_label_audit(tmp_path):
    ws = tmp_path / "ws"
    lines = tmp_path / "in.txt"
    lines.write_text("call 138 1234 5678 now\nno pii here\n身份证 11010519491231002X\n", encoding="utf-8")
    r = run_cli("pii", "scan", lines, "--json", "-w", ws)
    got = [json.loads(x) for x in r.stdout.strip().splitlines()]
    assert r.exit_code == 0 and len(got) == 3
    assert got[0]["entities"] == [{"type": "CN_MOBILE", "start": 5, "end": 18, "score": got[0]["entities"][0]["score"]}]
    assert got[1]["entities"] == [] and got[2]["entities"][0]["type"] == "CN_RESIDENT_ID"
    r = run_cli("pii", "redact", lines, "--operator", "mask", "-w", ws)
    assert r.exit_code == 0 and "1234 5678" not in r.stdout and "no pii here" in r.stdout

    r = run_cli("policy", "show", "-w", ws)
    assert r.exit_code == 0 and "categories:" in r.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(policy_with("\nterms:\n  - {term: x, category: nope, severity: high, action: block}\n"), encoding="utf-8")
    r = run_cli("policy", "edit", "--file", bad, "-w", ws)
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1 and "nope" in r.stderr
    assert not (ws / "policy.yaml").exists()
    good = tmp_path / "good.yaml"
    good.write_text(policy_with(BLOCK_KIWI), encoding="utf-8")
    assert run_cli("policy", "edit", "--file", good, "-w", ws).exit_code == 0
    r = run_cli("policy", "test", "我想吃猕 猴 桃", "-w", ws)
    assert r.exit_code == 0 and r.stdout.startswith("BLOCK") and "violence" in r.stdout
    assert workspace_policy(aigc.open_workspace(ws)).version.startswith("1-")

    r = run_cli("label", "check", lines)
    assert r.exit_code == 1  # an unlabelled text file
    r = run_cli("audit", "verify", "-w", ws)
    assert r.exit_code == 0


def test_cli_trains_a_workspace_moderation_classifier(tmp_path):
    import random

    from aigc.safety.moderation import moderate

    rng = random.Random(0)
    data = tmp_path / "labelled.csv"
    bad = ["加我微信领取内部返利名额", "内部渠道低价代开发票", "日结兼职点赞返佣金"]
    good = ["这款茶叶包装精美", "物流很快，客服耐心", "杯子容量刚好，推荐购买"]
    rows = ["text,label"] + [f"{rng.choice(bad)}{i},fraud" for i in range(40)] + [f"{rng.choice(good)}{i},ok" for i in range(40)]
    data.write_text("\n".join(rows) + "\n", encoding="utf-8")
    ws = tmp_path / "ws"
    r = run_cli("policy", "train-classifier", data, "-w", ws)
    assert r.exit_code == 0 and (ws / "moderation_classifier.npz").exists(), r.output
    save_workspace_policy(aigc.open_workspace(ws), policy_with(
        "", **{"moderation: {classifier: null}": "moderation: {classifier: moderation_classifier.npz}"}))
    policy = workspace_policy(aigc.open_workspace(ws))
    assert moderate("内部渠道低价代开发票，欢迎咨询", policy).categories["fraud"]  # no term list names this
    assert not moderate("杯子容量刚好，物流很快", policy).flagged
    (tmp_path / "odd.csv").write_text("text,label\nhello,spam\n", encoding="utf-8")
    r = run_cli("policy", "train-classifier", tmp_path / "odd.csv", "-w", ws)
    assert r.exit_code == 2 and "spam" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_a_prompt_redaction_a_char_level_run_cannot_read_leaves_the_entity_out(fruit_ws):
    gen = aigc.load("g", workspace=fruit_ws)  # char-level: '<', 'C', 'N', '_' ... were never seen
    group = gen.prepare("apple 11010519491231002X red", 1, {"fruit": "apple"}, Sampling(max_new_tokens=2, seed=0))
    context = gen.tokenizer.decode(group.contexts[0][0].tolist())
    assert "11010519491231002" not in context and "apple" in context and "red" in context
    assert group.prompt_verdict.entities[0].type == "CN_RESIDENT_ID"


def test_a_workspace_policy_may_extend_the_default_with_its_changes_only(tmp_path):
    ws = aigc.open_workspace(tmp_path / "ws")
    policy = save_workspace_policy(ws, "extends: default\nversion: 7\n" + BLOCK_KIWI.strip() + "\n"
                                       "copy_guard: {threshold: 80}\n")
    base = default_policy()
    assert policy.version.startswith("7-") and len(policy.terms) == len(base.terms) + 1
    assert policy.copy_guard["threshold"] == 80 and policy.copy_guard["window"] == base.copy_guard["window"]
    assert set(policy.categories) == set(base.categories)
    assert policy.match_terms("我想吃猕 猴 桃") and policy.match_terms("教你刷单")  # its term and the default's
    with pytest.raises(InvalidInput, match="'strict' is not a policy to extend"):
        save_workspace_policy(ws, "extends: strict\nversion: 8\n")
    assert workspace_policy(ws).version == policy.version  # the old one stays


def test_a_run_trained_before_the_copy_guard_gets_its_index_when_loaded(fruit_ws):
    from aigc.safety.training import COPY_INDEX

    path = fruit_ws.run_path("g") / COPY_INDEX
    saved = path.read_bytes()
    path.unlink()  # as a run from before the copy guard
    gen = aigc.load("g", workspace=fruit_ws)
    assert gen.guard.copy_index is not None and path.read_bytes() == saved
