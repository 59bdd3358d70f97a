"""Every artifact of a workspace goes through the artifact store, not only datasets and runs (issue 18):
a knowledge base and its assistant settings, a monitor model with its topics and stream settings, a
recommender, a de-quantized base and the copy desk's rules made in workspace A are answered from in
workspace B, which shares A's catalog and store (a local folder here) but not its folder. Caches stay
local, deleting removes the store's copy, and a failed upload leaves nothing half-written anywhere."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
import pytest

from aigc.errors import ArtifactStoreError
from aigc.storage import LATEST, Mirror
from aigc.workspace import Workspace


def files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` by relative path (the store's manifest included: the same version)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def stored(store: Path) -> set[str]:
    """The keys committed in a local-folder store."""
    return {p.parent.relative_to(store).as_posix() for p in store.rglob(LATEST)}


@pytest.fixture
def pair(tmp_path):
    """Workspaces A and B: one catalog, one store, two folders."""
    Mirror.current.clear()  # what this process checked before is of other workspaces
    shared = {"db_url": f"sqlite:///{tmp_path / 'catalog.db'}", "artifacts": str(tmp_path / "store")}
    return Workspace(tmp_path / "a", **shared), Workspace(tmp_path / "b", **shared), tmp_path / "store"


FAQ = [("如何申请退货？", "收到商品后7天内可在订单页面申请无理由退货。"),
       ("发货需要多久？", "下单后48小时内发货，偏远地区顺延。"),
       ("How do I reset my password?", 'Click "Forgot password" on the login page, then the email link.'),
       ("Do you ship abroad?", "We ship to 40 countries; duties are paid by the buyer.")]


def write_faq(path: Path, rows=FAQ) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([("question", "answer"), *rows])
    return path


def test_a_knowledge_base_and_its_settings_made_on_a_answer_on_b(pair, tmp_path, monkeypatch):
    from aigc.apps import assistant
    from aigc.apps.assistant import answer, kb

    a, b, store = pair
    kb.add(a, "shop", [write_faq(tmp_path / "faq.csv")])
    answer.configure(a, "shop", mode="faq")
    assert stored(store) == {"kb/shop", "assistant/shop.json"}
    question = "how can I reset my password"
    expected = assistant.ask("shop", question, workspace=a)

    assert not (b.root / "kb").exists()
    assert [k["name"] for k in kb.list_kbs(b)] == ["shop"]  # listed from the store, then fetched
    got = assistant.ask("shop", question, workspace=b)
    assert got["answer"] == expected["answer"] and got["citations"] == expected["citations"]
    assert answer.settings(b, "shop")["mode"] == "faq"
    assert files(b.root / "kb" / "shop") == files(a.root / "kb" / "shop")

    # A adds a document; B, once its check is due, answers from the new version.
    kb.add(a, "shop", [write_faq(tmp_path / "more.csv", [("Can I pay by card?", "Yes, Visa.")])])
    monkeypatch.setattr(Mirror, "RECHECK_S", 0.0)
    assert kb.info(b, "shop")["documents"] == 2
    assert files(b.root / "kb" / "shop") == files(a.root / "kb" / "shop")

    assistant.kb_remove("shop", workspace=a)  # the store's copies first, then A's
    assert stored(store) == set() and kb.list_kbs(a) == []
    assert not (a.root / "assistant" / "shop.json").exists()


def test_a_monitor_model_topics_and_stream_made_on_a_classify_alike_on_b(pair, tmp_path):
    from aigc.apps import monitor

    a, b, store = pair
    good = ["质量很好，非常满意", "物流很快，好评", "great battery, love it", "works perfectly, happy"]
    bad = ["电池发热严重，很差", "物流太慢，差评", "terrible battery, broke in a day", "awful, refund please"]
    rows = [{"text": t + end, "label": label} for end in ("", "！", " really", "。")
            for label, texts in (("pos", good), ("neg", bad)) for t in texts]
    with open(tmp_path / "labelled.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, ["text", "label"])
        w.writeheader()
        w.writerows(rows)
    monitor.train("reviews", tmp_path / "labelled.csv", label_column="label", negative_label="neg",
                  kind="tfidf", workspace=a)
    monitor.set_topics({"battery": ["battery", "电池"], "delivery": ["物流"]}, workspace=a)
    monitor.configure("brand", model="reviews", period="hour", workspace=a)
    assert stored(store) == {"monitor/models/reviews", "monitor/topics.yaml", "monitor/streams/brand.json"}

    texts = ["电池很差，退货", "物流很快", "love the battery", "awful quality"]
    expected = monitor.score_texts(a, "reviews", texts)
    assert [r["topic"] for r in expected] == ["battery", "delivery", "battery", "other"]  # the topics count
    assert monitor.score_texts(b, "reviews", texts) == expected
    assert [m["name"] for m in monitor.models(b)] == ["reviews"]
    assert [s["name"] for s in monitor.streams(b)] == ["brand"]
    assert monitor.settings("brand", b)["period"] == "hour"
    model = Path("monitor", "models", "reviews")
    assert files(b.root / model) == files(a.root / model)


def test_a_recommender_made_on_a_gives_the_same_top_k_on_b_and_its_cache_stays_local(pair, monkeypatch):
    from aigc.apps import recommend
    from aigc.apps.assistant import retrieval
    from aigc.apps.recommend.synth import generate

    class Stub:  # hashed character bigrams: no model to load
        id = "stub-bigrams"

        def embed_passages(self, texts, batch=32):
            out = np.zeros((len(texts), 384), dtype=np.float32)
            for r, text in enumerate(texts):
                for x, y in zip(text, text[1:]):
                    out[r, int(hashlib.md5((x + y).encode()).hexdigest()[:6], 16) % 384] += 1.0
            return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)

    monkeypatch.setattr(retrieval, "embedder", lambda: Stub())
    a, b, store = pair
    items, interactions, _ = generate(n_users=30, n_items=40, seed=3, events_per_user=6)
    recommend.train("shop", items, interactions, workspace=a, seed=0)
    assert (a.root / "recommend" / ".cache").is_dir() and stored(store) == {"recommend/shop"}

    user = str(interactions["user"].iloc[0])
    expected = recommend.recommend("shop", user, k=5, workspace=a)
    got = recommend.recommend("shop", user, k=5, workspace=b)
    assert [r["item"] for r in got["items"]] == [r["item"] for r in expected["items"]]
    assert [m["name"] for m in recommend.models(b)] == ["shop"]
    assert not (b.root / "recommend" / ".cache").exists()


def test_a_base_de_quantized_on_a_arrives_byte_identical_on_b_and_loads_alike(pair, tmp_path, monkeypatch):
    import torch
    import transformers as T
    from tokenizers import Tokenizer, models

    from aigc.pretrained import bases as B

    def dequantize(gguf_file, out):  # stands in for reading a real GGUF: a tiny random llama
        torch.manual_seed(0)
        config = T.LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                               num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32)
        T.AutoModelForCausalLM.from_config(config).save_pretrained(out)
        vocab = {"<unk>": 0, **{c: i + 1 for i, c in enumerate("abcdefgh")}}
        T.PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="<unk>")),
                                  unk_token="<unk>").save_pretrained(out)

    monkeypatch.setattr(B, "inspect_gguf", lambda f: {"params": 6000, "architecture": "llama",
                                                      "quantization": "Q4_1"})
    monkeypatch.setattr(B, "dequantize_gguf", dequantize)
    a, b, store = pair
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF")
    B._add_gguf(a, [gguf], "tiny", "gguf", str(gguf), None, lambda s: None)
    assert stored(store) == {"bases/tiny"}

    ids = torch.tensor([[1, 2, 3]])
    model_a, _ = B.load_base(a, "tiny")
    model_b, _ = B.load_base(b, "tiny")  # the catalog row holds A's path: B loads its own copy
    assert files(b.base_path("tiny")) == files(a.base_path("tiny"))
    assert torch.equal(model_a(ids).logits, model_b(ids).logits)

    B.remove_base(a, "tiny")
    assert stored(store) == set() and not a.base_path("tiny", fetch=False).exists()


def test_the_copy_desks_rules_set_on_a_hold_on_b(pair):
    from aigc.apps import copy

    a, b, store = pair
    rules = copy.set_rules({"required_words": ["亚麻"], "forbidden_words": ["最便宜"]}, workspace=a)
    assert stored(store) == {"copy/rules.yaml"}
    assert copy.workspace_rules(b).to_dict() == rules
    assert (b.root / "copy" / "rules.yaml").read_bytes() == (a.root / "copy" / "rules.yaml").read_bytes()


def test_a_failed_upload_leaves_nothing_half_written_here_or_there(pair, tmp_path, monkeypatch):
    from aigc.apps.assistant import answer, kb

    a, b, store = pair
    kb.add(a, "shop", [write_faq(tmp_path / "faq.csv")])
    answer.configure(a, "shop", mode="faq")
    before, before_store = files(a.root), files(store)
    fs = a.mirror.store.fs

    def dies(*args, **kwargs):
        raise ConnectionResetError("the network went away")

    monkeypatch.setattr(fs, "put_file", dies)
    with pytest.raises(ArtifactStoreError, match="the network went away"):
        kb.add(a, "shop", [write_faq(tmp_path / "more.csv", [("Can I pay by card?", "Yes.")])])
    with pytest.raises(ArtifactStoreError, match="the network went away"):
        answer.configure(a, "shop", mode="extractive")
    monkeypatch.undo()
    assert files(store) == before_store  # no new version, committed or not
    after = files(a.root)
    assert {k: v for k, v in after.items() if not k.startswith("tmp/")} == before  # here: as it was
    assert not [p for p in (a.root / "tmp").iterdir()]  # and no staging left behind
    assert answer.settings(b, "shop")["mode"] == "faq"


def test_only_artifacts_are_mirrored(pair):
    a, _, _ = pair
    key = a.mirror.key_of
    assert key(a.root / "kb" / "shop") == "kb/shop"
    assert key(a.root / "monitor" / "models" / "m") == "monitor/models/m"
    assert key(a.root / "monitor" / "topics.yaml") == "monitor/topics.yaml"
    for not_one in ("recommend/.cache", "monitor/models", "kb/.lock", "generations/x", "kb/shop/kb.json"):
        assert key(a.root / not_one) is None, not_one
    (a.root / "kb").mkdir()
    (a.root / "kb" / ".shop.lock").write_bytes(b"")  # a lock beside the knowledge bases: no artifact
    assert a.artifact_names("kb") == [] and a.artifact_names("monitor") == []


def test_artifacts_made_before_the_store_was_set_are_pushed_by_hand(pair, monkeypatch):
    from aigc.apps import copy

    a, b, store = pair
    alone = Workspace(a.root, db_url=a.db_url)  # A before $AIGC_ARTIFACTS was set
    rules = copy.set_rules({"forbidden_words": ["最好"]}, workspace=alone)
    (alone.root / "kb" / "old").mkdir(parents=True)
    (alone.root / "kb" / "old" / "kb.json").write_text("{}")
    assert stored(store) == set() and copy.workspace_rules(b).to_dict() != rules

    assert a.push_artifact("copy", "rules.yaml")["files"].keys() == {"rules.yaml"}
    assert a.push_artifact("kb", "old")["files"].keys() == {"kb.json"}
    assert stored(store) == {"copy/rules.yaml", "kb/old"}
    monkeypatch.setattr(Mirror, "RECHECK_S", 0.0)  # b asked moments ago and found none
    assert copy.workspace_rules(b).to_dict() == rules
    assert (b.artifact_path("kb", "old") / "kb.json").read_text() == "{}"
