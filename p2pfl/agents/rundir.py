"""Layout of a run folder, in one place so writers and readers agree."""

from __future__ import annotations

from pathlib import Path

CONFIG = "config.yaml"
SUMMARY = "summary.json"
PLOT = "curves.png"
TOPOLOGY_PLOT = "topology.png"


def agent_dir(run_dir: Path, agent: int) -> Path:
    return Path(run_dir) / "agents" / f"{agent:03d}"


def metrics_path(run_dir: Path, agent: int) -> Path:
    return agent_dir(run_dir, agent) / "metrics.jsonl"


def params_path(run_dir: Path, agent: int, round_: int) -> Path:
    """Parameters after `round_`, saved at evaluation rounds (the last round always)."""
    return agent_dir(run_dir, agent) / f"params_r{round_:07d}.npy"


def saved_rounds(run_dir: Path, agent: int) -> list[int]:
    return sorted(int(p.stem[len("params_r"):]) for p in agent_dir(run_dir, agent).glob("params_r*.npy"))


def error_path(run_dir: Path, agent: int) -> Path:
    return agent_dir(run_dir, agent) / "error.txt"


def log_path(run_dir: Path, agent: int) -> Path:
    return agent_dir(run_dir, agent) / "agent.log"


def model_path(run_dir: Path, agent: int) -> Path:
    """The agent's final model as a state_dict (a gossip agent's, or a coordinator client's own)."""
    return agent_dir(run_dir, agent) / "model.pt"


def checkpoint_path(run_dir: Path, agent: int) -> Path:
    return agent_dir(run_dir, agent) / "checkpoint.pt"


def worker_log_path(run_dir: Path, worker: int) -> Path:
    """A packed worker's own stdout/stderr (its agents' log lines go to their agent.log)."""
    return Path(run_dir) / "workers" / f"{worker:03d}.log"
