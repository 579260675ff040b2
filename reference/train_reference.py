#!/usr/bin/env python3
"""Ground truth for ScaleBERT's training backward pass: one-step losses and gradients of every
parameter from transformers (PyTorch 1.13, float32), for each task head.

Reads the tiny models that make_tiny_bert.py wrote under --fixtures (run it first) and writes
OUT/train/<model>.safetensors holding:
  input_ids, attention_mask, token_type_ids   (B, T) int64, right-padded
  the head's labels                           labels (B) | labels (B, T) with -100 ignored |
                                              start_positions, end_positions (B)
  loss                                        (1) float32, the mean loss transformers returns
  grad.<name>                                 d loss / d parameter, Hugging Face names without the
                                              "bert." prefix; tied tensors appear once (the MLM
                                              decoder's gradient is inside
                                              grad.embeddings.word_embeddings.weight)
Dropout is off (eval mode) so the numbers are deterministic; autograd still runs.

With dropout on, no two engines draw the same masks, but they must agree in expectation. For the
sequence-classification and token-classification models, OUT/train/<model>-dropout.safetensors holds
the same batch and labels as above plus, with every dropout rate at DROPOUT_P (train mode):
  mean_loss                                   (1) the loss averaged over DROPOUT_DRAWS torch seeds
  mean_grad.<name>                            the gradient averaged over the same draws
  mean_sq_norm.<name>                         (1) ||gradient||^2 averaged over the same draws
A dropout site missing, misplaced (say, after a residual sum instead of before) or scaled wrongly
moves these means by far more than the sampling noise of the average. The second moment gives the
variance of the gradient over masks, E||g||^2 - ||E g||^2: masks that were correlated (across rows,
heads, sites or layers) where they should be independent keep the means and raise the variance.

Question answering uses rows without padding: transformers computes its start/end softmax over all
T positions including pads, while ScaleBERT's packed rows hold only real tokens (pads get no
probability), so the two agree exactly only on unpadded rows.

Usage: .venv/bin/python reference/train_reference.py --fixtures build/fixtures --out build/fixtures
"""
import argparse
import pathlib
import sys

import torch
from safetensors.torch import save_file
from transformers import (BertForMaskedLM, BertForQuestionAnswering, BertForSequenceClassification,
                          BertForTokenClassification)

CLS_ID, SEP_ID, MASK_ID = 6, 7, 8
DROPOUT_P = 0.3
DROPOUT_DRAWS = 400


def padded_batch(generator, lengths, vocab_size):
    """Random ids with [CLS] ... [SEP], right-padded to max(lengths); second half of row 1 is type 1."""
    B, T = len(lengths), max(lengths)
    input_ids = torch.zeros(B, T, dtype=torch.long)
    attention_mask = torch.zeros(B, T, dtype=torch.long)
    token_type_ids = torch.zeros(B, T, dtype=torch.long)
    for row, length in enumerate(lengths):
        input_ids[row, :length] = torch.randint(9, vocab_size, (length,), generator=generator)
        input_ids[row, 0] = CLS_ID
        input_ids[row, length - 1] = SEP_ID
        attention_mask[row, :length] = 1
        if row == 1:
            token_type_ids[row, length // 2:length] = 1
    return input_ids, attention_mask, token_type_ids


def gradients(model):
    grads = {}
    for name, parameter in model.named_parameters():
        key = name[len("bert."):] if name.startswith("bert.") else name
        grads["grad." + key] = parameter.grad.detach().clone().contiguous()
    return grads


def run(model_class, folder, out, make_labels, lengths):
    model = model_class.from_pretrained(str(folder), attn_implementation="eager").eval()
    generator = torch.Generator().manual_seed(1234)
    input_ids, attention_mask, token_type_ids = padded_batch(generator, lengths, model.config.vocab_size)
    labels = make_labels(generator, input_ids, attention_mask, model.config)
    model.zero_grad()
    outputs = model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, **labels)
    outputs.loss.backward()
    tensors = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids,
               "loss": outputs.loss.detach().reshape(1)}
    tensors.update({name: value.contiguous() for name, value in labels.items()})
    tensors.update(gradients(model))
    save_file(tensors, str(out / f"{folder.name}.safetensors"))
    print(f"train_reference: {folder.name}: loss {outputs.loss.item():.6f}, {len(tensors)} tensors")


