import math

import pytest
import torch

from aigc.errors import InvalidInput
from aigc.sampling import StopMatcher, apply_stops, check_sampling, logprobs_of, sample_next_token


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def logits():
    return torch.randn(4, 50, generator=gen(0)) * 2  # (B, V)


def draws(logits, seed, n, **kw):
    g = gen(seed)
    return torch.stack([sample_next_token(logits, g, **kw) for _ in range(n)])  # (n, B)


def test_greedy_is_argmax(logits):
    out = sample_next_token(logits, gen(0), temperature=0)
    assert out.dtype == torch.long and out.shape == (4,)
    assert torch.equal(out, logits.argmax(-1))


def test_same_seed_same_tokens_different_seed_differs(logits):
    a, b, c = draws(logits, 7, 200), draws(logits, 7, 200), draws(logits, 8, 200)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    # rows are sampled independently: each row draws many different tokens
    assert all(len(set(a[:, r].tolist())) > 5 for r in range(4))


def test_top_k_1_and_tiny_top_p_are_greedy(logits):
    greedy = logits.argmax(-1).expand(300, -1)
    assert torch.equal(draws(logits, 1, 300, top_k=1), greedy)
    assert torch.equal(draws(logits, 2, 300, top_p=1e-6), greedy)


def test_top_k_restricts_support(logits):
    out = draws(logits, 3, 2000, top_k=5)  # (2000, B)
    allowed = torch.topk(logits, 5, dim=-1).indices  # (B, 5)
    for r in range(4):
        seen = set(out[:, r].tolist())
        assert seen <= set(allowed[r].tolist())
        assert len(seen) == 5  # and all five do occur


def test_top_p_keeps_smallest_set_reaching_p():
    # probabilities 0.5, 0.3, 0.15, 0.05: top_p=0.7 needs the first two, never the last two
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    out = draws(logits, 4, 2000, top_p=0.7)[:, 0]
    assert set(out.tolist()) == {0, 1}
    assert abs((out == 0).float().mean().item() - 0.5 / 0.8) < 0.05  # renormalized over the kept set


def test_temperature_sharpens_distribution(logits):
    hot = draws(logits, 5, 1000, temperature=2.0)
    cold = draws(logits, 5, 1000, temperature=0.2)
    top = logits.argmax(-1)
    assert (cold == top).float().mean() > (hot == top).float().mean() + 0.2


def test_repetition_penalty_lowers_repeated_token_probability():
    logits = torch.tensor([[2.0, 1.9, -1.0, -1.2], [2.0, 1.9, -1.0, -1.2]])
    prev = torch.tensor([[0, 2], [-1, -1]])  # row 1 is all padding: no penalty
    assert torch.equal(sample_next_token(logits, temperature=0, repetition_penalty=1.5, prev_tokens=prev),
                       torch.tensor([1, 0]))
    plain = draws(logits, 6, 2000)
    pen = draws(logits, 6, 2000, repetition_penalty=1.5, prev_tokens=prev)
    assert (pen[:, 0] == 0).float().mean() < (plain[:, 0] == 0).float().mean() - 0.1
    assert (pen[:, 0] == 2).float().mean() < (plain[:, 0] == 2).float().mean()  # negative logit: multiplied
    assert abs((pen[:, 1] == 0).float().mean() - (plain[:, 1] == 0).float().mean()) < 0.05


def test_check_sampling_messages():
    with pytest.raises(InvalidInput, match=r"temperature must be >= 0 \(0 means greedy\), got -1"):
        check_sampling(temperature=-1)
    with pytest.raises(InvalidInput, match=r"top_p must be in \(0, 1\], got 2"):
        check_sampling(top_p=2)
    with pytest.raises(InvalidInput, match=r"top_p must be in \(0, 1\], got 0"):
        check_sampling(top_p=0)
    with pytest.raises(InvalidInput, match=r"top_k must be an integer >= 1 .*got -1"):
        check_sampling(top_k=-1)
    with pytest.raises(InvalidInput, match=r"repetition_penalty must be > 0 .*got 0"):
        check_sampling(repetition_penalty=0)
    with pytest.raises(InvalidInput, match="temperature"):
        sample_next_token(torch.zeros(1, 3), temperature=-1)
    check_sampling(temperature=0, top_k=0, top_p=1.0, repetition_penalty=1.2)  # all valid


def test_logprobs_of_chosen_and_top_alternatives():
    logits = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]]).log()
    lp = logprobs_of(logits, torch.tensor([1, 2]), top_n=2)
    assert torch.allclose(lp.token, torch.tensor([math.log(0.3), math.log(0.8)]))
    assert lp.top_ids[0].tolist() == [0, 1] and lp.top_ids[1, 0] == 2 and lp.top_ids[1, 1] in (0, 1)
    assert torch.allclose(lp.top_values[0], torch.tensor([math.log(0.5), math.log(0.3)]))
    seq = logprobs_of(torch.randn(2, 5, 7), torch.zeros(2, 5, dtype=torch.long))  # (B, T, V) scoring
    assert seq.token.shape == (2, 5) and seq.top_ids.shape == (2, 5, 0)


def test_stop_matcher_across_chunk_boundaries():
    m = StopMatcher(["STOP"])
    assert m.feed("Hel") == ("Hel", False)
    assert m.feed("lo ST") == ("lo ", False)  # "ST" held back: it may begin "STOP"
    assert m.feed("OP more") == ("", True)
    assert m.feed("after") == ("", True)
    assert m.flush() == ""


def test_stop_matcher_releases_false_prefix_and_flushes():
    m = StopMatcher(["STOP"])
    assert m.feed("a S") == ("a ", False)
    assert m.feed("T") == ("", False)
    assert m.feed("AR") == ("STAR", False)  # not a stop after all
    assert m.feed("x ST") == ("x ", False)
    assert m.flush() == "ST"  # stream ended: the held-back partial prefix is released


def test_stop_matcher_multiple_stops_and_stop_at_start():
    m = StopMatcher(["\n\n", "END", "</s>"])
    assert m.feed("one\ntwo E") == ("one\ntwo ", False)
    assert m.feed("N") == ("", False)
    assert m.feed("Tless </") == ("ENTless ", False)  # "EN" was not "END"
    assert m.feed("s> tail") == ("", True)

    m = StopMatcher(["abc", "b"])
    assert m.feed("xab") == ("xa", True)  # earliest match wins, whichever stop it is

    m = StopMatcher(["STOP"])
    assert m.feed("STOP right away") == ("", True)


def test_apply_stops_and_validation():
    assert apply_stops("hello STOP world", ["STOP"]) == ("hello ", True)
    assert apply_stops("hello world", ["STOP", "\n"]) == ("hello world", False)
    assert apply_stops("a\nb STOP", "\n") == ("a", True)  # a bare string is one stop
    assert apply_stops("text", []) == ("text", False)
    with pytest.raises(InvalidInput, match="stop strings must be non-empty"):
        StopMatcher(["ok", ""])


def test_uniforms_for_several_generators_equal_one_call_each():
    from aigc.sampling import uniforms

    def gens():
        return [torch.Generator().manual_seed(s) for s in (1, 2, 3)]

    one_by_one = torch.cat([uniforms(n, g, "cpu") for n, g in zip((1, 2, 1), gens())])
    together = uniforms([1, 2, 1], gens(), "cpu")
    assert torch.equal(one_by_one, together) and together.shape == (4,)
    assert bool((together > 0).all()) and bool((together <= 1).all())
