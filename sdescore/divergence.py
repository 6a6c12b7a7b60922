r"""Divergence $\nabla\cdot v(x) = \operatorname{tr} \partial v / \partial x$ of a vector field.

Two estimators, each returning the field value *and* the divergence from a single forward pass
of `fn` (the vector-Jacobian products reuse its graph):

- `divergence_hutchinson`: $\operatorname{tr} J = E[\epsilon^\top J \epsilon]$ for any probe with
  $E[\epsilon\epsilon^\top] = I$ (Hutchinson 1989; Grathwohl et al. 2019, FFJORD, eq. (7)).
- `divergence_exact`: the full trace from `prod(D)` batched vector-Jacobian products.

The public home of these names. They are defined in `sdescore._divergence`, below both the
solvers and the evaluation layer (`likelihood`, `elbo`), which import them from there.
"""

from . import _divergence
from ._divergence import *  # noqa: F403 (the public names, listed once, in _divergence.__all__)

__all__ = list(_divergence.__all__)
