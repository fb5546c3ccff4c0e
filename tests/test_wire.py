import math
import msgpack
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pfl.constants import PROTOCOL_VERSION
from p2pfl.errors import WireError
from p2pfl.wire import TensorSpec, all_finite, check_spec, decode, encode, frame_sizes

RUN = "run-a"
CAP = 1 << 20


def header(**changes):
    body = {"v": PROTOCOL_VERSION, "run": RUN, "from": 1, "round": 0, "tag": "params", "t": [["w", "float32", [2]]]}
    body.update(changes)
    return msgpack.packb(body)


def test_roundtrip_keeps_names_dtypes_shapes_and_values():
    tensors = {"params": torch.randn(5, 3), "counts": torch.arange(4, dtype=torch.int64)}
    frames = encode(RUN, 7, 3, "features", tensors)
    assert len(frames) == 3  # one header, one raw frame per tensor
    env = decode([bytes(f) for f in frames], RUN, CAP)
    assert (env.sender, env.round, env.tag) == (7, 3, "features")
    assert torch.equal(env.tensors["params"], tensors["params"])
    assert env.tensors["counts"].dtype == torch.int64 and torch.equal(env.tensors["counts"], tensors["counts"])
    assert env.nbytes == sum(len(f) for f in frames)


def test_frames_are_views_not_pickles():
    t = torch.arange(6, dtype=torch.float32)
    frames = encode(RUN, 0, 0, "x", {"t": t})
    assert bytes(frames[1]) == t.numpy().tobytes()
    assert b"torch" not in bytes(frames[0])  # the header carries names and dtypes only


def test_decoded_tensor_keeps_its_frame_alive():
    import gc

    frames = [header(), np.ones(2, np.float32).tobytes()]
    env = decode(frames, RUN, CAP)
    del frames
    gc.collect()
    assert env.tensors["w"].tolist() == [1.0, 1.0]


def test_empty_tensors_roundtrip():
    env = decode([bytes(f) for f in encode(RUN, 0, 0, "x", {"e": torch.zeros(0, 3)})], RUN, CAP)
    assert env.tensors["e"].shape == (0, 3)


@pytest.mark.parametrize("frames, reason", [
    ([], "empty"),
    ([b"\xc1garbage"], "msgpack"),
    ([msgpack.packb([1, 2, 3])], "not a map"),
    ([header(v=99), bytes(8)], "version"),
    ([header(run="other"), bytes(8)], "run id"),
    ([header(round="0"), bytes(8)], "round"),
    ([header(**{"from": True}), bytes(8)], "from"),
    ([header(), bytes(7)], "frame has 7 bytes"),
    ([header(), bytes(8), bytes(8)], "frames for"),
    ([header(t=[["w", "object", [2]]]), bytes(8)], "dtype"),
    ([header(t=[["w", "float32", [-1]]]), bytes(8)], "shape"),
    ([header(t=[["w", "float32", [2**40, 2**40]]]), bytes(8)], "declares"),
    ([header(t=[["w", "float32", [0, 2**63]]]), b""], "declares"),  # empty, yet torch cannot build it
    ([header(t=[["w", "float32", [2]]]), bytes(CAP + 2**17)], "message of"),  # the frames, summed
    ([header(t=[["w", "float32", [2]], ["w", "float32", [2]]]), bytes(8), bytes(8)], "duplicate"),
    ([header(t=[["w", "float32"]]), bytes(8)], "malformed"),
    ([b"\x00" * 70000], "too large"),
])
def test_malformed_messages_raise_wire_error(frames, reason):
    with pytest.raises(WireError, match=reason):
        decode(frames, RUN, CAP)


def test_huge_declared_shape_is_refused_before_allocation():
    # 2^62 floats claimed: a decoder that allocated first would die; this one checks the cap first.
    with pytest.raises(WireError, match="declares"):
        decode([header(t=[["w", "float64", [2**31, 2**31]]]), b""], RUN, CAP)


