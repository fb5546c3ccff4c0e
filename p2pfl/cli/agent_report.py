"""What a hand-started agent prints when it is done, and the model it leaves in its folder."""

from __future__ import annotations

import json
from pathlib import Path

from p2pfl.agents import rundir
from p2pfl.config import RunConfig


def agent_result(config: RunConfig, run_dir: Path, agent: int) -> str:
    from p2pfl.registry import ALGORITHMS

    path = rundir.metrics_path(run_dir, agent)
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    if ALGORITHMS[config.algorithm].centralized:
        from p2pfl.agents.coordinator_export import exported_files

        own = [f for f in exported_files(run_dir, config.agents) if f.startswith(f"agents/{agent:03d}/")]
        where = f"; final model(s): {', '.join(own)}" if own else ""
        return f"agent {agent} finished{where}; metrics in {run_dir}"
    if not rows:
        return f"agent {agent} finished; metrics in {run_dir}"
    from p2pfl.agents.setup import dataset_of
    from p2pfl.export import export_agent_model

    evaluated = [r for r in rows if "test_accuracy" in r]
    parts = [f"agent {agent} finished {rows[-1]['round'] + 1} rounds", f"training loss {rows[-1]['loss']:.4f}"]
    if evaluated:
        parts.append(f"test accuracy {100 * evaluated[-1]['test_accuracy']:.2f}% (its own model, after round "
                     f"{evaluated[-1]['round'] + 1})")
    model = export_agent_model(config, dataset_of(config), run_dir, agent)
    where = f"; model (state_dict) in {model}" if model else ""
    return ", ".join(parts) + where + f"; metrics in {run_dir}"
