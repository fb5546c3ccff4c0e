"""Footprint and scale, measured from outside: `p2pfl run` as a user starts it, agents read from /proc.

For each size and topology, two runs of the same agent processes side by side: DSGDm-N (gossip) and
`local` (the same local steps, no communication: the compute floor). Per run it prints
- start-up: launch of `p2pfl run` until every agent has written its round 0 (polled at 20 Hz);
- s/round: the mean wall time of a round over agents, between the first and the last 10% of rounds (the
  start-up transient and the end-of-run evaluations: a packed agent evaluates the whole test set beside
  its mates' last rounds, 128 evaluations per worker at 256 agents), and first vs last 10% (flat or
  not; their mean rounds, and their median rounds, which a stall of the machine in one of them does not
  move); the gossip run's over the floor's is the ratio the runtime costs; `round_means` in the JSON
  holds every round's mean, for any other cut, and the ratio of median rounds (the median of those means
  over the same rounds, gossip over floor) is the pace without the rare rounds a stall of the machine
  stretched, which land in one run of a pair and not the other;
- bytes sent per agent per round;
- memory of the agent processes (named p2pfl-agent-N, or p2pfl-agent-wK for a worker hosting several
  agents, carrying this benchmark's marker): peak RSS (VmHWM) per process, the processes' peak RSS summed
  over the agents (a packed agent's share of its process), and PSS summed over processes
  at its largest (RSS counts the pages that every process shares, torch's libraries and the mapped
  dataset, once per process; PSS splits them, so its sum is what the machine holds).
With `--agents-per-process 1,0,threads,greenlets,sockets,sim,in-process` every size runs once per value
(network.agents_per_process: 1 one process per agent, N agents per process, 0 auto, with the default
network.scheduler; threads / greenlets: auto, with that scheduler; sockets: auto, every tensor over the
sockets (network.shared_memory false); zmq-headers: auto, the tensors through shared memory but every
message over ZeroMQ (network.host_channel false); sim: `p2pfl run --simulate`, the packed
engine over Unix sockets with no keys; in-process: `p2pfl run --in-process`, every agent a thread of the one
launcher process over the in-memory exchange, its memory read from that process), so packed, unpacked and
simulated runs sit side by side. With `--repeats K` each pair runs K times, alternating which of the two
goes first: this machine's s/round moves by 10-20% between identical runs, so the table shows the median
s/round of each and the median of the K pairwise ratios, with their range. Before each run a LeNet-5 step
is timed on one core in this process (`machine_step_ms`, with `started_utc`, in the JSON; their medians
under the table): how fast the machine itself was then. With `--slice S` the two runs of a pair share the
same minutes instead: both are started (each alone, so its start-up is its own), then each runs alone for S
seconds in turn while the other stands stopped (SIGSTOP to its process group), until both end; the time a run
stood stopped is taken out of the round each of its agents was in (`gaps` in the JSON), so its s/round is its
own pace, and whatever the machine does meanwhile falls on gossip and floor alike.

    python benchmarks/scale.py [--sizes 8,16,64] [--topologies ring,torus] [--rounds 300] [--agents-per-process 1,0]
                               [--repeats 3] [--slice 1]
    python benchmarks/scale.py --quick      # digits MLP, 3 agents, 40 rounds (the test suite)
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MARKER = "P2PFL_SCALE_BENCH"
PREFIX = "p2pfl-agent-"
MEMORY_PERIOD_SECONDS = 0.5  # VmHWM is the kernel's own peak; PSS changes slowly once agents run


def our_agents(marker: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if not (entry / "comm").read_text().startswith(PREFIX):
                continue
            if f"{MARKER}={marker}".encode() in (entry / "environ").read_bytes().split(b"\0"):
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def peak_rss_of(pid: int) -> int:
    """Peak RSS in KiB: VmHWM, the kernel's own peak, read from counters (no walk of the address space)."""
    return next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                if line.startswith("VmHWM"))


def pss_of(pid: int) -> int:
    """Current PSS in KiB: /proc/PID/smaps_rollup, which walks the process's whole address space."""
    return next(int(line.split()[1]) for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
                if line.startswith("Pss:"))


