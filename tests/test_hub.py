"""The hub (p2pfl/hub.py): a packed worker's agents as greenlets of one thread, giving way where they wait."""

import logging
import time

import greenlet
import torch
import zmq

from p2pfl import turn
from p2pfl.agents.agent_logs import AgentRoutedLogs
from p2pfl.hub import Hub
from p2pfl.transport import ProcessLinks, ZmqExchange


def test_agents_take_turns_round_by_round_in_the_order_they_gave_way():
    hub, order = Hub(), []

    def agent(i: int) -> None:
        for round_ in range(3):
            order.append((round_, i))
            turn.pass_on()

    hub.run([lambda i=i: agent(i) for i in range(3)])
    assert order == [(r, i) for r in range(3) for i in range(3)]
    assert turn.current() is None  # the hub is this thread's scheduler only while it runs


def test_a_waiting_agent_resumes_when_its_socket_is_readable_and_not_before():
    context = zmq.Context.instance()
    inbox, outbox = context.socket(zmq.PULL), context.socket(zmq.PUSH)
    inbox.bind("inproc://hub-test-readable")
    outbox.connect("inproc://hub-test-readable")
    hub, events = Hub(), []

    def reader() -> None:
        started = time.monotonic()
        turn.current().wait_readable([inbox], 30.0)
        events.append(("read", inbox.recv(zmq.NOBLOCK), time.monotonic() - started < 10))

    def writer() -> None:
        for round_ in range(3):  # the reader stays parked through these rounds: nothing to read yet
            events.append(("round", round_))
            turn.pass_on()
        outbox.send(b"hello")
        events.append(("sent",))

    hub.run([reader, writer])
    assert events == [("round", 0), ("round", 1), ("round", 2), ("sent",), ("read", b"hello", True)]
    for socket in (inbox, outbox):
        socket.close(linger=0)


def test_many_parked_agents_each_wake_for_their_own_socket_only_as_they_park_again():
    """A worker hosts up to 128 agents: the poll over the parked agents' sockets must wake exactly the one whose
    message came, however many park and wake in between (each reader waits twice, woken in reverse order)."""
    context, count = zmq.Context.instance(), 150
    pairs = []
    for i in range(count):
        inbox, outbox = context.socket(zmq.PULL), context.socket(zmq.PUSH)
        inbox.bind(f"inproc://hub-test-many-{i}")
        outbox.connect(f"inproc://hub-test-many-{i}")
        pairs.append((inbox, outbox))
    hub, woke = Hub(), []

    def reader(i: int) -> None:
        inbox = pairs[i][0]
        for wait in range(2):
            turn.current().wait_readable([inbox], 30.0)
            woke.append((wait, i, inbox.recv(zmq.NOBLOCK)))

    def writer() -> None:
        for wait in range(2):
            turn.pass_on()  # every reader parks first
            for i in reversed(range(count)):
                pairs[i][1].send(f"{wait}:{i}".encode())
                turn.pass_on()  # the one reader it woke runs now, and no other

    try:
        hub.run([lambda i=i: reader(i) for i in range(count)] + [writer])
        assert woke == [(wait, i, f"{wait}:{i}".encode()) for wait in range(2) for i in reversed(range(count))]
    finally:
        for inbox, outbox in pairs:
            inbox.close(linger=0)
            outbox.close(linger=0)


def test_a_wait_ends_at_its_deadline_and_sleep_lets_the_others_run():
    context = zmq.Context.instance()
    silent = context.socket(zmq.PULL)
    silent.bind("inproc://hub-test-silent")
    hub, ended = Hub(), []

    def waiter() -> None:
        started = time.monotonic()
        turn.current().wait_readable([silent], 0.2)
        ended.append(("waiter", time.monotonic() - started >= 0.19))

    def sleeper() -> None:
        turn.sleep(0.05)
        ended.append(("sleeper", True))

    hub.run([waiter, sleeper])
    assert ended == [("sleeper", True), ("waiter", True)]
    silent.close(linger=0)


def test_grad_mode_is_each_agents_own_across_switches():
    """torch keeps grad mode per thread, and the hub's agents share one thread."""
    hub, seen = Hub(), {}

    def evaluating() -> None:
        with torch.no_grad():
            turn.pass_on()
            seen["evaluating"] = torch.is_grad_enabled()

    def training() -> None:
        seen["training"] = torch.is_grad_enabled()
        turn.pass_on()

    hub.run([evaluating, training])
    assert seen == {"evaluating": False, "training": True}


