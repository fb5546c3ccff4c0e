"""Imported by the forkserver (forkserver.PRELOAD): the mixing's compiled loops are made once there, and every
agent forked from it starts with them instead of compiling them in its first round."""

from p2pfl.algorithms.mixing_kernel import warm

warm()
