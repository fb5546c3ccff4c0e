"""Is B faster than A? Two variants of one gossip run, time-sliced against each other.

`scale.py` sets a gossip run beside its compute floor; this sets two gossip runs side by side that differ in one
thing: the code (`--tree-b`, another checkout, e.g. `git worktree add /tmp/try HEAD` with a change in it) or the
environment (`--env-b VAR=VALUE`, a switch the code reads). A is this checkout with the environment as it is.
Each pair starts both runs (each alone, so its start-up is its own), then lets each run alone for `--slice`
seconds in turn while the other stands stopped, so both see the same minutes of a machine whose pace moves
10-20% within an hour; the time a run stood stopped is taken out of the rounds its agents were in (scale.py's
`time_sliced`). Pairs alternate which variant starts. For each pair it prints both s/round (the mean round
between the first and the last 10% of rounds) and median rounds, and B over A for each; then the median of those
ratios over the pairs (under 1: B is faster). A change of 1-2% needs several pairs: single pairs of the same code
spread by about that much.

    python benchmarks/ab.py --tree-b /tmp/try --agents 8 --topology torus --rounds 1200 --pairs 4
    python benchmarks/ab.py --env-b P2PFL_SOMETHING=1 --agents 16 --topology torus
    python benchmarks/ab.py --quick --env-b X=1     # digits MLP, 3 agents on a ring, 12 rounds (the test suite)
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import scale  # noqa: E402  (beside this file, not a package)


def variant_runs(args, env_b: dict[str, str], b_first: bool) -> dict[str, dict]:
    """One time-sliced pair: {"A": result, "B": result} (scale.Launch.result)."""
    order = ("B", "A") if b_first else ("A", "B")
    with tempfile.TemporaryDirectory(prefix="p2pfl-ab-") as tmp:
        launches = []
        for index, name in enumerate(order):
            folder = Path(tmp) / name
            folder.mkdir()
            launches.append(scale.Launch(args, args.agents, args.topology, args.algorithm,
                                         args.base_port + 1000 * index, args.agents_per_process, folder,
                                         own_group=True, root=args.tree_b if name == "B" else scale.ROOT,
                                         env=env_b if name == "B" else None))
        gaps = scale.time_sliced(launches, args.slice)
        return {name: launch.result(launch_gaps) for name, launch, launch_gaps in zip(order, launches, gaps)}


def pair_row(pair: int, runs: dict[str, dict]) -> dict:
    a, b = runs["A"], runs["B"]
    return {"pair": pair, "a_s_per_round": a["s_per_round"], "b_s_per_round": b["s_per_round"],
            "a_median_round_s": a["median_round_s"], "b_median_round_s": b["median_round_s"],
            "b_over_a": b["s_per_round"] / a["s_per_round"],
            "b_over_a_median_rounds": b["median_round_s"] / a["median_round_s"]}


def summary(rows: list[dict]) -> str:
    lines = ["| pair | A s/round | B s/round | B / A | A median round | B median round | B / A |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['pair']} | {r['a_s_per_round']:.4f} | {r['b_s_per_round']:.4f} | {r['b_over_a']:.3f} | "
              f"{r['a_median_round_s']:.4f} | {r['b_median_round_s']:.4f} | {r['b_over_a_median_rounds']:.3f} |"
              for r in rows]
    means = [r["b_over_a"] for r in rows]
    medians = [r["b_over_a_median_rounds"] for r in rows]
    lines += ["", f"B / A over {len(rows)} pairs: {statistics.median(means):.3f} in s/round "
                  f"({min(means):.3f}-{max(means):.3f}), {statistics.median(medians):.3f} in median rounds "
                  f"({min(medians):.3f}-{max(medians):.3f}); under 1: B is faster"]
    return "\n".join(lines)


def parse_env(pairs: list[str]) -> dict[str, str]:
    env = {}
    for item in pairs:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise SystemExit(f"--env-b takes VAR=VALUE, not {item!r}")
        env[name] = value
    return env


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree-b", type=Path, default=scale.ROOT,
                        help="the checkout B runs (default: this one, for an --env-b comparison)")
    parser.add_argument("--env-b", action="append", default=[], metavar="VAR=VALUE",
                        help="set for B's run only (repeatable)")
    parser.add_argument("--agents", type=int, default=8)
    parser.add_argument("--topology", default="torus")
    parser.add_argument("--algorithm", default="dsgdm-n")
    parser.add_argument("--rounds", type=int, default=1200)
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--slice", type=float, default=1.0, help="seconds each run runs alone in its turn")
    parser.add_argument("--agents-per-process", type=int, default=0)
    parser.add_argument("--model", default="lenet5")
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--base-port", type=int, default=35000)
    parser.add_argument("--results", type=Path, help="a folder for ab.json and ab.md")
    parser.add_argument("--quick", action="store_true", help="digits MLP, 3 agents on a ring, 12 rounds, 1 pair")
    args = parser.parse_args(argv)
    if args.quick:
        args.agents, args.topology, args.rounds, args.model, args.data, args.pairs = 3, "ring", 12, "mlp", "digits", 1
    env_b = parse_env(args.env_b)
    args.tree_b = args.tree_b.resolve()
    if not (args.tree_b / "p2pfl" / "cli").is_dir():
        raise SystemExit(f"--tree-b {args.tree_b} is not a p2pfl checkout")
    if args.tree_b == scale.ROOT and not env_b:
        print("A and B are the same code and environment: this measures the spread of identical pairs", flush=True)
    rows = []
    for pair in range(args.pairs):
        rows.append(pair_row(pair, variant_runs(args, env_b, b_first=pair % 2 == 1)))
        print(json.dumps(rows[-1]), flush=True)
    text = summary(rows)
    print(text)
    if args.results is not None:
        args.results.mkdir(parents=True, exist_ok=True)
        command = f"python benchmarks/ab.py {' '.join(argv if argv is not None else sys.argv[1:])}"
        (args.results / "ab.json").write_text(json.dumps({"command": command, "pairs": rows}, indent=1))
        (args.results / "ab.md").write_text(f"`{command}`\n\n{text}\n")
    return rows


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, scale._end_on_sigterm)
    main()
