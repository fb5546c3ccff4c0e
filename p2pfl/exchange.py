"""The seam between algorithms and transport: "send these tensors for (round, tag), give me theirs".

`MailboxExchange` holds everything that does not depend on how bytes move: encoding once per
distinct payload, validation of every inbound message, buffering of early messages, dropping of
stale ones, deadlines and byte/time accounting. Transports only implement `_send` and `_receive`.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Protocol, Sequence

import torch

from p2pfl.constants import (DEFAULT_MAX_MESSAGE_BYTES, DRAIN_MAX_MESSAGES, DRAIN_MAX_SECONDS, DROP_REASONS,
                             STOP_POLL_SECONDS,
                             HELLO_ROUND, MAX_PARKED_PER_PEER, PARKED_CAPS_PER_PEER, ROUND_WINDOW, TAG_HELLO,
                             TAG_WELCOME, WELCOME_INTERVAL_SECONDS)
from p2pfl import turn
from p2pfl.errors import WireError
from p2pfl.wire import (Buffer, Envelope, TensorSpec, all_finite, check_spec, decode, encode, frame_sizes,
                        non_finite, spec_of)

PeerId = int
TensorMap = Mapping[str, torch.Tensor]
# What a peer must send: one spec, or a tuple of acceptable ones (e.g. a request or an empty "sit out").
Expected = Mapping[str, TensorSpec] | tuple[Mapping[str, TensorSpec], ...]
log = logging.getLogger("p2pfl.exchange")


@dataclass
class ExchangeStats:
    """Cumulative counters; the agent loop reports per-round differences."""

    bytes_sent: int = 0
    bytes_received: int = 0
    sent_by_tag: Counter = field(default_factory=Counter)
    sent_by_tensor: Counter = field(default_factory=Counter)  # payload bytes per tensor name, headers excluded
    received_by_tag: Counter = field(default_factory=Counter)
    comm_seconds: float = 0.0
    wait_seconds: float = 0.0
    dropped: Counter = field(default_factory=Counter)
    absent: Counter = field(default_factory=Counter)
    marked_down: Counter = field(default_factory=Counter)
    send_failures: Counter = field(default_factory=Counter)

    def snapshot(self) -> dict:
        return {"bytes_sent": self.bytes_sent, "bytes_received": self.bytes_received,
                "comm_seconds": self.comm_seconds, "wait_seconds": self.wait_seconds,
                "sent_by_tag": dict(self.sent_by_tag), "sent_by_tensor": dict(self.sent_by_tensor),
                "dropped": sum(self.dropped.values())}


class Exchange(Protocol):
    """Gossip uses `exchange` (send to the neighbours, take theirs); a coordinator and its clients use its
    two halves: `send` a request (or a reply) and `collect` what the asked peers sent back."""

    agent_id: PeerId
    stats: ExchangeStats

    def exchange(self, round: int, tag: str, outbox: Mapping[PeerId, TensorMap], *,
                 expect_from: Iterable[PeerId] | None = None,
                 expect: Mapping[PeerId, Expected] | None = None,
                 timeout: float | None = None, frozen: bool = False) -> dict[PeerId, dict[str, torch.Tensor]]:
        """Send each peer its tensors for (round, tag); return what each live peer sent for it. `frozen`: the
        caller will not change the tensors it sends once this returns (a packed mate may then read them in
        place instead of a copy)."""
        ...

    def send(self, round: int, tag: str, outbox: Mapping[PeerId, TensorMap], *, frozen: bool = False) -> None:
        """Send each peer its tensors for (round, tag) and wait for nothing."""
        ...

    def collect(self, round: int, tag: str, peers: Iterable[PeerId], *,
                expect: Mapping[PeerId, Expected] | None = None,
                timeout: float | None = None) -> dict[PeerId, dict[str, torch.Tensor]]:
        """What each of `peers` sent for (round, tag), checked against `expect`, until the timeout."""
        ...

    def latest_round(self, peer: PeerId) -> int:
        """The newest round `peer` has been heard in (-1: never); it will not send earlier rounds again."""
        ...

    def mark_down(self, peer: PeerId, reason: str) -> None:
        """Stop waiting for `peer` (once others answered) until a message from it arrives."""
        ...

    def close(self) -> None: ...


class MailboxExchange:
    """Exchange logic common to every transport; subclasses move the frames."""

    # Peers in this process (packed mates) whose messages are handed over as tensors, not sent as bytes:
    # what a transport with mates sets, along with _hand_over.
    mates: frozenset[PeerId] = frozenset()

    def __init__(self, agent_id: PeerId, peers: Iterable[PeerId], run_id: str, round_timeout: float,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, round_window: int = ROUND_WINDOW,
                 stopping: threading.Event | None = None):
        """`round_window`: how many rounds ahead a peer's message is kept; a topology that changes per round
        lets peers run further ahead than a fixed one (RunSetup.round_window). `stopping`: set when the agent
        must stop (a failed sibling in --simulate, a packed worker's SIGTERM, a signal that Python swallowed);
        every wait then ends within STOP_POLL_SECONDS instead of at its deadline."""
        self.agent_id = agent_id
        self.stopping = stopping
        self.round_window = round_window
        self.peers = frozenset(peers)
        self.run_id = run_id
        self.round_timeout = round_timeout
        self.max_message_bytes = max_message_bytes
        self.stats = ExchangeStats()
        self._buffer: dict[tuple[int, str], dict[PeerId, Envelope]] = defaultdict(dict)
        self._parked: Counter = Counter()  # messages parked per peer
        self._parked_bytes: Counter = Counter()
        self._welcomed: dict[PeerId, float] = {}  # when each peer was last answered a mid-run hello
        self._drop_logged: set[str] = set()
        self._done: set[tuple[int, str]] = set()
        self._round = -10**9
        self.down: set[PeerId] = set()  # peers not waited for until they are heard from again
        # Newest round each peer has sent us. Links are FIFO, so a peer already past round r will never
        # send (r, tag) any more: a message lost while a link was down must not be waited for.
        self.latest_seen: dict[PeerId, int] = {}

    # -- transport hooks -------------------------------------------------------------------
    def _send(self, peer: PeerId, frames: Sequence[Buffer]) -> bool:
        raise NotImplementedError

    def _receive(self, timeout: float) -> tuple[bytes, Sequence[Buffer]] | Envelope | None:
        """One inbound message as (sender identity, frames), or as the Envelope a mate handed over; None when
        the timeout passes."""
        raise NotImplementedError

    def _hand_over(self, peer: PeerId, envelope: Envelope) -> bool:
        """Give a mate (a peer in `mates`) its message; False when its queue is full."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    def _aborted(self) -> bool:
        """True once the agent is stopping: no wait should run on to its deadline."""
        return self.stopping is not None and self.stopping.is_set()

    # -- the exchange ----------------------------------------------------------------------
    def exchange(self, round: int, tag: str, outbox: Mapping[PeerId, TensorMap], *,
                 expect_from: Iterable[PeerId] | None = None,
                 expect: Mapping[PeerId, Expected] | None = None,
                 timeout: float | None = None, frozen: bool = False) -> dict[PeerId, dict[str, torch.Tensor]]:
        # Packed mates (turn.py) go through a round's parts together: each gives way before it hands its mates
        # their messages and again before it collects, so all of them have taken their step before any hands
        # over, and all have handed over before any collects. Each part then runs for every mate back to back, and
        # an agent that collects finds its mates' messages already there instead of parking for each (the
        # 16-agent torus, time-sliced against its floor: 1.22 to 1.14 in median rounds;
        # benchmarks/FOOTPRINT_HISTORY.md, "A round's parts together"). A neighbour in another process gets its
        # message at once, right after the step: an agent of that process waits for it, and it arrives while this
        # process's other agents take their steps instead of after the last of them (with the workers taking
        # turns on the cores, agents/core_rotation.py: 4% less time per round on the 8-agent torus;
        # benchmarks/FOOTPRINT_HISTORY.md, 2026-11-28). Outside a packed worker there are no mates and no turns.
        # The two sends share the payloads' frame sizes: encoded for the first, counted again for the second.
        remote, sizes_of = {peer: tensors for peer, tensors in outbox.items() if peer not in self.mates}, {}
        if remote:
            self._timed_send(round, tag, remote, frozen, sizes_of)
        turn.pass_on()
        if len(remote) < len(outbox):
            self._timed_send(round, tag, {peer: t for peer, t in outbox.items() if peer in self.mates}, frozen,
                             sizes_of)
        turn.pass_on()
        wanted = set(outbox if expect_from is None else expect_from)
        # What each peer must send: given per peer, else what we send it (symmetric gossip), else unchecked.
        if expect is None:
            specs: dict[int, dict[str, TensorSpec]] = {}  # one per distinct payload: gossip sends each the same
            expect = {}
            for peer in wanted & outbox.keys():
                spec = specs.get(id(outbox[peer]))
                if spec is None:
                    spec = specs[id(outbox[peer])] = spec_of(outbox[peer])
                expect[peer] = spec
        return self.collect(round, tag, wanted, expect=expect, timeout=timeout)

    def send(self, round: int, tag: str, outbox: Mapping[PeerId, TensorMap], *, frozen: bool = False) -> None:
        self._timed_send(round, tag, outbox, frozen, {})

    def _timed_send(self, round: int, tag: str, outbox: Mapping[PeerId, TensorMap], frozen: bool,
                    sizes_of: dict[int, list[int]]) -> None:
        start = time.perf_counter()
        self._enter(round)
        self._send_all(round, tag, outbox, frozen, sizes_of)
        self.stats.comm_seconds += time.perf_counter() - start

    def collect(self, round: int, tag: str, peers: Iterable[PeerId], *,
                expect: Mapping[PeerId, Expected] | None = None,
                timeout: float | None = None) -> dict[PeerId, dict[str, torch.Tensor]]:
        start = time.perf_counter()
        self._enter(round)
        wanted = set(peers)
        unknown = wanted - self.peers
        if unknown:
            raise ValueError(f"agent {self.agent_id} has no link to {sorted(unknown)}")
        specs = {peer: (expect or {}).get(peer) for peer in wanted}  # None: unchecked
        got = self._collect(round, tag, specs, self.round_timeout if timeout is None else timeout)
        self._done.add((round, tag))
        for peer in sorted(wanted - got.keys()) if round >= 0 else ():  # control rounds report themselves
            self.stats.absent[peer] += 1
            self.mark_down(peer, f"silent in round {round} ({tag})")
        self.stats.comm_seconds += time.perf_counter() - start
        return {peer: got[peer].tensors for peer in sorted(got)}

    def latest_round(self, peer: PeerId) -> int:
        return self.latest_seen.get(peer, -1)

    def _enter(self, round: int) -> None:
        """A new round: what is still parked for an earlier one will never be asked for."""
        if round > self._round:
            self._round = round
            self._done = {key for key in self._done if key[0] >= round}
            for key in [key for key in self._buffer if key[0] < round]:  # parked for a round nobody asked for
                for envelope in self._unpark(key).values():
                    self._drop("stale round", envelope)

    def _send_all(self, round: int, tag: str, outbox: Mapping[PeerId, TensorMap], frozen: bool = False,
                  sizes_of: dict[int, list[int]] | None = None) -> None:
        """`frozen`: the caller will not change the payloads' tensors once sent, so mates may read them in place.
        `sizes_of`: frame sizes of payloads (by id) already known from an earlier send of the same outbox's."""
        # Per distinct payload, made once and shared by every peer it goes to: its frames (only if a peer is
        # across a socket), its envelope for mates, and the frame sizes it counts as sent either way.
        frames_of: dict[int, list[Buffer]] = {}
        handed: dict[int, Envelope] = {}
        sizes_of = {} if sizes_of is None else sizes_of
        copies: dict[int, int] = {}  # how many peers each payload went to
        payloads: dict[int, TensorMap] = {}
        for peer, tensors in outbox.items():
            key = id(tensors)
            if peer in self.mates:
                envelope = handed.get(key)
                if envelope is None:
                    sizes = sizes_of.get(key)
                    if sizes is None:
                        sizes = sizes_of[key] = frame_sizes(self.run_id, self.agent_id, round, tag, tensors)
                    envelope = handed[key] = self._handover_envelope(round, tag, tensors, sum(sizes), frozen)
                # Each mate its own envelope and dict (a receiver may retag or keep them), the tensors shared.
                sent = self._hand_over(peer, envelope.for_mate())
            else:
                frames = frames_of.get(key)
                if frames is None:
                    frames = frames_of[key] = encode(self.run_id, self.agent_id, round, tag, tensors)
                    sizes_of.setdefault(key, [len(f) for f in frames])  # known already if a mate got it first
                sent = self._send(peer, frames)
            if sent:
                copies[key] = copies.get(key, 0) + 1
                payloads[key] = tensors
            else:
                self.stats.send_failures[peer] += 1
        for key, count in copies.items():  # counted once per payload, times the peers that got it
            sizes = sizes_of[key]
            total = sum(sizes) * count
            self.stats.bytes_sent += total
            self.stats.sent_by_tag[tag] += total
            for name, size in zip(payloads[key], sizes[1:]):
                self.stats.sent_by_tensor[name] += size * count

    def _handover_envelope(self, round: int, tag: str, tensors: TensorMap, nbytes: int, frozen: bool) -> Envelope:
        """What a mate gets instead of the frames: the tensors on the host, shared by every mate it goes to (they
        only read them), with what a receiver would otherwise find by decoding: the size the frames have on the
        wire (`nbytes`, so byte counts do not depend on packing) and which tensors are not finite. A copy, made
        once, unless the payload is `frozen`: the sender may otherwise change its tensors as soon as this
        returns. A frozen tensor already on the host and contiguous is handed over as it is: one vector less to
        write and read per round (a LeNet-5 has 247 KB), each round, for every agent."""
        copies, versions = {}, {}
        for name, tensor in tensors.items():
            tensor = tensor.detach()  # shares the original's version counter
            # An inference-mode tensor has no version counter to check: copied, as without frozen.
            if frozen and tensor.device.type == "cpu" and tensor.is_contiguous() and not tensor.is_inference():
                copies[name], versions[name] = tensor, tensor._version
            else:
                copies[name] = tensor.to("cpu", memory_format=torch.contiguous_format, copy=True)
        bad = [name for name, t in copies.items() if t.is_floating_point() and not all_finite(t)]
        return Envelope(self.run_id, self.agent_id, round, tag, copies, nbytes, bad, versions or None)

    def _collect(self, round: int, tag: str, specs: dict[PeerId, Mapping[str, TensorSpec] | None],
                 timeout: float) -> dict[PeerId, Envelope]:
        got: dict[PeerId, Envelope] = {}
        for peer, envelope in self._unpark((round, tag)).items():
            self._accept(envelope, specs, got)
        deadline = time.monotonic() + timeout

        def waiting() -> set[PeerId]:
            candidates = {p for p in specs.keys() - got.keys() if round < 0 or self.latest_seen.get(p, round) <= round}
            live = candidates - self.down
            # Down peers are not waited for while others answer; an agent that hears nobody waits for them
            # anyway, so a cut-off agent keeps the pace of a round timeout instead of running far ahead.
            return live if live or got else candidates

        while waiting():
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._aborted():
                break
            waited = time.perf_counter()
            # What already arrived is taken without giving up this thread's turn (a packed agent's, turn.py).
            item = self._receive(0) if turn.current() is not None else None
            if item is None:
                with turn.waiting():
                    # With a stop event, wait in slices: None after a slice reads as a timeout, the loop checks it.
                    item = self._receive(remaining if self.stopping is None else min(remaining, STOP_POLL_SECONDS))
            self.stats.wait_seconds += time.perf_counter() - waited
            if item is not None:  # None: a timeout, or a link event that may have changed who is down
                self._handle(item, round, tag, specs, got)
        # A peer may have sent its message and closed its link at once (its last round): the close can be
        # seen first, so take whatever already arrived before giving up on anyone. Bounded: under a flood
        # the rest waits in the socket for the next round instead of stretching this one.
        drain_until, drained = time.monotonic() + DRAIN_MAX_SECONDS, 0
        while (specs.keys() - got.keys() and drained < DRAIN_MAX_MESSAGES and time.monotonic() < drain_until
               and (item := self._receive(0)) is not None):
            drained += 1
            self._handle(item, round, tag, specs, got)
        return got

    def _handle(self, item: tuple[bytes, Sequence[Buffer]] | Envelope, round: int, tag: str, specs: dict,
                got: dict[PeerId, Envelope]) -> None:
        envelope = self._validate_handed(item) if isinstance(item, Envelope) else self._validate(*item)
        if envelope is None:
            return
        # A peer is waited for again once heard, unless what it sent is for a round far behind ours: then it is
        # alive but lagging, and waiting a round timeout for it each time would stall us while it catches up
        # (after a healed partition, by then hundreds of rounds behind, it never would).
        if envelope.round < 0 or envelope.round >= self._round - self.round_window:
            self.mark_up(envelope.sender)
        if envelope.tag == TAG_HELLO and envelope.round == HELLO_ROUND and self._round >= 0:
            now = time.monotonic()
            if now - self._welcomed.get(envelope.sender, -float("inf")) < WELCOME_INTERVAL_SECONDS:
                return self._drop("repeated hello", envelope)  # a hello flood earns one reply per interval
            self._welcomed[envelope.sender] = now
            self._welcome(envelope.sender)
            return
        if envelope.tag == TAG_WELCOME:  # the answer to our own hello, from a peer already running
            envelope.tag = TAG_HELLO
        if (envelope.round, envelope.tag) == (round, tag):
            kept = self._accept(envelope, specs, got)
        else:
            kept = self._park(envelope)
        # A message kept tells how far a peer got; a dropped one does not (one too far ahead moves latest_seen
        # only to the window's end, in _park), so a forged round cannot make a client skip to it.
        if kept and envelope.round >= 0:
            self.latest_seen[envelope.sender] = max(envelope.round, self.latest_seen.get(envelope.sender, -1))

    def mark_down(self, peer: PeerId, reason: str) -> None:
        """Stop waiting for `peer` until a message from it arrives; mixing goes on over the others."""
        if peer not in self.down:
            self.down.add(peer)
            self.stats.marked_down[peer] += 1
            # The first time is news; a peer out of step flips every round, which would flood the log.
            level = logging.WARNING if self.stats.marked_down[peer] == 1 else logging.DEBUG
            log.log(level, "agent %s: neighbour %s %s; going on without it until it is heard from again",
                    self.agent_id, peer, reason)

    def mark_up(self, peer: PeerId) -> None:
        if peer in self.down:
            self.down.discard(peer)
            level = logging.WARNING if self.stats.marked_down[peer] == 1 else logging.DEBUG
            log.log(level, "agent %s: neighbour %s is back", self.agent_id, peer)

    def _welcome(self, peer: PeerId) -> None:
        """A restarted neighbour said hello mid-run: tell it the round we are at so it can rejoin there."""
        self._send_all(HELLO_ROUND, TAG_WELCOME, {peer: {"round": torch.tensor([self._round])}})

    def _accept(self, envelope: Envelope, specs: dict, got: dict[PeerId, Envelope]) -> bool:
        peer = envelope.sender
        if peer not in specs:
            return self._drop("unexpected sender", envelope)
        if peer in got:
            return self._drop("duplicate", envelope)
        expected = specs[peer]
        if expected is not None:
            alternatives = expected if isinstance(expected, tuple) else (expected,)
            errors = []
            for spec in alternatives:
                try:
                    check_spec(envelope, spec)
                    break
                except WireError as exc:
                    errors.append(exc)
            else:
                return self._drop("unexpected tensors", envelope, str(errors[0]))
        self.stats.bytes_received += envelope.nbytes
        self.stats.received_by_tag[envelope.tag] += envelope.nbytes
        got[peer] = envelope
        return True

    def _park(self, envelope: Envelope) -> bool:
        """Keep a message for a later (round, tag); bounded per peer so unknown tags cannot pile up."""
        key, peer = (envelope.round, envelope.tag), envelope.sender
        if envelope.round < self._round or key in self._done:
            return self._drop("stale round", envelope)
        if envelope.round > self._round + self.round_window:
            # Its sender is past every round we will ask for soon, so we stop waiting for it there: a lagging
            # agent catches up with neighbours running ahead. But only to the window's end, so a forged round
            # 10**9 costs at most round_window + 1 rounds without that neighbour, not the rest of the run.
            horizon = self._round + self.round_window + 1
            self.latest_seen[peer] = max(horizon, self.latest_seen.get(peer, -1))
            return self._drop("round too far ahead", envelope)
        slot = self._buffer[key]
        if peer in slot:
            return self._drop("duplicate", envelope)
        if (self._parked[peer] >= MAX_PARKED_PER_PEER
                or self._parked_bytes[peer] + envelope.nbytes > PARKED_CAPS_PER_PEER * self.max_message_bytes):
            if not slot:
                del self._buffer[key]
            return self._drop("buffer full", envelope)
        slot[peer] = envelope
        self._parked[peer] += 1
        self._parked_bytes[peer] += envelope.nbytes
        return True

    def _unpark(self, key: tuple[int, str]) -> dict[PeerId, Envelope]:
        slot = self._buffer.pop(key, {})
        for peer, envelope in slot.items():
            self._parked[peer] -= 1
            self._parked_bytes[peer] -= envelope.nbytes
        return slot

    def parked(self) -> int:
        """Messages held for later rounds or tags (bounded by MAX_PARKED_PER_PEER per peer)."""
        return sum(self._parked.values())

    def _validate(self, identity: bytes, frames: Sequence[Buffer]) -> Envelope | None:
        """Decode and check one message; the one place where received float tensors are checked finite."""
        try:
            envelope = decode(frames, self.run_id, self.max_message_bytes)
            if identity != str(envelope.sender).encode():
                raise WireError("identity mismatch", "sender field does not match the connection identity")
            if envelope.sender not in self.peers:
                raise WireError("not a neighbour", f"sender {envelope.sender} is not a neighbour")
        except WireError as exc:
            self._drop(exc.reason, None, str(exc))
            return None
        bad = non_finite(envelope)
        if bad:  # a diverged or hostile neighbour: absent this round rather than poisoning our model
            self._drop("non-finite", envelope, f"NaN or infinity in {bad[:3]}")
            return None
        return envelope

    def _validate_handed(self, envelope: Envelope) -> Envelope | None:
        """A mate's hand-over: built in this process by a mate's exchange, so there are no bytes to decode and
        no name to doubt; what a sender got wrong is still refused as off a socket."""
        if envelope.sender not in self.mates:
            self._drop("not a neighbour", None, f"hand-over from {envelope.sender}, not a mate")
            return None
        size = sum(t.numel() * t.element_size() for t in envelope.tensors.values())
        if size > self.max_message_bytes:  # as between processes, so packing cannot change what gets through
            self._drop("too large", envelope, f"message of {size} bytes, cap is {self.max_message_bytes}")
            return None
        if envelope.non_finite:
            self._drop("non-finite", envelope, f"NaN or infinity in {envelope.non_finite[:3]}")
            return None
        for name, version in (envelope.versions or {}).items():
            if envelope.tensors[name]._version != version:  # a bug in the sender's algorithm, not a hostile peer
                raise RuntimeError(f"agent {envelope.sender} changed its tensor {name!r} of round {envelope.round} "
                                   f"({envelope.tag}) in place after sending it frozen; what is sent with "
                                   "frozen=True must never be written into (send a copy, or leave frozen unset)")
        return envelope

    def _drop(self, reason: str, envelope: Envelope | None, detail: str = "") -> bool:
        """Count a dropped message under a fixed reason; the first of each reason is logged at INFO."""
        reason = reason if reason in DROP_REASONS else "other"
        self.stats.dropped[reason] += 1
        origin = f" from {envelope.sender} (round {envelope.round}, {envelope.tag[:40]!r})" if envelope else ""
        level = logging.DEBUG if reason in self._drop_logged else logging.INFO
        self._drop_logged.add(reason)
        log.log(level, "agent %s dropped a message%s: %s%s", self.agent_id, origin, reason,
                f" ({detail[:200]})" if detail and detail != reason else "")
        return False


class InMemoryHub:
    """Mailboxes of all agents of one process: the `--simulate` network."""

    def __init__(self) -> None:
        self.mailboxes: dict[PeerId, queue.Queue] = {}

    def mailbox(self, agent_id: PeerId) -> queue.Queue:
        """Created once, atomically: with a lazy defaultdict two threads could each create one, and a
        message put into the losing queue was never read (the receiver blocked on the other one)."""
        box = self.mailboxes.get(agent_id)
        return box if box is not None else self.mailboxes.setdefault(agent_id, queue.Queue())

    def endpoint(self, agent_id: PeerId, peers: Iterable[PeerId], run_id: str, round_timeout: float,
                 **kwargs) -> "InMemoryExchange":
        self.mailbox(agent_id)
        return InMemoryExchange(self, agent_id, peers, run_id, round_timeout, **kwargs)


class InMemoryExchange(MailboxExchange):
    """Frames are copied into the receiver's queue, then decoded and validated as off a socket."""

    def __init__(self, hub: InMemoryHub, agent_id: PeerId, peers: Iterable[PeerId], run_id: str,
                 round_timeout: float, **kwargs):
        super().__init__(agent_id, peers, run_id, round_timeout, **kwargs)
        self.hub = hub
        self.identity = str(agent_id).encode()

    def _send(self, peer: PeerId, frames: Sequence[Buffer]) -> bool:
        self.hub.mailbox(peer).put((self.identity, [bytes(f) for f in frames]))
        return True

    def _receive(self, timeout: float) -> tuple[bytes, Sequence[Buffer]] | None:
        if timeout > 0 and turn.socket_wait() is not None:
            raise RuntimeError("an in-memory exchange blocks its thread, and with it every agent of a hub (hub.py); "
                               "a hub's agents talk over ZmqExchange")
        try:
            return self.hub.mailbox(self.agent_id).get(timeout=timeout)
        except queue.Empty:
            return None
