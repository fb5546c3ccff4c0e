"""Wire format: a msgpack header frame, then one raw frame per tensor. No pickle, ever.

Peers are untrusted: unpickling their bytes would let any of them run code in this process,
so tensors travel as raw buffers described by (name, dtype, shape) in the header, and every
declared size is checked against the frame it describes before anything is allocated.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Mapping, Sequence

import msgpack
import numpy as np
import torch

from p2pfl.constants import (MAX_HEADER_BYTES, MAX_TENSOR_NDIM, MAX_TENSORS_PER_MESSAGE, PROTOCOL_VERSION,
                             WIRE_DTYPES)
from p2pfl.errors import WireError

Buffer = bytes | memoryview
ITEMSIZE = {name: np.dtype(name).itemsize for name in WIRE_DTYPES}  # np.dtype(name) per message cost microseconds


@dataclass(frozen=True)
class TensorSpec:
    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * ITEMSIZE[self.dtype]


@dataclass
class Envelope:
    run_id: str
    sender: int
    round: int
    tag: str
    tensors: dict[str, torch.Tensor]
    nbytes: int = 0
    # A mate's hand-over (transport.ProcessLinks) carries the names of its non-finite tensors, found once by
    # the sender for every mate it goes to; None: not looked at yet (every message off a socket).
    non_finite: list[str] | None = None
    # A frozen hand-over (the sender's own tensors, not a copy): each tensor's version counter when it was sent,
    # which any in-place write moves on; the receiver checks it, so a broken promise fails loudly.
    versions: dict[str, int] | None = None

    def for_mate(self) -> "Envelope":
        """A copy of this envelope and of its dict, sharing the tensors: what each mate of a hand-over gets.
        (dataclasses.replace does the same at several times the cost, every message.)"""
        return Envelope(self.run_id, self.sender, self.round, self.tag, dict(self.tensors), self.nbytes,
                        self.non_finite, self.versions)


def dtype_name(tensor: torch.Tensor) -> str:
    return str(tensor.dtype).removeprefix("torch.")


def spec_of(tensors: Mapping[str, torch.Tensor]) -> dict[str, TensorSpec]:
    return {name: TensorSpec(dtype_name(t), tuple(t.shape)) for name, t in tensors.items()}


def _wire_dtype(name: str, tensor: torch.Tensor) -> str:
    dtype = dtype_name(tensor)  # torch's names of the wire dtypes are numpy's
    if dtype not in WIRE_DTYPES:
        raise ValueError(f"tensor {name!r} has dtype {dtype}, not one of {WIRE_DTYPES}")
    return dtype


def _header_bytes(run_id: str, sender: int, round_: int, tag: str, entries: list) -> bytes:
    return msgpack.packb({"v": PROTOCOL_VERSION, "run": run_id, "from": sender, "round": round_, "tag": tag,
                          "t": entries}, use_bin_type=True)


def encode(run_id: str, sender: int, round_: int, tag: str, tensors: Mapping[str, torch.Tensor]) -> list[Buffer]:
    """[header, frame_0, ...]; frames are views of the tensors' memory (zero copy)."""
    arrays, entries = [], []
    for name, tensor in tensors.items():
        dtype = _wire_dtype(name, tensor)
        array = tensor.detach().cpu().contiguous().numpy()
        entries.append([name, dtype, list(array.shape)])
        arrays.append(array)
    return [_header_bytes(run_id, sender, round_, tag, entries),
            *(memoryview(a.reshape(-1)).cast("B") for a in arrays)]


def frame_sizes(run_id: str, sender: int, round_: int, tag: str, tensors: Mapping[str, torch.Tensor]) -> list[int]:
    """The lengths `encode` would give its frames, without making them: what a hand-over to a mate counts as
    sent, so byte counts do not depend on packing, while the mate gets tensors and no frame is built."""
    entries = [[name, _wire_dtype(name, tensor), list(tensor.shape)] for name, tensor in tensors.items()]
    return [len(_header_bytes(run_id, sender, round_, tag, entries)),
            *(tensor.numel() * tensor.element_size() for tensor in tensors.values())]


def _header(raw: Buffer) -> dict:
    if len(raw) > MAX_HEADER_BYTES:
        raise WireError("malformed header", "header too large")
    try:
        header = msgpack.unpackb(raw, raw=False, strict_map_key=True, max_str_len=4096, max_bin_len=0,
                                 max_array_len=MAX_TENSORS_PER_MESSAGE + MAX_TENSOR_NDIM, max_map_len=16,
                                 max_ext_len=0)
    except Exception as exc:  # msgpack raises several types on garbage
        raise WireError("malformed header", f"header is not msgpack: {type(exc).__name__}") from None
    if not isinstance(header, dict):
        raise WireError("malformed header", "header is not a map")
    for key, kind in (("v", int), ("run", str), ("from", int), ("round", int), ("tag", str), ("t", list)):
        if not isinstance(header.get(key), kind) or isinstance(header.get(key), bool):
            raise WireError("malformed header", f"header field {key!r} missing or not {kind.__name__}")
    if header["v"] != PROTOCOL_VERSION:
        raise WireError("protocol version", f"{header['v']} != {PROTOCOL_VERSION}")
    return header


