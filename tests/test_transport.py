"""ZeroMQ transport on loopback: real sockets, garbage from a raw socket, clean close."""

import threading
import time

import msgpack
import pytest
import torch
import zmq

from p2pfl.errors import UserError
from p2pfl.transport import HANDED_STREAK, SEND_HWM, ProcessLinks, ZmqExchange
from p2pfl.wire import TensorSpec, encode
from tests.conftest import free_ports


@pytest.fixture
def two_agents():
    ports = free_ports(2)
    addr = {i: f"tcp://127.0.0.1:{p}" for i, p in enumerate(ports)}
    a = ZmqExchange(0, addr[0], {1: addr[1]}, "run", round_timeout=5.0)
    b = ZmqExchange(1, addr[1], {0: addr[0]}, "run", round_timeout=5.0)
    yield a, b, addr
    a.close()
    b.close()


def test_two_agents_exchange_over_loopback(two_agents):
    a, b, _ = two_agents
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("b", b.exchange(0, "params", {0: {"x": torch.ones(1000)}})))
    t.start()
    got = a.exchange(0, "params", {1: {"x": torch.zeros(1000)}})
    t.join(10)
    assert got[1]["x"].sum().item() == 1000 and out["b"][0]["x"].sum().item() == 0
    assert a.stats.bytes_received == b.stats.bytes_sent > 4000


def test_garbage_from_a_raw_socket_is_dropped_and_the_real_message_still_arrives(two_agents):
    a, b, addr = two_agents
    context = zmq.Context.instance()
    intruder = context.socket(zmq.DEALER)
    intruder.setsockopt(zmq.IDENTITY, b"9")
    intruder.setsockopt(zmq.LINGER, 0)
    intruder.connect(addr[0])
    try:
        intruder.send_multipart([b"\xff\x00garbage"])
        intruder.send_multipart([msgpack.packb({"v": 1, "run": "run", "from": 1, "round": 0, "tag": "params",
                                                "t": [["x", "float32", [10**9]]]}), b"tiny"])
        intruder.send_multipart([bytes(f) for f in encode("other-run", 1, 0, "params", {"x": torch.ones(3)})])
        intruder.send(b"")
        b._send_all(0, "params", {0: {"x": torch.full((3,), 7.0)}})
        got = a.exchange(0, "params", {1: {"x": torch.zeros(3)}}, timeout=3)
        a.exchange(1, "params", {1: {"x": torch.zeros(3)}}, timeout=1)  # drains what arrived after b's message
    finally:
        intruder.close()
    assert got[1]["x"].tolist() == [7, 7, 7]
    assert sum(a.stats.dropped.values()) == 4


def test_binding_a_taken_port_is_a_user_error():
    port = free_ports(1)[0]
    first = ZmqExchange(0, f"tcp://127.0.0.1:{port}", {}, "run", 1.0)
    try:
        with pytest.raises(UserError, match="already in use"):
            ZmqExchange(1, f"tcp://127.0.0.1:{port}", {}, "run", 1.0)
    finally:
        first.close()
    ZmqExchange(2, f"tcp://127.0.0.1:{port}", {}, "run", 1.0).close()  # released on close



# Without CURVE a routing id is only a claim: ROUTER_HANDOVER (needed so a neighbour reconnecting after
# a cut link gets its id back) lets a second connection take it over. Sender authentication is the job
# of security.mode curve: tests/test_security.py shows an authenticated neighbour cannot pose as another.


def test_mates_in_one_process_exchange_without_tcp_and_keep_their_own_copy():
    """Neighbours packed in one process skip TCP: agent 0 knows only a wrong TCP address for 1 and still hears
    it. What a mate receives is a copy: the sender changing its tensor afterwards changes nothing there."""
    ports = free_ports(2)
    links = ProcessLinks("run", mates=[0, 1])
    a = ZmqExchange(0, f"tcp://127.0.0.1:{ports[0]}", {1: "tcp://127.0.0.1:1"}, "run", 5.0, links=links)
    b = ZmqExchange(1, f"tcp://127.0.0.1:{ports[1]}", {0: "tcp://127.0.0.1:1"}, "run", 5.0, links=links)
    try:
        sent = torch.arange(100_000, dtype=torch.float32)
        out = {}
        t = threading.Thread(target=lambda: out.update(b.exchange(0, "params", {0: {"x": torch.zeros(100_000)}})))
        t.start()
        a.send(0, "params", {1: {"x": sent}})
        sent.add_(1)  # the sender moves on before the mate has read it
        got = a.collect(0, "params", [1], timeout=5)
        t.join(10)
    finally:
        a.close()
        b.close()
        links.close()
    assert got[1]["x"].sum().item() == 0
    assert out[0]["x"].tolist() == torch.arange(100_000, dtype=torch.float32).tolist()
    assert a.stats.bytes_sent == b.stats.bytes_received > 400_000 and not a.monitors and not b.monitors


