"""Turns (p2pfl/turn.py): how many agent threads of a process run at once, in which order, and that a thread
gives its turn up wherever it waits, so a packed worker never deadlocks on a mate that holds it."""

import threading

import pytest
import torch

from p2pfl import turn
from p2pfl.exchange import InMemoryHub
from p2pfl.turn import Turn

JOIN_SECONDS = 30  # a deadlock shows as a thread still alive after this


def run_threads(targets) -> None:
    threads = [threading.Thread(target=t, daemon=True) for t in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN_SECONDS)
    assert not any(thread.is_alive() for thread in threads), "a thread never got its turn"


@pytest.mark.parametrize("slots", [1, 2])
def test_at_most_slots_threads_run_at_once_and_every_one_finishes(slots):
    gate, running, most, rounds = threading.Lock(), [0], [0], []
    shared = Turn(slots)

    def agent(i: int) -> None:
        with shared.held():
            for round_ in range(50):
                with gate:
                    running[0] += 1
                    most[0] = max(most[0], running[0])
                sum(range(2000))  # some work with the turn held
                with gate:
                    running[0] -= 1
                    rounds.append(i)
                turn.pass_on()

    run_threads([lambda i=i: agent(i) for i in range(6)])
    assert 1 <= most[0] <= slots
    assert sorted(rounds) == sorted(list(range(6)) * 50)


def test_waiting_threads_get_the_turn_first_come_first_served():
    shared = Turn(1)
    order: list[str] = []

    def later(name: str) -> None:
        with shared.held():
            order.append(name)

    with shared.held():
        first = threading.Thread(target=later, args=("first",), daemon=True)
        first.start()
        while not shared.queued():
            first.join(0.01)
        second = threading.Thread(target=later, args=("second",), daemon=True)
        second.start()
        while shared.queued() < 2:
            second.join(0.01)
    first.join(JOIN_SECONDS)
    second.join(JOIN_SECONDS)
    assert order == ["first", "second"]


def test_a_thread_gives_its_turn_up_while_it_waits():
    """The holder waits for something only another thread of the same turn can do: without waiting() giving
    the turn up, neither would ever run again."""
    shared, done = Turn(1), threading.Event()

    def holder() -> None:
        with shared.held():
            with turn.waiting():
                assert done.wait(JOIN_SECONDS)
            assert turn.current() is shared  # taken back once the wait is over

    def helper() -> None:
        with shared.held():
            done.set()

    run_threads([holder, helper])


def test_pass_on_keeps_the_turn_when_nobody_waits_and_nothing_happens_without_a_turn():
    shared = Turn(1)
    with shared.held():
        turn.pass_on()
        assert turn.current() is shared and not shared.queued()
    assert turn.current() is None
    with turn.waiting():  # a thread without a turn (one agent per process) waits as before
        turn.pass_on()
    with pytest.raises(ValueError):
        Turn(0)


def test_a_packed_agent_does_not_wait_out_its_timeout_for_a_neighbour_that_is_down():
    hub, shared = InMemoryHub(), Turn(1)
    ends = {i: hub.endpoint(i, [0] if i else [1, 2], "r", 600.0) for i in range(3)}
    ends[0].mark_down(2, "closed its link")
    got, done = {}, threading.Event()

    def agent_0() -> None:
        with shared.held():
            got.update(ends[0].exchange(0, "params", {j: {"x": torch.zeros(2)} for j in (1, 2)}))
        done.set()

    waiter = threading.Thread(target=agent_0, daemon=True)
    waiter.start()
    waiter.join(0.05)
    ends[1]._send_all(0, "params", {0: {"x": torch.ones(2)}})
    assert done.wait(JOIN_SECONDS)  # with a 600 s round timeout: only returning early gets here
    assert list(got) == [1]