def run_dropout_expectation(model_class, folder, out, make_labels, lengths):
    """Mean loss and gradients over DROPOUT_DRAWS dropout masks (see the module docstring)."""
    model = model_class.from_pretrained(str(folder), attn_implementation="eager", hidden_dropout_prob=DROPOUT_P,
                                        attention_probs_dropout_prob=DROPOUT_P, classifier_dropout=DROPOUT_P).train()
    generator = torch.Generator().manual_seed(1234)
    input_ids, attention_mask, token_type_ids = padded_batch(generator, lengths, model.config.vocab_size)
    labels = make_labels(generator, input_ids, attention_mask, model.config)
    sums, loss_sum, squares = None, 0.0, {}
    for draw in range(DROPOUT_DRAWS):
        torch.manual_seed(draw)
        model.zero_grad()
        outputs = model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, **labels)
        outputs.loss.backward()
        loss_sum += outputs.loss.item()
        grads = gradients(model)
        sums = grads if sums is None else {name: sums[name] + value for name, value in grads.items()}
        for name, value in grads.items():
            squares[name] = squares.get(name, 0.0) + float((value.double() ** 2).sum())
    tensors = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids,
               "mean_loss": torch.tensor([loss_sum / DROPOUT_DRAWS], dtype=torch.float32)}
    tensors.update({name: value.contiguous() for name, value in labels.items()})
    tensors.update({"mean_" + name: (value / DROPOUT_DRAWS).contiguous() for name, value in sums.items()})
    tensors.update({"mean_sq_norm." + name[len("grad."):]: torch.tensor([value / DROPOUT_DRAWS], dtype=torch.float32)
                    for name, value in squares.items()})
    save_file(tensors, str(out / f"{folder.name}-dropout.safetensors"))
    print(f"train_reference: {folder.name}: mean loss with dropout {DROPOUT_P}: {loss_sum / DROPOUT_DRAWS:.6f} "
          f"over {DROPOUT_DRAWS} draws")


def sequence_labels(generator, input_ids, attention_mask, config):
    return {"labels": torch.randint(0, config.num_labels, (input_ids.shape[0],), generator=generator)}


def token_labels(generator, input_ids, attention_mask, config):
    labels = torch.randint(0, config.num_labels, input_ids.shape, generator=generator)
    labels[attention_mask == 0] = -100
    labels[:, 0] = -100  # [CLS] ignored, as first-subword labelling does
    labels[0, 3] = -100  # a continuation subword
    return {"labels": labels}


def span_labels(generator, input_ids, attention_mask, config):
    T = input_ids.shape[1]
    start = torch.randint(1, T - 2, (input_ids.shape[0],), generator=generator)
    end = torch.minimum(start + torch.randint(0, 3, start.shape, generator=generator), torch.tensor(T - 2))
    return {"start_positions": start, "end_positions": end}


def masked_labels(generator, input_ids, attention_mask, config):
    labels = torch.full(input_ids.shape, -100, dtype=torch.long)
    chosen = (torch.rand(input_ids.shape, generator=generator) < 0.3) & (attention_mask == 1)
    chosen[:, 0] = False
    chosen[0, 2] = True
    labels[chosen] = input_ids[chosen]
    input_ids[chosen & (torch.rand(input_ids.shape, generator=generator) < 0.8)] = MASK_ID
    return {"labels": labels}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fixtures", required=True, type=pathlib.Path, help="where make_tiny_bert.py wrote models")
    parser.add_argument("--out", required=True, type=pathlib.Path)
    args = parser.parse_args()
    out = args.out / "train"
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    cases = [
        (BertForSequenceClassification, "tiny-bert-cls", sequence_labels, [16, 9, 12, 5]),
        (BertForTokenClassification, "tiny-bert-ner", token_labels, [16, 11, 7]),
        (BertForQuestionAnswering, "tiny-bert-qa", span_labels, [14, 14, 14]),
        (BertForMaskedLM, "tiny-bert-mlm", masked_labels, [16, 12, 9]),
    ]
    for model_class, name, make_labels, lengths in cases:
        folder = args.fixtures / name
        if not (folder / "config.json").exists():
            sys.exit(f"train_reference: {folder} is missing: run reference/make_tiny_bert.py first")
        run(model_class, folder, out, make_labels, lengths)
        if name in ("tiny-bert-cls", "tiny-bert-ner"):
            run_dropout_expectation(model_class, folder, out, make_labels, lengths)


if __name__ == "__main__":
    main()