def test_check_spec_rejects_other_shapes():
    env = decode([header(), bytes(8)], RUN, CAP)
    check_spec(env, {"w": TensorSpec("float32", (2,))})
    with pytest.raises(WireError):
        check_spec(env, {"w": TensorSpec("float32", (3,))})
    with pytest.raises(WireError):
        check_spec(env, {"v": TensorSpec("float32", (2,))})


@settings(max_examples=400, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=4))
def test_random_bytes_never_raise_anything_but_wire_error(frames):
    try:
        decode(frames, RUN, CAP)
    except WireError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["v", "run", "from", "round", "tag", "t", "x"]),
                       st.one_of(st.integers(-3, 3), st.text(max_size=5), st.booleans(), st.none(),
                                 st.lists(st.lists(st.one_of(st.text(max_size=8), st.integers(-2, 2**33),
                                                             st.lists(st.integers(-1, 2**31), max_size=3)),
                                                   max_size=4), max_size=3))),
       st.lists(st.binary(max_size=32), max_size=3))
def test_structured_garbage_headers_only_raise_wire_error(body, payload):
    try:
        decode([msgpack.packb(body), *payload], RUN, CAP)
    except WireError:
        pass


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_all_finite_agrees_with_the_element_wise_check(dtype):
    """The fast sum path: a NaN or an infinity anywhere is caught, opposite infinities too (their sum is NaN),
    and finite values whose sum overflows are still finite (the element-wise check decides)."""
    big = torch.finfo(dtype).max
    cases = {"zeros": torch.zeros(1000), "empty": torch.zeros(0), "nan": torch.tensor([1.0, float("nan"), 2.0]),
             "inf": torch.tensor([float("inf"), 1.0]), "-inf": torch.tensor([0.0, float("-inf")]),
             "opposite": torch.tensor([float("inf"), float("-inf")])}
    cases = {name: t.to(dtype) for name, t in cases.items()}
    cases["overflowing sum"] = torch.full((8,), big, dtype=dtype)
    assert not math.isfinite(float(cases["overflowing sum"].sum()))
    for name, tensor in cases.items():
        assert all_finite(tensor) == bool(torch.isfinite(tensor).all()), name


@settings(max_examples=60, deadline=None)
@given(shapes=st.lists(st.lists(st.integers(0, 5), max_size=3), min_size=0, max_size=4),
       dtypes=st.lists(st.sampled_from(["float32", "float64", "int64", "uint8"]), min_size=4, max_size=4),
       round_=st.integers(-2**40, 2**40), tag=st.text(max_size=30))
def test_frame_sizes_are_the_lengths_of_the_encoded_frames(shapes, dtypes, round_, tag):
    """A hand-over to a mate counts frame_sizes as sent; a message between processes counts its frames: the two
    must agree, or byte counts would depend on packing."""
    tensors = {f"t{i}": torch.zeros(shape, dtype=getattr(torch, dtypes[i])) for i, shape in enumerate(shapes)}
    frames = encode("run-id", 3, round_, tag, tensors)
    assert frame_sizes("run-id", 3, round_, tag, tensors) == [len(f) for f in frames]


def test_frame_sizes_agree_with_encode_at_every_size_of_round():
    """A header packs its round in 1 to 9 bytes: frame_sizes must agree with encode at each boundary, either side."""
    tensors = {"params": torch.zeros(7), "counts": torch.zeros(2, 3, dtype=torch.int64)}
    edges = [0, 127, 128, 255, 256, 2**16 - 1, 2**16, 2**32 - 1, 2**32, 2**63 - 1,
             -1, -32, -33, -128, -129, -2**15, -2**15 - 1, -2**31, -2**31 - 1, -2**63]
    for round_ in edges + edges[::-1]:
        assert frame_sizes("run", 5, round_, "params", tensors) == [len(f) for f in encode("run", 5, round_, "params",
                                                                                            tensors)], round_


def test_frame_sizes_refuses_what_encode_refuses():
    with pytest.raises(ValueError, match="dtype"):
        frame_sizes("run", 0, 0, "params", {"x": torch.zeros(2, dtype=torch.complex64)})
