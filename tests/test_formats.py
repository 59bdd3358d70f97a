"""Supervised chat examples for pretrained bases (issue 12): prompts from condition columns, the
three chat-file formats read to one shape with every bad line named, the default chat template,
labels on exactly the assistant turns (checked by decoding them, for a char-level and a byte-level
BPE tokenizer, ChatML, the default template, and templates that render a turn differently by
position), and packing into exact blocks with labels kept in step. Tiny tokenizers built here; nothing loads."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from aigc.data.dataset import TextRecord
from aigc.errors import InvalidInput
from aigc.pretrained import formats as F

CHATML = ("{% for m in messages %}"
          "{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
# Like Qwen3: the last assistant turn gets an empty think block, earlier ones do not, so the
# rendering of a conversation's start is not the start of the whole rendering.
THINKING = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' }}"
            "{% if m['role'] == 'assistant' and loop.last %}{{ '<think>\n\n</think>\n\n' }}{% endif %}"
            "{{ m['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
            "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
SPECIALS = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>", "<pad>"]
ALPHABET = ("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,:;!?'#<>/|-\n"
            "你好我们卖茶温暖的产品描述写一段文案绿谢")

MULTI = [
    {"role": "system", "content": "You sell tea."},
    {"role": "user", "content": "Hi there"},
    {"role": "assistant", "content": "Hello! Green tea?"},
    {"role": "user", "content": "写一段文案"},
    {"role": "assistant", "content": "我们卖温暖的绿茶。"},
]


def _char_tokenizer(chat_template: str | None = CHATML):
    """One token per character, the specials whole; decodes by joining tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIALS + sorted(set(ALPHABET) | {"。"}))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens(SPECIALS)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>")
    if chat_template:
        fast.chat_template = chat_template
    return fast


