"""ZeroMQ transport: one ROUTER inbox per agent, one DEALER per neighbour (identity = agent id), one PUSH per mate.

Neighbours packed in the same process (mates) do not send each other bytes: a mate's message is handed over
as tensors (one copy of each payload, shared by the mates it goes to) into a queue of the receiving agent
(ProcessLinks.queue), and an empty message over inproc:// rings the receiver's doorbell, a PULL of its own
that its poll waits on beside the ROUTER. No encoding, no decoding, no TCP, no encryption and no I/O thread
in between; the receiver still checks the tensors' size, names, dtypes, shapes and finiteness as off a socket.
Only code in this process can reach those queues and that inproc endpoint, so the sender a hand-over names is
trusted, as CURVE's key is for everyone else, and no TCP peer can take a mate's name.

Neighbours in other processes of this host (loopback or ipc:// addresses at both ends) get the tensor frames
of a large message through a shared-memory slot (shared_slots.py) and only its header, with the slot's
descriptor: message [b"", descriptor, header], which no header-first message can be. That message, and a small
one whole, goes over a Unix socket of the same private folder (host_channel.py), so that neither side's ZeroMQ
I/O thread has to wake for it; over the ZeroMQ link only when the channel cannot take it at once.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import zmq
from zmq.utils.monitor import recv_monitor_message

from p2pfl import turn
from p2pfl.errors import UserError, WireError
from p2pfl.exchange import MailboxExchange, PeerId
from p2pfl.host_channel import ChannelInbox, ChannelSender, fits
from p2pfl.security import AgentAuthenticator, CurveKeys, is_loopback, secure_dealer
from p2pfl.shared_slots import SlotReader, SlotWriter, shared_folder, slot_path
from p2pfl.wire import Buffer, Envelope

log = logging.getLogger("p2pfl.transport")

HEARTBEAT_IVL_MS = 1000
HEARTBEAT_TIMEOUT_MS = 5000
LINGER_MS = 2000  # long enough to flush the last round to live peers, short enough to exit if they died
SEND_HWM = 64
# Mates' hand-overs taken in a row before the sockets are looked at again, so neither can starve the other. A
# look at the sockets is a system call (a poll) and a hand-over is taken without one: a torus agent's round,
# three or four hand-overs, takes them all and then looks once, where alternating looked at every other one.
HANDED_STREAK = 8
IPC_PREFIX = "ipc://"


def on_this_host(address: str) -> bool:
    return address.startswith(IPC_PREFIX) or is_loopback(address)


def ensure_socket_folder(address: str) -> None:
    """Before binding an ipc:// address: its folder, private (0700), so a resumed run finds it after the first
    run removed it."""
    if address.startswith(IPC_PREFIX):
        Path(address[len(IPC_PREFIX):]).parent.mkdir(mode=0o700, parents=True, exist_ok=True)


class ProcessLinks:
    """The ZeroMQ side of one process hosting agents: one context (so one I/O thread, however many agents), its
    one ZAP handler, and the ids of the agents it hosts, whose links to each other go over inproc://."""

    def __init__(self, run_id: str, mates: Iterable[PeerId] = ()):
        self.run_id = run_id
        self.mates = frozenset(mates)
        self.context = zmq.Context()
        self._authenticator: AgentAuthenticator | None = None
        self._lock = threading.Lock()
        self._queues: dict[tuple[PeerId, PeerId], deque[Envelope]] = {}

    def inproc(self, agent: PeerId) -> str:
        return f"inproc://p2pfl-{self.run_id}-{agent}"

    def queue(self, receiver: PeerId, sender: PeerId) -> deque[Envelope]:
        """The hand-overs from `sender` to `receiver`, oldest first; the same deque for both ends, whichever
        asks first (deque's append and popleft are atomic, so the two agents' threads need no lock)."""
        with self._lock:
            return self._queues.setdefault((receiver, sender), deque())

    def token(self, agent: PeerId) -> tuple[int, PeerId]:
        """What `agent` waits under in a hub (Hub.ring), the same for every mate that hands it a message."""
        return id(self), agent

    def authenticator(self) -> AgentAuthenticator:
        with self._lock:  # agent threads of a packed worker build their exchanges at once
            if self._authenticator is None:
                self._authenticator = AgentAuthenticator(self.context)
                self._authenticator.start()
            return self._authenticator

    def close(self) -> None:
        """Once every exchange on it is closed."""
        if self._authenticator is not None:
            self._authenticator.stop()
        self.context.term()


