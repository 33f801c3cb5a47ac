"""Entry point: `python -m vtg_jax.main --config=configs/<recipe>.py[:arg] --workdir=W [--config.x=y ...]`.

    python -m vtg_jax.main --config=configs/opd.py --workdir=/tmp/vtg_opd          # the README demo
    python -m vtg_jax.main --config=configs/grpo.py:tvg_r1 --workdir=/tmp/g --config.optim.lr=1e-5
    python -m vtg_jax.main --config=configs/eval.py --workdir=/tmp/e --config.eval.checkpoint=/tmp/vtg_opd
    python -m vtg_jax.main --config=configs/select.py:tvdf --workdir=/tmp/sel      # data selection
    python -m vtg_jax.main --config=configs/pipeline.py:video_opd_rounds --workdir=/tmp/p   # chained stages
    python -m vtg_jax.main --config=configs/sft.py --workdir=/tmp/s --init_from=/path/to/Qwen2.5-VL-7B-Instruct

Configs are locked: a misspelled `--config.key` fails with the valid keys; `--config.key=None` turns a knob
off (`vtg_jax.run.cli`). `--init_from` sets `config.model.init_from` (an HF directory or one of our run
workdirs). A config missing a checkpoint, data or tokenizer path stops at once with one message naming every
missing flag. Without `--config` this prints what is built and runs a one-screen smoke check of the math
library and the tiny models.
"""
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from vtg_jax.run.cli import set_none, take_config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "a recipe file in configs/, e.g. configs/opd.py[:arg]",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "run directory: checkpoints, metrics, plots, predictions")
_INIT_FROM = flags.DEFINE_string("init_from", None, "HF checkpoint directory or run workdir to start the policy from")
_NONE_KEYS: list[str] = []  # the keys of the command line's --config.<key>=None flags (take_config_flags)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    config = _CONFIG.value
    if config is None:
        import vtg_jax
        from vtg_jax import smoke

        print(f"vtg_jax {vtg_jax.__version__}: no --config given, running the smoke check "
              "(recipes: configs/{sft,grpo,opd,op_rkd,op_fkd,tempsamp,longvtg,eval,select,pipeline}.py)")
        smoke.run()
        return
    if not _WORKDIR.value:
        raise app.UsageError("--workdir is required with --config")
    if _INIT_FROM.value:
        with config.unlocked():
            config.model.init_from = _INIT_FROM.value
    set_none(config, _NONE_KEYS)
    from vtg_jax.run.config_checks import IncompleteConfig, require_complete

    try:  # in a fraction of a second, without jax: nothing has touched devices or built a model yet
        require_complete(config)
    except (IncompleteConfig, FileNotFoundError, ValueError) as e:  # a config error: no traceback
        sys.exit(f"error: {e}")
    from vtg_jax.parallel.distributed import maybe_initialize_distributed

    pipeline = config.algorithm == "pipeline"
    # before anything touches devices; a pipeline's stages share the first stage's layout
    maybe_initialize_distributed((config.stages[config.order[0]] if pipeline else config).distributed)
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # Orbax and Grain log every save / worker at INFO
    from vtg_jax.io.workdir_lock import WorkdirBusy, WorkdirLock
    from vtg_jax.run.jobs import job_of
    from vtg_jax.run.loop import ResumeConfigChanged, RunFailed
    from vtg_jax.run.pipeline import pipeline_report, run_pipeline

    try:
        with WorkdirLock(_WORKDIR.value):  # one run per workdir, whatever the job
            if pipeline:
                print(pipeline_report(run_pipeline(config, _WORKDIR.value)))
            else:
                job = job_of(config)  # the algorithm's registry record names its job
                print(job.report(job.run(config, _WORKDIR.value), config, _WORKDIR.value))
    except (WorkdirBusy, ResumeConfigChanged, RunFailed, IncompleteConfig) as e:  # already explained: no traceback
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    from vtg_jax.host_memory import reexec_with_hugepages

    reexec_with_hugepages()  # before jax starts: huge pages for XLA:CPU's per-step buffers (see the module)
    try:
        sys.argv, none_keys = take_config_flags(sys.argv)
    except ValueError as e:  # a key the config does not have: named with the valid ones
        sys.exit(f"error: {e}")
    _NONE_KEYS.extend(none_keys)
    app.run(main)
