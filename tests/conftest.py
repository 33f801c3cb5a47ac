"""Test setup: 8 fake CPU devices so that sharding is exercised on any machine."""
import os

# Must be set before jax is imported anywhere.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()

# One persistent XLA compilation cache per test session, shared with the subprocesses tests start: the
# loop tests compile the same tiny-model steps in many runs (in this process and in CLI subprocesses),
# and a cache hit replaces a compile of tens of seconds on a 2-core machine by a file read. A fresh
# directory each session, so nothing carries over between sessions or machines.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    import atexit
    import shutil
    import tempfile

    _XLA_CACHE = tempfile.mkdtemp(prefix="vtg_jax_test_xla_cache_")
    atexit.register(shutil.rmtree, _XLA_CACHE, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _XLA_CACHE
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1")

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")
