"""Messages between agent processes of one host over Unix sockets, past ZeroMQ's I/O threads.

Through ZeroMQ, every message between two packed workers wakes the sender's I/O thread (to encrypt it and write it
to TCP) and the receiver's (to read and decrypt it), on a box whose cores the agents already keep busy: on the
8-agent ring those threads took 78 µs of CPU per agent and round, and 2 with this channel (`python
benchmarks/round_cpu.py --scheduler zmq-headers`, against `--scheduler greenlets`). Here a same-host neighbour's messages (a slot descriptor with its header,
shared_slots.py, or a small message whole) go as one SOCK_SEQPACKET message each: one system call to send, one to
receive, no thread in between, in order, as over one socket.

Both ends are files of the run's private folder (0700, this user's, checked, as for the slot files): a receiver
listens at `{receiver}.rx`, a sender binds `{sender}-{receiver}.tx` before it connects, and the receiver takes that
name, with the connecting process's uid, as who sends. Only this user's processes can bind or connect there, and
only they can read the run's CurveZMQ keys, so the name says as much as CURVE's key does over TCP.

What the channel cannot take at once goes over the ZeroMQ link as before: no receiver listening (not up yet, gone,
or in another mount namespace), a full queue (the receiver is far behind), a message larger than CHANNEL_MAX_BYTES.
Nothing waits and nothing is lost; a message sent over ZeroMQ while older ones still wait in the channel can
overtake them, which the exchange's end-of-round drain takes in anyway (exchange._collect).
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import struct
import time
from pathlib import Path
from typing import Iterable, Sequence

from p2pfl import run_files
from p2pfl.constants import MAX_TENSORS_PER_MESSAGE
from p2pfl.errors import WireError
from p2pfl.wire import Buffer

log = logging.getLogger("p2pfl.host_channel")

CHANNEL_MAX_BYTES = 128 * 1024  # larger messages (a tensor with no free slot) go over ZeroMQ: a socket's queue
# holds about 208 KiB (net.core.wmem_default), and a message must fit in it whole
MAX_FRAMES = MAX_TENSORS_PER_MESSAGE + 3  # a descriptor and a header, or a header and its tensors
RETRY_SECONDS = 0.5  # between two tries to connect to a receiver that was not listening
MAX_PATH = 107  # sun_path, less its terminating zero
COUNT = struct.Struct("<H")
ERRORS_THAT_END_A_CONNECTION = (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.ECONNREFUSED)


def inbox_path(folder: Path, receiver: int) -> Path:
    return folder / f"{receiver}.rx"


def sender_path(folder: Path, sender: int, receiver: int) -> Path:
    return folder / f"{sender}-{receiver}.tx"


def fits(folder: Path, agents: Iterable[int]) -> bool:
    """Every socket path of these agents' links fits a Unix socket address (a long run id may not)."""
    longest = max((len(str(sender_path(folder, a, b))) for a in agents for b in agents), default=0)
    return longest <= MAX_PATH


def pack_prefix(frames: Sequence[Buffer]) -> bytes:
    """The frame count and each frame's length, before the frames themselves (sent gathered, not joined)."""
    return COUNT.pack(len(frames)) + struct.pack(f"<{len(frames)}I", *(len(frame) for frame in frames))


def unpack(message: Buffer) -> list[bytes]:
    """The frames of one channel message, each its own copy; WireError when the lengths do not add up."""
    view = memoryview(message)
    if len(view) < COUNT.size:
        raise WireError("shared memory", "channel message too short")
    (count,) = COUNT.unpack_from(view)
    start = COUNT.size + 4 * count
    if not 0 < count <= MAX_FRAMES or len(view) < start:
        raise WireError("shared memory", f"channel message of {count} frames")
    lengths = struct.unpack_from(f"<{count}I", view, COUNT.size)
    if start + sum(lengths) != len(view):
        raise WireError("shared memory", "channel message lengths do not add up")
    frames = []
    for length in lengths:
        frames.append(bytes(view[start:start + length]))
        start += length
    return frames


