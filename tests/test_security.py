"""CurveZMQ: encrypted links, and a peer whose key is not on the list gets nothing through."""

import logging
import threading

import pytest
import torch
import zmq
import zmq.auth

from p2pfl.errors import UserError
from p2pfl.security import CurveKeys, generate_keys
from p2pfl.transport import ProcessLinks, ZmqExchange
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
    # A refused handshake can drop the DEALER's only pipe before the test sends: a send would then block for good
    # (it hung a loaded CI run for the whole 300 s test timeout). Refused is what these tests expect anyway.
    sock.setsockopt(zmq.SNDTIMEO, 2000)
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
                try:
                    sock.send_multipart(forged)
                except zmq.Again:  # its handshake was refused before the send: nothing to send it over
                    pass
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


@pytest.mark.parametrize("keys", ["given", "auto"])
def test_a_secured_multi_process_run(tmp_path, no_leaked_agents, keys):
    """With keys from `p2pfl keys generate`, or none at all: security.mode auto (the default) makes the run's
    own pairs in RUN/keys, secrets readable by the user alone, and the agents talk CURVE."""
    import json
    import stat

    from p2pfl.config import load_config, save_config
    from tests.conftest import run_cli, small_config

    config = small_config(agents=3, rounds=8)
    if keys == "given":
        config.security.mode, config.security.keys_dir = "curve", str(tmp_path / "keys")
        config.security.public_keys = generate_keys(tmp_path / "keys", 3)
    assert config.security.mode == ("curve" if keys == "given" else "auto")
    save_config(config, tmp_path / "run.yaml")
    result = run_cli("run", str(tmp_path / "run.yaml"), "--out", str(tmp_path / "run"), "--no-progress")
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["agents_finished"] == 3 and summary["messages_dropped"] == 0
    used = load_config(tmp_path / "run" / "config.yaml").security
    assert used.mode == "curve" and len(used.public_keys) == 3
    if keys == "auto":
        secrets = sorted((tmp_path / "run" / "keys").glob("*.key_secret"))
        assert len(secrets) == 3 and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in secrets)
        assert all(s.read_bytes() not in (tmp_path / "run" / "config.yaml").read_bytes() for s in secrets)


@pytest.mark.parametrize("address, loopback", [("tcp://127.0.0.1:29000", True), ("tcp://127.3.4.5:1", True),
                                               ("tcp://[::1]:29000", True), ("tcp://localhost:1", True),
                                               ("tcp://10.0.0.2:29000", False), ("tcp://lab-pc-3:29000", False),
                                               ("tcp://0.0.0.0:29000", False)])
def test_loopback_addresses(address, loopback):
    from p2pfl.security import is_loopback

    assert is_loopback(address) is loopback


def test_plain_links_off_loopback_need_an_opt_in_by_name(tmp_path):
    """An agent by hand or by spawn on a LAN address refuses plain mode before it binds anything."""
    from p2pfl.agents.process import run_agent
    from p2pfl.agents.spawn import Host, spawn
    from p2pfl.security import refuse_plain_off_loopback
    from tests.conftest import small_config

    config = small_config(agents=3, rounds=2)
    config.network.addresses = [f"tcp://10.231.9.{i + 1}:29400" for i in range(3)]
    assert config.security.mode == "auto"
    with pytest.raises(UserError, match="security.mode: none"):
        refuse_plain_off_loopback(config, [0, 1])
    assert run_agent(config, 1, tmp_path / "run", log_to_file=False) == UserError.exit_code
    assert "pose as an agent" in (tmp_path / "run" / "agents" / "001" / "error.txt").read_text()
    with pytest.raises(UserError, match="pose as an agent"):
        spawn(config, [Host("10.231.9.1", agents=3)], tmp_path / "spawned", "r", dry_run=True)
    for opt_in in ("none", "curve"):
        config.security.mode = opt_in
        refuse_plain_off_loopback(config, [0, 1, 2])  # the user chose by name
    config.security.mode, config.network.addresses = "auto", None  # 127.0.0.1 by default
    refuse_plain_off_loopback(config, [0, 1, 2])

