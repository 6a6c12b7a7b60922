r"""Guided scores: classifier guidance and classifier-free guidance. Scores in, a score out.

A guided score is an ordinary score function `(x, t) -> (B, *D)`, so every sampler, the PF ODE,
`likelihood` and `encode` take it unchanged. Both objects carry the wrapped model's `sde`.

**Classifier guidance** (Song et al. 2021, Sec. 5, eq. (14); Dhariwal & Nichol 2021, Alg. 1):
$\nabla\log p_t(x \mid y) = \nabla\log p_t(x) + \nabla\log p_t(y \mid x)$, and with a scale
$\gamma$, $\tilde s = s(x, t) + \gamma\,\nabla_x \log p_t(y \mid x)$, the score of
$p_t(x)\,p_t(y \mid x)^\gamma$. $\gamma = 1$ is the exact conditional; $\gamma > 1$ sharpens.

**Classifier-free guidance** (Ho & Salimans 2022, eq. (6)):
$\tilde s = (1 + w)\,s(x, t, y) - w\,s(x, t, \varnothing)$, the score of
$p_t(x \mid y)^{1+w} p_t(x)^{-w} \propto p_t(x)\,p_t(y \mid x)^{1+w}$. So $w = 0$ is the plain
conditional model and classifier-free $w$ matches classifier guidance with $\gamma = 1 + w$.
"""

from __future__ import annotations

import torch

from ._checks import as_time, check_callable, check_real, check_state, is_int
from .models.conditional import check_labels

__all__ = ["ClassifierFreeGuidance", "ClassifierGuidance"]


def _labels(y):
    """Labels fixed at construction: an int, or a 0-d / `(B,)` integer tensor (checked later)."""
    if is_int(y):
        return torch.tensor([int(y)])
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"y must be an int or an integer tensor (B,), got {type(y).__name__}")
    if y.dtype == torch.bool or y.is_floating_point() or y.is_complex():
        raise TypeError(f"y must hold integer class labels (e.g. torch.long), got {y.dtype}")
    if y.ndim > 1:
        raise ValueError(f"y must be an int, a scalar or of shape (B,), got {tuple(y.shape)}")
    return y.reshape(-1).long()


def _time(t, x: torch.Tensor, sde):
    """`t` as `(B,)` on `x`'s device and dtype (a network classifier expects a tensor)."""
    return as_time(t, x, sde.T if sde is not None else float("inf"))


