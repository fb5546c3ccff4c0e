"""2x2 max pooling (stride 2) in compiled loops on the CPU: nn.MaxPool2d(2)'s floats and gradients, bit for bit.

torch's CPU max_pool2d walks each window with a branch per element (`val > max || isnan(val)`), so its time
depends on how well the CPU guesses those branches, that is on the data: on this CPU it took over a quarter of a
LeNet-5 step at batch 32 (607 of 2,170 us), and 9% more on the models of a gossip run than on those of a
local-only run, on the same batches (607 against 555 us; `python benchmarks/pool_cost.py`): a gossip run's local
steps were slower than its compute floor's with no communication in them. Here each window's four values are
compared with selects, not branches, under torch's rule (the first maximum in row-major order; a NaN, the last
one, wins), so the same values, the same winning positions and so the same gradients come out, in 84 us on
either run's models: the step takes 0.85x torch's.

Only float32 NCHW tensors on the host take this way (a GPU, half precision, channels-last keep torch's op), and
its backward cannot be differentiated again (nothing in p2pfl does).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable


@lru_cache(maxsize=None)
def _kernels():
    from numba import njit

    jit = njit(cache=True, fastmath=False, boundscheck=False, nogil=True)

    @jit
    def forward(x, out, winner):  # x: (planes, H, W); out, winner: (planes, H // 2, W // 2)
        for p in range(out.shape[0]):
            for oh in range(out.shape[1]):
                top, bottom, row, won = x[p, 2 * oh], x[p, 2 * oh + 1], out[p, oh], winner[p, oh]
                for ow in range(out.shape[2]):
                    best, at = top[2 * ow], 0
                    value = top[2 * ow + 1]
                    take = (value > best) | (value != value)
                    best, at = (value, 1) if take else (best, at)
                    value = bottom[2 * ow]
                    take = (value > best) | (value != value)
                    best, at = (value, 2) if take else (best, at)
                    value = bottom[2 * ow + 1]
                    take = (value > best) | (value != value)
                    best, at = (value, 3) if take else (best, at)
                    row[ow], won[ow] = best, at

    @jit
    def backward(grad, winner, grad_in):  # grad_in: (planes, H, W), every pooled element written
        zero = np.float32(0.0)
        for p in range(grad.shape[0]):
            for oh in range(grad.shape[1]):
                top, bottom, row, won = grad_in[p, 2 * oh], grad_in[p, 2 * oh + 1], grad[p, oh], winner[p, oh]
                for ow in range(grad.shape[2]):
                    value, at = zero + row[ow], won[ow]  # torch adds into zeros: -0.0 comes out +0.0
                    top[2 * ow] = value if at == 0 else zero
                    top[2 * ow + 1] = value if at == 1 else zero
                    bottom[2 * ow] = value if at == 2 else zero
                    bottom[2 * ow + 1] = value if at == 3 else zero

    return forward, backward


def compiled(x: torch.Tensor) -> bool:
    """What the loops take: float32 NCHW on the host, contiguous, at least one window."""
    return (x.dim() == 4 and x.dtype == torch.float32 and x.device.type == "cpu" and x.is_contiguous()
            and x.shape[2] >= 2 and x.shape[3] >= 2)


class _MaxPool2x2(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        out = torch.empty((n, c, h // 2, w // 2), dtype=x.dtype)
        winner = np.empty((n * c, h // 2, w // 2), dtype=np.uint8)  # 0-3: which of the window's four won
        _kernels()[0](x.detach().numpy().reshape(n * c, h, w), out.numpy().reshape(n * c, h // 2, w // 2), winner)
        ctx.winner, ctx.shape = winner, x.shape
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        n, c, h, w = ctx.shape
        grad_in = torch.empty(ctx.shape, dtype=grad.dtype)
        if h % 2 or w % 2:  # the row or column no window covers (floor mode) gets no gradient
            grad_in[:, :, 2 * (h // 2):].zero_()
            grad_in[:, :, :, 2 * (w // 2):].zero_()
        _kernels()[1](grad.contiguous().numpy().reshape(n * c, h // 2, w // 2), ctx.winner,
                      grad_in.numpy().reshape(n * c, h, w))
        return grad_in


def max_pool_2x2(x: torch.Tensor) -> torch.Tensor:
    """F.max_pool2d(x, 2): through the compiled loops where they apply, torch's op elsewhere."""
    if compiled(x):
        return _MaxPool2x2.apply(x)
    return F.max_pool2d(x, 2)


class MaxPool2x2(nn.Module):
    """nn.MaxPool2d(2) with its CPU float32 case in compiled loops (max_pool_2x2); no parameters, so state dicts
    are unchanged."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return max_pool_2x2(x)

    def extra_repr(self) -> str:
        return "kernel_size=2, stride=2"


def warm() -> None:
    """Compile (or load from numba's cache) both loops now: see warm_kernels.py."""
    x = torch.zeros((1, 1, 2, 2), requires_grad=True)
    _MaxPool2x2.apply(x).sum().backward()
