"""The network: its configuration (``model_config``), the SSD300 module (``model``), ImageNet VGG16 backbone
weights (``weights``), trained SSD300 weights of torchvision / ssd.pytorch / lufficc (``importers``), and
initialising a run from a trained checkpoint for other classes (``finetune``)."""