def _three_mates(name: str, agent, before=lambda ends: None, remote: int | None = None) -> None:
    """Three packed mates, each linked to the other two, run `agent(i, its exchange, its peers)` as greenlets of
    one hub; `before(ends)` may wrap their exchanges first. `remote`: a neighbour of all three in no process (its
    link queues what it is sent), not among the peers `agent` is given."""
    links = ProcessLinks(name, mates=range(3))
    ring = {i: [(i - 1) % 3, (i + 1) % 3] for i in range(3)}
    linked = {i: [*ring[i], *([] if remote is None else [remote])] for i in range(3)}
    ends = [ZmqExchange(i, f"inproc://{name}-{i}", {j: "tcp://127.0.0.1:9" for j in linked[i]}, name, 30.0,
                        links=links) for i in range(3)]
    try:
        before(ends)
        Hub().run([lambda i=i: agent(i, ends[i], ring[i]) for i in range(3)])
    finally:
        for end in ends:
            end.close()
        links.close()


def test_mates_exchange_over_inproc_as_greenlets():
    values = {}

    def agent(i: int, end: ZmqExchange, peers: list[int]) -> None:
        x = torch.full((4,), float(i))
        for round_ in range(5):
            got = end.exchange(round_, "params", {j: {"x": x} for j in peers})
            x = (x + sum(got[j]["x"] for j in peers)) / 3
            turn.pass_on()
        values[i] = x

    _three_mates("hub-test", agent)
    assert sorted(values) == [0, 1, 2]
    for i in range(3):  # a complete graph of 3 averages exactly in one round
        assert torch.allclose(values[i], torch.full((4,), 1.0))


def test_packed_mates_take_their_steps_then_send_then_collect_round_by_round():
    """Each part of a round runs for every mate before the next part starts for any (exchange.exchange gives way
    before handing over and before collecting); one after the other, each agent stepped, sent and parked in turn."""
    events = []

    def spy(ends: list[ZmqExchange]) -> None:
        for i, end in enumerate(ends):
            for part, name in (("send", "_send_all"), ("collect", "_collect")):
                def call(round_, *args, part=part, method=getattr(end, name), i=i, **kwargs):
                    events.append((round_, part, i))
                    return method(round_, *args, **kwargs)
                setattr(end, name, call)

    def agent(i: int, end: ZmqExchange, peers: list[int]) -> None:
        x = torch.full((4,), float(i))
        for round_ in range(3):
            turn.pass_on()  # as the agent loop does between rounds
            events.append((round_, "step", i))
            got = end.exchange(round_, "params", {j: {"x": x} for j in peers})
            x = (x + sum(got[j]["x"] for j in peers)) / 3

    _three_mates("hub-test-parts", agent, before=spy)
    assert events == [(r, part, i) for r in range(3) for part in ("step", "send", "collect") for i in range(3)]


def test_a_message_to_another_process_goes_right_after_the_step_and_mates_hand_over_once_all_stepped():
    """The neighbour in another process gets its message before the next mate's step (an agent there waits for
    it), the mates theirs once every mate has stepped, and every mate collects after that."""
    events = []

    def spy(ends: list[ZmqExchange]) -> None:
        for i, end in enumerate(ends):
            def send_all(round_, tag, outbox, *args, method=end._send_all, i=i, **kwargs):
                events.append((round_, "send", i, tuple(sorted(outbox))))
                return method(round_, tag, outbox, *args, **kwargs)

            def collect(round_, *args, method=end._collect, i=i, **kwargs):
                events.append((round_, "collect", i))
                return method(round_, *args, **kwargs)
            end._send_all, end._collect = send_all, collect

    def agent(i: int, end: ZmqExchange, peers: list[int]) -> None:
        x = torch.full((4,), float(i))
        for round_ in range(2):
            turn.pass_on()
            events.append((round_, "step", i))
            got = end.exchange(round_, "params", {j: {"x": x} for j in [*peers, 3]}, expect_from=peers)
            x = (x + sum(got[j]["x"] for j in peers)) / 3

    _three_mates("hub-test-remote", agent, before=spy, remote=3)
    mates = {i: tuple(sorted({(i - 1) % 3, (i + 1) % 3})) for i in range(3)}
    assert events == [event for r in range(2) for event in (
        *[e for i in range(3) for e in ((r, "step", i), (r, "send", i, (3,)))],
        *[(r, "send", i, mates[i]) for i in range(3)],
        *[(r, "collect", i) for i in range(3)])]


