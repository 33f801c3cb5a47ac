"""The rows of docs/REPRODUCTION.md: the papers' tables and figures on the synthetic benchmark.

    python bench/reproduce.py list                                  # every row and its command
    python bench/reproduce.py run table2_tvdf --seeds=0,1,2 --root=/tmp/repro   # one row, 3 seeds
    python bench/reproduce.py report --root=/tmp/repro              # tables + figures -> docs/

Every row is ONE `python -m vtg_jax.main` command (printed by `list`), run once per seed with
`--config.seed` (recipes) or `--config.seed` of the pipeline (which sets every stage's). Rows start from
the 800-step student (vtg_jax/assets/synthetic_student_800; `STUDENT` below) unless they name their own
(the `_demo` rows: the README demo's student), use the shipped teacher unless they name another (vtg_jax/
assets, all made by the commands in its README), and share one synthetic dataset under <root>/data. A
seed whose run finished is not rerun.

`report` reads <root>/<row>/seed<k>/ (summary.json or pipeline.json, metrics.jsonl), writes the tables
between the `<!-- rows:<table> -->` markers of docs/REPRODUCTION.md and the PNG figures in
docs/figures/repro_*.png.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import os
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(REPO, "docs", "REPRODUCTION.md")
FIGURES = os.path.join(REPO, "docs", "figures")

# The OPD/GRPO comparison keeps everything but the objective equal: 800 training videos, updates of 16
# prompts, evaluation every 25 updates on the 200 val videos; GRPO, 4 samples a prompt, runs 100 updates
# (20 minutes for 200 on one core would break the 15-minute budget of a row) and OPD 200.
_CURVE = ["--config.eval.every=25", "--config.data.synthetic.num_train=800", "--config.batch_size=16"]
_RL = ["--config.data.synthetic.num_train=800", "--config.steps=100", "--config.eval.every=None"]


def _pipe(name: str, *extra: str) -> list[str]:
    return [f"--config=configs/pipeline.py:{name}", *extra]


_TABLE2 = {
    "table2_none": ("table2", "random 200 (no TRPV, no DBTP)", _pipe(
        "video_opd", "--config.stages.select.select.trpv_threshold=0.0", "--config.stages.select.select.dbtp=random")),
    "table2_trpv": ("table2", "TRPV only", _pipe("video_opd", "--config.stages.select.select.dbtp=random")),
    "table2_dbtp": ("table2", "DBTP only", _pipe("video_opd", "--config.stages.select.select.trpv_threshold=0.0")),
    "table2_tvdf": ("table2", "TRPV + DBTP (TVDF)", _pipe("video_opd")),
}

# Every row's starting policy. The rows were run from the 800-step student, which cannot see blue, cyan or
# green objects (README "The demo"); the demo has since moved to a student that sees every colour, and
# pinning the rows to the old one keeps their commands reproducing the numbers in docs/REPRODUCTION.md.
STUDENT = "vtg_jax/assets/synthetic_student_800"
DEMO_STUDENT = "vtg_jax/assets/synthetic_student"

# row id -> (table, label, main.py arguments without --workdir / seed / cache)
ROWS: dict[str, tuple[str, str, list[str]]] = {
    # Video-OPD Figure 6: OPD vs GRPO against step and wall-clock
    "fig6_opd": ("fig6", "Video-OPD (1 rollout, teacher log-probs), 200 updates",
                 ["--config=configs/opd.py", "--config.steps=200", "--config.checkpoint.every=200", *_CURVE]),
    "fig6_opd_large": ("fig6", "Video-OPD from the 3x larger teacher, 200 updates",
                       ["--config=configs/opd.py", "--config.steps=200", "--config.checkpoint.every=200",
                        "--config.teacher.init_from=$ROOT/teacher_large", *_CURVE]),
    "fig6_grpo": ("fig6", "GRPO (G = 4, IoU reward), 100 updates",
                  ["--config=configs/grpo.py", "--config.steps=100", "--config.checkpoint.every=100", *_CURVE]),
    # the same two from the README demo's student, which sees every colour (the rows above cannot)
    "fig6_opd_demo": ("fig6_demo", "Video-OPD, 200 updates", [
        "--config=configs/opd.py", "--config.steps=200", "--config.checkpoint.every=200", *_CURVE,
        f"--config.model.init_from={DEMO_STUDENT}"]),
    "fig6_grpo_demo": ("fig6_demo", "GRPO (G = 4, IoU reward), 100 updates", [
        "--config=configs/grpo.py", "--config.steps=100", "--config.checkpoint.every=100", *_CURVE,
        f"--config.model.init_from={DEMO_STUDENT}"]),
    # Video-OPD Table 2: TRPV x DBTP, one round of selection (200 of 800) then 200 OPD updates, with the
    # shipped teacher and again with the 3x larger one (the paper selects with and distils from a larger model)
    **_TABLE2,
    **{f"{row}_large": (table, f"{label}, the 3x larger teacher",
                        [*args, "--config.teacher.init_from=$ROOT/teacher_large"])
       for row, (table, label, args) in _TABLE2.items()},
    # random vs TVDF again from the demo's student, which sees every colour (DBTP's picks above are the
    # videos of the colours the 800-step student cannot see)
    **{f"{row}_demo": ("table2_demo", label, [*args, f"--config.model.init_from={DEMO_STUDENT}"])
       for row, (_, label, args) in _TABLE2.items() if row in ("table2_none", "table2_tvdf")},
    # Video-OPD Table 6 / Figure 5: three rounds of TVDF -> OPD
    "table6_rounds": ("table6", "three rounds", _pipe("video_opd_rounds")),
    "table6_rounds_large": ("table6", "three rounds, the 3x larger teacher",
                            _pipe("video_opd_rounds", "--config.teacher.init_from=$ROOT/teacher_large")),
    # Video-OPD Table 3: the same OPD with teachers of different sizes (the shipped teacher is the
    # student's size trained longer; the large one is trained once by PREREQUISITES["teacher_large"])
    "table3_teacher_same": ("table3", "teacher of the student's size (1.1M, the shipped one)",
                            ["--config=configs/opd.py", "--config.steps=200", "--config.eval.every=None",
                             "--config.data.synthetic.num_train=800"]),
    "table3_teacher_large": ("table3", "teacher 3x larger (3.3M, hidden 192, 6 layers)",
                             ["--config=configs/opd.py", "--config.steps=200", "--config.eval.every=None",
                              "--config.data.synthetic.num_train=800",
                              "--config.teacher.init_from=$ROOT/teacher_large"]),
    # TempSamp-R1 Table 4: the advantage strategies, against on-policy GRPO with the same G
    "tempsamp_grpo": ("tempsamp", "GRPO (on-policy only, G = 4)", ["--config=configs/grpo.py", *_RL]),
    "tempsamp_mixed": ("tempsamp", "mixed-policy GRPO (3 + ground truth)",
                       ["--config=configs/tempsamp.py", "--config.tempsamp.mode=mixed", *_RL]),
    "tempsamp_downscale": ("tempsamp", "reward downscaling", [
        "--config=configs/tempsamp.py", "--config.tempsamp.mode=downscale", *_RL]),
    "tempsamp_anchor": ("tempsamp", "advantage anchoring", [
        "--config=configs/tempsamp.py", "--config.tempsamp.mode=anchor", *_RL]),
    "tempsamp_shaping": ("tempsamp", "non-linear shaping", [
        "--config=configs/tempsamp.py", "--config.tempsamp.mode=shaping", *_RL]),
    # LongVTG-R1 Table 4: KL on every token vs token-aware KL, IoU vs CenDist + IoU (the student's plain
    # answer format, so that the rewards compare the same answers)
    "longvtg_kl_iou": ("longvtg", "KL (beta 0.04 on all tokens), IoU", [
        "--config=configs/longvtg.py", "--config.grpo.kl=k3", "--config.grpo.beta=0.04", "--config.reward=iou:1.0",
        "--config.data.answer_format={start:.1f} to {end:.1f}", *_RL]),
    "longvtg_tkl_iou": ("longvtg", "token-aware KL, IoU", [
        "--config=configs/longvtg.py", "--config.reward=iou:1.0", "--config.data.answer_format={start:.1f} to {end:.1f}",
        *_RL]),
    "longvtg_kl_cendist": ("longvtg", "KL (beta 0.04 on all tokens), CenDist + IoU", [
        "--config=configs/longvtg.py", "--config.grpo.kl=k3", "--config.grpo.beta=0.04",
        "--config.reward=cendist_iou:1.0", "--config.data.answer_format={start:.1f} to {end:.1f}", *_RL]),
    "longvtg_tkl_cendist": ("longvtg", "token-aware KL, CenDist + IoU (LongVTG-R1)", [
        "--config=configs/longvtg.py", "--config.reward=cendist_iou:1.0",
        "--config.data.answer_format={start:.1f} to {end:.1f}", *_RL]),
}


# Checkpoints some rows need, trained once by one command into <root>/<name> (reused by every seed).
PREREQUISITES: dict[str, list[str]] = {
    "teacher_large": ["--config=configs/sft.py:teacher_large", "--config.seed=0"],
}


def command(row: str, seed: int, root: str) -> list[str]:
    _, _, args = ROWS[row]
    pipeline = args[0].startswith("--config=configs/pipeline.py")
    cache = f"--config.cache_dir={root}/data" if pipeline else f"--config.data.cache_dir={root}/data"
    log = [] if pipeline else ["--config.log.progress=False"]
    start = [] if any(a.startswith("--config.model.init_from=") for a in args) else [f"--config.model.init_from={STUDENT}"]
    args = [a.replace("$ROOT", root) for a in args]
    return [sys.executable, "-m", "vtg_jax.main", *args, *start, f"--config.seed={seed}", cache, *log,
            f"--workdir={os.path.join(root, row, f'seed{seed}')}"]


def prerequisite(row: str, root: str) -> list[str] | None:
    """The command that trains what `row` needs into <root>/<name> (None: nothing)."""
    # a row needs the prerequisite whose output directory its arguments name
    name = next((n for n in PREREQUISITES if any(f"$ROOT/{n}" in a for a in ROWS[row][2])), None)
    if name is None:
        return None
    return [sys.executable, "-m", "vtg_jax.main", *PREREQUISITES[name], f"--config.data.cache_dir={root}/data",
            "--config.log.progress=False", f"--workdir={os.path.join(root, name)}"]


def _finished(workdir: str) -> bool:
    for name in ("pipeline.json", "summary.json"):
        path = os.path.join(workdir, name)
        if os.path.exists(path):
            with open(path) as f:
                d = json.load(f)
            return "wall_s" in d if name == "pipeline.json" else bool(d.get("finished"))
    return False


def run(rows: list[str], seeds: list[int], root: str, shard: str = "0/1") -> None:
    """Runs the (row, seed) pairs in order; with `shard` k/n only every n-th pair from the k-th (so that
    n workers, e.g. one per core, share a list)."""
    k, n = (int(x) for x in shard.split("/"))
    pairs = [(row, seed) for row in rows for seed in seeds][k::n]
    for row, seed in pairs:
        pre = prerequisite(row, root)
        if pre is not None:
            pre_dir = pre[-1].removeprefix("--workdir=")
            os.makedirs(root, exist_ok=True)
            with open(pre_dir + ".lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)  # another worker may be training it: wait, then reuse
                if not _finished(pre_dir):
                    print(" ".join(pre), flush=True)
                    with open(pre_dir + ".log", "a") as log:
                        subprocess.run(pre, cwd=REPO, check=True, stdout=log, stderr=subprocess.STDOUT)
        workdir = os.path.join(root, row, f"seed{seed}")
        if _finished(workdir):
            print(f"{row} seed {seed}: done")
            continue
        cmd = command(row, seed, root)
        print(" ".join(cmd), flush=True)
        t0 = time.time()
        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, "stdout.log"), "a") as log:
            done = subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        with open(os.path.join(workdir, "command.json"), "w") as f:
            json.dump({"command": cmd[1:], "wall_s": round(time.time() - t0, 1), "returncode": done.returncode}, f)
        if done.returncode:  # the next rows still run; the report shows this seed as missing
            print(f"{row} seed {seed} FAILED (exit {done.returncode}): see {workdir}/stdout.log", flush=True)


# ----------------------------------------------------------------------------------- report
def _load(path: str):
    with open(path) as f:
        return json.load(f)


def _final_eval(workdir: str) -> dict | None:
    """(final eval of the last training stage, wall seconds) of a finished run."""
    if os.path.exists(os.path.join(workdir, "pipeline.json")):
        p = _load(os.path.join(workdir, "pipeline.json"))
        trained = [s for s in p["stages"].values() if s.get("eval")]
        if not trained or "wall_s" not in p:
            return None
        return {**trained[-1]["eval"], "wall_s": p["wall_s"], "rounds": [s["eval"] for s in trained],
                "start": trained[0].get("eval_start") or {}, "teacher": trained[0].get("eval_teacher") or {}}
    if os.path.exists(os.path.join(workdir, "summary.json")):
        s = _load(os.path.join(workdir, "summary.json"))
        if s.get("finished"):
            return {**s["eval"], "wall_s": s["wall_s"], "start": s.get("eval_start") or {},
                    "teacher": s.get("eval_teacher") or {}}
    return None


def _seed_dirs(root: str, row: str) -> list[str]:
    d = os.path.join(root, row)
    return sorted(os.path.join(d, x) for x in os.listdir(d) if x.startswith("seed")) if os.path.isdir(d) else []


def _stat(values: list[float]) -> str:
    v = np.asarray(values, float)
    return f"{v.mean():.3f} ± {v.std():.3f}" if v.size > 1 else (f"{v[0]:.3f}" if v.size else "–")


def table(root: str, name: str) -> str:
    """The rows of one table (mean ± sd over seeds, each seed's mIoU) and each row's command."""
    lines = ["| row | seeds | R@0.3 | R@0.5 | R@0.7 | mIoU | mIoU per seed | min / seed |",
             "|---|---|---|---|---|---|---|---|"]
    commands, start = [], None
    for row, (tab, label, _) in ROWS.items():
        if tab != name:
            continue
        evals = [e for e in (_final_eval(w) for w in _seed_dirs(root, row)) if e]
        start = start or next((e["start"] for e in evals if e.get("start")), None)
        cells = [_stat([e.get(f"eval/{m}", np.nan) for e in evals]) for m in ("R@0.3", "R@0.5", "R@0.7", "mIoU")]
        per_seed = " / ".join(f"{e.get('eval/mIoU', np.nan):.3f}" for e in evals)
        wall = _stat([e["wall_s"] / 60 for e in evals])
        lines.append(f"| {label} | {len(evals)} | " + " | ".join(cells) + f" | {per_seed} | {wall} |")
        main_cmd = " ".join(command(row, 0, "$ROOT")[3:]).replace("seed=0", "seed=$S").replace("seed0", "seed$S")
        commands.append(f"python bench/reproduce.py run {row} --root=$ROOT   # = for S in 0 1 2: python -m vtg_jax.main "
                        f"{main_cmd}")
    if start:
        lines.append(f"| the student before training | – | {start.get('eval/R@0.3', 0):.3f} | "
                     f"{start.get('eval/R@0.5', 0):.3f} | {start.get('eval/R@0.7', 0):.3f} | "
                     f"{start.get('eval/mIoU', 0):.3f} | | |")
    return "\n".join(lines + ["", "```bash", *commands, "```"])


def _curves(root: str, row: str) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, float]]:
    """Per seed: (steps, wall seconds, eval mIoU, seconds per update) of a recipe run. The cost of an
    update is the median wall-clock gap between consecutive logged steps without an evaluation (batch,
    rollouts, scoring and the step with its compute finished)."""
    out = []
    for w in _seed_dirs(root, row):
        path = os.path.join(w, "metrics.jsonl")
        if not _final_eval(w) or not os.path.exists(path):
            continue
        rows = [json.loads(x) for x in open(path) if x.strip()]
        ev = [(r["step"], r.get("wall_time", 0.0), r["eval/mIoU"]) for r in rows if "eval/mIoU" in r]
        timed = [(r["step"], r["wall_time"], "eval/mIoU" in r) for r in rows if "wall_time" in r and r["step"] > 0]
        gaps = [b[1] - a[1] for a, b in zip(timed, timed[1:]) if b[0] == a[0] + 1 and not b[2]]
        s, t, m = (np.asarray(x, float) for x in zip(*ev))
        out.append((s, t, m, float(np.median(gaps)) if gaps else float("nan")))
    return out


def _curve_figure(root: str, rows: tuple[tuple[str, str], ...], name: str,
                  clock: str = "one CPU core, evaluations included") -> dict[str, float]:
    """val mIoU against updates and wall-clock of (row, colour) pairs -> docs/figures/<name>; returns each
    drawn row's seconds per update."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    cost = {}
    for row, colour in rows:
        curves = _curves(root, row)
        if not curves:
            continue
        label = ROWS[row][1]
        for k, (s, t, m, _) in enumerate(curves):
            a.plot(s, m, color=colour, alpha=0.35, label=label if k == 0 else None)
            b.plot(t / 60, m, color=colour, alpha=0.35, label=label if k == 0 else None)
        n = min(len(c[0]) for c in curves)
        a.plot(curves[0][0][:n], np.mean([c[2][:n] for c in curves], 0), color=colour, lw=2)
        cost[row] = float(np.mean([c[3] for c in curves]))
    a.set(xlabel="update", ylabel="val mIoU (greedy)", title="mIoU against updates")
    b.set(xlabel=f"wall-clock minutes ({clock})", title="mIoU against time")
    a.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(FIGURES, exist_ok=True)
    fig.savefig(os.path.join(FIGURES, name), dpi=110)
    plt.close(fig)
    return cost


def _cost_sentence(cost: dict[str, float], opd: str, grpo: str, clock: str = "one core", ratio: bool = True) -> str:
    """The rows' seconds per update and (`ratio`: when each run had a core to itself) their ratio."""
    text = (f"Seconds per update (median wall-clock gap between steps without an evaluation, mean over seeds; "
            f"{clock}): OPD {cost[opd]:.2f} s, GRPO {cost[grpo]:.2f} s")
    return text + (f": an OPD update costs {cost[opd] / cost[grpo]:.0%} of a GRPO update." if ratio else ".")


def figure6(root: str) -> str:
    cost = _curve_figure(root, (("fig6_opd", "tab:blue"), ("fig6_opd_large", "tab:green"), ("fig6_grpo", "tab:red")),
                         "repro_fig6_opd_vs_grpo.png")
    if "fig6_opd" not in cost or "fig6_grpo" not in cost:
        return "(runs missing)"
    text = _cost_sentence(cost, "fig6_opd", "fig6_grpo")
    if "fig6_opd_large" in cost:
        text += (f" With the 3x larger teacher an OPD update takes {cost['fig6_opd_large']:.2f} s "
                 f"({cost['fig6_opd_large'] / cost['fig6_grpo']:.0%} of GRPO's).")
    return text


def figure6_demo(root: str) -> str:
    """Figure 6 from the README demo's student."""
    cost = _curve_figure(root, (("fig6_opd_demo", "tab:blue"), ("fig6_grpo_demo", "tab:red")), "repro_fig6_demo.png",
                         clock="evaluations included; how the cores were shared: see the text")
    if "fig6_opd_demo" not in cost or "fig6_grpo_demo" not in cost:
        return "(runs missing)"
    return _cost_sentence(cost, "fig6_opd_demo", "fig6_grpo_demo", clock="how the cores were shared: see the text",
                          ratio=False)


ROUND_ROWS = tuple(row for row, (tab, _, _) in ROWS.items() if tab == "table6")


def figure_rounds(root: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    drawn = False
    for row, colour in zip(ROUND_ROWS, ("tab:blue", "tab:green")):
        evals = [e for w in _seed_dirs(root, row) if (e := _final_eval(w))]
        for k, e in enumerate(evals):
            ys = [e["start"].get("eval/mIoU", np.nan)] + [r["eval/mIoU"] for r in e["rounds"]]
            ax.plot(range(len(ys)), ys, marker="o", color=colour, alpha=0.5, label=ROWS[row][1] if k == 0 else None)
            ax.set_xticks(range(len(ys)))
            drawn = True
        if evals and evals[0]["teacher"]:
            t = evals[0]["teacher"]["eval/mIoU"]
            ax.axhline(t, color=colour, ls="--", lw=1, label=f"its teacher ({t:.3f})")
    if not drawn:
        plt.close(fig)
        return
    ax.legend(fontsize=7)
    ax.set(xlabel="round (0 = the student before OPD)", ylabel="val mIoU (greedy)", title="multi-round Video-OPD")
    fig.tight_layout()
    fig.savefig(os.path.join(FIGURES, "repro_table6_rounds.png"), dpi=110)
    plt.close(fig)


def rounds_table(root: str) -> str:
    lines = ["| row | seed | before | round 1 | round 2 | round 3 | teacher |", "|---|---|---|---|---|---|---|"]
    for row in ROUND_ROWS:
        for w in _seed_dirs(root, row):
            e = _final_eval(w)
            if e:
                cells = [f"{r['eval/mIoU']:.3f}" for r in e["rounds"]]
                lines.append(f"| {ROWS[row][1]} | {os.path.basename(w)} | {e['start'].get('eval/mIoU', np.nan):.3f} | "
                             + " | ".join(cells) + f" | {e['teacher'].get('eval/mIoU', np.nan):.3f} |")
    return "\n".join(lines)


def report(root: str) -> None:
    text = open(DOC).read()
    blocks = {name: table(root, name) for name in dict.fromkeys(tab for tab, _, _ in ROWS.values())}
    blocks["fig6_cost"] = figure6(root)
    blocks["fig6_demo_cost"] = figure6_demo(root)
    blocks["table6_rounds"] = rounds_table(root)
    figure_rounds(root)
    for name, body in blocks.items():
        begin, end = f"<!-- rows:{name} -->", f"<!-- /rows:{name} -->"
        if begin in text:
            head, rest = text.split(begin, 1)
            text = head + begin + "\n" + body + "\n" + end + rest.split(end, 1)[1]
    with open(DOC, "w") as f:
        f.write(text)
    print(f"wrote {DOC} and {FIGURES}/repro_*.png")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=("list", "run", "report"))
    ap.add_argument("rows", nargs="*", help="row ids (run); default all")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--root", default="/tmp/vtg_repro")
    ap.add_argument("--shard", default="0/1", help="k/n: run every n-th (row, seed) pair from the k-th")
    a = ap.parse_args()
    rows = a.rows or list(ROWS)
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        raise SystemExit(f"unknown rows {unknown}; see `python bench/reproduce.py list`")
    if a.action == "list":
        for r in rows:
            print(f"{r:<22} {ROWS[r][0]:<9} {' '.join(command(r, 0, a.root)[1:])}")
    elif a.action == "run":
        run(rows, [int(s) for s in a.seeds.split(",")], a.root, a.shard)
    else:
        report(a.root)


if __name__ == "__main__":
    main()
