"""Evaluation: inference over a dataset and scoring (``evaluate``), COCO metrics through pycocotools
(``coco_eval``), which metric a periodic evaluation's "mAP" is (``headline``), drawings and training curves
(``visualize``). The devkit-exact scorer is ``ssd_torch.voc_eval``, twin of ``reference.voc_eval``."""