@pytest.fixture
def three_mates():
    """Agents 0, 1, 2 packed in one process, 0 linked to both others; their TCP addresses are never used."""
    ports = free_ports(3)
    links = ProcessLinks("run", mates=[0, 1, 2])
    neighbours = {0: [1, 2], 1: [0], 2: [0]}
    ends = [ZmqExchange(i, f"tcp://127.0.0.1:{ports[i]}", {j: "tcp://127.0.0.1:1" for j in neighbours[i]}, "run",
                        5.0, links=links) for i in range(3)]
    yield ends
    for end in ends:
        end.close()
    links.close()


def test_a_payload_for_several_mates_is_copied_once_and_counted_as_its_bytes_on_the_wire(three_mates):
    """Mates read one shared copy of what was sent (not the sender's memory, not a copy each), and the bytes
    each message counts are those its frames would have had between processes."""
    a, b, c = three_mates
    payload = {"x": torch.arange(1000, dtype=torch.float32)}
    a.send(0, "params", {1: payload, 2: payload})
    got_b = b.collect(0, "params", [0], timeout=5)[0]["x"]
    got_c = c.collect(0, "params", [0], timeout=5)[0]["x"]
    assert got_b.tolist() == got_c.tolist() == payload["x"].tolist()
    assert got_b.data_ptr() == got_c.data_ptr() != payload["x"].data_ptr()
    wire_bytes = sum(len(frame) for frame in encode("run", 0, 0, "params", payload))
    assert a.stats.bytes_sent == 2 * wire_bytes and b.stats.bytes_received == c.stats.bytes_received == wire_bytes


def test_a_frozen_payload_is_read_by_mates_in_place_and_counts_the_same_bytes(three_mates):
    """`frozen`: the sender promises not to change what it sent, so mates read its own memory (no copy); what they
    get, and the bytes counted, are those of a copied hand-over. A frozen tensor that is not contiguous is still
    copied (a mate reads one flat block), and a NaN in a frozen payload is still refused."""
    a, b, c = three_mates
    payload = {"x": torch.arange(1000, dtype=torch.float32)}
    a.send(0, "params", {1: payload, 2: payload}, frozen=True)
    got_b = b.collect(0, "params", [0], timeout=5)[0]["x"]
    got_c = c.collect(0, "params", [0], timeout=5)[0]["x"]
    assert got_b.data_ptr() == got_c.data_ptr() == payload["x"].data_ptr()
    assert got_b.tolist() == payload["x"].tolist()
    wire_bytes = sum(len(frame) for frame in encode("run", 0, 0, "params", payload))
    assert a.stats.bytes_sent == 2 * wire_bytes and b.stats.bytes_received == wire_bytes
    assert a.stats.sent_by_tensor["x"] == 2 * 4000

    strided = torch.arange(20, dtype=torch.float32).reshape(4, 5).t()
    a.send(1, "params", {1: {"x": strided}}, frozen=True)
    got = b.collect(1, "params", [0], timeout=5)[0]["x"]
    assert got.is_contiguous() and got.data_ptr() != strided.data_ptr() and got.tolist() == strided.tolist()

    a.send(2, "params", {1: {"x": torch.tensor([1.0, float("inf")])}}, frozen=True)
    assert b.collect(2, "params", [0], timeout=0.5) == {}
    assert b.stats.dropped == {"non-finite": 1}

    with torch.inference_mode():  # no version counter to check: copied
        inferred = torch.ones(3)
    a.send(3, "params", {1: {"x": inferred}}, frozen=True)
    got = b.collect(3, "params", [0], timeout=5)[0]["x"]
    assert got.data_ptr() != inferred.data_ptr() and got.tolist() == [1.0, 1.0, 1.0]


