"""WiSE-FT: evaluate the weight-space interpolation between the zero-shot and the fine-tuned
model, (1 - alpha) * zero_shot + alpha * fine_tuned, key by key, for alpha in 0, 0.1, ..., 1."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from kbench.jobs.metrics import Evaluation

ALPHAS = [i / 10 for i in range(11)]


def interpolate(
    zero_shot: dict[str, torch.Tensor], fine_tuned: dict[str, torch.Tensor], alpha: float
) -> dict[str, torch.Tensor]:
    # Written this way, alpha 0 and 1 give back each end exactly.
    return {
        key: (1 - alpha) * zero_shot[key] + alpha * value if value.is_floating_point() else value
        for key, value in fine_tuned.items()
    }


@torch.no_grad()
def wise_ft_curve(
    model: nn.Module,
    zero_shot: dict[str, torch.Tensor],
    evaluate: Callable[[nn.Module], Evaluation],
    known: dict[float, Evaluation | None] | None = None,
) -> list[tuple[float, Evaluation]]:
    """(alpha, evaluation) per alpha, evaluated except those `known` (alpha 0 and 1 are the
    zero-shot and the fine-tuned weights exactly, evaluated already as epoch 0 and the last
    epoch: 2 of 11 evaluations saved); the model holds its fine-tuned weights again
    afterwards."""
    fine_tuned = {k: v.detach().clone() for k, v in model.state_dict().items()}
    curve = []
    for alpha in ALPHAS:
        evaluated = (known or {}).get(alpha)
        if evaluated is not None:
            curve.append((alpha, evaluated))
            continue
        model.load_state_dict(interpolate(zero_shot, fine_tuned, alpha))
        curve.append((alpha, evaluate(model)))
    model.load_state_dict(fine_tuned)
    return curve
