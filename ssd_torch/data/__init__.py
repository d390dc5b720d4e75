"""Data pipeline (docs/CONTRACT.md "Conventions", "Pixel boxes"): VOC and COCO readers, synthetic generator (VOC and COCO
format), SSD augmentation and padded batches. Submodules: ``voc``, ``coco``, ``synthetic``, ``transforms``,
``collate``, ``images`` (the one image decoder), ``registry`` (the dataset kinds), ``fingerprint``."""
from .collate import Batch, collate_detection
from .fingerprint import compare_fingerprints, split_fingerprint
from .registry import AUGMENTATIONS, DATASETS
from .coco import CocoDataset
from .transforms import SSDEvalTransform, SSDTrainTransform
from .voc import VOC_CLASSES, Annotation, DatasetError, VOCDataset, parse_annotation

__all__ = [
    "Batch", "collate_detection", "SSDEvalTransform", "SSDTrainTransform",
    "VOC_CLASSES", "Annotation", "DatasetError", "VOCDataset", "parse_annotation", "CocoDataset",
    "DATASETS", "AUGMENTATIONS", "split_fingerprint", "compare_fingerprints",
]
