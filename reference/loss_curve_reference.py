#!/usr/bin/env python3
"""Ground truth for ScaleBERT's training loop: a 20-step loss curve of transformers (PyTorch 1.13,
float32) with AdamW and with LAMB, dropout off, and the parameters after the last step.

Reads the tiny models that make_tiny_bert.py wrote under --fixtures (run it first) and writes
OUT/loss_curve/<model>.safetensors for tiny-bert-cls (sequence classification) and tiny-bert-mlm
(masked LM), holding:
  batch.<b>.input_ids, .attention_mask, .token_type_ids   (B, T) int64, right-padded, b = 0..3
  batch.<b>.labels                                        (B) or (B, T) with -100 ignored
  <opt>.loss         (20) float32: the mean loss of step k, computed before step k's update
  <opt>.grad_norm    (20) float32: what clip_grad_norm_ returned (before clipping)
  <opt>.lr           (20) float32: the learning rate step k used
  <opt>.final.<name> the parameters after step 19, Hugging Face names without "bert." (tied
                     tensors once: the MLM decoder is inside embeddings.word_embeddings.weight)
for <opt> in adamw, lamb. Metadata "config" (JSON): the hyperparameters, the step -> batch order,
and every parameter with its weight-decay flag, so the C++ test can check its grouping too.

Every step k (0..19), exactly as a transformers training loop does it:
  zero_grad; loss = model(batch[k % 4]).loss; loss.backward();
  clip_grad_norm_(all parameters, 1.0); optimizer.step(); scheduler.step()
with get_linear_schedule_with_warmup(warmup 4, total 20) (so step 0 runs at lr 0), weight decay
0.01 on every parameter except biases and LayerNorm parameters (ScaleBERT's rule), AdamW =
torch.optim.AdamW(eps 1e-8), LAMB = optimizer_reference.py's torch LAMB (You et al. 2019,
Algorithm 2, eps 1e-6, bias correction on, trust ratio on every tensor).
Dropout is off (eval mode) so the curve is deterministic; autograd still runs.

Usage: .venv/bin/python reference/loss_curve_reference.py --fixtures build/fixtures --out build/fixtures
"""
import argparse
import json
import pathlib
import sys

import torch
import transformers
from safetensors.torch import save_file
from transformers import BertForMaskedLM, BertForSequenceClassification

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from optimizer_reference import make_lamb_class  # noqa: E402  (the one torch LAMB of the project)
from train_reference import padded_batch  # noqa: E402  (the same batches as the one-step gradients)

CLS_ID, SEP_ID, MASK_ID = 6, 7, 8
STEPS = 20
BATCHES = 4
WARMUP = 4
MAX_GRAD_NORM = 1.0
WEIGHT_DECAY = 0.01
OPTIMIZERS = {
    "adamw": dict(lr=2e-3, betas=(0.9, 0.999), eps=1e-8),
    "lamb": dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-6),
}


def sequence_labels(generator, input_ids, attention_mask, config):
    return torch.randint(0, config.num_labels, (input_ids.shape[0],), generator=generator)


def masked_labels(generator, input_ids, attention_mask, config):
    """30% of the real non-[CLS] tokens get a label; 80% of those become [MASK] (in place)."""
    labels = torch.full(input_ids.shape, -100, dtype=torch.long)
    chosen = (torch.rand(input_ids.shape, generator=generator) < 0.3) & (attention_mask == 1)
    chosen[:, 0] = False
    chosen[0, 1] = True  # at least one target per batch
    labels[chosen] = input_ids[chosen]
    input_ids[chosen & (torch.rand(input_ids.shape, generator=generator) < 0.8)] = MASK_ID
    return labels


def parameter_key(name):
    return name[len("bert."):] if name.startswith("bert.") else name


def decays(name):
    """ScaleBERT's (and the transformers Trainer's) rule: no decay on biases and LayerNorm."""
    return not (name.endswith("bias") or "LayerNorm" in name)


