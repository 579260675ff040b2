#!/usr/bin/env python3
"""Ground truth for ScaleBERT: tiny random BERT models saved in Hugging Face layout, each with the
outputs that transformers' PyTorch implementation computes for a fixed batch.

Run with the project venv (transformers 4.46, torch 1.13):
    .venv/bin/python reference/make_tiny_bert.py --out build/fixtures

Every model shares one small configuration (vocab 120, hidden 32, 2 layers, 4 heads, intermediate
64, 40 positions, 2 token types) and is built deterministically from torch.manual_seed. Weights are
drawn with std 0.2 and LayerNorm gammas/betas and all biases are random too, so that a wrong
activation, a missing bias or a swapped gamma/beta moves the outputs well beyond float noise (the
default init, std 0.02 with gamma 1 and beta 0, would hide such bugs).

Per model folder (save_pretrained(safe_serialization=True): config.json, model.safetensors or
shards, plus tokenizer files):
  reference.safetensors       batch B=3, T=16, right-padded; row 1 is a sentence pair
  reference_full.safetensors  batch B=1, T=40 (max_position_embeddings), a pair, no padding
Each reference holds inputs input_ids / attention_mask / token_type_ids (I64, [B, T]) and F32
outputs: hidden_states.{0..L} ([B, T, C]; 0 is the embedding output, L equals last_hidden_state),
last_hidden_state ([B, T, C]), pooler_output ([B, C], when the model has a pooler), and the head's
outputs: logits ([B, num_labels] for sequence classification, [B, T, num_labels] for token
classification, [B, T, V] for masked LM), start_logits and end_logits ([B, T], question answering).
Outputs at padded positions are what transformers computes there (pad tokens still attend to the
unmasked keys); compare them too or only the valid positions, but say which.
"""

import argparse
import json
import os
import shutil
import sys
import time

import torch
import transformers
from safetensors.torch import load_file, save_file
from transformers import (BertConfig, BertForMaskedLM, BertForQuestionAnswering,
                          BertForSequenceClassification, BertForTokenClassification, BertModel,
                          BertTokenizerFast)

VOCAB_SIZE = 120
MAX_POSITIONS = 40
BATCH_T = 16
WEIGHT_STD = 0.2

