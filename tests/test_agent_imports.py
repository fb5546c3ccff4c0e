"""What an agent process imports is what it holds: scikit-learn and scipy (~100 MB resident) only when a
coordinator method clusters, never for a gossip agent."""

import os
import subprocess
import sys

from p2pfl.data.cache import CACHE_ENV
from tests.conftest import ROOT, child_env

PROBE = """
import sys
import p2pfl.agents.process
print(sorted({m.split('.')[0] for m in sys.modules} & {'sklearn', 'scipy', 'matplotlib'}))
"""


def test_the_agent_entry_point_imports_no_scikit_learn_scipy_or_matplotlib():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, cwd=ROOT,
                         env=child_env()).stdout.strip()
    assert out == "[]"


CACHED_DIGITS = """
import sys
from p2pfl.data import load_dataset
load_dataset("digits")
print('sklearn' in sys.modules)
"""


def test_digits_read_from_the_dataset_cache_import_no_scikit_learn(tmp_path):
    """Only preparing the entry needs scikit-learn's loader; a packed worker reading it (every run after the first)
    would otherwise import scikit-learn for its version alone: 1.4-1.8 s of each worker's start on a slow core."""
    env = {**child_env(), CACHE_ENV: str(tmp_path)}

    def probe() -> str:
        return subprocess.run([sys.executable, "-c", CACHED_DIGITS], capture_output=True, text=True, check=True,
                              cwd=ROOT, env=env).stdout.strip()

    assert probe() == "True"  # the first prepares the entry from scikit-learn's copy
    assert probe() == "False"  # the next reads it from the cache
