"""Public sampler API: `generate` (G rollouts per prompt from one shared prefill) and `score`
(per-token log-probs of given completions under any model, e.g. a frozen reference or an OPD teacher).

See engine.py for the programs and processing.py for the log-prob conventions and the RNG rule.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Sequence

import flax.core.spmd as core_spmd
import jax
import numpy as np
from flax import nnx

from vtg_jax.models.qwen_vl.config import QwenVLConfig
from vtg_jax.models.qwen_vl.model import QwenVL
from vtg_jax.parallel.distributed import global_to_host, global_to_local, max_over_processes
from vtg_jax.parallel.rules import DEFAULT_RULES, Rules, sharded_call, vision_shards_for
from vtg_jax.sampling import engine
from vtg_jax.sampling.host import MIN_BUCKET, NEW_TOKEN_ROUND, Prompts, apply_stop_strings, prepare_prompts, round_up
from vtg_jax.sampling.process_local import agreed_prompts, global_prompt_arrays, global_rows


@contextlib.contextmanager
def _mesh_context(mesh: jax.sharding.Mesh | None, rules: Rules | None) -> Iterator[Any]:
    """Activates `mesh` + activation rules when a mesh is given; yields the static key of the active
    logical rules (so programs traced under different rules are cached separately)."""
    ctx = sharded_call(mesh, rules or DEFAULT_RULES) if mesh is not None else contextlib.nullcontext()
    with ctx:
        yield tuple(core_spmd.get_logical_axis_rules() or ())


def _prompt_arrays(p: Any) -> dict[str, Any]:
    return dict(input_ids=p.input_ids, attention_mask=p.attention_mask, position_ids=p.position_ids,
                pixel_values=p.pixel_values, pixel_values_videos=p.pixel_values_videos,
                vision_inputs=p.vision_inputs)


def _prompts(cfg: QwenVLConfig, inputs: dict[str, Any], mesh: Any, min_bucket: int,
             process_local: bool) -> tuple[Prompts, dict[str, Any], Any]:
    """(prepared prompts, the prefill's prompt arrays, how to hand row-major outputs back to the host)."""
    if not process_local:
        prompts = prepare_prompts(cfg, inputs, min_bucket, vision_shards_for(mesh, np.shape(inputs["input_ids"])[0]))
        return prompts, _prompt_arrays(prompts), lambda tree: jax.tree.map(np.array, global_to_host(tree))
    if mesh is None:
        raise ValueError("process_local sampling needs the mesh the global batch is sharded over")
    prompts = agreed_prompts(cfg, inputs, mesh, min_bucket)
    return prompts, global_prompt_arrays(prompts, mesh), lambda tree: global_to_local(tree, mesh)


def _rows(x: np.ndarray, mesh: Any, process_local: bool) -> Any:
    """A row-major host array the engine takes: this process's rows of a global one when process-local."""
    return global_rows(x, mesh) if process_local else x


def generate(
    model: QwenVL,
    inputs: dict[str, Any],
    *,
    num_samples: int = 1,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_p: float = 1.0,
    top_k: int | None = None,
    seed: int = 0,
    eos_token_ids: Sequence[int] | int | None = None,
    stop_strings: Sequence[str] = (),
    decode_fn: Callable[[list[int]], str] | None = None,
    prompt_ids: Sequence[int] | None = None,
    sample_offset: int = 0,
    pad_token_id: int = 0,
    mesh: jax.sharding.Mesh | None = None,
    rules: Rules | None = None,
    min_bucket: int = MIN_BUCKET,
    process_local: bool = False,
) -> dict[str, np.ndarray]:
    """Samples `num_samples` completions for each of the B (left-padded) prompts in `inputs`.

    inputs: HF-named arrays the model takes (input_ids, attention_mask, pixel_values, image_grid_thw,
        pixel_values_videos, video_grid_thw, second_per_grid_ts, mm_token_type_ids).
    temperature: 0 = greedy (top_k / top_p ignored); otherwise softmax(logits / T) truncated by top_k
        (None or 0 = off, as in transformers) and top_p (1 = off), in that order (HF's warper order).
    seed / prompt_ids / sample_offset: sample g of prompt b uses key
        fold_in(fold_in(key(seed), prompt_ids[b]), sample_offset + g), whatever the batching
        (prompt_ids default to arange(B); pass dataset ids so data-parallel shards draw different noise).
    eos_token_ids: finishing tokens (kept in the output, counted in `lengths`); None = none.
    stop_strings / decode_fn: host-side cut after the token completing a stop string (host.py).
    mesh / rules: run sharded with rows on the logical `batch` axis (default rules: data x fsdp); the
        model must already live on `mesh` (`from_pretrained(mesh=...)` or `parallel.rules.shard_model`).
        Without a mesh, whatever mesh/rules the caller has active are used. Results come back to
        every process whole (all-gathered).
    process_local: `inputs` are this process's prompts, its rows of a global batch every process
        samples together (per-host input: `sampling.process_local`); the results are its rows only.
        Every process must call with the same number of prompts; needs `mesh`.

    Returns numpy arrays:
        tokens [B, G, N] int32 (pad_token_id after the end), logprobs [B, G, N] = log softmax(logits/T)
        of the sampled token BEFORE top-k/top-p (what RL uses as old log-probs; temperature 1 when
        greedy), sampling_logprobs [B, G, N] under the truncated distribution actually sampled from,
        lengths [B, G] (EOS included), finish_reason [B, G] of "eos" / "length" / "stop".
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    top_k = 0 if top_k is None else int(top_k)  # the engine's static "off"
    if temperature < 0 or not 0 < top_p <= 1 or top_k < 0:
        raise ValueError(f"need temperature >= 0, 0 < top_p <= 1, top_k >= 0; got {temperature}, {top_p}, {top_k}")
    prompts, arrays, to_host = _prompts(model.cfg, inputs, mesh, min_bucket, process_local)
    b, g = prompts.batch, num_samples
    num_buf = round_up(max_new_tokens, NEW_TOKEN_ROUND)
    eos = [] if eos_token_ids is None else ([eos_token_ids] if isinstance(eos_token_ids, int) else list(eos_token_ids))
    eos_arr = np.asarray(eos or [-1], np.int32)
    pids = np.arange(b) if prompt_ids is None else np.asarray(prompt_ids)
    if pids.shape != (b,):
        raise ValueError(f"prompt_ids must have shape ({b},), got {pids.shape}")
    graphdef, state = nnx.split(model)
    with _mesh_context(mesh, rules) as rules_key:
        pre = engine.prefill(graphdef, state, arrays, num_samples=g,
                             cache_len=prompts.length + num_buf, rules_key=rules_key)
        out = engine.decode(
            graphdef, state, pre["cache"], pre["logits"], pre["mask"], pre["last_pos"],
            _rows(np.repeat(pids, g).astype(np.int32), mesh, process_local),
            _rows(np.tile(np.arange(g) + sample_offset, b).astype(np.int32), mesh, process_local),
            np.asarray(seed, np.uint32), np.asarray(max_new_tokens, np.int32), eos_arr,
            np.asarray(max(temperature, 1e-6), np.float32), np.asarray(top_p, np.float32),
            prompt_len=prompts.length, num_buf=num_buf, greedy=temperature == 0.0, top_k=int(top_k),
            use_top_p=top_p < 1.0, pad_id=int(pad_token_id), rules_key=rules_key)
    del out["cache"]
    res = to_host(out)  # the whole batch on every process, or (process-local) this process's rows
    n = max_new_tokens
    result = {
        "tokens": res["tokens"][:, :n].reshape(b, g, n),
        "logprobs": res["logprobs"][:, :n].reshape(b, g, n),
        "sampling_logprobs": res["sampling_logprobs"][:, :n].reshape(b, g, n),
        "lengths": res["lengths"].reshape(b, g),
        "finish_reason": np.where(res["hit_eos"], "eos", "length").astype(object).reshape(b, g),
    }
    apply_stop_strings(result, stop_strings, decode_fn, int(pad_token_id))
    return result


def score(
    model: QwenVL,
    inputs: dict[str, Any],
    completions: Any,
    completion_mask: Any,
    *,
    temperature: float = 1.0,
    chunk_size: int | None = None,
    source_vocab_size: int | None = None,
    mesh: jax.sharding.Mesh | None = None,
    rules: Rules | None = None,
    min_bucket: int = MIN_BUCKET,
    process_local: bool = False,
) -> np.ndarray:
    """log softmax(logits / T)[token] [B, S, N] of completions [B, S, N] under `model` (0 where
    completion_mask is 0), from ONE prefill per prompt shared by its S completions and one
    teacher-forced forward of the completions against that cache.

    The mask only zeroes outputs: completions are right-padded after their end, and causality keeps
    padding from touching earlier tokens. `source_vocab_size`: vocabulary size of the model that produced
    the completions; a different size raises (token ids would mean different things, e.g. an OPD teacher
    from another tokenizer). Token ids outside the scoring model's vocabulary always raise.
    process_local: as in `generate` (this process's prompts and completions in, its log-probs out).
    """
    comp = np.asarray(completions)
    cmask = np.asarray(completion_mask)
    if comp.ndim != 3 or cmask.shape != comp.shape:
        raise ValueError(f"completions and completion_mask must both be [B, S, N]; got {comp.shape}, {cmask.shape}")
    vocab = model.cfg.text.vocab_size
    if source_vocab_size is not None and source_vocab_size != vocab:
        raise ValueError(f"completions come from a vocabulary of {source_vocab_size} tokens but the scoring "
                         f"model has {vocab}: log-probs across different vocabularies are meaningless")
    valid = comp[cmask.astype(bool)]
    if valid.size and (valid.min() < 0 or valid.max() >= vocab):
        raise ValueError(f"completion token ids span [{valid.min()}, {valid.max()}], outside the scoring "
                         f"model's vocabulary [0, {vocab}); do the models share a tokenizer?")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    prompts, arrays, to_host = _prompts(model.cfg, inputs, mesh, min_bucket, process_local)
    b, s, n = comp.shape
    if b != prompts.batch:
        raise ValueError(f"completions are for {b} prompts, inputs hold {prompts.batch}")
    if process_local and int(max_over_processes([n])[0]) != n:
        raise ValueError(f"process-local scoring needs completions of one length on every process; this one "
                         f"has {n} tokens, another more: pad them to the longest first")
    nb = round_up(n, NEW_TOKEN_ROUND)
    toks = np.zeros((b * s, nb), np.int32)
    toks[:, :n] = np.where(cmask.astype(bool), comp, np.clip(comp, 0, vocab - 1)).reshape(b * s, n)
    graphdef, state = nnx.split(model)
    with _mesh_context(mesh, rules) as rules_key:
        pre = engine.prefill(graphdef, state, arrays, num_samples=s,
                             cache_len=prompts.length + nb, rules_key=rules_key)
        lp = engine.completion_logprobs(graphdef, state, pre["cache"], pre["logits"], pre["mask"], pre["last_pos"],
                                        _rows(toks, mesh, process_local), np.asarray(temperature, np.float32),
                                        prompt_len=prompts.length, chunk_size=chunk_size, rules_key=rules_key)
    lp = np.asarray(to_host(lp))[:, :n].reshape(b, s, n)
    return np.where(cmask.astype(bool), lp, 0.0).astype(np.float32)
