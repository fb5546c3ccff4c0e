"""Kill one agent of a 16-agent ring mid-run and show the other 15 finishing with results.

    python benchmarks/fault_demo.py [--agents 16] [--rounds 1500] [--victim 5] [--kill-at 300]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from p2pfl.agents import rundir
from p2pfl.config import load_config, save_config

ROOT = Path(__file__).resolve().parents[1]


def agent_pid(agent: int) -> int | None:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == f"p2pfl-agent-{agent}":
                    return int(entry.name)
            except OSError:
                continue
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=1500)
    parser.add_argument("--victim", type=int, default=5)
    parser.add_argument("--kill-at", type=int, default=300)
    parser.add_argument("--base-port", type=int, default=29500)
    args = parser.parse_args()
    config = load_config(ROOT / "examples" / "ring16.yaml")
    config.agents, config.rounds, config.network.base_port = args.agents, args.rounds, args.base_port
    config.network.round_timeout, config.eval_every = 10.0, args.rounds // 3
    config.network.agents_per_process = 1  # the SIGKILL takes one agent, not its worker-mates
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        save_config(config, Path(tmp) / "run.yaml")
        launcher = subprocess.Popen([sys.executable, "-m", "p2pfl.cli", "run", str(Path(tmp) / "run.yaml"), "--out",
                                     str(run_dir), "--no-progress"], cwd=ROOT, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
        try:
            metrics = rundir.metrics_path(run_dir, args.victim)
            while not metrics.exists() or len(metrics.read_text().splitlines()) < args.kill_at:
                if launcher.poll() is not None:
                    raise SystemExit(launcher.communicate()[1])
                time.sleep(0.1)
            pid = agent_pid(args.victim)
            os.kill(pid, signal.SIGKILL)
            print(f"killed agent {args.victim} (pid {pid}) at round {args.kill_at}")
            out, err = launcher.communicate(timeout=3600)
        finally:
            launcher.kill()
        summary = json.loads((run_dir / rundir.SUMMARY).read_text())
        neighbours = [(args.victim - 1) % args.agents, (args.victim + 1) % args.agents]
        detect = []
        for n in neighbours:
            rows = [json.loads(l) for l in rundir.metrics_path(run_dir, n).read_text().splitlines()]
            detect.append(max(r["seconds"] for r in rows[args.kill_at - 5:]))
        print(err.strip().splitlines()[-1] if err.strip() else "")
        print(f"exit code {launcher.returncode}; agents finished {summary['agents_finished']}/{args.agents}; "
              f"not finished {summary['agents_not_finished']}")
        print(f"longest round of the victim's neighbours after the kill: {max(detect):.3f} s "
              f"(round timeout {config.network.round_timeout} s)")
        print(f"mean local accuracy of the survivors {100 * summary['local_accuracy_mean']:.2f}%, consensus "
              f"{100 * summary['consensus_accuracy']:.2f}%")


if __name__ == "__main__":
    main()
