"""Ground queries in one video file with a checkpoint: what `python -m vtg_jax.predict` runs.

    predictor = load_predictor("runs/opd")                       # a run workdir, checkpoints/<step> or HF dir
    video, results = predict(predictor, "kitchen.mp4", [Query("the man opens the fridge")])
    results[0].span, results[0].answers[0]                       # (12.5, 17.8), "12.5 to 17.8"

The video is decoded here with the frame sampling the model is used with (no frame store), the prompt is
rendered with the recipe's template, and the sampler answers greedily or with several samples.

Where the frames and the prompt come from (`predictor_settings`), first match wins:
1. a run config given by the caller (`--config=configs/<recipe>.py[:arg]` on the command line);
2. the checkpoint's own run config: a run workdir or its `checkpoints/<step>` (run_config.json), so the
   model sees the frames and the prompt it was trained with;
3. an HF directory: with its own tokenizer (a released model) the paper recipes' setting (qwen-vl-utils'
   `fetch_video` at 2 fps, the default prompt), without one (our tiny synthetic checkpoints, which use the
   tiny tokenizer) the synthetic benchmark's setting (the embedded default of `run.config`).
A `template` given by the caller replaces the prompt template in every case; an HF directory's own
tokenizer is used unless the settings name one.

Every problem a user can cause (a missing or undecodable video, a prompt longer than `max_prompt_tokens`,
a queries file line that is not a query, a checkpoint that is none) raises `PredictError` with the
reason; an unparsable answer is reported as such (span None), never an error.
"""
from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from typing import Any, Optional, Sequence

import ml_collections
import numpy as np

from vtg_jax.data.decode import DecodedVideo, VideoError, decode_video
from vtg_jax.data.loader import collate, qwen_vl_buckets
from vtg_jax.data.prompts import get_template
from vtg_jax.eval.metrics import temporal_iou, temporal_iou_matrix
from vtg_jax.io.workdir import load_json
from vtg_jax.rewards.parse import parse_span
from vtg_jax.rollout.packing import sampler_inputs
from vtg_jax.run.config import CHECKPOINT_DIR, base_config, paper_scale, run_config
from vtg_jax.run.data_setup import load_tokenizer, make_processor, sampling_config
from vtg_jax.run.model_setup import build_model, is_hf_dir, is_run_dir, run_checkpoint_step
from vtg_jax.run.resume import upgrade_saved_config
from vtg_jax.sampling import generate

DEFAULT_MAX_PROMPT_TOKENS = 32768
_COMPUTE = ("dtype", "param_dtype", "attention_impl", "rope_index_rule")


class PredictError(Exception):
    """A problem with the user's input; its message is the whole story (printed without a traceback)."""


@dataclasses.dataclass(frozen=True)
class Query:
    text: str
    gt: Optional[tuple[float, float]] = None  # a ground-truth span, when the queries file has one
    qid: str = ""


@dataclasses.dataclass(frozen=True)
class QueryResult:
    """One query's answers: `answers[i]` the raw text of sample i, `spans[i]` its parsed span (None:
    unparsable); `span` the greedy answer's span or, with several samples, the median start and end of the
    parsed ones; `spread` what several samples agree on (`sample_spread`); `iou` with `query.gt`."""
    query: Query
    answers: list[str]
    spans: list[Optional[tuple[float, float]]]
    span: Optional[tuple[float, float]]
    spread: Optional[dict[str, float]]
    iou: Optional[float]

    def as_json(self, video: str) -> dict[str, Any]:
        q = self.query
        return {"video": video, "qid": q.qid or None, "query": q.text, "answer": self.answers[0],
                "pred": None if self.span is None else list(self.span),
                "gt": None if q.gt is None else list(q.gt), "iou": self.iou,
                "samples": [{"answer": a, "pred": None if s is None else list(s)}
                            for a, s in zip(self.answers, self.spans)] if len(self.answers) > 1 else None,
                "spread": self.spread}


@dataclasses.dataclass(frozen=True)
class Predictor:
    model: Any
    processor: Any
    tokenizer: Any
    data: Any  # the data section the frames and prompt follow
    source: str  # where `data` came from, for the user

    def text(self, ids: Sequence[int]) -> str:
        """The text of generated token ids (special tokens dropped)."""
        return self.tokenizer.decode([int(t) for t in ids], skip_special_tokens=True)


def _gt_of(line: dict, where: str) -> Optional[tuple[float, float]]:
    raw = line.get("gt", line.get("span", (line.get("spans") or [None])[0]))
    if raw is None:
        return None
    try:
        start, end = (float(x) for x in raw)
    except (TypeError, ValueError):
        raise PredictError(f"{where}: the ground truth must be a [start, end] pair of seconds, got {raw!r}") from None
    if not (np.isfinite(start) and np.isfinite(end) and 0 <= start <= end):
        raise PredictError(f"{where}: the ground truth [{start}, {end}] is not a span of seconds")
    return start, end


