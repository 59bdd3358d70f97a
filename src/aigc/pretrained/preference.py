"""Preference tuning of a LoRA-adapted base under the one training loop: DPO on pairs, KTO on thumbs.

- **DPO** (Rafailov et al. 2023, "Direct Preference Optimization: Your Language Model is Secretly a
  Reward Model", arXiv:2305.18290) learns from :class:`PreferencePair` (a prompt, a chosen and a
  rejected response): ``-logsigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r)))``.
- **KTO** (Ethayarajh et al. 2024, "KTO: Model Alignment as Prospect Theoretic Optimization",
  arXiv:2402.01306) learns from unpaired :class:`Thumb` s (a prompt, a response, up or down), which
  is what a generation log's feedback gives: ``lambda_D * (1 - sigmoid(beta * (r - z0)))`` for a
  thumb up, ``lambda_U * (1 - sigmoid(beta * (z0 - r)))`` for a thumb down, where
  ``r = pi - ref``. The reference point ``z0`` is computed as TRL's ``KTOTrainer`` does, not by the
  paper's own simplification: each thumb's prompt is paired once, up front, with another example's
  response (the next one in the list with a different prompt), and ``z0`` is the batch mean of
  ``pi - ref`` over those mismatched rows, detached and clamped at 0.

``pi`` and ``ref`` are sums of the response tokens' log-probabilities (the prompt is not scored),
under the policy (adapters on) and under the reference, the same model with its adapters disabled
(peft's ``disable_adapter``) and no gradient: no second copy of the base is held, and the reference
is the base itself, unchanged by training. That is why only LoRA is accepted.

:class:`DriftGuard` keeps tuning from costing the model its command of real data: it scores held-out
text the run learned from (its data's val split) and vetoes weights whose perplexity there rose past
a limit over the run that learned from that data (the loop then goes back to the last weights within
it, and on at a lower rate or stops: ``TrainConfig.veto_backoffs``). Preference losses say nothing of it: a DPO or KTO loss falls as happily while the
model forgets how the business writes (measured on Gemma 3 270M: one round of 20 DPO steps at lr
2e-4 pleased a rater and raised the held-out perplexity x1.62).

:class:`PreferenceObjective` wraps an :class:`~aigc.pretrained.adapt.AdaptedLM` so the loop's
``model(x, y) -> (logits, loss)`` computes a preference loss (logits None); its ``state_dict`` is
the adapted model's own, under the same names, so checkpoints hold the adapters alone and load into
a plain ``AdaptedLM``. :class:`PreferenceTask` gives the loop random batches and validation.

A batch is packed for the loop as ``x`` (N, T) token ids, right-padded (no attention mask needed
under causal attention), and ``y`` (N, T + 1): ``y[:, 0]`` each row's role (:data:`CHOSEN` /
:data:`REJECTED` for DPO, chosen rows first, then their rejected rows in the same order;
:data:`UP` / :data:`DOWN` / :data:`MISMATCHED` for KTO) and ``y[:, 1:]`` the targets, already
shifted, -100 on the prompt and the padding.

This module knows torch, peft (through ``AdaptedLM``) and a transformers tokenizer passed in;
nothing about the workspace, the catalog or surfaces.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aigc.errors import InvalidInput
from aigc.pretrained.adapt import AdaptedLM
from aigc.pretrained.formats import IGNORE_INDEX, tokenize_chat

KINDS = ("dpo", "kto")
# row roles, y[:, 0] of a packed batch
REJECTED, CHOSEN = 0, 1  # DPO
DOWN, UP, MISMATCHED = 0, 1, 2  # KTO: a thumb down, a thumb up, a row that only estimates z0

Prompt = str | Sequence[Mapping[str, str]]  # text, or chat messages ending with a user turn


@dataclass
class PreferencePair:
    """A prompt (text, or chat messages ending with a user turn) with a better and a worse response."""

    prompt: Prompt
    chosen: str
    rejected: str


@dataclass
class Thumb:
    """A prompt (text, or chat messages ending with a user turn) and a response rated up or down."""

    prompt: Prompt
    text: str
    up: bool


def thumbs_from_pairs(pairs: Sequence[PreferencePair]) -> list[Thumb]:
    """Each pair as two thumbs, its chosen response up and its rejected one down (KTO on paired data)."""
    return [t for p in pairs for t in (Thumb(p.prompt, p.chosen, True), Thumb(p.prompt, p.rejected, False))]


# -- the losses -----------------------------------------------------------------------------


def dpo_loss(policy_chosen: Tensor, policy_rejected: Tensor, reference_chosen: Tensor,
             reference_rejected: Tensor, beta: float = 0.1) -> tuple[Tensor, Tensor, Tensor]:
    """Per-pair DPO losses (B,) and the implicit rewards ``beta * (pi - ref)`` of the chosen and
    rejected responses (detached), from sequence log-probabilities (B,) each."""
    chosen_rewards = beta * (policy_chosen - reference_chosen)
    rejected_rewards = beta * (policy_rejected - reference_rejected)
    losses = -F.logsigmoid(chosen_rewards - rejected_rewards)
    return losses, chosen_rewards.detach(), rejected_rewards.detach()


def kto_reference_point(policy_mismatched: Tensor, reference_mismatched: Tensor) -> Tensor:
    """KTO's ``z0``: the mean ``pi - ref`` of responses paired with prompts they do not answer (an
    estimate of KL(policy || reference)), detached and clamped at 0, as in TRL."""
    return (policy_mismatched - reference_mismatched).mean().detach().clamp(min=0)


def kto_loss(policy: Tensor, reference: Tensor, up: Tensor, z0: Tensor, beta: float = 0.1,
             desirable_weight: float = 1.0, undesirable_weight: float = 1.0) -> tuple[Tensor, Tensor]:
    """Per-thumb KTO losses (B,) and implicit rewards ``beta * (pi - ref)`` (detached), from
    sequence log-probabilities (B,), ``up`` (B,) bool and the reference point ``z0``."""
    ratio = policy - reference
    losses = torch.where(up, desirable_weight * (1 - torch.sigmoid(beta * (ratio - z0))),
                         undesirable_weight * (1 - torch.sigmoid(beta * (z0 - ratio))))
    return losses, (beta * ratio).detach()


def sequence_logps(adapted: AdaptedLM, idx: Tensor, targets: Tensor) -> Tensor:
    """Sum of the log-probabilities of each row's targets (those not -100), (N,) float32.

    Runs ``adapted``'s training forward, which applies the output head only where a target is."""
    keep = targets != IGNORE_INDEX
    token = -adapted.token_nll(idx, targets)
    rows = keep.nonzero()[:, 0]  # the row of each kept target, in the order boolean indexing takes them
    return torch.zeros(len(idx), dtype=token.dtype, device=token.device).index_add(0, rows, token)