class Watcher(threading.Thread):
    """Polls the run folder and /proc while the run goes: round-0 time and memory peaks."""

    def __init__(self, run_dir: Path, agents: int, marker: str, started: float, process: int | None = None,
                 pss_when_stopped: bool = False):
        """`pss_when_stopped` (a time-sliced run): once its agents have started, this thread reads only their
        peaks, and the slicer reads PSS (sample_memory) each time the run stands stopped."""
        super().__init__(daemon=True)
        self.run_dir, self.agents, self.marker, self.started = run_dir, agents, marker, started
        self.process = process  # --in-process: the launcher itself runs the agents
        self.pss_when_stopped = pss_when_stopped
        self.startup: float | None = None
        self.peak_rss: dict[int, int] = {}
        self.peak_pss_total = 0
        self.done = threading.Event()
        self._pids: list[int] = []  # the run's agent processes, as last looked up
        self._lock = threading.Lock()  # the slicer's thread samples too

    def all_started(self) -> bool:
        for agent in range(self.agents):
            path = self.run_dir / "agents" / f"{agent:03d}" / "metrics.jsonl"
            if not path.exists() or path.stat().st_size == 0:
                return False
        return True

    def run(self) -> None:
        """Start-up is polled at 20 Hz (a stat per agent), memory twice a second: /proc/PID/smaps_rollup
        walks a process's whole address space, and reading it for every agent 20 times a second took CPU
        from the agents it measured (8-agent ring, 5,000 rounds: 0.0403 s/round watched so, 0.0363 at 1 Hz).
        Even twice a second it cost a time-sliced gossip run more than its floor, whose agents wait on nobody:
        on a 16-agent torus 3-5% of the gossip run's rounds took over 1.5 times the median (0.1-0.3% of the
        floor's), 0-0.3% with PSS read while the run stood stopped (results/sliced/047812c and 1ef2163); hence
        pss_when_stopped."""
        next_memory = 0.0
        while not self.done.is_set():
            if self.startup is None and self.all_started():
                self.startup = time.perf_counter() - self.started
                # Every agent process is up now and waits on its neighbours until the last rounds: each is looked
                # up and read at once, as a short run's could end before the next period. (A time-sliced run is
                # read by its slicer, which stops it as soon as its agents have started.)
                if not self.pss_when_stopped:
                    self.sample_memory()
                    next_memory = time.perf_counter() + MEMORY_PERIOD_SECONDS
            if time.perf_counter() >= next_memory:
                if self.pss_when_stopped and self.startup is not None:
                    self.sample_peaks()
                else:
                    self.sample_memory()
                next_memory = time.perf_counter() + MEMORY_PERIOD_SECONDS
            time.sleep(0.05)

    def sample_peaks(self) -> None:
        with self._lock:
            for pid in self._pids:
                try:
                    self.peak_rss[pid] = max(self.peak_rss.get(pid, 0), peak_rss_of(pid))
                except (OSError, StopIteration):
                    continue

    def sample_memory(self) -> None:
        """The peaks and the PSS summed over the run's agent processes (looked up again)."""
        pids = [self.process] if self.process else our_agents(self.marker)
        total = 0
        for pid in pids:
            try:
                total += pss_of(pid)
            except (OSError, StopIteration):
                continue
        with self._lock:
            self._pids = pids
            self.peak_pss_total = max(self.peak_pss_total, total)
        self.sample_peaks()


# The other engines, beside packing values; threads: the default packing with a thread per agent, not greenlets
ENGINE_FLAGS = {"sim": ["--simulate"], "in-process": ["--in-process"], "threads": ["--set", "network.scheduler=threads"],
                "greenlets": ["--set", "network.scheduler=greenlets"],
                "sockets": ["--set", "network.shared_memory=false"],
                "zmq-headers": ["--set", "network.host_channel=false"]}


def rows_of(run_dir: Path, agents: int) -> list[list[dict]]:
    return [[json.loads(line) for line in (run_dir / "agents" / f"{a:03d}" / "metrics.jsonl").read_text().splitlines()]
            for a in range(agents)]


