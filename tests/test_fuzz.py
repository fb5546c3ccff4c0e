"""2,000 generated malformed messages thrown at a live agent process: it drops them all and finishes."""

import json
import subprocess
import sys
import time

import msgpack
import zmq
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from p2pfl.agents import rundir
from p2pfl.config import save_config
from tests.conftest import ROOT, small_config

FUZZ_MESSAGES = 2_000  # hypothesis spends ~5 ms generating each; 10,000 took 52-92 s of a suite that must stay under 10 minutes

header_values = st.one_of(st.integers(-2**40, 2**40), st.text(max_size=12), st.booleans(), st.none(),
                          st.binary(max_size=8), st.floats(allow_nan=True))
tensor_entries = st.lists(st.tuples(st.text(max_size=8), st.sampled_from(["float32", "int64", "object", "<f4", ""]),
                                    st.lists(st.integers(-3, 2**40), max_size=4)).map(list), max_size=3)
headers = st.fixed_dictionaries(
    {"v": st.sampled_from([1, 2, "1"]), "run": st.sampled_from(["", "other"]), "from": st.integers(-1, 9),
     "round": st.integers(-5, 10**6), "tag": st.sampled_from(["params", "hello", "features", ""]),
     "t": tensor_entries},
    optional={"x": header_values}).map(lambda h: msgpack.packb(h))
messages = st.one_of(
    st.lists(st.binary(max_size=256), min_size=1, max_size=4),  # raw garbage
    st.tuples(headers, st.lists(st.binary(max_size=64), max_size=3)).map(lambda t: [t[0], *t[1]]),
    st.tuples(st.dictionaries(st.text(max_size=4), header_values, max_size=6).map(msgpack.packb),
              st.lists(st.binary(max_size=16), max_size=2)).map(lambda t: [t[0], *t[1]]),
)


def test_agent_survives_two_thousand_malformed_messages(tmp_path, no_leaked_agents):
    config = small_config(agents=2, rounds=20000, eval_every=0)
    config.topology.kind = "complete"
    config.security.mode = "none"  # plain links, so the fuzzer reaches the wire decoder (CURVE: test_security)
    save_config(config, tmp_path / "run.yaml")
    launcher = subprocess.Popen([sys.executable, "-m", "p2pfl.cli", "run", str(tmp_path / "run.yaml"), "--out",
                                 str(tmp_path / "run"), "--no-progress"], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    fuzzer = zmq.Context.instance().socket(zmq.DEALER)
    fuzzer.setsockopt(zmq.LINGER, 0)
    fuzzer.setsockopt(zmq.IDENTITY, b"7")  # a stranger; the real neighbour holds identity "1"
    fuzzer.setsockopt(zmq.SNDHWM, 0)
    fuzzer.connect(config.address(0))
    sent = []
    try:
        deadline = time.monotonic() + 120
        while not rundir.metrics_path(tmp_path / "run", 0).exists():  # agent 0 is past its handshake
            assert time.monotonic() < deadline and launcher.poll() is None, launcher.communicate()
            time.sleep(0.1)

        @settings(max_examples=FUZZ_MESSAGES, deadline=None, database=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(messages)
        def throw(frames):
            fuzzer.send_multipart(frames)
            sent.append(len(frames))

        throw()
        assert launcher.poll() is None, "the run ended before the fuzzing did; raise rounds"
        out, err = launcher.communicate(timeout=600)
    finally:
        fuzzer.close()
        launcher.kill()
    assert launcher.returncode == 0, err
    assert len(sent) == FUZZ_MESSAGES
    rows = [json.loads(line) for line in rundir.metrics_path(tmp_path / "run", 0).read_text().splitlines()]
    assert rows[-1]["round"] == config.rounds - 1
    assert sum(r["dropped"] for r in rows) == FUZZ_MESSAGES  # every one seen, dropped and counted
    print(f"agent 0 finished {config.rounds} rounds after dropping {FUZZ_MESSAGES} fuzzed messages")
