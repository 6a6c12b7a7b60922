"""Sample metrics and one-call evaluation.

FID, KID and the Inception score over any feature network (torchmetrics, the `metrics` extra,
imported inside `sdescore.metrics.image` only when one of them is called), a pure-torch Fréchet
distance, sliced Wasserstein-2 and MMD for low-dimensional data, exact-density metrics for
`sdescore.toy` mixtures, the 8x8 digits feature network behind "FID-digits", and `evaluate`.
"""

from ._common import SampleMetric
from .digits import DigitsFeatureNet, digits_data, digits_feature_net, digits_to_images
from .evaluate import METRICS, SAMPLERS, evaluate, format_table
from .exact import mixture_metrics, mode_statistics
from .frechet import FrechetResult, feature_statistics, frechet_distance, frechet_distance_features
from .image import fid, fid_digits, inception_score, inception_score_digits, kid, kid_digits
from .mmd import mmd, mmd_squared
from .sliced import sliced_wasserstein, wasserstein2_1d

__all__ = [
    "METRICS",
    "SAMPLERS",
    "DigitsFeatureNet",
    "FrechetResult",
    "SampleMetric",
    "digits_data",
    "digits_feature_net",
    "digits_to_images",
    "evaluate",
    "feature_statistics",
    "format_table",
    "frechet_distance",
    "frechet_distance_features",
    "mixture_metrics",
    "mmd",
    "mmd_squared",
    "mode_statistics",
    "sliced_wasserstein",
    "wasserstein2_1d",
    "fid",
    "fid_digits",
    "inception_score",
    "inception_score_digits",
    "kid",
    "kid_digits",
]
