"""Tasks of the multi-task method: each turns the dataset's class label into the task's own target.

Tasks share the input distribution (so an encoder can serve all of them) but not the output.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

# name -> (target from the class label, number of outputs)
TASKS: dict[str, tuple[Callable[[np.ndarray], np.ndarray], int]] = {
    "digit": (lambda y: y, 10),
    "parity": (lambda y: y % 2, 2),
    "parity-size": (lambda y: (y % 2) + 2 * (y >= 5), 4),  # odd/even x small/large
}
DECODERS = ("linear", "mlp")


def task_targets(task: str, y: np.ndarray) -> np.ndarray:
    return TASKS[task][0](y).astype(np.int64)