# -- the objective --------------------------------------------------------------------------


def _check_positive(name: str, value: float, fix: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value <= 0:
        raise InvalidInput(f"{name} must be a number > 0, got {value!r}: {fix}")


class PreferenceObjective(nn.Module):
    """An adapted base whose ``forward(x, y)`` returns ``(None, loss)``, the DPO or KTO loss of a
    packed batch (see the module docstring), so :func:`aigc.training.fit` trains it as it trains any
    text model. Checkpoints hold the adapters alone, under ``AdaptedLM``'s names."""

    def __init__(self, adapted: AdaptedLM, kind: str = "dpo", beta: float = 0.1, *,
                 desirable_weight: float = 1.0, undesirable_weight: float = 1.0):
        super().__init__()
        if not isinstance(adapted, AdaptedLM) or adapted.method != "lora":
            got = getattr(adapted, "method", type(adapted).__name__)
            raise InvalidInput(f"preference tuning needs a base adapted with LoRA (its reference is the base "
                               f"with the adapters off), got {got!r}: adapt it with method 'lora'")
        if kind not in KINDS:
            raise InvalidInput(f"the preference objective must be one of {', '.join(KINDS)}, got {kind!r}")
        _check_positive("beta", beta, "DPO and KTO use about 0.1 (higher keeps closer to the base)")
        _check_positive("the KTO weight of thumbs up", desirable_weight, "the papers' default is 1")
        _check_positive("the KTO weight of thumbs down", undesirable_weight, "the papers' default is 1")
        self.adapted = adapted
        self.kind, self.beta = kind, float(beta)
        self.desirable_weight, self.undesirable_weight = float(desirable_weight), float(undesirable_weight)
        self.block_size = adapted.block_size

    def logps(self, idx: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        """Sequence log-probabilities (N,) of each row's response under the policy (with gradient
        when enabled) and under the reference (the base, adapters off; never a gradient)."""
        policy = sequence_logps(self.adapted, idx, targets)
        with torch.no_grad(), self.adapted.net.disable_adapter():
            reference = sequence_logps(self.adapted, idx, targets)
        return policy, reference

    def forward(self, x: Tensor, y: Tensor) -> tuple[None, Tensor]:
        roles, targets = y[:, 0], y[:, 1:]
        # KTO's mismatched rows are scored in the same forward as the thumbs (one batched pass);
        # z0 is detached, so they take no part in the gradient.
        policy, reference = self.logps(x, targets)
        if self.kind == "dpo":
            chosen, rejected = roles == CHOSEN, roles == REJECTED
            if int(chosen.sum()) != int(rejected.sum()) or not bool((chosen | rejected).all()):
                raise InvalidInput("a DPO batch must hold chosen rows then as many rejected rows: "
                                   "build it with a PreferenceTask over PreferencePairs")
            losses, _, _ = dpo_loss(policy[chosen], policy[rejected], reference[chosen], reference[rejected],
                                    self.beta)
            return None, losses.mean()
        thumb, mismatched = roles != MISMATCHED, roles == MISMATCHED
        if not bool(mismatched.any()) or not bool(thumb.any()):
            raise InvalidInput("a KTO batch must hold thumbs and their mismatched rows: build it with a "
                               "PreferenceTask over Thumbs")
        z0 = kto_reference_point(policy[mismatched], reference[mismatched])
        losses, _ = kto_loss(policy[thumb], reference[thumb], roles[thumb] == UP, z0, self.beta,
                             self.desirable_weight, self.undesirable_weight)
        return None, losses.mean()

    def state_dict(self, *args, **kwargs):  # noqa: D102 - the adapted model's, under its own names
        return self.adapted.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):  # noqa: D102
        return self.adapted.load_state_dict(state_dict, strict=strict, assign=assign)


# -- data -----------------------------------------------------------------------------------

Encoded = tuple[list[int], list[int]]  # input_ids, labels (unshifted; -100 off the response)


def _prompt_messages(prompt: Prompt, where: str) -> list[dict[str, str]]:
    if isinstance(prompt, str):
        if not prompt.strip():
            raise InvalidInput(f"{where}: the prompt is empty: give the instruction the response answers")
        return [{"role": "user", "content": prompt}]
    if isinstance(prompt, Sequence) and prompt and all(isinstance(m, Mapping) for m in prompt):
        messages = [{"role": m.get("role"), "content": m.get("content")} for m in prompt]
        if messages[-1]["role"] != "user":
            raise InvalidInput(f"{where}: the prompt's messages end with a {messages[-1]['role']!r} turn: "
                               "end them with the user turn that the response answers")
        return messages
    raise InvalidInput(f"{where}: the prompt is {type(prompt).__name__} {prompt!r:.60}, not text or a "
                       "non-empty list of {role, content} messages")


def encode_response(tokenizer, prompt: Prompt, response: str, *, max_length: int | None = None,
                    where: str = "example") -> Encoded:
    """``(input_ids, labels)`` of ``prompt`` answered by ``response`` in the base's chat template,
    labelled on the response only (an earlier assistant turn of a chat prompt is not scored).
    ``max_length`` keeps the first tokens; a response cut away entirely is refused."""
    if not isinstance(response, str) or not response.strip():
        raise InvalidInput(f"{where}: the response is empty ({response!r}): give its text or drop the "
                           "example")
    messages = _prompt_messages(prompt, where) + [{"role": "assistant", "content": response}]
    try:
        enc = tokenize_chat(tokenizer, messages)
    except InvalidInput as e:
        raise InvalidInput(f"{where}: {e}") from None
    ids, labels = enc["input_ids"], enc["labels"]
    # tokenize_chat labels every assistant turn: keep the last run of labels, the response's
    end = max(i for i, label in enumerate(labels) if label != IGNORE_INDEX)
    start = end
    while start > 0 and labels[start - 1] != IGNORE_INDEX:
        start -= 1
    labels = [IGNORE_INDEX] * start + labels[start:end + 1] + [IGNORE_INDEX] * (len(labels) - end - 1)
    if max_length is not None:
        ids, labels = ids[:max_length], labels[:max_length]
    if all(label == IGNORE_INDEX for label in labels[1:]):  # the first token is never predicted
        raise InvalidInput(f"{where}: no response token is left to score within {max_length or len(ids)} "
                           "tokens: raise max_length or shorten the prompt")
    return ids, labels


def collate(rows: Sequence[Encoded], roles: Sequence[int], pad_id: int) -> tuple[Tensor, Tensor]:
    """Rows packed for the loop: ``x`` (N, T) ids right-padded with ``pad_id``, ``y`` (N, T + 1) the
    role column then the shifted targets, -100 on the padding."""
    width = max(len(ids) for ids, _ in rows) - 1
    x = torch.full((len(rows), width), pad_id, dtype=torch.long)
    y = torch.full((len(rows), width + 1), IGNORE_INDEX, dtype=torch.long)
    for i, (ids, labels) in enumerate(rows):
        x[i, :len(ids) - 1] = torch.tensor(ids[:-1], dtype=torch.long)
        y[i, 1:len(labels)] = torch.tensor(labels[1:], dtype=torch.long)
    y[:, 0] = torch.tensor(list(roles), dtype=torch.long)
    return x, y


def _kind(examples: Sequence, split: str) -> str:
    if not examples:
        raise InvalidInput(f"the {split} split has no preference examples: give PreferencePairs (DPO) or "
                           "Thumbs (KTO)")
    if all(isinstance(e, PreferencePair) for e in examples):
        return "dpo"
    if all(isinstance(e, Thumb) for e in examples):
        ups = sum(bool(t.up) for t in examples)
        if split == "train" and ups in (0, len(examples)):
            only = "up" if ups else "down"
            raise InvalidInput(f"KTO needs both thumbs up and thumbs down: got only {only} ({len(examples)} "
                               f"thumbs): add thumbs {'down' if ups else 'up'}")
        return "kto"
    kinds = sorted({type(e).__name__ for e in examples})
    raise InvalidInput(f"the {split} split mixes or holds other things than PreferencePair or Thumb "
                       f"({', '.join(kinds)}): give pairs for DPO or thumbs for KTO, not both")


def _partner(prompts: Sequence[str], i: int) -> int:
    """The example whose response KTO's mismatched row for example ``i`` takes: the next one with a
    different prompt (the next one when every prompt is the same)."""
    n = len(prompts)
    for k in range(1, n):
        if prompts[(i + k) % n] != prompts[i]:
            return (i + k) % n
    return (i + 1) % n


class _Rows:
    """A split's rows: DPO ``first`` chosen, ``second`` rejected; KTO ``first`` the thumbs,
    ``second`` their mismatched rows, ``up`` which thumbs are up."""

    def __init__(self, tokenizer, examples: Sequence, kind: str, split: str, max_length: int | None):
        self.first: list[Encoded] = []
        self.second: list[Encoded] = []
        self.up: list[bool] = []
        for n, e in enumerate(examples, start=1):
            if kind == "dpo":
                where = f"{split} pair {n}"
                for text, what in ((e.chosen, "chosen"), (e.rejected, "rejected")):
                    if not isinstance(text, str) or not text.strip():
                        raise InvalidInput(f"{where}: the {what} response is empty ({text!r}): give its text "
                                           "or drop the pair")
                if e.chosen == e.rejected:
                    raise InvalidInput(f"{where}: the chosen and rejected responses are the same text "
                                       f"({e.chosen!r:.60}): a pair must differ, drop it")
                self.first.append(encode_response(tokenizer, e.prompt, e.chosen, max_length=max_length,
                                                  where=where))
                self.second.append(encode_response(tokenizer, e.prompt, e.rejected, max_length=max_length,
                                                   where=where))
            else:
                self.first.append(encode_response(tokenizer, e.prompt, e.text, max_length=max_length,
                                                  where=f"{split} thumb {n}"))
                self.up.append(bool(e.up))
        if kind == "kto":
            keys = [repr(e.prompt) for e in examples]
            for i, e in enumerate(examples):
                other = examples[_partner(keys, i)]
                self.second.append(encode_response(tokenizer, e.prompt, other.text, max_length=max_length,
                                                   where=f"{split} thumb {i + 1} (mismatched)"))

    def __len__(self) -> int:
        return len(self.first)


class DriftGuard:
    """Held-out perplexity of real data, relative to the run that learned from it, with a limit.

    ``ids`` / ``labels`` are packed blocks (:func:`~aigc.pretrained.adapt.build_blocks`: inputs
    ``[:, :-1]``, targets ``[:, 1:]``, -100 off the responses); ``root_nll`` is the nats per
    response token of that run on them (None: measure it, with :meth:`measure_root`, on the model
    before tuning moves it). :meth:`ratio` is ``exp(nll - root_nll)``: x1.00 unchanged, x1.10 ten
    per cent more perplexed. ``max_ratio`` is the limit a validation's weights must stay within."""

    def __init__(self, ids: Tensor, labels: Tensor, max_ratio: float, root_nll: float | None = None,
                 chunk: int = 8):
        if not (isinstance(max_ratio, (int, float)) and math.isfinite(max_ratio) and max_ratio > 1):
            raise InvalidInput(f"the drift limit must be a perplexity ratio > 1 (e.g. 1.1: within 10 %), "
                               f"got {max_ratio!r}")
        if ids.dim() != 2 or ids.shape != labels.shape or not (labels[:, 1:] != IGNORE_INDEX).any():
            raise InvalidInput("the drift guard needs blocks of ids and labels with at least one response token")
        self.ids, self.labels, self.max_ratio, self.chunk = ids, labels, float(max_ratio), chunk
        self.root_nll = root_nll

    def nll(self, adapted: AdaptedLM) -> float:
        """Mean nats per response token of ``adapted`` (its adapters on, no dropout) on the blocks.
        Through ``token_nll``, not :func:`aigc.tasks.nll_sum`: that keeps a chunk's (B, T, V) logits,
        2 GiB for 8 blocks of 256 tokens under Gemma 3's 262k vocabulary."""
        device = next(adapted.parameters()).device
        was_training = adapted.training
        adapted.eval()
        total, count = 0.0, 0
        try:
            with torch.no_grad():
                for s in range(0, len(self.ids), self.chunk):
                    x = self.ids[s:s + self.chunk, :-1].to(device)
                    y = self.labels[s:s + self.chunk, 1:].to(device)
                    total += float(adapted.token_nll(x, y).double().sum())
                    count += int((y != IGNORE_INDEX).sum())
        finally:
            adapted.train(was_training)
        return total / count

    def measure_root(self, adapted: AdaptedLM) -> float:
        """Take ``adapted`` as it is now (before tuning) as the reference, unless one was given."""
        if self.root_nll is None:
            self.root_nll = self.nll(adapted)
        return self.root_nll

    def ratio(self, adapted: AdaptedLM) -> float:
        """Perplexity of ``adapted`` on the blocks over the reference's."""
        if self.root_nll is None:
            raise RuntimeError("DriftGuard.ratio before measure_root: the reference is unknown")
        return math.exp(self.nll(adapted) - self.root_nll)


class PreferenceTask:
    """Random batches of pairs (DPO) or thumbs (KTO, each batch holding both kinds when it can),
    and validation: the mean preference loss over the val examples, the first ``eval_examples``
    between steps and all at the end. The latest validation's reward accuracy (DPO: share of pairs
    whose implicit reward prefers the chosen response; KTO: share of thumbs whose implicit reward
    ``beta * (pi - ref)`` has the thumb's sign) and mean rewards are :meth:`loss_figures`' and
    :attr:`figures`.

    With a :class:`DriftGuard`, each validation also scores its held-out text (``drift``, the
    perplexity ratio, in the figures) and sets :attr:`veto` to ``"drift"`` when it is past the
    limit: the loop keeps no such weights (see :class:`aigc.training.Task`)."""

    unit = "tok"

    def __init__(self, tokenizer, train: Sequence[PreferencePair | Thumb],
                 val: Sequence[PreferencePair | Thumb],
                 batch_size: int = 8, *, max_length: int | None = None, eval_examples: int = 64,
                 guard: DriftGuard | None = None):
        self.kind = _kind(train, "train")
        self.guard, self.veto = guard, None
        if val and _kind(val, "val") != self.kind:
            raise InvalidInput(f"the train split is for {self.kind.upper()} but the val split is not: give "
                               "pairs in both (DPO) or thumbs in both (KTO)")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidInput(f"batch_size must be a whole number >= 1, got {batch_size!r}")
        if self.kind == "kto" and batch_size < 2:
            raise InvalidInput(f"KTO needs batch_size >= 2 (a thumb up and a thumb down in each batch), "
                               f"got {batch_size}")
        self.train = _Rows(tokenizer, train, self.kind, "train", max_length)
        self.val = _Rows(tokenizer, val, self.kind, "val", max_length)
        self.batch_size, self.eval_examples = batch_size, eval_examples
        self.pad_id = next((t for t in (tokenizer.pad_token_id, tokenizer.eos_token_id) if t is not None), 0)
        mean_tokens = sum(len(ids) for ids, _ in self.train.first + self.train.second) / (2 * len(self.train))
        self.tokens_per_batch = round(2 * batch_size * mean_tokens)  # then each batch's own count
        self.figures: dict[str, float] = {}
        if self.kind == "kto":
            self._ups = [i for i, up in enumerate(self.train.up) if up]
            self._downs = [i for i, up in enumerate(self.train.up) if not up]

    def batch(self, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        data = self.train
        index = torch.randint(0, len(data), (self.batch_size,), generator=generator).tolist()
        if self.kind == "dpo":
            rows = [data.first[i] for i in index] + [data.second[i] for i in index]
            roles = [CHOSEN] * len(index) + [REJECTED] * len(index)
        else:
            kinds = {data.up[i] for i in index}
            if len(kinds) == 1:  # all up or all down: the last draw is replaced by one of the other kind
                pool = self._downs if kinds == {True} else self._ups
                index[-1] = pool[int(torch.randint(0, len(pool), (1,), generator=generator))]
            rows = [data.first[i] for i in index] + [data.second[i] for i in index]
            roles = [UP if data.up[i] else DOWN for i in index] + [MISMATCHED] * len(index)
        self.tokens_per_batch = sum(len(ids) for ids, _ in rows)
        return collate(rows, roles, self.pad_id)

    def response_logps(self, model: PreferenceObjective, rows: Sequence[Encoded],
                       chunk: int = 16) -> tuple[Tensor, Tensor]:
        """Policy and reference log-probabilities (N,) of encoded rows' responses, on the CPU."""
        device = next(model.parameters()).device
        policy, reference = [], []
        with torch.no_grad():
            for s in range(0, len(rows), chunk):
                x, y = collate(rows[s:s + chunk], [0] * len(rows[s:s + chunk]), self.pad_id)
                p, r = model.logps(x.to(device), y[:, 1:].to(device))
                policy.append(p.cpu())
                reference.append(r.cpu())
        return torch.cat(policy), torch.cat(reference)

    def measure(self, model: PreferenceObjective, full: bool = True) -> dict[str, float] | None:
        """The val split's mean loss, reward accuracy and mean rewards under ``model``, and the
        guard's ``drift`` (None: no val and no guard; only ``drift`` with a guard and no val)."""
        n = len(self.val) if full else min(len(self.val), self.eval_examples)
        if n == 0 and self.guard is None:
            return None
        if not isinstance(model, PreferenceObjective) or model.kind != self.kind:
            raise InvalidInput(f"this task is {self.kind.upper()}: evaluate it with "
                               f"PreferenceObjective(adapted, kind={self.kind!r})")
        drift = {}
        if self.guard is not None:
            ratio = self.guard.ratio(model.adapted)
            drift = {"drift": ratio}
            self.veto = "drift" if ratio > self.guard.max_ratio else None
        if n == 0:
            return drift
        policy, reference = self.response_logps(model, self.val.first[:n])
        other_policy, other_reference = self.response_logps(model, self.val.second[:n])
        if self.kind == "dpo":
            losses, chosen, rejected = dpo_loss(policy, other_policy, reference, other_reference, model.beta)
            return {**drift, "loss": float(losses.mean()),
                    "reward_accuracy": float((chosen > rejected).float().mean()),
                    "reward_margin": float((chosen - rejected).mean()),
                    "chosen_reward": float(chosen.mean()), "rejected_reward": float(rejected.mean())}
        up = torch.tensor(self.val.up[:n])
        z0 = kto_reference_point(other_policy, other_reference)
        losses, rewards = kto_loss(policy, reference, up, z0, model.beta, model.desirable_weight,
                                   model.undesirable_weight)
        right = torch.where(up, rewards > 0, rewards < 0)
        nan = float("nan")
        return {**drift, "loss": float(losses.mean()), "reward_accuracy": float(right.float().mean()),
                "up_reward": float(rewards[up].mean()) if up.any() else nan,
                "down_reward": float(rewards[~up].mean()) if (~up).any() else nan, "kl": float(z0)}

    def evaluate(self, model: nn.Module, full: bool = False) -> float | None:
        figures = self.measure(model, full)
        if figures is None:
            return None
        self.figures = figures
        return figures.get("loss")  # (none: no val split, only the guard's figure)

    def loss_figures(self, loss: float) -> dict[str, float]:
        """The latest validation's figures but its loss, named ``val_...`` (the loop calls this after
        its final validation of the best weights)."""
        return {f"val_{k}": v for k, v in self.figures.items() if k != "loss"}
