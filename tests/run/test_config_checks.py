"""Fail-fast run configs: missing checkpoints / data / tokenizer named at once as flags, before jax or any
model; real-size presets never random-initialised by default; frozen models (teacher, GRPO reference)
computing in their sections' dtypes; strict model-section reads; resumes of checkpoints saved before."""
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import pytest
from absl import flags
from flax import nnx
from ml_collections import config_flags

from loop_helpers import REPO, load_recipe
from vtg_jax.run.model_setup import build_model, model_options, reference_section
from vtg_jax.run.config import DEMO_STUDENT, DEMO_TEACHER, base_config
from vtg_jax.run.cli import set_none, take_config_flags
from vtg_jax.run.config_checks import IncompleteConfig, missing_fields, require_complete
from vtg_jax.run.resume import config_changes

POLICY = "--init_from (config.model.init_from)"
DATA = ["--config.data.train", "--config.data.frame_store", "--config.data.tokenizer"]
DISTILL = [POLICY, "--config.teacher.init_from", *DATA]
POLICY_ONLY = [POLICY, *DATA]
PAPER_CONFIGS = [
    ("opd", "paper", DISTILL), ("op_rkd", "paper", DISTILL), ("op_fkd", "paper", DISTILL),
    ("grpo", "video_opd", POLICY_ONLY), ("grpo", "tvg_r1", POLICY_ONLY), ("grpo", "time_r1", POLICY_ONLY),
    ("sft", "tvg_r1", POLICY_ONLY), ("tempsamp", "paper", POLICY_ONLY), ("tempsamp", "paper_charades", POLICY_ONLY),
    ("longvtg", "paper", POLICY_ONLY),
    ("eval", "paper", ["--config.eval.checkpoint", "--config.data.val", "--config.data.test",
                       "--config.data.frame_store", "--config.data.tokenizer"]),
    ("select", "tvdf,paper", DISTILL), ("select", "tvg_r1,paper", DISTILL),  # TVG-R1 annotates with the teacher
    ("select", "time_r1,paper", POLICY_ONLY),  # scores the policy only
]


def _params(model) -> list:
    return jax.tree.leaves(nnx.state(model, nnx.Param))


@pytest.mark.parametrize("name,arg,expected", PAPER_CONFIGS)
def test_paper_configs_name_every_missing_field(name, arg, expected):
    c = load_recipe(name, arg)
    assert missing_fields(c) == expected
    with pytest.raises(IncompleteConfig) as e:
        require_complete(c)
    assert str(e.value).startswith(f"the run config misses {len(expected)} field(s); set {', '.join(expected)}")


@pytest.mark.parametrize("name", ["sft", "grpo", "opd", "op_rkd", "op_fkd", "tempsamp", "longvtg", "select", "eval"])
def test_cpu_recipes_are_complete(name):
    c = load_recipe(name)
    assert missing_fields(c) == (["--config.eval.checkpoint"] if name == "eval" else [])


def test_pipelines_leave_out_what_they_chain():
    c = load_recipe("pipeline", "video_opd,paper")
    stage_data = [f"--config.stages.{s}.data.{k}" for s in ("select", "opd")
                  for k in ("train", "frame_store", "tokenizer")]
    assert missing_fields(c) == [POLICY, *stage_data, "--config.teacher.init_from (the teacher of stages select, opd)"]
    with c.unlocked():
        c.model.init_from, c.teacher.init_from = "/ckpt/student", "/ckpt/teacher"
    assert missing_fields(c) == stage_data  # the opd stage's policy is the pipeline's, its teacher the pipeline's
    # TempSamp's hybrid: the two eval stages evaluate the CoT stages' policies and need their val split
    names = missing_fields(load_recipe("pipeline", "tempsamp_hybrid,paper"))
    assert names[0] == POLICY and names.count(POLICY) == 1
    assert "--config.stages.eval_cot.data.val" in names and "--config.stages.eval_cot.data.train" not in names
    for name in ("video_opd", "video_opd_rounds", "grpo_time_r1", "tvg_r1", "tempsamp_hybrid"):
        assert missing_fields(load_recipe("pipeline", name)) == []  # the shipped demo models, synthetic data


