#!/usr/bin/env python3
"""Peer benchmark for bench/bench_tokenizer.cc: the `tokenizers` package (Rust), single-threaded,
on the same file of texts, then ScaleBERT's bench_tokenizer on that file, and the ratio.

Usage:
  .venv/bin/python bench/bench_tokenizer_peer.py [--lines FILE] [--shared ../shared]
      [--scalebert build/bench/bench_tokenizer] [--vocab VOCAB] [--cased] [--min-seconds S]
Without --lines, the shared tweets (sent_train.csv + sent_valid.csv, 'text' column; newlines
inside a tweet become spaces so that one line is one text) are written to a temporary file.
"""
import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time

# One thread for the Rust side: rayon's pool and the package's own parallelism switch.
os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["RAYON_RS_NUM_CPUS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
from tokenizers import BertWordPieceTokenizer  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tweets_file(shared):
    folder = os.path.join(shared, "data", "twitter_financial_news_sentiment")
    handle = tempfile.NamedTemporaryFile("w", encoding="utf-8", suffix=".txt", delete=False)
    with handle:
        for name in ("sent_train.csv", "sent_valid.csv"):
            with open(os.path.join(folder, name), encoding="utf-8", newline="") as file:
                for row in csv.DictReader(file):
                    handle.write(row["text"].replace("\r", " ").replace("\n", " ") + "\n")
    return handle.name


def measure(function, texts, min_seconds):
    function(texts)  # warm-up
    passes, start = 0, time.perf_counter()
    while passes < 3 or time.perf_counter() - start < min_seconds:
        function(texts)
        passes += 1
    return passes * len(texts) / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines")
    parser.add_argument("--shared", default=os.path.join(os.path.dirname(REPO), "shared"))
    parser.add_argument("--vocab")
    parser.add_argument("--cased", action="store_true")
    parser.add_argument("--scalebert", default=os.path.join(REPO, "build", "bench", "bench_tokenizer"))
    parser.add_argument("--min-seconds", type=float, default=2.0)
    args = parser.parse_args()

    lines = args.lines or tweets_file(args.shared)
    vocab = args.vocab or os.path.join(args.shared, "data", "bert_base_uncased_vocab", "vocab.txt")
    with open(lines, encoding="utf-8", newline="\n") as file:
        texts = file.read().split("\n")
    if texts and texts[-1] == "":
        texts.pop()
    megabytes = sum(len(t.encode("utf-8")) for t in texts) / 1e6

    tokenizer = BertWordPieceTokenizer(vocab, lowercase=not args.cased)
    batch = measure(lambda ts: tokenizer.encode_batch(ts), texts, args.min_seconds)
    single = measure(lambda ts: [tokenizer.encode(t) for t in ts], texts, args.min_seconds)
    scale = megabytes / len(texts)
    print(f"{len(texts)} texts, {megabytes:.2f} MB from {lines}, 1 thread")
    print(f"tokenizers encode_batch:                {batch:10.0f} texts/s  {batch * scale:7.2f} MB/s")
    print(f"tokenizers encode (one call per text):  {single:10.0f} texts/s  {single * scale:7.2f} MB/s")

    if not os.path.exists(args.scalebert):
        print(f"(no {args.scalebert}; build bench_tokenizer and pass --scalebert to get the ratio)")
        return
    command = [args.scalebert, lines, "--vocab", vocab, "--min-seconds", str(args.min_seconds), "--json"]
    if args.cased:
        command.append("--cased")
    ours = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
    into, fresh = ours["encode_into_texts_per_s"], ours["encode_texts_per_s"]
    print(f"scalebert encode_into (reused buffers): {into:10.0f} texts/s  {ours['encode_into_mb_per_s']:7.2f} MB/s")
    print(f"scalebert encode (fresh Encoding):      {fresh:10.0f} texts/s  {ours['encode_mb_per_s']:7.2f} MB/s")
    best_peer = max(batch, single)
    print(f"ratio vs the faster tokenizers path: encode_into {into / best_peer:.1f}x, encode {fresh / best_peer:.1f}x "
          f"(target >= 3x)")
    if not args.lines:
        os.unlink(lines)


if __name__ == "__main__":
    sys.exit(main())
