"""Shared-memory slots between agent processes of one host: what they carry, when they refuse, forged input."""

import os
import threading

import msgpack
import pytest
import torch
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pfl import shared_slots
from p2pfl.errors import WireError
from p2pfl.shared_slots import (MIN_BYTES, RECLAIM_AFTER, SLOTS, SlotReader, SlotWriter, shared_folder,
                                slot_path)
from p2pfl.transport import ZmqExchange
from p2pfl.wire import encode
from tests.conftest import free_ports


@pytest.fixture
def shm_root(tmp_path, monkeypatch):
    """Slot files under the test's own folder, not /dev/shm: nothing is left behind whatever fails."""
    monkeypatch.setattr(shared_slots, "SHM_ROOT", tmp_path)
    return tmp_path


@pytest.fixture
def link(shm_root):
    folder = shared_folder("run")
    writer = SlotWriter(slot_path(folder, 0, 1))
    reader = SlotReader(slot_path(folder, 0, 1), max_bytes=2**26)
    yield writer, reader
    writer.close()
    reader.close()


def frames_of(*tensors: torch.Tensor) -> list[memoryview]:
    return [memoryview(t.numpy()).cast("B") for t in tensors]


def big(value: float, n: int = MIN_BYTES // 4) -> torch.Tensor:
    return torch.full((n,), float(value))


def test_frames_arrive_as_written_and_a_descriptor_reads_only_once(link):
    writer, reader = link
    sent = [torch.randn(MIN_BYTES // 4), torch.arange(10, dtype=torch.float32)]
    descriptor = writer.put(frames_of(*sent))
    got = reader.take(descriptor)
    assert [bytes(frame) for frame in got] == [bytes(frame) for frame in frames_of(*sent)]
    with pytest.raises(WireError, match="not filled"):
        reader.take(descriptor)


def test_small_payloads_stay_on_the_socket(link):
    writer, _ = link
    assert writer.put(frames_of(torch.ones(10))) is None


def test_a_receiver_behind_sends_the_rest_over_the_socket_until_it_reads(link):
    writer, reader = link
    descriptors = [writer.put(frames_of(big(i))) for i in range(SLOTS)]
    assert all(descriptors)
    assert writer.put(frames_of(big(9.0))) is None  # every slot waits to be read
    assert torch.frombuffer(reader.take(descriptors[0])[0], dtype=torch.float32)[0] == 0
    again = writer.put(frames_of(big(5.0)))
    assert torch.frombuffer(reader.take(again)[0], dtype=torch.float32)[0] == 5
    for descriptor in descriptors[1:]:  # the others were not touched meanwhile
        value = torch.frombuffer(reader.take(descriptor)[0], dtype=torch.float32)[0]
        assert value == descriptors.index(descriptor)


def test_a_receiver_that_keeps_pace_is_sent_through_the_same_slots_over_and_over(link):
    """The first free slot, not the next in turn: a link's writes stay in the memory the caches already hold."""
    writer, reader = link

    def slot(descriptor: bytes) -> int:
        return shared_slots.DESCRIPTOR.unpack_from(descriptor)[1]

    used = set()
    for i in range(3 * SLOTS):  # each message read before the next is sent
        descriptor = writer.put(frames_of(big(i)))
        used.add(slot(descriptor))
        assert torch.frombuffer(reader.take(descriptor)[0], dtype=torch.float32)[0] == i
    assert used == {0}
    waiting, used = writer.put(frames_of(big(0.0))), set()
    for i in range(1, 3 * SLOTS):  # a receiver one message behind: two slots in turn
        descriptor = writer.put(frames_of(big(i)))
        used.add(slot(descriptor))
        assert torch.frombuffer(reader.take(waiting)[0], dtype=torch.float32)[0] == i - 1
        waiting = descriptor
    assert used == {0, 1}


def test_a_slot_never_read_is_taken_back_and_its_late_reader_drops_it(link):
    writer, reader = link
    reader.take(writer.put(frames_of(big(0.0))))  # a receiver that reads this file, then falls behind
    descriptors = [writer.put(frames_of(big(i))) for i in range(SLOTS)]
    for _ in range(RECLAIM_AFTER - SLOTS + 1):  # the first slot was filled RECLAIM_AFTER sends ago after these
        assert writer.put(frames_of(big(1.0))) is None
    taken_back = writer.put(frames_of(big(7.0)))
    assert taken_back is not None
    with pytest.raises(WireError, match="not filled"):
        reader.take(descriptors[0])
    assert torch.frombuffer(reader.take(taken_back)[0], dtype=torch.float32)[0] == 7


def test_a_larger_payload_gets_a_new_file_the_reader_follows(link):
    writer, reader = link
    first = writer.put(frames_of(big(1.0)))
    reader.take(first)
    larger = writer.put(frames_of(big(2.0, n=MIN_BYTES)))
    got = reader.take(larger)[0]
    assert len(got) == 4 * MIN_BYTES and torch.frombuffer(got, dtype=torch.float32).eq(2).all()


def test_no_new_file_while_a_slot_waits_to_be_read(link):
    writer, reader = link
    waiting = writer.put(frames_of(big(1.0)))
    assert writer.put(frames_of(big(2.0, n=MIN_BYTES))) is None
    assert torch.frombuffer(reader.take(waiting)[0], dtype=torch.float32)[0] == 1


def test_a_cancelled_message_frees_its_slot(link):
    writer, reader = link
    descriptors = [writer.put(frames_of(big(i))) for i in range(SLOTS)]
    writer.cancel(descriptors[2])
    with pytest.raises(WireError):
        reader.take(descriptors[2])
    assert writer.put(frames_of(big(3.0))) is not None


def test_closing_the_writer_removes_its_file(shm_root):
    folder = shared_folder("run")
    writer = SlotWriter(slot_path(folder, 0, 1))
    writer.put(frames_of(big(1.0)))
    assert slot_path(folder, 0, 1).exists()
    writer.close()
    assert list(folder.iterdir()) == []
    shared_slots.remove_folder("run")
    assert not folder.exists()


def test_a_folder_others_can_enter_is_not_used(shm_root):
    folder = shm_root / f"p2pfl-{os.geteuid()}-run"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    assert shared_folder("run") is None


def test_a_reader_refuses_a_file_others_can_read(link):
    writer, reader = link
    descriptor = writer.put(frames_of(big(1.0)))
    reader.path.chmod(0o644)
    with pytest.raises(WireError, match="this user's alone"):
        reader.take(descriptor)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120))
def test_forged_descriptors_only_ever_raise_wire_errors(tmp_path_factory, forged):
    folder = tmp_path_factory.mktemp("shm")
    writer = SlotWriter(folder / "0-1")
    reader = SlotReader(folder / "0-1", max_bytes=2**20)
    try:
        real = writer.put(frames_of(big(1.0)))
        mixed = forged[:len(real)] + real[len(forged):]  # a forgery that keeps part of a real descriptor
        for descriptor in (forged, mixed):
            try:
                frames = reader.take(descriptor)
            except WireError:
                continue
            assert sum(len(frame) for frame in frames) <= 2**20
    finally:
        writer.close()
        reader.close()


def exchange_pair(shm_root, shared_memory=True):
    ports = free_ports(2)
    addr = {i: f"tcp://127.0.0.1:{p}" for i, p in enumerate(ports)}
    a = ZmqExchange(0, addr[0], {1: addr[1]}, "run", round_timeout=5.0, shared_memory=shared_memory)
    b = ZmqExchange(1, addr[1], {0: addr[0]}, "run", round_timeout=5.0, shared_memory=shared_memory)
    return a, b, addr


def run_rounds(a, b, rounds, make):
    got_b = []
    thread = threading.Thread(target=lambda: got_b.extend(b.exchange(r, "params", {0: make(1, r)})[0]["x"].clone()
                                                          for r in range(rounds)))
    thread.start()
    got_a = [a.exchange(r, "params", {1: make(0, r)})[1]["x"].clone() for r in range(rounds)]
    thread.join(20)
    return got_a, got_b


def test_neighbours_on_one_host_pass_large_tensors_through_slots_and_get_the_same(shm_root):
    def make(agent, round_):
        return {"x": torch.full((MIN_BYTES,), float(100 * agent + round_))}

    a, b, _ = exchange_pair(shm_root)
    try:
        assert set(a._slot_writers) == {1} and set(b._slot_writers) == {0}
        got_a, got_b = run_rounds(a, b, 12, make)
        assert (shm_root / f"p2pfl-{os.geteuid()}-run" / "0-1").exists()  # the frames went through the slots
    finally:
        a.close()
        b.close()
    assert [t[0].item() for t in got_a] == [100.0 + r for r in range(12)]
    assert [t[0].item() for t in got_b] == [float(r) for r in range(12)]
    assert all(t.eq(t[0]).all() for t in got_a + got_b)
    assert a.stats.bytes_sent == b.stats.bytes_received and not a.stats.dropped and not b.stats.dropped
    assert not (shm_root / f"p2pfl-{os.geteuid()}-run").exists()  # each removed its files, the last the folder

    plain_a, plain_b, _ = exchange_pair(shm_root, shared_memory=False)
    try:
        assert not plain_a._slot_writers
        run_rounds(plain_a, plain_b, 2, make)
    finally:
        plain_a.close()
        plain_b.close()
    assert plain_a.stats.bytes_sent == a.stats.bytes_sent * 2 // 12  # the same bytes counted either way


def test_a_slot_message_from_a_peer_not_on_this_host_or_forged_is_dropped(shm_root):
    port = free_ports(1)[0]
    address = f"tcp://127.0.0.1:{port}"
    # Neighbour 1 is local (a reader for it), neighbour 2 only reachable over a LAN address (no reader).
    a = ZmqExchange(0, address, {1: f"tcp://127.0.0.1:{free_ports(1)[0]}", 2: "tcp://192.0.2.7:9"}, "run",
                    round_timeout=5.0, shared_memory=True)
    header = encode("run", 2, 0, "params", {"x": torch.ones(3)})[0]
    intruders = []
    try:
        for identity in (b"2", b"1"):
            intruder = zmq.Context.instance().socket(zmq.DEALER)
            intruder.setsockopt(zmq.IDENTITY, identity)
            intruder.setsockopt(zmq.LINGER, 0)
            intruder.connect(address)
            intruders.append(intruder)
        intruders[0].send_multipart([b"", b"\x00" * 40, header])
        intruders[1].send_multipart([b"", b"\x01" * 40, msgpack.packb({"v": 1})])
        intruders[1].send_multipart([b"", b"only two frames"])
        a.exchange(0, "params", {1: {"x": torch.zeros(3)}}, timeout=1.5)
    finally:
        for intruder in intruders:
            intruder.close()
        a.close()
    assert a.stats.dropped["shared memory"] == 3


def test_a_receiver_that_never_reads_a_slot_gets_everything_over_the_socket_after_the_first_few(link):
    """Agents of one host whose /dev/shm differ (containers sharing only the network): the slot files are
    never read, so the sender stops using them instead of reclaiming and losing one message in every 64."""
    writer, _ = link
    sent = [writer.put(frames_of(big(i))) for i in range(RECLAIM_AFTER + 40)]
    assert all(sent[:SLOTS]) and not any(sent[SLOTS:]) and writer.disabled


def test_a_receiver_that_read_once_keeps_its_slots_after_falling_behind(link):
    writer, reader = link
    reader.take(writer.put(frames_of(big(1.0))))
    sent = [writer.put(frames_of(big(i))) for i in range(RECLAIM_AFTER + 40)]
    assert sum(d is not None for d in sent) > SLOTS and not writer.disabled  # taken back, not given up


def test_a_slot_the_sender_cancelled_is_no_sign_that_the_receiver_reads(link):
    writer, _ = link
    writer.cancel(writer.put(frames_of(big(0.0))))  # the socket refused it: freed by the sender itself
    for i in range(RECLAIM_AFTER + 40):
        writer.put(frames_of(big(i)))
    assert writer.disabled
