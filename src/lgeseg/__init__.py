"""lgeseg: the science of the LGE-MRI L2 study (data, U-Net, training, metrics).

This package knows nothing about Ray or Optuna; ``hpo`` and ``dashboards`` build on it.
"""

__version__ = "0.1.0"
