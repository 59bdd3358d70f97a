"""Adapting a pretrained base to a business's data under the one training loop.

:class:`AdaptedLM` puts a transformers causal LM under the loop's text contract,
``forward(idx, targets=None) -> (logits, loss)`` with ``targets`` already shifted and -100 where
no loss is taken (the prompt, padding), either with LoRA adapters (peft; the base frozen) or with
every weight trainable (``full``). With LoRA its ``state_dict`` holds the adapters alone, so the
loop's checkpoints and best weights are megabytes, not the whole base at every validation.
:class:`SFTTask` gives the loop batches of packed, response-labelled blocks
(:mod:`aigc.pretrained.formats`) and a validation loss over the val blocks.

This module knows torch, transformers and peft; nothing about the workspace or surfaces.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aigc.errors import InvalidInput
from aigc.pretrained.formats import IGNORE_INDEX, pack, tokenize_chat

METHODS = ("lora", "full")


@dataclass
class AdaptConfig:
    """How a run adapts its base: the method, LoRA's settings and the length of a training block.

    Defaults: rank 8, alpha 16, dropout 0.05 on every linear layer (QLoRA's finding: adapting all
    of them matters more than the rank), blocks of 256 tokens (a product description and its
    instruction fit; a longer record is cut, its first tokens kept)."""

    method: str = "lora"
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: str | list[str] = "all-linear"
    block_size: int = 256

    def validate(self) -> None:
        if self.method not in METHODS:
            raise InvalidInput(f"--method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.method == "lora" and (self.r < 1 or self.alpha <= 0 or not 0 <= self.dropout < 1):
            raise InvalidInput(f"LoRA needs rank >= 1, alpha > 0 and dropout in [0, 1), "
                               f"got {self.r}, {self.alpha}, {self.dropout}")
        if not isinstance(self.block_size, int) or not 16 <= self.block_size <= 32768:
            raise InvalidInput(f"--block-size must be a whole number in [16, 32768], got {self.block_size!r}")


# Training defaults per method, over TrainConfig's: LoRA takes a higher learning rate than full
# fine-tuning (its update starts at zero and is scaled by alpha / r); small batches of long blocks,
# since a step of a 100M+ base costs seconds on a CPU.
TRAIN_DEFAULTS = {
    "lora": {"lr": 5e-4, "batch_size": 4, "warmup_steps": 10, "weight_decay": 0.0, "eval_every": 25,
             "max_steps": 300, "min_lr_ratio": 0.1},
    "full": {"lr": 5e-5, "batch_size": 4, "warmup_steps": 10, "weight_decay": 0.0, "eval_every": 25,
             "max_steps": 300, "min_lr_ratio": 0.1},
}


class AdaptedLM(nn.Module):
    """A base causal LM, adapted by LoRA (``method="lora"``) or in full (``"full"``)."""

    modality = "text"

    def __init__(self, base: nn.Module, method: str = "lora", *, r: int = 8, alpha: int = 16,
                 dropout: float = 0.05, target_modules: str | Sequence[str] = "all-linear"):
        super().__init__()
        if method not in METHODS:
            raise InvalidInput(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
        if method == "lora":
            if r < 1 or alpha <= 0 or not 0 <= dropout < 1:
                raise InvalidInput(f"LoRA needs rank >= 1, alpha > 0 and dropout in [0, 1), got {r}, {alpha}, {dropout}")
            from peft import LoraConfig, get_peft_model

            targets = target_modules if isinstance(target_modules, str) else list(target_modules)
            try:
                self.net = get_peft_model(base, LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout,
                                                           target_modules=targets, task_type="CAUSAL_LM"))
            except ValueError as e:  # peft: target modules not found in the base
                raise InvalidInput(f"LoRA cannot wrap this base: {str(e).splitlines()[0][:300]}") from None
        else:
            self.net = base
        self.method = method
        self.fused = True  # LoRA trains through FastLM.lora_hidden where it can (see _fused_decoder)
        self.base_weights = "auto"  # the frozen base's format there: auto, float or bfloat16 (see base_format)
        config = base.config
        self.block_size = int(getattr(config, "max_position_embeddings", 0) or getattr(config, "n_positions", 0) or 2048)

    def forward(self, idx: Tensor, targets: Tensor | None = None) -> tuple[Tensor | None, Tensor | None]:
        """Without targets: logits (B, T, V). With targets: the loss over the positions that have a
        target, and the logits of those positions only, (N, V): the output head, the largest matrix
        of a small base (SmolLM2-135M: 28M of its 135M weights), runs where the loss is taken, not
        on the prompt and padding of every block. On the fused LoRA path (see :meth:`_fused_decoder`)
        the logits are None: the loss comes from :meth:`token_nll`, which never keeps them."""
        if targets is None:
            return self.net(input_ids=idx).logits, None
        if self._fused_for(idx) is not None:
            return None, self.token_nll(idx, targets).mean()
        return self._head_logits(idx, targets)

    def token_nll(self, idx: Tensor, targets: Tensor) -> Tensor:
        """The cross-entropy of each target that is not -100, (N,) float32, in the order boolean
        indexing takes them (row by row). LoRA on the llama family: our fused forward and head
        (:meth:`FastLM.head_nll`: the gradient of the head taken chunk by chunk, no (N, V) logits
        kept); otherwise from :meth:`forward`'s logits."""
        keep = targets != IGNORE_INDEX
        fused = self._fused_for(idx)
        if fused is not None:  # LoRA, llama family: same arithmetic, fused
            return fused.head_nll(fused.lora_hidden(idx, dropout=self.training)[keep], targets[keep],
                                  fused._decode_weights())
        logits, _ = self._head_logits(idx, targets)
        if logits.dim() == 3:  # a base without a separate head gives every position's logits
            logits = logits[keep]
        return F.cross_entropy(logits.float(), targets[keep], reduction="none")

    def _head_logits(self, idx: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        """peft's (or the full model's) own forward, the head only where a target is."""
        keep = targets != IGNORE_INDEX
        causal = self.net.get_base_model() if self.method == "lora" else self.net
        decoder, head = causal.get_decoder(), causal.get_output_embeddings()
        if decoder is None or head is None or decoder is causal:  # no separate head: the whole forward
            logits = self.net(input_ids=idx).logits
            loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX)
            return logits, loss
        hidden = decoder(input_ids=idx).last_hidden_state[keep]
        logits = head(hidden)
        cap = getattr(causal.config, "final_logit_softcapping", None)
        if cap:  # Gemma caps its logits after the head
            logits = torch.tanh(logits / cap) * cap
        return logits, F.cross_entropy(logits.float(), targets[keep])

    def _fused_for(self, idx: Tensor):
        """:meth:`_fused_decoder` when it can take blocks ``idx`` (no longer than the base's context), else None."""
        fused = self._fused_decoder()
        return fused if fused is not None and idx.shape[1] <= fused.block_size else None

    def _fused_decoder(self):
        """A :class:`~aigc.pretrained.decoder.FastLM` over the peft-wrapped base, whose
        ``lora_hidden`` is this model's training forward, when the base's architecture and the
        adapters fit it (LoRA on the llama family's projections); else None (peft's own forward).

        Why: peft adds each adapter to each of a layer's seven projections on its own, with its own
        dropout copy of the input; the fused path runs q/k/v and gate/up as one product each, their
        adapters as one pair, over the same frozen weights decoding gathers. Measured by
        ``benchmarks/pretrained.py --parts train`` against peft + Trainer. It holds a copy of the
        fused layer matrices, gathered once, in the format :meth:`base_format` names (SmolLM2-135M:
        0.43 GB in float32, half that in bfloat16); kept out of the module tree (not a submodule: the
        state dict stays the adapters alone), rebuilt when the base moves."""
        if self.method != "lora" or not self.fused:
            return None
        from aigc.pretrained.decoder import FastLM

        causal = self.net.get_base_model()
        param = next(causal.parameters())
        key = (param.device, self.base_format(param))
        cached = self.__dict__.get("_fused")
        if cached is not None and cached[0] == key:
            return cached[1]
        fused = None
        if FastLM.lora_supported(causal):
            try:
                fused = FastLM.from_hf(causal, max_context=None, weights=key[1])
            except InvalidInput:
                fused = None
        self.__dict__["_fused"] = (key, fused)
        return fused

    def base_format(self, param: Tensor) -> str:
        """The format of the frozen base's matrices in the fused training forward: ``self.base_weights``
        when set ("float" or "bfloat16"), else bfloat16 for a float32 base on a CPU with native bf16
        (SmolLM2-135M, 2 threads: 563.5 tokens/s a LoRA step against float's 286.7,
        benchmarks/results/pretrained_decode_train.json), float otherwise. The adapters, their gradients,
        the optimizer, the residual stream and the loss stay float32 (as QLoRA keeps a quantized base
        under float adapters; the adapters' A products read the bfloat16 input, their deltas are summed
        in float32, see ``decoder._project``); held-out perplexity of SmolLM2-135M with the bfloat16 copy is within
        0.4 % of float32's (benchmarks/results/pretrained_decode_train.json, the decode formats)."""
        if self.base_weights != "auto":
            return self.base_weights
        from aigc.runtime import cpu_has_bf16

        native = param.device.type == "cpu" and param.dtype == torch.float32 and cpu_has_bf16()
        return "bfloat16" if native else "float"

    def _trainable_names(self) -> set[str]:
        return {name for name, p in self.named_parameters() if p.requires_grad}

    def state_dict(self, *args, **kwargs):  # noqa: D102 - see the class docstring
        state = super().state_dict(*args, **kwargs)
        if self.method != "lora":
            return state
        prefix = kwargs.get("prefix", args[1] if len(args) > 1 else "")
        keep = {prefix + n for n in self._trainable_names()}
        return type(state)((k, v) for k, v in state.items() if k in keep)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):  # noqa: D102
        if self.method != "lora":
            return super().load_state_dict(state_dict, strict=strict, assign=assign)
        missing = self._trainable_names() - set(state_dict)
        unexpected = set(state_dict) - self._trainable_names()
        if strict and (missing or unexpected):
            raise InvalidInput(f"these adapter weights do not fit this base and LoRA setting: "
                               f"{len(missing)} missing (e.g. {sorted(missing)[:1]}), "
                               f"{len(unexpected)} unexpected (e.g. {sorted(unexpected)[:1]})")
        return super().load_state_dict(state_dict, strict=False, assign=assign)

    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def merged(self) -> nn.Module:
        """A plain transformers model with the adapters folded into its weights (a copy; LoRA), or
        the model itself (full): what an export saves and what AutoModelForCausalLM loads back."""
        if self.method != "lora":
            return self.net
        return copy.deepcopy(self.net).merge_and_unload()


