"""Smoke tests of the benchmark scripts (the full runs live in benchmarks/, not in the suite)."""

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import free_ports, load_benchmark as load

ROOT = Path(__file__).resolve().parents[1]


def test_ccl_benchmark_quick_mode_writes_table_and_plot(tmp_path):
    load("ccl_fmnist").main(["--quick", "--results", str(tmp_path), "--rounds", "4"])
    table = (tmp_path / "ccl_quick.md").read_text()
    for label in ("DSGDm-N", "QGM", "CCL (+QGM)", "IID (ceiling)"):
        assert label in table
    assert (tmp_path / "ccl_quick.png").read_bytes()[:4] == b"\x89PNG"
    # Resuming finds every run done and rewrites the same table without training again.
    load("ccl_fmnist").main(["--quick", "--results", str(tmp_path), "--rounds", "4"])
    assert (tmp_path / "ccl_quick.md").read_text() == table


def test_clustered_benchmark_runs_every_method_and_writes_its_tables(tmp_path):
    load("clustered").main(["--quick", "--seeds", "0", "--rounds", "2", "--results", str(tmp_path)])
    table = (tmp_path / "clustered.md").read_text()
    for label in ("| FedAvg |", "| IFCA |", "| CLoVE |", "| CP-CFL |", "| FedTSDP |", "| local only |",
                  "CLoVE (autoencoders)", "IID (1 cluster)", "| rotation |", "M-Fed", "FedAvg within each task"):
        assert label in table, label
    import json

    assert table.count("- `p2pfl sweep examples/") == 5  # one sweep per group of rows
    assert not list(tmp_path.rglob("curves.png"))  # the smoke test draws no per-run plots
    runs = json.loads((tmp_path / "clustered_runs.json").read_text())
    assert len(runs) == 6 + 1 + 2 + 5 and all(r["final_accuracy"] is not None for r in runs)


def test_ccl_reference_benchmark_quick_mode_reads_authors_runs_and_resumes(tmp_path, no_leaked_agents):
    authors = tmp_path / "authors.jsonl"
    authors.write_text('{"alg": "qgm", "alpha": 0.01, "seed": 123, "local": 70.0, "consensus": 75.0}\n')
    module = load("ccl_reference")
    module.main(["--quick", "--results", str(tmp_path)])
    table = (tmp_path / "ccl_reference_quick.md").read_text()
    assert "| 0.01 | QGM |" in table and "| 0.01 | CCL, align_clip 1 |" in table
    runs = (tmp_path / "ccl_reference_quick_runs.json").read_text()
    module.main(["--quick", "--results", str(tmp_path)])  # resumes: nothing runs again
    assert (tmp_path / "ccl_reference_quick_runs.json").read_text() == runs
    assert module.read_authors(authors)["0.01-qgm-123"]["local"] == 70.0


def test_scale_benchmark_quick_mode_measures_startup_rounds_and_memory_from_proc(tmp_path, no_leaked_agents):
    results = load("scale").main(["--quick", "--results", str(tmp_path), "--base-port", str(free_ports(1)[0])])
    gossip, floor = results
    assert (gossip["algorithm"], floor["algorithm"]) == ("dsgdm-n", "local")
    for r in results:
        assert r["rounds"] == 40 and r["agents_seen"] == 3 and r["startup_s"] > 0
        assert 50 < r["peak_rss_mb_median"] <= r["peak_rss_mb_max"] and r["pss_total_mb"] > 0
    assert gossip["bytes_per_round"] > 0 and floor["bytes_per_round"] == 0
    assert all(r["machine_step_ms"] > 0 and r["started_utc"].endswith("+00:00") for r in results)
    assert gossip["started_utc"] <= floor["started_utc"]
    table = (tmp_path / "scale_quick.md").read_text()
    assert "| 3 | ring |" in table and "PSS total MB" in table and "A LeNet-5 step on one core" in table


def test_scale_time_sliced_pair_runs_both_at_once_and_takes_each_stop_out_of_its_round(tmp_path, no_leaked_agents):
    results = load("scale").main(["--quick", "--slice", "0.01", "--results", str(tmp_path),
                                  "--base-port", str(free_ports(1)[0])])
    gossip, floor = results
    assert (gossip["algorithm"], floor["algorithm"]) == ("dsgdm-n", "local")
    for r in results:
        assert r["rounds"] == 40 and r["agents_seen"] == 3 and r["slice_s"] == 0.01
        assert r["gaps"] and all(len(positions) == 3 and seconds > 0 for positions, seconds in r["gaps"])
    # The gossip run stood stopped from before the floor was launched until after its agents had all started.
    assert gossip["gaps"][0][1] > floor["startup_s"]
    assert "| 3 | ring |" in (tmp_path / "scale_quick.md").read_text()


