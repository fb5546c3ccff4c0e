"""The gossip sum `w_i x_i + sum_j w_ij x_j` in compiled passes, rounded exactly as torch's ops round it.

With torch, an agent's mixing is one op for its own term and two per neighbour (`scratch = x * w`,
`total += scratch`): a 4-neighbour torus makes nine passes over a 247 KB LeNet-5 vector, each with its dispatch
cost, about 55 us per agent and round on this CPU, warm. Here the terms go through compiled loops two neighbours
at a time (three calls for four neighbours, about 27 us warm; less gained in a run, where the vectors come from
memory). Every term is still rounded, then added, in the same order: numba without `fastmath` fuses no
multiply-add, so the floats are torch's, bit for bit (the golden records and tests/test_mixing_kernel.py hold it
to that). Only float32 vectors on the host take this way; the others (a GPU agent, float64 tests) keep torch's ops.

numba is imported on first use, not with the algorithms: a process that never mixes does not pay for it, and
the forkserver compiles the kernels once (`warm`) for every agent forked from it.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import numpy as np
import torch


@lru_cache(maxsize=None)
def _kernels():
    from numba import njit

    jit = njit(cache=True, fastmath=False, boundscheck=False, nogil=True)

    @jit
    def first(out, own, own_weight, x, w):  # out = own * w_i + x * w
        for i in range(out.shape[0]):
            out[i] = own[i] * own_weight + x[i] * w

    @jit
    def add_two(out, x, w, y, v):  # out = (out + x * w) + y * v
        for i in range(out.shape[0]):
            out[i] = (out[i] + x[i] * w) + y[i] * v

    @jit
    def add_one(out, x, w):
        for i in range(out.shape[0]):
            out[i] = out[i] + x[i] * w

    return first, add_two, add_one


def _compiled(tensor: torch.Tensor, shape: torch.Size) -> bool:
    """What the loops can read: float32 on the host, contiguous, of the own vector's 1-D shape (bounds are not
    checked inside them, so a shorter vector would be read past its end)."""
    return (tensor.dtype == torch.float32 and tensor.device.type == "cpu" and tensor.is_contiguous()
            and tensor.shape == shape and not tensor.requires_grad)


def weighted_sum(own: torch.Tensor, own_weight: float, vectors: Sequence[torch.Tensor],
                 weights: Sequence[float]) -> torch.Tensor | None:
    """`own * own_weight + vectors[0] * weights[0] + ...`, summed left to right, as a new vector; None where the
    compiled loops do not apply (no vector, not float32 on the host, not contiguous, shapes that differ)."""
    shape = own.shape
    if not vectors or len(shape) != 1 or not all(_compiled(x, shape) for x in (own, *vectors)):
        return None
    first, add_two, add_one = _kernels()
    arrays = [x.numpy() for x in vectors]
    scalars = [np.float32(w) for w in weights]  # torch rounds a Python scalar to the tensor's float32 too
    total = torch.empty_like(own)
    out = total.numpy()
    first(out, own.numpy(), np.float32(own_weight), arrays[0], scalars[0])
    k = 1
    while k + 1 < len(arrays):
        add_two(out, arrays[k], scalars[k], arrays[k + 1], scalars[k + 1])
        k += 2
    if k < len(arrays):
        add_one(out, arrays[k], scalars[k])
    return total


def warm() -> None:
    """Compile (or load from numba's cache) every kernel now, in this process: a forkserver's agents inherit
    them instead of each compiling in its first round."""
    vector = torch.zeros(4)
    weighted_sum(vector, 0.2, [vector] * 4, [0.2] * 4)  # four neighbours: each of the three kernels runs
