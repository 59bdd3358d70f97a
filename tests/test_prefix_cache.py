"""The prefix cache: a shared prompt prefix runs once, and nothing generated changes.

A tiny gpt and a tiny random llama (FastLM), built here: a second request sharing a 40-token prefix
runs only its suffix (counted where the model runs its layers) and both requests draw the tokens
they draw without the cache, greedy and seeded; the logits of a hit are within 1e-5 of a full
prefill's (not bit-equal everywhere: aigc.decoding.prefix says why). Least-recently-used eviction
under a small budget, two threads prefilling through one cache, an adapter never served the base's
entries, and the engine: requests batched with prefix hits get what they get alone without a cache.
"""

from __future__ import annotations

import threading

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers

from aigc import sampling as sampling_module
from aigc.data.tokenizers import EOS, UNK, TextTokenizer
from aigc.decoding import PrefixCache, Sampling, SequenceGroup, SlotRunner, run
from aigc.engine import Engine, TextRequest
from aigc.errors import InvalidInput
from aigc.models.gpt import GPT, GPTConfig
from aigc.models.registry import get_family, make_config
from aigc.pretrained.decoder import FastLM

VOCAB = 64
SHARED = 40  # tokens every request below starts with (a system prompt, a template header)
# the method where each model kind runs its layers over a prefill's tokens: (idx (n, T), cache, ...)
RUNS_LAYERS = {"gpt": "forward_cached", "llama": "_prefill"}


def _tokenizer() -> TextTokenizer:
    vocab = {EOS: 0, UNK: 1, **{f"w{i}": i for i in range(2, VOCAB)}}
    hf = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    hf.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return TextTokenizer(hf)