def test_an_agent_that_fails_leaves_the_others_running(caplog):
    hub, done = Hub(), []

    def failing() -> None:
        turn.pass_on()
        raise RuntimeError("boom")

    def steady() -> None:
        for _ in range(3):
            turn.pass_on()
        done.append(True)

    with caplog.at_level(logging.ERROR, logger="p2pfl.hub"):
        hub.run([failing, steady])
    assert done == [True] and "boom" in caplog.text


def test_each_agent_logs_to_its_own_file_when_agents_are_greenlets(tmp_path):
    fallback = logging.FileHandler(tmp_path / "worker.log")
    logs = AgentRoutedLogs(fallback).install()
    hub = Hub()

    def agent(i: int) -> None:
        logs.attach(tmp_path / f"{i}.log", i)
        for round_ in range(2):
            logging.getLogger("p2pfl.test").info("agent %s round %s", i, round_)
            turn.pass_on()
        logs.detach()

    try:
        hub.run([lambda i=i: agent(i) for i in range(2)])
        logging.getLogger("p2pfl.test").info("the worker itself")
    finally:
        logging.getLogger("p2pfl").handlers[:] = []
        fallback.close()
    for i in range(2):
        lines = (tmp_path / f"{i}.log").read_text().splitlines()
        assert len(lines) == 2 and all(f"agent {i} round" in line for line in lines)
    assert "the worker itself" in (tmp_path / "worker.log").read_text()
    assert greenlet.getcurrent().parent is None  # back on this thread's own main greenlet


def test_an_in_memory_exchange_refuses_to_block_a_hub():
    from p2pfl.exchange import InMemoryHub

    hub, errors = Hub(), []
    end = InMemoryHub().endpoint(0, [1], "hub-test", 0.5)

    def agent() -> None:
        try:
            end.exchange(0, "params", {1: {"x": torch.zeros(2)}})
        except RuntimeError as exc:
            errors.append(str(exc))

    hub.run([agent])
    assert errors and "ZmqExchange" in errors[0]


def test_a_test_set_pass_lets_the_mates_run_between_its_batches():
    """Evaluation holds a hub's thread (no thread to run it beside the others): it breathes after each batch, so a
    mate's rounds go on meanwhile instead of all waiting for the whole pass."""
    from p2pfl.models.evaluation import evaluate

    model = torch.nn.Linear(3, 2)
    x, y = torch.randn(40, 3), torch.randint(0, 2, (40,))
    hub, order = Hub(), []

    def evaluating() -> None:
        accuracy, loss = evaluate(model, x, y, batch_size=10, pause=turn.breathe)
        order.append(("evaluated", 0 <= accuracy <= 1 and loss > 0))

    def training() -> None:
        for round_ in range(3):
            order.append(("round", round_))
            turn.pass_on()

    hub.run([evaluating, training])
    assert order.index(("evaluated", True)) > order.index(("round", 2))  # 4 batches: 3 breaths, 3 mate rounds


def test_a_ring_wakes_the_agent_waiting_under_its_token_and_no_other():
    """A mate's hand-over wakes the receiver through the hub (Hub.ring), not through a socket: a token no agent of
    the hub waited under is refused (the caller then rings the socket), and a sleeping agent sleeps on."""
    hub, events = Hub(), []

    def waiter() -> None:
        started = time.monotonic()
        turn.current().wait_readable([], 30.0, token="waiter")
        events.append(("woken", time.monotonic() - started < 10))

    def sleeper() -> None:
        started = time.monotonic()
        turn.sleep(0.3)
        events.append(("slept", time.monotonic() - started >= 0.3))

    def ringer() -> None:
        events.append(("unknown", turn.mate_ring()("nobody")))
        events.append(("rang", turn.mate_ring()("waiter")))
        turn.pass_on()

    hub.run([waiter, sleeper, ringer])
    assert events == [("unknown", False), ("rang", True), ("woken", True), ("slept", True)]
    assert turn.mate_ring() is None  # outside a hub, hand-overs ring the socket
