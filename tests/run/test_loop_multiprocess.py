"""The training loop in 2 real JAX processes x 4 CPU devices equals 1 process x 8 devices (gloo), each of
the 2 processes reading and decoding only its half of every batch (per-host input) and, in the final
evaluation, of the split; the RL iterations sample, score and pack their own rows."""
from __future__ import annotations

import pathlib

import pytest

from loop_helpers import tiny

WORKER = str(pathlib.Path(__file__).with_name("mp_loop_worker.py"))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    from vtg_jax.models.qwen_vl.presets import get_preset
    from vtg_jax.run.data_setup import build_run_data

    path = str(tmp_path_factory.mktemp("mp_cache"))
    c = tiny("sft", path)
    build_run_data(get_preset("qwen2.5-vl-tiny"), c.data, path, progress=False)  # data + tokenizer once
    return path


@pytest.mark.multiprocess
# opd_steps (~3.5 min) is slow: the two-process loop is checked by sft_steps in the default suite
@pytest.mark.parametrize("target", ["sft_steps", pytest.param("opd_steps", marks=pytest.mark.slow),
                                    pytest.param("tempsamp_steps", marks=pytest.mark.slow),
                                    pytest.param("tempsamp_cp_steps", marks=pytest.mark.slow)])
def test_loop_two_processes_match_one_process(tmp_path, cache, monkeypatch, target):
    from vtg_jax.parallel.testing import assert_layouts_agree

    monkeypatch.setenv("VTG_TEST_CACHE", cache)
    monkeypatch.setenv("VTG_TEST_OUT", str(tmp_path))
    out = assert_layouts_agree(f"{WORKER}:{target}", tmp_path, layouts=((2, 4), (1, 8)), atol=1e-5, rtol=1e-5,
                               timeout=300)
    assert out["loss/total"] > 0 and out["train/grad_norm"] > 0
    # each process read only its rows of every batch, together the one-process batches (same checksum)
    assert out["data/read_share_x_processes"] == 1.0
    if target == "sft_steps":  # and evaluated its share of the split, the metrics of all of it
        assert out["eval/prepared_share_x_processes"] == 1.0 and out["eval/n"] == 8
