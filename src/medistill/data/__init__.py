"""Datasets, pairing schemes, synthesis of training images and the embedded default data."""

from medistill.data.datasets import (
    Subject,
    SubjectSource,
    VolumeDataset,
    discover,
    load_subject,
    prepare_on_grid,
    read_landmarks,
    sources_from_csv,
    sources_from_folder,
    sources_from_h5,
)
from medistill.data.pairing import (
    PairDataset,
    all_ordered_pairs,
    atlas_pairs,
    random_pairs,
    read_pairs_csv,
)

__all__ = [
    "PairDataset",
    "Subject",
    "SubjectSource",
    "VolumeDataset",
    "all_ordered_pairs",
    "atlas_pairs",
    "discover",
    "load_subject",
    "prepare_on_grid",
    "random_pairs",
    "read_landmarks",
    "read_pairs_csv",
    "sources_from_csv",
    "sources_from_folder",
    "sources_from_h5",
]
