"""The Unix socket channel between agent processes of one host: order, names, refusals, what falls back to ZeroMQ."""

import os
import shutil
import socket
import tempfile
import threading
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pfl import host_channel, shared_slots
from p2pfl.errors import WireError
from p2pfl.host_channel import (CHANNEL_MAX_BYTES, ChannelInbox, ChannelSender, inbox_path, pack_prefix,
                                sender_path, unpack)
from p2pfl.shared_slots import MIN_BYTES
from p2pfl.wire import encode
from tests.test_shared_slots import exchange_pair, run_rounds


@pytest.fixture
def folder(monkeypatch):
    """A short private folder (a socket's path has at most 107 bytes; pytest's tmp_path can be longer)."""
    path = Path(tempfile.mkdtemp(prefix="p2pfl-test-"))
    monkeypatch.setattr(host_channel, "RETRY_SECONDS", 0.0)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def opened(folder):
    """Channel ends, sockets: whatever a test opens through it is closed afterwards, whatever fails."""
    ends = []

    def open_(end):
        ends.append(end)
        return end

    yield open_
    for end in ends:
        end.close()


def received(inbox: ChannelInbox, want: int) -> list:
    """`want` messages, accepting connections as they come (a non-blocking socket: poll until they are there)."""
    got = []
    for _ in range(1000):
        inbox.accept()
        for fd in list(inbox.links):
            while len(got) < want and (item := inbox.receive(fd)) is not None:
                got.append(item)
        if len(got) == want:
            return got
        threading.Event().wait(0.002)
    raise AssertionError(f"only {len(got)} of {want} messages")


def test_messages_arrive_whole_in_order_and_named_by_their_sender(folder):
    inbox = ChannelInbox(folder, 1, senders=[0, 2])
    sender = ChannelSender(folder, 0, 1)
    messages = [[b"", b"descriptor", b"header %d" % i] if i % 2 else [b"header %d" % i, bytes(range(i))]
                for i in range(10)]
    try:
        assert all(sender.send(frames) for frames in messages)
        got = received(inbox, 10)
    finally:
        sender.close()
        inbox.close()
    assert got == [(b"0", frames) for frames in messages]
    assert sender.sent == 10
    assert not os.listdir(folder)  # both ends removed their socket files


def test_with_nobody_listening_the_sender_says_no_and_connects_once_someone_does(folder, opened):
    sender = opened(ChannelSender(folder, 0, 1))
    assert not sender.send([b"header"])  # the caller sends it over ZeroMQ instead
    inbox = opened(ChannelInbox(folder, 1, senders=[0]))
    assert sender.send([b"header"])
    assert received(inbox, 1) == [(b"0", [b"header"])]


def test_a_message_too_large_for_the_channel_is_refused_and_the_link_stays_up(folder, opened):
    inbox = opened(ChannelInbox(folder, 1, senders=[0]))
    sender = opened(ChannelSender(folder, 0, 1))
    assert not sender.send([b"header", bytes(CHANNEL_MAX_BYTES)])
    assert sender.send([b"header", bytes(1000)])
    assert received(inbox, 1) == [(b"0", [b"header", bytes(1000)])]


def test_a_receiver_that_ends_is_replaced_and_its_successor_gets_the_later_messages(folder, opened):
    inbox = opened(ChannelInbox(folder, 1, senders=[0]))
    sender = opened(ChannelSender(folder, 0, 1))
    assert sender.send([b"first"])
    assert received(inbox, 1) == [(b"0", [b"first"])]
    inbox.close()
    assert not sender.send([b"lost with the receiver"])  # gone: over ZeroMQ, which queues it for a successor
    successor = opened(ChannelInbox(folder, 1, senders=[0]))
    assert sender.send([b"second"])
    assert received(successor, 1) == [(b"0", [b"second"])]


