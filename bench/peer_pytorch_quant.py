"""The PyTorch peer of bench/bench_quant.cc: transformers.BertModel (BERT-base shapes, random init,
eval, torch.no_grad) in f32 and after torch.quantization.quantize_dynamic({nn.Linear}, qint8), on
batch 32 x seq 128 and batch 1 x seq 32, one JSON line per (case, dtype) on stdout.

bench_quant starts it in the same run (`--no-peer` skips it); alone:
  /work/main/.venv/bin/python bench/peer_pytorch_quant.py [--threads 2] [--runs 3] [--case b32|b1] [--layers 12]
quantize_dynamic runs every nn.Linear through fbgemm's int8 kernels with per-tensor weight scales and
dynamic per-tensor activation scales; attention, layer norm and GELU stay f32 (as ours). Reported per
dtype: median and min seconds per batch, sequences per second, the size of the saved state_dict
(torch.save), the time quantize_dynamic took, and the load time (torch.load of that state_dict into a
freshly built model, plus quantize_dynamic for the int8 one, which needs its module structure).
The OMP_WAIT_POLICY in force is in every line (../shared/BENCHMARKS.md: PyTorch's int8 path prefers
the default spinning policy, its f32 path the passive one).
"""
import argparse
import io
import json
import os
import statistics
import sys
import time


def make_inputs(torch, sequences, length, vocab_size, generator):
    input_ids = torch.randint(1000, vocab_size, (sequences, length), generator=generator)
    input_ids[:, 0] = 101   # [CLS]
    input_ids[:, -1] = 102  # [SEP]
    return input_ids, torch.ones((sequences, length), dtype=torch.long)


def state_dict_bytes(torch, model):
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getvalue()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3, help="timed runs at batch 32 (batch 1: 10x), after a warm-up")
    parser.add_argument("--case", default="", choices=["", "b32", "b1"])
    parser.add_argument("--layers", type=int, default=12)
    args = parser.parse_args()

    import torch
    import transformers

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from peer_pytorch_encoder import loaded_blas

    torch.set_num_threads(args.threads)
    torch.manual_seed(20240501)
    config = transformers.BertConfig(
        vocab_size=30522, hidden_size=768, num_hidden_layers=args.layers, num_attention_heads=12,
        intermediate_size=3072, max_position_embeddings=512, hidden_act="gelu")
    model_f32 = transformers.BertModel(config).eval()
    start = time.perf_counter()
    model_int8 = torch.quantization.quantize_dynamic(model_f32, {torch.nn.Linear}, dtype=torch.qint8)
    quantize_seconds = time.perf_counter() - start

    files = {}
    for dtype, model in (("f32", model_f32), ("int8 dynamic", model_int8)):
        data = state_dict_bytes(torch, model)
        start = time.perf_counter()
        fresh = transformers.BertModel(config).eval()
        if dtype != "f32":
            fresh = torch.quantization.quantize_dynamic(fresh, {torch.nn.Linear}, dtype=torch.qint8)
        fresh.load_state_dict(torch.load(io.BytesIO(data)))
        files[dtype] = (len(data) / 1e6, time.perf_counter() - start)
        del fresh

    policy = os.environ.get("OMP_WAIT_POLICY", "default")
    torch.nn.functional.linear(torch.ones(2, 2), torch.ones(2, 2))  # maps the BLAS library
    blas, _ = loaded_blas()
    print(f"PyTorch {torch.__version__} (quantized engine {torch.backends.quantized.engine}), transformers "
          f"{transformers.__version__}, {args.threads} thread(s), OMP_WAIT_POLICY={policy}, BLAS {blas}",
          file=sys.stderr)

    cases = [("b32", 32, 128, args.runs), ("b1", 1, 32, 10 * args.runs)]
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for key, sequences, length, runs in cases:
            if args.case and key != args.case:
                continue
            input_ids, attention_mask = make_inputs(torch, sequences, length, config.vocab_size, generator)
            reference = None
            for dtype, model in (("f32", model_f32), ("int8 dynamic", model_int8)):
                output = model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # warm-up
                if not torch.isfinite(output).all():
                    raise SystemExit(f"{key} {dtype}: non-finite hidden state")
                times = []
                for _ in range(runs):
                    start = time.perf_counter()
                    model(input_ids=input_ids, attention_mask=attention_mask)
                    times.append(time.perf_counter() - start)
                error = 0.0
                if reference is None:
                    reference = output
                else:
                    error = float(torch.linalg.norm(output - reference) / torch.linalg.norm(reference))
                median = statistics.median(times)
                print(json.dumps({
                    "engine": "pytorch", "case": key, "dtype": dtype, "median_s": median, "min_s": min(times),
                    "seq_per_s": sequences / median, "runs": runs, "rel_err_f32": error,
                    "file_mb": files[dtype][0], "load_s": files[dtype][1],
                    "quantize_s": quantize_seconds if dtype != "f32" else 0.0,
                    "threads": args.threads, "omp_wait_policy": policy, "blas": blas,
                    "quantized_engine": torch.backends.quantized.engine,
                    "torch": torch.__version__}), flush=True)


if __name__ == "__main__":
    main()
