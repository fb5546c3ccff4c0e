"""Tensor frames between agent processes of one host through shared memory, the header still over the socket.

Between two packed workers on one machine, a 247 KB LeNet-5 message through a socket costs about three times
the CPU it costs through a slot: libzmq copies it, CurveZMQ encrypts and decrypts it, the kernel copies it twice
through loopback, and each side's I/O thread wakes for it (benchmarks/shared_slots.py: 285-290 against 88-97 µs
of both processes' CPU). Here the sender copies
the tensor frames into a slot of a file in /dev/shm that it alone writes and one receiver alone reads, and sends
the header with a short slot descriptor over the usual socket. Who sent a message is still the agent whose
CURVE key authenticated that header: the receiver opens the file it knows belongs to that sender and to itself
(never a path a message names), copies the frames out, frees the slot, and checks the frames as any off a
socket. The folder is the user's own (0700, checked), as the run's secret keys are the user's own files.

A sender that finds no free slot (its receiver is behind or gone) sends the frames over the socket as before:
nothing waits for a slot and nothing is lost. A slot left unread for RECLAIM_AFTER sends is taken back; its
generation, checked by the reader before and after copying, makes a late read of it a dropped message, never
a torn one. A receiver that never read a slot by then (it sees another /dev/shm: a container) loses the first
SLOTS messages of that link; the sender then sends it everything over the socket and says so.
"""

from __future__ import annotations

import logging
import mmap
import os
import stat
import struct
from pathlib import Path
from typing import Sequence

from p2pfl import run_files
from p2pfl.constants import MAX_TENSORS_PER_MESSAGE
from p2pfl.errors import WireError
from p2pfl.wire import Buffer

log = logging.getLogger("p2pfl.shared_slots")

SHM_ROOT = Path("/dev/shm")
MIN_BYTES = 64 * 1024  # smaller payloads go over the socket: their copies cost more than a slot saves
SLOTS = 4  # per sender and receiver; a synchronous round keeps at most two in use (the current one, the next)
RECLAIM_AFTER = 64  # sends since a slot was filled, after which an unread slot is taken back
MAGIC = b"p2pflshm"
FILE_HEADER = struct.Struct("<8sQQQ")  # magic, incarnation, slots, capacity of a slot
SLOT_HEADER = 64  # flag (1: filled, unread) at byte 0, generation (u64) at byte 8, frames from byte 64
PAGE = mmap.PAGESIZE
DESCRIPTOR = struct.Struct("<QQQQ")  # incarnation, slot, generation, frame count; then a u64 size per frame


def _folder(run_id: str) -> Path:
    return SHM_ROOT / f"p2pfl-{os.geteuid()}-{run_id}"


def shared_folder(run_id: str) -> Path | None:
    """This user's folder for the run's slot files, made private, or None where there is no /dev/shm or the
    folder is not this user's alone (then every frame goes over the sockets)."""
    if not SHM_ROOT.is_dir():
        return None
    folder = _folder(run_id)
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        info = os.lstat(folder)
    except OSError as exc:
        log.warning("no shared memory for this run (%s): tensors go over the sockets", exc)
        return None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o077:
        log.warning("%s is not a folder of this user's alone: tensors go over the sockets", folder)
        return None
    return folder


def remove_folder(run_id: str) -> None:
    """At the end of a run: the slot files of agents that could not remove their own (killed, crashed)."""
    folder = _folder(run_id)
    try:
        for path in folder.iterdir():
            path.unlink(missing_ok=True)
        folder.rmdir()
    except OSError:
        pass


def slot_path(folder: Path, sender: int, receiver: int) -> Path:
    return folder / f"{sender}-{receiver}"


def _slot_base(slot: int, capacity: int) -> int:
    return PAGE + slot * (SLOT_HEADER + capacity)


