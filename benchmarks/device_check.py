"""The CUDA path on a lent GPU, in one short invocation: figures for the card it ran on.

    python benchmarks/device_check.py --name device_check_h200   # -> benchmarks/results/device_check_h200.json

- gpt ``small`` trained on the bundled shop corpus for ``--budget`` seconds: tokens/s and val loss;
- a LoRA step of a random-weight Llama of SmolLM2-135M's shape (30 layers, 576 wide, 9 heads, 3
  key/value heads, vocabulary 49,152, tied), batch 8 x 256 tokens, under the loop's precision
  (bf16 autocast on a capable GPU): tokens/s and peak memory;
- decoding that model, greedy, 128 new tokens after a 32-token prompt at batch 1 and 16: our
  :class:`~aigc.pretrained.decoder.FastLM` slot runner against transformers' ``generate`` on the
  same weights (bf16 both).

Random weights: the figures are speed, not quality. The JSON records the card, commit and date.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402


def smollm2_shape():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                      num_key_value_heads=3, vocab_size=49152, max_position_embeddings=2048, tie_word_embeddings=True,
                      rope_theta=100000.0)
    return LlamaForCausalLM(cfg).eval()


def gpt_train(budget: float) -> dict:
    import aigc
    from aigc.cli.demo import sample_corpus

    with tempfile.TemporaryDirectory() as tmp:
        ws = aigc.open_workspace(tmp)
        aigc.ingest(sample_corpus(), "shop", workspace=ws, text_column="text", cond_columns=["category", "tone", "lang"])
        row = aigc.train("shop", family="gpt", preset="small", workspace=ws, time_budget=budget)
        s = row["summary"]
        return {"steps": s["steps"], "seconds": s["elapsed_s"], "tokens_per_s": round(s["tokens_seen"] / s["elapsed_s"]),
                "best_val_loss": round(row["best_val_loss"], 4)}


def lora_step(device: str, steps: int = 10) -> dict:
    from aigc.pretrained.adapt import AdaptedLM
    from aigc.runtime import default_precision

    model = AdaptedLM(smollm2_shape(), "lora").to(device).train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 49152, (8, 256), generator=g).to(device)
    y = x.clone()
    y[:, :64] = -100
    precision = default_precision(device)
    dtype = torch.bfloat16 if "bf16" in precision else None
    torch.cuda.reset_peak_memory_stats()

    def step():
        with torch.autocast(device, dtype=dtype, enabled=dtype is not None):
            _, loss = model(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / steps
    return {"precision": precision, "batch": "8x256", "s_per_step": round(dt, 4), "tokens_per_s": round(8 * 256 / dt),
            "peak_gb": round(torch.cuda.max_memory_allocated() / 1e9, 2)}


def decode(device: str, new: int = 128) -> dict:
    from aigc.decoding import SlotRunner

    model = smollm2_shape().to(device, torch.bfloat16)
    out = {}
    try:
        from aigc.pretrained.decoder import FastLM

        fast = FastLM.from_hf(model)
    except Exception as e:  # noqa: BLE001 - report, do not stop the check
        fast, out["fastlm_error"] = None, f"{type(e).__name__}: {e}"[:300]
    for batch in (1, 16):
        prompt = torch.randint(0, 49152, (batch, 32), generator=torch.Generator().manual_seed(batch)).to(device)
        with torch.inference_mode():
            model.generate(prompt, max_new_tokens=8, do_sample=False, min_new_tokens=8)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            model.generate(prompt, max_new_tokens=new, do_sample=False, min_new_tokens=new)
            torch.cuda.synchronize()
            hf = batch * new / (time.perf_counter() - t0)
            row = {"transformers_tok_s": round(hf)}
            if fast is not None:
                for rep in range(2):  # the first warms up
                    runner = SlotRunner(fast, batch)
                    torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    state, logits = runner.prefill(prompt)
                    runner.load(state, list(range(batch)))
                    for _ in range(new):
                        logits = runner.decode(logits.argmax(-1))
                    torch.cuda.synchronize()
                ours = batch * new / (time.perf_counter() - t0)
                row.update(ours_tok_s=round(ours), speedup=round(ours / hf, 2))
        out[f"batch_{batch}"] = row
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", default="device_check", help="results file name (benchmarks/results/NAME.json)")
    ap.add_argument("--budget", type=float, default=45.0)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("no CUDA device: this check is for a lent GPU")
    device = "cuda"
    result = {"card": torch.cuda.get_device_name(0), "torch": torch.__version__}
    for name, fn in (("gpt_small_train", lambda: gpt_train(args.budget)), ("lora_step", lambda: lora_step(device)),
                     ("decode", lambda: decode(device))):
        t0 = time.perf_counter()
        try:
            result[name] = fn()
        except Exception as e:  # noqa: BLE001 - one failing part must not lose the others' figures
            result[name] = {"error": f"{type(e).__name__}: {e}"[:500]}
        print(f"{name} ({time.perf_counter() - t0:.0f}s): {result[name]}", flush=True)
    print(write_result(args.name, result))


if __name__ == "__main__":
    main()
