"""The PyTorch peer of bench/bench_encoder.cc: the same cases on transformers.BertModel (random init,
eval, torch.no_grad, f32), fed padded batches with an attention mask as users do, one JSON line per case.

Run with the project's venv: /work/main/.venv/bin/python bench/peer_pytorch_encoder.py [--threads 2] ...
PyTorch 1.13's f32 path is slow and erratic under OpenMP's default (spinning) wait policy on this
machine and its int8/bf16 paths under the passive one (../shared/BENCHMARKS.md); scripts/bench.sh runs
this script under both OMP_WAIT_POLICY settings and quotes the better. The policy in force is recorded
in every JSON line.

FLOPs and the GEMM-only limit are those of bench_encoder.cc, counted on the real (unpadded) tokens, so
the padded tweet batch is charged for useful work only: 2 * P_lin * T + 4 * L * T^2 * C per sequence,
P_lin = L * (4 C^2 + 2 C I), peak 117 GFLOP/s per thread.
"""
import argparse
import json
import os
import statistics
import sys
import time

# Token lengths of 32 financial tweets: the (i + 0.5) / 32 quantiles of the bert-base-uncased token
# counts of shared/data/twitter_financial_news_sentiment/sent_valid.csv (same list as bench_encoder.cc).
TWEET_LENGTHS = [8, 10, 11, 12, 13, 14, 15, 15, 16, 17, 18, 19, 20, 21, 22, 25,
                 27, 29, 31, 33, 35, 36, 38, 39, 41, 42, 43, 45, 46, 48, 50, 54]

CASES = [
    ("batch32_seq128", "throughput", [128] * 32),
    ("batch1_seq32", "latency", [32]),
    ("batch1_seq128", "latency", [128]),
    ("tweets32", "throughput", TWEET_LENGTHS),
]

PEAK_F32_PER_THREAD = 117e9  # FLOP/s, AVX-512 FMA on one Zen 4 core


def forward_flops(layers, hidden, intermediate, lengths):
    linear_parameters = layers * (4 * hidden * hidden + 2 * hidden * intermediate)
    return sum(2.0 * linear_parameters * t + 4.0 * layers * t * t * hidden for t in lengths)


def loaded_blas():
    """The BLAS library this process mapped (PyTorch 1.13 runs f32 Linear through BLAS sgemm).

    Debian's python3-torch links the generic libblas.so.3; where that resolves to the Netlib reference
    implementation (package libblas3), sgemm runs at ~1-2 GFLOP/s and the peer is not what anyone runs
    in production. scripts/bench.sh then points LD_LIBRARY_PATH at an OpenBLAS build.
    """
    paths = set()
    with open("/proc/self/maps") as maps:
        for line in maps:
            path = line.split()[-1] if len(line.split()) >= 6 else ""
            name = os.path.basename(path)
            if "blas" in name:
                paths.add(os.path.realpath(path))
    def kind(path):
        if "openblas" in path:
            return "openblas"
        if "blis" in path:
            return "blis"
        if "/blas/libblas.so" in path:  # Debian's libblas3: the Netlib reference Fortran BLAS
            return "reference"
        return path
    kinds = sorted({kind(path) for path in paths})
    return ",".join(kinds) or "none", sorted(paths)


