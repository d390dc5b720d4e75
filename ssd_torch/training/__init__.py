"""Training: the config and its presets (``train_config``), the run (``train.run_training``) and the CPU demo
(``demo``), built from small modules: ``datasets``, ``model_setup``, ``objective`` (what a step optimises),
``schedule``, ``data_order`` (sampler, per-sample seeding), ``step`` (``train_step``, numerics, NaN guard),
``trainer`` (the loop), ``metrics_log``, ``checkpoint``, ``resume``, ``run_folder``, ``interrupt`` and
``distributed``."""
