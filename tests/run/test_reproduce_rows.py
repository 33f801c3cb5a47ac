"""bench/reproduce.py: every row's command names a config and keys that exist (a renamed config key would
otherwise surface only in a 10-minute run), and the report reads finished runs into its tables."""
from __future__ import annotations

import importlib.util
import json
import os

import pytest
from loop_helpers import REPO, load_recipe


def _reproduce():
    spec = importlib.util.spec_from_file_location("reproduce", REPO / "bench" / "reproduce.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


REPRODUCE = _reproduce()


@pytest.mark.parametrize("row", sorted(REPRODUCE.ROWS))
def test_row_command_overrides_existing_keys(row, tmp_path):
    cmd = REPRODUCE.command(row, 1, str(tmp_path))
    assert cmd[1:3] == ["-m", "vtg_jax.main"] and cmd[-1] == f"--workdir={tmp_path}/{row}/seed1"
    # every row starts from the student its numbers were made with (one flag), shipped in the repository
    start = [a.partition("=")[2] for a in cmd if a.startswith("--config.model.init_from=")]
    assert len(start) == 1 and (REPO / start[0] / "model.safetensors").exists()
    file, _, arg = cmd[3].removeprefix("--config=configs/").partition(":")
    name = file.removesuffix(".py")
    c = load_recipe(name, arg)
    for flag in cmd[4:-1]:
        key, _, value = flag.removeprefix("--config.").partition("=")
        *parents, leaf = key.split(".")
        target = c
        for p in parents:
            target = target[p]
        assert leaf in target, f"{row}: --config.{key} is not a key of configs/{name}.py"
        with c.unlocked():  # the value parses to the field's type (None: off, `vtg_jax.run.cli`)
            kind = target.get_type(leaf)  # a typed placeholder's type when its value is None
            target[leaf] = None if value == "None" else target[leaf] if kind in (tuple, bool) else kind(value)
    if name == "pipeline":
        assert c.seed == 1 and c.cache_dir == f"{tmp_path}/data"
    else:
        assert c.seed == 1 and c.data.cache_dir == f"{tmp_path}/data"


def test_report_tables_from_finished_runs(tmp_path):
    root = tmp_path / "repro"
    for seed, miou in ((0, 0.40), (1, 0.50)):
        d = root / "fig6_opd" / f"seed{seed}"
        d.mkdir(parents=True)
        json.dump({"finished": True, "wall_s": 120.0, "eval": {"eval/mIoU": miou, "eval/R@0.5": miou},
                   "eval_start": {"eval/mIoU": 0.3}}, open(d / "summary.json", "w"))
        with open(d / "metrics.jsonl", "w") as f:
            for step in range(51):  # an update every 2 s, an evaluation (10 s) every 25
                row = {"step": step, "wall_time": step * 2.0 + 10.0 * (step // 25)}
                if step % 25 == 0:
                    row["eval/mIoU"] = miou * step / 50
                f.write(json.dumps(row) + "\n")
    d = root / "fig6_opd" / "seed2"  # unfinished: not counted
    d.mkdir()
    json.dump({"finished": False, "wall_s": 1.0, "eval": {}}, open(d / "summary.json", "w"))
    text = REPRODUCE.table(str(root), "fig6")
    opd_line = next(line for line in text.splitlines() if line.startswith("| Video-OPD"))
    assert "| 2 |" in opd_line and "0.450 ± 0.050" in opd_line and "0.400 / 0.500" in opd_line
    assert "| the student before training | – |" in text and "0.300 |" in text
    assert "python bench/reproduce.py run fig6_grpo" in text
    curves = REPRODUCE._curves(str(root), "fig6_opd")
    assert len(curves) == 2 and curves[0][3] == pytest.approx(2.0)  # the evaluation gaps are left out
    assert curves[1][2].tolist() == pytest.approx([0.0, 0.25, 0.5])
    assert os.path.basename(REPRODUCE.DOC) == "REPRODUCTION.md"


def test_rounds_table_and_figure_from_pipeline_runs(tmp_path, monkeypatch):
    root = tmp_path / "repro"
    for seed, ends in ((0, (0.40, 0.42, 0.44)), (1, (0.30, 0.35, 0.50))):
        stages = {"r1_select": {"algorithm": "select"}}
        for r, miou in enumerate(ends, 1):
            stages[f"r{r}_opd"] = {"algorithm": "opd", "eval": {"eval/mIoU": miou}}
        stages["r1_opd"].update(eval_start={"eval/mIoU": 0.45}, eval_teacher={"eval/mIoU": 0.77})
        d = root / "table6_rounds" / f"seed{seed}"
        d.mkdir(parents=True)
        json.dump({"name": "video_opd_rounds", "wall_s": 600.0, "stages": stages}, open(d / "pipeline.json", "w"))
    (root / "table6_rounds" / "seed2").mkdir()  # not started: left out
    lines = REPRODUCE.rounds_table(str(root)).splitlines()
    assert lines[2:] == ["| three rounds | seed0 | 0.450 | 0.400 | 0.420 | 0.440 | 0.770 |",
                         "| three rounds | seed1 | 0.450 | 0.300 | 0.350 | 0.500 | 0.770 |"]
    monkeypatch.setattr(REPRODUCE, "FIGURES", str(tmp_path))
    REPRODUCE.figure_rounds(str(root))
    assert (tmp_path / "repro_table6_rounds.png").stat().st_size > 0
    final = REPRODUCE.table(str(root), "table6")
    assert "0.470 ± 0.030" in next(line for line in final.splitlines() if line.startswith("| three rounds"))