def _bpe_tokenizer(chat_template: str | None = CHATML):
    """A byte-level BPE trained (deterministically) on a few lines: multi-character tokens, and
    Chinese characters split into byte pieces where no merge covers them."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = ["Hello there, green tea for you.", "You sell tea. Hi there!", "我们卖温暖的绿茶。", "写一段文案"] * 3
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    if chat_template:
        fast.chat_template = chat_template
    return fast


def _labelled_runs(tok, example) -> list[str]:
    """The text of each run of consecutive labelled tokens."""
    runs, run = [], []
    for token, label in zip(example["input_ids"], example["labels"], strict=True):
        if label != F.IGNORE_INDEX:
            assert label == token
            run.append(token)
        elif run:
            runs.append(run)
            run = []
    if run:
        runs.append(run)
    return [tok.decode(r, skip_special_tokens=False) for r in runs]


def _write(path, lines, bom=False):
    text = "\n".join(x if isinstance(x, str) else json.dumps(x, ensure_ascii=False) for x in lines) + "\n"
    path.write_bytes(("\ufeff" if bom else "").encode() + text.encode("utf-8"))
    return path


# -- prompts ------------------------------------------------------------------------------


def test_a_template_renders_condition_columns_chinese_escaped_braces_and_numbered_columns():
    cond = {"category": "茶", "tone": "warm", "lang": "zh", "1": "x"}
    assert F.render_prompt("Write a {tone} product description for {category} in {lang}", cond) == \
        "Write a warm product description for 茶 in zh"
    assert F.render_prompt("为{category}写一段{tone}的文案", cond) == "为茶写一段warm的文案"
    assert F.render_prompt("{{literal}} {tone}}}", cond) == "{literal} warm}"
    assert F.render_prompt("column one: {1}", cond) == "column one: x"  # a --no-header column, not a position
    assert F.check_template("{tone} {category} {tone}", ["category", "tone", "lang"]) == ["tone", "category"]
    assert F.check_template("Write a text.", ["tone"]) == []


def test_the_default_template_names_every_column_and_renders():
    cols = ["category", "tone", "lang"]
    t = F.default_template(cols)
    assert t == "Write a text with category: {category}, tone: {tone}, lang: {lang}."
    assert F.check_template(t, cols) == cols
    assert F.render_prompt(t, {"category": "tea", "tone": "warm", "lang": "en"}) == \
        "Write a text with category: tea, tone: warm, lang: en."
    assert F.default_template([]) == "Write a text."


@pytest.mark.parametrize("template, message", [
    ("Write about {x}", "prompt template names column 'x', which the dataset does not have (it has: a, b): "
                        "fix --prompt-template"),
    ("Write {a", "prompt template 'Write {a' is malformed (expected '}' before end of string)"),
    ("Write a}", "prompt template 'Write a}' is malformed (Single '}' encountered"),
    ("{a.upper}", "prompt template field {a.upper} uses attribute or index access"),
    ("{a[0]}", "prompt template field {a[0]} uses attribute or index access"),
    ("{a:>10}", "prompt template field {a:>10} has a format spec or conversion"),
    ("{a!r}", "prompt template field {a!r} has a format spec or conversion"),
    ("Write {}", "prompt template 'Write {}' has an empty field {}: name a column inside the braces"),
    ("  ", "the prompt template is empty"),
])
def test_a_bad_template_is_refused_in_one_line(template, message):
    with pytest.raises(InvalidInput) as e:
        F.check_template(template, ["a", "b"])
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_rendering_refuses_a_record_without_the_column():
    with pytest.raises(InvalidInput, match=r"names column 'tone', which the dataset does not have \(it has: "
                                           r"category\)"):
        F.render_prompt("a {tone} text", {"category": "tea"})


# -- conversations ------------------------------------------------------------------------

WANT = [{"role": "system", "content": "You sell tea."},
        {"role": "user", "content": "写一段文案\nfor green tea"},
        {"role": "assistant", "content": "我们卖温暖的绿茶。"}]


def test_each_chat_format_reads_to_the_same_conversation_with_a_bom_and_blank_lines(tmp_path):
    openai = {"messages": WANT}
    parts = [{"type": "text", "text": "写一段文案\n"}, {"type": "text", "text": "for green tea"}]
    openai_parts = {"messages": [WANT[0], {"role": "user", "content": parts}, WANT[2]]}
    sharegpt = {"conversations": [{"from": "system", "value": "You sell tea."},
                                  {"from": "human", "value": "写一段文案\nfor green tea"},
                                  {"from": "gpt", "value": "我们卖温暖的绿茶。"}]}
    sharegpt_roles = {"conversations": [{"from": r, "value": t["content"]}
                                        for r, t in zip(["system", "user", "assistant"], WANT, strict=True)]}
    alpaca = {"instruction": "写一段文案", "input": "for green tea", "output": "我们卖温暖的绿茶。",
              "system": "You sell tea."}
    lines = [openai, "", openai_parts, sharegpt, "   ", sharegpt_roles, alpaca]
    path = _write(tmp_path / "chats.jsonl", lines, bom=True)
    assert F.read_chat_jsonl(path) == [WANT] * 5
    array = tmp_path / "alpaca_data.json"
    array.write_text(json.dumps([alpaca, {"instruction": "Hi", "output": "Hello"}], ensure_ascii=False),
                     encoding="utf-8")
    assert F.read_chat_jsonl(array) == [WANT, [{"role": "user", "content": "Hi"},
                                               {"role": "assistant", "content": "Hello"}]]


def test_alpaca_history_comes_before_the_last_exchange(tmp_path):
    record = {"instruction": "And now?", "output": "Tea.", "history": [["Hi", "Hello"]]}
    path = _write(tmp_path / "h.jsonl", [record])
    assert F.read_chat_jsonl(path) == [[{"role": "user", "content": "Hi"},
                                        {"role": "assistant", "content": "Hello"},
                                        {"role": "user", "content": "And now?"},
                                        {"role": "assistant", "content": "Tea."}]]


OK = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}


@pytest.mark.parametrize("bad, message", [
    ('{"messages": [', "line 3 is not JSON (Expecting value at column 15): write one JSON object per line"),
    ({"text": "hello"},
     "line 3 is not in a known chat format (its keys: text): expected an object with 'messages'"),
    ('["a"]', "line 3 is not in a known chat format (list)"),
    ({"messages": [{"role": "user", "content": "Hi"}, {"content": "Hello"}]}, "line 3: turn 2 has no 'role'"),
    ({"messages": [{"role": "user"}]}, "line 3: turn 1 has no 'content'"),
    ({"conversations": [{"from": "human"}]}, "line 3: turn 1 has no 'value'"),
    ({"conversations": [{"value": "x"}]}, "line 3: turn 1 has no 'from'"),
    ({"messages": "Hi"}, "line 3: 'messages' is not a list of turns"),
    ({"messages": [{"role": "user", "content": 5}]}, "line 3: turn 1's 'content' is not text (int)"),
    ({"messages": [{"role": "user", "content": "Hi"}, {"role": "tool", "content": "{}"}]},
     "line 3: turn 2 has role 'tool', which is not one of system, user, assistant (or human, gpt)"),
    ({"messages": [{"role": "user", "content": "Hi"}]}, "line 3: the conversation has no assistant turn"),
    ({"messages": []}, "line 3: the conversation has no turns"),
    ({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "  "}]},
     "line 3: turn 2 (assistant) is empty"),
    ({"messages": [*OK["messages"], {"role": "user", "content": "More?"}]},
     "line 3: the conversation ends with a 'user' turn (turn 3): end it with the assistant's answer"),
    ({"messages": [{"role": "user", "content": "Hi"}, {"role": "system", "content": "S"}, OK["messages"][1]]},
     "line 3: turn 2 is 'system' after 'user': turns must alternate user, assistant (system only as the"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}, OK["messages"][1]]},
     "line 3: turn 2 is 'user' after 'user': turns must alternate user, assistant"),
    ({"messages": [OK["messages"][1], *OK["messages"]]},
     "line 3: turn 1 is 'assistant' first: turns must alternate user, assistant (a conversation starts with"),
    ({"instruction": "Hi", "output": 3}, "line 3: Alpaca field 'output' is not text (int)"),
    ({"instruction": "Hi", "output": "Yo", "history": [["a"]]}, "line 3: Alpaca 'history' is not a list of"),
])
def test_every_bad_line_is_named_with_its_number_in_one_line(tmp_path, bad, message):
    path = _write(tmp_path / "c.jsonl", [OK, "", bad, OK])
    with pytest.raises(InvalidInput) as e:
        F.read_chat_jsonl(path)
    assert str(e.value).startswith(f"{path}: {message}"), str(e.value)
    assert "\n" not in str(e.value)


def test_an_empty_missing_or_non_utf8_file_is_refused(tmp_path):
    for content in (b"", b"\n  \n", "\ufeff".encode(), b"[]"):
        (tmp_path / "e.jsonl").write_bytes(content)
        with pytest.raises(InvalidInput, match="e.jsonl has no conversations: write one per line"):
            F.read_chat_jsonl(tmp_path / "e.jsonl")
    with pytest.raises(InvalidInput, match="chat file .*nope.jsonl' not found"):
        F.read_chat_jsonl(tmp_path / "nope.jsonl")
    (tmp_path / "gbk.jsonl").write_bytes(json.dumps(OK).encode()[:-2] + "茶".encode("gbk") + b"}")
    with pytest.raises(InvalidInput, match=r"gbk.jsonl: not UTF-8 \(byte \d+\): save it as UTF-8"):
        F.read_chat_jsonl(tmp_path / "gbk.jsonl")


def test_records_become_prompted_chats_and_a_missing_column_is_named():
    records = [TextRecord("温暖的绿茶。", {"category": "茶", "tone": "warm"}),
               TextRecord("Bold.", {"category": "coffee", "tone": "bold"})]
    assert F.records_to_chats(records, "A {tone} text about {category}") == [
        [{"role": "user", "content": "A warm text about 茶"}, {"role": "assistant", "content": "温暖的绿茶。"}],
        [{"role": "user", "content": "A bold text about coffee"}, {"role": "assistant", "content": "Bold."}],
    ]
    with pytest.raises(InvalidInput, match=r"names column 'lang', which the dataset does not have \(it has: "
                                           r"category, tone\)"):
        F.records_to_chats(records, "{lang}")
    with pytest.raises(InvalidInput, match="record 2: turn 2 \\(assistant\\) is empty"):
        F.records_to_chats([records[0], TextRecord(" ", {})], "Write a text.")


def test_prompt_response_rows_become_chats_and_bad_columns_or_cells_are_named():
    rows = [{"q": "Hi", "a": "Hello", "id": 1}, {"q": "茶?", "a": 42, "id": 2}]
    assert F.prompt_response_chats(rows, "q", "a") == [
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
        [{"role": "user", "content": "茶?"}, {"role": "assistant", "content": "42"}],
    ]
    with pytest.raises(InvalidInput, match=r"^the table has no column 'prompt' \(it has: q, a, id\): fix "
                                           r"--prompt-column$"):
        F.prompt_response_chats(rows, "prompt", "a")
    with pytest.raises(InvalidInput, match=r"^the table has no column 'answer' .*fix --response-column$"):
        F.prompt_response_chats(rows, "q", "answer")
    with pytest.raises(InvalidInput, match=r"^row 2 has no column 'a' \(it has: q\)"):
        F.prompt_response_chats([rows[0], {"q": "x"}], "q", "a")
    with pytest.raises(InvalidInput, match=r"^row 2: column 'a' is empty: fill it in or drop the row$"):
        F.prompt_response_chats([rows[0], {"q": "x", "a": None}], "q", "a")


# -- the default chat template ------------------------------------------------------------


def test_the_default_template_is_set_only_where_none_is_and_renders_plain_headers():
    tok = _char_tokenizer(None)
    assert F.ensure_chat_template(tok) is True and tok.chat_template == F.DEFAULT_CHAT_TEMPLATE
    assert F.ensure_chat_template(tok) is False
    text = tok.apply_chat_template(MULTI[:3], tokenize=False)
    assert text == ("### System:\nYou sell tea.\n\n### User:\nHi there\n\n"
                    "### Assistant:\nHello! Green tea?</s>")
    assert tok.apply_chat_template(MULTI[1:2], tokenize=False, add_generation_prompt=True) == \
        "### User:\nHi there\n\n### Assistant:\n"
    assert len(tok) == len(_char_tokenizer(None))  # no token added
    own = _char_tokenizer(CHATML)
    assert F.ensure_chat_template(own) is False and own.chat_template == CHATML
    no_eos = _char_tokenizer(None)
    no_eos.eos_token = None
    with pytest.raises(InvalidInput, match="neither a chat template nor an eos_token"):
        F.ensure_chat_template(no_eos)


# -- tokenizing ---------------------------------------------------------------------------


@pytest.mark.parametrize("make", [_char_tokenizer, _bpe_tokenizer], ids=["char", "bpe"])
@pytest.mark.parametrize("template, end, lead", [
    (CHATML, "<|im_end|>", ""),
    (F.DEFAULT_CHAT_TEMPLATE, "</s>", ""),
    (THINKING, "<|im_end|>", "<think>\n\n</think>\n\n"),
], ids=["chatml", "default", "thinking"])
def test_labels_cover_exactly_every_assistant_turn_and_its_end_of_turn(make, template, end, lead):
    tok = make(template)
    ex = F.tokenize_chat(tok, MULTI)
    rendered = tok.apply_chat_template(MULTI, tokenize=False)
    assert ex["input_ids"] == tok(rendered, add_special_tokens=False)["input_ids"]
    assert len(ex["labels"]) == len(ex["input_ids"])
    # the last turn of THINKING carries the think block it renders only there
    assert _labelled_runs(tok, ex) == ["Hello! Green tea?" + end, lead + "我们卖温暖的绿茶。" + end]
    unlabelled = tok.decode([t for t, label in zip(ex["input_ids"], ex["labels"], strict=True)
                             if label == F.IGNORE_INDEX], skip_special_tokens=False)
    for turn in MULTI:
        assert (turn["content"] in unlabelled) == (turn["role"] != "assistant")
    assert tok.decode(ex["input_ids"], skip_special_tokens=False) == rendered  # Chinese round-trips


def test_a_template_that_moves_the_system_prompt_to_the_last_user_turn_still_labels_the_answers():
    # Like Mistral's: the system text goes before the last user turn, so the rendering of a
    # conversation's start is not where the whole rendering has it; the answers are found by their text.
    moving = ("{{ bos_token }}{% for m in messages[1:] %}{% if m['role'] == 'user' %}{{ '[INST] ' }}"
              "{% if loop.index >= loop.length - 1 %}{{ messages[0]['content'] + '\n\n' }}"
              "{% endif %}{{ m['content'] + '[/INST]' }}"
              "{% else %}{{ ' ' + m['content'] + eos_token }}{% endif %}{% endfor %}")
    tok = _char_tokenizer(moving)
    ex = F.tokenize_chat(tok, MULTI)
    rendered = tok.apply_chat_template(MULTI, tokenize=False)
    prompt = tok.apply_chat_template(MULTI[:2], tokenize=False, add_generation_prompt=True)
    assert not rendered.startswith(prompt)  # the case this covers
    assert ex["input_ids"] == tok(rendered, add_special_tokens=False)["input_ids"]
    # the first answer is found by its text; the last starts where the generation prompt ends, so it
    # keeps the space the template writes before an answer
    assert _labelled_runs(tok, ex) == ["Hello! Green tea?</s>", " 我们卖温暖的绿茶。</s>"]


def test_a_chinese_conversation_read_from_a_file_tokenizes_to_its_answer(tmp_path):
    tok = _bpe_tokenizer(None)
    F.ensure_chat_template(tok)
    record = {"conversations": [{"from": "human", "value": "写一段文案"}, {"from": "gpt", "value": "我们卖温暖的绿茶。"}]}
    path = _write(tmp_path / "zh.jsonl", [record], bom=True)
    (chat,) = F.read_chat_jsonl(path)
    ex = F.tokenize_chat(tok, chat)
    assert _labelled_runs(tok, ex) == ["我们卖温暖的绿茶。</s>"]
    assert tok.decode(ex["input_ids"], skip_special_tokens=False) == \
        "### User:\n写一段文案\n\n### Assistant:\n我们卖温暖的绿茶。</s>"


def test_truncation_keeps_the_start():
    tok = _char_tokenizer()
    full = F.tokenize_chat(tok, MULTI)
    cut = F.tokenize_chat(tok, MULTI, max_length=40)
    assert cut == {"input_ids": full["input_ids"][:40], "labels": full["labels"][:40]}
    assert F.tokenize_chat(tok, MULTI, max_length=10_000) == full


def test_tokenizing_refuses_what_it_cannot_label():
    with pytest.raises(InvalidInput, match=r"no chat template: call ensure_chat_template\(tokenizer\) first"):
        F.tokenize_chat(_char_tokenizer(None), MULTI)
    with pytest.raises(InvalidInput, match=r"turn 2's content is not text \(NoneType\)"):
        F.tokenize_chat(_char_tokenizer(), [MULTI[1], {"role": "assistant"}])
    with pytest.raises(InvalidInput, match="invalid max_length 1: pass a whole number >= 2"):
        F.tokenize_chat(_char_tokenizer(), MULTI, max_length=1)
    with pytest.raises(InvalidInput, match="cannot tokenize the conversation: the conversation ends with a "
                                           "'user'"):
        F.tokenize_chat(_char_tokenizer(), MULTI[:4])
    drops = ("{% for m in messages %}{% if m['role'] != 'assistant' %}{{ m['content'] }}{% endif %}"
             "{% endfor %}")
    with pytest.raises(InvalidInput, match="does not write assistant turn 3's text"):
        F.tokenize_chat(_char_tokenizer(drops), MULTI[:3])
    refuses = "{{ raise_exception('Conversation roles must alternate user/assistant') }}"
    with pytest.raises(InvalidInput, match="chat template refused this conversation: Conversation roles must "
                                           "alternate user/assistant"):
        F.tokenize_chat(_char_tokenizer(refuses), MULTI[1:3])


# -- packing ------------------------------------------------------------------------------


def test_packing_makes_exact_blocks_and_keeps_labels_in_step():
    import random

    rng = random.Random(0)
    tok = _char_tokenizer()
    chats = [[{"role": "user", "content": "".join(rng.choices("abc 你好", k=rng.randint(1, 9)))},
              {"role": "assistant", "content": "".join(rng.choices("xyz 茶", k=rng.randint(1, 9))) + "!"}]
             for _ in range(12)]
    examples = [F.tokenize_chat(tok, c) for c in chats]
    ids = [t for e in examples for t in e["input_ids"]]
    labels = [x for e in examples for x in e["labels"]]
    block = 16
    assert len(ids) % block  # so the last block is partial
    dropped = F.pack(examples, block)
    assert len(dropped) == len(ids) // block
    assert all(len(b["input_ids"]) == len(b["labels"]) == block for b in dropped)
    assert [t for b in dropped for t in b["input_ids"]] == ids[: len(dropped) * block]
    assert [x for b in dropped for x in b["labels"]] == labels[: len(dropped) * block]
    padded = F.pack(examples, block, pad_id=tok.pad_token_id)
    assert len(padded) == len(dropped) + 1
    assert all(len(b["input_ids"]) == len(b["labels"]) == block for b in padded)
    rest = len(ids) % block
    assert padded[-1]["input_ids"] == ids[-rest:] + [tok.pad_token_id] * (block - rest)
    assert padded[-1]["labels"] == labels[-rest:] + [F.IGNORE_INDEX] * (block - rest)
    for b in padded:
        assert all(x in (F.IGNORE_INDEX, t) for t, x in zip(b["input_ids"], b["labels"], strict=True))
    with pytest.raises(InvalidInput, match="example 2 has 3 input_ids and 2 labels: they must pair"):
        F.pack([examples[0], {"input_ids": [1, 2, 3], "labels": [1, 2]}], block)
    with pytest.raises(InvalidInput, match=f"the examples hold {len(ids)} tokens, fewer than one block of "
                                           "100000"):
        F.pack(examples, 100_000)
    with pytest.raises(InvalidInput, match="invalid block size 1: pass a whole number >= 2"):
        F.pack(examples, 1)


def test_the_module_does_not_import_torch():
    code = "import sys, aigc.pretrained.formats; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