def test_a_frozen_tensor_written_into_after_it_was_sent_fails_loudly_at_the_mate(three_mates):
    """frozen=True is a promise; an algorithm that breaks it would make its mates mix a changed vector without a
    word. Every in-place write moves the tensor's version counter, which the mate checks on receipt."""
    a, b, _ = three_mates
    sent = torch.zeros(10)
    a.send(0, "params", {1: {"x": sent}}, frozen=True)
    sent.add_(1)
    with pytest.raises(RuntimeError, match="changed its tensor 'x' of round 0 .* after sending it frozen"):
        b.collect(0, "params", [0], timeout=5)
    kept = torch.zeros(10)
    a.send(1, "params", {1: {"x": kept}}, frozen=True)
    kept = kept + 1  # a new tensor: the one sent is untouched
    assert b.collect(1, "params", [0], timeout=5)[0]["x"].tolist() == [0.0] * 10


def test_a_payload_for_a_mate_and_a_socket_peer_counts_its_wire_bytes_for_both():
    """One payload to a mate (no frames built for it) and to a peer in another process (frames on TCP): both count
    the frames' true size, and the peer across the socket decodes what was sent."""
    ports = free_ports(3)
    addr = {i: f"tcp://127.0.0.1:{p}" for i, p in enumerate(ports)}
    links = ProcessLinks("run", mates=[0, 1])
    a = ZmqExchange(0, addr[0], {1: addr[1], 2: addr[2]}, "run", 5.0, links=links)
    b = ZmqExchange(1, addr[1], {0: addr[0]}, "run", 5.0, links=links)
    far = ZmqExchange(2, addr[2], {0: addr[0]}, "run", 5.0)
    try:
        payload = {"x": torch.linspace(0, 1, 300), "n": torch.arange(7)}
        a.send(0, "params", {1: payload, 2: payload}, frozen=True)
        got_b = b.collect(0, "params", [0], timeout=5)[0]
        got_far = far.collect(0, "params", [0], timeout=5)[0]
    finally:
        for end in (a, b, far):
            end.close()
        links.close()
    frames = encode("run", 0, 0, "params", payload)
    assert a.stats.bytes_sent == 2 * sum(len(f) for f in frames)
    assert b.stats.bytes_received == far.stats.bytes_received == sum(len(f) for f in frames)
    assert a.stats.sent_by_tensor == {"x": 2 * 1200, "n": 2 * 56}
    for got in (got_b, got_far):
        assert got["x"].tolist() == payload["x"].tolist() and got["n"].tolist() == list(range(7))


def test_a_mates_non_finite_or_misshapen_tensors_are_dropped_as_off_a_socket(three_mates):
    a, b, _ = three_mates
    a.send(0, "params", {1: {"x": torch.tensor([1.0, float("nan")])}})
    assert b.collect(0, "params", [0], expect={0: {"x": TensorSpec("float32", (2,))}}, timeout=0.5) == {}
    a.send(1, "params", {1: {"x": torch.ones(3)}})
    assert b.collect(1, "params", [0], expect={0: {"x": TensorSpec("float32", (2,))}}, timeout=0.5) == {}
    a.send(2, "params", {1: {"x": torch.ones(2)}})
    assert b.collect(2, "params", [0], expect={0: {"x": TensorSpec("float32", (2,))}}, timeout=5)[0]["x"].tolist() \
        == [1.0, 1.0]
    assert b.stats.dropped == {"non-finite": 1, "unexpected tensors": 1}


def test_a_mates_message_over_the_size_cap_is_dropped_as_between_processes():
    ports = free_ports(2)
    links = ProcessLinks("run", mates=[0, 1])
    a, b = (ZmqExchange(i, f"tcp://127.0.0.1:{ports[i]}", {1 - i: "tcp://127.0.0.1:1"}, "run", 5.0, links=links,
                        max_message_bytes=4000) for i in range(2))
    try:
        a.send(0, "params", {1: {"x": torch.zeros(1001)}})  # 4,004 bytes of tensor: over the cap
        a.send(1, "params", {1: {"x": torch.zeros(1000)}})
        assert b.collect(0, "params", [0], timeout=0.5) == {}
        assert b.collect(1, "params", [0], timeout=5)[0]["x"].shape == (1000,)
    finally:
        a.close()
        b.close()
        links.close()
    assert b.stats.dropped == {"too large": 1}


def test_a_mate_that_reads_nothing_gets_at_most_a_high_water_mark_of_messages(three_mates):
    a, b, _ = three_mates
    for round_ in range(SEND_HWM + 3):
        a.send(round_, "params", {1: {"x": torch.ones(2)}})
    assert a.stats.send_failures[1] == 3
    assert len(b._handed_in[0]) == SEND_HWM


