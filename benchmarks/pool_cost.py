"""A LeNet-5 step with torch's max pooling and with the compiled one (p2pfl/models/pooling.py), on the models of a
gossip run and of a local-only run: what the pooling costs, and how much of it depends on the models' values.

torch's CPU max_pool2d takes a branch per element, so its time follows the data; a gossip run's local steps
were slower than its floor's (the same steps, no communication) by about as much as their pooling was. This
makes the two runs as `benchmarks/scale.py` makes a pair (a 16-agent torus, LeNet-5 on Fashion-MNIST, Dirichlet
0.1, batch 32, packed workers; DSGDm-N, then local only), unless `--runs` names their folders, and times on one
thread, the same Fashion-MNIST batches for every model, round robin over each run's first 8 agents (a packed
worker's share): a whole step (forward, backward) with each pooling, and the two pooling layers' forward alone.
Repeats alternate the four kinds; every figure is the median over them, in us per step.

    python benchmarks/pool_cost.py [--rounds 1200] [--repeats 8]
    python benchmarks/pool_cost.py --runs GOSSIP_RUN LOCAL_RUN   # folders of `p2pfl run --out`, agents/NNN/model.pt
    python benchmarks/pool_cost.py --quick   # fresh models, random images: a smoke test
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from p2pfl.models import build_model  # noqa: E402
from p2pfl.models.pooling import MaxPool2x2  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
AGENTS = 8  # a packed worker's share of a 16-agent torus on 2 cores
BATCHES = 100
BATCH = 32


def make_runs(rounds: int, port: int, folder: Path) -> tuple[Path, Path]:
    """A gossip run and a local-only run of scale.py's settings, one after the other; their run folders."""
    import scale

    args = argparse.Namespace(rounds=rounds, model="lenet5", data="fashion-mnist")
    folders = []
    for offset, algorithm in enumerate(("dsgdm-n", "local")):
        launch = scale.Launch(args, 16, "torus", algorithm, port + 100 * offset, 0, folder / algorithm)
        (folder / algorithm).mkdir(parents=True)
        launch.start()
        try:
            launch.wait()
        finally:
            launch.kill()
        if launch.launcher.returncode != 0:
            raise RuntimeError(f"the {algorithm} run failed:\n{launch.stderr.read_text()[-2000:]}")
        folders.append(launch.run_dir)
    return folders[0], folders[1]


def models_of(run: Path | None, torch_pooling: bool, seed: int) -> list[nn.Module]:
    """The first AGENTS agents' final models of `run` (fresh ones with no run), with torch's pooling or ours."""
    models = []
    for agent in range(AGENTS):
        torch.manual_seed(seed + agent)
        model = build_model("lenet5", (1, 28, 28), 10)
        if run is not None:
            model.load_state_dict(torch.load(run / "agents" / f"{agent:03d}" / "model.pt"))
        if torch_pooling:
            model.body = nn.Sequential(*[nn.MaxPool2d(2) if isinstance(layer, MaxPool2x2) else layer
                                         for layer in model.body])
        models.append(model)
    return models


def batches(quick: bool) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    if quick:
        x, y = torch.randn(BATCHES * BATCH, 1, 28, 28, generator=generator), torch.randint(10, (BATCHES * BATCH,))
    else:
        from p2pfl.data.normalize import normalized
        from p2pfl.data.sources import load_fashion_mnist

        data = normalized(load_fashion_mnist())
        order = torch.randperm(len(data.y_train), generator=generator)[:BATCHES * BATCH]
        x, y = torch.from_numpy(data.x_train)[order], torch.from_numpy(data.y_train)[order]
    return [(x[i:i + BATCH].contiguous(), y[i:i + BATCH]) for i in range(0, BATCHES * BATCH, BATCH)]


