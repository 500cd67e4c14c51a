"""Losses shared by the tasks: image similarity, field regularisation and distillation."""

from medistill.losses.field import flow_l1_loss, smoothness_loss
from medistill.losses.image import correlation_loss, lncc_loss

__all__ = ["correlation_loss", "flow_l1_loss", "lncc_loss", "smoothness_loss"]
