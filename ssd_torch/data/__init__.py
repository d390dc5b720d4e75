"""Data pipeline (ARCHITECTURE.md "Data contract"): VOC reader, synthetic VOC-format generator, SSD
augmentation and padded batches. Submodules: ``voc``, ``synthetic``, ``transforms``, ``collate``."""
from .collate import Batch, collate_detection
from .transforms import SSDEvalTransform, SSDTrainTransform
from .voc import VOC_CLASSES, Annotation, DatasetError, VOCDataset, parse_annotation

__all__ = [
    "Batch", "collate_detection", "SSDEvalTransform", "SSDTrainTransform",
    "VOC_CLASSES", "Annotation", "DatasetError", "VOCDataset", "parse_annotation",
]