def test_scale_watcher_of_a_sliced_run_leaves_pss_to_the_slicer_once_its_agents_started(tmp_path, monkeypatch):
    scale = load("scale")
    pss_reads = []
    monkeypatch.setattr(scale, "our_agents", lambda marker: [4242])
    monkeypatch.setattr(scale, "peak_rss_of", lambda pid: 1024 + len(pss_reads))
    monkeypatch.setattr(scale, "pss_of", lambda pid: pss_reads.append(pid) or 2048 * len(pss_reads))
    monkeypatch.setattr(scale, "MEMORY_PERIOD_SECONDS", 0.01)
    metrics = tmp_path / "agents" / "000" / "metrics.jsonl"
    metrics.parent.mkdir(parents=True)

    def until(condition) -> None:
        deadline = time.monotonic() + 30
        while not condition():
            assert time.monotonic() < deadline
            time.sleep(0.01)

    sliced = scale.Watcher(tmp_path, 1, "marker", time.perf_counter(), pss_when_stopped=True)
    plain = scale.Watcher(tmp_path, 1, "marker", time.perf_counter())
    for watcher in (sliced, plain):
        watcher.start()
    try:
        until(lambda: pss_reads)  # before its agents start, the thread reads PSS itself
        metrics.write_text('{"round": 0}\n')
        until(lambda: sliced.startup is not None and plain.startup is not None)
        plain.done.set()
        plain.join()
        time.sleep(0.05)  # a read under way as the start-up was seen ends
        reads = len(pss_reads)
        time.sleep(0.2)  # some 20 periods: the sliced run's thread reads only the peaks now
        assert len(pss_reads) == reads
        sliced.sample_memory()  # what the slicer calls while the run stands stopped
        assert len(pss_reads) == reads + 1 and sliced.peak_pss_total == 2048 * (reads + 1)
        assert sliced.peak_rss == {4242: 1024 + reads + 1}
    finally:
        for watcher in (sliced, plain):
            watcher.done.set()
            watcher.join()


def test_scale_benchmark_ended_by_sigterm_kills_the_runs_it_started(tmp_path, no_leaked_agents):
    """`timeout` and `kill` send SIGTERM: a sliced pair's runs are process groups of their own, one of them stopped
    at any time, and must end with the benchmark rather than run (or stand stopped) on."""
    def fields(pid: int) -> list[str]:  # a /proc stat's fields after the command name: state, ppid, ...
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return ["gone"]
        return stat[stat.rindex(")") + 2:].split()

    def children(pid: int) -> list[int]:
        return [int(entry.name) for entry in Path("/proc").iterdir()
                if entry.name.isdigit() and fields(int(entry.name))[1:2] == [str(pid)]]

    launchers: list[int] = []
    bench = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "scale.py"), "--quick", "--slice", "0.2",
                              "--results", str(tmp_path), "--base-port", str(free_ports(1)[0])], cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (launchers := children(bench.pid)):  # its first run has been launched
            assert bench.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(1.0)  # its agents are on their way
        bench.send_signal(signal.SIGTERM)
        assert bench.wait(60) == 128 + signal.SIGTERM
        deadline = time.monotonic() + 30
        while any(fields(pid)[0] not in ("gone", "Z", "X") for pid in launchers):
            assert time.monotonic() < deadline, "a run outlived the benchmark"
            time.sleep(0.1)
    finally:
        bench.kill()
        bench.wait()
        for group in launchers:  # each run leads a process group of its own: what a failure left, agents included
            for signal_ in (signal.SIGCONT, signal.SIGKILL):
                try:
                    os.killpg(group, signal_)
                except (ProcessLookupError, PermissionError):
                    pass


def test_scale_remove_gaps_takes_a_stop_out_of_the_round_that_held_it_and_only_there():
    def rows(*seconds):
        return [{"round": r, "seconds": s} for r, s in enumerate(seconds)]

    measured = [rows(0.01, 1.02, 0.03, 0.01, 0.02), rows(0.01, 0.02, 0.999, 0.01, 0.01),
                rows(0.01, 0.01, 0.01, 0.3, 0.01)]
    # agent 0 stopped in round 1; agent 1 in round 2, which lasted a hair less than the stop as timed from
    # outside; agent 2 in round 3, which lasted less than half the stop (it was stopped after the round's clock,
    # before its row); then a stop after every agent's last round
    gaps = [([1, 2, 3], 1.0), ([5, 5, 5], 2.0)]
    adjusted = load("scale").remove_gaps(measured, gaps)
    # a round that held a stop takes the median of its agent's other rounds nearby
    assert [[r["seconds"] for r in agent] for agent in adjusted] == [
        [0.01, 0.015, 0.03, 0.01, 0.02], [0.01, 0.02, 0.01, 0.01, 0.01], [0.01, 0.01, 0.01, 0.3, 0.01]]
    assert measured[0][1]["seconds"] == 1.02  # the rows read are left as they were


