"""Per-round records of a short `--simulate` run of every gossip algorithm and coordinator method.

A refactor that should not change behaviour must leave these records identical: the golden file
holds them as recorded before it, `tests/test_golden_records.py` compares (bit for bit where the CPU rounds as
the recording machine's did; on another, every count and key exactly and the floats within float noise).
Timings are left out (they differ run to run); everything else a metrics row holds is kept.
Regenerate deliberately (a change of random streams, say so in the commit):
    PYTHONPATH=$PWD python -m tests.golden_records --write
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from unittest import mock

import torch

from p2pfl.agents import rundir
from p2pfl.agents.setup import prepare
from p2pfl.agents.simulate import run_simulation
from p2pfl.registry import ALGORITHMS
from p2pfl.config import RunConfig, load_config
from p2pfl.constants import TAG_BYE
from p2pfl.exchange import InMemoryHub

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).parent / "golden" / "records.json"
# Bit-exact records hold for one PyTorch build only: another version (or a CUDA build) rounds differently.
RECORDED_WITH = GOLDEN.with_name("torch_version.txt")
TIMINGS = {"seconds", "compute_seconds", "comm_seconds", "wait_seconds"}
GOSSIP_EXAMPLE = "ring16.yaml"
# name -> (example config, options over it); small runs that still take every branch of each method
COORDINATOR_RUNS: dict[str, tuple[str, dict]] = {
    "fedavg": ("fedavg_rotated.yaml", {}),
    "ifca": ("ifca_rotated.yaml", {"participation": 0.5}),
    "clove": ("clove_rotated.yaml", {"patience": 1}),
    "clove-autoencoder": ("clove_autoencoder.yaml", {}),
    "cpcfl": ("cpcfl_rotated.yaml", {"pretrain_rounds": 1}),
    "cpcfl-identical": ("cpcfl_rotated.yaml", {"pretrain_rounds": 1, "init": "identical"}),
    "cpcfl-coordinator": ("cpcfl_rotated.yaml", {"pretrain_mode": "coordinator", "pretrain_rounds": 1,
                                                 "coordinator_samples": 40}),
    "fedtsdp": ("fedtsdp_label_swap.yaml", {"warmup_rounds": 1, "hopkins_patience": 1}),
    "mtl": ("mtl_digits.yaml", {}),
    "local-only": ("local_only_rotated.yaml", {}),
}


def gossip_config(algorithm: str) -> RunConfig:
    config = load_config(ROOT / "examples" / GOSSIP_EXAMPLE)
    config.algorithm, config.agents, config.rounds, config.eval_every, config.seed = algorithm, 4, 4, 2, 3
    return config


def coordinator_config(example: str, options: dict) -> RunConfig:
    config = load_config(ROOT / "examples" / example)
    config.agents, config.rounds, config.seed = 9, 3, 3
    config.options.update({"local_epochs": 1, **options})
    return config


def all_configs() -> dict[str, RunConfig]:
    gossip = {name: gossip_config(name) for name, entry in ALGORITHMS.items() if not entry.centralized}
    return {**gossip, **{name: coordinator_config(*run) for name, run in COORDINATOR_RUNS.items()}}


def records(config: RunConfig, run_dir: Path) -> list[dict]:
    """Every metrics row of every agent, timings left out, in agent then round order; then what each
    agent's exchange sent and received by message kind over the whole run."""
    endpoints: list = []
    make = InMemoryHub.endpoint

    def recorded(hub, *args, **kwargs):
        endpoints.append(make(hub, *args, **kwargs))
        return endpoints[-1]

    with mock.patch.object(InMemoryHub, "endpoint", recorded):
        run_simulation(prepare(config), run_dir)
    rows = []
    for agent in range(config.agents):
        path = rundir.metrics_path(run_dir, agent)
        if path.exists():
            rows += [{k: v for k, v in json.loads(line).items() if k not in TIMINGS}
                     for line in path.read_text().splitlines()]
    return rows + [{"agent": e.agent_id, "sent_by_tag": dict(sorted(e.stats.sent_by_tag.items())),
                    "received_by_tag": {tag: n for tag, n in sorted(e.stats.received_by_tag.items()) if tag != TAG_BYE}}
                   for e in endpoints]  # the closing "bye" is best-effort: whether it arrives depends on timing


def record_all() -> dict[str, list[dict]]:
    with tempfile.TemporaryDirectory() as tmp:
        return {name: records(config, Path(tmp) / name) for name, config in all_configs().items()}


def main(argv: list[str]) -> int:
    got = record_all()
    if "--write" in argv:
        GOLDEN.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
        RECORDED_WITH.write_text(torch.__version__ + "\n")
        print(f"wrote {GOLDEN} (torch {torch.__version__})")
        return 0
    golden = json.loads(GOLDEN.read_text())
    differ = [name for name in golden.keys() | got.keys() if golden.get(name) != json.loads(json.dumps(got.get(name)))]
    print("identical" if not differ else f"records differ: {', '.join(sorted(differ))}")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
