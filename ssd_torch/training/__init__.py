"""Training: configuration and presets (``train_config``), LR schedule, checkpoints, the engine, the run
(``train``) and the CPU demo (``demo``)."""
