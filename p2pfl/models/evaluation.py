"""Test accuracy and loss of one model, in batches, without gradients."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256,
             pause: Callable[[], None] | None = None) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) on (x, y). Batches of 256: larger ones only raise every agent's peak
    memory (1024 LeNet-5 inputs hold ~100 MB of activations) for no speed on one thread. `pause`, after each
    batch: where a packed agent lets its mates run (turn.breathe)."""
    was_training = model.training
    model.eval()
    correct, loss = 0, 0.0
    device = next(model.parameters()).device
    for start in range(0, len(y), batch_size):
        xb, yb = x[start:start + batch_size].to(device), y[start:start + batch_size].to(device)
        logits = model(xb)
        loss += float(F.cross_entropy(logits, yb, reduction="sum"))
        correct += int((logits.argmax(1) == yb).sum())
        if pause is not None:
            pause()
    model.train(was_training)
    return correct / len(y), loss / len(y)
