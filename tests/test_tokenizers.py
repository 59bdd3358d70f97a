import random

import pytest

from aigc.data.tokenizers import EOS, UNK, StreamDecoder, TextTokenizer, cond_token
from aigc.errors import InvalidInput

COND = cond_token("category", "手机")

CORPUS = [
    "First Citizen:\nBefore we proceed any further, hear me speak.\n",
    "All:\nSpeak, speak.\n\nFirst Citizen:\nYou are all resolved rather to die than to famish?\n",
    "这款手机的屏幕很清晰，电池也很耐用。物流很快，包装完好！",
    "酒店的位置不错，但是房间有点小，早餐一般。",
    "mixed 中英文 text: iPhone 15 很好用 , price 5999 元。\n",
    "tabs\tand  double  spaces   and\n\nblank lines\n   indented\n",
    "  leading and trailing  \n",
] * 3

SAMPLES = [
    "Before we proceed any further, hear me speak.",
    "这款手机的屏幕很清晰，电池也很耐用。",
    "mixed 中英文 text: iPhone 很好用 , price 元。",
    "  leading and trailing  \n\n\tindented\ttab\n   \n",
    "",
]


@pytest.fixture(scope="module", params=["char", "bpe"])
def tok(request):
    return TextTokenizer.train(CORPUS, request.param, vocab_size=400, special_tokens=[COND], min_frequency=2)


@pytest.fixture(scope="module")
def bpe():
    return TextTokenizer.train(CORPUS, kind="bpe", vocab_size=400, special_tokens=[COND], min_frequency=2)


def test_round_trip_on_training_distribution(tok):
    for text in SAMPLES + CORPUS:
        ids = tok.encode(text)
        assert tok.decode(ids) == text
        assert tok.count_unknown(text) == 0


def test_special_tokens_have_lowest_ids_and_encode_as_one_token(tok):
    assert tok.eos_id == 0 and tok.token_to_id(EOS) == 0
    expected = [EOS, UNK, COND] if tok.kind == "char" else [EOS, COND]
    assert tok.special_tokens() == expected
    assert [tok.token_to_id(t) for t in expected] == list(range(len(expected)))
    ids = tok.encode(f"{EOS}{COND}手机很好{EOS}")
    assert ids[:2] == [0, tok.token_to_id(COND)] and ids[-1] == 0
    assert tok.decode(ids) == f"{EOS}{COND}手机很好{EOS}"
    assert tok.decode(ids, skip_special=True) == "手机很好"


def test_char_kind_maps_unseen_characters_to_unk():
    tok = TextTokenizer.train(CORPUS, kind="char")
    assert tok.unk_id == 1
    text = "speak 龘 now 😀"
    ids = tok.encode(text)
    assert ids.count(tok.unk_id) == 2
    assert tok.count_unknown(text) == 2
    assert tok.count_unknown(f"literal {UNK} is not unknown") == 0
    assert tok.decode(ids) == f"speak {UNK} now {UNK}"
    assert tok.decode(ids, skip_special=True) == "speak  now "
    # one id per character: the vocabulary is exactly the distinct characters plus specials
    assert tok.vocab_size == len(set("".join(CORPUS))) + 2
    assert len(tok.encode("double  spaces\n\t")) == len("double  spaces\n\t")


def test_bpe_kind_round_trips_unseen_characters_through_bytes(bpe):
    assert bpe.unk_id is None
    text = "emoji 😀🎉 rare 龘 Ω ünïcödé"
    assert bpe.decode(bpe.encode(text)) == text
    assert bpe.count_unknown(text) == 0


def test_save_load_gives_identical_ids(tok, tmp_path):
    path = tmp_path / "sub" / "tokenizer.json"
    tok.save(path)
    assert [p.name for p in path.parent.iterdir()] == ["tokenizer.json"]  # no temp file left behind
    loaded = TextTokenizer.load(path)
    assert loaded.kind == tok.kind and loaded.vocab_size == tok.vocab_size
    assert loaded.eos_id == tok.eos_id and loaded.unk_id == tok.unk_id
    for text in SAMPLES + [f"{COND}你好 😀"]:
        assert loaded.encode(text) == tok.encode(text)
    assert loaded.encode_batch(SAMPLES) == [tok.encode(t) for t in SAMPLES]


