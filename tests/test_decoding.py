"""The decoding core on its own, behind a toy model runner: a random table of next-token logits
with a small capacity, so rows fill and refill within a few tokens. What it shows holds for any
runner (the gpt and lstm slot caches, and later a pretrained model's cache): groups sampled in
one batch get what they get alone, full rows refill from the last three quarters of a block,
guidance combines log-probabilities, and both rows of a guided sample see the same tokens."""

from __future__ import annotations

import pytest
import torch

from aigc.data.tokenizers import TextTokenizer
from aigc.decoding import Batch, Sampling, SequenceGroup, choose_tokens, prefill, refill_window, run
from aigc.errors import InvalidInput


@pytest.fixture(scope="module")
def tok() -> TextTokenizer:
    return TextTokenizer.train(["abcdefgh " * 20, "好茶杯子 " * 20], kind="char")


class TableRunner:
    """A ModelRunner whose next-token logits depend on a row's last token and on how many tokens
    it holds (so a refill, which shortens a row, changes what comes next). It records what it was
    asked: every prefill's contexts and every decode step's batch size."""

    def __init__(self, vocab: int, rows: int, capacity: int = 8, block_size: int = 12, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.table = torch.randn(vocab, vocab, generator=g) * 3
        self.by_length = torch.randn(block_size + 1, vocab, generator=g)
        self.rows, self.capacity, self.block_size = rows, capacity, block_size
        self.device = torch.device("cpu")
        self.seqs: list[list[int]] = [[] for _ in range(rows)]
        self.prefills: list[list[list[int]]] = []
        self.steps: list[int] = []

    def _logits(self, seq: list[int]) -> torch.Tensor:
        return self.table[seq[-1]] + self.by_length[len(seq)]

    def prefill(self, idx):
        rows = idx.tolist()
        self.prefills.append(rows)
        return rows, torch.stack([self._logits(r) for r in rows])

    def load(self, state, rows):
        for seq, r in zip(state, rows):
            self.seqs[r] = list(seq)

    def decode(self, tokens):
        self.steps.append(tokens.shape[0])
        out = []
        for r, t in enumerate(tokens.tolist()):
            assert len(self.seqs[r]) < self.capacity, "a full row was fed: the core must refill it first"
            self.seqs[r].append(t)
            out.append(self._logits(self.seqs[r]))
        return torch.stack(out)

    def move(self, src, dst):
        self.seqs[dst] = list(self.seqs[src])

    def full_rows(self, live):
        return [r for r in range(live) if len(self.seqs[r]) >= self.capacity]


def _group(tok, seed, n=2, guidance=1.0, **sampling):
    s = Sampling(**{"max_new_tokens": 20, "temperature": 1.0, "seed": seed, "guidance": guidance, **sampling})
    ctx = [tok.eos_id] + tok.encode("abc")
    uncond = [tok.eos_id] + tok.encode("c") if guidance != 1.0 else None
    return SequenceGroup(ctx, n, s, torch.Generator().manual_seed(seed), tok, uncond)


def _texts(chunks, n):
    out = [""] * n
    for c in chunks:
        out[c.index] += c.text
    return out


SETTINGS = [dict(seed=1), dict(seed=2, n=3), dict(seed=3, top_k=4), dict(seed=4, repetition_penalty=1.3),
            dict(seed=5, guidance=2.5), dict(seed=6, guidance=0.5, top_p=0.9)]


def test_groups_in_one_batch_get_what_they_get_alone(tok):
    alone = []
    for kw in SETTINGS:
        group = _group(tok, **kw)
        alone.append(_texts(run(TableRunner(tok.vocab_size, group.width), group), group.n))

    groups = [_group(tok, **kw) for kw in SETTINGS]
    runner = TableRunner(tok.vocab_size, rows=sum(g.width for g in groups))
    batch = Batch(runner)
    chunks = {id(g): [] for g in groups}
    # Each joins the batch one step after the one before, as requests do in the engine.
    for joining in groups + [None] * 100:
        if joining is not None:
            first = prefill(runner, joining.prefill_parts(runner.block_size, runner.capacity))
            batch.install(joining, first)
            for pick in choose_tokens([(joining, None)], first.logits):
                chunks[id(joining)] += joining.accept(pick.ids)
        for full in batch.full():
            batch.remove(full)
            batch.install(full, prefill(runner, full.prefill_parts(runner.block_size, runner.capacity)))
        if batch.owners:
            for pick in batch.step():
                chunks[id(pick.group)] += pick.group.accept(pick.ids)
        for g in [g for g in batch.groups if g.done]:
            batch.remove(g)
        if not batch.groups and all(g.done for g in groups):
            break
    assert [_texts(chunks[id(g)], g.n) for g in groups] == alone
    assert max(runner.steps) == sum(g.width for g in groups), "every group decoded in one step together"
    assert all(g.peak_batch == len(groups) for g in groups)


def test_a_full_row_refills_from_the_last_three_quarters_of_its_block(tok):
    group = _group(tok, seed=7, n=2, max_new_tokens=30)
    runner = TableRunner(tok.vocab_size, group.width, capacity=8)
    list(run(runner, group))
    first, *refills = runner.prefills
    assert first == [[tok.eos_id] + tok.encode("abc")] * 2
    assert len(refills) >= 3, "30 new tokens in rows of 8 refill several times"
    window = refill_window(8)
    history = group.history().tolist()
    for refill in refills:
        # the newest token is left out of the prefill: the next decode step feeds it
        assert all(len(row) == window - 1 for row in refill)
        for row, full in zip(refill, history):
            starts = [i for i in range(len(full)) if full[i : i + len(row)] == row]
            assert starts, "each refill is a stretch of the row's own history"


def test_guidance_combines_log_probabilities_and_feeds_both_rows(tok):
    group = _group(tok, seed=8, n=2, guidance=3.0)
    assert group.width == 4 and group.guided
    logits = torch.randn(4, tok.vocab_size)
    lp = torch.log_softmax(logits, -1)
    expected = lp[2:] + 3.0 * (lp[:2] - lp[2:])
    torch.testing.assert_close(group.scores(logits), expected)
    group.accept([5, 6])
    assert group.last == [5, 6, 5, 6], "the unconditional row of each sample is fed the sampled token"
    assert group.history(0)[:, -1].tolist() == group.history(1)[:, -1].tolist() == [5, 6]


def test_guidance_one_or_no_unconditional_context_is_one_row_per_sample(tok):
    group = _group(tok, seed=9, n=3)
    assert group.width == 3 and not group.guided
    logits = torch.randn(3, tok.vocab_size)
    assert torch.equal(group.scores(logits), logits)


def test_end_of_text_is_never_drawn_before_min_new_tokens(tok):
    group = _group(tok, seed=10, n=2, max_new_tokens=8, min_new_tokens=5)
    logits = torch.zeros(2, tok.vocab_size)
    logits[:, tok.eos_id] = 50.0  # end-of-text all but certain
    other = [i for i in range(tok.vocab_size) if i != tok.eos_id]
    for _ in range(5):
        scores = group.scores(logits)
        assert torch.isneginf(scores[:, tok.eos_id]).all()
        assert torch.equal(scores[:, other], logits[:, other]), "nothing else changes"
        group.accept(other[:2])
    assert not group.done and torch.equal(group.scores(logits), logits), "after min_new_tokens it may end again"
    group.accept([tok.eos_id, tok.eos_id])
    assert group.done


def test_choose_tokens_never_picks_end_of_text_before_min_new_tokens_in_a_shared_batch(tok):
    held, free = _group(tok, seed=11, n=2, min_new_tokens=3), _group(tok, seed=12, n=2)
    logits = torch.full((4, tok.vocab_size), -50.0)
    logits[:, tok.eos_id] = 50.0
    picks = choose_tokens([(held, [0, 1]), (free, [2, 3])], logits)  # one sampling call for both
    tokens = {id(p.group): p.ids for p in picks}
    assert tok.eos_id not in tokens[id(held)] and tokens[id(free)] == [tok.eos_id] * 2


@pytest.mark.parametrize("bad", [-1, 9, 2.5, True])
def test_min_new_tokens_outside_zero_to_max_is_refused(bad):
    with pytest.raises(InvalidInput, match="min_new_tokens must be a whole number from 0 to max_new_tokens"):
        Sampling(max_new_tokens=8, min_new_tokens=bad).check()


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf"), "2", True])
def test_bad_guidance_is_refused(bad):
    with pytest.raises(InvalidInput, match="guidance must be a finite number >= 0"):
        Sampling(guidance=bad).check()
