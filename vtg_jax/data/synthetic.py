"""Synthetic temporal-grounding benchmark: the project's embedded default dataset.

  python -m vtg_jax.data.synthetic --out_dir /tmp/syn --num_train 1000 --num_val 500 --num_test 500 --level 1
  python -m vtg_jax.data.extract --videos /tmp/syn/videos --out /tmp/syn/frames_q3 --family qwen3_vl \
      --min_pixels 4096   # keeps 64x64 (Qwen2.5: --family qwen2_5_vl --min_pixels 3136 gives 56x56)

No videos can be downloaded here, so the default pipeline runs on real mp4 files that we render:
coloured shapes on dull backgrounds (solid, gradient or mildly noisy) that appear, move or change
colour during known intervals, with a query that names the event and its exact span in seconds.

Why the numbers are what they are:

* Event boundaries lie on the 0.5 s grid of 2 fps sampling, so every sampled frame is either fully
  inside or fully outside the event and the answer is recoverable from the frames (both families'
  samplers pick one frame per 0.5 s cell at the default 4 fps source).
* Spans are short relative to the duration so that video-blind baselines are weak. A constant
  prediction that contains a span of length L hits IoU >= 0.5 for about L / (D - L - 2·margin) of
  the starts, so with L >= 1.5 s the duration must be ~16 s or more for R@0.5 < 0.15. The default
  therefore uses 16-24 s videos (32-48 frames at 2 fps) and 1.5-2.5 s events; the `short` preset
  keeps <= 32 frames (12-16 s) at the price of 1.0-1.5 s events. `vtg_jax.eval.baselines` measures it.
* Spans are half-open in frames: an object appears / is recoloured for t in [start, end); a move
  runs from its position at `start` to its final position at `end` (linear in between).
* Level 1: one object appears. Level 2: the target appears among 1-2 distractors (static or
  appearing at their own random times, often sharing its colour or shape). Level 3: the target
  appears, moves or changes colour among 2-3 distractors that have events of their own. A
  (colour, shape) pair is shown by one object only, at all times, so the query is unambiguous.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any, Sequence

import numpy as np

from vtg_jax.data.records import GroundingRecord, write_jsonl

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (225, 30, 30), "green": (30, 190, 50), "blue": (40, 90, 245), "yellow": (245, 225, 30),
    "purple": (165, 40, 215), "orange": (255, 140, 0), "cyan": (0, 215, 225), "white": (245, 245, 245),
}
SHAPES = ("circle", "square", "triangle", "diamond")
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
SPLITS = ("train", "val", "test")
_QUERIES = {
    "appear": ("a {c} {s} appears", "the {c} {s} shows up", "a {c} {s} becomes visible",
               "a {c} {s} is shown briefly"),
    "move": ("the {c} {s} moves {d}", "the {c} {s} slides {d}", "the {c} {s} travels {d}"),
    "recolour": ("the {c} {s} turns {c2}", "the {c} {s} changes colour to {c2}",
                 "the {c} {s} becomes {c2} for a moment"),
}
_DIR_WORDS = {"left": ("to the left", "left"), "right": ("to the right", "right"),
              "up": ("up", "upward"), "down": ("down", "downward")}


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """Rendering and timing parameters. Durations are whole seconds; spans lie on `grid`."""

    size: int = 64
    fps: float = 4.0
    min_duration: int = 16
    max_duration: int = 24
    min_span: float = 1.5
    max_span: float = 2.5
    grid: float = 0.5
    margin: float = 0.5
    plain_background: bool = False  # one mid-grey background for every video (nothing but the objects varies)
    object_scale: float = 1.0  # object side = (0.18-0.26) * size * object_scale

    def __post_init__(self):
        if abs(self.grid * self.fps - round(self.grid * self.fps)) > 1e-9 or self.grid * self.fps < 1:
            raise ValueError(f"grid {self.grid} s must be a whole number of frames at fps {self.fps}")
        if not (self.min_span <= self.max_span and self.min_duration <= self.max_duration):
            raise ValueError("min_span/min_duration must not exceed max_span/max_duration")
        if self.min_duration - 2 * self.margin < self.max_span:
            raise ValueError("the shortest video cannot hold the longest span inside its margins")
        if self.size < 32:
            raise ValueError("size must be >= 32 pixels")
        if not 0 < self.object_scale * 0.26 < 0.9:
            raise ValueError(f"object_scale {self.object_scale} leaves no room to place objects (max ~3.4)")


PRESETS = {
    "default": SyntheticConfig(),
    "short": SyntheticConfig(min_duration=12, max_duration=16, min_span=1.0, max_span=1.5),
    # CPU experiments (bench/learnability.py): <= 14 frame groups at 2 fps keep tiny models fast.
    # Best video-blind R@0.5 / mIoU on 500 val videos: demo ~0.11 / 0.15, easy ~0.24 / 0.27.
    "demo": SyntheticConfig(min_duration=10, max_duration=14, min_span=1.0, max_span=2.0),
    "easy": SyntheticConfig(min_duration=10, max_duration=14, min_span=2.0, max_span=3.0),
}


# ----------------------------------------------------------------------------------- scenes
def _sample_span(rng: np.random.Generator, duration: float, cfg: SyntheticConfig) -> tuple[float, float]:
    g = cfg.grid
    n = int(rng.integers(round(cfg.min_span / g), round(cfg.max_span / g) + 1))
    lo, hi = round(cfg.margin / g), round((duration - cfg.margin) / g) - n
    s = int(rng.integers(lo, hi + 1))
    return (s * g, (s + n) * g)


def _pick_identity(rng, used: set, target: dict | None, share_p: float = 0.6) -> tuple[str, str] | None:
    """A (colour, shape) pair nobody shows yet; distractors often share one attribute with the target."""
    free = [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in used]
    if target is not None and rng.random() < share_p:
        near = [(c, s) for c, s in free if (c == target["colour"]) != (s == target["shape"])]
        free = near or free
    return free[int(rng.integers(len(free)))] if free else None


def _place(rng, obj: dict, occupied: list, size: int, tries: int = 60) -> bool:
    """Chooses a top-left position whose whole trajectory stays in frame and off other objects."""
    sz, (dx, dy) = obj["px"], obj.get("shift", (0, 0))
    for _ in range(tries):
        x0 = int(rng.integers(max(0, -dx) + 1, size - sz - max(0, dx)))
        y0 = int(rng.integers(max(0, -dy) + 1, size - sz - max(0, dy)))
        box = (min(x0, x0 + dx) - 2, min(y0, y0 + dy) - 2, max(x0, x0 + dx) + sz + 2, max(y0, y0 + dy) + sz + 2)
        if all(box[2] <= b[0] or b[2] <= box[0] or box[3] <= b[1] or b[3] <= box[1] for b in occupied):
            occupied.append(box)
            obj["xy"] = (x0, y0)
            return True
    return False


def _make_object(rng, event: str, used: set, target: dict | None, duration: float, cfg, occupied) -> dict | None:
    ident = _pick_identity(rng, used, target)
    if ident is None:
        return None
    obj: dict[str, Any] = {"colour": ident[0], "shape": ident[1], "event": event,
                           "px": int(rng.integers(round(cfg.size * 0.18 * cfg.object_scale),
                                                  round(cfg.size * 0.26 * cfg.object_scale) + 1))}
    shown = {ident}
    if event != "none":
        obj["span"] = _sample_span(rng, duration, cfg)
    if event == "move":
        d = list(DIRECTIONS)[int(rng.integers(4))]
        dist = int(rng.integers(round(cfg.size * 0.25), round(cfg.size * 0.4) + 1))
        obj["direction"], obj["shift"] = d, (DIRECTIONS[d][0] * dist, DIRECTIONS[d][1] * dist)
    if event == "recolour":
        c2 = [c for c in COLOURS if c != ident[0] and (c, ident[1]) not in used]
        if not c2:
            return None
        obj["colour2"] = c2[int(rng.integers(len(c2)))]
        shown.add((obj["colour2"], ident[1]))
    if not _place(rng, obj, occupied, cfg.size):
        return None
    used.update(shown)
    return obj


def _query(rng, obj: dict) -> str:
    templates = _QUERIES[obj["event"]]
    t = templates[int(rng.integers(len(templates)))]
    d = _DIR_WORDS.get(obj.get("direction", ""), ("",))
    q = t.format(c=obj["colour"], s=obj["shape"], c2=obj.get("colour2", ""), d=d[int(rng.integers(len(d)))])
    return "an " + q[2:] if q.startswith("a ") and q[2] in "aeiou" else q


def _background(rng, size: int) -> dict:
    def dull():
        return [int(v) for v in np.clip(rng.integers(25, 111) + rng.integers(-15, 16, 3), 0, 130)]
    kind = ("solid", "gradient", "noise")[int(rng.integers(3))]
    bg = {"kind": kind, "c0": dull(), "c1": dull(), "angle": float(rng.uniform(0, 2 * np.pi))}
    if kind == "noise":
        bg["sigma"], bg["noise_seed"] = float(rng.uniform(3, 8)), int(rng.integers(2**31))
    return bg


def sample_scene(rng: np.random.Generator, level: int, cfg: SyntheticConfig) -> dict:
    """One video's content: duration, background and objects; objects[0] is the query's target."""
    duration = int(rng.integers(cfg.min_duration, cfg.max_duration + 1))
    if level == 1:
        target_event, n_dis, dis_events = "appear", 0, ()
    elif level == 2:
        target_event, n_dis, dis_events = "appear", int(rng.integers(1, 3)), ("none", "appear")
    elif level == 3:
        target_event = ("move", "recolour", "appear")[int(rng.choice(3, p=[0.4, 0.4, 0.2]))]
        n_dis, dis_events = int(rng.integers(2, 4)), ("none", "appear", "move", "recolour")
    else:
        raise ValueError(f"level must be 1, 2 or 3, got {level!r}")
    for _scene_try in range(100):  # rare dead ends (no free spot or identity) restart the scene
        used: set = set()
        occupied: list = []
        target = _make_object(rng, target_event, used, None, duration, cfg, occupied)
        objects = [target] if target is not None else []
        for _ in range(n_dis if objects else 0):
            for _attempt in range(10):
                ev = dis_events[int(rng.integers(len(dis_events)))]
                obj = _make_object(rng, ev, used, target, duration, cfg, occupied)
                if obj is not None:
                    objects.append(obj)
                    break
        if len(objects) == n_dis + 1:
            break
    else:
        raise RuntimeError(f"cannot place {n_dis + 1} objects in a {cfg.size}px frame; use a larger size")
    background = _background(rng, cfg.size)  # drawn in any case, so the rest of the scene keeps its draws
    if cfg.plain_background:
        background = {"kind": "solid", "c0": [70, 70, 70], "c1": [70, 70, 70], "angle": 0.0}
    return {"duration": duration, "level": level, "background": background,
            "objects": objects, "query": _query(rng, target), "span": target["span"]}


# --------------------------------------------------------------------------------- rendering
@functools.lru_cache(maxsize=None)
def _mask(shape: str, px: int) -> np.ndarray:
    yy, xx = np.mgrid[0:px, 0:px] + 0.5
    c = px / 2
    if shape == "circle":
        return (xx - c) ** 2 + (yy - c) ** 2 <= c * c
    if shape == "square":
        return np.ones((px, px), bool)
    if shape == "triangle":
        return np.abs(xx - c) <= yy / 2
    if shape == "diamond":
        return np.abs(xx - c) + np.abs(yy - c) <= c
    raise ValueError(f"unknown shape {shape!r}")


def _render_background(bg: dict, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    c0, c1 = np.asarray(bg["c0"], np.float32), np.asarray(bg["c1"], np.float32)
    if bg["kind"] == "solid":
        img = np.broadcast_to(c0, (size, size, 3)).astype(np.float32)
    else:
        t = (xx - 0.5) * np.cos(bg["angle"]) + (yy - 0.5) * np.sin(bg["angle"]) + 0.5
        img = c0 + np.clip(t, 0, 1)[..., None] * (c1 - c0)
    if bg["kind"] == "noise":
        img = img + np.random.default_rng(bg["noise_seed"]).normal(0, bg["sigma"], img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def object_state(obj: dict, frame: int, fps: float) -> tuple[bool, str, tuple[int, int]]:
    """(visible, colour name, top-left xy) of an object in a frame; spans are half-open in frames."""
    x0, y0 = obj["xy"]
    if obj["event"] == "none":
        return True, obj["colour"], (x0, y0)
    sf, ef = (int(round(t * fps)) for t in obj["span"])
    inside = sf <= frame < ef
    if obj["event"] == "appear":
        return inside, obj["colour"], (x0, y0)
    if obj["event"] == "recolour":
        return True, obj["colour2"] if inside else obj["colour"], (x0, y0)
    frac = min(max((frame - sf) / (ef - sf), 0.0), 1.0)
    dx, dy = obj["shift"]
    return True, obj["colour"], (int(round(x0 + dx * frac)), int(round(y0 + dy * frac)))


def render(scene: dict, cfg: SyntheticConfig) -> np.ndarray:
    """RGB uint8 frames [T, size, size, 3] with T = duration · fps."""
    bg = _render_background(scene["background"], cfg.size)
    n = int(round(scene["duration"] * cfg.fps))
    frames = np.repeat(bg[None], n, axis=0)
    for obj in scene["objects"]:
        m = _mask(obj["shape"], obj["px"])
        for i in range(n):
            vis, colour, (x, y) = object_state(obj, i, cfg.fps)
            if vis:
                frames[i, y:y + obj["px"], x:x + obj["px"]][m] = COLOURS[colour]
    return frames


def write_mp4(frames: np.ndarray, path: str, fps: float) -> None:
    """Writes RGB frames with opencv's MPEG-4 Part 2 ('mp4v') encoder, atomically (tmp + rename)."""
    import cv2

    tmp = path[:-4] + ".tmp.mp4"
    writer = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (frames.shape[2], frames.shape[1]))
    if not writer.isOpened():
        raise RuntimeError(f"opencv could not open an mp4v writer for {tmp}")
    for f in frames:
        writer.write(np.ascontiguousarray(f[..., ::-1]))
    writer.release()
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------- datasets
def _levels(level: int | Sequence[int]) -> tuple[int, ...]:
    levels = (level,) if isinstance(level, int) else tuple(int(v) for v in level)
    if not levels or any(v not in (1, 2, 3) for v in levels):
        raise ValueError(f"levels must be in (1, 2, 3), got {level!r}")
    return levels


