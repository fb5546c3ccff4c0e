"""CurveZMQ: encrypted links, and a peer whose key is not on the list gets nothing through."""

import logging
import threading

import pytest
import torch
import zmq
import zmq.auth

from p2pfl.security import CurveKeys, generate_keys
from p2pfl.transport import ZmqExchange
from p2pfl.wire import encode
from tests.conftest import free_ports


@pytest.fixture
def secured(tmp_path):
    publics = generate_keys(tmp_path / "keys", 3)
    ports = free_ports(2)
    addr = {i: f"tcp://127.0.0.1:{p}" for i, p in enumerate(ports)}
    ends = [ZmqExchange(i, addr[i], {1 - i: addr[1 - i]}, "run", 5.0,
                        curve=CurveKeys.load(str(tmp_path / "keys"), i, publics, [1 - i])) for i in range(2)]
    yield ends, addr, tmp_path / "keys", publics
    for end in ends:
        end.close()


def test_secured_agents_exchange(secured):
    (a, b), *_ = secured
    out = {}
    t = threading.Thread(target=lambda: out.update(b.exchange(0, "params", {0: {"x": torch.ones(4)}})))
    t.start()
    got = a.exchange(0, "params", {1: {"x": torch.zeros(4)}})
    t.join(10)
    assert got[1]["x"].tolist() == [1, 1, 1, 1] and out[0]["x"].tolist() == [0, 0, 0, 0]


def intruder(addr, public, secret, server_key, identity=b"1"):
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.IDENTITY, identity)
    if public is not None:
        sock.curve_publickey, sock.curve_secretkey, sock.curve_serverkey = public, secret, server_key
    sock.connect(addr)
    return sock


def test_a_wrong_key_gets_nothing_through_and_is_logged(secured, tmp_path, caplog):
    (a, b), addr, keys_dir, publics = secured
    wrong_public, wrong_secret = zmq.curve_keypair()
    unlisted = intruder(addr[0], wrong_public, wrong_secret, publics[0].encode())
    plain = intruder(addr[0], None, None, None)
    # agent 2 has a valid key pair of this run, but it is not a neighbour of agent 0.
    stranger_public, stranger_secret = zmq.auth.load_certificate(str(keys_dir / "agent-2.key_secret"))
    stranger = intruder(addr[0], stranger_public, stranger_secret, publics[0].encode())
    forged = [bytes(f) for f in encode("run", 1, 0, "params", {"x": torch.full((2,), -1.0)})]
    try:
        with caplog.at_level(logging.WARNING, logger="p2pfl.security"):
            for sock in (unlisted, plain, stranger):
                sock.send_multipart(forged)
            got = a.exchange(0, "params", {1: {"x": torch.zeros(2)}}, timeout=2)
    finally:
        for sock in (unlisted, plain, stranger):
            sock.close()
    assert got == {}  # b sent nothing; none of the forged messages was accepted
    assert sum(a.stats.dropped.values()) == 0  # refused at the handshake: not even decoded
    refused = [r for r in caplog.records if "refused a connection from an unknown key" in r.getMessage()]
    assert len(refused) >= 2


def test_an_authenticated_neighbour_cannot_pose_as_another(tmp_path):
    publics = generate_keys(tmp_path / "keys", 3)
    ports = free_ports(3)
    addr = {i: f"tcp://127.0.0.1:{p}" for i, p in enumerate(ports)}
    a = ZmqExchange(0, addr[0], {1: addr[1], 2: addr[2]}, "run", 5.0,
                    curve=CurveKeys.load(str(tmp_path / "keys"), 0, publics, [1, 2]))
    public2, secret2 = zmq.auth.load_certificate(str(tmp_path / "keys" / "agent-2.key_secret"))
    liar = intruder(addr[0], public2, secret2, publics[0].encode(), identity=b"1")
    try:
        liar.send_multipart([bytes(f) for f in encode("run", 1, 0, "params", {"x": torch.zeros(2)})])
        got = a.exchange(0, "params", {1: {"x": torch.zeros(2)}}, timeout=2)
    finally:
        liar.close()
        a.close()
    assert got == {}
    assert a.stats.dropped["identity mismatch"] == 1


def test_keys_generate_cli_writes_pairs_and_the_config_block(tmp_path):
    from click.testing import CliRunner
    import yaml

    from p2pfl.cli.main import cli

    result = CliRunner().invoke(cli, ["keys", "generate", str(tmp_path / "k"), "--agents", "4"])
    assert result.exit_code == 0, result.output
    block = yaml.safe_load((tmp_path / "k" / "security.yaml").read_text())["security"]
    assert block["mode"] == "curve" and len(block["public_keys"]) == 4
    assert (tmp_path / "k" / "agent-3.key_secret").exists()
    keys = CurveKeys.load(str(tmp_path / "k"), 1, block["public_keys"], [0, 2])
    assert keys.peers[2] == block["public_keys"][2].encode()


def test_a_secured_multi_process_run(tmp_path, no_leaked_agents):
    import json

    from p2pfl.config import save_config
    from tests.conftest import run_cli, small_config

    config = small_config(agents=3, rounds=8)
    config.security.mode, config.security.keys_dir = "curve", str(tmp_path / "keys")
    config.security.public_keys = generate_keys(tmp_path / "keys", 3)
    save_config(config, tmp_path / "run.yaml")
    result = run_cli("run", str(tmp_path / "run.yaml"), "--out", str(tmp_path / "run"), "--no-progress")
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["agents_finished"] == 3 and summary["messages_dropped"] == 0
