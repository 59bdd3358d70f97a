"""Rows of a runner shared by sequence groups: prefill, refill, one decode step, grouped sampling.

:class:`Batch` is what both callers run. :func:`run` drives one group to its end on a batch of
its own, prefilling inline (the plain generator); the serving engine keeps one batch per loaded
run, admits and drops groups between steps and prefills on a thread of its own, calling the same
:func:`prefill`, :meth:`Batch.install`, :meth:`Batch.full`, :meth:`Batch.step` and
:func:`choose_tokens`. So a request gets the same tokens whoever else is in its batch.

This module knows runners and groups. It knows nothing about threads, queues or HTTP.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

import torch
from torch import Tensor

from aigc import sampling as sampling_fns
from aigc.decoding.group import Chunk, SequenceGroup
from aigc.decoding.runner import ModelRunner


class Pick(NamedTuple):
    """A group's next tokens; ``scores`` (n, V) and ``token`` (n,) only when it wants them."""

    group: SequenceGroup
    ids: list[int]
    scores: Tensor | None
    token: Tensor | None


class Prefilled(NamedTuple):
    states: list[tuple[list[int], Any]]  # (rows of the group, runner state) per prefill call
    logits: Tensor  # (width, V) after each row's context, in the group's row order


def prefill(runner: ModelRunner, parts: list[tuple[list[int], Tensor]]) -> Prefilled:
    """Run a group's :meth:`~SequenceGroup.prefill_parts`. Touches no row of the runner, so it may run
    on another thread while the batch decodes."""
    states, logits = [], []
    for rows, ctx in parts:
        state, lg = runner.prefill(ctx)
        states.append((rows, state))
        logits.append(lg)
    return Prefilled(states, logits[0] if len(logits) == 1 else torch.cat(logits))  # parts come in row order


def choose_tokens(members: list[tuple[SequenceGroup, list[int] | None]], logits: Tensor) -> list[Pick]:
    """Each group's next tokens from ``logits`` (B, V), its rows ``logits[rows]`` (None: all of them).

    Groups with the same settings are sampled in one call (rows are independent); each group still
    draws its uniforms from its own generator, one per sample, so its tokens are those it would get
    alone (:func:`aigc.sampling.uniforms`, :func:`aigc.sampling.draw`).
    """
    by_key: dict[tuple | None, list[tuple[SequenceGroup, list[int] | None]]] = {}
    for group, rows in members:
        by_key.setdefault(group.group_key, []).append((group, rows))
    picks = []
    for key, groups in by_key.items():
        if key is None:  # a repetition penalty looks at each group's own history
            for group, rows in groups:
                scores = group.scores(logits, rows)
                token = group.choose(scores)
                picks.append(Pick(group, token.tolist(), scores, token))
            continue
        if any(group.guided or rows is None or group.holds_eos for group, rows in groups):
            lg = torch.cat([group.scores(logits, rows) for group, rows in groups])
        else:
            order = [r for _, rows in groups for r in rows]
            lg = logits if order == list(range(logits.shape[0])) else logits[order]
        probs, picked = sampling_fns.next_token_probs(lg, temperature=key[0], top_k=key[1], top_p=key[2])
        if picked is None:
            u = sampling_fns.uniforms([group.n for group, _ in groups],
                                      [group.generator for group, _ in groups], lg.device)
            picked = sampling_fns.draw(probs, u)
        ids, k = picked.tolist(), 0  # one read for the whole group; tensors per group only when wanted
        for group, _ in groups:
            n = group.n
            wants = group.want_scores
            picks.append(Pick(group, ids[k : k + n], lg[k : k + n] if wants else None,
                              picked[k : k + n] if wants else None))
            k += n
    return picks


class Batch:
    """The rows of one runner and the groups that hold them: row r belongs to ``owners[r]``
    (group, its row). Live rows are ``0..B-1``, kept packed: a leaving group's rows are filled
    with the last ones, so a step reads views, never a gathered copy."""

    def __init__(self, runner: ModelRunner):
        self.runner = runner
        self.owners: list[tuple[SequenceGroup, int]] = []
        self.groups: list[SequenceGroup] = []
        self.reserved = 0  # rows promised to groups whose prefill is running

    @property
    def capacity(self) -> int:
        return self.runner.rows

    @property
    def free(self) -> int:
        return self.capacity - len(self.owners) - self.reserved

    def install(self, group: SequenceGroup, prefilled: Prefilled) -> None:
        """Give ``group`` free rows holding its prefilled state; it decodes from the next step."""
        rows = list(range(len(self.owners), len(self.owners) + group.width))
        self.owners.extend((group, j) for j in range(group.width))
        group.rows = rows
        self.groups.append(group)
        for local, state in prefilled.states:
            self.runner.load(state, [rows[j] for j in local])
        group.started = True

    def remove(self, group: SequenceGroup) -> None:
        """Free ``group``'s rows, moving the last live rows into the holes (rows stay packed)."""
        if group not in self.groups:  # never installed, or sitting out a prefill
            return
        for r in sorted(group.rows, reverse=True):
            last = len(self.owners) - 1
            if r != last:
                self.runner.move(last, r)
                owner, j = self.owners[last]
                self.owners[r] = (owner, j)
                owner.rows[j] = r
            self.owners.pop()
        group.rows = []
        self.groups.remove(group)

    def full(self) -> list[SequenceGroup]:
        """Groups with a row whose cache is full: each must leave, prefill again from
        :meth:`SequenceGroup.prefill_parts` and come back before its next step."""
        at_cap = self.runner.full_rows(len(self.owners))
        return list(dict.fromkeys(self.owners[r][0] for r in at_cap))

    def step(self) -> list[Pick]:
        """Feed every live row its group's last token; every group's next tokens. The caller hands
        each pick to its group (:meth:`SequenceGroup.accept`); picks are taken before any group
        leaves, so a group that finishes cannot move another's rows under it."""
        tokens = torch.tensor([group.last[j] for group, j in self.owners], device=self.runner.device)
        logits = self.runner.decode(tokens)
        k = len(self.groups)
        for group in self.groups:
            if group.peak_batch < k:
                group.peak_batch = k
        return choose_tokens([(group, group.rows) for group in self.groups], logits)


def run(runner: ModelRunner, group: SequenceGroup) -> Iterator[Chunk]:
    """Decode ``group`` to its end on ``runner``, prefilling and refilling inline: the plain
    generator's loop. Yields its chunks of text as they complete."""
    batch = Batch(runner)
    first = prefill(runner, group.prefill_parts(runner.block_size, runner.capacity))
    batch.install(group, first)
    picks = choose_tokens([(group, None)], first.logits)
    while True:
        for pick in picks:
            yield from pick.group.accept(pick.ids)
        if group.done:
            return
        for full in batch.full():
            batch.remove(full)
            batch.install(full, prefill(runner, full.prefill_parts(runner.block_size, runner.capacity)))
        picks = batch.step()
