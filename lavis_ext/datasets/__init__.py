"""LAVIS builders and datasets for facial records; importing registers the builders."""
from lavis_ext.datasets import builders  # noqa: F401  (registers with lavis's registry)
from lavis_ext.datasets.builders import BUILDERS
from lavis_ext.datasets.facial_datasets import (FacialAUDataset, FacialCaptionDataset,
                                                FacialEmotionDataset, FacialRecordDataset)

__all__ = ["BUILDERS", "FacialRecordDataset", "FacialCaptionDataset", "FacialAUDataset",
           "FacialEmotionDataset"]
