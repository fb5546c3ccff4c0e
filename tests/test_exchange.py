import threading

import msgpack
import torch

from p2pfl.constants import PROTOCOL_VERSION
from p2pfl.exchange import InMemoryHub
from p2pfl.wire import encode

RUN = "r"


def pair(timeout=2.0):
    hub = InMemoryHub()
    return hub, hub.endpoint(0, [1, 2], RUN, timeout), hub.endpoint(1, [0], RUN, timeout), hub.endpoint(2, [0], RUN, timeout)


def in_threads(*calls):
    results = [None] * len(calls)

    def body(i, fn):
        results[i] = fn()

    threads = [threading.Thread(target=body, args=(i, fn)) for i, fn in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


def test_symmetric_exchange_returns_each_neighbours_tensors():
    _, a, b, c = pair()
    r0, r1, r2 = in_threads(
        lambda: a.exchange(0, "params", {1: {"x": torch.zeros(3)}, 2: {"x": torch.zeros(3)}}),
        lambda: b.exchange(0, "params", {0: {"x": torch.ones(3)}}),
        lambda: c.exchange(0, "params", {0: {"x": torch.full((3,), 2.0)}}))
    assert sorted(r0) == [1, 2]
    assert r0[1]["x"].tolist() == [1, 1, 1] and r0[2]["x"].tolist() == [2, 2, 2]
    assert r1[0]["x"].tolist() == [0, 0, 0]
    assert a.stats.bytes_sent == a.stats.bytes_received * 1 and a.stats.bytes_sent > 2 * 12


def test_early_messages_are_buffered_and_stale_ones_dropped():
    hub, a, b, _ = pair(timeout=0.5)
    # b runs ahead: sends round 0 and round 1 before a asks for anything.
    b._send_all(0, "params", {0: {"x": torch.ones(2)}})
    b._send_all(1, "params", {0: {"x": torch.full((2,), 5.0)}})
    got0 = a.exchange(0, "params", {1: {"x": torch.zeros(2)}})
    assert got0[1]["x"].tolist() == [1, 1]
    got1 = a.exchange(1, "params", {1: {"x": torch.zeros(2)}})
    assert got1[1]["x"].tolist() == [5, 5]
    # a late copy of round 0 arrives now: stale, dropped and counted, not delivered as round 2.
    b._send_all(0, "params", {0: {"x": torch.ones(2)}})
    got2 = a.exchange(2, "params", {1: {"x": torch.zeros(2)}})
    assert got2 == {}
    assert a.stats.dropped["stale round"] == 1
    assert a.stats.absent[1] == 1


def test_silent_neighbour_is_absent_after_the_timeout():
    _, a, b, _ = pair(timeout=0.3)
    b._send_all(0, "params", {0: {"x": torch.ones(1)}})  # already there: no thread races the short timeout
    got = a.exchange(0, "params", {1: {"x": torch.zeros(1)}, 2: {"x": torch.zeros(1)}})
    assert list(got) == [1]
    assert a.stats.absent == {2: 1}


def test_wrong_shape_from_a_neighbour_is_dropped():
    _, a, b, _ = pair(timeout=0.3)
    b._send_all(0, "params", {0: {"x": torch.ones(5)}})
    assert a.exchange(0, "params", {1: {"x": torch.zeros(2)}}) == {}
    assert sum(a.stats.dropped.values()) == 1


def test_non_neighbour_and_spoofed_sender_are_dropped():
    hub, a, _, c = pair(timeout=0.3)
    stranger = hub.endpoint(9, [0], RUN, 0.3)
    stranger._send_all(0, "params", {0: {"x": torch.zeros(1)}})
    # c claims to be 1 in the header: the connection identity says 2.
    hub.mailboxes[0].put((b"2", [bytes(f) for f in encode(RUN, 1, 0, "params", {"x": torch.zeros(1)})]))
    hub.mailboxes[0].put((b"1", [msgpack.packb({"v": PROTOCOL_VERSION}), b"junk"]))
    assert a.exchange(0, "params", {1: {"x": torch.zeros(1)}}) == {}
    assert a.stats.dropped["not a neighbour"] == 1
    assert a.stats.dropped["identity mismatch"] == 1
    assert sum(a.stats.dropped.values()) == 3


def test_one_payload_is_encoded_once_for_every_neighbour(monkeypatch):
    import p2pfl.exchange as module

    calls = []
    monkeypatch.setattr(module, "encode", lambda *args: calls.append(args) or encode(*args))
    _, a, b, c = pair(timeout=0.3)
    payload = {"x": torch.zeros(100)}
    a._send_all(0, "params", {1: payload, 2: payload})
    assert len(calls) == 1
    assert a.stats.sent_by_tag["params"] == 2 * (400 + len(encode(RUN, 0, 0, "params", payload)[0]))


def test_a_peer_already_past_this_round_is_not_waited_for():
    """Links are FIFO: if round 5 arrived, the lost round-4 message will never come; no timeout is paid
    (with a 600 s timeout, waiting for it would keep the thread alive long past the join)."""
    _, a, b, _ = pair(timeout=600.0)
    b._send_all(5, "params", {0: {"x": torch.ones(2)}})
    result = {}
    waiter = threading.Thread(target=lambda: result.update(got=a.exchange(4, "params", {1: {"x": torch.zeros(2)}})))
    waiter.start()
    waiter.join(60)
    assert not waiter.is_alive() and result["got"] == {}
    assert a.exchange(5, "params", {1: {"x": torch.zeros(2)}})[1]["x"].tolist() == [1, 1]


def test_concurrent_first_use_of_a_mailbox_yields_one_queue(monkeypatch):
    """Regression: a lazily created mailbox raced; a coordinator once blocked on a queue nobody wrote to."""
    import queue
    import threading
    import time

    from p2pfl import exchange as module

    class SlowQueue(queue.Queue):
        def __init__(self):
            time.sleep(0.01)  # invites the thread switch that caused the race
            super().__init__()

    monkeypatch.setattr(module.queue, "Queue", SlowQueue)
    hub = InMemoryHub()
    boxes = []
    threads = [threading.Thread(target=lambda: boxes.append(hub.mailbox(3))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(b) for b in boxes}) == 1


def test_request_and_reply_are_send_and_collect_with_their_bytes_and_the_peers_round():
    """The coordinator's pattern: send a request to each client, collect the replies of those asked;
    a client collects its request (checked against its spec), sends its reply; nothing waits on a send."""
    from p2pfl.wire import TensorSpec

    _, a, b, c = pair(timeout=0.5)
    request = {"model": torch.ones(4)}
    assert a.latest_round(1) == -1
    a.send(3, "train", {1: request, 2: {}})  # client 2 sits the round out: an empty request
    got = b.collect(3, "train", [0], expect={0: ({"model": TensorSpec("float32", (4,))}, {})})
    assert got[0]["model"].tolist() == [1, 1, 1, 1] and c.collect(3, "train", [0])[0] == {}
    b.send(3, "train-reply", {0: {"n": torch.tensor([5.0])}})
    replies = a.collect(3, "train-reply", [1, 2], expect={p: {"n": TensorSpec("float32", (1,))} for p in (1, 2)})
    assert list(replies) == [1] and replies[1]["n"].tolist() == [5.0]
    assert a.stats.absent[2] == 1 and 2 in a.down and a.latest_round(1) == 3 and b.latest_round(0) == 3
    assert a.stats.sent_by_tag.keys() == {"train"} and a.stats.received_by_tag.keys() == {"train-reply"}
    assert b.stats.sent_by_tag["train-reply"] == a.stats.received_by_tag["train-reply"] > 4
    a.send(4, "train", {1: {"model": torch.ones(5)}})  # not what the client expects: dropped, not returned
    assert b.collect(4, "train", [0], expect={0: {"model": TensorSpec("float32", (4,))}}, timeout=0.2) == {}
    assert b.stats.dropped["unexpected tensors"] == 1


def test_a_stop_event_wakes_an_agent_waiting_for_a_silent_neighbour():
    """A failed agent in --simulate (or a packed worker's SIGTERM) must not leave the others waiting a whole
    round timeout."""
    hub, stop = InMemoryHub(), threading.Event()
    a = hub.endpoint(0, [1, 2], RUN, 600.0, stopping=stop)
    result = {}
    waiter = threading.Thread(target=lambda: result.update(got=a.exchange(0, "params", {1: {"x": torch.zeros(3)}})))
    waiter.start()
    stop.set()
    waiter.join(60)
    assert not waiter.is_alive() and result["got"] == {}


def test_a_fresh_agent_whose_neighbours_hello_was_lost_hears_it_by_repeating_its_own():
    """The neighbour took our hello in its own handshake, but its hello to us never arrived (seen once in a loaded
    suite); it then runs its rounds. A single hello would leave us waiting out the startup timeout; repeated, it
    reaches the neighbour in its rounds, which answers it."""
    from p2pfl.agents.handshake import hello_all
    from p2pfl.constants import HELLO_ROUND, TAG_HELLO

    hub = InMemoryHub()
    ours, theirs = hub.endpoint(0, [1], "run", 5.0), hub.endpoint(1, [0], "run", 5.0)

    def neighbour() -> None:
        assert list(theirs.collect(HELLO_ROUND, TAG_HELLO, [0], timeout=5.0)) == [0]  # its handshake, no hello sent
        theirs.collect(0, "params", [0], timeout=4.0)  # its round 0: reading what comes, as a running agent does

    thread = threading.Thread(target=neighbour)
    thread.start()
    heard = hello_all(ours, {"round": torch.tensor([0])}, [1], timeout=10.0)
    thread.join()
    assert heard == {1}


def test_a_fresh_agent_counts_a_neighbour_up_once_any_message_of_its_rounds_arrives():
    """A neighbour whose hello was lost and that does not read ours any more (it waits in its round 0) is still up:
    its round-0 message, parked meanwhile, says so."""
    from p2pfl.agents.handshake import hello_all

    hub = InMemoryHub()
    ours, theirs = hub.endpoint(0, [1], "run", 5.0), hub.endpoint(1, [0], "run", 5.0)
    theirs.send(0, "params", {0: {"params": torch.ones(3)}})
    assert hello_all(ours, {"round": torch.tensor([0])}, [1], timeout=3.0) == {1}
    assert list(ours.exchange(0, "params", {1: {"params": torch.zeros(3)}}, timeout=1.0)) == [1]  # kept for round 0


def test_a_payload_sent_to_another_process_and_to_a_mate_is_sized_once(monkeypatch):
    """The message to a process-external neighbour leaves before the mates' hand-overs (two sends in one exchange);
    the hand-overs count the frame sizes that encoding already gave, not a second header."""
    import p2pfl.exchange as exchange_module

    sized = []
    monkeypatch.setattr(exchange_module, "frame_sizes", lambda *args: sized.append(args) or [])
    end = InMemoryHub().endpoint(0, [1, 2], "run", 1.0)
    end.mates, handed = frozenset({2}), []
    end._hand_over = lambda peer, envelope: handed.append((peer, envelope.nbytes)) or True
    payload = {"x": torch.ones(3)}
    end.exchange(0, "params", {1: payload, 2: payload}, expect_from=[], timeout=0.01)
    frames = encode("run", 0, 0, "params", payload)
    assert sized == [] and handed == [(2, sum(len(f) for f in frames))]
    assert end.stats.bytes_sent == 2 * sum(len(f) for f in frames)
