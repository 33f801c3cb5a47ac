"""config.data's frame sampling: the paper recipes' values, and a frame store extracted otherwise is refused."""
import importlib.util
import os

import pytest

from vtg_jax.data.extract import extract
from vtg_jax.data.synthetic import write_mp4
from vtg_jax.run.data_setup import check_store_sampling, sampling_config

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "configs")


def _config(name, arg):
    spec = importlib.util.spec_from_file_location(name, os.path.join(CONFIGS, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


@pytest.mark.parametrize("name,arg,want", [
    # Time-R1: 2 fps, 3,584 video tokens of 28x28.
    ("grpo", "time_r1", dict(rule="qwen_vl_utils", fps=2.0, nframes=0, max_frames=768, total_pixels=3584 * 28 * 28)),
    # TVG-R1 §4.1: 64 frames of 128x28x28 pixels (SFT cold start, RL and its selection).
    ("grpo", "tvg_r1", dict(rule="qwen_vl_utils", nframes=64, max_pixels=128 * 28 * 28, total_pixels=None)),
    ("sft", "tvg_r1", dict(rule="qwen_vl_utils", nframes=64, max_pixels=128 * 28 * 28)),
    ("select", "tvg_r1,paper", dict(rule="qwen_vl_utils", nframes=64, max_pixels=128 * 28 * 28)),
    # Video-OPD §4.1 / App. D.1: 2 fps, <= 768 frames, <= 8,192 video tokens of 32x32.
    ("opd", "paper", dict(rule="qwen_vl_utils", fps=2.0, max_frames=768, total_pixels=8192 * 32 * 32)),
    ("grpo", "video_opd", dict(rule="qwen_vl_utils", fps=2.0, max_frames=768, total_pixels=8192 * 32 * 32)),
    ("select", "tvdf,paper", dict(total_pixels=8192 * 32 * 32)),
    # TimeLens' evaluation: 2 fps, <= 448 frames.
    ("eval", "timelens", dict(rule="qwen_vl_utils", fps=2.0, max_frames=448, total_pixels=None)),
    # TempSamp-R1 §4: 2 fps, "approximately 2.8 million pixels" = Time-R1's 3584·28·28 per clip.
    ("tempsamp", "paper", dict(rule="qwen_vl_utils", fps=2.0, max_frames=768, min_pixels=None, max_pixels=None,
                               total_pixels=3584 * 28 * 28)),
    # A paper that gives no other values: qwen-vl-utils' defaults at 2 fps.
    ("longvtg", "paper", dict(rule="qwen_vl_utils", fps=2.0, max_frames=768, total_pixels=None)),
    # The demo keeps the HF processors' rule its shipped checkpoints were trained on.
    ("opd", "", dict(rule="transformers", fps=2.0, min_pixels=3136, max_pixels=3136)),
])
def test_recipes_sample_frames_with_their_papers_values(name, arg, want):
    got = sampling_config(_config(name, arg).data).describe()
    assert {k: got[k] for k in want} == want


def test_a_store_extracted_with_other_sampling_is_refused(tmp_path):
    import numpy as np

    vdir = tmp_path / "v"
    vdir.mkdir()
    write_mp4(np.zeros((20, 56, 56, 3), np.uint8), str(vdir / "a.mp4"), 4.0)
    cfg = _config("grpo", "time_r1")
    s = sampling_config(cfg.data)
    store = str(tmp_path / "store")
    extract(str(vdir), store, family="qwen2_5_vl", fps=s.fps, total_pixels=s.total_pixels, progress=False)
    check_store_sampling(store, "qwen2_5_vl", cfg.data)  # the recipe's own values: accepted
    with pytest.raises(ValueError, match="total_pixels"):
        check_store_sampling(store, "qwen2_5_vl", _config("grpo", "tvg_r1").data)
    with pytest.raises(ValueError, match="family"):
        check_store_sampling(store, "qwen3_vl", cfg.data)
