"""The serving engine: continuous batching equals running alone, cancellation, queue limits,
slot caches equal the plain cache, loading and eviction, and the generation log."""

from __future__ import annotations

import threading
import time

import pytest
import torch

import aigc
from aigc import logbook
from aigc.engine import Engine, ImageRequest, TextRequest
from aigc.errors import InvalidInput, NotFound, Overloaded
from aigc.generation import Sampling
from aigc.models.registry import get_family, make_config

from helpers import never_ending_text, write_corpus


@pytest.fixture()
def served(served_ws):
    return served_ws


def _req(model="g", seed=1, **kw):
    sampling = dict(max_new_tokens=kw.pop("max_new_tokens", 24), temperature=kw.pop("temperature", 1.0),
                    seed=seed, stop=kw.pop("stop", ()), min_new_tokens=kw.pop("min_new_tokens", 0))
    return TextRequest(model=model, sampling=Sampling(**sampling), **kw)


@pytest.mark.parametrize("family", ["gpt", "lstm"])
def test_slot_decoding_equals_the_plain_cache_at_mixed_lengths(family):
    torch.manual_seed(0)
    fam = get_family(family)
    model = fam(make_config(fam, "tiny", {"vocab_size": 17})).eval()
    a, b = torch.randint(0, 17, (1, 5)), torch.randint(0, 17, (1, 9))
    slots = model.init_slots(4)
    model.prefill_slots(a, slots, [0])
    model.prefill_slots(b, slots, [1])
    nxt = torch.tensor([3, 4])
    batched = model.decode_slots(nxt, slots)  # two rows at lengths 5 and 9 in one step
    for row, ctx in enumerate((a, b)):
        cache = model.init_cache(1)
        model.forward_cached(ctx, cache)
        alone = model.forward_cached(nxt[row : row + 1, None], cache)
        torch.testing.assert_close(batched[row : row + 1], alone, rtol=1e-5, atol=1e-5)
    slots.move(1, 0)  # row 1 -> row 0: the next step of "b" must continue where it was
    cache = model.init_cache(1)
    model.forward_cached(torch.cat([b, nxt[1:, None]], 1), cache)
    torch.testing.assert_close(model.decode_slots(torch.tensor([5]), slots),
                               model.forward_cached(torch.tensor([[5]]), cache), rtol=1e-5, atol=1e-5)


def _without_end_of_text(monkeypatch, ws, run="g"):
    """Every request runs to its max_new_tokens, however its run trained: end-of-text is never drawn,
    by the engine or the generator (every token drawn goes through next_token_probs)."""
    import aigc.sampling as sampling_module

    eos = aigc.load(run, workspace=ws).tokenizer.eos_id
    original = sampling_module.next_token_probs

    def wrapped(logits, *args, **kw):
        logits = logits.clone()
        logits[:, eos] = float("-inf")
        return original(logits, *args, **kw)

    monkeypatch.setattr(sampling_module, "next_token_probs", wrapped)


@pytest.mark.parametrize("model", ["g", "l"])
def test_continuous_batching_gives_each_request_what_it_gets_alone(served, model, monkeypatch):
    # Long enough (40+ tokens, no early end) that all four are surely decoding at once.
    _without_end_of_text(monkeypatch, served, model)
    prompts = [("apple", {"fruit": "apple"}, 1), ("猕猴桃", {"fruit": "kiwi"}, 2), ("", None, 3), ("red", None, 4)]
    engine = Engine(served, max_batch=8, log=False)
    try:
        alone = [engine.generate(_req(model, seed, prompt=p, cond=c, max_new_tokens=40 + 9 * seed))
                 for p, c, seed in prompts]
        # All at once: their prefills run one after another beside the batch, so each joins a batch
        # that is already decoding.
        handles = [engine.submit(_req(model, seed, prompt=p, cond=c, max_new_tokens=40 + 9 * seed))
                   for p, c, seed in prompts]
        together = [h.wait() for h in handles]
    finally:
        engine.close()
    assert [r.peak_batch for r in alone] == [1, 1, 1, 1], "alone means alone"
    assert [r.peak_batch for r in together] == [4, 4, 4, 4], "the four shared decode steps"
    assert [r.texts for r in together] == [r.texts for r in alone]
    gen = aigc.load(model, workspace=served)
    for (p, c, seed), r in zip(prompts, alone):  # and what the plain generator makes
        assert gen.generate(p, cond=c, seed=seed, max_new_tokens=40 + 9 * seed, temperature=1.0) == r.texts


