"""Ground your own video: `python -m vtg_jax.predict --checkpoint=C --video=V --query="..." [--query=...]`.

    python -m vtg_jax.predict --checkpoint=vtg_jax/assets/synthetic_teacher --video=clip.mp4 \\
        --query="the red circle appears" --plot=clip.png
    python -m vtg_jax.predict --checkpoint=runs/opd --video=kitchen.mp4 --queries=queries.jsonl \\
        --num_samples=8 --temperature=1.0 --out=answers.jsonl
    python -m vtg_jax.predict --checkpoint=/models/Qwen2.5-VL-7B-Instruct --video=v.mp4 --query="..." \\
        --config=configs/grpo.py:tvg_r1          # TVG-R1's 64 frames and prompt

--checkpoint: an HF directory, one of our run workdirs (its latest checkpoint) or <workdir>/checkpoints/<step>.
The frames and the prompt follow the checkpoint's run config when it has one, else `--config` / `--template`
(see vtg_jax/run/predict.py). Prints, per query, the predicted span and the raw answer (with several
samples: each one and their spread); --queries is a jsonl of {"query": ..., optional "gt": [start, end]};
--out writes one jsonl line per query; --plot a PNG of the frames with the spans on the time axis.
"""
import json
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "HF directory, run workdir or <workdir>/checkpoints/<step>")
_VIDEO = flags.DEFINE_string("video", None, "the video file")
_QUERY = flags.DEFINE_multi_string("query", [], "a sentence to ground (repeat for several)")
_QUERIES = flags.DEFINE_string("queries", None, 'jsonl: {"query": ..., optional "qid", "gt": [start, end]} per line')
_OUT = flags.DEFINE_string("out", None, "write one jsonl line per query here")
_PLOT = flags.DEFINE_string("plot", None, "write a PNG of the frames and the spans here")
_TEMPLATE = flags.DEFINE_string("template", None, "prompt template (vtg_jax.data.prompts), replacing the config's")
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", 1, "answers per query (several need --temperature > 0)")
_TEMPERATURE = flags.DEFINE_float("temperature", 0.0, "0: greedy")
_TOP_P = flags.DEFINE_float("top_p", 1.0, "nucleus sampling")
_SEED = flags.DEFINE_integer("seed", 0, "sampling seed")
_MAX_NEW_TOKENS = flags.DEFINE_integer("max_new_tokens", 64, "answer length limit in tokens")
_MAX_PROMPT_TOKENS = flags.DEFINE_integer("max_prompt_tokens", 32768, "refuse videos whose prompt is longer")
_BATCH = flags.DEFINE_integer("batch_size", 8, "queries per sampler call")
_CONFIG = config_flags.DEFINE_config_file("config", None, "a recipe in configs/ whose data section (frames, "
                                          "prompt, tokenizer) the checkpoint is used with", lock_config=True)


def _print(results, temperature: float, out=sys.stdout) -> None:
    for k, r in enumerate(results, 1):
        span = "no span (unparsable answer)" if r.span is None else f"{r.span[0]:.2f} to {r.span[1]:.2f} s"
        print(f"[{k}] {r.query.text}", file=out)
        if r.spread is None:
            print(f"    span: {span}    answer: {json.dumps(r.answers[0])}", file=out)
        else:
            s = r.spread
            reversed_ = f", {s['reversed']} reversed" if s.get("reversed") else ""
            print(f"    span: {span} (median of {s['parsed']} parsed of {s['samples']} samples{reversed_}, "
                  f"temperature {temperature:g})", file=out)
            if s["parsed"]:
                print(f"    spread: start {s['start_median']:.2f} ± {s['start_std']:.2f} s "
                      f"({s['start_min']:.2f}..{s['start_max']:.2f}), end {s['end_median']:.2f} ± {s['end_std']:.2f} s "
                      f"({s['end_min']:.2f}..{s['end_max']:.2f})"
                      + (f", mean pairwise IoU {s['pairwise_iou']:.2f}" if "pairwise_iou" in s else ""), file=out)
            for i, (a, p) in enumerate(zip(r.answers, r.spans), 1):
                shown = "unparsable" if p is None else f"{p[0]:.2f} to {p[1]:.2f}" + (" (reversed)" if p[1] < p[0] else "")
                print(f"      sample {i}: {shown:>16}    answer: {json.dumps(a)}", file=out)
        if r.query.gt is not None:
            print(f"    ground truth: {r.query.gt[0]:.2f} to {r.query.gt[1]:.2f} s    IoU {r.iou:.2f}", file=out)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    if not _CHECKPOINT.value or not _VIDEO.value:
        raise app.UsageError("--checkpoint and --video are required")
    if not _QUERY.value and not _QUERIES.value:
        raise app.UsageError('give --query="..." (one or more) or --queries=<jsonl>')
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # Orbax logs every restore at INFO
    from vtg_jax.run.predict import PredictError, Query, load_predictor, predict, read_queries

    try:
        queries = [Query(q) for q in _QUERY.value] + (read_queries(_QUERIES.value) if _QUERIES.value else [])
        predictor = load_predictor(_CHECKPOINT.value, _CONFIG.value, _TEMPLATE.value, seed=_SEED.value)
        print(f"frames and prompt: {predictor.source} (sampling {predictor.data.sampling}, "
              f"template {predictor.data.template})")
        video, results = predict(predictor, _VIDEO.value, queries, num_samples=_NUM_SAMPLES.value,
                                 temperature=_TEMPERATURE.value, top_p=_TOP_P.value, seed=_SEED.value,
                                 max_new_tokens=_MAX_NEW_TOKENS.value, batch_size=_BATCH.value,
                                 max_prompt_tokens=_MAX_PROMPT_TOKENS.value)
    except PredictError as e:
        sys.exit(f"error: {e}")
    print(f"{_VIDEO.value}: {video.duration:.2f} s, {len(video.frames)} frames of "
          f"{video.frames.shape[2]}x{video.frames.shape[1]}")
    _print(results, _TEMPERATURE.value)
    if _OUT.value:
        with open(_OUT.value, "w") as f:
            for r in results:
                f.write(json.dumps(r.as_json(_VIDEO.value)) + "\n")
        print(f"answers: {_OUT.value}")
    if _PLOT.value:
        from vtg_jax.io.span_plot import Lane, plot_predictions

        lanes = [Lane(r.query.text, r.span, r.spans, r.query.gt, r.iou) for r in results]
        title = f"{os.path.basename(_VIDEO.value)}: {video.duration:.1f} s, {len(video.frames)} frames sampled"
        plot_predictions(_PLOT.value, video.frames, video.timestamps, video.duration, lanes, title=title)
        print(f"plot: {_PLOT.value}")


if __name__ == "__main__":
    app.run(main)