def build_blocks(tokenizer, chats: Sequence[list[dict[str, str]]], block_size: int,
                 max_length: int | None = None) -> tuple[Tensor, Tensor]:
    """Tokenized, response-labelled chats packed into (N, block_size + 1) ids and labels: a block
    gives inputs ``[:, :-1]`` and targets ``[:, 1:]``; the last partial block is padded with the
    eos token and labels -100, so a small split still gives one block."""
    examples = [tokenize_chat(tokenizer, chat, max_length=max_length or block_size + 1) for chat in chats]
    examples = [e for e in examples if any(label != IGNORE_INDEX for label in e["labels"])]
    if not examples:
        raise InvalidInput("no example has a response left to learn from after truncation: raise the block size")
    pad = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    total = sum(len(e["input_ids"]) for e in examples)
    size = min(block_size + 1, total)
    blocks = pack(examples, size, pad_id=pad)
    ids = torch.tensor([b["input_ids"] for b in blocks], dtype=torch.long)
    labels = torch.tensor([b["labels"] for b in blocks], dtype=torch.long)
    return ids, labels


class SFTTask:
    """Random packed blocks of the train chats; validation: mean loss over the val blocks' response
    tokens (the prompt is never scored), the first ``eval_blocks`` of them between steps and the
    first ``final_blocks`` at the end. Capped because a forward of a 100M+ base over a block costs
    about a second on a CPU: an uncapped final pass over the shop corpus's val split took longer
    than a two-minute training budget. ``aigc eval`` scores the whole held-out split."""

    unit = "tok"

    def __init__(self, train: tuple[Tensor, Tensor], val: tuple[Tensor, Tensor], batch_size: int,
                 eval_blocks: int = 16, final_blocks: int = 64):
        self.ids, self.labels = train
        self.val_ids, self.val_labels = val
        self.eval_blocks, self.final_blocks = eval_blocks, final_blocks
        if len(self.ids) == 0:
            raise InvalidInput("the train split gives no training block: ingest more records")
        self.batch_size = batch_size
        self.tokens_per_batch = batch_size * (self.ids.shape[1] - 1)

    def batch(self, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        index = torch.randint(0, len(self.ids), (self.batch_size,), generator=generator)
        return self.ids[index, :-1], self.labels[index, 1:]

    def evaluate(self, model: nn.Module, full: bool = False) -> float | None:
        from aigc.tasks import nll_sum

        if len(self.val_ids) == 0:
            return None
        n = self.final_blocks if full else self.eval_blocks
        total, count = nll_sum(model, self.val_ids[:n, :-1], self.val_labels[:n, 1:], batch_size=8)
        return total / max(1, count)

    def loss_figures(self, loss: float) -> dict[str, float]:
        return {"val_bits_per_token": loss / math.log(2), "val_perplexity": math.exp(min(loss, 50.0))}