def test_guided_requests_batched_equal_alone_and_the_generator(served, monkeypatch):
    """Under classifier-free guidance a sample takes two rows (conditional and unconditional) that
    see the same tokens; batched with others, each request still gets what it gets alone."""
    from aigc.data import textstream

    # The unconditional context is the bare start marker here, whatever the run was trained with:
    # this checks the mechanics; test_text_models checks a run trained with condition dropout.
    monkeypatch.setattr(textstream, "null_prefix_ids", lambda tok, cols: [tok.eos_id])
    _without_end_of_text(monkeypatch, served)
    reqs = [("apple", {"fruit": "apple"}, 1, 2.0), ("猕猴桃", {"fruit": "kiwi"}, 2, 3.0),
            ("", {"fruit": "kiwi"}, 3, 1.0), ("red", None, 4, 2.0)]

    def req(p, c, seed, g, via_request=True):
        r = _req("g", seed, prompt=p, cond=c, max_new_tokens=40 + 9 * seed)
        if via_request:
            r.guidance = g  # the field the HTTP routes set
        else:
            r.sampling.guidance = g
        return r

    engine = Engine(served, max_batch=8, log=False)
    try:
        alone = [engine.generate(req(*r, via_request=i % 2 == 0)) for i, r in enumerate(reqs)]
        handles = [engine.submit(req(*r)) for r in reqs]
        together = [h.wait() for h in handles]
        # the same requests without guidance: it must change what at least one of them drew
        unguided = [engine.generate(req(p, c, seed, 1.0)).texts for p, c, seed, _ in reqs]
    finally:
        engine.close()
    assert [r.peak_batch for r in together] == [4, 4, 4, 4]
    assert [r.texts for r in together] == [r.texts for r in alone]
    guided = [i for i, (_, c, _, g) in enumerate(reqs) if c and g != 1.0]
    assert any(unguided[i] != alone[i].texts for i in guided), "guidance changed nothing that was drawn"
    gen = aigc.load("g", workspace=served)
    for (p, c, seed, g), r in zip(reqs, alone):
        kw = dict(cond=c, seed=seed, max_new_tokens=40 + 9 * seed, temperature=1.0, guidance=g)
        assert gen.generate(p, **kw) == r.texts


def test_guidance_needs_rows_and_null_tokens(served, monkeypatch):
    from aigc.data import textstream

    engine = Engine(served, max_batch=4, log=False)
    try:
        monkeypatch.setattr(textstream, "null_prefix_ids", lambda tok, cols: [tok.eos_id])
        with pytest.raises(InvalidInput, match="two rows per sample.*at most 2"):
            engine.submit(_req(n=3, cond={"fruit": "apple"}, guidance=2.0))
        monkeypatch.setattr(textstream, "null_prefix_ids", lambda tok, cols: None)  # a run without them
        with pytest.raises(InvalidInput, match="trained with condition dropout"):
            engine.submit(_req(cond={"fruit": "apple"}, guidance=2.0))
    finally:
        engine.close()


