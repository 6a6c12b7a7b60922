"""Score-matching objectives; each returns a per-example loss `(B,)` unless reduced."""

from ._common import WEIGHTINGS
from .classifier import classifier_loss, train_classifier
from .conditional import label_dropout_loss
from .denoising import ddpm_loss, dsm_loss, ncsn_loss
from .flow_matching import FM_WEIGHTINGS, flow_matching_loss
from .implicit import ism_loss, ssm_loss

__all__ = [
    "classifier_loss",
    "label_dropout_loss",
    "train_classifier",
    "WEIGHTINGS",
    "FM_WEIGHTINGS",
    "flow_matching_loss",
    "ddpm_loss",
    "dsm_loss",
    "ism_loss",
    "ncsn_loss",
    "ssm_loss",
]