def _perturbed(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every parameter moved at random, so the logits are peaked enough for greedy paths to vary."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.2)
    return model.eval()


def tiny_model(kind: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    if kind == "gpt":
        return _perturbed(GPT(GPTConfig(vocab_size=VOCAB, block_size=128, n_layer=2, n_head=2, n_embd=32)), seed)
    import transformers

    config = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                                      bos_token_id=0, eos_token_id=0, pad_token_id=0)
    return FastLM.from_hf(_perturbed(transformers.AutoModelForCausalLM.from_config(config), seed))


def _count_prefill_tokens(model: torch.nn.Module, kind: str) -> list[int]:
    """Tokens the model runs its layers over, one entry (rows x tokens) per prefill call."""
    counted: list[int] = []
    name = RUNS_LAYERS[kind]
    original = getattr(model, name)

    def counting(idx, cache, *args, **kw):
        counted.append(idx.numel())
        return original(idx, cache, *args, **kw)

    setattr(model, name, counting)  # an instance attribute: the class's method stays as it is
    return counted


def _generate(runner, context: list[int], tok, n: int, greedy: bool) -> list[list[int]]:
    s = Sampling(max_new_tokens=20, temperature=0.0 if greedy else 1.0, seed=7)
    group = SequenceGroup(context, n, s, torch.Generator().manual_seed(7), tok)
    list(run(runner, group))
    return group.history()[:, len(context) :].tolist()


@pytest.mark.parametrize("greedy", [True, False], ids=["greedy", "seeded"])
@pytest.mark.parametrize("kind", ["gpt", "llama"])
def test_a_shared_prefix_runs_once_and_changes_no_token(kind, greedy):
    model, tok = tiny_model(kind), _tokenizer()
    counted = _count_prefill_tokens(model, kind)
    g = torch.Generator().manual_seed(1)
    shared = [tok.eos_id] + torch.randint(2, VOCAB, (SHARED - 1,), generator=g).tolist()
    a = shared + torch.randint(2, VOCAB, (5,), generator=g).tolist()
    b = shared + torch.randint(2, VOCAB, (7,), generator=g).tolist()
    n = 1 if greedy else 2  # two samples: two rows of one context reuse one prefix
    cache = PrefixCache(block=8)  # 40 tokens are 5 whole blocks: the second request runs its suffix alone
    on, off = SlotRunner(model, n, prefix_cache=cache), SlotRunner(model, n, prefix_cache=None)

    with_cache = [_generate(on, ctx, tok, n, greedy) for ctx in (a, b)]
    assert counted == [n * len(a), n * (len(b) - SHARED)], "the second prefill ran more than its suffix"
    stats = cache.stats()
    assert (stats["lookups"], stats["hits"], stats["tokens_saved"]) == (2, 1, n * SHARED)
    counted.clear()
    without = [_generate(off, ctx, tok, n, greedy) for ctx in (a, b)]
    assert counted == [n * len(a), n * len(b)]
    assert with_cache == without
    assert len({t for sample in without[1] for t in sample}) >= 4, "varied enough to tell paths apart"
    # The logits of a hit against a full prefill of the same context: within 1e-5, the same argmax.
    ctx = torch.tensor([b] * n)
    hit, full = on.prefill(ctx)[1], off.prefill(ctx)[1]
    torch.testing.assert_close(hit, full, rtol=1e-5, atol=1e-5)
    assert torch.equal(hit.argmax(-1), full.argmax(-1))


def test_rows_of_different_contexts_reuse_their_common_cached_blocks():
    """A refill's rows (or guidance's two contexts) differ: each row's prefix comes from its own blocks."""
    model = tiny_model("gpt")
    g = torch.Generator().manual_seed(2)
    first, second = (torch.randint(2, VOCAB, (1, 35), generator=g) for _ in range(2))
    on, off = SlotRunner(model, 2), SlotRunner(model, 2, prefix_cache=None)
    on.prefill(first)
    on.prefill(second)  # both cached: two blocks each
    ctx = torch.cat([first, second])
    state, logits = on.prefill(ctx)
    ref_state, ref = off.prefill(ctx)
    assert on.prefix_cache.stats()["tokens_saved"] == 2 * 32
    torch.testing.assert_close(logits, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(state.k[:, :, :, :35], ref_state.k[:, :, :, :35], rtol=1e-5, atol=1e-5)
    mixed = torch.cat([first, torch.randint(2, VOCAB, (1, 35), generator=g)])  # one row has nothing cached
    on.prefill(mixed)
    assert on.prefix_cache.stats()["tokens_saved"] == 2 * 32, "a row without its prefix cached got a hit"


def _context(seed: int, blocks: int) -> torch.Tensor:
    """A context of ``blocks`` whole blocks of 16 and one token more, first token distinct per seed."""
    ids = torch.randint(2, VOCAB, (1, 16 * blocks + 1), generator=torch.Generator().manual_seed(seed))
    ids[0, 0] = seed
    return ids


def test_least_recently_used_blocks_go_first_and_a_leaf_before_its_parent():
    model = tiny_model("gpt")
    cache = PrefixCache(max_tokens=64)  # four blocks of 16
    runner = SlotRunner(model, 1, prefix_cache=cache)
    x, y, z = _context(2, 2), _context(3, 2), _context(4, 2)

    def saved(ctx) -> int:
        before = cache.stats()["tokens_saved"]
        runner.prefill(ctx)
        return cache.stats()["tokens_saved"] - before

    assert (saved(x), saved(y), saved(x)) == (0, 0, 32)  # x used last: y is the older
    assert saved(z) == 0  # two blocks more than fit: y's go
    assert cache.stats()["evicted_blocks"] == 2 and cache.stats()["cached_tokens"] == 64
    assert (saved(x), saved(z), saved(y)) == (32, 32, 0)
    # A chain longer than the budget keeps its first blocks; one block more evicts its deepest block,
    # never one whose child stays (that child could no longer be reached).
    long = _context(5, 6)
    assert saved(long) == 0 and cache.stats()["cached_tokens"] == 64
    assert saved(_context(6, 1)) == 0
    assert saved(long) == 48


def test_two_threads_prefill_through_one_cache():
    model = tiny_model("gpt")
    g = torch.Generator().manual_seed(3)
    shared = torch.randint(2, VOCAB, (1, 48), generator=g)
    contexts = [torch.cat([shared, torch.randint(2, VOCAB, (1, 3 + i % 5), generator=g)], 1) for i in range(24)]
    off = SlotRunner(model, 1, prefix_cache=None)
    expected = [off.prefill(ctx)[1] for ctx in contexts]
    runner = SlotRunner(model, 1, prefix_cache=PrefixCache(max_tokens=96))  # small: inserts evict meanwhile
    got: dict[int, torch.Tensor] = {}
    start = threading.Barrier(2)

    def work(part: int) -> None:
        start.wait()
        for i in range(part, len(contexts), 2):
            got[i] = runner.prefill(contexts[i])[1]

    threads = [threading.Thread(target=work, args=(p,)) for p in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(got) == list(range(len(contexts)))
    for i, logits in got.items():
        torch.testing.assert_close(logits, expected[i], rtol=1e-5, atol=1e-5)
    stats = runner.prefix_cache.stats()
    assert stats["lookups"] == 24 and stats["hits"] >= 22 and stats["cached_tokens"] <= 96


def _lora_state(lm: FastLM, seed: int) -> dict[str, torch.Tensor]:
    """A random rank-4 LoRA adapter on every layer's q and v projections, under peft's key names."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for i, layer in enumerate(lm.hf.model.layers):
        for proj in ("q_proj", "v_proj"):
            out, in_ = getattr(layer.self_attn, proj).weight.shape
            key = f"model.layers.{i}.self_attn.{proj}"
            state[f"{key}.lora_A.weight"] = torch.randn(4, in_, generator=g) * 0.3
            state[f"{key}.lora_B.weight"] = torch.randn(out, 4, generator=g) * 0.3
    return state


def test_an_adapter_is_never_served_its_base_entries():
    base = tiny_model("llama")
    adapted = base.with_lora(_lora_state(base, 1), alpha=8.0)
    ctx = _context(2, 3)
    cache = PrefixCache()  # shared on purpose: each runner's weights empty what the other cached
    SlotRunner(base, 1, prefix_cache=cache).prefill(ctx)
    _, logits = SlotRunner(adapted, 1, prefix_cache=cache).prefill(ctx)
    _, alone = SlotRunner(adapted, 1, prefix_cache=None).prefill(ctx)
    assert cache.stats()["hits"] == 0
    torch.testing.assert_close(logits, alone, rtol=1e-5, atol=1e-5)
    _, base_logits = SlotRunner(base, 1, prefix_cache=None).prefill(ctx)
    assert (logits - base_logits).abs().max() > 1e-2, "the adapter changes the logits"


def test_models_without_a_continuation_and_bad_sizes_are_refused():
    fam = get_family("lstm")
    lstm = fam(make_config(fam, "tiny", {"vocab_size": VOCAB})).eval()
    assert SlotRunner(lstm, 1).prefix_cache is None  # "auto": an lstm has no keys and values to reuse
    assert isinstance(SlotRunner(tiny_model("gpt"), 1).prefix_cache, PrefixCache)
    with pytest.raises(InvalidInput, match="continue_state.*LSTM.*pass None"):
        SlotRunner(lstm, 1, prefix_cache=PrefixCache())
    with pytest.raises(InvalidInput, match="max_tokens must be a whole number >= 16, got 8"):
        PrefixCache(max_tokens=8)
    with pytest.raises(InvalidInput, match="prefix_cache_tokens must be 0 \\(off\\) or .* >= 16.*got -1"):
        Engine(None, prefix_cache_tokens=-1)  # refused before it touches a workspace


# -- through the engine ----------------------------------------------------------------------------


def _no_end_of_text(monkeypatch, ws) -> None:
    """Every request runs to its max_new_tokens: end-of-text is never drawn."""
    import aigc

    eos, draw = aigc.load("g", workspace=ws).tokenizer.eos_id, sampling_module.next_token_probs
    monkeypatch.setattr(sampling_module, "next_token_probs",
                        lambda logits, *a, **kw: draw(logits.index_fill(1, torch.tensor([eos]), float("-inf")),
                                                      *a, **kw))


def test_engine_requests_batched_with_prefix_hits_get_what_they_get_alone(served_ws, monkeypatch):
    _no_end_of_text(monkeypatch, served_ws)
    shared = "apple red sweet apple sweet red red apple "  # 42 characters, a prefix of every prompt
    prompts = [shared + p for p in ("apple", "red", "sweet sweet", "apple red")]

    def req(i: int, prompt: str) -> TextRequest:  # logprobs: each drawn token's log-probability too
        return TextRequest(model="g", prompt=prompt, cond={"fruit": "apple"}, n=1 + i % 2, logprobs=0,
                           sampling=Sampling(max_new_tokens=30 + 4 * i, temperature=1.0, seed=i))

    def answers(handles) -> tuple[list, list[list[float]]]:
        """Each request's texts and the log-probabilities of its tokens, in the order drawn."""
        logprobs = [[t.logprob for event in h if not hasattr(event, "texts") for t in event.tokens or ()]
                    for h in handles]
        return [h.result for h in handles], logprobs

    engine = Engine(served_ws, max_batch=8, log=False, prefix_cache_tokens=0)
    try:
        alone, alone_logprobs = [], []
        for i, p in enumerate(prompts):  # one at a time: each is done before the next is submitted
            result, logprobs = answers([engine.submit(req(i, p))])
            alone += result
            alone_logprobs += logprobs
        assert engine.get("g").batch.runner.prefix_cache is None
        assert "prefix_cache" not in engine.stats()["loaded"][0]
    finally:
        engine.close()
    engine = Engine(served_ws, max_batch=8, log=False, prefix_cache_tokens=256)
    try:
        engine.generate(req(0, prompts[0]))  # the shared prefix is cached before the batch arrives
        together, together_logprobs = answers([engine.submit(req(i, p)) for i, p in enumerate(prompts)])
        stats = engine.stats()
        cache = engine.get("g").batch.runner.prefix_cache
    finally:
        engine.close()
    assert cache.max_tokens == 256
    assert max(r.peak_batch for r in together) >= 3
    assert [r.texts for r in together] == [r.texts for r in alone]
    for got, want in zip(together_logprobs, alone_logprobs):
        assert len(got) == len(want) > 0
        torch.testing.assert_close(torch.tensor(got), torch.tensor(want), rtol=0, atol=1e-5)
    assert stats["prefix_cache_hits"] >= 4 and stats["prefix_tokens_saved"] >= 6 * 32
    assert stats["loaded"][0]["prefix_cache"]["hits"] == stats["prefix_cache_hits"]


def test_the_serve_flag_and_the_server_setting_reach_the_engine(served_ws, monkeypatch):
    from fastapi.testclient import TestClient

    from aigc.server import Settings, create_app
    from aigc.server import run as server_run
    from helpers import run_cli

    seen = []
    monkeypatch.setattr(server_run, "run_server", lambda ws, settings, *a, **kw: seen.append(settings))
    assert run_cli("serve", "-w", served_ws.root, "--prefix-cache-tokens", "0").exit_code == 0
    assert run_cli("serve", "-w", served_ws.root).exit_code == 0
    assert [s.prefix_cache_tokens for s in seen] == [0, 8192]
    app = create_app(served_ws, Settings(log=False, prefix_cache_tokens=512))
    with TestClient(app):
        engine = app.state.shared["engine"]
        assert engine.prefix_cache_tokens == 512
        assert engine.get("g").batch.runner.prefix_cache.max_tokens == 512
