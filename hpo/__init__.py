"""hpo: orchestration of lgeseg runs with Ray Tune, recorded in an Optuna study."""
