"""Orchestration: run config schema and checks, the run preamble, the training loop, evaluation, selection,
pipelines, reports and the job table that `main.py` dispatches on."""
