"""How busy each agent process is while the rounds run: do the cores wait on each other?

A gossip run couples the workers (an agent waits for its neighbours' messages, some in the other worker);
its floor does not. If the gossip run's excess over the floor were waiting, the workers would be idle part of
the time; if it is CPU, they are as busy as in the floor. Each run is `p2pfl run` as `benchmarks/scale.py`
starts it; each second the agent processes' CPU (utime + stime in /proc/PID/stat) is read, and the fraction of
a core each used is taken over the middle half of the rounds (from the time every agent wrote its
round 0 to the run's end: past start-up, before the last evaluations).

    python benchmarks/worker_busy.py [--agents 16] [--topology torus] [--rounds 1500]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import scale  # noqa: E402  (benchmarks/scale.py: the same launch, the same settings)

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    fields = scale.stat_fields(Path(f"/proc/{pid}/stat"))
    return None if fields is None else (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def busy(args, algorithm: str, period: float) -> list[float]:
    """Fraction of a core each agent process used over the middle half of one run, in pid order."""
    with tempfile.TemporaryDirectory(prefix="p2pfl-busy-") as tmp:
        launch = scale.Launch(args, args.agents, args.topology, algorithm, args.base_port, args.agents_per_process,
                              Path(tmp))
        launch.start()
        samples: list[tuple[float, dict[int, float]]] = []
        rounds_over = False
        try:
            while not launch.wait(period):
                if launch.watcher.startup is None or rounds_over:  # not every agent in its rounds yet, or no more
                    continue
                cpu = {pid: seconds for pid in scale.our_agents(launch.marker)
                       if (seconds := cpu_seconds(pid)) is not None}
                # Once a process is gone (its agents finished; a loaded machine can keep the others' last rounds
                # and evaluations going for a while) the rounds are over: later readings would lack it.
                rounds_over = bool(samples) and not cpu.keys() >= samples[0][1].keys()
                if cpu and not rounds_over:
                    samples.append((time.monotonic(), cpu))
        finally:
            launch.kill()
        launch.result()  # raises if the run failed
    middle = samples[len(samples) // 4: 3 * len(samples) // 4 + 1]
    if len(middle) < 2:
        raise RuntimeError("the run was too short to sample; give it more rounds")
    (start, first), (end, last) = middle[0], middle[-1]
    return [(last[pid] - first[pid]) / (end - start) for pid in sorted(first.keys() & last.keys())]


def main(argv: list[str] | None = None) -> dict[str, list[float]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, default=16)
    parser.add_argument("--topology", default="torus")
    parser.add_argument("--rounds", type=int, default=1500)
    parser.add_argument("--model", default="lenet5")
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--agents-per-process", default=0, type=lambda v: v if v in scale.ENGINE_FLAGS else int(v))
    parser.add_argument("--base-port", type=int, default=34000)
    parser.add_argument("--period", type=float, default=1.0, help="seconds between two readings of /proc")
    args = parser.parse_args(argv)
    found = {}
    for algorithm in ("dsgdm-n", "local"):
        found[algorithm] = busy(args, algorithm, args.period)
        print(f"{algorithm}: " + ", ".join(f"{share:.3f}" for share in found[algorithm])
              + " of a core per agent process", flush=True)
    return found


if __name__ == "__main__":
    main()
