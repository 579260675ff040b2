"""Ground truth for tests/test_metrics.cc from outside the project.

SQuAD normalization, exact match and F1 come from transformers' copy of the official SQuAD
evaluation script (transformers.data.metrics.squad_metrics). seqeval and scikit-learn are not in
the project venv; when they are importable the script also prints their entity-level and macro
scores for the test's cases, otherwise it says so (the test's seqeval values are hand-derived and
include the seqeval README example, f1 = 0.50).

Run: .venv/bin/python reference/metrics_reference.py
"""
import json

from transformers.data.metrics import squad_metrics as squad

SQUAD_CASES = [
    ("The  Cat's  hat!", "cats hat"),
    ("the cat sat", "a cat sat down"),
    ("Ünïcode  THE Ärger", "ünïcode ärger"),
    ("$1,496.5 million", "1496.5 million"),
    ("an apple", "apple"),
    ("theater", "theater"),
    ("the’s   A-team, an—the end", "’s ateam — end"),
    ("", ""),
    ("a", ""),
    ("revenue grew", "net revenue"),
]

SEQEVAL_CASES = {
    "readme": ([["O", "O", "O", "B-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]],
               [["O", "O", "B-MISC", "I-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]]),
    "io": ([["I-PER", "I-PER", "O", "I-LOC", "I-ORG"]], [["I-PER", "O", "O", "I-LOC", "I-ORG"]]),
    "bio_corners": ([["O", "I-PER", "I-PER", "O", "B-PER", "I-ORG", "B-LOC", "B-LOC"]],
                    [["B-PER", "I-PER", "I-PER", "O", "B-PER", "I-ORG", "B-LOC", "I-LOC"]]),
}


def main():
    out = {"squad": []}
    for prediction, truth in SQUAD_CASES:
        out["squad"].append({
            "prediction": prediction, "truth": truth,
            "normalized": squad.normalize_answer(prediction),
            "exact": squad.compute_exact(truth, prediction),
            "f1": squad.compute_f1(truth, prediction),
        })
    try:
        from seqeval.metrics import f1_score, precision_score, recall_score
        out["seqeval"] = {name: {"precision": precision_score(t, p), "recall": recall_score(t, p),
                                 "f1": f1_score(t, p)} for name, (t, p) in SEQEVAL_CASES.items()}
    except ImportError:
        out["seqeval"] = "seqeval not installed: the test's entity values are hand-derived"
    print(json.dumps(out, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