def test_a_connection_under_another_name_is_refused(folder, opened):
    inbox = opened(ChannelInbox(folder, 1, senders=[0]))
    intruders = []
    for name in (None, str(folder / "7-1.tx"), str(folder / "0-2.tx")):  # unnamed, not a neighbour, not for us
        intruder = opened(socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET))
        if name:
            intruder.bind(name)
        intruder.connect(str(inbox_path(folder, 1)))
        intruder.send(pack_prefix([b"forged"]) + b"forged")
        intruders.append(intruder)
    assert inbox.accept() == [] and not inbox.links
    for intruder in intruders:
        with pytest.raises(OSError):  # the receiver closed it: a send fails long before its queue could fill
            for _ in range(100):
                intruder.send(pack_prefix([b"x"]) + b"x")


def test_message_and_frame_lengths_must_add_up():
    assert unpack(pack_prefix([b"ab", b"", b"c"]) + b"abc") == [b"ab", b"", b"c"]
    for bad in (b"", b"\x01", pack_prefix([b"ab"]) + b"a", pack_prefix([b"ab"]) + b"abc", b"\x00\x00",
                b"\xff\xff" + bytes(8)):
        with pytest.raises(WireError):
            unpack(bad)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_any_bytes_either_unpack_into_frames_that_add_up_or_raise_a_wire_error(message):
    try:
        frames = unpack(message)
    except WireError as exc:
        assert exc.reason == "shared memory"
        return
    assert len(message) == 2 + 4 * len(frames) + sum(len(frame) for frame in frames)


@pytest.fixture
def shm_root(folder, monkeypatch):
    monkeypatch.setattr(shared_slots, "SHM_ROOT", folder)
    return folder


@pytest.mark.parametrize("size", [5, MIN_BYTES])  # whole in the channel; the tensors in a slot, the rest in the channel
def test_neighbours_on_one_host_send_every_message_through_the_channel(shm_root, size):
    a, b, _ = exchange_pair(shm_root)
    try:
        got_a, got_b = run_rounds(a, b, 8, lambda agent, r: {"x": torch.full((size,), float(10 * agent + r))})
    finally:
        a.close()
        b.close()
    assert [t[0].item() for t in got_a] == [10.0 + r for r in range(8)]
    assert [t[0].item() for t in got_b] == [float(r) for r in range(8)]
    assert a._channels[1].sent == b._channels[0].sent == 8  # every one through the channel, none over ZeroMQ
    assert a.stats.bytes_sent == b.stats.bytes_received and not a.stats.dropped and not b.stats.dropped


def test_while_the_channel_cannot_take_a_message_it_goes_over_zeromq(shm_root):
    a, b, _ = exchange_pair(shm_root)
    try:
        a._channels[1]._disconnect()  # as if b had stopped listening: a's messages must still arrive
        a._channels[1].target = str(shm_root / "nobody.rx")
        got_a, got_b = run_rounds(a, b, 4, lambda agent, r: {"x": torch.full((MIN_BYTES,), float(10 * agent + r))})
    finally:
        a.close()
        b.close()
    assert [t[0].item() for t in got_b] == [float(r) for r in range(4)]
    assert a._channels[1].sent == 0 and b._channels[0].sent == 4


def test_a_malformed_channel_message_from_a_neighbour_is_dropped_and_the_next_one_taken(shm_root):
    a, b, _ = exchange_pair(shm_root)
    forger = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        forger.bind(str(sender_path(shm_root / f"p2pfl-{os.geteuid()}-run", 1, 0)))  # b's name, as b's process could
        forger.connect(str(inbox_path(shm_root / f"p2pfl-{os.geteuid()}-run", 0)))
        forger.send(b"\x03\x00garbage")
        header_only = encode("run", 1, 0, "params", {"x": torch.ones(3)})
        forger.send(pack_prefix(header_only) + b"".join(bytes(f) for f in header_only))
        got = a.exchange(0, "params", {1: {"x": torch.zeros(3)}}, timeout=5.0)
    finally:
        forger.close()
        a.close()
        b.close()
    assert a.stats.dropped["shared memory"] == 1
    assert torch.equal(got[1]["x"], torch.ones(3))
