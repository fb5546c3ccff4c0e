"""Copied against zero-copy ZeroMQ sends of one LeNet-5 vector (247 KB), over inproc:// (packed mates) and
loopback TCP (workers), side by side: wall and CPU time per message sent and received, and their ratio.

pyzmq's zero-copy send hands libzmq the tensor's memory and frees it later from a Python thread of its
own, which then competes for the GIL with the agents; a copy costs a memcpy. transport.py copies.

    python benchmarks/zmq_copy.py [--messages 2000] [--size 61706]
"""

from __future__ import annotations

import argparse
import time

import torch
import zmq


def per_message(send, receive, messages: int) -> tuple[float, float]:
    """(wall, CPU) seconds per message sent and received."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(messages):
        send()
        receive()
    return (time.perf_counter() - wall) / messages, (time.process_time() - cpu) / messages


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--size", type=int, default=61706, help="floats per message (LeNet-5's parameters)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    payload, header = memoryview(torch.randn(args.size).numpy()), b"h" * 100
    context = zmq.Context()
    pull, push = context.socket(zmq.PULL), context.socket(zmq.PUSH)
    pull.bind("inproc://zmq-copy")
    push.connect("inproc://zmq-copy")
    router, dealer = context.socket(zmq.ROUTER), context.socket(zmq.DEALER)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    dealer.connect(f"tcp://127.0.0.1:{port}")
    links = {"inproc": (push, pull), "tcp": (dealer, router)}
    try:
        for name, (sender, receiver) in links.items():
            figures = {}
            for copy in (True, False):
                figures[copy] = per_message(lambda: sender.send_multipart([header, payload], copy=copy),
                                            lambda: receiver.recv_multipart(copy=False), args.messages)
            (cw, cc), (zw, zc) = figures[True], figures[False]
            print(f"{name:6s} copied {cw * 1e6:6.1f} us wall {cc * 1e6:6.1f} us CPU | zero-copy {zw * 1e6:6.1f} us "
                  f"wall {zc * 1e6:6.1f} us CPU | zero-copy / copied: {zw / cw:.2f} wall, {zc / cc:.2f} CPU", flush=True)
    finally:
        for socket in (pull, push, router, dealer):
            socket.close(linger=0)
        context.term()


if __name__ == "__main__":
    main()
