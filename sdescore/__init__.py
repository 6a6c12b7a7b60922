"""sdescore: score-based generative modeling with stochastic differential equations."""

from importlib.metadata import PackageNotFoundError, version

from . import distributed, interop, losses, metrics, models, solvers, toy
from .dequantization import bits_per_dim, dequantize, quantize
from .elbo import ELBOResult, elbo
from .ema import EMA
from .guidance import ClassifierFreeGuidance, ClassifierGuidance
from .likelihood import LikelihoodResult, likelihood
from .losses import (
    classifier_loss,
    ddpm_loss,
    dsm_loss,
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
from .sdes import SDE, VESDE, VPSDE, DiscreteVPSDE, GaussianSDE, LinearSDE, SubVPSDE
from .solvers import (
    PC,
    Ancestral,
    AnnealedLangevin,
    Dopri5,
    DPMSolver,
    EulerMaruyama,
    GottaGoFast,
    Inpainting,
    Langevin,
    MaxStepsError,
    NonFiniteError,
    ReverseDiffusion,
    SampleResult,
    SDEDPMSolver,
    Solver,
    TorchDiffEq,
    TorchSDE,
    UniPC,
)
from .training import (
    CheckpointConfig,
    EMAConfig,
    OptimizerConfig,
    Trainer,
    TrainResult,
    train,
    train_step,
)

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
    "DiscreteVPSDE",
    "ELBOResult",
    "VESDE",
    "VPSDE",
    "GaussianSDE",
    "Inpainting",
    # solver objects (method=...)
    "Solver",
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
    "LikelihoodResult",
    "LinearSDE",
    "MaxStepsError",
    "NonFiniteError",
    "ProbabilityFlowODE",
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
    "ism_loss",
    "load_model",
    "losses",
    "models",
    "ncsn_loss",
    "save_model",
    "solvers",
    "ssm_loss",
    "train",
    "train_step",
    "OptimizerConfig",
    "EMAConfig",
    "CheckpointConfig",
]
