"""Evaluation metrics: label overlap, surface and landmark distances, Jacobian regularity,
image quality. Inputs are numpy arrays or torch tensors; results are Python floats, dicts of
floats (per label) or, for per-landmark errors, numpy arrays.
"""

from medistill.metrics.distance import hd95, mean_hd95, mean_tre, tre
from medistill.metrics.fields import field_spread
from medistill.metrics.image import nmse, psnr, ssim, ssim_slices
from medistill.metrics.jacobian import folding_fraction, jacobian_det_l2r, sdlogj, sdlogj_l2r
from medistill.metrics.overlap import dice, jaccard, mean_dice, mean_jaccard
from medistill.metrics.summary import summarize, summarize_rows

__all__ = [
    "field_spread",
    "dice",
    "jaccard",
    "mean_dice",
    "mean_jaccard",
    "hd95",
    "mean_hd95",
    "tre",
    "mean_tre",
    "folding_fraction",
    "sdlogj",
    "jacobian_det_l2r",
    "sdlogj_l2r",
    "psnr",
    "ssim",
    "ssim_slices",
    "nmse",
    "summarize",
    "summarize_rows",
]
