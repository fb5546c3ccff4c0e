"""Where an agent's CPU goes in a round of a real packed run, gossip beside its compute floor.

`benchmarks/scale.py` gives the ratio of a gossip run's s/round over its floor's; this one says which part of
the round the difference is spent in. It starts `p2pfl run` as scale.py does (LeNet-5 on Fashion-MNIST,
packed workers, the scheduler of `--scheduler`), with a `sitecustomize` on the agents' path that times, on
each agent's own CPU clock, the phases of the round: the whole algorithm step, its local step, the exchange of
the parameters (encoding, sending, waiting for its turn and its neighbours, receiving, checking), the mixing,
and writing the result into the model. An agent's clock is its thread's CPU time (CLOCK_THREAD_CPUTIME_ID)
with threads; with greenlets, where a wait switches to the other agents of the same thread, it is the CPU its
thread spent while that agent's greenlet ran (counted at each switch, through greenlet.settrace), and the
hub's own loop (polling the parked agents' sockets, switching) is a phase of its own. Each worker's ZeroMQ
I/O threads (TCP and CurveZMQ to the other worker) are read from /proc twice: when the worker's last agent
takes its first step and when its first agent says goodbye, so the figure holds the rounds' traffic and not
the handshakes, the key exchanges and the goodbyes, which would otherwise decide it in a short run. Every
figure is microseconds of CPU per agent and round, the median over `--repeats` runs of each kind, run
alternately.

    python benchmarks/round_cpu.py [--agents 8] [--topology ring] [--rounds 1200] [--repeats 3] [--scheduler greenlets]
    python benchmarks/round_cpu.py --scheduler zmq-headers   # the same, messages between the workers over ZeroMQ
    python benchmarks/round_cpu.py --slice 1   # each pair over the same minutes, time-sliced (scale.py --slice)
    python benchmarks/round_cpu.py --exchange-parts   # and the exchange's parts: encoding, slots, channel, checks
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import scale  # noqa: E402  (benchmarks/scale.py: the same launch, the same settings)

OUT = "P2PFL_ROUND_CPU"
PARTS_ON = "P2PFL_ROUND_CPU_PARTS"
PHASES = ("step", "local step", "exchange (params)", "mix", "write into the model", "hub loop (greenlets)",
          "ZeroMQ I/O threads", "hub idle (wall time)")  # idle: waits under 0.1 s (below)
# With --exchange-parts: the exchange's leaves, each timed where it is called (they never switch greenlets), so a
# part is CPU spent inside the exchange (or a hello's, a goodbye's), and their sum a part of it.
PARTS = ("  encode (to a socket)", "  frame sizes (to a mate)", "  decode (from a socket)", "  check names, shapes",
         "  check finite", "  slot write", "  slot read", "  channel send", "  channel receive", "  poll own sockets",
         "  hand over to a mate")

SITECUSTOMIZE = r'''
import collections, json, os, threading, time

IDLE_CAP_SECONDS = 0.1

_path = os.environ.get("P2PFL_ROUND_CPU")
if _path:
    import greenlet

    _totals, _calls, _lock = collections.Counter(), collections.Counter(), threading.Lock()
    _hub_thread = threading.local()  # set in a hub's thread: its greenlets' CPU is counted at each switch

    def _clock():
        """CPU seconds of the calling agent: its thread's, or with greenlets what its thread spent running it."""
        spent = getattr(_hub_thread, "spent", None)
        if spent is None:
            return time.thread_time()
        return spent.get(greenlet.getcurrent(), 0.0) + time.thread_time() - _hub_thread.since

    def _timed(name, function, by_tag=False):
        def wrapper(*args, **kwargs):
            started = _clock()
            try:
                return function(*args, **kwargs)
            finally:
                key = f"{name} ({args[2]})" if by_tag else name
                with _lock:
                    _totals[key] += _clock() - started
                    _calls[key] += 1
        return wrapper

    from p2pfl import hub as _hub_module

    _hub_run = _hub_module.Hub.run

    def _counted_hub_run(self, bodies):
        spent = collections.Counter()

        def _on_switch(event, args):
            if event in ("switch", "throw"):
                now = time.thread_time()
                spent[args[0]] += now - _hub_thread.since  # args: (origin, target)
                _hub_thread.since = now

        _hub_thread.spent, _hub_thread.since = spent, time.thread_time()
        home = greenlet.getcurrent()
        previous = greenlet.settrace(_on_switch)
        try:
            return _hub_run(self, bodies)
        finally:
            greenlet.settrace(previous)
            with _lock:
                _totals["hub loop (greenlets)"] += spent[home] + time.thread_time() - _hub_thread.since
            _hub_thread.spent = None

    _hub_module.Hub.run = _counted_hub_run

    from p2pfl.algorithms import dsgd
    from p2pfl.exchange import MailboxExchange

    _io_at = {}  # CPU seconds of the worker's ZeroMQ I/O threads, from /proc: at the rounds' start and at their end

    def _read_io():
        seconds = 0.0
        for task in os.listdir("/proc/self/task"):
            try:
                if open(f"/proc/self/task/{task}/comm").read().startswith("ZMQbg"):
                    seconds += int(open(f"/proc/self/task/{task}/schedstat").read().split()[0]) / 1e9
            except OSError:
                pass
        return seconds

    _first_steps = set()

    def _io_window(step):
        def wrapper(self, *args, **kwargs):
            if id(self) not in _first_steps:  # the latest first step of the worker's agents: all its handshakes done
                with _lock:
                    _first_steps.add(id(self))
                    _io_at["start"] = _read_io()
            return step(self, *args, **kwargs)
        return wrapper

    dsgd.DSGD.step = _io_window(_timed("step", dsgd.DSGD.step))
    dsgd.LocalOnly.step = _io_window(_timed("step", dsgd.LocalOnly.step))
    dsgd.DSGD.local_step = _timed("local step", dsgd.DSGD.local_step)
    dsgd.gossip_average = _timed("mix", dsgd.gossip_average)
    dsgd.set_flat_params = _timed("write into the model", dsgd.set_flat_params)
    _exchange = _timed("exchange", MailboxExchange.exchange, by_tag=True)

    def _exchange_until_bye(self, round_, tag, *args, **kwargs):
        if tag == "bye" and "end" not in _io_at:  # the worker's first goodbye: its rounds' traffic is over
            with _lock:  # checked again under the lock: with threads, two first goodbyes can race here
                if "end" not in _io_at:
                    _io_at["end"] = _read_io()
        return _exchange(self, round_, tag, *args, **kwargs)

    MailboxExchange.exchange = _exchange_until_bye

    if os.environ.get("P2PFL_ROUND_CPU_PARTS"):
        import zmq
        from p2pfl import exchange as _exchange_module, host_channel, shared_slots, transport, wire

        for _module in (_exchange_module, wire):  # each name where it is looked up
            _module.all_finite = _timed("  check finite", wire.all_finite)
        for _name, _label in (("encode", "  encode (to a socket)"), ("frame_sizes", "  frame sizes (to a mate)"),
                              ("decode", "  decode (from a socket)"), ("check_spec", "  check names, shapes")):
            setattr(_exchange_module, _name, _timed(_label, getattr(wire, _name)))
        for _owner, _name, _label in ((shared_slots.SlotWriter, "put", "  slot write"),
                                      (shared_slots.SlotReader, "take", "  slot read"),
                                      (host_channel.ChannelSender, "send", "  channel send"),
                                      (host_channel.ChannelInbox, "receive", "  channel receive"),
                                      (zmq.Poller, "poll", "  poll own sockets"),
                                      (transport.ZmqExchange, "_hand_over", "  hand over to a mate")):
            setattr(_owner, _name, _timed(_label, getattr(_owner, _name)))

    # Wall time, not CPU: a hub blocks only when every agent of its worker waits for another worker's messages
    # (or its timeout). Counted from the worker's agents' first steps to its first goodbye, and only waits under
    # IDLE_CAP_SECONDS: a time-sliced run is stopped for a whole slice, and a stop that lands in a wait would count.
    _hub_wake = _hub_module.Hub._wake

    def _timed_wake(self, block):
        if not block or "start" not in _io_at or "end" in _io_at:
            return _hub_wake(self, block)
        started = time.perf_counter()
        try:
            return _hub_wake(self, block)
        finally:
            waited = time.perf_counter() - started
            if waited < IDLE_CAP_SECONDS:
                with _lock:
                    _totals["hub idle (wall time)"] += waited

    _hub_module.Hub._wake = _timed_wake

    def _dump():
        if not _calls["step"]:
            return
        if "start" in _io_at and "end" in _io_at:
            _totals["ZeroMQ I/O threads"] = max(0.0, _io_at["end"] - _io_at["start"])
        # Named by the run (scale.py's marker): two runs of a time-sliced pair write into the same folder.
        run = os.environ.get("P2PFL_SCALE_BENCH", "run")
        with open(os.path.join(_path, f"{run}-{os.getpid()}.json"), "w") as sink:
            json.dump({"seconds": _totals, "calls": _calls}, sink)

    _exit = os._exit

    def _dump_then_exit(code):  # a packed worker ends with os._exit, which skips atexit
        _dump()
        _exit(code)

    os._exit = _dump_then_exit
    import atexit
    atexit.register(_dump)
