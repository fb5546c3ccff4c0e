"""The gossip sum `w_i x_i + sum_j w_ij x_j` in compiled passes, rounded exactly as torch's ops round it.

With torch, an agent's mixing is one op for its own term and two per neighbour (`scratch = x * w`,
`total += scratch`): a 4-neighbour torus makes nine passes over a 247 KB LeNet-5 vector, each with its dispatch
cost, about 55 us per agent and round on this CPU, warm. Here the terms go through compiled loops two neighbours
at a time (three calls for four neighbours, about 27 us warm; less gained in a run, where the vectors come from
memory). Every term is still rounded, then added, in the same order: numba without `fastmath` fuses no
multiply-add, so the floats are torch's, bit for bit (the golden records and tests/test_mixing_kernel.py hold it
to that). Only float32 vectors on the host take this way; the others (a GPU agent, float64 tests) keep torch's ops.

QGM's and CCL's step towards the neighbours, `own + gamma * sum_j w_ij (x_j - own)` (qgm.mix_with_step), goes
the same way (`step_toward`): torch made three passes per neighbour (difference, product, sum) and three more
(zeros, the product by gamma, the sum with own); the loops make one per neighbour pair, the last one fused with
the final sum, each difference, product and sum rounded as torch rounds it: 22 against 56 us with two neighbours,
34 against 96 with four, warm (`python benchmarks/mixing_kernels.py`).

numba is imported on first use, not with the algorithms: a process that never mixes does not pay for it, and
the forkserver compiles the kernels once (`warm`) for every agent forked from it.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch


class Kernels(NamedTuple):
    first: Callable  # the gossip sum's
    add_two: Callable
    add_one: Callable
    toward_one: Callable  # the step towards the neighbours' (QGM, CCL)
    delta_first: Callable
    delta_add_two: Callable
    finish_one: Callable
    finish_two: Callable


@lru_cache(maxsize=None)
def _kernels() -> Kernels:
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

    # own + gamma * delta, delta = w_1 (x_1 - own) + w_2 (x_2 - own) + ...: torch adds the terms into zeros,
    # which differs from starting at the first term only for a term of -0.0, that is x = -0.0 and own = +0.0,
    # where own + gamma * delta is +0.0 either way.

    @jit
    def toward_one(out, own, x, w, gamma):
        for i in range(out.shape[0]):
            out[i] = own[i] + gamma * (w * (x[i] - own[i]))

    @jit
    def delta_first(delta, own, x, w):
        for i in range(delta.shape[0]):
            delta[i] = w * (x[i] - own[i])

    @jit
    def delta_add_two(delta, own, x, w, y, v):
        for i in range(delta.shape[0]):
            delta[i] = (delta[i] + w * (x[i] - own[i])) + v * (y[i] - own[i])

    @jit
    def finish_one(out, own, delta, x, w, gamma):
        for i in range(out.shape[0]):
            out[i] = own[i] + gamma * (delta[i] + w * (x[i] - own[i]))

    @jit
    def finish_two(out, own, delta, x, w, y, v, gamma):
        for i in range(out.shape[0]):
            out[i] = own[i] + gamma * ((delta[i] + w * (x[i] - own[i])) + v * (y[i] - own[i]))

    return Kernels(first, add_two, add_one, toward_one, delta_first, delta_add_two, finish_one, finish_two)


def _compiled(tensor: torch.Tensor, shape: torch.Size) -> bool:
    """What the loops can read: float32 on the host, contiguous, of the own vector's 1-D shape (bounds are not
    checked inside them, so a shorter vector would be read past its end)."""
    return (tensor.dtype == torch.float32 and tensor.device.type == "cpu" and tensor.is_contiguous()
            and tensor.shape == shape and not tensor.requires_grad)


def _host_arrays(own: torch.Tensor, vectors: Sequence[torch.Tensor]) -> tuple[np.ndarray, list[np.ndarray]] | None:
    """`own` and `vectors` as the numpy arrays the loops read, or None where the loops do not apply (no vector, not
    float32 on the host, not contiguous, not 1-D, shapes that differ)."""
    shape = own.shape
    if not vectors or len(shape) != 1 or not all(_compiled(x, shape) for x in (own, *vectors)):
        return None
    return own.numpy(), [x.numpy() for x in vectors]


def weighted_sum(own: torch.Tensor, own_weight: float, vectors: Sequence[torch.Tensor],
                 weights: Sequence[float]) -> torch.Tensor | None:
    """`own * own_weight + vectors[0] * weights[0] + ...`, summed left to right, as a new vector; None where the
    compiled loops do not apply (_host_arrays)."""
    host = _host_arrays(own, vectors)
    if host is None:
        return None
    own_array, arrays = host
    kernels = _kernels()
    scalars = [np.float32(w) for w in weights]  # torch rounds a Python scalar to the tensor's float32 too
    total = torch.empty_like(own)
    out = total.numpy()
    kernels.first(out, own_array, np.float32(own_weight), arrays[0], scalars[0])
    k = 1
    while k + 1 < len(arrays):
        kernels.add_two(out, arrays[k], scalars[k], arrays[k + 1], scalars[k + 1])
        k += 2
    if k < len(arrays):
        kernels.add_one(out, arrays[k], scalars[k])
    return total


def step_toward(own: torch.Tensor, vectors: Sequence[torch.Tensor], weights: Sequence[float],
                gamma: float) -> torch.Tensor | None:
    """`own + gamma * (w_1 (x_1 - own) + w_2 (x_2 - own) + ...)`, each difference, product and sum rounded as
    torch's `delta += w * (x - own)` rounds it, in one to three passes where torch makes three per neighbour and
    three more; None where the loops do not apply (_host_arrays)."""
    host = _host_arrays(own, vectors)
    if host is None:
        return None
    own_array, arrays = host
    kernels = _kernels()
    scalars, gamma32 = [np.float32(w) for w in weights], np.float32(gamma)
    total = torch.empty_like(own)
    out = total.numpy()
    if len(arrays) == 1:
        kernels.toward_one(out, own_array, arrays[0], scalars[0], gamma32)
        return total
    delta = np.empty_like(own_array)
    kernels.delta_first(delta, own_array, arrays[0], scalars[0])
    k = 1
    while len(arrays) - k > 2:
        kernels.delta_add_two(delta, own_array, arrays[k], scalars[k], arrays[k + 1], scalars[k + 1])
        k += 2
    if len(arrays) - k == 2:
        kernels.finish_two(out, own_array, delta, arrays[k], scalars[k], arrays[k + 1], scalars[k + 1], gamma32)
    else:
        kernels.finish_one(out, own_array, delta, arrays[k], scalars[k], gamma32)
    return total


def warm() -> None:
    """Compile (or load from numba's cache) every kernel now, in this process: a forkserver's agents inherit
    them instead of each compiling in its first round."""
    vector = torch.zeros(4)
    weighted_sum(vector, 0.2, [vector] * 4, [0.2] * 4)  # four neighbours: each of the three kernels runs
    for neighbours in (1, 3, 4):  # one: toward_one; three: delta_first, finish_two; four: delta_add_two, finish_one
        step_toward(vector, [vector] * neighbours, [0.2] * neighbours, 0.5)