def _specs(entries: list) -> list[tuple[str, TensorSpec]]:
    if len(entries) > MAX_TENSORS_PER_MESSAGE:
        raise WireError("malformed tensors", "too many tensors")
    specs = []
    for entry in entries:
        if not (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[0], str)
                and isinstance(entry[1], str) and isinstance(entry[2], list)):
            raise WireError("malformed tensors", "malformed tensor entry")
        name, dtype, shape = entry
        if dtype not in WIRE_DTYPES:
            raise WireError("malformed tensors", f"dtype {dtype!r} not allowed")
        if len(shape) > MAX_TENSOR_NDIM or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                                   for d in shape):
            raise WireError("malformed tensors", "malformed shape")
        specs.append((name, TensorSpec(dtype, tuple(shape))))
    if len({name for name, _ in specs}) != len(specs):
        raise WireError("malformed tensors", "duplicate tensor names")
    return specs


def capacity(spec: TensorSpec) -> int:
    """Bytes the shape would describe with its empty dims counted as 1: an empty tensor of shape
    [0, 2**63] holds nothing but still cannot be built, so it is capped like a full one."""
    return math.prod(d or 1 for d in spec.shape) * ITEMSIZE[spec.dtype]


def _take_the_read_only_warning() -> None:
    """torch warns, once per process, that a tensor over a read-only buffer is read-only; received tensors are
    inputs, so that warning is taken here, at import. Guarding every frame with warnings.catch_warnings cost
    5 us each, and that context manager is not thread-safe, which packed agents are."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        torch.frombuffer(memoryview(bytes(4)), dtype=torch.float32)


_take_the_read_only_warning()


def view_tensor(frame: Buffer, spec: TensorSpec) -> torch.Tensor:
    """A tensor over the frame's memory, no copy; it keeps the frame alive. Treat it as read-only."""
    dtype = getattr(torch, spec.dtype)
    if spec.nbytes == 0:
        return torch.empty(spec.shape, dtype=dtype)
    return torch.frombuffer(frame, dtype=dtype).reshape(spec.shape)


def decode(frames: Sequence[Buffer], run_id: str, max_bytes: int) -> Envelope:
    """Validate and rebuild one message; raises WireError (and allocates nothing big) when it is bad.

    The cap holds for the whole message: the frames actually received, summed, and every shape the
    header declares (empty dims counted as 1), before any tensor is built."""
    if not frames:
        raise WireError("malformed header", "empty message")
    received = sum(len(f) for f in frames)
    if received > max_bytes + MAX_HEADER_BYTES:
        raise WireError("too large", f"message of {received} bytes, cap is {max_bytes}")
    header = _header(frames[0])
    if header["run"] != run_id:
        raise WireError("wrong run id")
    specs = _specs(header["t"])
    if len(frames) - 1 != len(specs):
        raise WireError("frame count", f"{len(frames) - 1} frames for {len(specs)} tensors")
    declared = sum(capacity(spec) for _, spec in specs)  # Python ints: a huge claimed shape cannot overflow
    if declared > max_bytes:
        raise WireError("too large", f"message declares {declared} bytes, cap is {max_bytes}")
    tensors = {}
    for (name, spec), frame in zip(specs, frames[1:]):
        if len(frame) != spec.nbytes:
            raise WireError("frame size", f"tensor {name!r}: frame has {len(frame)} bytes, header says {spec.nbytes}")
        try:
            tensors[name] = view_tensor(frame, spec)
        except (TypeError, ValueError, RuntimeError, OverflowError) as exc:  # whatever torch refuses is malformed
            raise WireError("malformed tensors", f"tensor {name!r}: {type(exc).__name__}") from None
    return Envelope(header["run"], header["from"], header["round"], header["tag"], tensors, received)


def all_finite(tensor: torch.Tensor) -> bool:
    """No NaN and no infinity in a floating-point tensor. Its sum is finite only if every element is (a NaN
    or an infinity stays in a sum), and takes 4 us where torch.isfinite(t).all() takes 130 (a 62k-float
    LeNet-5 vector on this CPU; an agent runs three such checks per round on a ring, each received vector
    and its own parameters); only a sum that overflowed needs the element-wise check."""
    return math.isfinite(float(tensor.sum())) or bool(torch.isfinite(tensor).all())


def non_finite(envelope: Envelope) -> list[str]:
    """Names of the floating-point tensors holding a NaN or an infinity."""
    return [name for name, t in envelope.tensors.items() if t.is_floating_point() and not all_finite(t)]


def check_spec(envelope: Envelope, expected: Mapping[str, TensorSpec]) -> None:
    """Names, dtypes and shapes must be exactly what this round expects."""
    tensors = envelope.tensors
    if tensors.keys() == expected.keys():  # tensor by tensor, no TensorSpec made (a frozen dataclass costs µs)
        for name, tensor in tensors.items():
            spec = expected[name]
            if tuple(tensor.shape) != spec.shape or dtype_name(tensor) != spec.dtype:
                break
        else:
            return
    got = {name: TensorSpec(dtype_name(t), tuple(t.shape)) for name, t in tensors.items()}
    if got != dict(expected):
        raise WireError("unexpected tensors",
                        f"tensors {sorted(got)} do not match the expected {sorted(expected)} (names/dtypes/shapes)")
