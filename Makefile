# Set-up lives here so a fresh clone needs nothing but python3 and make.
VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
FMNIST  := /usr/share/datasets/fashion-mnist

.PHONY: demo test fmnist system-deps bench clean

$(STAMP): setup.cfg pyproject.toml
	python3 -m venv $(VENV)
	# The CPU build of torch lies on disk; a bare `torch` would pull a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

# Fashion-MNIST ships as a Debian package (original IDX files); installing needs root.
fmnist:
	@if [ ! -f $(FMNIST)/train-images-idx3-ubyte.gz ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null; \
	  else echo "fmnist: not root, skipping dataset-fashion-mnist (tests that need it will skip)"; fi; \
	fi

# For the tests of `p2pfl spawn` (a throwaway sshd on 127.0.0.1), of real network links and of `p2pfl slurm`
# (a private one-node Slurm: slurmctld, slurmd and munged started by the test from a temp folder).
system-deps: fmnist
	@if [ "$$(id -u)" = 0 ] && { [ ! -x /usr/sbin/sshd ] || ! command -v ip >/dev/null || ! command -v iptables >/dev/null \
	    || [ ! -x /usr/sbin/slurmctld ] || [ ! -x /usr/sbin/slurmd ] || [ ! -x /usr/sbin/munged ]; }; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server openssh-client iproute2 \
	    iptables slurm-wlm munge >/dev/null; \
	fi

demo: $(STAMP)
	$(VENV)/bin/p2pfl run examples/ring16.yaml

test: $(STAMP) system-deps
	$(VENV)/bin/python -m pytest -q --durations=15 -n auto --dist loadfile

bench: $(STAMP) fmnist
	$(PY) benchmarks/runtime_overhead.py

clean:
	rm -rf $(VENV) runs .pytest_cache