def test_under_curve_a_neighbour_cannot_push_another_off_its_link(tmp_path):
    """Agent 2 (authenticated, a neighbour of 0) keeps connecting with routing id "1": under CURVE the dealers
    take no self-chosen routing id (libzmq gives each link its own, which no peer may claim), so agent 1's
    link to agent 0 stays up and every round of theirs is heard."""
    publics = generate_keys(tmp_path / "keys", 3)
    ports = free_ports(3)
    addr = {i: f"tcp://127.0.0.1:{p}" for i, p in enumerate(ports)}
    keys = lambda i, peers: CurveKeys.load(str(tmp_path / "keys"), i, publics, peers)  # noqa: E731
    a = ZmqExchange(0, addr[0], {1: addr[1], 2: addr[2]}, "run", 3.0, curve=keys(0, [1, 2]))
    b = ZmqExchange(1, addr[1], {0: addr[0]}, "run", 3.0, curve=keys(1, [0]))
    public2, secret2 = zmq.auth.load_certificate(str(tmp_path / "keys" / "agent-2.key_secret"))
    stop = threading.Event()

    def take_over():
        while not stop.is_set():
            liar = intruder(addr[0], public2, secret2, publics[0].encode(), identity=b"1")
            liar.send_multipart([bytes(f) for f in encode("run", 2, 0, "noise", {"x": torch.zeros(2)})])
            stop.wait(0.05)
            liar.close()

    heard = []
    try:
        thread = threading.Thread(target=take_over)
        thread.start()
        for r in range(12):
            other = threading.Thread(target=b.exchange, args=(r, "params", {0: {"x": torch.ones(2)}}))
            other.start()
            got = a.exchange(r, "params", {1: {"x": torch.zeros(2)}}, expect_from=[1])
            other.join(10)
            heard.append(1 in got)
    finally:
        stop.set()
        thread.join(5)
        a.close()
        b.close()
    assert all(heard), heard


def test_packed_mates_talk_in_process_and_a_remote_key_cannot_pose_as_a_mate(tmp_path):
    """Agents 0 and 1 share a process (ProcessLinks), agent 2 is elsewhere: 0 and 1 reach each other over
    inproc although 1's TCP address is wrong in 0's map; 2, authenticated, claims mate 1's routing id and
    still counts as 2 (its key names it), while each inbox keeps its own ZAP domain of neighbours' keys."""
    publics = generate_keys(tmp_path / "keys", 3)
    ports = free_ports(3)
    addr = {i: f"tcp://127.0.0.1:{p}" for i, p in enumerate(ports)}
    links = ProcessLinks("run", mates=[0, 1])
    load = lambda i, peers: CurveKeys.load(str(tmp_path / "keys"), i, publics, peers)  # noqa: E731
    a = ZmqExchange(0, addr[0], {1: "tcp://127.0.0.1:1", 2: addr[2]}, "run", 5.0, curve=load(0, [1, 2]), links=links)
    b = ZmqExchange(1, addr[1], {0: addr[0]}, "run", 5.0, curve=load(1, [0]), links=links)
    public2, secret2 = zmq.auth.load_certificate(str(tmp_path / "keys" / "agent-2.key_secret"))
    remote = intruder(addr[0], public2, secret2, publics[0].encode(), identity=b"1")
    stranger = intruder(addr[1], public2, secret2, publics[1].encode(), identity=b"0")  # 2 is no neighbour of 1
    try:
        remote.send_multipart([bytes(f) for f in encode("run", 2, 0, "params", {"x": torch.full((2,), 2.0)})])
        try:
            stranger.send_multipart([bytes(f) for f in encode("run", 0, 0, "params", {"x": torch.full((2,), 9.0)})])
        except zmq.Again:  # refused at the handshake before the send (intruder())
            pass
        out = {}
        t = threading.Thread(target=lambda: out.update(b.exchange(0, "params", {0: {"x": torch.ones(2)}}, timeout=3)))
        t.start()
        got = a.exchange(0, "params", {1: {"x": torch.zeros(2)}, 2: {"x": torch.zeros(2)}})
        t.join(10)
    finally:
        remote.close()
        stranger.close()
        a.close()
        b.close()
        links.close()
    assert got[1]["x"].tolist() == [1.0, 1.0] and got[2]["x"].tolist() == [2.0, 2.0]
    assert out[0]["x"].tolist() == [0.0, 0.0]  # not the stranger's 9s: its key is not one of agent 1's neighbours
    assert sum(a.stats.dropped.values()) == 0 and sum(b.stats.dropped.values()) == 0
