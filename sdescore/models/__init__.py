"""Score models: `ScoreModel` (network + SDE + parameterization), time embeddings, networks."""

from .checkpoint import load_model, load_solver, save_model
from .conditional import ConditionalMLPScoreNet, ConditionalScoreModel, LabeledScore
from .embeddings import GaussianFourierFeatures
from .mlp import MLPScoreNet
from .score_model import PARAMETERIZATIONS, ScoreModel
from .unet import ConditionalUNet, UNet

__all__ = [
    "ConditionalMLPScoreNet",
    "ConditionalScoreModel",
    "ConditionalUNet",
    "LabeledScore",
    "PARAMETERIZATIONS",
    "GaussianFourierFeatures",
    "MLPScoreNet",
    "ScoreModel",
    "UNet",
    "load_model",
    "load_solver",
    "save_model",
]
