"""The autoregressive prior of a VQ-VAE run: a `gpt` trained on the code indices of its images.

Each train image becomes the token sequence ``<bos> [<class>] c_1 ... c_hw`` (row-major codes),
with codes 0..K-1, ``<bos>`` = K and class tokens K+1..K+num_classes. The prior trains with the
same loop as every text family, on windows that start at an image (the sequences have one
length). Sampling feeds ``<bos> <class>`` and draws h*w codes, never a special token, so
``VQVAE.sample`` runs prior -> codes -> decoder end to end.

This module knows the token layout and the sampler; ``runs`` decides when the prior trains.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from aigc.data.textstream import TokenStream
from aigc.models.gpt import GPT, GPTConfig
from aigc.sampling import sample_next_token
from aigc.tasks import TextLMTask
from aigc.training import TrainConfig, fit

PRIOR_DIR = "prior"


def prior_config(vqvae: nn.Module, preset: str) -> GPTConfig:
    h, w = vqvae.latent_shape
    n_special = 1 + vqvae.config.num_classes
    size = GPT.PRESETS["tiny" if preset == "tiny" else "small"]
    block = -(-(h * w + 2) // 8) * 8  # a whole image and its prefix fit in one window
    return GPTConfig(**{**size, "block_size": block, "vocab_size": vqvae.codebook_size + n_special,
                        "eos_token_id": vqvae.codebook_size})


@torch.no_grad()
def code_stream(vqvae: nn.Module, images: Tensor, labels: Tensor | None, batch_size: int = 256) -> TokenStream:
    """Images -> one stream of ``<bos> [<class>] codes`` sequences."""
    K = vqvae.codebook_size
    device = next(vqvae.parameters()).device
    vqvae.eval()
    rows, is_cond, starts = [], [], []
    offset = 0  # a running total: summing the lengths so far for every row made this quadratic (9 min at 54k)
    for i in range(0, len(images), batch_size):
        codes = vqvae.encode_indices(images[i : i + batch_size].to(device)).flatten(1).cpu()  # (B, h*w)
        for j, row in enumerate(codes):
            prefix = [K] if labels is None else [K, K + 1 + int(labels[i + j])]
            starts.append(offset)
            rows.append(torch.tensor(prefix + row.tolist()))
            is_cond.append(torch.tensor([False] + [True] * (len(prefix) - 1) + [False] * len(row)))
            offset += len(rows[-1])
    ids = torch.cat(rows) if rows else torch.zeros(0, dtype=torch.long)
    mask = torch.cat(is_cond) if is_cond else torch.zeros(0, dtype=torch.bool)
    return TokenStream(ids, mask, int(len(ids)), torch.tensor(starts, dtype=torch.long))


def train_prior(vqvae: nn.Module, task, preset: str, cfg: TrainConfig, run_dir: Path, callbacks=(),
                resume: bool = False) -> tuple[GPT, dict[str, Any]]:
    """Encode the run's images and fit the prior under ``run_dir/prior``; returns it and its spec."""
    gpt_cfg = prior_config(vqvae, preset)
    train = code_stream(vqvae, task.images, task.labels)
    val = code_stream(vqvae, task.val_images, task.val_labels)
    prior_train = TrainConfig(**{**asdict(cfg), **GPT.TRAIN_DEFAULTS["tiny" if preset == "tiny" else "small"],
                                 "max_steps": cfg.max_steps, "time_budget": cfg.time_budget, "seed": cfg.seed})
    torch.manual_seed(cfg.seed)
    prior = GPT(gpt_cfg)
    lm_task = TextLMTask(train, val, gpt_cfg.block_size, prior_train, aligned=1.0)
    out = run_dir / PRIOR_DIR
    out.mkdir(exist_ok=True)
    state = fit(prior, lm_task, prior_train, out, list(callbacks), resume=resume)
    spec = {"model_config": asdict(gpt_cfg), "train_config": asdict(prior_train),
            "best_val_loss": state.best_val_loss, "steps": state.step, "stop_reason": state.stop_reason}
    return prior, spec


def attach(vqvae: nn.Module, prior: GPT) -> None:
    """Let ``vqvae.sample`` draw codes from ``prior``."""
    K = vqvae.codebook_size
    h, w = vqvae.latent_shape
    conditional = vqvae.config.num_classes > 0
    prior.eval()

    @torch.no_grad()
    def sampler(n: int, condition: Tensor | None, generator: torch.Generator | None) -> Tensor:
        device = next(prior.parameters()).device
        prefix = torch.full((n, 1), K, dtype=torch.long, device=device)
        if conditional:
            if condition is None:  # no class asked: draw each sample's class uniformly
                condition = torch.randint(0, vqvae.config.num_classes, (n,), generator=generator, device=device)
            prefix = torch.cat([prefix, (K + 1 + condition.to(device))[:, None]], dim=1)
        cache = prior.init_cache(n)
        logits = prior.forward_cached(prefix, cache)
        codes = []
        for _ in range(h * w):
            logits[:, K:] = float("-inf")  # only codes, never a special token
            token = sample_next_token(logits, generator, temperature=1.0)
            codes.append(token)
            logits = prior.forward_cached(token[:, None], cache)
        return torch.stack(codes, dim=1).view(n, h, w)

    vqvae.prior_sampler = sampler


def load_prior(run_dir: Path, spec: dict[str, Any]) -> GPT | None:
    weights = run_dir / PRIOR_DIR / "model.safetensors"
    if "prior" not in spec or not weights.exists():
        return None
    from aigc.checkpoints import load_weights

    prior = GPT(GPTConfig(**spec["prior"]["model_config"]))
    load_weights(prior, weights)
    return prior
