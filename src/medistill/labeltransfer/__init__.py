"""One-shot segmentation by label transfer (LT-Net, Wang et al., CVPR 2020): configs, losses,
generators and discriminator, training on one labelled atlas and unlabelled images, segmenting
images on their own grids, evaluation and demo."""

from medistill.labeltransfer.apply import Transfer, transfer_labels
from medistill.labeltransfer.config import (
    DataConfig,
    GanConfig,
    LabelTransferConfig,
    LossConfig,
    ModelConfig,
    presets,
)
from medistill.labeltransfer.data import TransferData, build_data, heldout_subjects
from medistill.labeltransfer.evaluate import evaluate, evaluate_transfer
from medistill.labeltransfer.model import (
    TASK,
    Atlas,
    ImageDiscriminator,
    LTNet,
    LTNetOutput,
    build_model,
    export_model,
    load_model,
    transfer_network,
)
from medistill.labeltransfer.training import LabelTransferTask, train

__all__ = [
    "TASK",
    "Atlas",
    "DataConfig",
    "GanConfig",
    "ImageDiscriminator",
    "LTNet",
    "LTNetOutput",
    "LabelTransferConfig",
    "LabelTransferTask",
    "LossConfig",
    "ModelConfig",
    "Transfer",
    "TransferData",
    "build_data",
    "build_model",
    "evaluate",
    "evaluate_transfer",
    "export_model",
    "heldout_subjects",
    "load_model",
    "presets",
    "train",
    "transfer_labels",
    "transfer_network",
]
