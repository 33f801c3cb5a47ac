"""Run files: Orbax checkpoints (with HF export), metrics.jsonl / TensorBoard / plots, predictions pages,
workdir JSON and lock."""
