"""The math of every algorithm, one file each, and their options dataclasses; the registry by name is
p2pfl/registry.py, above this package and p2pfl/agents/methods/."""