'''


def per_agent_round(folder: Path, marker: str = "*") -> dict[str, float]:
    """Microseconds of CPU per agent and round, each phase summed over the run's processes (those of the run
    with scale.py's `marker`)."""
    seconds, calls = {}, 0
    for path in folder.glob(f"{marker}-*.json"):
        data = json.loads(path.read_text())
        for phase, value in data["seconds"].items():
            seconds[phase] = seconds.get(phase, 0.0) + value
        calls += data["calls"].get("step", 0)
    return {phase: seconds.get(phase, 0.0) / calls * 1e6 for phase in (*PHASES, *PARTS)} if calls else {}


def run(args, algorithm: str | None, port: int, gossip_first: bool = True) -> list[dict]:
    """One run of `algorithm`, or with `algorithm` None a time-sliced pair (scale.py --slice): the agents' CPU
    clocks stand still while their run is stopped, so the phases need no correction, only the s/round does."""
    with tempfile.TemporaryDirectory(prefix="p2pfl-round-cpu-") as tmp:
        hooks, out = Path(tmp) / "hooks", Path(tmp) / "out"
        hooks.mkdir()
        out.mkdir()
        (hooks / "sitecustomize.py").write_text(SITECUSTOMIZE)
        saved = {key: os.environ.get(key) for key in ("PYTHONPATH", OUT, PARTS_ON)}
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, (str(hooks), saved["PYTHONPATH"])))
        os.environ[OUT] = str(out)
        if args.exchange_parts:
            os.environ[PARTS_ON] = "1"
        try:
            if algorithm is None:
                results = scale.sliced_pair(args, args.agents, args.topology, args.scheduler, gossip_first)
            else:
                results = [scale.run_once(args, args.agents, args.topology, algorithm, port, args.scheduler)]
        finally:
            for key, value in saved.items():
                os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)
        return [{"algorithm": result["algorithm"], "scheduler": args.scheduler, "s_per_round": result["s_per_round"],
                 "cpu_us": per_agent_round(out, result["marker"])} for result in results]


def table(runs: list[dict]) -> str:
    def median(algorithm: str, phase: str) -> float:
        return statistics.median(r["cpu_us"][phase] for r in runs if r["algorithm"] == algorithm)

    lines = ["| µs of CPU per agent and round | gossip (dsgdm-n) | floor (local) | gossip − floor |",
             "| --- | --- | --- | --- |"]
    shown = [*PHASES, *(part for part in PARTS if any(r["cpu_us"].get(part) for r in runs))]
    for phase in shown:
        gossip, floor = median("dsgdm-n", phase), median("local", phase)
        lines.append(f"| {phase} | {gossip:.0f} | {floor:.0f} | {gossip - floor:+.0f} |")
    s = {kind: statistics.median(r["s_per_round"] for r in runs if r["algorithm"] == kind) for kind in ("dsgdm-n", "local")}
    lines.append(f"| s/round (median) | {s['dsgdm-n']:.4f} | {s['local']:.4f} | ratio {s['dsgdm-n'] / s['local']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, default=8)
    parser.add_argument("--topology", default="ring")
    parser.add_argument("--rounds", type=int, default=1200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default="lenet5")
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--base-port", type=int, default=33000)
    parser.add_argument("--scheduler", choices=("greenlets", "threads", "zmq-headers"), default="greenlets",
                        help="network.scheduler of the packed workers (greenlets: the default); zmq-headers: "
                             "greenlets with every message over ZeroMQ (network.host_channel false)")
    parser.add_argument("--slice", type=float, default=0.0,
                        help="seconds: each gossip/floor pair time-sliced over the same minutes (scale.py --slice)")
    parser.add_argument("--exchange-parts", action="store_true",
                        help="also time the exchange's parts (encoding, slots, channel, checks, polls, hand-overs); "
                             "their wrappers add about a microsecond per call to the exchange")
    args = parser.parse_args(argv)
    runs = []
    for repeat in range(args.repeats):
        pair = [None] if args.slice > 0 else ("dsgdm-n", "local")[::1 if repeat % 2 == 0 else -1]  # None: sliced
        for algorithm in pair:
            for result in run(args, algorithm, args.base_port, gossip_first=repeat % 2 == 0):
                runs.append(result)
                print(json.dumps(result), flush=True)
    print(table(runs))
    return runs


if __name__ == "__main__":
    main()