class ZmqExchange(MailboxExchange):
    def __init__(self, agent_id: PeerId, bind: str, neighbours: Mapping[PeerId, str], run_id: str,
                 round_timeout: float, curve: CurveKeys | None = None, links: ProcessLinks | None = None,
                 shared_memory: bool = False, host_channel: bool = True, **kwargs):
        """`links`: the process's shared context when agents are packed (mates' links then go over inproc);
        without it the exchange has a context of its own. `shared_memory`: large tensor frames to neighbours
        in other processes of this host go through shared-memory slots, and with `host_channel` their messages over
        Unix sockets (host_channel.py)."""
        super().__init__(agent_id, neighbours.keys(), run_id, round_timeout, **kwargs)
        self.owns_links = links is None
        self.links = links = links or ProcessLinks(run_id)
        self.context = links.context
        self.curve = curve
        self.mates = frozenset(links.mates & set(neighbours))
        self._handed_in = [links.queue(agent_id, peer) for peer in sorted(self.mates)]
        self._handed_out = {peer: links.queue(peer, agent_id) for peer in self.mates}
        self._tokens = {peer: links.token(peer) for peer in self.mates}  # what each mate waits under in a hub
        self.identity = identity = str(agent_id).encode()
        self.inbox = self.context.socket(zmq.ROUTER)
        self.mate_inbox: zmq.Socket | None = None
        self.senders: dict[PeerId, zmq.Socket] = {}  # a DEALER per TCP neighbour, a PUSH per mate
        self.monitors: dict[zmq.Socket, PeerId] = {}
        self._slot_writers: dict[PeerId, SlotWriter] = {}
        self._slot_readers: dict[bytes, SlotReader] = {}  # by the identity a neighbour's messages arrive with
        self._slot_folder: Path | None = None
        self._channels: dict[PeerId, ChannelSender] = {}
        self._channel_inbox: ChannelInbox | None = None
        self.poller = zmq.Poller()
        self.poller.register(self.inbox, zmq.POLLIN)
        self._handed_streak = 0  # hand-overs taken since the sockets were last looked at
        try:
            self.inbox.setsockopt(zmq.LINGER, 0)
            # A neighbour that reconnects after a cut link (its old connection never saw a FIN) must get
            # its routing id back, hence ROUTER_HANDOVER. Who really sent a message is decided by the
            # CURVE key (security.mode curve), not by this self-chosen routing id. Heartbeats run on the
            # dealers only: libzmq 4.3.5 aborts (stream_engine_base.cpp:310) with them on this ROUTER
            # when a cut link heals.
            self.inbox.setsockopt(zmq.ROUTER_HANDOVER, 1)
            # Per frame: an oversized frame cuts the link before it is stored. libzmq hands a multipart message
            # over only once all its frames arrived, so one hostile message of many frames under this size can
            # still cost frames x cap for a moment; the exchange then drops it whole (wire.decode caps the sum).
            self.inbox.setsockopt(zmq.MAXMSGSIZE, self.max_message_bytes + 1)
            if curve is not None:
                links.authenticator().admit(agent_id, curve, self.inbox)
            if agent_id in links.mates:
                self.mate_inbox = self.context.socket(zmq.PULL)
                self.mate_inbox.setsockopt(zmq.LINGER, 0)
                self.mate_inbox.bind(links.inproc(agent_id))
                self.poller.register(self.mate_inbox, zmq.POLLIN)
            try:
                ensure_socket_folder(bind)
                self.inbox.bind(bind)
            except zmq.ZMQError as exc:
                if exc.errno == zmq.EADDRINUSE:
                    raise UserError(f"agent {agent_id}: address {bind} is already in use; stop what holds it or "
                                    "choose another network.base_port / address") from None
                raise UserError(f"agent {agent_id}: cannot bind {bind}: {exc.strerror}; check the address") from None
            for peer in sorted(self.mates):
                push = self.context.socket(zmq.PUSH)
                push.setsockopt(zmq.LINGER, LINGER_MS)
                push.setsockopt(zmq.SNDHWM, SEND_HWM)
                push.connect(links.inproc(peer))  # inproc: no link events, a mate ends with this process
                self.senders[peer] = push
            for peer, address in sorted(neighbours.items()):
                if peer in self.mates:
                    continue
                dealer = self.context.socket(zmq.DEALER)
                if curve is None:  # plain: the routing id is the only name a message has
                    dealer.setsockopt(zmq.IDENTITY, identity)
                # With CURVE the key names the sender and libzmq gives the link a routing id starting with a
                # zero byte, which no peer may claim: nobody can take this link over by announcing our id.
                dealer.setsockopt(zmq.LINGER, LINGER_MS)
                dealer.setsockopt(zmq.SNDHWM, SEND_HWM)
                dealer.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_IVL_MS)
                dealer.setsockopt(zmq.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_MS)
                if curve is not None:
                    secure_dealer(dealer, curve, peer)
                dealer.connect(address)  # queues until the peer is up: start order does not matter
                self.senders[peer] = dealer
                # Link events: a dead peer's TCP close, or a heartbeat timeout on a cut link, marks it down.
                monitor = dealer.get_monitor_socket(zmq.EVENT_DISCONNECTED)
                self.monitors[monitor] = peer
                self.poller.register(monitor, zmq.POLLIN)
        except BaseException:
            self.close()
            raise
        self._poll_sockets = [socket for socket, _ in self.poller.sockets]  # what a hub's wait watches, every wait
        local = [peer for peer, address in neighbours.items() if peer not in self.mates and on_this_host(address)]
        self._slot_folder = folder = shared_folder(run_id) if shared_memory and local and on_this_host(bind) else None
        for peer in local if folder is not None else ():
            self._slot_writers[peer] = SlotWriter(slot_path(folder, agent_id, peer))
            self._slot_readers[str(peer).encode()] = SlotReader(slot_path(folder, peer, agent_id),
                                                                self.max_message_bytes)
        if host_channel and folder is not None and fits(folder, [agent_id, *local]):
            try:
                self._channel_inbox = ChannelInbox(folder, agent_id, local)
            except OSError as exc:
                log.warning("agent %s: no Unix socket channel (%s): headers go over ZeroMQ", agent_id, exc)
            else:
                self.poller.register(self._channel_inbox.fileno(), zmq.POLLIN)  # a poll reports descriptors
                self._poll_sockets.append(self._channel_inbox.fileno())
                self._channels = {peer: ChannelSender(folder, agent_id, peer) for peer in local}

    def _send(self, peer: PeerId, frames: Sequence[Buffer]) -> bool:
        writer = self._slot_writers.get(peer)
        descriptor = writer.put(frames[1:]) if writer is not None else None
        if descriptor is not None:
            frames = [b"", descriptor, frames[0]]
        channel = self._channels.get(peer)
        if channel is not None and channel.send(frames):
            return True
        try:
            # Copied into libzmq's own message. Zero-copy is no cheaper: pyzmq frees each such frame from a Python
            # thread of its own, which takes the GIL from the agents (benchmarks/zmq_copy.py, a 247 KB frame sent
            # and received on this 2-core CPU: zero-copy took 0.98-1.03x the copy's wall time over TCP).
            self.senders[peer].send_multipart(frames, flags=zmq.NOBLOCK, copy=True)
            return True
        except zmq.Again:  # the peer's queue is full: it is gone or far behind
            log.warning("agent %s: send queue to %s is full, message dropped", self.agent_id, peer)
            if descriptor is not None:
                writer.cancel(descriptor)
            return False

    def _validate(self, identity: bytes, frames: Sequence[Buffer]) -> Envelope | None:
        if frames and len(frames[0]) == 0:  # [b"", descriptor, header]: the tensor frames wait in a slot
            reader = self._slot_readers.get(identity)
            try:
                if reader is None:
                    raise WireError("shared memory", "from a peer with no shared memory on this host")
                if len(frames) != 3:
                    raise WireError("shared memory", f"{len(frames)} frames, not a descriptor and a header")
                frames = [frames[2], *reader.take(frames[1])]
            except WireError as exc:
                self._drop(exc.reason, None, str(exc))
                return None
        return super()._validate(identity, frames)

    def _hand_over(self, peer: PeerId, envelope: Envelope) -> bool:
        queue = self._handed_out[peer]
        if len(queue) >= SEND_HWM:  # as a socket's high-water mark: the mate has ended or is far behind
            log.warning("agent %s: send queue to %s is full, message dropped", self.agent_id, peer)
            return False
        queue.append(envelope)
        ring = turn.mate_ring()
        if ring is not None and ring(self._tokens[peer]):  # a greenlet of this hub: woken without a system call
            return True
        try:
            self.senders[peer].send(b"", flags=zmq.NOBLOCK)  # the doorbell
        except zmq.Again:  # that many rings unread: the mate wakes up anyway
            pass
        return True

    def _take_handed(self) -> Envelope | None:
        for queue in self._handed_in:
            if queue:
                return queue.popleft()
        return None

    def _receive(self, timeout: float) -> tuple[bytes, Sequence[Buffer]] | Envelope | None:
        if self._handed_streak < HANDED_STREAK and (handed := self._take_handed()) is not None:
            self._handed_streak += 1  # its ring, if it came over inproc, is read at the next look at the sockets
            return handed
        self._handed_streak = 0
        if any(self._handed_in):  # a hand-over waits (its ring already read): only look at the sockets
            timeout = 0
        wait_readable = turn.socket_wait()
        if wait_readable is not None and timeout > 0:  # a hub's agent (hub.py): its mates run while it waits
            wait_readable(self._poll_sockets, timeout, self.links.token(self.agent_id))
            timeout = 0
        ready = dict(self.poller.poll(max(0, int(timeout * 1000))))
        for monitor, peer in self.monitors.items():
            if monitor in ready:
                event = recv_monitor_message(monitor)
                if event["event"] == zmq.EVENT_DISCONNECTED:
                    self.mark_down(peer, "closed its link")
        if self.inbox in ready:
            parts = self.inbox.recv_multipart(copy=False)
            # With CURVE a TCP peer is the agent its authenticated key belongs to, not its self-chosen routing id.
            identity = parts[1].get("User-Id").encode() if self.curve is not None and len(parts) > 1 \
                else bytes(parts[0].buffer)
            return identity, [part.buffer for part in parts[1:]]
        if self._channel_inbox is not None and (item := self._channel_message(ready)) is not None:
            return item
        if self.mate_inbox is not None and self.mate_inbox in ready:
            while True:  # every ring read: each hand-over is in its queue before its ring is sent
                try:
                    self.mate_inbox.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
        return self._take_handed()

    def _channel_message(self, ready: dict) -> tuple[bytes, Sequence[Buffer]] | None:
        """One message from a same-host neighbour's channel connection that `ready` says is readable; a new
        connection is accepted (and polled from then on) first."""
        channel = self._channel_inbox
        if channel.fileno() in ready:
            for fd in channel.accept():
                self.poller.register(fd, zmq.POLLIN)
                self._poll_sockets.append(fd)
        for fd in [fd for fd in channel.links if fd in ready]:
            try:
                item = channel.receive(fd)
            except WireError as exc:
                self._drop(exc.reason, None, str(exc))
                continue
            if fd not in channel.links:  # it ended: closed, so its number may be reused
                self.poller.unregister(fd)
                self._poll_sockets.remove(fd)
            if item is not None:
                return item
        return None

    def close(self) -> None:
        # Monitors off before their pairs close: libzmq reports a link event with a blocking send to the
        # monitor's pair, so a link breaking while its dealer still lingers (a neighbour ending at the same
        # moment) would block the I/O thread for good, and with it every mate's link in a packed worker.
        for peer in self.monitors.values():
            if not self.senders[peer].closed:  # a second close() must not fail
                self.senders[peer].disable_monitor()
        for monitor in self.monitors:
            monitor.close(linger=0)
        for sender in self.senders.values():
            sender.close()
        self.inbox.close(linger=0)
        for side in [*self._slot_writers.values(), *self._slot_readers.values(), *self._channels.values()]:
            side.close()
        if self._channel_inbox is not None:
            self._channel_inbox.close()
        if self._slot_folder is not None:
            try:
                self._slot_folder.rmdir()  # the run's last agent to end on this host
            except OSError:
                pass
        if self.mate_inbox is not None:
            self.mate_inbox.close(linger=0)
        if self.owns_links:
            self.links.close()


def check_ports_free(config) -> None:
    """Before launching locally: fail fast, in one line, on a port something else holds."""
    import socket
    from urllib.parse import urlparse

    for agent in range(config.agents):
        address = urlparse(config.address(agent))
        if address.scheme != "tcp" or address.hostname not in ("127.0.0.1", "localhost", "0.0.0.0", "*"):
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1" if address.hostname in ("localhost", "*") else address.hostname,
                            address.port))
            except OSError:
                raise UserError(f"port {address.port} (agent {agent}) is already in use; stop what holds it or "
                                "choose another --base-port") from None