def test_cli_stops_before_jax_with_one_message(tmp_path):
    workdir = tmp_path / "run"
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "vtg_jax.main", "--config=configs/opd.py:paper",
                          f"--workdir={workdir}"], cwd=REPO, capture_output=True, text=True, timeout=120)
    wall = time.perf_counter() - t0
    assert out.returncode == 1 and wall < 5.0, wall
    lines = [x for x in out.stderr.splitlines() if not x.startswith("import time:")]
    assert lines == [f"error: the run config misses 5 field(s); set {', '.join(DISTILL)}. A real-size preset starts "
                     "from its checkpoint: for random weights instead pass --config.model.random_init=True, "
                     "--config.teacher.random_init=True"]
    imported = {x.rsplit("|", 1)[-1].strip() for x in out.stderr.splitlines() if x.startswith("import time:")}
    assert "ml_collections" in imported and not imported & {"jax", "flax", "vtg_jax.models.qwen_vl.model"}
    assert not workdir.exists()  # not even the workdir lock


def test_a_section_the_algorithm_does_not_have_is_refused_with_the_valid_keys(tmp_path):
    out = subprocess.run([sys.executable, "-m", "vtg_jax.main", "--config=configs/opd.py", f"--workdir={tmp_path}",
                          "--config.grpo.beta=0.1"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and not (tmp_path / "checkpoints").exists()
    assert out.stderr.strip().splitlines()[-1] == (
        "error: --config.grpo.beta: config has no key 'grpo'; its keys: algorithm, batch_size, checkpoint, data, "
        "distributed, eval, log, mesh, micro_batches, model, opd, optim, plan, resume_changed_config, reward, "
        "rollout, seed, steps, teacher")
    with pytest.raises(ValueError, match=r"config\.optim has no key 'lrr'; its keys: b1, b2, clip_norm, end_lr_ratio"):
        take_config_flags(["main", f"--config={REPO}/configs/sft.py", "--config.optim.lrr=1"])


def test_off_knobs_take_numbers_and_none_on_the_command_line():
    """A typed placeholder takes a number from ml_collections' parser; `=None` is taken out before it parses
    (it reads no None for a float / int field) and set after; 0, which meant off, is refused."""
    argv = ["main", f"--config={REPO}/configs/grpo.py:time_r1", "--config.grpo.kl_clamp=0.2",
            "--config.eval.num=None", "--config.rollout.top_k=5", "--config.checkpoint.keep=None",
            "--config.grpo.eps_high=None", "--config.data.total_pixels=None"]
    rest, none_keys = take_config_flags(argv)
    assert rest == argv[:3] + argv[4:5] and none_keys == ["eval.num", "checkpoint.keep", "grpo.eps_high",
                                                           "data.total_pixels"]
    values = flags.FlagValues()
    holder = config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True, sys_argv=rest)
    values(rest)
    c = holder.value
    set_none(c, none_keys)
    assert (c.grpo.kl_clamp, c.rollout.top_k, c.eval.num, c.checkpoint.keep, c.grpo.eps_high) == (0.2, 5, None, None,
                                                                                                  None)
    assert c.data.total_pixels is None and c.grpo.eps_low == 0.2
    with pytest.raises(ValueError, match=r"optim\.lr cannot be None"):
        take_config_flags(["main", f"--config={REPO}/configs/sft.py", "--config.optim.lr=None"])
    with c.unlocked():
        c.model.random_init, c.data.synthetic.enabled, c.eval.every, c.grpo.dual_clip = True, True, 0, 0.0
    with pytest.raises(ValueError, match=r"^0 no longer means off: set config\.grpo\.dual_clip \(None: no dual "
                                         r"clip\), config\.eval\.every \(None: only at the end\) to None"):
        require_complete(c)


def test_given_paths_that_do_not_exist_are_named(tmp_path):
    c = load_recipe("opd", "paper")
    tokenizer = tmp_path / "tokenizer"  # a directory, but without tokenizer.json
    tokenizer.mkdir()
    with c.unlocked():
        c.model.init_from, c.teacher.init_from = DEMO_STUDENT, str(tmp_path / "teacher")
        c.data.train, c.data.frame_store = str(tmp_path / "train.jsonl"), str(tmp_path)
        c.data.tokenizer = str(tokenizer)
    with pytest.raises(FileNotFoundError) as e:
        require_complete(c)
    assert str(e.value) == (f"the run config names 3 path(s) that do not exist: config.teacher.init_from "
                            f"'{tmp_path / 'teacher'}', config.data.train '{tmp_path / 'train.jsonl'}', "
                            f"config.data.tokenizer '{tokenizer}' (no tokenizer.json)")


def test_entry_points_check_before_building_anything(tmp_path):
    from vtg_jax.run.evaluate import evaluate_checkpoint
    from vtg_jax.run.loop import train
    from vtg_jax.run.pipeline import run_pipeline
    from vtg_jax.run.select import run_selection

    for run, config in ((train, load_recipe("opd", "paper")), (evaluate_checkpoint, load_recipe("eval", "paper")),
                        (run_selection, load_recipe("select", "tvdf,paper")),
                        (run_pipeline, load_recipe("pipeline", "video_opd,paper"))):
        t0 = time.perf_counter()
        with pytest.raises(IncompleteConfig):
            run(config, str(tmp_path / "w"))
        assert time.perf_counter() - t0 < 1.0 and not (tmp_path / "w").exists()


def test_real_size_preset_needs_a_checkpoint_or_random_init():
    c = load_recipe("grpo", "video_opd")
    with pytest.raises(IncompleteConfig, match=r"for random weights instead pass --config\.model\.random_init=True$"):
        require_complete(c)
    with c.unlocked():
        c.model.random_init = True
    assert missing_fields(c) == DATA
    section = dict(base_config("grpo").model.to_dict(), preset="qwen3-vl-8b")  # refused before any array exists
    with pytest.raises(ValueError, match=r"'qwen3-vl-8b' is a real-size model \(8\.8B parameters\).*"
                                         r"--config\.model\.random_init=True"):
        build_model(section, seed=0)
    with pytest.raises(ValueError, match=r"--config\.teacher\.init_from=.*--config\.teacher\.random_init=True"):
        build_model(dict(section, preset="qwen3-vl-32b"), seed=0, name="teacher")


def test_preset_sizes_match_the_built_models():
    from vtg_jax.models.qwen_vl import QwenVL, get_preset
    from vtg_jax.models.qwen_vl.size import REAL_SIZE_PARAMETERS, is_real_size, parameter_count, preset_configs

    for name in ("qwen2.5-vl-tiny", "qwen3-vl-tiny", "qwen2.5-vl-synthetic-teacher"):  # both families' layouts
        abstract = nnx.eval_shape(lambda: QwenVL(get_preset(name), rngs=nnx.Rngs(0)))  # noqa: B023
        assert parameter_count(get_preset(name)) == sum(x.size for x in _params(abstract))
    real = {n for n in preset_configs() if is_real_size(n)}
    assert real == {n for n in preset_configs() if not ("tiny" in n or "synthetic" in n)} and len(real) == 8
    assert parameter_count(get_preset("qwen2.5-vl-synthetic-teacher")) < REAL_SIZE_PARAMETERS / 30
    assert parameter_count(get_preset("qwen3-vl-8b")) == 8_767_123_696  # nnx.eval_shape's count (18 s to trace)


@pytest.mark.parametrize("param_dtype", ["bfloat16", "float32"])
@pytest.mark.parametrize("source", ["hf_dir", "preset"])
def test_teacher_loads_in_its_configured_dtype(param_dtype, source):
    teacher = base_config("opd").teacher
    with teacher.unlocked():
        teacher.init_from, teacher.preset = (DEMO_TEACHER, "") if source == "hf_dir" else ("", "qwen2.5-vl-tiny")
        teacher.dtype, teacher.param_dtype = "bfloat16", param_dtype
    model = build_model(teacher, seed=1, name="teacher")
    assert {x.dtype for x in _params(model)} == {jnp.dtype(param_dtype)} and model.dtype == jnp.bfloat16


def test_run_workdir_teacher_from_a_checkpoint_saved_before_these_keys(tmp_path):
    """A checkpoint whose saved config predates random_init / the reference section restores; a bfloat16
    teacher gets the saved float32 weights cast (the checksums verify the saved dtype first)."""
    from vtg_jax.io.checkpoint import Checkpointer
    from vtg_jax.run.model_setup import checkpoint_tree
    from vtg_jax.train.optim import make_optimizer
    from vtg_jax.run.config import optim_config
    from vtg_jax.train.state import init_train_state

    c = base_config("sft")
    with c.unlocked():
        c.model.init_from = DEMO_STUDENT  # loads in a second, where random init compiles every initializer
    policy = build_model(c.model, seed=3)
    state, _, _ = init_train_state(policy, make_optimizer(optim_config(c))[0], freeze_vision=False)
    old = c.to_dict()  # as the older code saved it: every section (an SFT run's teacher too), no random_init
    del old["model"]["random_init"]
    old["teacher"] = {"preset": "", "init_from": "", "dtype": "float32"}
    with Checkpointer(str(tmp_path / "run" / "checkpoints"), save_every_n_steps=1, async_save=False, config=old) as ck:
        ck.save(1, checkpoint_tree(state, jnp.zeros((2,), jnp.uint32)), force=True)
    teacher = dict(base_config("opd").teacher.to_dict(), init_from=str(tmp_path / "run"), dtype="bfloat16",
                   param_dtype="bfloat16")
    loaded = _params(build_model(teacher, seed=0, name="teacher"))
    assert {x.dtype for x in loaded} == {jnp.dtype(jnp.bfloat16)}
    assert all((a == b.astype(jnp.bfloat16)).all() for a, b in zip(loaded, _params(policy)))


def test_reference_computes_as_its_section_says():
    c = load_recipe("grpo", "time_r1")  # k3 KL to the frozen initial policy
    assert (c.reference.dtype, c.reference.param_dtype, c.reference.remat) == ("bfloat16", "bfloat16", "none")
    assert (c.model.dtype, c.model.param_dtype, c.model.remat) == ("bfloat16", "float32", "full")
    with c.unlocked():
        c.model.init_from = DEMO_STUDENT
        c.reference.attention_impl = "xla"
    section = reference_section(c)
    assert section == {"preset": "qwen2.5-vl-7b", "init_from": DEMO_STUDENT, "random_init": False,
                       "rope_index_rule": "original", "dtype": "bfloat16", "param_dtype": "bfloat16", "remat": "none",
                       "attention_impl": "xla"}
    reference, policy = build_model(section, seed=0), build_model(c.model, seed=0)
    assert {x.dtype for x in _params(reference)} == {jnp.dtype(jnp.bfloat16)}
    assert {x.dtype for x in _params(policy)} == {jnp.dtype(jnp.float32)}
    assert all((a == b.astype(jnp.bfloat16)).all() for a, b in zip(_params(reference), _params(policy)))


def test_frozen_sections_default_to_the_policy_on_cpu_and_bfloat16_at_paper_scale():
    c = base_config("opd")
    assert model_options(c.teacher, "teacher") == model_options(c.model) == {
        "dtype": jnp.float32, "param_dtype": jnp.float32, "remat": "none", "attention_impl": "auto",
        "rope_index_rule": "original"}
    assert base_config("grpo").reference.to_dict() == {"dtype": "float32", "param_dtype": "float32", "remat": "none",
                                                       "attention_impl": "auto"}  # OPD has no reference
    paper = load_recipe("opd", "paper")
    for frozen in (paper.teacher, load_recipe("grpo", "video_opd").reference):
        assert (frozen.dtype, frozen.param_dtype, frozen.remat) == ("bfloat16", "bfloat16", "none")
    assert (paper.model.dtype, paper.model.param_dtype, paper.model.remat) == ("bfloat16", "float32", "full")


def test_model_options_reads_strictly():
    old_teacher = {"preset": "", "init_from": "", "dtype": "bfloat16"}  # the section before param_dtype existed
    with pytest.raises(KeyError, match=r"config section 'teacher' has no 'param_dtype' \(it has: dtype, init_from"):
        model_options(old_teacher, "teacher")
    opts = model_options(dict(base_config("opd").teacher.to_dict(), dtype="bfloat16", remat="full"), "teacher")
    assert opts == {"dtype": jnp.bfloat16, "param_dtype": jnp.float32, "remat": "full", "attention_impl": "auto",
                    "rope_index_rule": "original"}
    with pytest.raises(KeyError, match="config section 'model' has no 'random_init'"):
        build_model({k: v for k, v in base_config("sft").model.to_dict().items() if k != "random_init"}, seed=0)


def test_resume_against_a_config_saved_before_the_new_keys():
    current = base_config("grpo").to_dict()
    old = base_config("grpo").to_dict()
    del old["model"]["random_init"], old["reference"]
    old["teacher"] = {"preset": "", "init_from": "", "dtype": "float32"}
    assert config_changes(old, current) == {}  # what the older code did is what these keys say
    paper = load_recipe("grpo", "time_r1").to_dict()
    old_paper = load_recipe("grpo", "time_r1").to_dict()
    del old_paper["reference"], old_paper["model"]["random_init"]
    # the reference was built from config.model: float32 parameters then, bfloat16 now (remat may change)
    assert config_changes(old_paper, paper) == {"reference.param_dtype": ("float32", "bfloat16")}
    paper["reference"]["attention_impl"], paper["model"]["random_init"] = "xla", True  # GRPO has no teacher
    assert config_changes(old_paper, paper) == {"reference.param_dtype": ("float32", "bfloat16")}
