"""sdescore: score-based generative modeling with stochastic differential equations."""

from importlib.metadata import PackageNotFoundError, version

from . import distributed, interop, losses, metrics, models, solvers, toy
from .dequantization import Dequantization, bits_per_dim, dequantize, quantize
from .elbo import ELBOResult, elbo
from .ema import EMA
from .estimators import ExactTrace, Hutchinson
from .guidance import ClassifierFreeGuidance, ClassifierGuidance
from .likelihood import LikelihoodResult, likelihood
from .losses import (
    classifier_loss,
    ddpm_loss,
    dsm_loss,
    flow_matching_loss,
    ism_loss,
    label_dropout_loss,
    ncsn_loss,
    ssm_loss,
    train_classifier,
)
from .metrics import evaluate
from .models import (
    ConditionalMLPScoreNet,
    ConditionalScoreModel,
    GaussianFourierFeatures,
    MLPScoreNet,
    ScoreModel,
    UNet,
    load_model,
    save_model,
)
from .reverse import ProbabilityFlowODE, ReverseSDE
from .sdes import (
    SDE,
    VESDE,
    VPSDE,
    AlphaSigmaSDE,
    DiscreteVPSDE,
    GaussianSDE,
    LinearSDE,
    RectifiedFlowSDE,
    SubVPSDE,
)
from .solvers import (
    PC,
    Ancestral,
    AnnealedLangevin,
    Auto,
    Dopri5,
    DPMSolver,
    EulerMaruyama,
    ExpABM,
    GottaGoFast,
    Inpainting,
    Karras,
    Langevin,
    LogSNR,
    MaxStepsError,
    NonFiniteError,
    ReverseDiffusion,
    SampleResult,
    SDEDPMSolver,
    Solver,
    TimeQuadratic,
    Times,
    TimeUniform,
    TorchDiffEq,
    TorchSDE,
    UniPC,
)
from .training import Trainer, TrainResult, train

try:
    __version__ = version("sdescore")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = [
    "ClassifierFreeGuidance",
    "ClassifierGuidance",
    "ConditionalMLPScoreNet",
    "ConditionalScoreModel",
    "SDE",
    "AlphaSigmaSDE",
    "DiscreteVPSDE",
    "ELBOResult",
    "VESDE",
    "VPSDE",
    "GaussianSDE",
    "Inpainting",
    # solver objects (method=...) and their time grids
    "Solver",
    "Auto",
    "DPMSolver",
    "UniPC",
    "Dopri5",
    "TorchDiffEq",
    "EulerMaruyama",
    "SDEDPMSolver",
    "ReverseDiffusion",
    "Ancestral",
    "PC",
    "Langevin",
    "AnnealedLangevin",
    "GottaGoFast",
    "TorchSDE",
    "TimeUniform",
    "TimeQuadratic",
    "LogSNR",
    "Karras",
    "Times",
    "ExpABM",
    # likelihood options
    "Hutchinson",
    "ExactTrace",
    "Dequantization",
    "LikelihoodResult",
    "LinearSDE",
    "MaxStepsError",
    "NonFiniteError",
    "ProbabilityFlowODE",
    "RectifiedFlowSDE",
    "ReverseSDE",
    "SampleResult",
    "ScoreModel",
    "SubVPSDE",
    "__version__",
    "bits_per_dim",
    "dequantize",
    "elbo",
    "quantize",
    "evaluate",
    "metrics",
    "likelihood",
    "toy",
    "interop",
    "distributed",
    "EMA",
    "GaussianFourierFeatures",
    "MLPScoreNet",
    "TrainResult",
    "Trainer",
    "UNet",
    "classifier_loss",
    "ddpm_loss",
    "label_dropout_loss",
    "train_classifier",
    "dsm_loss",
    "flow_matching_loss",
    "ism_loss",
    "load_model",
    "losses",
    "models",
    "ncsn_loss",
    "save_model",
    "solvers",
    "ssm_loss",
    "train",
]
