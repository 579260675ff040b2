#!/usr/bin/env python3
"""Ground truth for the optimizers, gradient clipping and learning-rate schedules (PyTorch, transformers).

Writes OUT/optimizer/:
  optimizer_reference.safetensors  (all F32)
    initial.<name>                   the parameters before step 0
    grad.<k>.<name>                  the raw gradient of step k (k = 0..19), before clipping
    <run>.<k>.<name>                 the parameters after step k for each run:
                                       adamw   torch.optim.AdamW, groups decay / no decay
                                       lamb    the LAMB below (You et al. 2019, Alg. 2), bias correction on
                                       lamb_no_bias_correction   the same without bias correction
                                       lamb_exclude              trust ratio 1 for no-decay entries
                                                                 (apex use_nvlamb=False)
    <run>.grad_norm                  (20) what torch.nn.utils.clip_grad_norm_ returned each step
    lr                               (20) the learning rate each step used
    Metadata "config": JSON with the parameter table (name, shape, weight_decay, in order), the
    hyperparameters of each run, the schedule and the exact learning rates.
    Every step: lr = peak * linear-warmup-then-decay(k) (transformers), clip_grad_norm_(max_norm),
    optimizer.step(), scheduler.step().
  schedules.json
    For several configurations of every transformers schedule (get_constant_schedule,
    get_constant_schedule_with_warmup, get_linear_schedule_with_warmup,
    get_polynomial_decay_schedule_with_warmup, get_cosine_schedule_with_warmup): the multiplier
    LambdaLR applies at steps 0..N+9, as exact doubles.
Run with the project venv: .venv/bin/python reference/optimizer_reference.py --out DIR
"""
import argparse
import json
import math
import pathlib
import sys

STEPS = 20
PEAK_LR = 1e-2
WARMUP = 4
MAX_GRAD_NORM = 1.0
WEIGHT_DECAY = 0.1

# (name, shape, weight_decay, initialisation). Zero-initialised entries make LAMB's ||w|| = 0 case
# happen on step 0 (ratio 1), with and without weight decay.
PARAMETERS = [
    ("embeddings.word_embeddings.weight", [50, 16], True, "normal"),
    ("embeddings.LayerNorm.weight", [16], False, "ones"),
    ("embeddings.LayerNorm.bias", [16], False, "normal"),
    ("encoder.layer.0.attention.self.query.weight", [16, 16], True, "normal"),
    ("encoder.layer.0.attention.self.query.bias", [16], False, "normal"),
    ("encoder.layer.0.attention.output.LayerNorm.weight", [16], False, "ones"),
    ("pooler.dense.weight", [16, 16], True, "zeros"),
    ("classifier.weight", [3, 16], True, "normal"),
    ("classifier.bias", [3], False, "zeros"),
]

RUNS = {
    "adamw": dict(algorithm="adamw", beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=WEIGHT_DECAY),
    "lamb": dict(algorithm="lamb", beta1=0.9, beta2=0.999, eps=1e-6, weight_decay=WEIGHT_DECAY,
                 bias_correction=True, exclude_from_adaptation=False),
    "lamb_no_bias_correction": dict(algorithm="lamb", beta1=0.9, beta2=0.999, eps=1e-6, weight_decay=WEIGHT_DECAY,
                                    bias_correction=False, exclude_from_adaptation=False),
    "lamb_exclude": dict(algorithm="lamb", beta1=0.9, beta2=0.999, eps=1e-6, weight_decay=WEIGHT_DECAY,
                         bias_correction=True, exclude_from_adaptation=True),
}