class Launch:
    """One `p2pfl run` of the benchmark's settings, started, watched, read back."""

    def __init__(self, args, agents: int, topology: str, algorithm: str, port: int, per_process: int | str,
                 folder: Path, own_group: bool = False, root: Path = ROOT, env: dict[str, str] | None = None):
        """`own_group`: the run in a process group of its own (its agents are forked from its forkserver, so
        they are in it too), which a time-sliced pair stops and continues as a whole. `root`: the checkout whose
        p2pfl runs (ab.py: another tree); `env`: variables set for this run only."""
        self.agents, self.topology, self.algorithm, self.per_process = agents, topology, algorithm, per_process
        self.marker, self.run_dir, self.own_group = uuid.uuid4().hex, folder / "run", own_group
        self.root, self.env = root, env or {}
        self.command = [sys.executable, "-m", "p2pfl.cli", "run", str(root / "examples" / "ring16.yaml"),
                        "--agents", str(agents), "--topology", topology, "--rounds", str(args.rounds),
                        "--out", str(self.run_dir), "--set", f"algorithm={algorithm}", "--set", f"model={args.model}",
                        "--set", f"data.name={args.data}", "--set", "eval_every=0", "--set", f"network.base_port={port}",
                        "--set", "optim.batch_size=32",
                        "--set", "optim.lr=0.02",  # timing only: a local-only LeNet-5 at lr 0.1 diverged at 64 agents
                        "--set", "data.partition=dirichlet", "--set", "data.alpha=0.1",
                        *ENGINE_FLAGS.get(str(per_process), ["--set", f"network.agents_per_process={per_process}"])]
        self.stderr = folder / "stderr.txt"
        self.launcher: subprocess.Popen | None = None
        self.watcher: Watcher | None = None

    def start(self) -> None:
        env = {**os.environ, MARKER: self.marker,
               "PYTHONPATH": os.pathsep.join(filter(None, (str(self.root), os.environ.get("PYTHONPATH")))), **self.env}
        started = time.perf_counter()
        # Output to a file, not a pipe: a stopped reader would fill the pipe and block the run.
        with open(self.stderr, "w") as stderr:
            self.launcher = subprocess.Popen(self.command, env=env, stdout=subprocess.DEVNULL, stderr=stderr,
                                             cwd=self.root, start_new_session=self.own_group)
        self.watcher = Watcher(self.run_dir, self.agents, self.marker, started,
                               self.launcher.pid if self.per_process == "in-process" else None,
                               pss_when_stopped=self.own_group)
        self.watcher.start()

    def wait(self, timeout: float | None = None) -> bool:
        """True once the run has ended."""
        try:
            self.launcher.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def kill(self) -> None:
        if self.own_group:
            for signal_ in (signal.SIGCONT, signal.SIGKILL):
                try:
                    os.killpg(self.launcher.pid, signal_)
                except ProcessLookupError:
                    pass
        self.launcher.kill()
        self.watcher.done.set()
        self.watcher.join()

    def result(self, gaps: list[tuple[list[int], float]] = ()) -> dict:
        """What the run measured; `gaps`: the stops of a time-sliced run, taken out of the rounds they fell in."""
        if self.launcher.returncode != 0:
            raise RuntimeError(f"{' '.join(self.command)} failed ({self.launcher.returncode}):\n"
                               f"{self.stderr.read_text()[-2000:]}")
        rows = remove_gaps(rows_of(self.run_dir, self.agents), gaps)
        return {**summary(self, rows), "gaps": [[positions, seconds] for positions, seconds in gaps],
                "marker": self.marker}