def test_scale_table_pairs_repeats_in_order_and_shows_the_median_ratio_with_its_range():
    def run(algorithm: str, seconds: float, repeat: int, median: float | None = None) -> dict:
        return {"agents": 8, "topology": "ring", "algorithm": algorithm, "agents_per_process": 0, "processes": 2,
                "startup_s": 2.0 + repeat, "s_per_round": seconds, "first_tenth_s": seconds, "last_tenth_s": seconds,
                "bytes_per_round": 0, "peak_rss_mb_median": 400, "peak_rss_mb_max": 420, "peak_rss_mb_per_agent": 105,
                "pss_total_mb": 600, "repeat": repeat, "median_round_s": median}

    # pairs (gossip, floor): 0.022/0.020 = 1.10, 0.030/0.020 = 1.50, 0.021/0.0175 = 1.20; of their median rounds
    # 0.011/0.010 = 1.10, 0.024/0.020 = 1.20, and the third pair from a file without them
    results = [run("dsgdm-n", 0.022, 0, 0.011), run("local", 0.020, 0, 0.010), run("local", 0.020, 1, 0.020),
               run("dsgdm-n", 0.030, 1, 0.024), run("dsgdm-n", 0.021, 2), run("local", 0.0175, 2)]
    row = [line for line in load("scale").table(results).splitlines() if line.startswith("| 8 |")]
    assert len(row) == 1
    cells = [cell.strip() for cell in row[0].split("|")[1:-1]]
    assert cells[2] == "auto (2)" and cells[3] == "2.0"  # the median gossip run's start-up: repeat 0's
    assert cells[4] == "0.0220" and cells[5] == "0.0200"  # median s/round of each
    assert cells[6] == "1.20 (1.10-1.50, 3 pairs)"
    assert cells[7] == "1.15 (1.10-1.20, 2 pairs)"
    assert cells[8] == "0.0220 / 0.0220"  # a file without the tenths' median rounds


def test_scale_summary_gives_each_tenths_median_round_beside_its_mean():
    class Launch:
        agents, topology, algorithm, per_process = 2, "ring", "dsgdm-n", 0
        watcher = type("Watcher", (), {"peak_rss": {1: 1024}, "startup": 1.0, "peak_pss_total": 2048})()

    # 30 rounds: the first tenth (rounds 0-2) holds one stalled round, the last (27-29) a slow pace throughout
    seconds = [0.5, 0.01, 0.01] + [0.01] * 24 + [0.02, 0.02, 0.02]
    rows = [[{"seconds": s, "bytes_sent": 0} for s in seconds] for _ in range(2)]
    result = load("scale").summary(Launch(), rows)
    assert result["first_tenth_s"] == pytest.approx(0.52 / 3) and result["last_tenth_s"] == pytest.approx(0.02)
    assert result["first_tenth_median_s"] == pytest.approx(0.01)  # the stall moves the mean, not the median
    assert result["last_tenth_median_s"] == pytest.approx(0.02)
    assert load("scale").flatness(result) == "0.1733 / 0.0200 (medians 0.0100 / 0.0200)"


def test_scale_machine_line_sets_the_checks_before_gossip_runs_apart_from_those_before_floors():
    results = [{"algorithm": "dsgdm-n", "machine_step_ms": 7.0}, {"algorithm": "local", "machine_step_ms": 6.0},
               {"algorithm": "local", "machine_step_ms": 6.4}, {"algorithm": "dsgdm-n", "machine_step_ms": 8.0},
               {"algorithm": "dsgdm-n", "machine_step_ms": 7.5}, {"algorithm": "local"}]  # an older file: no check
    line = load("scale").machine_line(results)
    assert "before the gossip runs 7.50 ms (7.00-8.00), before the floors 6.20 ms (6.00-6.40)." in line


