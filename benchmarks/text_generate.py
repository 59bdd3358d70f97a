"""Generation speed: our generate vs transformers' generate(use_cache=True) on the same weights.

Both run in this process on one `gpt` model (about 0.8 M parameters, character vocabulary of
tiny shakespeare or of a built-in sample when ../shared is absent), greedy, 256 new tokens,
at batch 1 and batch 16. Tokens/s counts new tokens over wall time, prefill included. The two
must produce the same tokens (checked), so the comparison is like for like.

    python benchmarks/text_generate.py [--threads 2] [--repeats 3]

Prints a table and writes benchmarks/results/text_generate.json (commit, date, machine included).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

from aigc.data.textstream import train_tokenizer
from aigc.data.dataset import TextRecord
from aigc.generation import TextGenerator
from aigc.models.gpt import GPT, GPTConfig
from aigc.runtime import configure_threads

HERE = Path(__file__).resolve().parent
SHAKESPEARE = HERE.parents[1] / "shared" / "data" / "tinyshakespeare" / "input.txt"
NEW_TOKENS = 256


def build(seed: int = 0) -> TextGenerator:
    text = SHAKESPEARE.read_text(encoding="utf-8") if SHAKESPEARE.exists() else "To be, or not to be.\n" * 50
    tok = train_tokenizer([TextRecord(text, {})], [], "char", 0)
    torch.manual_seed(seed)
    cfg = GPTConfig(vocab_size=tok.vocab_size, block_size=512, n_layer=4, n_head=4, n_embd=128,
                    eos_token_id=tok.eos_id)
    model = GPT(cfg).eval()
    with torch.no_grad():  # an untrained model must not end early: make end-of-text never the argmax
        model.hf.model.embed_tokens.weight[tok.eos_id].zero_()
    return TextGenerator(model, tok)


def time_ours(gen: TextGenerator, prompt: str, batch: int) -> tuple[float, list[str]]:
    t0 = time.perf_counter()
    out = gen.generate(prompt, n=batch, max_new_tokens=NEW_TOKENS, temperature=0.0)
    return time.perf_counter() - t0, out


def time_transformers(gen: TextGenerator, prompt: str, batch: int) -> tuple[float, list[str]]:
    ids = torch.tensor([gen.context_ids(prompt)] * batch)
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = gen.model.hf.generate(ids, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False,
                                    use_cache=True, pad_token_id=gen.tokenizer.eos_id)
    dt = time.perf_counter() - t0
    return dt, [gen.tokenizer.decode(row[ids.shape[1]:].tolist(), skip_special=True) for row in out]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    threads = configure_threads(args.threads)
    gen = build()
    n_params = sum(p.numel() for p in gen.model.parameters())
    prompt = "ROMEO:\n"
    rows = []
    for batch in (1, 16):
        time_ours(gen, prompt, batch)  # warm-up both paths
        time_transformers(gen, prompt, batch)
        ours_t, theirs_t = [], []
        for _ in range(args.repeats):  # interleaved, so machine noise hits both alike
            dt, ours_out = time_ours(gen, prompt, batch)
            ours_t.append(dt)
            dt, theirs_out = time_transformers(gen, prompt, batch)
            theirs_t.append(dt)
        same = ours_out == theirs_out
        ours_tps = batch * NEW_TOKENS / statistics.median(ours_t)
        theirs_tps = batch * NEW_TOKENS / statistics.median(theirs_t)
        rows.append({"batch": batch, "ours_tok_s": round(ours_tps), "transformers_tok_s": round(theirs_tps),
                     "ratio": round(ours_tps / theirs_tps, 2), "identical_output": same})
    print(f"gpt {n_params / 1e6:.2f} M params, {NEW_TOKENS} new tokens, greedy, {threads} thread(s), "
          f"median of {args.repeats}")
    print(f"{'batch':>5} {'ours tok/s':>11} {'transformers tok/s':>19} {'ratio':>6} {'same tokens':>12}")
    for r in rows:
        print(f"{r['batch']:>5} {r['ours_tok_s']:>11,} {r['transformers_tok_s']:>19,} {r['ratio']:>6.2f} "
              f"{str(r['identical_output']):>12}")
    out = write_result("text_generate", {"params": n_params, "new_tokens": NEW_TOKENS, "threads": threads,
                                         "repeats": args.repeats, "torch": torch.__version__,
                                         "python": platform.python_version(), "rows": rows})
    print(f"wrote {out.relative_to(HERE.parent)}")
    if not all(r["identical_output"] for r in rows):
        sys.exit("outputs differ between the two implementations")


if __name__ == "__main__":
    main()
