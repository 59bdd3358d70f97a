"""Serving a run adapted from a pretrained base (issue 12, part 3): the engine decodes it through
FastLM's slot cache in the one decoding core, so batched requests get what they get alone and
what the plain generator makes; a real uvicorn answers the official openai client's chat through
the base's chat template, streamed and not."""

from __future__ import annotations

import pytest
import torch
from helpers import LiveServer
from test_adapted_runs import tiny_shop_workspace

import aigc
from aigc.engine import Engine, TextRequest
from aigc.decoding import Sampling
from aigc.server import Settings


@pytest.fixture(scope="module")
def adapted_ws(tmp_path_factory):
    root = tmp_path_factory.mktemp("adapted")
    ws = tiny_shop_workspace(root)
    torch.manual_seed(0)
    aigc.train("shop", base="tiny", method="full", name="a", prompt_template="write about {topic}", max_steps=300,
               lr=1e-2, batch_size=8, eval_every=300, adapt={"block_size": 96}, workspace=ws)
    return ws


def test_the_served_model_is_fastlm_and_batched_requests_equal_alone_and_the_generator(adapted_ws, monkeypatch):
    import aigc.sampling as sampling_module

    # float weights, the reference: bit-equal whatever the batch or a cached prefix (the quantized
    # formats pick their copy by the rows of a product, tests/test_pretrained_decoder.py)
    monkeypatch.setenv("AIGC_DECODE_WEIGHTS", "float")
    gen = aigc.load("a", workspace=adapted_ws)
    assert type(gen.model).__name__ == "FastLM"  # the slot cache, not the plain forward
    eos = gen.tokenizer.eos_id
    original = sampling_module.next_token_probs

    # every sample runs its full length (45+ tokens: the first must still be decoding when the fourth's prefill
    # is done, or the peak batch is 3 on a busy machine), so all four decode together
    def no_end(logits, *args, **kw):
        logits = logits.clone()
        logits[:, eos] = float("-inf")
        return original(logits, *args, **kw)

    monkeypatch.setattr(sampling_module, "next_token_probs", no_end)
    asks = [("", {"topic": "tea"}, 1), ("", {"topic": "pan"}, 2), ("say more", None, 3), ("", {"topic": "tea"}, 4)]

    def req(prompt, cond, seed):
        return TextRequest(model="a", prompt=prompt, cond=cond,
                           sampling=Sampling(max_new_tokens=40 + 5 * seed, temperature=1.0, seed=seed))

    engine = Engine(adapted_ws, max_batch=8, log=False)
    try:
        alone = [engine.generate(req(*a)) for a in asks]
        handles = [engine.submit(req(*a)) for a in asks]
        together = [h.wait() for h in handles]
    finally:
        engine.close()
    assert [r.peak_batch for r in together] == [4, 4, 4, 4]
    assert [r.texts for r in together] == [r.texts for r in alone]
    for (p, c, seed), r in zip(asks, alone):
        assert gen.generate(p, cond=c, seed=seed, max_new_tokens=40 + 5 * seed, temperature=1.0) == r.texts


def test_openai_chat_goes_through_the_chat_template_streamed_and_not(adapted_ws):
    from openai import BadRequestError, OpenAI

    with LiveServer(adapted_ws, Settings(max_tokens=64, default_max_tokens=32, max_batch=4)) as live:
        client = OpenAI(base_url=live.url + "/v1", api_key="unused", max_retries=0)
        assert "a" in {m.id for m in client.models.list()}
        messages = [{"role": "user", "content": "write about pan"}]
        chat = client.chat.completions.create(model="a", messages=messages, max_tokens=30, temperature=0)
        answer = chat.choices[0].message.content
        assert answer.replace(" ", "").startswith("ironsearoil") and chat.choices[0].finish_reason == "stop"
        chunks = list(client.chat.completions.create(model="a", messages=messages, max_tokens=30, temperature=0,
                                                     stream=True))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == answer
        # the same request as a completion with the condition: the run's template makes the same turn
        completion = client.completions.create(model="a", prompt="", max_tokens=30, temperature=0,
                                               extra_body={"cond": {"topic": "pan"}})
        assert completion.choices[0].text == answer
        with pytest.raises(BadRequestError, match="guidance"):
            client.chat.completions.create(model="a", messages=messages, extra_body={"guidance": 2.0})
        with pytest.raises(BadRequestError, match="messages"):  # a conversation ending on the assistant
            client.chat.completions.create(model="a", messages=[*messages, {"role": "assistant", "content": "x"}])


def test_two_lora_runs_share_one_base_in_memory_and_each_answers_as_its_merged_model(adapted_ws):
    from aigc.adapted import load_model
    from aigc.pretrained.generator import ChatGenerator

    for name, template in (("l1", "write about {topic}"), ("l2", "tell me of {topic}")):
        aigc.train("shop", base="tiny", name=name, prompt_template=template, max_steps=40, lr=3e-2, batch_size=8,
                   eval_every=40, adapt={"block_size": 96, "r": 4, "alpha": 8}, workspace=adapted_ws)
    g1, g2 = aigc.load("l1", workspace=adapted_ws), aigc.load("l2", workspace=adapted_ws)
    assert type(g1.model).__name__ == "LoraFastLM" and g1.model.base is g2.model.base  # one base, two adapters
    for name, gen in (("l1", g1), ("l2", g2)):
        run_dir = adapted_ws.run_path(name)
        merged, tok = load_model(adapted_ws, name, aigc.adapted.read_spec(run_dir), run_dir)
        reference = ChatGenerator(merged, tok, gen.template, gen.cond_columns, name=name)
        for topic in ("tea", "pan"):
            ask = dict(cond={"topic": topic}, temperature=0, max_new_tokens=24)
            assert gen.generate(**ask) == reference.generate(**ask)
    ids = torch.tensor([g1.context_ids("", {"topic": "tea"})])
    with torch.no_grad():  # the two adapters are not the same function of the shared base
        assert not torch.allclose(g1.model(ids)[0], g2.model(ids)[0], atol=1e-3)
