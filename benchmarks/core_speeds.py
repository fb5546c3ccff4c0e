"""Do the cores of this machine run at one speed? And do workers that take turns on them (core_rotation.py)?

One process per usable core runs the same pure-Python loop for `--seconds`, first each pinned to a core of its
own, then moved over the cores by `p2pfl.agents.core_rotation.CoreRotation` as a local run's workers are. For
windows of 0.5 and 2 s it prints how far apart the processes' speeds were: the mean over windows of
|log(fastest / slowest)|, as a percentage, and the largest such ratio. A synchronous gossip run goes at the pace of its slowest
worker each round, so that spread is what its other workers wait (`benchmarks/round_cpu.py`'s hub idle).

    python benchmarks/core_speeds.py [--seconds 12] [--repeats 2]
"""

from __future__ import annotations

import argparse
import bisect
import math
import multiprocessing
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from p2pfl.agents.core_rotation import CoreRotation, pin, usable_cores  # noqa: E402

LOOP = 30_000  # additions per timestamp: about 1 ms of a core here


def spin(start: float, seconds: float, stamps) -> None:
    """Count loops until start + seconds, a timestamp after each, sent back at the end."""
    while time.time() < start:
        time.sleep(0.001)
    end, mine = start + seconds, []
    while (now := time.time()) < end:
        total = 0
        for i in range(LOOP):
            total += i
        mine.append(now)
    stamps.send(mine)


def spreads(series: list[list[float]], window: float) -> tuple[float, float] | None:
    """Mean over windows of |log(fastest / slowest)| (%), and the largest fastest / slowest; None when the
    processes did not all run through one whole window."""
    begin = max(s[0] for s in series)
    end = min(s[-1] for s in series)
    logs, worst = [], 1.0
    for k in range(int((end - begin) / window)):
        lo, hi = begin + k * window, begin + (k + 1) * window
        counts = [bisect.bisect(s, hi) - bisect.bisect(s, lo) for s in series]
        if min(counts) == 0:
            continue
        logs.append(math.log(max(counts) / min(counts)))
        worst = max(worst, max(counts) / min(counts))
    return (100 * statistics.mean(logs), worst) if logs else None


def cells(spread: tuple[float, float] | None) -> str:
    return "n/a | n/a" if spread is None else f"{spread[0]:.1f}% | {spread[1]:.2f}x"


def measure(cores: list[int], seconds: float, rotate: bool) -> list[list[float]]:
    context = multiprocessing.get_context("fork")
    start = time.time() + 0.5
    pipes = [context.Pipe(duplex=False) for _ in cores]
    processes = [context.Process(target=spin, args=(start, seconds, child)) for _, child in pipes]
    for process in processes:
        process.start()
    rotation = None
    if rotate:
        rotation = CoreRotation([p.pid for p in processes], cores).start()
    else:
        for core, process in zip(cores, processes):
            pin(process.pid, [core])
    series = [parent.recv() for parent, _ in pipes]
    if rotation is not None:
        rotation.stop()
    for process in processes:
        process.join()
    return series


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    cores = usable_cores()
    if len(cores) < 2:
        raise SystemExit("core_speeds.py needs at least two usable cores")
    print(f"{len(cores)} processes, one per core {cores}, {args.seconds:g} s each way, {args.repeats} times, "
          f"alternating ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})")
    print("| processes | spread, 0.5 s windows | largest | spread, 2 s windows | largest |")
    print("| --- | --- | --- | --- | --- |")
    for repeat in range(args.repeats):
        for rotate in ((False, True) if repeat % 2 == 0 else (True, False)):
            series = measure(cores, args.seconds, rotate)
            print(f"| {'taking turns (core_rotation.py)' if rotate else 'pinned, one per core'} | "
                  f"{cells(spreads(series, 0.5))} | {cells(spreads(series, 2.0))} |", flush=True)


if __name__ == "__main__":
    main()
