"""Run files: Orbax checkpoints (with HF export), metrics.jsonl / TensorBoard / plots, workdir JSON and lock."""
