"""The network: its configuration (``model_config``), the SSD300 module (``model``) and backbone weights
(``weights``)."""
