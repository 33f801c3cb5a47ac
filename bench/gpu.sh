#!/usr/bin/env bash
# The checks that need an NVIDIA GPU, in one run (jax with its CUDA plugin, torch with CUDA, transformers):
# cuDNN attention against XLA (tests/gpu), attention forward + backward against PyTorch
# (bench/attention.py), and sampler decode against transformers `generate` in bfloat16 (bench/sampler.py).
# Logs go to $OUT (default /tmp/vtg_gpu). Usage: bash bench/gpu.sh
set -u
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/vtg_gpu}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 JAX_PLATFORMS=cuda,cpu
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # jax and torch share the GPU in the benches
python3 -c "import jax, flax, torch, transformers; print('jax', jax.__version__, 'flax', flax.__version__, \
'torch', torch.__version__, 'transformers', transformers.__version__, jax.devices())" 2>&1 | tee "$out/versions.log"
timeout 200 python3 -m pytest -q -m gpu tests/gpu -p no:cacheprovider -s 2>&1 | tee "$out/gpu_tests.log"
timeout 150 python3 bench/sampler.py --device gpu --dtype bfloat16 --default-malloc --repeats 5 2>&1 | tee "$out/sampler.log"
timeout 100 python3 bench/attention.py 2>&1 | tee "$out/attention.log"