def make_optimizer(kind, model):
    named = list(model.named_parameters())  # tied tensors appear once
    decay = [p for n, p in named if decays(parameter_key(n))]
    no_decay = [p for n, p in named if not decays(parameter_key(n))]
    settings = OPTIMIZERS[kind]
    if kind == "adamw":
        return torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                                  {"params": no_decay, "weight_decay": 0.0}], **settings)
    Lamb = make_lamb_class(torch)
    return Lamb([{"params": decay, "weight_decay": WEIGHT_DECAY, "adapt": True},
                 {"params": no_decay, "weight_decay": 0.0, "adapt": True}],
                weight_decay=0.0, bias_correction=True, **settings)


def train(model_class, folder, kind, batches):
    model = model_class.from_pretrained(str(folder), attn_implementation="eager").eval()
    optimizer = make_optimizer(kind, model)
    scheduler = transformers.get_linear_schedule_with_warmup(optimizer, WARMUP, STEPS)
    losses, norms, rates = [], [], []
    for k in range(STEPS):
        batch = batches[k % BATCHES]
        optimizer.zero_grad(set_to_none=False)
        outputs = model(**batch)
        outputs.loss.backward()
        norms.append(torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM).item())
        rates.append(optimizer.param_groups[0]["lr"])
        losses.append(outputs.loss.item())
        optimizer.step()
        scheduler.step()
    tensors = {f"{kind}.loss": torch.tensor(losses, dtype=torch.float32),
               f"{kind}.grad_norm": torch.tensor(norms, dtype=torch.float32),
               f"{kind}.lr": torch.tensor(rates, dtype=torch.float32)}
    for name, parameter in model.named_parameters():
        tensors[f"{kind}.final.{parameter_key(name)}"] = parameter.detach().clone().contiguous()
    parameters = [{"name": parameter_key(n), "shape": list(p.shape), "weight_decay": decays(parameter_key(n))}
                  for n, p in model.named_parameters()]
    return tensors, losses, parameters


def run(model_class, folder, out, make_labels, lengths):
    config = transformers.AutoConfig.from_pretrained(str(folder))
    generator = torch.Generator().manual_seed(2019)
    batches, tensors = [], {}
    for b in range(BATCHES):
        input_ids, attention_mask, token_type_ids = padded_batch(generator, lengths[b], config.vocab_size)
        labels = make_labels(generator, input_ids, attention_mask, config)
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids,
                 "labels": labels}
        batches.append(batch)
        tensors.update({f"batch.{b}.{key}": value.contiguous() for key, value in batch.items()})
    parameters = None
    summary = []
    for kind in OPTIMIZERS:
        run_tensors, losses, parameters = train(model_class, folder, kind, batches)
        tensors.update(run_tensors)
        summary.append(f"{kind} {losses[0]:.4f} -> {losses[-1]:.4f}")
    metadata = {
        "steps": STEPS, "batches": BATCHES, "batch_of_step": "k % batches", "warmup_steps": WARMUP,
        "schedule": "linear", "max_grad_norm": MAX_GRAD_NORM, "weight_decay": WEIGHT_DECAY,
        "optimizers": {k: dict(v, betas=list(v["betas"])) for k, v in OPTIMIZERS.items()},
        "lamb": {"bias_correction": True, "exclude_from_adaptation": False},
        "parameters": parameters, "torch": torch.__version__, "transformers": transformers.__version__,
    }
    save_file(tensors, str(out / f"{folder.name}.safetensors"), metadata={"config": json.dumps(metadata)})
    print(f"loss_curve_reference: {folder.name}: {'; '.join(summary)}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fixtures", required=True, type=pathlib.Path, help="where make_tiny_bert.py wrote models")
    parser.add_argument("--out", required=True, type=pathlib.Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()
    out = args.out / "loss_curve"
    out.mkdir(parents=True, exist_ok=True)
    cases = [
        (BertForSequenceClassification, "tiny-bert-cls", sequence_labels,
         [[16, 9, 12, 5], [11, 14, 6, 16], [8, 8, 15, 10], [13, 7, 16, 12]]),
        (BertForMaskedLM, "tiny-bert-mlm", masked_labels,
         [[16, 12, 9], [10, 16, 14], [15, 6, 12], [9, 13, 16]]),
    ]
    for model_class, name, make_labels, lengths in cases:
        folder = args.fixtures / name
        if not (folder / "config.json").exists():
            sys.exit(f"loss_curve_reference: {folder} is missing: run reference/make_tiny_bert.py first")
        run(model_class, folder, out, make_labels, lengths)


if __name__ == "__main__":
    main()
