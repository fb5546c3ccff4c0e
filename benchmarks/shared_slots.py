"""CPU per message between two processes of this host: tensor frames over a CurveZMQ socket against the same
frames through shared-memory slots (p2pfl/shared_slots.py) with only the header over that socket.

Two processes bounce a LeNet-5 vector (61,706 floats, 247 KB) back and forth over loopback TCP with CurveZMQ,
as two packed workers of a local run do; each copies what it receives into a tensor of its own. The CPU of both
processes (their ZeroMQ I/O threads included) over the messages is the figure; both ways run alternately in one
invocation, so their ratio holds on a machine whose pace moves.

    python benchmarks/shared_slots.py [--messages 3000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import socket
import statistics
import tempfile
import time
from pathlib import Path

import torch
import zmq

from p2pfl.shared_slots import SlotReader, SlotWriter

FLOATS = 61706  # LeNet-5's parameters


def free_ports(count: int) -> list[int]:
    """Ports free at once: every probe is held until all are bound, so no two get the same one."""
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def side(role: int, slots: bool, ports: list[int], keys: list[tuple[bytes, bytes]], folder: str, messages: int,
         results: mp.Queue) -> None:
    torch.set_num_threads(1)
    context = zmq.Context()
    inbox, outbox = context.socket(zmq.ROUTER), context.socket(zmq.DEALER)
    public, secret = keys[role]
    inbox.curve_server, inbox.curve_publickey, inbox.curve_secretkey = True, public, secret
    outbox.curve_serverkey, outbox.curve_publickey, outbox.curve_secretkey = keys[1 - role][0], public, secret
    inbox.bind(f"tcp://127.0.0.1:{ports[role]}")
    outbox.connect(f"tcp://127.0.0.1:{ports[1 - role]}")
    writer = SlotWriter(Path(folder) / f"{role}-{1 - role}")
    reader = SlotReader(Path(folder) / f"{1 - role}-{role}", max_bytes=2**26)
    payload, received = torch.randn(FLOATS), torch.empty(FLOATS)
    frame = memoryview(payload.numpy()).cast("B")
    header = b"h" * 120  # about the size of a real header

    def send() -> None:
        descriptor = writer.put([frame]) if slots else None
        outbox.send_multipart([b"", descriptor, header] if descriptor else [header, frame], copy=True)

    def receive() -> None:
        parts = inbox.recv_multipart(copy=False)
        data = reader.take(parts[2].buffer)[0] if slots else parts[2].buffer
        received.copy_(torch.frombuffer(data, dtype=torch.float32))

    if role == 0:  # both ends connected, and the first slot file made, before the clock starts
        send()
        receive()
    else:
        receive()
        send()
    started_cpu, started = os.times(), time.perf_counter()
    for _ in range(messages):
        if role == 0:
            send()
            receive()
        else:
            receive()
            send()
    ended_cpu = os.times()
    results.put((role, ended_cpu.user + ended_cpu.system - started_cpu.user - started_cpu.system,
                 time.perf_counter() - started))
    time.sleep(0.3)  # the last message leaves before the sockets close
    writer.close()
    reader.close()
    context.destroy(linger=0)


def measure(slots: bool, messages: int) -> tuple[float, float]:
    """(µs of CPU per message, both processes; µs of wall time per message)."""
    keys = [zmq.curve_keypair(), zmq.curve_keypair()]
    ports = free_ports(2)
    results: mp.Queue = mp.Queue()
    with tempfile.TemporaryDirectory(prefix="p2pfl-slots-", dir="/dev/shm") as folder:
        processes = [mp.Process(target=side, args=(role, slots, ports, keys, folder, messages, results))
                     for role in (0, 1)]
        for process in processes:
            process.start()
        got = [results.get(timeout=300) for _ in processes]
        for process in processes:
            process.join(30)
    sent = 2 * messages
    return sum(cpu for _, cpu, _ in got) / sent * 1e6, max(wall for _, _, wall in got) / sent * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    mp.set_start_method("fork")
    ratios = []
    for repeat in range(args.repeats):
        order = (False, True) if repeat % 2 == 0 else (True, False)
        figures = {slots: measure(slots, args.messages) for slots in order}
        (socket_cpu, socket_wall), (slot_cpu, slot_wall) = figures[False], figures[True]
        ratios.append(slot_cpu / socket_cpu)
        print(f"repeat {repeat}: frames over the socket {socket_cpu:.0f} µs of CPU per message ({socket_wall:.0f} "
              f"wall), through slots {slot_cpu:.0f} ({slot_wall:.0f} wall): ratio {ratios[-1]:.2f}", flush=True)
    print(f"slots / socket, CPU per message: median {statistics.median(ratios):.2f} "
          f"({min(ratios):.2f}-{max(ratios):.2f}, {len(ratios)} pairs)")


if __name__ == "__main__":
    main()
