"""Mesh from config, distributed settings, host-local ↔ global batches, and the 2-process harness."""
from __future__ import annotations

import pathlib

import jax
import ml_collections
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from vtg_jax.parallel.distributed import (DistributedSettings, batch_spec, distributed_settings, global_to_host,
                                          host_local_to_global, is_main_process, local_batch_slice,
                                          maybe_initialize_distributed)
from vtg_jax.parallel.mesh import mesh_from_config, resolve_mesh_shape
from vtg_jax.parallel.testing import assert_layouts_agree, run_multiprocess

WORKER = str(pathlib.Path(__file__).with_name("mp_sgd_worker.py"))


def test_resolve_mesh_shape_fills_and_validates():
    assert resolve_mesh_shape({"data": 2, "fsdp": -1, "tensor": 2}, 16) == (2, 4, 1, 2)
    assert resolve_mesh_shape({"fsdp": -1}, 8) == (1, 8, 1, 1)
    assert resolve_mesh_shape({"fsdp": 2, "sequence": -1, "tensor": 2}, 16) == (1, 2, 4, 2)
    assert resolve_mesh_shape((1, 2, 1, 4), 8) == (1, 2, 1, 4)
    with pytest.raises(ValueError, match="needs 4 devices but 8 are available"):
        resolve_mesh_shape({"data": 2, "fsdp": 2}, 8)
    with pytest.raises(ValueError, match="at most one mesh axis may be -1"):
        resolve_mesh_shape({"data": -1, "fsdp": -1}, 8)
    with pytest.raises(ValueError, match="not divisible"):
        resolve_mesh_shape({"data": 3, "fsdp": -1}, 8)
    with pytest.raises(ValueError, match="unknown mesh axes"):
        resolve_mesh_shape({"fdsp": 8}, 8)
    with pytest.raises(ValueError, match="positive or -1"):
        resolve_mesh_shape({"data": 0}, 8)


def test_mesh_from_config_dict_and_configdict():
    mesh = mesh_from_config({"data": 2, "fsdp": -1, "tensor": 2})  # a run config's mesh section
    assert mesh.axis_names == ("data", "fsdp", "sequence", "tensor")
    assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "sequence": 1, "tensor": 2}
    # A config saved before the sequence axis existed has no `sequence` key: it is 1.
    cfg = ml_collections.ConfigDict({"mesh": {"data": -1, "fsdp": 1, "tensor": 1}, "seed": 0})
    assert dict(mesh_from_config(cfg.mesh).shape) == {"data": 8, "fsdp": 1, "sequence": 1, "tensor": 1}
    assert dict(mesh_from_config(cfg.mesh, devices=jax.devices()[:2]).shape)["data"] == 2
    with pytest.raises(ValueError, match="needs 16 devices but 8"):
        mesh_from_config({"data": 4, "fsdp": 4, "tensor": 1})


def _section(**values) -> dict:
    """A run config's `distributed` section (base_config's defaults: the environment decides)."""
    return {"mode": "", "coordinator_address": None, "num_processes": None, "process_id": None,
            "local_device_ids": None, **values}


def test_distributed_settings_single_process_and_explicit():
    assert distributed_settings(env={}, detect_cluster=False) is None
    run_cfg = ml_collections.ConfigDict({"distributed": _section(), "seed": 0})  # an empty section: env decides
    assert distributed_settings(run_cfg.distributed, env={"JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1",
                                                          "JAX_COORDINATOR_ADDRESS": "h:1"},
                                detect_cluster=False).process_id == 1
    assert distributed_settings(env={"JAX_NUM_PROCESSES": "1"}, detect_cluster=False) is None
    env = {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:8476", "JAX_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "3",
           "JAX_PLATFORMS": "cpu", "JAX_LOCAL_DEVICE_IDS": "0,1"}
    s = distributed_settings(env=env, detect_cluster=False)
    assert s == DistributedSettings("10.0.0.1:8476", 4, 3, (0, 1), cpu_collectives=True)
    assert s.initialize_kwargs()["local_device_ids"] == [0, 1]
    assert distributed_settings(env={**env, "VTG_DISTRIBUTED": "off"}, detect_cluster=False) is None
    gpu = distributed_settings(env={**env, "JAX_PLATFORMS": "cuda"}, detect_cluster=False)
    assert not gpu.cpu_collectives
    with pytest.raises(KeyError, match="a distributed section has the keys"):
        distributed_settings({"num_processes": 2}, env={}, detect_cluster=False)


