"""`--simulate` on the packed engine: the agents' links over Unix sockets in a private folder, not TCP ports.

Worker processes (one per core), neighbours in a worker over inproc://, neighbours in different workers over
ipc:// in a folder only this user can enter (mode 0700). Nobody else on the machine can connect, so the links
need no keys (the run's CurveZMQ keys would also be files of this user), no port is taken, and no frame goes
through TCP or encryption. The agents, the wire format and the validation are those of a real run.
"""

from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from p2pfl.config import RunConfig
from p2pfl.transport import IPC_PREFIX


@contextmanager
def unix_socket_links(config: RunConfig) -> Iterator[Path]:
    """Rewrite `config`'s addresses to sockets in a fresh private folder (removed afterwards) and its security
    to none; save the config after this, for the agents read their addresses from the saved file."""
    # mkdtemp makes it 0700. Its path is short enough for a socket (107 bytes) wherever multiprocessing's
    # forkserver, which binds one of its own under the same temporary folder, could start at all.
    folder = Path(tempfile.mkdtemp(prefix="p2pfl-"))
    config.network.addresses = [f"{IPC_PREFIX}{folder}/{agent}" for agent in range(config.agents)]
    config.security.mode = "none"
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
