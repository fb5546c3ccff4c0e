"""p2pfl: decentralized peer-to-peer learning over ZeroMQ."""

__version__ = "0.1.0"