def summary(launch: Launch, rows: list[list[dict]]) -> dict:
    rounds = min(len(r) for r in rows)
    skip, tenth = rounds // 10, max(1, rounds // 10)
    # Each round's mean over agents; every figure below is a cut of this one series.
    means = [statistics.mean(agent_rows[r]["seconds"] for agent_rows in rows) for r in range(rounds)]
    first, middle, last = means[:tenth], means[skip:rounds - tenth], means[rounds - tenth:]

    watcher = launch.watcher
    rss = sorted(watcher.peak_rss.values())
    agents = launch.agents
    return {"agents": agents, "topology": launch.topology, "algorithm": launch.algorithm,
            "agents_per_process": launch.per_process, "processes": len(rss), "rounds": rounds,
            "startup_s": watcher.startup, "s_per_round": statistics.mean(middle),
            "first_tenth_s": statistics.mean(first), "last_tenth_s": statistics.mean(last),
            # The same tenths without the machine's stalls, which land in one tenth and not the other:
            "first_tenth_median_s": statistics.median(first), "last_tenth_median_s": statistics.median(last),
            # The pace without the rare slow rounds (a stall of the machine lands in one run of a pair, not both):
            "median_round_s": statistics.median(middle),
            "bytes_per_round": statistics.mean(statistics.mean(r["bytes_sent"] for r in a) for a in rows),
            "peak_rss_mb_max": rss[-1] / 1024 if rss else None,
            "peak_rss_mb_median": statistics.median(rss) / 1024 if rss else None,
            "peak_rss_mb_per_agent": sum(rss) / 1024 / agents if rss else None,
            "pss_total_mb": watcher.peak_pss_total / 1024, "agents_seen": len(rss),
            "round_means": means}


def run_once(args, agents: int, topology: str, algorithm: str, port: int, per_process: int | str = 1) -> dict:
    with tempfile.TemporaryDirectory(prefix="p2pfl-scale-") as tmp:
        launch = Launch(args, agents, topology, algorithm, port, per_process, Path(tmp))
        launch.start()
        try:
            launch.wait()
        finally:
            launch.kill()
        return launch.result()


def remove_gaps(rows: list[list[dict]], gaps: list[tuple[list[int], float]]) -> list[list[dict]]:
    """Each agent's rows with every stop taken out of the round it fell in. A gap is (the round each agent was
    in when stopped, as its count of written rows, and the seconds it stayed stopped). A round that lasted more
    than half the gap held it; one that did not (the stop came between the round's clock and its row, or after
    its last round) is left as it is. A round that held a stop takes the median of its agent's nearest rounds
    that held none: timed from here, a stop is known only to some 10-20 ms (it is confirmed by polling /proc;
    the agents take up again a little after SIGCONT), a whole round at 8 agents: in two 8-agent torus pairs'
    rows, rounds that held a stop lasted 0-25 ms longer than it (11-13 ms a round), so less the gap such a
    round came out anywhere from none to two rounds, and one a hair shorter than the gap kept the whole
    second."""
    rows = [[dict(row) for row in agent_rows] for agent_rows in rows]
    for agent_rows, held in zip(rows, _rounds_that_held(rows, gaps)):
        for at in held:
            around = [agent_rows[i]["seconds"] for i in range(max(0, at - NEAREST), at + NEAREST + 1)
                      if i < len(agent_rows) and i not in held]
            agent_rows[at]["seconds"] = statistics.median(around) if around else 0.0
    return rows


NEAREST = 4  # rounds on either side of a stop's round that stand in for it


def _rounds_that_held(rows: list[list[dict]], gaps: list[tuple[list[int], float]]) -> list[set[int]]:
    held: list[set[int]] = [set() for _ in rows]
    for positions, seconds in gaps:
        for agent_rows, rounds, at in zip(rows, held, positions):
            if at < len(agent_rows) and agent_rows[at]["seconds"] > seconds / 2:
                rounds.add(at)
    return held


def written_rows(run_dir: Path, agents: int) -> list[int]:
    """Rows each agent has written so far (a stopped run's rows are complete lines: each is flushed whole)."""
    counts = []
    for agent in range(agents):
        try:
            counts.append((run_dir / "agents" / f"{agent:03d}" / "metrics.jsonl").read_bytes().count(b"\n"))
        except FileNotFoundError:
            counts.append(0)
    return counts


def stat_fields(path: Path) -> list[str] | None:
    """A /proc stat file's fields after the command name (state, ppid, pgrp, ...); None once it is gone."""
    try:
        stat = path.read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2:].split()


def group_members(group: int) -> list[int]:
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()
            and (fields := stat_fields(entry / "stat")) is not None and int(fields[2]) == group and fields[0] != "Z"]


