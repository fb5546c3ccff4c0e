"""CP-CFL's pre-training math (ALGORITHMS.md B3): NT-Xent (SimCLR) and label-free augmentations.

Augmentations never include the transformation that defines the clusters (no rotations): the
encoder must keep the cluster signal, not learn to ignore it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """Mean over the 2N views of -log exp(cos(z_a,z_b)/tau) / sum_{k != a} exp(cos(z_a,z_k)/tau)."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n = len(z1)
    similarity = (z @ z.T / temperature).masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    positives = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(similarity, positives)


def augment(x: torch.Tensor, generator: torch.Generator, max_shift: int = 1, noise: float = 0.1,
            erase_probability: float = 0.5) -> torch.Tensor:
    """Random shift (zero-padded), Gaussian noise and random erasing of one rectangle, per sample."""
    out = x.clone()
    if out.dim() == 4 and max_shift > 0:
        _, _, h, w = out.shape
        padded = F.pad(out, (max_shift,) * 4)
        shifts = torch.randint(0, 2 * max_shift + 1, (len(out), 2), generator=generator)
        out = torch.stack([padded[i, :, dy:dy + h, dx:dx + w] for i, (dy, dx) in enumerate(shifts.tolist())])
    if noise > 0:
        out = out + noise * torch.randn(out.shape, generator=generator).to(out.device)
    if out.dim() == 4 and erase_probability > 0:
        _, _, h, w = out.shape
        for i in torch.nonzero(torch.rand(len(out), generator=generator) < erase_probability).flatten().tolist():
            eh, ew = (int(torch.randint(max(1, h // 4), max(2, h // 2 + 1), (1,), generator=generator)),
                      int(torch.randint(max(1, w // 4), max(2, w // 2 + 1), (1,), generator=generator)))
            top = int(torch.randint(0, h - eh + 1, (1,), generator=generator))
            left = int(torch.randint(0, w - ew + 1, (1,), generator=generator))
            out[i, :, top:top + eh, left:left + ew] = 0.0
    return out