def read_queries(path: str) -> list[Query]:
    """Queries of a jsonl file: one object per line with "query" and optionally "qid" and the ground truth
    ("gt" or "span": [start, end], or "spans": its first). Blank lines are skipped; any other bad line is
    an error naming the file and line."""
    if not os.path.isfile(path):
        raise PredictError(f"queries file {path!r} does not exist")
    out = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            where = f"{path}:{n}"
            try:
                line = json.loads(raw)
            except json.JSONDecodeError as e:
                raise PredictError(f"{where}: not JSON ({e.msg})") from None
            if not isinstance(line, dict) or not isinstance(line.get("query"), str) or not line["query"].strip():
                raise PredictError(f"{where}: each line needs a non-empty \"query\" string")
            out.append(Query(line["query"].strip(), _gt_of(line, where), str(line.get("qid", ""))))
    if not out:
        raise PredictError(f"queries file {path!r} holds no query")
    return out


def _saved_run_config(checkpoint: str) -> Optional[dict]:
    """The run config a run workdir (or its checkpoints/<step>) was trained with, if it saved one."""
    step = run_checkpoint_step(checkpoint)
    run = step[0] if step else (checkpoint if is_run_dir(checkpoint) else None)
    saved = load_json(run, "run_config.json") if run else None
    if saved is not None and saved.get("algorithm") == "pipeline":
        return None  # a pipeline's stages keep their own configs in their workdirs
    return None if saved is None else upgrade_saved_config(saved)


def predictor_settings(checkpoint: str, config: Any = None, template: Optional[str] = None
                       ) -> tuple[ml_collections.ConfigDict, dict[str, Any], str]:
    """(data section, model section, where they come from) for `checkpoint`: see the module docstring."""
    if not os.path.isdir(checkpoint):
        raise PredictError(f"--checkpoint {checkpoint!r} is not a directory (an HF directory, a run workdir or "
                           f"its {CHECKPOINT_DIR}/<step>)")
    saved = None if config is not None else _saved_run_config(checkpoint)
    own_tokenizer = is_hf_dir(checkpoint) and os.path.isfile(os.path.join(checkpoint, "tokenizer.json"))
    if config is not None:
        data, model, source = config.data.to_dict(), config.model.to_dict(), "the given --config"
    elif saved is not None:
        data, model, source = saved["data"], saved["model"], "the checkpoint's run config"
    elif own_tokenizer:
        c = run_config("eval", paper_scale(""), {"data.tokenizer": checkpoint})
        data, model = c.data.to_dict(), c.model.to_dict()
        source = "the paper recipes' setting (qwen-vl-utils' sampling, the default prompt)"
    else:
        c = base_config("eval")
        data, model = c.data.to_dict(), c.model.to_dict()
        source = "the synthetic benchmark's setting (the embedded default)"
    if not data.get("tokenizer") and own_tokenizer:  # a released model's own tokenizer, unless one is named
        data = dict(data, tokenizer=checkpoint)
    if template:
        try:
            get_template(template)
        except ValueError as e:  # names the known templates
            raise PredictError(f"--template: {e}") from None
        data = dict(data, template=template)
    defaults = base_config("eval").model
    section = {"init_from": checkpoint, "preset": "", "random_init": False, "remat": "none",
               **{k: model.get(k, defaults[k]) for k in _COMPUTE}}
    return ml_collections.ConfigDict(data), section, source


def load_predictor(checkpoint: str, config: Any = None, template: Optional[str] = None, seed: int = 0) -> Predictor:
    """The model of `checkpoint` with the processor of its frames and prompt (`predictor_settings`)."""
    data, section, source = predictor_settings(checkpoint, config, template)
    try:
        model = build_model(section, seed=seed)
    except (FileNotFoundError, ValueError, KeyError) as e:
        raise PredictError(f"cannot load --checkpoint {checkpoint!r}: {e}") from None
    with tempfile.TemporaryDirectory() as tmp:  # the tiny tokenizer ("" in data.tokenizer) is built here
        try:
            tokenizer = load_tokenizer(data.tokenizer, model.cfg.family, tmp)
        except FileNotFoundError as e:
            raise PredictError(f"{e}; pass a run config whose data.tokenizer names it (--config)") from None
    try:
        processor = make_processor(model.cfg, tokenizer, data)
    except ValueError as e:
        raise PredictError(f"the tokenizer does not fit {checkpoint!r}: {e}") from None
    return Predictor(model, processor, tokenizer, data, source)