class SlotWriter:
    """The sender's side of one link: a file of SLOTS slots, made (again, bigger) when a payload needs it."""

    def __init__(self, path: Path, slots: int = SLOTS):
        self.path = path
        self.slots = slots
        self._map: mmap.mmap | None = None
        self._capacity = 0
        self._incarnation = 0
        self._generation = 0
        self._sends = 0
        self._filled_at = [0] * slots  # self._sends when each slot was last filled
        self._read_once = False  # seen a slot we filled freed: the receiver reads this file
        self.disabled = False

    def put(self, frames: Sequence[Buffer]) -> bytes | None:
        """Copy `frames` into a free slot and return its descriptor, or None: send them over the socket."""
        self._sends += 1
        if self.disabled or len(frames) > MAX_TENSORS_PER_MESSAGE:
            return None
        sizes = [len(frame) for frame in frames]
        total = sum(sizes)
        if total < MIN_BYTES:
            return None
        if total > self._capacity and not self._make(total):
            return None
        slot = self._free_slot()
        if slot is None:
            return None
        mapped, base = self._map, _slot_base(slot, self._capacity)
        struct.pack_into("<Q", mapped, base + 8, 0)  # generation 0: being written (a late reader drops it)
        offset = base + SLOT_HEADER
        for frame, size in zip(frames, sizes):
            mapped[offset:offset + size] = frame
            offset += size
        self._generation += 1
        struct.pack_into("<Q", mapped, base + 8, self._generation)
        mapped[base] = 1
        self._filled_at[slot] = self._sends
        return DESCRIPTOR.pack(self._incarnation, slot, self._generation, len(sizes)) + \
            struct.pack(f"<{len(sizes)}Q", *sizes)

    def cancel(self, descriptor: bytes) -> None:
        """The socket refused the descriptor's message: its slot is free again."""
        _, slot, generation, _ = DESCRIPTOR.unpack_from(descriptor)
        base = _slot_base(slot, self._capacity)
        if self._map is not None and struct.unpack_from("<Q", self._map, base + 8)[0] == generation:
            self._map[base] = 0
            self._filled_at[slot] = 0  # freed by us, not read: no sign that the receiver reads this file

    def _free_slot(self) -> int | None:
        """The first free slot, not the next in turn: a receiver that keeps pace frees a slot within a round or
        two, so a link writes and reads the same one or two slots (247 KB each with LeNet-5) over and over,
        still in the caches, where taking the slots in turn cycled through all SLOTS of them: 1 MB per link,
        16 MB of the caches for the cross-worker links of a 16-agent torus."""
        for slot in range(self.slots):
            free = self._map[_slot_base(slot, self._capacity)] == 0
            self._read_once = self._read_once or (free and self._filled_at[slot] > 0)
            if free or self._sends - self._filled_at[slot] > RECLAIM_AFTER:
                if not free and not self._read_once:  # a receiver that cannot see our files (another /dev/shm)
                    self.disabled = True
                    log.warning("%s: no slot was ever read; every later message goes over the socket (agents "
                                "on this host with separate /dev/shm, containers? network.shared_memory: "
                                "false spares their first messages)", self.path)
                    return None
                return slot
        return None

    def _make(self, total: int) -> bool:
        """A new file whose slots hold `total` bytes, put in place of the old one at once; not while a slot of
        the old one waits to be read (its reader could no longer find it)."""
        if self._map is not None and any(self._map[_slot_base(slot, self._capacity)] for slot in range(self.slots)):
            return False
        capacity = -(-total // PAGE) * PAGE
        incarnation = int.from_bytes(os.urandom(8), "little") | 1
        temporary = self.path.with_name(f".{self.path.name}.{incarnation:x}")
        try:
            fd = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            try:
                os.ftruncate(fd, _slot_base(self.slots, capacity))
                mapped = mmap.mmap(fd, _slot_base(self.slots, capacity))
            finally:
                os.close(fd)
            FILE_HEADER.pack_into(mapped, 0, MAGIC, incarnation, self.slots, capacity)
            os.replace(temporary, self.path)
            run_files.made(self.path)
        except OSError as exc:
            temporary.unlink(missing_ok=True)
            log.warning("no shared memory slots at %s (%s): tensors go over the socket", self.path, exc)
            return False
        if self._map is not None:
            self._map.close()
        self._map, self._capacity, self._incarnation = mapped, capacity, incarnation
        self._filled_at = [0] * self.slots
        return True

    def close(self) -> None:
        run_files.removed(self.path)
        if self._map is not None:
            self._map.close()
            self._map = None
            try:
                with open(self.path, "rb") as file:
                    mine = FILE_HEADER.unpack(file.read(FILE_HEADER.size))[1]
            except (OSError, struct.error):
                return
            if mine == self._incarnation:  # not a newer sender's with the same id (a restarted agent)
                self.path.unlink(missing_ok=True)


class SlotReader:
    """The receiver's side of one link: maps the sender's file (again when the sender made a new one)."""

    def __init__(self, path: Path, max_bytes: int):
        self.path = path
        self.max_bytes = max_bytes
        self._map: mmap.mmap | None = None
        self._incarnation = 0
        self._slots = 0
        self._capacity = 0

    def take(self, descriptor: Buffer) -> list[bytearray]:
        """The frames a descriptor points at, copied out, and its slot freed; WireError if it points nowhere
        valid (a forged, stale or reclaimed descriptor)."""
        descriptor = bytes(descriptor)
        if len(descriptor) < DESCRIPTOR.size:
            raise WireError("shared memory", "descriptor too short")
        incarnation, slot, generation, count = DESCRIPTOR.unpack_from(descriptor)
        if count > MAX_TENSORS_PER_MESSAGE or len(descriptor) != DESCRIPTOR.size + 8 * count:
            raise WireError("shared memory", "malformed descriptor")
        sizes = struct.unpack_from(f"<{count}Q", descriptor, DESCRIPTOR.size)
        if incarnation != self._incarnation:
            self._open()
            if incarnation != self._incarnation:
                raise WireError("shared memory", "descriptor of another slot file")
        if slot >= self._slots or sum(sizes) > min(self._capacity, self.max_bytes):
            raise WireError("shared memory", "descriptor out of bounds")
        mapped, base = self._map, _slot_base(slot, self._capacity)
        if mapped[base] != 1 or generation == 0 or struct.unpack_from("<Q", mapped, base + 8)[0] != generation:
            raise WireError("shared memory", "slot not filled for this message (reused or never written)")
        view, offset, frames = memoryview(mapped), base + SLOT_HEADER, []
        try:
            for size in sizes:
                frames.append(bytearray(view[offset:offset + size]))
                offset += size
        finally:
            view.release()
        if struct.unpack_from("<Q", mapped, base + 8)[0] != generation:  # taken back while we copied
            raise WireError("shared memory", "slot reclaimed while read")
        mapped[base] = 0
        return frames

    def _open(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_NOFOLLOW)
        except OSError as exc:
            raise WireError("shared memory", f"no slot file: {exc.strerror}") from None
        try:
            info = os.fstat(fd)
            if info.st_uid != os.geteuid() or info.st_mode & 0o077 or info.st_size < PAGE:
                raise WireError("shared memory", "slot file not this user's alone")
            mapped = mmap.mmap(fd, info.st_size)
        finally:
            os.close(fd)
        magic, incarnation, slots, capacity = FILE_HEADER.unpack_from(mapped, 0)
        if magic != MAGIC or slots > 64 or _slot_base(slots, capacity) > info.st_size:
            mapped.close()
            raise WireError("shared memory", "not a slot file")
        if self._map is not None:
            self._map.close()
        self._map, self._incarnation, self._slots, self._capacity = mapped, incarnation, slots, capacity

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None