def _batch_labels(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    if y.shape[0] == x.shape[0]:
        return y
    if y.shape[0] == 1:
        return y.expand(x.shape[0])
    raise ValueError(f"x has batch {x.shape[0]} but y holds {y.shape[0]} labels")


class ClassifierGuidance:
    r"""$\tilde s(x, t) = s(x, t) + \gamma\,\nabla_x \log p_t(y \mid x)$ from any noisy classifier.

    The gradient flows through the classifier only (the score is evaluated outside the
    autograd graph of the classifier's gradient) and is taken with `torch.autograd` on a detached
    copy of `x`: the caller's tensor is never modified and nothing syncs with the host after the
    first call (which checks the labels against the number of classes once). When grad mode is
    on and `x` requires grad (an exact divergence, say), the result stays differentiable in `x`.

    Args:
        score_fn: the unconditional score `(x, t) -> (B, *D)` (a `ScoreModel`, say).
        classifier: `(x, t) -> logits (B, K)`, e.g. trained with
            `sdescore.losses.train_classifier` or the exact `sdescore.toy.MixtureClassifier`.
        y: the target class, an int (every sample) or `(B,)` integer labels in `[0, K-1]`.
        scale: $\gamma$ (Dhariwal & Nichol's "classifier scale" $s$): 1 is the exact conditional,
            0 the unguided score, > 1 concentrates the samples on the class.
        sde: the SDE, default `score_fn.sde`, so `likelihood` and samplers find it.

    Raises:
        TypeError: non-callable arguments, non-integer labels.
        ValueError: labels of the wrong shape or out of range, logits not `(B, K)` or not
            differentiable in `x` (when called).
    """

    def __init__(self, score_fn, classifier, y, *, scale: float = 1.0, sde=None):
        check_callable("score_fn", score_fn)
        check_callable("classifier", classifier)
        self.score_fn, self.classifier = score_fn, classifier
        self.y = _labels(y)
        self.scale = check_real("scale", scale)
        self.sde = sde if sde is not None else getattr(score_fn, "sde", None)
        self._num_classes = None

    def log_prob_grad(self, x: torch.Tensor, t) -> torch.Tensor:
        r"""$\nabla_x \log p_t(y \mid x)$ shaped like `x: (B, *D)`."""
        check_state(x)
        t = _time(t, x, self.sde)
        create_graph = torch.is_grad_enabled() and x.requires_grad
        with torch.enable_grad():
            xg = x if create_graph else x.detach().requires_grad_(True)
            logits = self.classifier(xg, t)
            y = self._check_logits(logits, x)
            logp = torch.log_softmax(logits, dim=-1).gather(1, y[:, None]).sum()
            grad = None
            if logp.requires_grad:
                (grad,) = torch.autograd.grad(
                    logp, xg, create_graph=create_graph, allow_unused=True
                )
        if grad is None:
            raise ValueError(
                "classifier(x, t) returned logits that do not depend on x (no autograd path "
                "from x: a torch.no_grad() block, a .detach() or a computation outside torch in "
                "the classifier), so there is no gradient of log p(y | x) to guide with"
            )
        return grad

    def _check_logits(self, logits, x) -> torch.Tensor:
        if (
            not isinstance(logits, torch.Tensor)
            or logits.ndim != 2
            or logits.shape[0] != x.shape[0]
        ):
            got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise ValueError(f"classifier(x, t) must return logits ({x.shape[0]}, K), got {got}")
        k = logits.shape[1]
        if self._num_classes != k:  # once: the range check reads the labels on the host
            check_labels(self.y, self.y.shape[0], k, allow_null=False)
            self._num_classes = k
        return _batch_labels(self.y.to(x.device), x)

    def __call__(self, x: torch.Tensor, t) -> torch.Tensor:
        check_state(x)
        t = _time(t, x, self.sde)
        s = self.score_fn(x, t)
        if self.scale == 0.0:
            return s
        return s + self.scale * self.log_prob_grad(x, t)

    def __repr__(self) -> str:
        return f"ClassifierGuidance(scale={self.scale}, y={self.y.tolist()})"


class ClassifierFreeGuidance:
    r"""$\tilde s = (1 + w)\,s(x, t, y) - w\,s(x, t, \varnothing)$ (Ho & Salimans 2022, eq. (6)).

    **Scale convention.** The argument is Ho & Salimans' $w$, keyword-only: $w = 0$ is the
    conditional model, $w > 0$ guides, $w = -1$ is the unconditional model. Imagen and diffusers'
    `guidance_scale` use $\gamma = 1 + w$ instead
    ($\tilde s = s_\varnothing + \gamma\,(s_y - s_\varnothing)$): `guidance_scale=7.5` in
    diffusers is `w=6.5` here. Passing `guidance_scale=` raises, so the two cannot be confused.

    The conditional and unconditional passes run as one network call on a doubled batch
    (`w = 0` needs the conditional pass only).

    Args:
        model: conditional score `model(x, t, y)` with a null label, a `ConditionalScoreModel`
            or e.g. `sdescore.toy.ExactConditionalScore`.
        y: the class, an int or `(B,)` integer labels in `[0, K-1]`.
        w: the guidance weight of Ho & Salimans (see above), a finite real number.
        null_label: the label meaning "unconditional"; default `model.null_label`, and for a
            model that has one, it must be that label.
        sde: the SDE, default `model.sde`.

    Raises:
        TypeError: bad argument types, non-integer labels.
        ValueError: labels out of range (or equal to the null label) or of the wrong shape, a
            `null_label` below 1 or other than the model's own.
    """

    def __init__(self, model, y, *, w: float, null_label: int | None = None, sde=None):
        check_callable("model", model)
        own = getattr(model, "null_label", None)
        if null_label is None:
            null_label = own
            if null_label is None:
                raise ValueError("null_label is required when model has no .null_label attribute")
        if not is_int(null_label):
            raise TypeError(f"null_label must be an int >= 1, got {null_label!r}")
        if null_label < 1:  # the null label K follows the classes 0 .. K-1
            raise ValueError(f"null_label must be an int >= 1, got {null_label!r}")
        null_label = int(null_label)
        if own is not None and null_label != own:
            # Another label is either a real class (guidance silently against that class) or
            # no label at all (an index error inside the network).
            raise ValueError(
                f"null_label must be the model's own null label {own} (labels 0..{own - 1} are "
                f"its classes), got {null_label}; leave null_label out to use it"
            )
        self.model, self.null_label = model, null_label
        y = _labels(y)
        # Labels 0 .. K-1 with the null label K, as in ConditionalScoreModel.
        self.y = check_labels(y, y.shape[0], null_label, allow_null=False)
        self.w = check_real("w", w)
        self.sde = sde if sde is not None else getattr(model, "sde", None)
        self._labeled = getattr(model, "labeled", None)  # skips per-call label checks

    def _call(self, x, t, y):
        if self._labeled is not None:
            return self._labeled(x, t, y)
        return self.model(x, t, y)

    def __call__(self, x: torch.Tensor, t) -> torch.Tensor:
        check_state(x)
        t = _time(t, x, self.sde)
        y = _batch_labels(self.y.to(x.device), x)
        if self.w == 0.0:
            return self._call(x, t, y)
        s = self._call(
            torch.cat([x, x]),
            torch.cat([t, t]),
            torch.cat([y, torch.full_like(y, self.null_label)]),
        )
        s_cond, s_uncond = s.chunk(2)
        return (1.0 + self.w) * s_cond - self.w * s_uncond

    def __repr__(self) -> str:
        return f"ClassifierFreeGuidance(w={self.w}, y={self.y.tolist()})"