def make_split(split: str, n: int, *, level: int | Sequence[int] = 1, seed: int = 0,
               cfg: SyntheticConfig = PRESETS["default"]) -> list[tuple[GroundingRecord, dict]]:
    """(record, scene) pairs for one split without rendering; video i depends only on (seed, split, level, i)."""
    levels = _levels(level)
    tag = "".join(map(str, levels))
    out = []
    for i in range(n):
        rng = np.random.default_rng([seed, SPLITS.index(split), int(tag), i])
        lv = levels[int(rng.integers(len(levels)))] if len(levels) > 1 else levels[0]
        scene = sample_scene(rng, lv, cfg)
        vid = f"syn{seed}_l{tag}_{split}_{i:05d}"
        rec = GroundingRecord(
            video_id=vid, duration=float(scene["duration"]), query=scene["query"], spans=(scene["span"],),
            qid=f"{vid}_q0", source="synthetic",
            extra={"level": lv, "split": split, "event": scene["objects"][0]["event"], "fps": cfg.fps,
                   "size": cfg.size, "num_frames": int(round(scene["duration"] * cfg.fps)),
                   "background": scene["background"], "objects": scene["objects"], "target": 0},
        )
        rec.validate()
        out.append((rec, scene))
    return out


def generate(out_dir: str, *, num_train: int = 1000, num_val: int = 500, num_test: int = 500,
             level: int | Sequence[int] = 1, seed: int = 0, size: int | None = None, fps: float | None = None,
             preset: str = "default", progress: bool = False, **overrides: Any) -> dict[str, str]:
    """Renders videos to out_dir/videos/*.mp4 and writes out_dir/{train,val,test}.jsonl.

    `size`, `fps` and any SyntheticConfig field in `overrides` replace the preset's values.
    Returns {"videos": dir, "train": path, "val": path, "test": path, "config": path}.
    """
    fields = {k: v for k, v in dict(overrides, size=size, fps=fps).items() if v is not None}
    cfg = dataclasses.replace(PRESETS[preset], **fields)
    vdir = os.path.join(out_dir, "videos")
    os.makedirs(vdir, exist_ok=True)
    paths = {"videos": vdir}
    counts = {"train": num_train, "val": num_val, "test": num_test}
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=sum(counts.values()), desc="synthetic", unit="video")
    for split, n in counts.items():
        pairs = make_split(split, n, level=level, seed=seed, cfg=cfg)
        for rec, scene in pairs:
            write_mp4(render(scene, cfg), os.path.join(vdir, rec.video_id + ".mp4"), cfg.fps)
            if bar is not None:
                bar.update(1)
        paths[split] = os.path.join(out_dir, f"{split}.jsonl")
        write_jsonl([r for r, _ in pairs], paths[split])
    if bar is not None:
        bar.close()
    paths["config"] = os.path.join(out_dir, "synthetic_config.json")
    with open(paths["config"], "w") as f:
        json.dump({"config": dataclasses.asdict(cfg), "seed": seed, "level": _levels(level), "counts": counts}, f)
    return paths


