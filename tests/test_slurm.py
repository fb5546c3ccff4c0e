"""`p2pfl slurm`: the sbatch script (always), and a real run on a private one-node Slurm (root, Debian's
slurm-wlm and munge: `make system-deps`; skipped without them)."""

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from p2pfl.agents.slurm_script import TEMPLATE
from p2pfl.cli.main import cli
from p2pfl.config import load_config, save_config
from tests.conftest import free_ports, run_cli, small_config

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scontrol", "srun")


def write_config(tmp_path: Path, agents: int, **changes) -> Path:
    config = small_config(agents=agents, **changes)
    config.network.addresses = None
    path = tmp_path / "run.yaml"
    save_config(config, path)
    return path


def test_dry_run_prints_the_script_and_the_submission_and_writes_nothing(tmp_path):
    config = write_config(tmp_path, agents=4, network__base_port=31000)
    run = tmp_path / "run"
    result = CliRunner().invoke(cli, ["slurm", str(config), "--nodes", "2", "--tasks-per-node", "2", "--partition",
                                      "cpu", "--time", "0:30:00", "--python", "/opt/venv/bin/python", "--out",
                                      str(run), "--dry-run"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    for directive in ("--nodes=2", "--ntasks-per-node=2", "--ntasks=4", "--partition=cpu", "--time=0:30:00",
                      f"--output={run.resolve()}/slurm-%j.out"):
        assert f"#SBATCH {directive}" in lines
    assert lines[0] == "#!/bin/bash"
    assert (f'scontrol show hostnames "$SLURM_JOB_NODELIST" | /opt/venv/bin/python -m p2pfl.cli slurm-addresses '
            f"{run.resolve()}/{TEMPLATE} {run.resolve()}/config.yaml --tasks-per-node 2") in lines
    assert (f"srun --distribution=block --label bash -c 'exec /opt/venv/bin/python -m p2pfl.cli agent --config "
            f"{run.resolve()}/config.yaml --id \"$SLURM_PROCID\" --out {run.resolve()}'") in lines
    assert lines[-1] == f"sbatch --parsable {run.resolve()}/job.sbatch"
    assert not run.exists()  # a dry run submits and writes nothing


def test_mismatched_agent_count_is_one_clear_error(tmp_path):
    config = write_config(tmp_path, agents=4)
    result = CliRunner().invoke(cli, ["slurm", str(config), "--nodes", "3", "--tasks-per-node", "2", "--dry-run"])
    assert result.exit_code == 2
    assert "--nodes 3 x --tasks-per-node 2 = 6 tasks but the config has 4 agents" in result.output
    fixed = CliRunner().invoke(cli, ["slurm", str(config), "--nodes", "3", "--tasks-per-node", "2", "--dry-run",
                                     "--set", "agents=6"])
    assert fixed.exit_code == 0, fixed.output
    assert "#SBATCH --ntasks=6" in fixed.output.splitlines()


def test_addresses_of_a_two_node_by_two_task_allocation_from_its_node_list(tmp_path):
    template = write_config(tmp_path, agents=4, network__base_port=31000, run_id="fixed-id")
    target = tmp_path / "config.yaml"
    result = CliRunner().invoke(cli, ["slurm-addresses", str(template), str(target), "--tasks-per-node", "2"],
                                input="cn017\ncn018\n")  # what `scontrol show hostnames cn[017-018]` prints
    assert result.exit_code == 0, result.output
    resolved = load_config(target)
    assert resolved.network.addresses == ["tcp://cn017:31000", "tcp://cn017:31001",
                                          "tcp://cn018:31000", "tcp://cn018:31001"]
    assert resolved.resolved_run_id() == "fixed-id"
    short = CliRunner().invoke(cli, ["slurm-addresses", str(template), str(target), "--tasks-per-node", "2"],
                               input="cn017\n")
    assert short.exit_code == 2 and "1 node(s) x 2 tasks = 2 but the config has 4 agents" in short.output


def test_the_submitted_template_fixes_the_run_id_the_job_keeps(tmp_path):
    """Agents read the config with addresses; the run id must be the one of the submitted run."""
    from p2pfl.agents.slurm_script import write_addresses

    config = small_config(agents=2)
    config.network.addresses = None
    config.run_id = config.resolved_run_id()
    save_config(config, tmp_path / TEMPLATE)
    resolved = write_addresses(tmp_path / TEMPLATE, ["localhost"], 2, tmp_path / "config.yaml")
    assert resolved.resolved_run_id() == config.run_id == load_config(tmp_path / "config.yaml").run_id


def test_set_overrides_are_in_the_config_every_task_reads(tmp_path, monkeypatch):
    """`--set` is applied before submission: the template on the shared file system, and so the config each
    task reads once the job wrote its addresses, carry the overrides (the tasks get no --set of their own)."""
    from p2pfl.agents.slurm_script import SCRIPT, write_addresses

    monkeypatch.setattr("p2pfl.cli.slurm_cmd.run_job", lambda config, run_dir: None)  # no Slurm: stop at submission
    config = write_config(tmp_path, agents=2, network__base_port=31000)
    run = tmp_path / "run"
    result = CliRunner().invoke(cli, ["slurm", str(config), "--nodes", "1", "--tasks-per-node", "2", "--out", str(run),
                                      "--set", "optim.lr=0.05", "--set", "rounds=7"])
    assert result.exit_code == 0, result.output
    template = load_config(run / TEMPLATE)
    assert template.optim.lr == 0.05 and template.rounds == 7
    resolved = write_addresses(run / TEMPLATE, ["cn017"], 2, run / "config.yaml")
    assert resolved.optim.lr == 0.05 and resolved.rounds == 7 and resolved.run_id == template.run_id
    assert "--set" not in (run / SCRIPT).read_text()


def installed(name: str) -> bool:
    return shutil.which(name) is not None or Path("/usr/sbin", name).exists()


def daemon_path(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def leftovers(home: Path) -> list[int]:
    """Our daemons and job steps, by process name, told ours by the private folder or SLURM_CONF they carry."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() not in (*DAEMONS, "slurmstepd"):
                continue
            text = (entry / "cmdline").read_bytes() + (entry / "environ").read_bytes()
        except OSError:
            continue
        if str(home).encode() in text:
            pids.append(int(entry.name))
    return pids


def slurm_conf(home: Path, ctld_port: int, slurmd_port: int) -> str:
    return "\n".join([
        "ClusterName=p2pfltest", "SlurmctldHost=localhost(127.0.0.1)", f"SlurmctldPort={ctld_port}",
        f"SlurmdPort={slurmd_port}", "SlurmUser=root", "SlurmdUser=root", "AuthType=auth/munge",
        "CredType=cred/munge", f"AuthInfo=socket={home}/munge.sock", f"StateSaveLocation={home}/state",
        f"SlurmdSpoolDir={home}/spool", f"SlurmctldPidFile={home}/slurmctld.pid",
        f"SlurmdPidFile={home}/slurmd.pid", f"SlurmctldLogFile={home}/slurmctld.log",
        f"SlurmdLogFile={home}/slurmd.log", "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
        "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU", "SchedulerType=sched/builtin",
        "JobAcctGatherType=jobacct_gather/none", "AccountingStorageType=accounting_storage/none",
        "MpiDefault=none", "ReturnToService=2", "SlurmdParameters=config_overrides",
        "NodeName=localhost NodeAddr=127.0.0.1 CPUs=2 State=UNKNOWN",
        "PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP", ""])


@pytest.fixture
def private_slurm(tmp_path_factory, monkeypatch):
    """munged, slurmctld and slurmd for one node (localhost, 2 CPUs) from a temp folder; every one stopped after."""
    missing = [name for name in (*DAEMONS, *CLIENTS) if not installed(name)]
    if os.geteuid() != 0 or missing:
        pytest.skip(f"needs root and Slurm ({', '.join(missing) or 'not root'} missing; `make system-deps` installs "
                    "slurm-wlm and munge)")
    home = tmp_path_factory.mktemp("slurm")
    (home / "state").mkdir()
    (home / "spool").mkdir()
    key = home / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    conf = home / "slurm.conf"
    conf.write_text(slurm_conf(home, *free_ports(2)))
    monkeypatch.setenv("SLURM_CONF", str(conf))  # the Slurm clients here and in `p2pfl slurm` read it
    env = dict(os.environ)
    try:
        subprocess.run([daemon_path("munged"), "--force", f"--socket={home}/munge.sock", f"--key-file={key}",
                        f"--pid-file={home}/munged.pid", f"--log-file={home}/munged.log",
                        f"--seed-file={home}/munged.seed"], check=True, env=env, timeout=30)
        subprocess.run([daemon_path("slurmctld"), "-c"], check=True, env=env, timeout=30)
        subprocess.run([daemon_path("slurmd"), "-N", "localhost"], check=True, env=env, timeout=30)
        deadline = time.monotonic() + 30
        while subprocess.run(["sinfo", "--noheader", "--format", "%t"], env=env, capture_output=True,
                             text=True).stdout.strip() != "idle":
            if time.monotonic() > deadline:
                logs = " | ".join((home / f).read_text()[-300:] for f in ("slurmctld.log", "slurmd.log")
                                  if (home / f).exists())
                pytest.skip(f"the private Slurm did not come up in 30 s: {logs}")
            time.sleep(0.5)
        yield env
    finally:
        subprocess.run(["scontrol", "shutdown"], env=env, capture_output=True, timeout=30)
        subprocess.run([daemon_path("munged"), "--stop", f"--socket={home}/munge.sock"], capture_output=True,
                       timeout=30)
        deadline = time.monotonic() + 10
        while leftovers(home) and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid in leftovers(home):
            os.kill(pid, signal.SIGKILL)


def test_slurm_runs_two_agents_on_a_private_one_node_cluster(tmp_path, private_slurm, no_leaked_agents):
    config = write_config(tmp_path, agents=2, rounds=40, eval_every=20, data__partition="iid",
                          network__base_port=free_ports(1)[0] % 20000 + 20000)
    run = tmp_path / "run"
    result = run_cli("slurm", str(config), "--nodes", "1", "--tasks-per-node", "2", "--time", "5", "--out", str(run))
    assert result.returncode == 0, result.stderr + result.stdout
    job = next(line.split()[2].rstrip(";") for line in result.stdout.splitlines() if line.startswith("submitted job"))
    assert f"job {job}: completed, exit code 0:0" in result.stdout and "consensus model" in result.stdout
    summary = json.loads((run / "summary.json").read_text())
    assert summary["mode"] == "slurm" and summary["agents_finished"] == 2
    assert summary["consensus_accuracy"] > 0.85 and summary["local_accuracy_mean"] > 0.85
    resolved = yaml.safe_load((run / "config.yaml").read_text())
    base = resolved["network"]["base_port"]
    assert resolved["network"]["addresses"] == [f"tcp://localhost:{base}", f"tcp://localhost:{base + 1}"]
    output = (run / f"slurm-{job}.out").read_text()
    assert "0: " in output and "1: " in output  # srun --label: each agent's lines under its task id
    for agent in (0, 1):
        assert (run / "agents" / f"{agent:03d}" / "model.pt").exists()


def fake_clients(folder: Path, monkeypatch, squeue_answers: list[str]) -> Path:
    """squeue, sacct and scancel stand-ins on PATH: squeue prints the next answer each call, scancel logs."""
    folder.mkdir()
    (folder / "answers").write_text("\n".join(squeue_answers) + "\n")
    scripts = {
        "squeue": f'line=$(head -n 1 {folder}/answers); sed -i 1d {folder}/answers; echo "$line"',
        "sacct": 'echo "COMPLETED|0:0"',
        "scancel": f'echo "$@" >> {folder}/cancelled',
    }
    for name, body in scripts.items():
        (folder / name).write_text(f"#!/bin/sh\n{body}\n")
        (folder / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}:{os.environ['PATH']}")
    return folder


def test_waiting_reports_each_state_once_and_returns_the_end_state(tmp_path, monkeypatch):
    from p2pfl.agents.slurm_job import wait_for

    fake = fake_clients(tmp_path / "bin", monkeypatch, ["PENDING|(Resources)", "PENDING|(Resources)",
                                                        "RUNNING|cn017", "RUNNING|cn017", ""])
    seen: list[str] = []
    assert wait_for("42", seen.append, poll=0) == ("COMPLETED", "0:0")
    assert seen == ["job 42: pending (Resources)", "job 42: running (cn017)"]
    assert not (fake / "cancelled").exists()


def test_an_interrupted_wait_cancels_the_job(tmp_path, monkeypatch):
    from p2pfl.agents.slurm_job import wait_for

    fake = fake_clients(tmp_path / "bin", monkeypatch, ["RUNNING|cn017"] * 5)

    def interrupt(_line: str) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        wait_for("42", interrupt, poll=0)
    assert (fake / "cancelled").read_text() == "42\n"