def stop(launch: Launch) -> None:
    """SIGSTOP to the run's whole process group, returning once every thread of every member has stopped: a
    process's main thread shows stopped before its other threads (where packed agents run) have taken the
    signal, and a gap counted from then would be longer than the stop the agents saw."""
    try:
        os.killpg(launch.launcher.pid, signal.SIGSTOP)
    except ProcessLookupError:  # it has just ended
        return
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if all(state in "tTZX" for state in thread_states(group_members(launch.launcher.pid))):
            return
        time.sleep(0.001)
    raise RuntimeError(f"run {launch.run_dir} did not stop within 5 s")


def thread_states(pids: list[int]) -> list[str]:
    states = []
    for pid in pids:
        try:
            tasks = list(Path(f"/proc/{pid}/task").iterdir())
        except OSError:
            continue
        states += [fields[0] for task in tasks if (fields := stat_fields(task / "stat")) is not None]
    return states


def sliced_pair(args, agents: int, topology: str, per_process: int | str, gossip_first: bool) -> list[dict]:
    """A gossip run and its floor over the same minutes (time_sliced). Whatever ends this benchmark lets both runs
    go on and kills them, except SIGKILL: then a run may stay stopped (state T in `ps -eo pid,pgid,stat,comm`, its
    agents named p2pfl-agent-*), until its process group is killed."""
    algorithms = ("dsgdm-n", "local") if gossip_first else ("local", "dsgdm-n")
    with tempfile.TemporaryDirectory(prefix="p2pfl-scale-") as tmp:
        launches = []
        for index, algorithm in enumerate(algorithms):
            (Path(tmp) / algorithm).mkdir()
            launches.append(Launch(args, agents, topology, algorithm, args.base_port + 1000 * index, per_process,
                                   Path(tmp) / algorithm, own_group=True))
        checks = {}

        def check_machine(launch: Launch) -> None:
            checks[launch.algorithm] = (machine_step_ms(), datetime.now(timezone.utc).isoformat(timespec="seconds"))

        gaps = time_sliced(launches, args.slice, before_start=check_machine)
        return [{**launch.result(launch_gaps), "machine_step_ms": checks[launch.algorithm][0],
                 "started_utc": checks[launch.algorithm][1], "slice_s": args.slice}
                for launch, launch_gaps in zip(launches, gaps)]


def time_sliced(launches: list[Launch], slice_s: float,
                before_start: Callable[[Launch], None] | None = None) -> list[list[tuple[list[int], float]]]:
    """Runs over the same minutes: each started alone (so its start-up is its own) and stopped once its agents
    have started, then each runs alone for `slice_s` seconds in turn while the others stand stopped (SIGSTOP to
    its process group), until all end. Whatever the machine does meanwhile (this one's pace moves 10-20% within
    minutes) falls on all of them alike. Returns each run's stops (the rounds its agents were in, seconds), which
    Launch.result takes out of those rounds, so its s/round is its own pace; its PSS is read while it stands
    stopped (Watcher.pss_when_stopped). `before_start(launch)` runs just before each start. The runs are killed
    on the way out, whatever ends this."""
    gaps: list[list[tuple[list[int], float]]] = [[] for _ in launches]
    stopped_at: dict[int, tuple[float, list[int]]] = {}
    started: list[Launch] = []
    try:
        for index, launch in enumerate(launches):
            if before_start is not None:
                before_start(launch)
            launch.start()
            started.append(launch)
            while launch.watcher.startup is None and not launch.wait(0.05):
                pass  # its start-up is its own: the others are stopped meanwhile (a failed run: result() says)
            stop(launch)
            stopped_at[index] = (time.monotonic(), written_rows(launch.run_dir, launch.agents))
            launch.watcher.sample_memory()  # stopped: the walk of its memory costs its agents nothing
        for turn in itertools.count():
            if all(launch.launcher.poll() is not None for launch in launches):
                break
            index = turn % len(launches)
            launch = launches[index]
            if launch.launcher.poll() is not None:
                continue
            since, positions = stopped_at[index]
            os.killpg(launch.launcher.pid, signal.SIGCONT)
            gaps[index].append((positions, time.monotonic() - since))
            # Sliced to its end, also once the others have ended: its memory is read only while it stands stopped.
            if not launch.wait(slice_s):
                stop(launch)
                stopped_at[index] = (time.monotonic(), written_rows(launch.run_dir, launch.agents))
                launch.watcher.sample_memory()
    finally:
        for launch in started:
            launch.kill()
    return gaps


