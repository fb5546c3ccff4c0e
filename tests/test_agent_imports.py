"""What an agent process imports is what it holds: scikit-learn and scipy (~100 MB resident) only when a
coordinator method clusters, never for a gossip agent."""

import os
import subprocess
import sys

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