def read_video(predictor: Predictor, video: str) -> DecodedVideo:
    """The video's frames as the predictor's data section samples them; PredictError naming the file."""
    try:
        return decode_video(video, predictor.model.cfg.family, sampling_config(predictor.data))
    except VideoError as e:
        raise PredictError(f"{video}: {e}") from None
    except Exception as e:  # noqa: BLE001 - any decoder failure is a problem of this file
        raise PredictError(f"{video}: cannot decode it ({type(e).__name__}: {e})") from None


def sample_spread(spans: Sequence[Optional[tuple[float, float]]]) -> dict[str, float]:
    """What several sampled answers agree on: how many parsed, the median span, the spread (standard
    deviation, min, max) of starts and ends, the mean IoU between pairs of parsed samples, and how many
    parsed spans are reversed (end before start: IoU 0, as in evaluation)."""
    parsed = np.asarray([s for s in spans if s is not None], np.float64).reshape(-1, 2)
    out: dict[str, float] = {"samples": len(spans), "parsed": len(parsed),
                             "reversed": int((parsed[:, 1] < parsed[:, 0]).sum())}
    if len(parsed):
        for k, name in enumerate(("start", "end")):
            col = parsed[:, k]
            out.update({f"{name}_median": float(np.median(col)), f"{name}_std": float(col.std()),
                        f"{name}_min": float(col.min()), f"{name}_max": float(col.max())})
    if len(parsed) > 1:
        ious = temporal_iou_matrix(parsed, parsed)
        out["pairwise_iou"] = float(ious[~np.eye(len(parsed), dtype=bool)].mean())
    return out


def _result(query: Query, answers: list[str]) -> QueryResult:
    spans = [parse_span(a) for a in answers]
    spans = [None if s is None else (float(s[0]), float(s[1])) for s in spans]
    spread = sample_spread(spans) if len(answers) > 1 else None
    if spread is None:
        span = spans[0]
    else:
        span = (spread["start_median"], spread["end_median"]) if spread["parsed"] else None
    iou = None
    if query.gt is not None:
        iou = 0.0 if span is None else float(temporal_iou(np.asarray(span), np.asarray(query.gt)))
    return QueryResult(query, answers, spans, span, spread, iou)


def _examples(predictor: Predictor, decoded: DecodedVideo, video: str, queries: Sequence[Query],
              max_prompt_tokens: int) -> list[dict]:
    """The processor's inputs of `queries` about the decoded video; PredictError when a prompt is longer
    than `max_prompt_tokens` (checked before anything is sampled for them)."""
    try:
        examples = [predictor.processor(decoded.frames, decoded.timestamps, q.text, duration=decoded.duration,
                                        sample_fps=decoded.sample_fps) for q in queries]
    except ValueError as e:
        raise PredictError(f"{video}: {e}") from None
    longest = max(len(e["input_ids"]) for e in examples)
    if longest > max_prompt_tokens:
        raise PredictError(
            f"{video} is too long: its prompt is {longest} tokens ({len(decoded.frames)} frames of "
            f"{decoded.duration:.1f} s) > max_prompt_tokens {max_prompt_tokens}; sample fewer frames "
            "(--config.data.fps / max_frames / max_pixels) or raise --max_prompt_tokens")
    return examples


def predict(predictor: Predictor, video: str, queries: Sequence[Query], *, num_samples: int = 1,
            temperature: float = 0.0, top_p: float = 1.0, seed: int = 0, max_new_tokens: int = 64,
            batch_size: int = 8, max_prompt_tokens: int = DEFAULT_MAX_PROMPT_TOKENS
            ) -> tuple[DecodedVideo, list[QueryResult]]:
    """Decodes `video` once and answers every query about it (`batch_size` prompts per sampler call)."""
    if not queries:
        raise PredictError("no query given")
    if num_samples < 1 or (num_samples > 1 and temperature <= 0):
        raise PredictError("several samples need a temperature > 0 (greedy decoding gives one answer)")
    decoded = read_video(predictor, video)
    eos = int(predictor.processor.im_end_id)
    results = []
    for start in range(0, len(queries), batch_size):
        chunk = queries[start:start + batch_size]  # examples per chunk: each holds its own copy of the pixels
        examples = _examples(predictor, decoded, video, chunk, max_prompt_tokens)
        ex0, longest = examples[0], max(len(e["input_ids"]) for e in examples)
        buckets = qwen_vl_buckets(tokens=(-(-longest // 16) * 16,), patches=(len(ex0["pixel_values_videos"]),),
                                  groups=(max(len(ex0["video_grid_thw"]), len(ex0["video_timestamps"])),))
        out = generate(predictor.model, sampler_inputs(collate(examples, buckets)), num_samples=num_samples,
                       max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed,
                       eos_token_ids=[eos])
        for row, query in enumerate(chunk):
            answers = [predictor.text([t for t in out["tokens"][row, s, :out["lengths"][row, s]] if t != eos])
                       for s in range(num_samples)]
            results.append(_result(query, answers))
    return decoded, results
