"""Every artifact of a workspace goes through the artifact store, not only datasets and runs (issue 18):
a knowledge base and its assistant settings, a monitor model with its topics and stream settings, a
recommender, a de-quantized base and the copy desk's rules made in workspace A are answered from in
workspace B, which shares A's catalog and store (a local folder here) but not its folder. Caches stay
local, deleting removes the store's copy, and a failed upload leaves nothing half-written anywhere."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from helpers import StubEmbedder

from aigc.errors import ArtifactStoreError, InvalidInput, NotFound
from aigc.storage import LATEST, MANIFEST, ArtifactStore, Mirror, read_manifest
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


def write_labelled(path: Path) -> Path:
    good = ["质量很好，非常满意", "物流很快，好评", "great battery, love it", "works perfectly, happy"]
    bad = ["电池发热严重，很差", "物流太慢，差评", "terrible battery, broke in a day", "awful, refund please"]
    rows = [{"text": t + end, "label": label} for end in ("", "！", " really", "。")
            for label, texts in (("pos", good), ("neg", bad)) for t in texts]
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, ["text", "label"])
        w.writeheader()
        w.writerows(rows)
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
    assert [k["name"] for k in kb.list_kbs(b)] == ["shop"]  # listed from the store; asking fetches it
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
    monitor.train("reviews", write_labelled(tmp_path / "labelled.csv"), label_column="label",
                  negative_label="neg", kind="tfidf", workspace=a)
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

    monkeypatch.setattr(retrieval, "embedder", lambda: StubEmbedder())
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


# -- listings read one small file of each artifact, never the artifact whole --------------------------


@pytest.fixture
def reads(pair, monkeypatch):
    """The paths every store read of the pair asks for (``cat_file``: LATEST and single files)."""
    fs, seen = pair[0].mirror.store.fs, []
    real = fs.cat_file

    def cat_file(path, *args, **kwargs):
        seen.append(path.rsplit("/", 1)[-1])
        return real(path, *args, **kwargs)

    monkeypatch.setattr(fs, "cat_file", cat_file)
    return seen


def test_listings_on_b_read_one_file_of_each_artifact_and_download_none(pair, reads, tmp_path, monkeypatch):
    from aigc.apps import monitor, recommend
    from aigc.apps.assistant import kb, retrieval
    from aigc.apps.recommend.synth import generate

    monkeypatch.setattr(retrieval, "embedder", lambda: StubEmbedder())
    a, b, store = pair
    kb.add(a, "shop", [write_faq(tmp_path / "faq.csv")])
    monitor.train("reviews", write_labelled(tmp_path / "labelled.csv"), label_column="label",
                  negative_label="neg", kind="tfidf", workspace=a)
    items, interactions, _ = generate(n_users=30, n_items=40, seed=3, events_per_user=6)
    recommend.train("shop", items, interactions, workspace=a, seed=0)

    def listings(ws):
        return kb.list_kbs(ws), monitor.models(ws), recommend.models(ws)

    reads.clear()
    expected = listings(a)
    assert [[x["name"] for x in found] for found in expected] == [["shop"], ["reviews"], ["shop"]]
    assert reads == []  # A's copies were found current when published: no store read
    assert listings(b) == expected
    assert sorted(reads) == sorted(["LATEST"] * 3 + ["kb.json", "config.json", "model.json"])
    assert [p for p in b.root.rglob("*") if p.is_file()] == []  # nothing downloaded, nothing staged

    kb.info(b, "shop")  # used: fetched whole, and current from now on
    reads.clear()
    assert kb.list_kbs(b) == expected[0] and reads == []  # within RECHECK_S: read here, no store read


def test_a_listing_on_b_shows_a_replaced_knowledge_base_and_leaves_its_copy(pair, tmp_path, monkeypatch):
    from aigc.apps.assistant import kb, retrieval

    monkeypatch.setattr(retrieval, "embedder", lambda: StubEmbedder())
    a, b, store = pair
    kb.add(a, "shop", [write_faq(tmp_path / "faq.csv")])
    assert [k["documents"] for k in kb.list_kbs(b)] == [1]
    chunks = kb.info(b, "shop")["chunks"]  # used on B: B holds a copy of the first version
    copy = b.root / "kb" / "shop"
    first = read_manifest(copy / MANIFEST)["version"]

    kb.add(a, "shop", [write_faq(tmp_path / "more.csv", [("Can I pay by card?", "Yes, Visa.")])])
    monkeypatch.setattr(Mirror, "RECHECK_S", 0.0)  # B's check is due
    assert [(k["documents"], k["chunks"]) for k in kb.list_kbs(b)] == [(2, chunks + 1)]  # the store's kb.json
    assert read_manifest(copy / MANIFEST)["version"] == first  # the copy is not downloaded by a listing
    assert len(json.loads((copy / "kb.json").read_text(encoding="utf-8"))["documents"]) == 1
    assert kb.info(b, "shop")["documents"] == 2  # ... but when used


def test_a_damaged_file_in_the_store_fails_the_listing_in_one_line(pair, tmp_path, monkeypatch):
    from aigc.apps.assistant import kb, retrieval

    monkeypatch.setattr(retrieval, "embedder", lambda: StubEmbedder())
    a, b, store = pair
    kb.add(a, "shop", [write_faq(tmp_path / "faq.csv")])
    meta = store / "kb" / "shop" / a.mirror.store.manifest("kb/shop")["version"] / "kb.json"
    meta.write_bytes(meta.read_bytes().replace(b'"shop"', b'"shoq"'))  # the same size: the sha256 differs
    with pytest.raises(ArtifactStoreError, match=r"kb/shop/kb\.json does not match its manifest"):
        kb.list_kbs(b)
    meta.unlink()
    with pytest.raises(ArtifactStoreError, match=r"lacks files its manifest lists"):
        kb.list_kbs(b)
    assert [k["name"] for k in kb.list_kbs(a)] == ["shop"]  # A reads its own current copy


def test_a_file_of_a_copy_made_here_is_read_here(pair, reads):
    a, b, _ = pair
    for ws, tag in ((a, "a"), (b, "b")):
        (ws.root / "kb" / "old").mkdir(parents=True)
        (ws.root / "kb" / "old" / "kb.json").write_text(f'{{"made": "{tag}"}}')
    a.push_artifact("kb", "old")  # the store holds A's; B's was made on B (no manifest): B's own wins
    reads.clear()
    assert b.read_artifact_file("kb", "old", "kb.json") == b'{"made": "b"}' and reads == []
    assert b.read_artifact_file("kb", "old", "vectors.npy") is None
    assert b.read_artifact_file("kb", "new", "kb.json") is None and reads == ["LATEST"]  # in neither place
    assert a.mirror.store.read_file("kb/old", "vectors.npy") is None  # not in the version
    alone = Workspace(b.root, db_url=b.db_url)  # B without a store: the local file only
    assert alone.read_artifact_file("kb", "old", "kb.json") == b'{"made": "b"}'
    assert alone.read_artifact_file("kb", "new", "kb.json") is None
    with pytest.raises(InvalidInput, match="single files"):
        b.read_artifact_file("assistant", "old.json", "kb.json")
    with pytest.raises(InvalidInput, match="kb name"):
        b.read_artifact_file("kb", "../old", "kb.json")


def test_read_file_of_a_collected_version_reads_the_newest(tmp_path):
    store = ArtifactStore.from_url(str(tmp_path / "store"))

    def commit(tag: str) -> dict:
        (tmp_path / tag).mkdir()
        (tmp_path / tag / "kb.json").write_text(tag)
        return store.put_folder(tmp_path / tag, "kb/k")

    first = commit("one")
    commit("two")
    commit("three")  # the first version is collected now
    assert store.read_file("kb/k", "kb.json", first) == b"three"
    with pytest.raises(NotFound, match="no committed copy"):
        store.read_file("kb/none", "kb.json")
