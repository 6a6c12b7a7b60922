r"""Class-conditional score models for classifier-free guidance (Ho & Salimans 2022).

A conditional network takes a label `y: (B,)` besides `(x, t)`; labels run over `0 .. K-1` and
the extra label `K` is the *null label* $\varnothing$, standing for "no condition". Trained with
label dropout (`sdescore.losses.label_dropout_loss`), one network learns both
$\nabla\log p_t(x \mid y)$ and $\nabla\log p_t(x)$.
"""

from __future__ import annotations

import torch
from torch import nn

from .._checks import as_time, check_int, check_label_range, check_state, is_int
from ..sdes.base import SDE
from .mlp import MLPScoreNet
from .score_model import ScoreModel

__all__ = [
    "ConditionalMLPScoreNet",
    "ConditionalScoreModel",
    "LabeledScore",
    "check_label_range",
    "check_labels",
]


def check_labels(y, batch: int, num_classes: int, *, allow_null: bool, device=None):
    """Validate labels and return them as a long tensor `(B,)` on `device`.

    Accepts a Python int (broadcast to the batch), a 0-d or `(B,)` integer tensor. The range check
    reads the labels on the host once, so call this outside sampling loops.

    Raises:
        TypeError: `y` is not an int or an integer tensor (a float or bool tensor included).
        ValueError: wrong shape, or a label outside `[0, K-1]` (`[0, K]` with `allow_null`).
    """
    top = num_classes if allow_null else num_classes - 1
    what = f"[0, {top}]" + (f" ({num_classes} is the null label)" if allow_null else "")
    if is_int(y):
        y = int(y)
        if not 0 <= y <= top:
            raise ValueError(f"y must lie in {what}, got {y}")
        return torch.full((batch,), y, dtype=torch.long, device=device)
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"y must be an int or an integer tensor (B,), got {type(y).__name__}")
    if y.dtype == torch.bool or y.is_floating_point() or y.is_complex():
        raise TypeError(f"y must hold integer class labels (e.g. torch.long), got {y.dtype}")
    if y.ndim == 0:
        y = y.reshape(1).expand(batch)
    if y.shape != (batch,):
        raise ValueError(f"y must have shape ({batch},) or be a scalar, got {tuple(y.shape)}")
    lo, hi = torch.aminmax(y)
    if int(lo) < 0 or int(hi) > top:
        raise ValueError(f"y must lie in {what}, got labels from {int(lo)} to {int(hi)}")
    return y.to(device=device, dtype=torch.long)


class ConditionalScoreModel(ScoreModel):
    r"""A `ScoreModel` whose network also takes a class label: $s_\theta(x, t, y)$.

    Callable as `model(x, t, y=None)`; `y` is an int or `(B,)` integer labels in `[0, K]`, and
    `None` or `model.null_label` (= K) gives the unconditional score. Every parameterization,
    baseline and option of `ScoreModel` applies unchanged; `net(x, t, y)` returns what
    `ScoreModel`'s `net(x, t)` would. `model.conditioned(y)` is the conditional score for fixed
    labels as a plain score function `(x, t)`.

    Args:
        net: callable `net(x, t, y)` with `y: (B,)` long labels in `[0, K]`.
        sde, parameterization, scale_by_sigma: as for `ScoreModel`.
        num_classes: K, the number of real classes (the null label is K).
    """

    def __init__(
        self,
        net,
        sde: SDE,
        parameterization: str = "score",
        *,
        num_classes: int,
        scale_by_sigma: bool = False,
    ):
        super().__init__(net, sde, parameterization, scale_by_sigma=scale_by_sigma)
        self.num_classes = check_int("num_classes", num_classes)

    @property
    def null_label(self) -> int:
        return self.num_classes

    def forward(self, x: torch.Tensor, t, y=None) -> torch.Tensor:
        """The score $s_\\theta(x, t, y)$ shaped like `x: (B, *D)`; `y=None` is unconditional."""
        check_state(x)
        self._check_dtype(x)
        y = self.null_label if y is None else y
        y = check_labels(y, x.shape[0], self.num_classes, allow_null=True, device=x.device)
        return self._score(x, as_time(t, x, self.sde.T), (y,))

    def labeled(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """`forward` without argument checks, for validated `t: (B,)` and `y: (B,)` long labels.

        Used inside sampling and training loops, where `forward`'s range check of the labels
        would synchronise with the host on every call.
        """
        return self._score(x, t, (y,))

    def conditioned(self, y) -> LabeledScore:
        """The score $s_\\theta(\\cdot, \\cdot, y)$ for fixed labels, as a score function `(x, t)`:
        `y` an int or `(B,)` labels in `[0, num_classes)`, or `null_label` for the unconditional
        score (the model's own, for classifier-free guidance); `ValueError` for other labels."""
        return LabeledScore(self, y)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, num_classes={self.num_classes}"


class LabeledScore:
    """A conditional model with its labels fixed: a score function `(x, t) -> (B, *D)`.

    `y` is an int (every example) or `(B,)` labels; it is checked once here, not per call.
    """

    def __init__(self, model: ConditionalScoreModel, y):
        if not isinstance(model, ConditionalScoreModel):
            raise TypeError(f"model must be a ConditionalScoreModel, got {type(model).__name__}")
        batch = y.shape[0] if isinstance(y, torch.Tensor) and y.ndim == 1 else 1
        self.y = check_labels(y, batch, model.num_classes, allow_null=True)
        self.model, self.sde = model, model.sde

    def __call__(self, x: torch.Tensor, t) -> torch.Tensor:
        check_state(x)
        y = self.y.to(x.device)
        if y.shape[0] != x.shape[0]:
            if y.shape[0] != 1:
                raise ValueError(f"x has batch {x.shape[0]} but y has {y.shape[0]} labels")
            y = y.expand(x.shape[0])
        return self.model.labeled(x, as_time(t, x, self.sde.T), y)


class ConditionalMLPScoreNet(MLPScoreNet):
    r"""`MLPScoreNet` with a learned label embedding: $(x, t, y) \mapsto$ `(B, out_dim)`.

    The label (K classes plus the null label K) enters like the time: an embedding added to the
    input of every hidden layer.

    Args:
        dim: data dimension d.
        num_classes: K; the embedding has K + 1 rows, the last for the null label.
        **options: `hidden`, `depth`, `embed_dim`, `fourier_scale`, `out_dim`, `x_features`,
            `x_scale` of `MLPScoreNet`.
    """

    def __init__(self, dim: int, num_classes: int, **options):
        super().__init__(dim, **options)
        self.config["num_classes"] = check_int("num_classes", num_classes)
        hidden, depth = self.config["hidden"], self.config["depth"]
        self.label_embed = nn.Embedding(num_classes + 1, hidden * depth)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self._input(x)  # checks x; with x_features, x and its Fourier features
        check_label_range(y, self.config["num_classes"])
        temb = self.time_proj(self.act(self.embed(t.to(x.dtype)))) + self.label_embed(y)
        for layer, te in zip(self.layers, temb.chunk(len(self.layers), dim=-1), strict=True):
            h = self.act(layer(h) + te)
        return self.out(h)
