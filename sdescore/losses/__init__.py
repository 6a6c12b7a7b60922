"""Score-matching objectives; each returns a per-example loss `(B,)` unless reduced."""

from ._common import WEIGHTINGS
from .denoising import ddpm_loss, dsm_loss, ncsn_loss
from .implicit import ism_loss, ssm_loss

__all__ = ["WEIGHTINGS", "ddpm_loss", "dsm_loss", "ism_loss", "ncsn_loss", "ssm_loss"]