def test_requests_past_the_context_refill_beside_the_batch_and_match_the_generator(served, monkeypatch):
    """Past its context a row is refilled on the prefill thread while the others keep decoding;
    each request still gets exactly what the plain generator makes (which refills inline)."""
    import aigc.sampling as sampling_module

    gen = aigc.load("g", workspace=served)
    block = gen.model.block_size
    eos = gen.tokenizer.eos_id

    def without_end_of_text(original):  # every request runs to max_new_tokens, however it trained
        def wrapped(logits, *args, **kw):
            logits = logits.clone()
            logits[:, eos] = float("-inf")
            return original(logits, *args, **kw)
        return wrapped

    # Every token drawn, by the engine and the generator alike, goes through next_token_probs.
    monkeypatch.setattr(sampling_module, "next_token_probs",
                        without_end_of_text(sampling_module.next_token_probs))
    reqs = [("apple", 1, 2 * block), ("猕猴桃", 2, block + 5), ("", 3, 3 * block // 2), ("red", 4, 2 * block)]
    engine = Engine(served, max_batch=4, log=False)
    try:
        handles = [engine.submit(_req("g", seed, prompt=p, max_new_tokens=n)) for p, seed, n in reqs]
        results = [h.wait() for h in handles]
    finally:
        engine.close()
    assert [r.completion_tokens for r in results] == [n for _, _, n in reqs], "every request ran past its context"
    for (p, seed, n), r in zip(reqs, results):
        assert r.texts == gen.generate(p, seed=seed, max_new_tokens=n, temperature=1.0)


def test_n_samples_stream_events_and_finish_reasons(served):
    engine = Engine(served, log=False)
    try:
        handle = engine.submit(_req(prompt="apple", n=3, max_new_tokens=12, logprobs=2))
        events = [e for e in handle if not hasattr(e, "status")]
        result = handle.result
    finally:
        engine.close()
    assert result.status == "ok" and len(result.texts) == 3
    for i in range(3):
        mine = [e for e in events if e.index == i]
        assert "".join(e.text for e in mine) == result.texts[i]
        assert mine[-1].finish_reason in ("stop", "length") and all(e.finish_reason is None for e in mine[:-1])
        tokens = [t for e in mine for t in e.tokens]
        assert all(t.logprob <= 0 and len(t.top) == 2 for t in tokens)
    assert result.completion_tokens == sum(1 for e in events for _ in e.tokens) - sum(
        1 for f in result.finish_reasons if f == "stop")  # end-of-text is sampled but not counted


def test_cancel_frees_the_rows_within_a_step(served):
    # safety off: the output rail holds text back to a sentence end, and this test acts on the first token
    engine = Engine(served, max_batch=2, log=False, safety=False)
    try:
        long = engine.submit(_req(prompt="apple", max_new_tokens=10_000, min_new_tokens=10_000, stop=()))
        it = iter(long)
        next(it)  # it is decoding
        long.cancel()
        result = long.wait()
        assert result.status == "cancelled" and result.completion_tokens < 10_000
        assert engine.stats()["active_rows"] == 0
        again = engine.generate(_req(prompt="apple", n=2, max_new_tokens=5))  # both rows are free again
        assert again.status == "ok"
    finally:
        engine.close()


def test_a_full_queue_refuses_with_overloaded(served):
    engine = Engine(served, max_batch=1, max_queue=2, log=False, safety=False)  # acts on the first token
    try:
        running = engine.submit(_req(prompt="apple", max_new_tokens=10_000, min_new_tokens=10_000))
        next(iter(running))
        queued = [engine.submit(_req(prompt="apple", max_new_tokens=3)) for _ in range(2)]
        with pytest.raises(Overloaded, match="queue is full"):
            engine.submit(_req(prompt="apple", max_new_tokens=3))
        running.cancel()
        assert [h.wait().status for h in queued] == ["ok", "ok"]
    finally:
        engine.close()


def test_a_request_that_finds_a_free_row_is_not_refused_by_a_full_queue(served, monkeypatch):
    """max_queue bounds the requests that wait for a row: two sent together to a batch of two rows
    and a queue of one place both go (the first still queued, not yet admitted, when the second
    comes), a third takes the one place, a fourth is refused."""
    engine = Engine(served, max_batch=2, max_queue=1, log=False, safety=False)
    try:
        engine.generate(_req(prompt="apple", max_new_tokens=2))  # loaded, its batch of two rows made
        admit = engine._admit
        monkeypatch.setattr(engine, "_admit", lambda: None)  # the decode thread admits nothing for now
        first = engine.submit(_req(prompt="apple", max_new_tokens=3))
        second = engine.submit(_req(prompt="apple", max_new_tokens=3))  # one queued, one row still free
        third = engine.submit(_req(prompt="apple", max_new_tokens=3))  # no row left: the queue's one place
        with pytest.raises(Overloaded, match="queue is full"):
            engine.submit(_req(prompt="apple", max_new_tokens=3))
        monkeypatch.setattr(engine, "_admit", admit)
        with engine._lock:
            engine._wake.notify()
        assert [h.wait().status for h in (first, second, third)] == ["ok", "ok", "ok"]
    finally:
        engine.close()


def test_deadline_ends_a_request_as_timeout(served, monkeypatch):
    never_ending_text(monkeypatch, served, delay=0.02)
    engine = Engine(served, log=False)
    try:
        handle = engine.submit(_req(prompt="apple", max_new_tokens=100_000, timeout=0.3))
        events = list(handle)
    finally:
        engine.close()
    result = handle.result
    assert result.status == "timeout" and result.finish_reasons == ["timeout"]
    assert 0.3 <= result.total_s < 2 and events[-2].finish_reason == "timeout"  # the stream is closed too


def test_bad_requests_fail_before_queueing(served):
    engine = Engine(served, max_batch=4, log=False)
    try:
        with pytest.raises(NotFound, match="unknown run 'nope'"):
            engine.submit(_req("nope"))
        with pytest.raises(InvalidInput, match="at most 4"):
            engine.submit(_req(n=5))
        with pytest.raises(InvalidInput, match="never saw"):
            engine.submit(_req(prompt="Ωmega"))
        with pytest.raises(InvalidInput, match="temperature"):
            engine.submit(_req(temperature=-1))
        with pytest.raises(InvalidInput, match="text run"):
            engine.submit(ImageRequest("g"))
    finally:
        engine.close()


def test_memory_cap_unloads_the_least_recently_used_idle_run(served):
    engine = Engine(served, log=False)
    try:
        g = engine.get("g")
        # A loaded run counts its weights, its slot cache and the transposed copies decoding reads.
        model, slots = g.generator.model, g.batch.runner.slots
        weights = sum(t.numel() * t.element_size() for t in model.parameters())
        copies = sum(w.numel() * w.element_size()
                     for layer in slots.weights.layers for w in layer[1:3] + layer[4:])
        assert g.nbytes >= weights + 2 * slots.k.numel() * slots.k.element_size() + copies
        engine.memory_limit = g.nbytes + 1  # room for one run at a time
        engine.get("l")
        assert [e["name"] for e in engine.stats()["loaded"]] == ["l"]
        engine.generate(_req("g", max_new_tokens=3))
        assert [e["name"] for e in engine.stats()["loaded"]] == ["g"]
    finally:
        engine.close()


def test_keep_alive_zero_unloads_after_the_request(served):
    engine = Engine(served, log=False)
    try:
        engine.generate(_req(max_new_tokens=3, keep_alive=0))
        deadline = time.time() + 5
        while engine.stats()["loaded"] and time.time() < deadline:
            time.sleep(0.05)
        assert engine.stats()["loaded"] == []
    finally:
        engine.close()


def test_every_request_is_logged_before_its_result_arrives(served):
    engine = Engine(served, max_batch=4)
    results = []
    try:
        threads = [threading.Thread(target=lambda s=s: results.append(
            engine.generate(_req(prompt="apple", seed=s, max_new_tokens=8, options={"temperature": 1.0}))))
            for s in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for r in results:
            row = logbook.get(served, r.id)  # present the moment the caller has its result
            assert row["output"]["texts"] == r.texts and row["status"] == "ok"
            assert row["completion_tokens"] == r.completion_tokens and row["options"]["temperature"] == 1.0
    finally:
        engine.close()


def test_a_log_row_naming_no_column_is_refused_not_dropped(served):
    """Rows go in as parameters of one cached INSERT, which would ignore a key that names no column."""
    with pytest.raises(ValueError, match="no such generations column.*promt"):
        logbook.record(served, {"run": "x", "kind": "text", "status": "ok", "endpoint": "completions",
                                "promt": "typo", "latency_ms": 1.0})


def test_a_deleted_run_folder_is_a_clear_error(served, tmp_path):
    import shutil

    ws = aigc.open_workspace(tmp_path / "ws2")
    aigc.ingest(write_corpus(tmp_path / "c.txt"), "c", workspace=ws)
    aigc.train("c", family="gpt", preset="tiny", name="gone", workspace=ws, max_steps=2)
    shutil.rmtree(ws.run_path("gone"))
    engine = Engine(ws, log=False)
    try:
        with pytest.raises(NotFound, match="cannot be loaded"):
            engine.submit(_req("gone"))
    finally:
        engine.close()


def _consume(handle):
    """Read ``handle`` on a thread; returns (thread, events with the time each arrived)."""
    events: list[tuple[float, object]] = []

    def read():
        for event in handle:
            events.append((time.monotonic(), event))

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread, events


def test_a_blocked_log_write_holds_back_only_results_never_tokens(served, monkeypatch):
    """The log is written off the decode loop. While one row cannot be written (a locked database),
    other requests' tokens keep arriving; every result still comes only after its row is written."""
    gate, writing = threading.Event(), threading.Event()
    write = logbook.record_many

    def locked(ws, rows):
        writing.set()
        gate.wait(30)
        return write(ws, rows)

    monkeypatch.setattr(logbook, "record_many", locked)
    engine = Engine(served, max_batch=4)
    try:
        first = engine.submit(_req(prompt="apple", max_new_tokens=3))
        first_reader, first_events = _consume(first)
        assert writing.wait(30), "the first request finished and its row is being written"
        second = engine.submit(_req(prompt="red", seed=2, max_new_tokens=30))
        second_reader, second_events = _consume(second)
        deadline = time.monotonic() + 30
        def finished():
            return any(getattr(e, "finish_reason", None) for _, e in second_events)

        while time.monotonic() < deadline and not finished():
            time.sleep(0.01)
        streamed = [e for _, e in second_events]
        assert streamed and streamed[-1].finish_reason, "the second request streamed to its end meanwhile"
        assert first.result is None and second.result is None, "no result before its row is written"
        released = time.monotonic()
        gate.set()
        first_reader.join(30)
        second_reader.join(30)
        for handle, events in ((first, first_events), (second, second_events)):
            assert handle.result is not None and events[-1][0] >= released
            assert logbook.get(served, handle.result.id)["output"]["texts"] == handle.result.texts
        assert "".join(e.text for e in streamed) == second.result.texts[0]
    finally:
        gate.set()
        engine.close()


def test_a_run_loading_does_not_stall_other_runs_streams(served, monkeypatch):
    """A queued request whose run is not loaded (unloaded since it was checked) has the run loaded on
    the loader thread; the decode loop keeps streaming the other runs meanwhile."""
    from aigc import runs

    gate = threading.Event()
    gate.set()
    loaded_on = []
    load = runs.load

    def slow_load(ws, name, device=None, **kw):
        if name == "l":
            loaded_on.append(threading.current_thread().name)
            gate.wait(30)
        return load(ws, name, device, **kw)

    monkeypatch.setattr(runs, "load", slow_load)
    engine = Engine(served, max_batch=4, log=False)
    try:
        engine.get("g")
        lstm = engine.get("l")
        lstm.batch.reserved = lstm.batch.capacity  # no free row: its next request stays queued
        gate.clear()
        waiting = engine.submit(_req("l", prompt="apple", max_new_tokens=5))
        assert engine.unload("l"), "a queued request does not hold its run"
        streaming = engine.submit(_req("g", prompt="red", max_new_tokens=30))
        reader, events = _consume(streaming)
        reader.join(30)
        assert streaming.result is not None and streaming.result.status == "ok", "g streamed while l loads"
        assert engine.stats()["queue_depth"] == 1 and len(loaded_on) == 2, "l waits for its load"
        gate.set()
        assert waiting.wait().status == "ok"
        assert loaded_on[1].startswith("aigc-load"), loaded_on
    finally:
        gate.set()
        engine.close()
