#!/usr/bin/env python3
"""Training throughput of PyTorch 1.13 + transformers on the shapes of bench/bench_train.cc, and the
ScaleBERT / PyTorch ratio when the ScaleBERT benchmark runs in the same invocation.

Wall and CPU time (process time / threads) are both reported: on a shared machine the CPU time is
closer to what an idle machine would give. A step is what bench_train times: zero_grad, forward of BertForSequenceClassification (dropout on,
train mode, eager attention), cross-entropy loss, backward, clip_grad_norm_(1.0),
torch.optim.AdamW step (decay / no-decay groups). --precision bf16 runs the forward and loss under
torch.cpu.amp.autocast(dtype=torch.bfloat16) (PyTorch's mixed precision: Linear and matmul in bf16,
f32 weights and optimizer) and ScaleBERT with --precision bf16. Same sizes: BERT-base batch 8 x 128 tokens, and
a small BERT (4 layers, hidden 256, 4 heads, FFN 1024) batch 32 x 64; median over the timed steps
after one warm-up step; torch.set_num_threads(2). Memory: getrusage max RSS of this process.

Usage: .venv/bin/python bench/peer_pytorch_train.py [--model base|small|both] [--precision f32|bf16]
           [--steps N] [--threads 2] [--bench build/bench/bench_train]   (runs ScaleBERT too, prints ratios)
"""
import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch
from transformers import BertConfig, BertForSequenceClassification

SHAPES = {
    "base": dict(layers=12, hidden=768, heads=12, intermediate=3072, batch=8, tokens=128, steps=5),
    "small": dict(layers=4, hidden=256, heads=4, intermediate=1024, batch=32, tokens=64, steps=10),
}


def bench_pytorch(name, shape, steps, precision):
    config = BertConfig(vocab_size=30522, hidden_size=shape["hidden"], num_hidden_layers=shape["layers"],
                        num_attention_heads=shape["heads"], intermediate_size=shape["intermediate"],
                        max_position_embeddings=512, num_labels=3, attn_implementation="eager")
    torch.manual_seed(7)
    model = BertForSequenceClassification(config).train()
    decay = [p for n, p in model.named_parameters() if not (n.endswith("bias") or "LayerNorm" in n)]
    no_decay = [p for n, p in model.named_parameters() if n.endswith("bias") or "LayerNorm" in n]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                                  lr=1e-5)
    B, T = shape["batch"], shape["tokens"]
    batches = []
    for _ in range(2):
        ids = torch.randint(1000, 29000, (B, T))
        ids[:, 0], ids[:, -1] = 101, 102
        batches.append(dict(input_ids=ids, attention_mask=torch.ones(B, T, dtype=torch.long),
                            token_type_ids=torch.zeros(B, T, dtype=torch.long),
                            labels=torch.arange(B) % 3))
    times, cpu = [], []
    for step in range(steps + 1):
        start, cpu_start = time.perf_counter(), time.process_time()
        optimizer.zero_grad()
        with torch.cpu.amp.autocast(enabled=precision == "bf16", dtype=torch.bfloat16):
            loss = model(**batches[step % 2]).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        elapsed = time.perf_counter() - start
        if step > 0:
            times.append(elapsed)
            cpu.append((time.process_time() - cpu_start) / torch.get_num_threads())
    median = statistics.median(times)
    cpu_median = statistics.median(cpu)
    return {"model": name, "precision": precision, "batch": B, "tokens": T, "threads": torch.get_num_threads(), "steps": len(times),
            "median_step_s": median, "min_step_s": min(times), "seq_per_s": B / median,
            "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, "loss": loss.item(),
            "cpu_step_s": cpu_median, "cpu_seq_per_s": B / cpu_median}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["base", "small", "both"], default="both")
    parser.add_argument("--precision", choices=["f32", "bf16"], default="f32")
    parser.add_argument("--steps", type=int, default=0, help="timed steps (default 5 base, 10 small)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--bench", help="path of bench_train: run it too, and print the ratio")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    names = ["base", "small"] if args.model == "both" else [args.model]
    # ScaleBERT first, while this process is small: Linux keeps the parent's max RSS in a forked
    # child, so a child started after PyTorch's models would report PyTorch's peak. For the same
    # reason PyTorch runs the small model before the large one.
    ours = {}
    for name in names if args.bench else []:
        steps = args.steps or SHAPES[name]["steps"]
        output = subprocess.run([args.bench, "--model", name, "--precision", args.precision, "--steps", str(steps),
                                 "--threads", str(args.threads), "--json"], check=True, capture_output=True,
                                text=True).stdout
        ours[name] = json.loads(output.strip().splitlines()[-1])
        print("scalebert", json.dumps(ours[name]))
        sys.stdout.flush()
    peers = {}
    for name in sorted(names, key=lambda n: SHAPES[n]["hidden"]):
        peers[name] = bench_pytorch(name, SHAPES[name], args.steps or SHAPES[name]["steps"], args.precision)
        print("pytorch  ", json.dumps(peers[name]))
        sys.stdout.flush()
    for name in names:
        if name not in ours:
            continue
        mine, peer = ours[name], peers[name]
        print(f"{name} {args.precision}: ScaleBERT {mine['seq_per_s']:.2f} seq/s, PyTorch {peer['seq_per_s']:.2f} seq/s, "
              f"ratio {mine['seq_per_s'] / peer['seq_per_s']:.2f}x (by CPU time per thread "
              f"{mine['cpu_seq_per_s']:.2f} vs {peer['cpu_seq_per_s']:.2f} seq/s, "
              f"{mine['cpu_seq_per_s'] / peer['cpu_seq_per_s']:.2f}x); ScaleBERT at "
              f"{100 * mine['gemm_limit_fraction']:.0f}% of the GEMM-only limit "
              f"({100 * mine['cpu_gemm_limit_fraction']:.0f}% by CPU time); planned memory "
              f"{mine['planned_mib']:.0f} MiB, max RSS {mine['max_rss_mib']:.0f} MiB vs PyTorch "
              f"{peer['max_rss_mib']:.0f} MiB")


if __name__ == "__main__":
    main()