class ChannelSender:
    """One link's sending end: connected once the receiver listens, tried again every RETRY_SECONDS until then."""

    def __init__(self, folder: Path, sender: int, receiver: int):
        self.target = str(inbox_path(folder, receiver))
        self.own = str(sender_path(folder, sender, receiver))
        self._socket: socket.socket | None = None
        self._next_try = 0.0
        self.sent = 0  # messages that went through the channel

    def send(self, frames: Sequence[Buffer]) -> bool:
        """Send `frames` as one message, or return False: then they go over ZeroMQ."""
        if self._socket is None and not self._connect():
            return False
        if len(frames) > MAX_FRAMES or sum(len(frame) for frame in frames) > CHANNEL_MAX_BYTES:
            return False
        try:
            self._socket.sendmsg([pack_prefix(frames), *frames], [], socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
        except BlockingIOError:  # its queue is full: the receiver is behind
            return False
        except OSError as exc:
            if exc.errno in ERRORS_THAT_END_A_CONNECTION:  # the receiver is gone; a new one will listen again
                self._disconnect()
            elif exc.errno != errno.EMSGSIZE:
                log.debug("channel to %s: %s", self.target, exc)
            return False
        self.sent += 1
        return True

    def _connect(self) -> bool:
        now = time.monotonic()
        if now < self._next_try:
            return False
        self._next_try = now + RETRY_SECONDS
        link = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            link.setblocking(False)
            _unlink(self.own)  # left by an earlier incarnation of this agent
            link.bind(self.own)
            run_files.made(self.own)
            link.connect(self.target)
        except OSError:  # nobody listens there (yet), or its backlog is full
            link.close()
            _unlink(self.own)
            return False
        self._socket = link
        return True

    def _disconnect(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def close(self) -> None:
        self._disconnect()
        _unlink(self.own)


class ChannelInbox:
    """One agent's receiving end: a listening socket and a connection per neighbour that connected."""

    def __init__(self, folder: Path, receiver: int, senders: Iterable[int]):
        self.path = str(inbox_path(folder, receiver))
        self._names = {str(sender_path(folder, sender, receiver)): str(sender).encode() for sender in senders}
        self.links: dict[int, tuple[socket.socket, bytes]] = {}  # by descriptor (what a poll reports): who sends
        self._buffer = bytearray(CHANNEL_MAX_BYTES + 4096)  # a message larger than this was not ours: truncated, dropped
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.listener.setblocking(False)
            _unlink(self.path)  # left by an earlier incarnation of this agent
            self.listener.bind(self.path)
            run_files.made(self.path)
            self.listener.listen(len(self._names) + 8)
        except OSError:
            self.listener.close()
            raise

    def fileno(self) -> int:
        return self.listener.fileno()

    def accept(self) -> list[int]:
        """The connections waiting (their descriptors), each kept if its sender is a neighbour of this host and
        this user's."""
        accepted = []
        while True:
            try:
                link, name = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return accepted
            except OSError as exc:
                log.debug("channel %s: accept failed: %s", self.path, exc)
                return accepted
            identity = self._names.get(name) if isinstance(name, str) else None
            if identity is None or _peer_uid(link) != os.geteuid():
                log.info("channel %s: refused a connection from %r (not a neighbour's name)", self.path, name)
                link.close()
                continue
            link.setblocking(False)
            self.links[link.fileno()] = (link, identity)
            accepted.append(link.fileno())

    def receive(self, fd: int) -> tuple[bytes, list[bytes]] | None:
        """One message of connection `fd` as (who sent it, its frames); None when there is none or the connection
        ended (then it is closed and gone from `links`); WireError for a malformed one."""
        link, identity = self.links[fd]
        try:
            size = link.recv_into(self._buffer, len(self._buffer), socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError:
            size = 0
        if size == 0:  # the sender closed (a sequenced-packet socket never carries an empty message of ours)
            self.drop(fd)
            return None
        return identity, unpack(memoryview(self._buffer)[:size])

    def drop(self, fd: int) -> None:
        link, _ = self.links.pop(fd)
        link.close()

    def close(self) -> None:
        for fd in list(self.links):
            self.drop(fd)
        self.listener.close()
        _unlink(self.path)


def _peer_uid(link: socket.socket) -> int:
    try:
        return struct.unpack("3i", link.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))[1]
    except OSError:
        return -1


def _unlink(path: str) -> None:
    run_files.removed(path)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.debug("cannot remove %s: %s", path, exc)
