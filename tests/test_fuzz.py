"""2,000 generated malformed messages thrown at a live agent process: it drops and counts them all and goes on."""

import signal
import subprocess
import sys
import time

import msgpack
import zmq
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from p2pfl.agents import rundir
from p2pfl.config import save_config
from tests.conftest import ROOT, MetricsTail, small_config

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
    config = small_config(agents=2, rounds=10**6, eval_every=0)  # stopped by Ctrl-C once the fuzzing is over
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
    rows = MetricsTail(rundir.metrics_path(tmp_path / "run", 0)).rows
    try:
        # Agent 0 a few rounds in before the fuzzing: when it started seconds after its neighbour (a loaded
        # machine), the neighbour's hello, repeated once a second meanwhile, waited queued for it, and the
        # repeats are dropped as such in its first rounds. Only the rounds after these count the fuzzer's.
        deadline = time.monotonic() + 120
        while len(rows()) < 5:
            assert time.monotonic() < deadline and launcher.poll() is None, launcher.communicate()
            time.sleep(0.1)
        before = len(rows())

        @settings(max_examples=FUZZ_MESSAGES, deadline=None, database=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(messages)
        def throw(frames):
            fuzzer.send_multipart(frames)
            sent.append(len(frames))

        throw()

        deadline = time.monotonic() + 120  # liveness only: every message is seen within a few rounds
        while sum(r["dropped"] for r in rows()[before:]) < FUZZ_MESSAGES:
            assert time.monotonic() < deadline and launcher.poll() is None, "the agent stopped or missed messages"
            time.sleep(0.2)
        seen_at = len(rows())
        while len(rows()) < seen_at + 50:  # and it goes on training after them
            assert time.monotonic() < deadline and launcher.poll() is None
            time.sleep(0.1)
        launcher.send_signal(signal.SIGINT)
        out, err = launcher.communicate(timeout=60)
    finally:
        fuzzer.close()
        launcher.kill()
    assert launcher.returncode == 130, err  # stopped by the Ctrl-C above, not by a crash
    assert len(sent) == FUZZ_MESSAGES
    history = rows()
    assert sum(r["dropped"] for r in history[before:]) == FUZZ_MESSAGES  # every one seen, dropped and counted
    assert [r["round"] for r in history] == list(range(len(history)))  # no round lost or repeated
    # The real neighbour was mixed in every round until the stop (it may go first at the Ctrl-C).
    assert all(r["neighbours_heard"] == 1 for r in history[:seen_at + 50])
    print(f"agent 0 ran {len(history)} rounds while dropping {FUZZ_MESSAGES} fuzzed messages")
