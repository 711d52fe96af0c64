#!/usr/bin/env python3
"""PyTorch reference for sasrec-autograd's generic losses and optimisers.

Writes crates/autograd/tests/fixtures/torch_reference.safetensors, which
crates/autograd/tests/torch_reference.rs compares against on the CPU and the
GPU backend:

  - F.cross_entropy over a logits matrix, without and with ignore_index:
    the loss and the gradient of the logits;
  - F.mse_loss: the loss and the gradient of the prediction;
  - torch.optim.Adam and torch.optim.AdamW: the parameters after each of
    6 steps from the same start and the same gradients, for several
    hyper-parameter sets (including beta1 < 0.5, which takes lerp's other
    branch, and a large weight decay).

    python3 scripts/torch_autograd_reference.py \
        --out crates/autograd/tests/fixtures/torch_reference.safetensors

Needs: pip install torch safetensors
"""

import argparse

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

# name: (class, keyword arguments)
OPTIMISERS = {
    "adam": (torch.optim.Adam, dict(lr=0.01, betas=(0.9, 0.999), eps=1e-8)),
    "adam_low_beta1": (torch.optim.Adam, dict(lr=0.05, betas=(0.3, 0.99), eps=1e-6)),
    "adamw": (torch.optim.AdamW, dict(lr=0.01, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)),
    "adamw_strong_decay": (
        torch.optim.AdamW,
        dict(lr=0.1, betas=(0.8, 0.95), eps=1e-8, weight_decay=0.5),
    ),
}
STEPS = 6


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.manual_seed(0)
    out = {}

    # Cross-entropy over logits; class 0 is a class like any other.
    logits = (torch.randn(7, 5) * 2).requires_grad_()
    targets = torch.tensor([0, 2, 4, 1, 0, 3, 2])
    out["ce.logits"] = logits.detach().clone()
    out["ce.targets"] = targets.to(torch.int32)
    for name, kwargs in [("all", {}), ("ignore2", {"ignore_index": 2})]:
        loss = F.cross_entropy(logits, targets, **kwargs)
        (grad,) = torch.autograd.grad(loss, logits)
        out[f"ce.{name}.loss"] = loss.detach().reshape(1)
        out[f"ce.{name}.grad"] = grad

    prediction = torch.randn(6, 3).requires_grad_()
    target = torch.randn(6, 3)
    loss = F.mse_loss(prediction, target)
    (grad,) = torch.autograd.grad(loss, prediction)
    out["mse.prediction"] = prediction.detach().clone()
    out["mse.target"] = target
    out["mse.loss"] = loss.detach().reshape(1)
    out["mse.grad"] = grad

    # Optimisers: gradients of mixed magnitude, some exactly 0.
    n = 64
    start = torch.randn(n)
    grads = torch.randn(STEPS, n) * (10.0 ** torch.randint(-3, 2, (STEPS, n)).float())
    grads[:, ::7] = 0.0
    out["optim.start"] = start
    out["optim.grads"] = grads
    for name, (cls, kwargs) in OPTIMISERS.items():
        param = torch.nn.Parameter(start.clone())
        opt = cls([param], **kwargs)
        trajectory = []
        for step in range(STEPS):
            param.grad = grads[step].clone()
            opt.step()
            trajectory.append(param.detach().clone())
        out[f"optim.{name}"] = torch.stack(trajectory)

    save_file({k: v.contiguous() for k, v in out.items()}, args.out, metadata={"torch": torch.__version__})
    print(f"wrote {args.out} ({len(out)} tensors, torch {torch.__version__})")


if __name__ == "__main__":
    main()
