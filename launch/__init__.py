"""Launchers for multi-host runs (TPU v5 via XManager or gcloud, ssh host lists, SLURM GPU nodes)."""