def test_distributed_settings_config_wins_and_clusters():
    cfg = ml_collections.ConfigDict({"distributed": _section(num_processes=2, process_id=1, coordinator_address="h:1")})
    s = distributed_settings(cfg.distributed, env={"JAX_PROCESS_ID": "0", "JAX_NUM_PROCESSES": "8",
                                                   "JAX_PLATFORMS": "cpu"}, detect_cluster=False)
    assert (s.num_processes, s.process_id, s.coordinator_address, s.cpu_collectives) == (2, 1, "h:1", True)
    slurm = {"SLURM_JOB_ID": "7", "SLURM_NTASKS": "4"}  # jax's SLURM detection fills the fields in.
    auto = distributed_settings(env=slurm, detect_cluster=False)
    assert (auto.coordinator_address, auto.num_processes, auto.process_id) == (None, None, None)
    assert distributed_settings(env={"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1"}, detect_cluster=False) is None
    assert distributed_settings(env={"VTG_DISTRIBUTED": "auto"}, detect_cluster=False).num_processes is None
    placeholder = _section(num_processes=None)  # None in the config defers to the env
    assert distributed_settings(placeholder, env={"JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "0",
                                                  "JAX_COORDINATOR_ADDRESS": "h:1"}).num_processes == 2
    with pytest.raises(ValueError, match="JAX_COORDINATOR_ADDRESS"):
        distributed_settings(env={"JAX_NUM_PROCESSES": "2"}, detect_cluster=False)


def test_maybe_initialize_single_process_is_a_noop():
    assert maybe_initialize_distributed(_section(num_processes=1)) is False
    assert maybe_initialize_distributed(env={"JAX_NUM_PROCESSES": "1"}) is False
    assert not jax.distributed.is_initialized() and is_main_process()


def test_host_local_to_global_single_process():
    mesh = mesh_from_config({"data": 2, "fsdp": 2, "tensor": 2})
    assert batch_spec(mesh) == P(("data", "fsdp"))
    assert local_batch_slice(mesh, 16) == slice(0, 16)
    batch = {"x": np.arange(32, dtype=np.float32).reshape(16, 2), "scale": np.float32(2.0)}
    out = host_local_to_global(batch, mesh, {"scale": P()})
    assert out["x"].sharding.spec == P(("data", "fsdp")) and out["scale"].sharding.spec == P()
    assert len(out["x"].addressable_shards) == 8 and out["x"].addressable_shards[0].data.shape == (4, 2)
    back = global_to_host(out)
    np.testing.assert_array_equal(back["x"], batch["x"])
    assert float(back["scale"]) == 2.0


@pytest.mark.multiprocess
def test_two_processes_match_one_process(tmp_path):
    """2 processes × 4 CPU devices give the same SGD steps as 1 process × 8 devices (allclose 1e-6)."""
    out = assert_layouts_agree(f"{WORKER}:sgd_steps", tmp_path, layouts=((2, 4), (1, 8)), timeout=90)
    assert out["loss"].shape == (2,) and out["loss"][1] < out["loss"][0]
    assert out["w1"].shape == (8, 32) and out["row_sums"].shape == (16,)


@pytest.mark.multiprocess
def test_harness_reports_failures_and_timeouts(tmp_path):
    with pytest.raises(RuntimeError, match="(?s)a worker failed.*worker 1 failed on purpose"):
        run_multiprocess(f"{WORKER}:fail_on_process_1", tmp_path / "fail", timeout=60)
    with pytest.raises(RuntimeError, match="timed out after 6s"):
        run_multiprocess(f"{WORKER}:hang", tmp_path / "hang", num_processes=2, devices_per_process=1, timeout=6)