def test_a_hand_over_whose_ring_was_already_read_is_taken_without_waiting(three_mates):
    """Two hand-overs, both rings read while taking the first: the second must not wait for a ring that will
    not come (it would wait out the whole timeout and return nothing)."""
    a, b, _ = three_mates
    a.send(0, "params", {1: {"x": torch.ones(2)}})
    a.send(1, "params", {1: {"x": torch.ones(2)}})
    waits = []
    poll = b.poller.poll
    b.poller.poll = lambda timeout=None: waits.append(timeout) or poll(timeout)
    rounds = []
    for _ in range(2):
        b._handed_streak = HANDED_STREAK  # the sockets first: the first call reads both rings and takes round 0
        rounds.append(b._receive(3.0).round)
    assert rounds == [0, 1] and waits == [0, 0]


def test_a_socket_message_is_taken_within_a_streak_of_hand_overs_however_many_wait():
    """Hand-overs are taken without a system call, several in a row; a message waiting in a socket must still
    come within HANDED_STREAK of them, not after every hand-over queued (a mate far ahead queues dozens)."""
    ports = free_ports(3)
    links = ProcessLinks("run", mates=[0, 1])
    mate = ZmqExchange(0, f"tcp://127.0.0.1:{ports[0]}", {1: "tcp://127.0.0.1:1"}, "run", 5.0, links=links)
    receiver = ZmqExchange(1, f"tcp://127.0.0.1:{ports[1]}", {0: "tcp://127.0.0.1:1", 2: f"tcp://127.0.0.1:{ports[2]}"},
                           "run", 5.0, links=links)
    remote = ZmqExchange(2, f"tcp://127.0.0.1:{ports[2]}", {1: f"tcp://127.0.0.1:{ports[1]}"}, "run", 5.0)
    try:
        remote.send(0, "params", {1: {"x": torch.ones(2)}})
        assert receiver.inbox.poll(5000), "the remote's message never arrived"
        for round_ in range(3 * HANDED_STREAK):
            mate.send(round_, "params", {1: {"x": torch.ones(2)}})
        senders = []
        for _ in range(HANDED_STREAK + 1):
            item = receiver._receive(1.0)
            senders.append(item.sender if hasattr(item, "sender") else int(item[0]))
    finally:
        for end in (mate, receiver, remote):
            end.close()
        links.close()
    assert 2 in senders and senders.count(0) == HANDED_STREAK  # the socket's message within the streak's end


def test_a_link_cut_while_a_closed_agent_still_flushes_does_not_stall_its_mates_links():
    """Agents packed in one process share one ZeroMQ I/O thread. libzmq reports a link's events with a blocking
    send to the monitor's pair: if the agent closed its end of that pair first and the link then broke while its
    dealer still flushed (a neighbour that ended at the same moment), that send waited forever and every other
    agent of the process stopped hearing anyone (late agents' handshakes timed out). The closed agent's monitors
    must go quiet before its dealers linger."""
    ports = free_ports(4)
    addr = {i: f"tcp://127.0.0.1:{p}" for i, p in enumerate(ports)}
    links = ProcessLinks("run")
    sink_context = zmq.Context()
    sink = sink_context.socket(zmq.ROUTER)  # agent 1: takes one message, then reads nothing and dies
    sink.setsockopt(zmq.RCVHWM, 1)
    sink.setsockopt(zmq.LINGER, 0)
    sink.bind(addr[1])
    closing = ZmqExchange(0, addr[0], {1: addr[1]}, "run", 5.0, links=links)
    mate = ZmqExchange(2, addr[2], {3: addr[3]}, "run", 5.0, links=links)
    other = ZmqExchange(3, addr[3], {2: addr[2]}, "run", 5.0)
    try:
        closing.send(0, "params", {1: {"x": torch.ones(3)}})
        assert sink.poll(5000), "the link to the sink never came up"
        sink.recv_multipart()
        for round_ in range(1, SEND_HWM):  # far more than the socket buffers hold: the dealer must linger
            closing.send(round_, "params", {1: {"x": torch.ones(250_000)}})
        closing.close()
        sink.close()
        sink_context.term()  # the lingering dealer's link breaks: a disconnect event
        time.sleep(0.5)  # the shared I/O thread has seen it before the mate's message comes in
        other.send(0, "params", {2: {"x": torch.full((3,), 5.0)}})
        got = mate.collect(0, "params", [3], timeout=5)
    finally:  # everything closed even when a step above failed (closing twice is harmless), or term would hang
        for end in (closing, mate, other):
            end.close()
        sink.close()
        sink_context.term()
        links.close()
    assert got[3]["x"].tolist() == [5, 5, 5]