def make_lamb_class(torch):
    class Lamb(torch.optim.Optimizer):
        """LAMB, You et al. 2019 (arXiv 1904.00962) Algorithm 2 = apex FusedLAMB(adam_w_mode=True,
        grad_averaging=True, use_nvlamb=True), without apex's built-in gradient clipping:
          m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
          u = (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps) + wd w
          r = ||w|| / ||u||, 1 where either is 0 (or where the group sets adapt=False)
          w = w - lr r u
        Norms in float64 (the C++ accumulates them in double)."""

        def __init__(self, params, lr, betas, eps, weight_decay, bias_correction=True, adapt=True):
            defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                            bias_correction=bias_correction, adapt=adapt)
            super().__init__(params, defaults)

        @torch.no_grad()
        def step(self):
            for group in self.param_groups:
                beta1, beta2 = group["betas"]
                for p in group["params"]:
                    state = self.state[p]
                    if not state:
                        state["step"] = 0
                        state["exp_avg"] = torch.zeros_like(p)
                        state["exp_avg_sq"] = torch.zeros_like(p)
                    state["step"] += 1
                    t = state["step"]
                    m, v, g = state["exp_avg"], state["exp_avg_sq"], p.grad
                    m.mul_(beta1).add_(g, alpha=1 - beta1)
                    v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                    if group["bias_correction"]:
                        bc1, bc2 = 1 - beta1 ** t, 1 - beta2 ** t
                    else:
                        bc1, bc2 = 1.0, 1.0
                    update = (m / bc1) / ((v / bc2).sqrt() + group["eps"])
                    if group["weight_decay"] != 0:
                        update.add_(p, alpha=group["weight_decay"])
                    w_norm = p.double().norm().item()
                    u_norm = update.double().norm().item()
                    ratio = w_norm / u_norm if (group["adapt"] and w_norm > 0 and u_norm > 0) else 1.0
                    p.add_(update, alpha=-group["lr"] * ratio)

    return Lamb