def step_us(models: list[nn.Module], data: list, steps: int) -> float:
    started = time.perf_counter()
    for step in range(steps):
        model = models[step % len(models)]
        x, y = data[step % len(data)]
        model.zero_grad(set_to_none=False)
        F.cross_entropy(model(x), y).backward()
    return (time.perf_counter() - started) / steps * 1e6


def pooling_us(models: list[nn.Module], data: list, steps: int) -> float:
    """The forward of the pooling layers alone, on the activations the model gives them."""
    spent = 0.0
    with torch.no_grad():
        for step in range(steps):
            hidden = data[step % len(data)][0]
            for layer in models[step % len(models)].body:
                if isinstance(layer, (nn.MaxPool2d, MaxPool2x2)):
                    started = time.perf_counter()
                    hidden = layer(hidden)
                    spent += time.perf_counter() - started
                else:
                    hidden = layer(hidden)
    return spent / steps * 1e6


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs=2, type=Path, metavar=("GOSSIP_RUN", "LOCAL_RUN"))
    parser.add_argument("--rounds", type=int, default=1200)
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--steps", type=int, default=160, help="steps per kind and repeat")
    parser.add_argument("--base-port", type=int, default=34000)
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--quick", action="store_true", help="fresh models, random images, 2 repeats of 16 steps")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # as each agent
    if args.quick:
        args.repeats, args.steps = 2, 16
    with tempfile.TemporaryDirectory(prefix="p2pfl-pool-") as tmp:
        runs = (None, None) if args.quick else tuple(args.runs or make_runs(args.rounds, args.base_port, Path(tmp)))
        kinds = {(source, pooling): models_of(run, pooling == "torch", seed)
                 for (source, run, seed) in (("gossip", runs[0], 0), ("local", runs[1], 100))
                 for pooling in ("torch", "compiled")}
    data = batches(args.quick)
    for models in kinds.values():  # warm: the kernels compiled, torch's caches filled
        step_us(models, data, 2 * AGENTS)
    steps, pools = {kind: [] for kind in kinds}, {kind: [] for kind in kinds}
    for _ in range(args.repeats):
        for kind, models in kinds.items():
            steps[kind].append(step_us(models, data, args.steps))
            pools[kind].append(pooling_us(models, data, args.steps))
    result = {f"{source} {pooling}": {"step_us": statistics.median(steps[(source, pooling)]),
                                      "pooling_us": statistics.median(pools[(source, pooling)])}
              for source, pooling in kinds}
    lines = ["| models of | pooling | step (us) | pooling forward (us) |", "| --- | --- | --- | --- |"]
    for name, figures in result.items():
        source, pooling = name.split()
        lines.append(f"| {source} run | {pooling} | {figures['step_us']:.0f} | {figures['pooling_us']:.0f} |")
    for pooling in ("torch", "compiled"):
        gossip, local = result[f"gossip {pooling}"], result[f"local {pooling}"]
        lines.append(f"\n{pooling} pooling: a gossip model's step {gossip['step_us'] - local['step_us']:+.0f} us "
                     f"({gossip['step_us'] / local['step_us'] - 1:+.1%}) over a local one's, its pooling "
                     f"{gossip['pooling_us'] - local['pooling_us']:+.0f} us")
    for source in ("gossip", "local"):
        lines.append(f"{source} models: the compiled pooling's step takes "
                     f"{result[f'{source} compiled']['step_us'] / result[f'{source} torch']['step_us']:.2f}x torch's")
    text = "\n".join(lines)
    name = "pool_cost_quick" if args.quick else "pool_cost"
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"{name}.json").write_text(json.dumps(result, indent=1))
    command = " ".join(argv if argv is not None else sys.argv[1:])
    (args.results / f"{name}.md").write_text(f"`{f'python benchmarks/pool_cost.py {command}'.rstrip()}` (one thread, LeNet-5, "
                                             f"batch {BATCH}, {AGENTS} agents round robin)\n\n{text}\n")
    print(text)
    return result


if __name__ == "__main__":
    main()
