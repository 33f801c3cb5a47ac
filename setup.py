"""vtg_jax: JAX/Flax post-training of Qwen-VL video language models for temporal video grounding."""
from setuptools import find_packages, setup

setup(
    name="vtg_jax",
    version="0.1.0",
    description=__doc__,
    packages=find_packages(include=["vtg_jax", "vtg_jax.*"]),
    package_data={"vtg_jax": ["assets/README.md", "assets/*/*.json", "assets/*/*.safetensors"]},
    python_requires=">=3.10",
    install_requires=[
        # Pinned: XLA's float32 rounding moves between releases, and with it the demo's numbers (README
        # "The demo" quotes what this version prints).
        "jax==0.10.2",
        "jaxlib==0.10.2",
        "flax>=0.11",
        "optax",
        "orbax-checkpoint",
        "grain",
        "ml-collections",
        "tensorstore",
        "decord",
        "numpy",
        "absl-py",
        "safetensors",
        "tqdm",
        "pillow",  # frame resizing (data/video.py)
        "opencv-python-headless",  # mp4 writing for the synthetic benchmark (data/synthetic.py)
        "transformers",  # tokenizers loaded from local directories (data/processor.py)
        "tokenizers",
        "tensorboardX",  # training metrics (train/metrics_log.py)
        "matplotlib",  # PNG plots of a run (train/plots.py)
        "scenedetect",  # scene cuts for SceneTG (data/scenetg.py)
    ],
    extras_require={
        # `python -m vtg_jax.plan --topology=v5p-16 ...` compiles for TPU slices on any host (libtpu, no TPU).
        # Install it in its own environment: with libtpu present, jax probes for a TPU at every start.
        "tpu": ["jax[tpu]==0.10.2"],
        # NVIDIA GPUs (CUDA 12 wheels of jaxlib's plugin; cuDNN attention: README "Models").
        "cuda12": ["jax[cuda12]==0.10.2"],
        "test": [
            "pytest",
            "hypothesis",
            # The CPU wheel of this exact version is on disk on our machines; any other spec pulls CUDA.
            "torch==2.13.0",
            "transformers",
            "safetensors",
            "tokenizers",
            "scipy",  # chi-square test of the sampler
            # The reference of frame sampling (tests/data/test_qwen_vl_utils_parity.py); brings PyAV, which
            # writes the variable-frame-rate test video.
            "qwen-vl-utils==0.0.14",
            # Drives Debian's chromium (apt packages chromium, chromium-driver; .ci/run installs them) in the
            # predictions page's browser test (tests/io/test_predictions_page.py).
            "selenium",
        ],
    },
)
