#!/usr/bin/env python3
"""Draws the bundled tweet samples in examples/data from the shared financial tweets.

A stratified, seeded sample of one split (sent_valid.csv or sent_train.csv) (twitter-financial-news-sentiment, MIT): from each
label, round(n * share of the label) rows chosen with random.Random(seed).sample, then all rows in
their original file order. Columns: text, label (0 Bearish, 1 Bullish, 2 Neutral, as the source)
and sentiment (the label's name, added for readable output).

    python3 scripts/make_sample.py --source ../shared/data/twitter_financial_news_sentiment/sent_valid.csv \
        --out examples/data/financial_tweets_sample.csv --rows 400 --seed 20240611
    python3 scripts/make_sample.py --source ../shared/data/twitter_financial_news_sentiment/sent_train.csv \
        --out examples/data/financial_tweets_train_sample.csv --rows 2000 --seed 20261125
"""
import argparse
import csv
import random

NAMES = {"0": "Bearish", "1": "Bullish", "2": "Neutral"}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--rows", type=int, default=400)
    parser.add_argument("--seed", type=int, default=20240611)
    args = parser.parse_args()

    with open(args.source, newline="", encoding="utf-8") as source:
        rows = list(csv.DictReader(source))
    by_label = {}
    for index, row in enumerate(rows):
        by_label.setdefault(row["label"], []).append(index)
    rng = random.Random(args.seed)
    chosen = []
    labels = sorted(by_label)
    remaining = args.rows
    for position, label in enumerate(labels):
        # The last label takes what rounding left, so the sample has exactly --rows rows.
        count = remaining if position == len(labels) - 1 else round(args.rows * len(by_label[label]) / len(rows))
        chosen += rng.sample(by_label[label], count)
        remaining -= count
    chosen.sort()

    with open(args.out, "w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["text", "label", "sentiment"])
        for index in chosen:
            writer.writerow([rows[index]["text"], rows[index]["label"], NAMES[rows[index]["label"]]])
    counts = {NAMES[label]: sum(rows[i]["label"] == label for i in chosen) for label in labels}
    multi_line = sum("\n" in rows[i]["text"] for i in chosen)
    print(f"wrote {len(chosen)} rows to {args.out}: {counts}, {multi_line} multi-line texts")


if __name__ == "__main__":
    main()
