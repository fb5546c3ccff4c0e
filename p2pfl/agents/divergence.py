"""Notice a diverged agent at once: a run that drifts to NaN must fail loudly, never report 10%."""

from __future__ import annotations

import math
from typing import Mapping

import torch

from p2pfl.errors import Diverged
from p2pfl.wire import all_finite

# The loss terms an algorithm's step reports, with the names the papers give them; the total last,
# so the term that caused an explosion is the one named.
LOSS_TERMS = {"ce": "CE", "model_term": "L_m", "data_term": "L_d", "loss": "loss"}


def check_divergence(agent: int, round_: int, step_out: Mapping[str, float], params: torch.Tensor,
                     max_loss: float) -> None:
    """Raise Diverged naming the round and the first non-finite term, else the largest one above max_loss."""
    terms = [(name, float(step_out[key])) for key, name in LOSS_TERMS.items() if key in step_out]
    bad = [(name, value) for name, value in terms if not math.isfinite(value)]
    if not bad and max_loss > 0:
        bad = sorted(((n, v) for n, v in terms if abs(v) > max_loss), key=lambda t: -abs(t[1]))
    if bad:
        name, value = bad[0]
        limit = "non-finite" if not math.isfinite(value) else f"above max_loss {max_loss:g}"
        raise Diverged(f"agent {agent} diverged at round {round_}: {name} = {value:.4g} ({limit}); "
                       "lower the learning rate, add a warm-up (optim.warmup_rounds) or, for CCL, bound the "
                       "alignment terms (options.align_clip: 2 kept every seed of the authors' setting finite)")
    if not all_finite(params):
        raise Diverged(f"agent {agent} diverged at round {round_}: parameters non-finite after the step "
                       "(the loss was still finite); lower the learning rate or add a warm-up (optim.warmup_rounds)")
