r"""Label dropout: train one conditional model for both $\nabla\log p_t(x \mid y)$ and $\nabla\log p_t(x)$.

Ho & Salimans (2022), Alg. 1: each example's label is replaced by the null label $\varnothing$
with probability $p_{uncond}$, and the ordinary score-matching objective is applied to
$s_\theta(\cdot, \cdot, \tilde y)$. The result feeds classifier-free guidance
(`sdescore.guidance.ClassifierFreeGuidance`).
"""

from __future__ import annotations

import torch

from .._checks import check_callable, check_generator, check_real, check_state
from ..models.conditional import ConditionalScoreModel, check_labels
from .denoising import dsm_loss

__all__ = ["label_dropout_loss"]


class _Labeled:
    """`model` with per-example labels fixed, as the score function `(x, t)` a loss expects."""

    def __init__(self, model: ConditionalScoreModel, y: torch.Tensor):
        self.model, self.y, self.sde = model, y, model.sde

    def __call__(self, x, t):
        return self.model.labeled(x, t, self.y)


def label_dropout_loss(
    model: ConditionalScoreModel,
    x0: torch.Tensor,
    *,
    labels,
    p_uncond: float = 0.1,
    loss=dsm_loss,
    generator: torch.Generator | None = None,
    **loss_kwargs,
) -> torch.Tensor:
    r"""Score-matching loss of a conditional model with label dropout (Ho & Salimans 2022).

    Args:
        model: a `ConditionalScoreModel`.
        x0: data `(B, *D)`.
        labels: their labels, an int or `(B,)` integer tensor in `[0, K]` (K, the null label,
            marks examples without a label).
        p_uncond: probability of replacing a label by the null label; Ho & Salimans use 0.1-0.2.
            0 trains a purely conditional model, 1 a purely unconditional one.
        loss: the base objective `loss(score_fn, x0, *, generator, **loss_kwargs)`, default
            `dsm_loss`; any loss of `sdescore.losses` works.
        generator: for the dropout draw and the base loss's $t$ and $z$.
        **loss_kwargs: passed to `loss` (e.g. `weighting="likelihood"`); unknown names raise
            there.

    Returns:
        What `loss` returns: per-example `(B,)` by default.

    Raises:
        TypeError: `model` not a `ConditionalScoreModel`, non-integer labels.
        ValueError: labels out of range or of the wrong shape, `p_uncond` outside [0, 1].
    """
    if not isinstance(model, ConditionalScoreModel):
        raise TypeError(f"model must be a ConditionalScoreModel, got {type(model).__name__}")
    check_generator("generator", generator)
    check_callable("loss", loss)
    check_state(x0, "x0")
    p = check_real("p_uncond", p_uncond, nonnegative=True)
    if p > 1:
        raise ValueError(f"p_uncond must lie in [0, 1], got {p}")
    y = check_labels(labels, x0.shape[0], model.num_classes, allow_null=True, device=x0.device)
    u = torch.rand(x0.shape[0], generator=generator, device=x0.device)
    y = torch.where(u < p, model.null_label, y)
    return loss(_Labeled(model, y), x0, generator=generator, **loss_kwargs)
