"""Ahead-of-time plans of a recipe on a TPU slice: does every program of one iteration fit, and how fast
could it run (`python -m vtg_jax.plan --config=configs/opd.py:paper --topology=v5p-16`).

    hardware.py  slice names -> devices (libtpu topologies, compile-only) and per-chip figures
    shapes.py    the iteration's arrays as ShapeDtypeStructs for the video a user plans for (config.plan)
    programs.py  every jitted program of the iteration, built by the loop's own factories on abstract
                 models (`nnx.eval_shape`) with the loop's shardings
    flops.py     model FLOPs from the architecture (for MFU)
    planner.py   compile each program, read memory_analysis / cost_analysis, add resident arrays, roofline
    report.py    the printed table

No module here imports jax at import time except through the ones it needs, so the CLI can set up the
host (fake CPU devices, no TPU metadata query) before jax starts.
"""