def test_transformers_fast_tokenizer_matches(tok, tmp_path):
    from transformers import PreTrainedTokenizerFast

    path = tmp_path / "tokenizer.json"
    tok.save(path)
    hf = PreTrainedTokenizerFast(
        tokenizer_file=str(path),
        eos_token=EOS,
        bos_token=EOS,
        unk_token=UNK if tok.unk_id is not None else None,
    )
    assert hf.eos_token_id == tok.eos_id and hf.bos_token_id == tok.eos_id
    for text in SAMPLES + [f"{EOS}{COND}这款手机很好 , it 's fine ."]:
        ids = tok.encode(text)
        assert hf(text)["input_ids"] == ids
        assert hf.decode(ids) == tok.decode(ids)
        assert hf.decode(ids, skip_special_tokens=True) == tok.decode(ids, skip_special=True)
    exported = tok.to_transformers()
    assert exported("这款手机")["input_ids"] == tok.encode("这款手机")


def test_long_text_chunked_encoding_equals_single_encode(tok):
    # Longer than the chunking threshold; includes whitespace runs around newlines.
    rng = random.Random(0)
    text = "\n".join(rng.choice(CORPUS + SAMPLES) for _ in range(1500)) + f"{COND}\n  x \n\ny"
    assert len(text) > 40_000
    ids = tok.encode(text)
    assert ids == tok.hf.encode(text, add_special_tokens=False).ids
    assert tok.decode(ids) == text


def test_stream_decoder_concatenates_to_decode_without_replacement_chars(bpe):
    text = f"{COND}这款手机的屏幕很清晰😀，电池也很耐用。\nmixed 中英文 text"
    ids = bpe.encode(text)
    # the byte-level vocabulary is small, so some Han characters are split across tokens
    assert any("\ufffd" in bpe.decode([i]) for i in ids)
    stream = StreamDecoder(bpe)
    pieces = [stream.push(i) for i in ids] + [stream.flush()]
    assert "".join(pieces) == bpe.decode(ids, skip_special=True)
    assert not any("\ufffd" in p for p in pieces)
    assert "" in pieces  # something was held back while a character was incomplete
    stream = StreamDecoder(bpe, skip_special=False)
    assert "".join([stream.push(i) for i in ids] + [stream.flush()]) == text


def test_stream_decoder_on_random_ids_matches_decode(tok):
    rng = random.Random(1)
    for _ in range(20):
        ids = [rng.randrange(tok.vocab_size) for _ in range(rng.randrange(1, 40))]
        stream = StreamDecoder(tok)
        text = "".join(stream.push(i) for i in ids) + stream.flush()
        assert text == tok.decode(ids, skip_special=True)


def test_errors_name_the_argument():
    with pytest.raises(InvalidInput, match="kind must be one of char, bpe; got 'word'"):
        TextTokenizer.train(CORPUS, kind="word")
    with pytest.raises(InvalidInput, match="vocab_size must be >= 258"):
        TextTokenizer.train(CORPUS, kind="bpe", vocab_size=100, special_tokens=[COND])
    with pytest.raises(InvalidInput, match="special_tokens must be non-empty"):
        TextTokenizer.train(CORPUS, special_tokens=[""])
    with pytest.raises(InvalidInput, match="at least one non-empty string"):
        TextTokenizer.train(["", ""], kind="char")
    tok = TextTokenizer.train(CORPUS, kind="char")
    with pytest.raises(InvalidInput, match=r"token ids must be in \[0, "):
        tok.decode([0, 10_000])
    stream = StreamDecoder(tok)  # checks each id as it comes, then decodes without checking again
    stream.push(3)
    with pytest.raises(InvalidInput, match=rf"token ids must be in \[0, {tok.vocab_size}\), got -1"):
        stream.push(-1)