def make_inputs(torch, lengths, vocab_size, generator):
    """Right-padded (B, T) input_ids and attention_mask, T = the longest sequence (padding=True)."""
    width = max(lengths)
    input_ids = torch.zeros((len(lengths), width), dtype=torch.long)
    attention_mask = torch.zeros((len(lengths), width), dtype=torch.long)
    for row, length in enumerate(lengths):
        input_ids[row, :length] = torch.randint(1000, vocab_size, (length,), generator=generator)
        input_ids[row, 0] = 101   # [CLS]
        input_ids[row, length - 1] = 102  # [SEP]
        attention_mask[row, :length] = 1
    return input_ids, attention_mask


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--case", default="", help="one of " + ", ".join(c[0] for c in CASES))
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--hidden", type=int, default=768, help="heads = C/64, intermediate = 4C")
    parser.add_argument("--min-seconds", type=float, default=3.0)
    parser.add_argument("--min-runs", type=int, default=3)
    parser.add_argument("--max-runs", type=int, default=1000)
    args = parser.parse_args()
    if args.hidden % 64 or args.hidden < 64 or args.layers < 1 or args.threads < 1:
        parser.error("need hidden a multiple of 64, layers >= 1, threads >= 1")
    cases = [c for c in CASES if not args.case or c[0] == args.case]
    if not cases:
        parser.error(f"unknown case {args.case!r}")

    import torch
    import transformers

    torch.set_num_threads(args.threads)
    torch.manual_seed(20240501)
    config = transformers.BertConfig(
        vocab_size=30522, hidden_size=args.hidden, num_hidden_layers=args.layers,
        num_attention_heads=args.hidden // 64, intermediate_size=4 * args.hidden,
        max_position_embeddings=512, hidden_act="gelu")
    setup_start = time.perf_counter()
    # BertModel's own init: normal(0, 0.02) weights, LayerNorm weight 1 and bias 0; pooler included.
    model = transformers.BertModel(config).eval()
    setup_seconds = time.perf_counter() - setup_start
    peak = PEAK_F32_PER_THREAD * args.threads
    policy = os.environ.get("OMP_WAIT_POLICY", "default")
    torch.nn.functional.linear(torch.ones(2, 2), torch.ones(2, 2))  # maps the BLAS library
    blas, blas_paths = loaded_blas()
    if blas == "reference":
        print("WARNING: PyTorch runs f32 Linear on the Netlib reference BLAS (" + ", ".join(blas_paths) +
              "): ~100x slower than OpenBLAS; see bench/README.md", file=sys.stderr)
    print(f"PyTorch {torch.__version__}, transformers {transformers.__version__}, f32, "
          f"L={args.layers} C={args.hidden}, {args.threads} thread(s), OMP_WAIT_POLICY={policy}, BLAS {blas}, "
          f"attention {getattr(config, '_attn_implementation', 'eager')}, setup {setup_seconds:.1f} s",
          file=sys.stderr)

    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, kind, lengths in cases:
            input_ids, attention_mask = make_inputs(torch, lengths, config.vocab_size, generator)
            for _ in range(2):  # warm-up (the second skipped after a run over 1 s): allocator, BLAS, OpenMP team
                start = time.perf_counter()
                output = model(input_ids=input_ids, attention_mask=attention_mask)
                seconds = time.perf_counter() - start
                if not torch.isfinite(output.last_hidden_state).all():
                    raise SystemExit(f"{name}: non-finite hidden state")
                if seconds > 1.0:
                    break
            times, cpu_times = [], []
            while len(times) < args.max_runs and (len(times) < args.min_runs or sum(times) < args.min_seconds):
                cpu_start = time.process_time()  # CPU time of every thread, as bench_encoder's cpu_ms
                start = time.perf_counter()
                model(input_ids=input_ids, attention_mask=attention_mask)
                times.append(time.perf_counter() - start)
                cpu_times.append(time.process_time() - cpu_start)
            median = statistics.median(times)
            flops = forward_flops(args.layers, args.hidden, 4 * args.hidden, lengths)
            limit = flops / peak
            record = {
                "engine": "pytorch", "case": name, "kind": kind, "dtype": "f32", "threads": args.threads,
                "omp_wait_policy": policy, "blas": blas, "layers": args.layers, "hidden": args.hidden,
                "batch": len(lengths), "tokens": sum(lengths), "computed_tokens": input_ids.numel(),
                "runs": len(times), "median_ms": median * 1e3, "min_ms": min(times) * 1e3,
                "seq_per_s": len(lengths) / median, "gflop": flops / 1e9, "gflops": flops / median / 1e9,
                "peak_gflops": peak / 1e9, "limit_ms": limit * 1e3, "fraction_of_limit": limit / median,
                "cpu_ms": statistics.median(cpu_times) * 1e3,
            }
            print(json.dumps(record), flush=True)
            print(f"{name:15s} runs {len(times):4d}  median {median * 1e3:9.2f} ms  min {min(times) * 1e3:9.2f} ms  "
                  f"{len(lengths) / median:8.2f} seq/s  {flops / median / 1e9:6.1f} GFLOP/s  "
                  f"{100 * limit / median:5.1f}% of limit", file=sys.stderr)


if __name__ == "__main__":
    main()
