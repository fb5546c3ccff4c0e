"""Imported by the forkserver (forkserver.PRELOAD): the compiled loops (the mixing's, the models' max pooling)
are made once there, and every agent forked from it starts with them instead of compiling them in its first
round."""

from p2pfl.algorithms import mixing_kernel
from p2pfl.models import pooling

mixing_kernel.warm()
pooling.warm()
