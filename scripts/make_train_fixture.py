#!/usr/bin/env python3
"""Fixture for the training-step parity test (crates/repghost/tests/train_parity.rs).

timm's RepGhostNet (width 0.2, one input channel, 10 classes, no dropout) takes two SGD
steps on one batch exactly as the official recipe computes them: BatchNorm on batch
statistics, cross-entropy with label smoothing 0.1, SGD with Nesterov momentum 0.9 and
weight decay on conv/linear weights only (timm's param_groups_weight_decay). Writes the
initial and the final state dicts, the batch, and the hyper-parameters, to
crates/repghost/tests/fixtures/train_step.safetensors.

    pip install torch timm safetensors
    python scripts/make_train_fixture.py
"""
import os

import torch
from safetensors.torch import save_file
from timm.models.repghost import _create_repghostnet

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates", "repghost", "tests",
                   "fixtures", "train_step.safetensors")
LR, MOMENTUM, WD, SMOOTHING = 0.1, 0.9, 1e-3, 0.1


def main():
    torch.manual_seed(0)
    m = _create_repghostnet("repghostnet_020", width=0.2, in_chans=1, num_classes=10, drop_rate=0.0).train()
    init = {f"init.{k}": v.detach().clone() for k, v in m.state_dict().items() if "num_batches" not in k}
    x = torch.randn(8, 1, 128, 128)
    y = torch.tensor([0, 3, 7, 1, 9, 3, 5, 2])
    decay = [p for p in m.parameters() if p.ndim > 1]
    no_decay = [p for p in m.parameters() if p.ndim <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": WD}, {"params": no_decay, "weight_decay": 0.0}],
                          lr=LR, momentum=MOMENTUM, nesterov=True)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=SMOOTHING)
    losses = []
    grads = {}
    for step in range(2):
        opt.zero_grad()
        loss = loss_fn(m(x), y)
        loss.backward()
        if step == 0:
            grads = {f"grad.{k}": p.grad.detach().clone() for k, p in m.named_parameters()}
        opt.step()
        if step == 0:
            after1 = {f"after1.{k}": v.detach().clone() for k, v in m.state_dict().items() if "num_batches" not in k}
        losses.append(loss.item())
    after = {f"after.{k}": v.detach().clone() for k, v in m.state_dict().items() if "num_batches" not in k}
    tensors = {**init, **after, **after1, **grads, "input": x, "labels": y.float(), "losses": torch.tensor(losses)}
    save_file({k: v.contiguous() for k, v in tensors.items()}, OUT,
              metadata={"lr": str(LR), "momentum": str(MOMENTUM), "weight_decay": str(WD),
                        "smoothing": str(SMOOTHING)})
    print(OUT, "losses", losses)


if __name__ == "__main__":
    main()