def test_dynamic_topologies_benchmark_writes_both_tables(tmp_path):
    text = load("dynamic_topologies").main(["--rounds", "2", "--seeds", "0", "--sizes", "8",
                                            "--kinds", "one-peer-exponential", "ring", "--results", str(tmp_path)])
    assert (tmp_path / "dynamic_topologies.md").read_text() == text
    assert "| 8 | one-peer-exponential | 3 |" in text and "| ring |" in text
    error = float(text.split("| 8 | one-peer-exponential | 3 | ")[1].split(" ")[0])
    assert error < 1e-6  # exact averaging after log2(8) rounds


def test_choco_benchmark_quick_mode_writes_table_and_plot(tmp_path):
    load("choco").main(["--quick", "--results", str(tmp_path)])
    table = (tmp_path / "choco_quick.md").read_text()
    for label in ("DSGDm-N (uncompressed)", "CHOCO top-k 1%", "CHOCO sign", "CHOCO qsgd s=15"):
        assert f"| {label} |" in table, label
    assert "| 1/1.0 |" in table and "| 1/30." in table  # sign: about 32 times fewer bytes, headers included
    # the runs are one sweep: its command is written above the table, its folder resumes
    assert "Runs: `p2pfl sweep examples/qgm_fmnist_ring16.yaml --cells benchmarks/choco_cells.yaml" in table
    assert (tmp_path / "runs" / "choco_quick" / "results.md").exists()
    assert (tmp_path / "choco_quick.png").read_bytes()[:4] == b"\x89PNG"


def test_gossip_only_benchmark_prints_both_exchanges_with_and_without_turns_and_as_greenlets(capsys):
    load("gossip_only").main(["--agents", "3", "--rounds", "5", "--size", "100"])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines] == [["inproc", "free-for-all"], ["inproc", "turns"],
                                                   ["inproc", "greenlets"], ["in-memory", "free-for-all"],
                                                   ["in-memory", "turns"]]
    assert all(float(line.split(": ")[1].split()[0]) > 0 for line in lines)


def test_gossip_only_hand_over_mode_prints_copied_and_frozen_runs_and_their_ratio(capsys):
    load("gossip_only").main(["--agents", "3", "--rounds", "5", "--size", "100", "--hand-over", "--repeats", "2"])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(": ")[0] for line in lines[:4]] == [
        "inproc greenlets one payload, copied", "inproc greenlets one payload, frozen",
        "inproc greenlets one payload, frozen", "inproc greenlets one payload, copied"]
    assert lines[4].startswith("frozen / copied (medians of 2): ") and float(lines[4].split(": ")[1]) > 0


def test_gossip_only_takes_a_topology_and_gossips_with_each_agents_neighbours_in_it(monkeypatch, capsys):
    module = load("gossip_only")
    outboxes = []
    exchange = module.ZmqExchange.exchange

    def recorded(self, round_, tag, outbox, **kwargs):
        outboxes.append((self.agent_id, tuple(sorted(outbox))))
        return exchange(self, round_, tag, outbox, **kwargs)

    monkeypatch.setattr(module.ZmqExchange, "exchange", recorded)
    module.main(["--agents", "9", "--rounds", "2", "--size", "100", "--hand-over", "--repeats", "1",
                 "--topology", "torus"])
    assert min(outboxes) == (0, (1, 2, 3, 6))  # a 3x3 torus: four neighbours each
    assert all(len(peers) == 4 for _, peers in outboxes)
    assert "frozen / copied" in capsys.readouterr().out


def test_worker_busy_reads_each_agent_process_cpu_share_in_both_runs(no_leaked_agents, capsys):
    found = load("worker_busy").main(["--agents", "3", "--topology", "ring", "--rounds", "1500", "--model", "mlp",
                                      "--data", "digits", "--period", "0.05", "--base-port", str(free_ports(1)[0])])
    assert sorted(found) == ["dsgdm-n", "local"]
    for shares in found.values():
        assert len(shares) == 2  # three agents packed into two workers on this 2-core machine's default
        assert all(0 < share < 1.5 for share in shares)  # a share of one core (a worker's ZeroMQ thread adds a bit)
    assert capsys.readouterr().out.startswith("dsgdm-n: ")


def test_zmq_copy_benchmark_prints_both_links_with_their_ratios(capsys):
    load("zmq_copy").main(["--messages", "20", "--size", "1000"])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["inproc", "tcp"]
    assert all("zero-copy / copied:" in line and float(line.split("copied: ")[1].split()[0]) > 0 for line in lines)


