"""CurveZMQ key pairs for agents: every link encrypted, only listed public keys may connect.

Without it, anyone who reaches an agent's port can connect; with it, the ZAP handler refuses any
client key that is not a neighbour's, and the authenticated key (not the self-declared routing id)
says which agent a message comes from.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable
from urllib.parse import urlsplit

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from p2pfl.errors import UserError

if TYPE_CHECKING:
    from p2pfl.config import RunConfig

log = logging.getLogger("p2pfl.security")


def key_stem(agent: int) -> str:
    return f"agent-{agent}"


def generate_keys(directory: str | Path, agents: int) -> list[str]:
    """One key pair per agent (agent-N.key, agent-N.key_secret); returns the public keys (z85 text)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    publics = []
    for agent in range(agents):
        public_file, _ = zmq.auth.create_certificates(str(directory), key_stem(agent))
        publics.append(zmq.auth.load_certificate(public_file)[0].decode())
    return publics


@dataclass(frozen=True)
class CurveKeys:
    public: bytes
    secret: bytes
    peers: dict[int, bytes]  # neighbour id -> its public key

    @classmethod
    def load(cls, keys_dir: str | None, agent: int, public_keys: list[str] | None, neighbours: list[int]) -> "CurveKeys":
        if not keys_dir:
            raise UserError("security.mode curve needs security.keys_dir: the folder from `p2pfl keys generate`")
        secret_file = Path(keys_dir) / f"{key_stem(agent)}.key_secret"
        if not secret_file.is_file():
            raise UserError(f"agent {agent}: no secret key {secret_file}; copy it there from `p2pfl keys generate`")
        public, secret = zmq.auth.load_certificate(str(secret_file))
        peers = {}
        for peer in neighbours:
            if public_keys:
                peers[peer] = public_keys[peer].encode()
            else:
                public_file = Path(keys_dir) / f"{key_stem(peer)}.key"
                if not public_file.is_file():
                    raise UserError(f"no public key for agent {peer}: list it in security.public_keys "
                                    f"or put {public_file.name} in {keys_dir}")
                peers[peer] = zmq.auth.load_certificate(str(public_file))[0]
        if public_keys and public_keys[agent].encode() != public:
            raise UserError(f"agent {agent}: its secret key does not match security.public_keys[{agent}]")
        return cls(public, secret, peers)


class AgentAdmission:
    """One agent's ZAP domain: a client key is allowed only if it is one of that agent's neighbours'."""

    def __init__(self, agent: int, allowed: dict[bytes, int]):
        self.agent = agent
        self.allowed = allowed  # z85 public key -> agent id

    def callback(self, domain: str, key: bytes) -> bool:
        if key in self.allowed:
            return True
        log.warning("agent %s refused a connection from an unknown key %s", self.agent, key.decode(errors="replace"))
        return False


class AgentAuthenticator(ThreadAuthenticator):
    """The ZAP handler of one ZeroMQ context (libzmq allows one per context). Agents packed in one process share
    a context, so each agent's inbox asks in its own ZAP domain (its id), where only its neighbours' keys get
    in; the User-Id of an admitted key is the id of the agent it belongs to (a key is one agent's only)."""

    def __init__(self, context: zmq.Context):
        super().__init__(context, log=logging.getLogger("p2pfl.security.zap"))
        self.owners: dict[bytes, int] = {}  # z85 public key -> agent id, over every admitted agent's neighbours

    def admit(self, agent: int, keys: CurveKeys, inbox: zmq.Socket) -> None:
        """Make `inbox` a CURVE server whose clients must hold one of `keys.peers`."""
        allowed = {public: peer for peer, public in keys.peers.items()}
        self.owners.update(allowed)
        self.configure_curve_callback(str(agent), credentials_provider=AgentAdmission(agent, allowed))
        inbox.zap_domain = str(agent).encode()
        inbox.curve_secretkey = keys.secret
        inbox.curve_publickey = keys.public
        inbox.curve_server = True

    def curve_user_id(self, client_public_key: bytes) -> str:
        return str(self.owners[zmq.utils.z85.encode(client_public_key)])


def secure_dealer(dealer: zmq.Socket, keys: CurveKeys, peer: int) -> None:
    dealer.curve_secretkey = keys.secret
    dealer.curve_publickey = keys.public
    dealer.curve_serverkey = keys.peers[peer]


LOOPBACK_NAMES = ("localhost",)


def is_loopback(address: str) -> bool:
    """tcp://127.0.0.1:29000 or tcp://[::1]:29000 or tcp://localhost:29000; any other name is not."""
    host = urlsplit(address).hostname or ""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def secure_local_run(config: RunConfig, run_dir: Path) -> None:
    """security.mode auto on a local run: one key pair per agent in RUN/keys (secrets 0600, never on the wire),
    the public keys in the run's config, so every link is encrypted and only the run's agents get in."""
    if config.security.mode != "auto":
        return
    keys_dir = Path(run_dir).resolve() / "keys"
    publics = generate_keys(keys_dir, config.agents)
    for secret in keys_dir.glob("*.key_secret"):
        secret.chmod(0o600)
    config.security.mode, config.security.keys_dir, config.security.public_keys = "curve", str(keys_dir), publics


def refuse_plain_off_loopback(config: RunConfig, agents: Iterable[int]) -> None:
    """security.mode auto outside a local run: plain links only where nobody else can reach them."""
    if config.security.mode != "auto":
        return
    exposed = [config.address(a) for a in agents if not is_loopback(config.address(a))]
    if exposed:
        raise UserError(f"plain ZeroMQ on {exposed[0]} would let anyone on that network pose as an agent: generate "
                        "keys with `p2pfl keys generate` and set security.mode: curve (see examples/torus_secure.yaml), "
                        "or set security.mode: none to accept plain links")