def schedule_cases():
    """(label, transformers function name, kwargs, peak lr) for schedules.json."""
    return [
        ("constant", "get_constant_schedule", dict(), 1e-3),
        ("constant_with_warmup_w10", "get_constant_schedule_with_warmup", dict(num_warmup_steps=10), 1e-3),
        ("linear_w10_n100", "get_linear_schedule_with_warmup", dict(num_warmup_steps=10, num_training_steps=100), 1e-3),
        ("linear_w0_n100", "get_linear_schedule_with_warmup", dict(num_warmup_steps=0, num_training_steps=100), 1e-3),
        ("linear_w100_n100", "get_linear_schedule_with_warmup", dict(num_warmup_steps=100, num_training_steps=100), 1e-3),
        ("polynomial_w10_n100_p1", "get_polynomial_decay_schedule_with_warmup",
         dict(num_warmup_steps=10, num_training_steps=100), 1e-3),
        ("polynomial_w10_n100_p2_end1e-4", "get_polynomial_decay_schedule_with_warmup",
         dict(num_warmup_steps=10, num_training_steps=100, lr_end=1e-4, power=2.0), 1e-3),
        ("polynomial_w7_n93_p0.5", "get_polynomial_decay_schedule_with_warmup",
         dict(num_warmup_steps=7, num_training_steps=93, lr_end=3e-6, power=0.5), 5e-4),
        ("cosine_w10_n100", "get_cosine_schedule_with_warmup", dict(num_warmup_steps=10, num_training_steps=100), 1e-3),
        ("cosine_w3_n97_c1", "get_cosine_schedule_with_warmup",
         dict(num_warmup_steps=3, num_training_steps=97, num_cycles=1.0), 1e-3),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=pathlib.Path)
    args = parser.parse_args()
    import torch
    import transformers
    from safetensors.torch import save_file

    out = args.out / "optimizer"
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(1904)
    Lamb = make_lamb_class(torch)

    initial = {}
    for name, shape, _, init in PARAMETERS:
        if init == "normal":
            initial[name] = torch.randn(shape) * 0.5
        elif init == "ones":
            initial[name] = 1.0 + 0.1 * torch.randn(shape)
        else:
            initial[name] = torch.zeros(shape)
    grads = []
    for _ in range(STEPS):
        # A per-step scale spanning 10^-2.5 .. 10^0 so that clipping (max_norm 1 over ~1.4k
        # elements) applies on some steps and not on others.
        scale = 10 ** (torch.rand(()).item() * 2.5 - 2.5)
        grads.append({name: torch.randn(shape) * scale for name, shape, _, _ in PARAMETERS})

    tensors = {f"initial.{name}": t.clone() for name, t in initial.items()}
    for k, step_grads in enumerate(grads):
        for name, g in step_grads.items():
            tensors[f"grad.{k}.{name}"] = g.clone()

    learning_rates = None
    clipped_steps = {}
    for run, hyper in RUNS.items():
        params = {name: torch.nn.Parameter(initial[name].clone()) for name, _, _, _ in PARAMETERS}
        decay = [params[name] for name, _, wd, _ in PARAMETERS if wd]
        no_decay = [params[name] for name, _, wd, _ in PARAMETERS if not wd]
        betas = (hyper["beta1"], hyper["beta2"])
        if hyper["algorithm"] == "adamw":
            optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": hyper["weight_decay"]},
                                           {"params": no_decay, "weight_decay": 0.0}],
                                          lr=PEAK_LR, betas=betas, eps=hyper["eps"])
        else:
            adapt_no_decay = not hyper["exclude_from_adaptation"]
            optimizer = Lamb([{"params": decay, "weight_decay": hyper["weight_decay"], "adapt": True},
                              {"params": no_decay, "weight_decay": 0.0, "adapt": adapt_no_decay}],
                             lr=PEAK_LR, betas=betas, eps=hyper["eps"], weight_decay=0.0,
                             bias_correction=hyper["bias_correction"])
        scheduler = transformers.get_linear_schedule_with_warmup(optimizer, WARMUP, STEPS)
        norms, lrs = [], []
        for k in range(STEPS):
            for name, p in params.items():
                p.grad = grads[k][name].clone()
            total = torch.nn.utils.clip_grad_norm_(list(params.values()), MAX_GRAD_NORM)
            norms.append(total.item())
            lrs.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
            for name, p in params.items():
                tensors[f"{run}.{k}.{name}"] = p.detach().clone()
        tensors[f"{run}.grad_norm"] = torch.tensor(norms, dtype=torch.float32)
        clipped_steps[run] = sum(1 for n in norms if MAX_GRAD_NORM / (n + 1e-6) < 1)
        if learning_rates is None:
            learning_rates = lrs
        assert lrs == learning_rates
    tensors["lr"] = torch.tensor(learning_rates, dtype=torch.float32)
    if not 0 < clipped_steps["adamw"] < STEPS:
        print(f"optimizer_reference: clipping applied on {clipped_steps['adamw']} of {STEPS} steps; "
              "the fixture must exercise both cases", file=sys.stderr)
        return 1

    config = {
        "parameters": [{"name": n, "shape": s, "weight_decay": wd} for n, s, wd, _ in PARAMETERS],
        "steps": STEPS,
        "peak_lr": PEAK_LR,
        "warmup_steps": WARMUP,
        "schedule": "linear",
        "max_grad_norm": MAX_GRAD_NORM,
        "runs": RUNS,
        "learning_rates": learning_rates,
        "clipped_steps": clipped_steps,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out / "optimizer_reference.safetensors"),
              metadata={"config": json.dumps(config)})

    # Schedules: the multiplier LambdaLR applies at each step, straight from transformers' lambdas,
    # checked against what the scheduler actually sets on the optimizer.
    cases = []
    for label, function, kwargs, peak in schedule_cases():
        dummy = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=peak)
        scheduler = getattr(transformers, function)(dummy, **kwargs)
        total = kwargs.get("num_training_steps", 100)
        values = [scheduler.lr_lambdas[0](step) for step in range(total + 10)]
        for step, value in enumerate(values):
            applied = dummy.param_groups[0]["lr"]
            if not math.isclose(applied, peak * value, rel_tol=1e-15, abs_tol=1e-300):
                print(f"optimizer_reference: {label} step {step}: scheduler set {applied}, lambda gives "
                      f"{peak * value}", file=sys.stderr)
                return 1
            dummy.step()
            scheduler.step()
        kind = {"get_constant_schedule": "constant", "get_constant_schedule_with_warmup": "constant_with_warmup",
                "get_linear_schedule_with_warmup": "linear",
                "get_polynomial_decay_schedule_with_warmup": "polynomial",
                "get_cosine_schedule_with_warmup": "cosine"}[function]
        cases.append({
            "label": label, "kind": kind, "function": function, "peak_lr": peak,
            "warmup_steps": kwargs.get("num_warmup_steps", 0), "total_steps": kwargs.get("num_training_steps", 0),
            "lr_end": kwargs.get("lr_end", 1e-7), "power": kwargs.get("power", 1.0),
            "num_cycles": kwargs.get("num_cycles", 0.5), "multipliers": values,
        })
    (out / "schedules.json").write_text(json.dumps({"transformers": transformers.__version__, "cases": cases},
                                                   indent=1))
    print(f"optimizer_reference: wrote {out} ({len(tensors)} tensors, {len(cases)} schedules; "
          f"clipping on {clipped_steps['adamw']}/{STEPS} steps)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