def main(argv: Sequence[str]) -> None:
    from absl import flags

    f = flags.FLAGS
    paths = generate(f.out_dir, num_train=f.num_train, num_val=f.num_val, num_test=f.num_test,
                     level=[int(v) for v in f.level.split(",")], seed=f.seed, size=f.size, fps=f.fps,
                     preset=f.preset, progress=True)
    print(json.dumps(paths, indent=1))
    print(f"video-blind baselines: python -m vtg_jax.eval.baselines --train={paths['train']} "
          f"--eval={paths['val']},{paths['test']}")


def _define_flags() -> None:
    """Flags are defined only when run as a command, so importing this module never registers them."""
    from absl import flags

    flags.DEFINE_string("out_dir", None, "output directory", required=True)
    flags.DEFINE_integer("num_train", 1000, "train videos")
    flags.DEFINE_integer("num_val", 500, "val videos")
    flags.DEFINE_integer("num_test", 500, "test videos")
    flags.DEFINE_string("level", "1", "difficulty level 1, 2 or 3, or a comma list to mix (e.g. 1,2,3)")
    flags.DEFINE_integer("seed", 0, "generation seed")
    flags.DEFINE_integer("size", None, "frame side in pixels (preset default 64)")
    flags.DEFINE_float("fps", None, "source video fps (preset default 4)")
    flags.DEFINE_enum("preset", "default", list(PRESETS), "timing preset")


if __name__ == "__main__":
    from absl import app

    _define_flags()
    app.run(main)
