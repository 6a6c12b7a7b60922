"""Score models: `ScoreModel` (network + SDE + parameterization), time embeddings, networks."""

from .checkpoint import load_model, save_model
from .embeddings import GaussianFourierFeatures
from .mlp import MLPScoreNet
from .score_model import PARAMETERIZATIONS, ScoreModel
from .unet import UNet

__all__ = [
    "PARAMETERIZATIONS",
    "GaussianFourierFeatures",
    "MLPScoreNet",
    "ScoreModel",
    "UNet",
    "load_model",
    "save_model",
]