def one_after_the_other(args, agents: int, topology: str, per_process: int | str, gossip_first: bool):
    """A gossip run and its floor, one after the other, each with the machine's pace just before it; each
    result as soon as its run has ended."""
    for algorithm in ("dsgdm-n", "local") if gossip_first else ("local", "dsgdm-n"):
        check = machine_step_ms()
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        yield {**run_once(args, agents, topology, algorithm, args.base_port, per_process),
               "started_utc": started, "machine_step_ms": check}


def machine_step_ms(steps: int = 40) -> float:
    """Milliseconds per LeNet-5 training step (batch 32, one thread) in this process, just before a run: the
    machine's own pace at that moment. This machine's s/round moves by 10-20% between identical runs, floors
    included; a run whose check was slower ran on a slower machine, whatever its code did."""
    import torch
    import torch.nn.functional as F

    from p2pfl.models.lenet import LeNet5

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        generator = torch.Generator().manual_seed(0)
        model = LeNet5((1, 28, 28), 10)
        x, y = torch.randn(32, 1, 28, 28, generator=generator), torch.randint(0, 10, (32,), generator=generator)
        blocks = []
        for block in range(5):  # the first warms up
            started = time.perf_counter()
            for _ in range(steps // 4):
                model.zero_grad()
                F.cross_entropy(model(x), y).backward()
            if block:
                blocks.append((time.perf_counter() - started) / (steps // 4) * 1000)
        return statistics.median(blocks)
    finally:
        torch.set_num_threads(threads)


def machine_line(results: list[dict]) -> str:
    """The machine checks of the runs, gossip and floor apart: did one kind run on a slower machine?"""
    def spread(kind: list[dict]) -> str:
        values = [r["machine_step_ms"] for r in kind if r.get("machine_step_ms") is not None]
        return f"{statistics.median(values):.2f} ms ({min(values):.2f}-{max(values):.2f})" if values else "-"
    return (f"A LeNet-5 step on one core, timed before each run (`machine_step_ms` in the JSON): before the "
            f"gossip runs {spread([r for r in results if r['algorithm'] != 'local'])}, before the floors "
            f"{spread([r for r in results if r['algorithm'] == 'local'])}.\n")


def per_agent_rss(result: dict) -> str:
    """The processes' peak RSS summed, over the agents: what each agent costs when its process is shared
    (older result files lack it: '-')."""
    value = result.get("peak_rss_mb_per_agent")
    return "-" if value is None else f"{value:.0f}"


def table(results: list[dict]) -> str:
    lines = ["| agents | topology | agents/process (processes) | start-up s | s/round | floor s/round | ratio | "
             "ratio of median rounds | "
             "first / last 10% | bytes/agent/round | peak RSS/process MB (median, max) | peak RSS/agent MB | PSS total MB | "
             "PSS/agent MB |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]

    def key(r: dict) -> tuple:
        return r["agents"], r["topology"], r.get("agents_per_process", 1)

    groups: dict[tuple, dict[str, list[dict]]] = {}
    for r in results:  # repeats of one setting, in the order they ran
        groups.setdefault(key(r), {}).setdefault(r["algorithm"], []).append(r)
    for runs in groups.values():
        floors = runs.get("local", [])
        for algorithm, gossip in runs.items():
            if algorithm == "local":
                continue
            r = gossip[0] if len(gossip) == 1 else middle_run(gossip)
            floor = statistics.median(f["s_per_round"] for f in floors) if floors else float("nan")
            ratio = median_ratio([g["s_per_round"] for g in gossip], [f["s_per_round"] for f in floors])
            medians = median_ratio([g.get("median_round_s") for g in gossip], [f.get("median_round_s") for f in floors])
            per = r.get("agents_per_process", 1)
            shown = {0: "auto", "sim": "simulate", "threads": "auto, threads", "greenlets": "auto, greenlets",
                     "sockets": "auto, no shared memory"}.get(per, per)
            lines.append(f"| {r['agents']} | {r['topology']} | {shown} ({r.get('processes')}) | "
                         f"{r['startup_s']:.1f} | {statistics.median(g['s_per_round'] for g in gossip):.4f} | "
                         f"{floor:.4f} | {ratio} | {medians} | "
                         f"{flatness(r)} | {r['bytes_per_round']:,.0f} | "
                         f"{r['peak_rss_mb_median']:.0f}, {r['peak_rss_mb_max']:.0f} | {per_agent_rss(r)} | "
                         f"{r['pss_total_mb']:,.0f} | {r['pss_total_mb'] / r['agents']:.0f} |")
    return "\n".join(lines) + "\n"


def flatness(run: dict) -> str:
    """First / last 10% of rounds: their mean rounds, then their median rounds where the file has them."""
    text = f"{run['first_tenth_s']:.4f} / {run['last_tenth_s']:.4f}"
    if run.get("first_tenth_median_s") is None:
        return text
    return text + f" (medians {run['first_tenth_median_s']:.4f} / {run['last_tenth_median_s']:.4f})"


def median_ratio(gossip: list[float | None], floors: list[float | None]) -> str:
    """The median of the pairwise ratios with their range; '-' without pairs (or from older result files)."""
    ratios = [g / f for g, f in zip(gossip, floors) if g is not None and f is not None]
    return "-" if not ratios else f"{statistics.median(ratios):.2f}" + (
        f" ({min(ratios):.2f}-{max(ratios):.2f}, {len(ratios)} pairs)" if len(ratios) > 1 else "")


def middle_run(runs: list[dict]) -> dict:
    """The run of median s/round, whose start-up, flatness and memory the table shows for repeated settings."""
    return sorted(runs, key=lambda r: r["s_per_round"])[(len(runs) - 1) // 2]


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="8,16,64")
    parser.add_argument("--topologies", default="ring,torus")
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--model", default="lenet5")
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--base-port", type=int, default=31000)
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--agents-per-process", default="1",
                        help="network.agents_per_process values to compare, e.g. 1,0,threads,greenlets,sim,in-process (1: a "
                             "process per agent, 0: auto packing, threads / greenlets: auto packing with that scheduler, sim: "
                             "--simulate, in-process: --in-process)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="run each gossip/floor pair this many times, alternating which goes first")
    parser.add_argument("--slice", type=float, default=0.0,
                        help="seconds: run each gossip/floor pair at once, each alone for this long in turn while the "
                             "other is stopped, so both see the same minutes of the machine (0: one after the other)")
    parser.add_argument("--quick", action="store_true", help="digits MLP, 3 agents on a ring, 40 rounds")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.topologies, args.rounds, args.model, args.data = "3", "ring", 40, "mlp", "digits"
    results = []
    for size in (int(s) for s in args.sizes.split(",")):
        for topology in args.topologies.split(","):
            for per_process in (p if p in ENGINE_FLAGS else int(p) for p in args.agents_per_process.split(",")):
                for repeat in range(args.repeats):
                    gossip_first = repeat % 2 == 0
                    pair = (sliced_pair(args, size, topology, per_process, gossip_first) if args.slice > 0
                            else one_after_the_other(args, size, topology, per_process, gossip_first))
                    for result in pair:
                        result["repeat"] = repeat
                        print(json.dumps({k: v for k, v in result.items() if k not in ("round_means", "gaps", "marker")}),
                              flush=True)
                        results.append(result)
    name = "scale_quick" if args.quick else "scale"
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"{name}.json").write_text(json.dumps(results, indent=1))
    text = table(results) + "\n" + machine_line(results)
    (args.results / f"{name}.md").write_text(
        f"`python benchmarks/scale.py {' '.join(argv if argv is not None else sys.argv[1:])}` "
        f"({os.cpu_count()} cores, {args.model} on {args.data}, {args.rounds} rounds, batch 32)\n\n{text}")
    print(text)
    return results


def _end_on_sigterm(signum: int, frame) -> None:
    """SIGTERM (`kill`, `timeout`) would end this process on the spot and leave its runs going, one of a sliced
    pair stopped for good; as SystemExit, the way out kills them (sliced_pair, run_once)."""
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _end_on_sigterm)
    main()