# BERT's layout in miniature: [PAD] first, a few [unused], then [UNK] [CLS] [SEP] [MASK].
SPECIAL_TOKENS = ["[PAD]", "[unused0]", "[unused1]", "[unused2]", "[unused3]",
                  "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID = 0, 5, 6, 7, 8


def make_vocab():
    """120 tokens: specials, punctuation, digits, letters, financial words, then ## pieces."""
    tokens = list(SPECIAL_TOKENS)
    tokens += list(".,;:!?$%()-'\"&/")
    tokens += list("0123456789")
    tokens += list("abcdefghijklmnopqrstuvwxyz")
    tokens += ["the", "of", "and", "to", "in", "is", "for", "on", "by", "net", "income",
               "revenue", "profit", "loss", "shares", "stock", "bank", "rate", "interest",
               "quarter", "year", "growth", "market", "sales", "fell", "rose", "cash", "debt",
               "eur", "usd", "million"]
    tokens += ["##s", "##ed", "##ing", "##ly", "##er", "##al", "##ion", "##es", "##0", "##1",
               "##2", "##5", "##a", "##e", "##i", "##o", "##n", "##t", "##r", "##y", "##d",
               "##l", "##m", "##k", "##p", "##c", "##h", "##b", "##g"]
    assert len(tokens) == len(set(tokens)), "duplicate vocab entry"
    assert len(tokens) == VOCAB_SIZE, len(tokens)
    return tokens


def make_config(hidden_act="gelu", **extra):
    return BertConfig(vocab_size=VOCAB_SIZE, hidden_size=32, num_hidden_layers=2,
                      num_attention_heads=4, intermediate_size=64, hidden_act=hidden_act,
                      max_position_embeddings=MAX_POSITIONS, type_vocab_size=2,
                      layer_norm_eps=1e-12, pad_token_id=PAD_ID, initializer_range=WEIGHT_STD,
                      attn_implementation="eager", **extra)


def randomize(model, seed):
    """Redraws every parameter from a seeded generator: matrices and embeddings N(0, 0.2^2),
    biases N(0, 0.1^2), LayerNorm gamma 1 + N(0, 0.2^2), beta N(0, 0.1^2). Tied tensors (the MLM
    decoder and word embeddings) are one Parameter and so are drawn once."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            noise = torch.randn(parameter.shape, generator=generator)
            if "LayerNorm" in name and name.endswith("weight"):
                parameter.copy_(1.0 + WEIGHT_STD * noise)
            elif name.endswith("bias"):
                parameter.copy_(0.1 * noise)
            else:
                parameter.copy_(WEIGHT_STD * noise)
    model.eval()  # dropout off
    return model


def make_batch():
    """B=3, T=16, right-padded: a 12-token sentence, a 14-token pair (second segment type 1),
    a 5-token sentence. Word ids avoid the special tokens; one [MASK] for the MLM head."""
    generator = torch.Generator().manual_seed(1234)
    T = BATCH_T

    def words(count):
        return torch.randint(MASK_ID + 1, VOCAB_SIZE, (count,), generator=generator).tolist()

    rows = [
        ([CLS_ID] + words(10) + [SEP_ID], None),
        ([CLS_ID] + words(6) + [SEP_ID], words(5) + [SEP_ID]),
        ([CLS_ID] + words(3) + [SEP_ID], None),
    ]
    rows[0][0][4] = MASK_ID
    input_ids = torch.full((3, T), PAD_ID, dtype=torch.int64)
    attention_mask = torch.zeros((3, T), dtype=torch.int64)
    token_type_ids = torch.zeros((3, T), dtype=torch.int64)
    for b, (first, second) in enumerate(rows):
        ids = first + (second or [])
        input_ids[b, :len(ids)] = torch.tensor(ids)
        attention_mask[b, :len(ids)] = 1
        if second:
            token_type_ids[b, len(first):len(ids)] = 1
    return input_ids, attention_mask, token_type_ids


def make_full_batch():
    """B=1, T=40: a pair filling every position, no padding."""
    generator = torch.Generator().manual_seed(99)
    first = torch.randint(MASK_ID + 1, VOCAB_SIZE, (20,), generator=generator).tolist()
    second = torch.randint(MASK_ID + 1, VOCAB_SIZE, (17,), generator=generator).tolist()
    ids = [CLS_ID] + first + [SEP_ID] + second + [SEP_ID]
    assert len(ids) == MAX_POSITIONS
    input_ids = torch.tensor([ids], dtype=torch.int64)
    attention_mask = torch.ones_like(input_ids)
    token_type_ids = torch.zeros_like(input_ids)
    token_type_ids[0, len(first) + 2:] = 1
    return input_ids, attention_mask, token_type_ids


def encoder_of(model):
    return model if isinstance(model, BertModel) else model.bert


def compute_outputs(model, inputs):
    input_ids, attention_mask, token_type_ids = inputs
    tensors = {"input_ids": input_ids, "attention_mask": attention_mask,
               "token_type_ids": token_type_ids}
    with torch.no_grad():
        base = encoder_of(model)(input_ids=input_ids, attention_mask=attention_mask,
                                 token_type_ids=token_type_ids, output_hidden_states=True)
        for index, state in enumerate(base.hidden_states):
            tensors[f"hidden_states.{index}"] = state
        tensors["last_hidden_state"] = base.last_hidden_state
        if base.pooler_output is not None:
            tensors["pooler_output"] = base.pooler_output
        if not isinstance(model, BertModel):
            head = model(input_ids=input_ids, attention_mask=attention_mask,
                         token_type_ids=token_type_ids)
            for key in ("logits", "start_logits", "end_logits"):
                value = getattr(head, key, None)
                if value is not None:
                    tensors[key] = value
    return {name: tensor.detach().clone().contiguous() for name, tensor in tensors.items()}


def write_references(model, folder, name):
    metadata = {"model": name, "class": type(model).__name__,
                "transformers": transformers.__version__, "torch": torch.__version__,
                "batch": "B=3 T=16 right-padded, row 1 a pair"}
    outputs = compute_outputs(model, make_batch())
    save_file(outputs, os.path.join(folder, "reference.safetensors"), metadata=metadata)
    metadata["batch"] = "B=1 T=40 pair, no padding"
    full = compute_outputs(model, make_full_batch())
    save_file(full, os.path.join(folder, "reference_full.safetensors"), metadata=metadata)
    return outputs


def summarize(name, model, folder, outputs):
    parameters = sum(p.numel() for p in model.parameters())
    weight_files = sorted(f for f in os.listdir(folder) if f.startswith("model"))
    heads = [k for k in ("pooler_output", "logits", "start_logits", "end_logits") if k in outputs]
    shapes = ", ".join(f"{k}{list(outputs[k].shape)}" for k in ["last_hidden_state"] + heads)
    scale = outputs["last_hidden_state"].abs().max().item()
    print(f"{name:22s} {type(model).__name__:30s} params={parameters:6d} "
          f"files={len(weight_files)} {shapes} max|h|={scale:.3f}")


def verify_reload(model_class, folder):
    """Loads the folder back with transformers and checks that it reproduces reference.safetensors
    exactly: the saved weights (shards, half copies, tied decoder, legacy names) are the ones the
    references were computed from."""
    reloaded = model_class.from_pretrained(folder, attn_implementation="eager").float().eval()
    expected = load_file(os.path.join(folder, "reference.safetensors"))
    inputs = (expected["input_ids"], expected["attention_mask"], expected["token_type_ids"])
    actual = compute_outputs(reloaded, inputs)
    assert sorted(actual) == sorted(expected), (folder, sorted(actual), sorted(expected))
    for key, value in expected.items():
        difference = (actual[key].float() - value.float()).abs().max().item()
        assert difference <= 1e-6, f"{folder}: {key} differs by {difference} after reload"


def save_tokenizer(folder, vocab_path):
    tokenizer = BertTokenizerFast(vocab_file=vocab_path, do_lower_case=True)
    tokenizer.save_pretrained(folder)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="fixtures directory to (re)create models in")
    args = parser.parse_args()
    started = time.time()
    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()  # the MLM class's GenerationMixin notice
    transformers.utils.logging.disable_progress_bar()
    os.makedirs(args.out, exist_ok=True)

    vocab_path = os.path.join(args.out, "vocab.txt")
    with open(vocab_path, "w", encoding="utf-8") as vocab_file:
        vocab_file.write("\n".join(make_vocab()) + "\n")

    sentiment = {0: "negative", 1: "neutral", 2: "positive"}
    entities = {0: "O", 1: "B-ORG", 2: "I-ORG", 3: "B-MONEY", 4: "I-MONEY"}
    specs = [
        # (folder, class, config arguments, seed)
        ("tiny-bert", BertModel, {}, 1),
        ("tiny-bert-gelu-new", BertModel, {"hidden_act": "gelu_new"}, 2),
        ("tiny-bert-relu", BertModel, {"hidden_act": "relu"}, 3),
        ("tiny-bert-cls", BertForSequenceClassification,
         {"id2label": sentiment, "label2id": {v: k for k, v in sentiment.items()}}, 4),
        ("tiny-bert-ner", BertForTokenClassification,
         {"id2label": entities, "label2id": {v: k for k, v in entities.items()}}, 5),
        ("tiny-bert-qa", BertForQuestionAnswering, {}, 6),
        ("tiny-bert-mlm", BertForMaskedLM, {}, 7),
    ]
    base_model = None
    for name, model_class, config_arguments, seed in specs:
        torch.manual_seed(seed)
        model = randomize(model_class(make_config(**config_arguments)), seed)
        folder = os.path.join(args.out, name)
        shutil.rmtree(folder, ignore_errors=True)
        model.save_pretrained(folder, safe_serialization=True)
        save_tokenizer(folder, vocab_path)
        outputs = write_references(model, folder, name)
        summarize(name, model, folder, outputs)
        verify_reload(model_class, folder)
        if name == "tiny-bert":
            base_model = model

    # The same tiny-bert weights as a sharded checkpoint (index + >= 3 shards).
    folder = os.path.join(args.out, "tiny-bert-sharded")
    shutil.rmtree(folder, ignore_errors=True)
    base_model.save_pretrained(folder, safe_serialization=True, max_shard_size="30KB")
    save_tokenizer(folder, vocab_path)
    shards = [f for f in os.listdir(folder) if f.endswith(".safetensors")]
    assert len(shards) >= 3, f"expected >= 3 shards, got {shards}"
    summarize("tiny-bert-sharded", base_model, folder,
              write_references(base_model, folder, "tiny-bert-sharded"))
    verify_reload(BertModel, folder)

    # Half-precision copies: weights stored as F16 / BF16; the references are computed in F32
    # from the rounded weights, so a loader that widens them exactly must match to F32 noise.
    for name, dtype in (("tiny-bert-f16", torch.float16), ("tiny-bert-bf16", torch.bfloat16)):
        torch.manual_seed(1)
        rounded = randomize(BertModel(make_config()), 1)
        with torch.no_grad():
            for parameter in rounded.parameters():
                parameter.copy_(parameter.to(dtype).float())
        folder = os.path.join(args.out, name)
        shutil.rmtree(folder, ignore_errors=True)
        rounded.to(dtype).save_pretrained(folder, safe_serialization=True)
        rounded.float()
        save_tokenizer(folder, vocab_path)
        summarize(name, rounded, folder, write_references(rounded, folder, name))
        verify_reload(BertModel, folder)

    # Legacy names: tiny-bert's weights under "bert." with LayerNorm gamma/beta, as old
    # TensorFlow-converted checkpoints name them (same config, same references).
    folder = os.path.join(args.out, "tiny-bert-legacy")
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(os.path.join(args.out, "tiny-bert"), folder)
    tensors = load_file(os.path.join(folder, "model.safetensors"))
    renamed = {}
    for key, value in tensors.items():
        key = key.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias",
                                                                         "LayerNorm.beta")
        renamed["bert." + key] = value
    save_file(renamed, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
    verify_reload(BertModel, folder)
    print(f"{'tiny-bert-legacy':22s} tiny-bert renamed: bert. prefix, LayerNorm gamma/beta")

    elapsed = time.time() - started
    print(f"wrote {len(specs) + 4} models to {args.out} in {elapsed:.1f} s, each reloaded with "
          "transformers and checked against its reference", file=sys.stderr)


if __name__ == "__main__":
    main()