@pytest.mark.parametrize("scheduler,sliced", [("greenlets", False), ("threads", False), ("zmq-headers", True)])
def test_round_cpu_benchmark_times_each_phase_of_real_packed_runs_on_each_agents_own_clock(no_leaked_agents, capsys,
                                                                                           scheduler, sliced):
    """Three agents in two worker processes: the gossip run spends CPU on the exchange and the mixing, the floor
    on neither, both on their local steps. As greenlets, a wait switches to a mate without charging it the
    mate's work, and the hub's loop counts apart. The ZeroMQ I/O threads carry the gossip between the workers
    only with zmq-headers (else the Unix socket channel does, and what they do in a 12-round window, the last
    handshakes and heartbeats, can be more in the floor than in the gossip run). Time-sliced, the two runs
    write into one folder and each is read apart."""
    runs = load("round_cpu").main(["--agents", "3", "--rounds", "12", "--repeats", "1", "--model", "mlp",
                                   "--data", "digits", "--scheduler", scheduler,
                                   "--base-port", str(free_ports(1)[0]), *(["--slice", "0.01"] if sliced else []),
                                   *(["--exchange-parts"] if scheduler == "greenlets" else [])])
    assert sorted(r["algorithm"] for r in runs) == ["dsgdm-n", "local"]
    gossip, floor = ({r["algorithm"]: r for r in runs}[kind]["cpu_us"] for kind in ("dsgdm-n", "local"))
    assert gossip["exchange (params)"] > 0 and gossip["mix"] > 0 and floor["exchange (params)"] == floor["mix"] == 0
    if scheduler == "zmq-headers":
        assert gossip["ZeroMQ I/O threads"] > 0
    for phases in (gossip, floor):
        assert 0 < phases["local step"] < phases["step"] and phases["write into the model"] > 0
        assert (phases["hub loop (greenlets)"] > 0) == (scheduler != "threads")
    # An agent's clock stops while its mates run: waiting for its neighbours, it is not charged a mate's whole round
    # (which would put its exchange above two local steps; it takes 0.4-0.8 of one).
    assert gossip["exchange (params)"] < 1.5 * gossip["local step"]
    out = capsys.readouterr().out
    assert "| exchange (params) |" in out
    if scheduler == "greenlets":  # the exchange's parts: a message to the other worker and one to a mate each round
        for part in ("  encode (to a socket)", "  decode (from a socket)", "  check finite", "  channel send",
                     "  channel receive", "  hand over to a mate"):
            assert gossip[part] > floor[part], part  # the floor exchanges only its hellos and goodbyes
        assert "|   channel send |" in out
    else:
        assert all(gossip[part] == 0 for part in load("round_cpu").PARTS) and "|   channel send |" not in out


def test_pool_cost_quick_mode_times_both_poolings_and_writes_its_table(tmp_path):
    result = load("pool_cost").main(["--quick", "--results", str(tmp_path)])
    assert set(result) == {"gossip torch", "gossip compiled", "local torch", "local compiled"}
    assert all(figures["step_us"] > figures["pooling_us"] > 0 for figures in result.values())
    table = (tmp_path / "pool_cost_quick.md").read_text()
    assert "| gossip run | compiled |" in table and "the compiled pooling's step takes" in table


def test_mixing_kernels_benchmark_times_both_mixings_both_ways(capsys):
    rows = load("mixing_kernels").main(["--repeats", "1", "--number", "3"])
    assert {(row["mixing"], row["neighbours"]) for row in rows} == {
        (mixing, n) for mixing in ("gossip sum", "step towards (QGM, CCL)") for n in (2, 4)}
    assert all(row["torch_us"] > 0 and row["compiled_us"] > 0 for row in rows)
    assert "| step towards (QGM, CCL) | 4 |" in capsys.readouterr().out


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two usable cores")
def test_core_speeds_prints_pinned_and_rotated_spreads_of_one_process_per_core(capsys):
    core_speeds = load("core_speeds")
    core_speeds.main(["--seconds", "2.5", "--repeats", "1"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "%" in line]
    assert [row.split(" | ")[0] for row in rows] == ["| pinned, one per core", "| taking turns (core_rotation.py)"]
    for row in rows:
        short, largest = row.split(" | ")[1:3]
        assert float(short.rstrip("%")) >= 0 and float(largest.rstrip("x")) >= 1


def test_core_speeds_spread_is_the_mean_log_ratio_over_whole_windows():
    core_speeds = load("core_speeds")
    fast = [i * 0.01 for i in range(400)]  # 100 per second, for 4 s
    slow = [i * 0.02 for i in range(200)]  # 50 per second
    mean_log, largest = core_speeds.spreads([fast, slow], 1.0)
    assert largest == pytest.approx(2.0, rel=0.05) and mean_log == pytest.approx(100 * math.log(2), rel=0.05)
    assert core_speeds.spreads([fast[:50], slow[:25]], 1.0) is None  # not one whole window
