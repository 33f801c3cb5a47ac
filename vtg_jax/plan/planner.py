"""Compile every program of a recipe's iteration for a slice and measure it (see `vtg_jax.plan`).

    report = plan(config, parse_target("v5p-16"))
    print(format_table(report)); json.dump(report.to_json(), f)

Per program, per chip: argument / output / temp bytes from the compiled executable's
`memory_analysis()`, plus the run's other resident arrays (optimizer state while the sampler runs, the
teacher while the policy updates, ...), giving the peak against the chip's HBM; FLOPs and bytes
accessed from `cost_analysis()` (XLA counts a loop body once, so a program's figures are multiplied
by its `calls`: decode steps, micro-batches; for the update this counts the optimizer's own small cost
once per micro-batch, and the attention FLOPs of Pallas kernels, which XLA does not see, are added from
the architecture); roofline time = max(FLOPs / peak FLOP/s, bytes / HBM bandwidth), FLOPs at least the
model FLOPs per chip. Per
iteration: the sum over its programs, the model FLOPs (`plan.flops`) and the roofline MFU = model
FLOPs / (chips x peak x roofline time). A program the compiler refuses for lack of HBM is reported
with what it asked for and the shortfall.
"""
from __future__ import annotations

import dataclasses
import math
import re
import time
from typing import Any, Optional

import jax
import numpy as np

from vtg_jax.parallel.mesh import mesh_from_config
from vtg_jax.plan.hardware import GIB, Target, target_devices
from vtg_jax.plan.programs import Program, abstract_run, iteration_programs

UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


@dataclasses.dataclass
class ProgramReport:
    name: str
    in_iteration: bool
    calls: int
    compile_s: float = 0.0
    argument_bytes: int = 0
    output_bytes: int = 0
    alias_bytes: int = 0
    temp_bytes: int = 0
    code_bytes: int = 0
    resident_bytes: int = 0  # the run's other arrays on the chip meanwhile
    peak_bytes: int = 0
    flops: float = 0.0  # per chip, x calls
    bytes_accessed: float = 0.0  # per chip, x calls
    roofline_s: Optional[float] = None
    model_flops: float = 0.0  # all chips
    kernel_flops: float = 0.0  # all chips: counted from the architecture, inside Pallas kernels (in `flops`)
    fits: Optional[bool] = None
    shortfall_bytes: int = 0
    error: str = ""


@dataclasses.dataclass
class PlanReport:
    recipe: str
    target: Target
    mesh: dict[str, int]
    geometry: dict[str, Any]
    programs: list[ProgramReport]
    resident: dict[str, int]  # per-chip bytes of each long-lived array set

    def iteration(self) -> list[ProgramReport]:
        return [p for p in self.programs if p.in_iteration]

    def not_fitting(self) -> list[ProgramReport]:
        return [p for p in self.programs if p.fits is False or p.error]

    def totals(self) -> dict[str, Any]:
        it = self.iteration()
        chip = self.target.chip
        roof = [p.roofline_s for p in it]
        roofline = None if any(r is None for r in roof) else float(sum(roof))
        model = float(sum(p.model_flops for p in it))
        mfu = None
        if roofline and chip.peak_flops:
            mfu = model / (self.target.num_chips * chip.peak_flops * roofline)
        peaks = [p.peak_bytes for p in self.programs if p.peak_bytes]
        return {"roofline_s": roofline, "model_flops": model, "hardware_flops": float(sum(p.flops for p in it)) *
                self.target.num_chips, "roofline_mfu": mfu, "peak_bytes": max(peaks) if peaks else 0,
                "fits": not self.not_fitting()}

    def to_json(self) -> dict[str, Any]:
        t = self.target
        return {"recipe": self.recipe, "topology": t.name, "tpu_topology": t.topology, "chips": t.num_chips,
                "chip": dataclasses.asdict(t.chip), "mesh": self.mesh, "geometry": self.geometry,
                "resident_bytes_per_chip": self.resident, "programs": [dataclasses.asdict(p) for p in self.programs],
                "iteration": self.totals()}


def shard_bytes(tree: Any) -> int:
    """Bytes one device holds of a tree of ShapeDtypeStructs with shardings."""
    total = 0
    for s in jax.tree.leaves(tree):
        shape = s.sharding.shard_shape(s.shape) if s.sharding is not None else s.shape
        total += math.prod(shape) * np.dtype(s.dtype).itemsize
    return int(total)


def _cost(compiled: Any) -> tuple[float, float]:
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):  # older jax: one dict per partition
        cost = cost[0] if cost else {}
    cost = cost or {}
    return float(cost.get("flops", 0.0)), float(cost.get("bytes accessed", 0.0))


def parse_oom(message: str) -> Optional[tuple[int, int]]:
    """(bytes asked for, bytes available) from the TPU compiler's out-of-memory message, if it is one."""
    num = r"([\d.]+)([KMGT]?)(?:i?B)?"
    for pattern in (rf"\({num}\) exceeds available HBM \({num}\)", rf"Used {num} of {num} hbm"):
        m = re.search(pattern, message)
        if m:
            a, au, b, bu = m.groups()
            return int(float(a) * UNITS[au]), int(float(b) * UNITS[bu])
    return None


def measure(program: Program, compiled: Any, target: Target, resident: int) -> ProgramReport:
    r = ProgramReport(program.name, program.in_iteration, program.calls, model_flops=program.model_flops,
                      kernel_flops=program.kernel_flops)
    mem = compiled.memory_analysis()
    if mem is not None:
        r.argument_bytes = int(mem.argument_size_in_bytes)
        r.output_bytes = int(mem.output_size_in_bytes)
        r.alias_bytes = int(mem.alias_size_in_bytes)
        r.temp_bytes = int(mem.temp_size_in_bytes)
        r.code_bytes = int(mem.generated_code_size_in_bytes)
    r.resident_bytes = resident
    r.peak_bytes = r.argument_bytes + r.output_bytes - r.alias_bytes + r.temp_bytes + r.code_bytes + resident
    flops, accessed = _cost(compiled)
    # A Pallas kernel (splash attention) is a custom call whose FLOPs `cost_analysis` does not count: the
    # program adds them from the architecture (`Program.kernel_flops`).
    r.flops = flops * program.calls + program.kernel_flops / target.num_chips
    r.bytes_accessed = accessed * program.calls
    chip = target.chip
    if chip.peak_flops and chip.hbm_bandwidth:
        # The model FLOPs bound any correct execution from below; XLA's per-chip count (plus the kernels')
        # has been seen to fall short of them (8B SFT step on v5p: 408 of 440 TFLOP per chip).
        compute = max(r.flops, r.model_flops / target.num_chips)
        r.roofline_s = max(compute / chip.peak_flops, r.bytes_accessed / chip.hbm_bandwidth)
    if chip.hbm_bytes:
        r.fits = r.peak_bytes <= chip.hbm_bytes
        r.shortfall_bytes = max(0, r.peak_bytes - chip.hbm_bytes)
    return r


def _refused(program: Program, target: Target, extra: int, message: str, seconds: float) -> ProgramReport:
    """The report of a program the compiler refused: out of HBM (what it asked for and the shortfall),
    or any other compiler error (its first line)."""
    r = ProgramReport(program.name, program.in_iteration, program.calls, model_flops=program.model_flops,
                      compile_s=seconds, resident_bytes=extra, fits=False)
    oom = parse_oom(message)
    if oom is not None:
        asked, available = oom
        r.peak_bytes = asked + extra
        r.shortfall_bytes = max(0, asked + extra - (target.chip.hbm_bytes or available))
        r.error = f"compiler: needs {asked / GIB:.2f} GiB of {available / GIB:.2f} GiB HBM"
    else:
        lines = [ln.strip() for ln in message.strip().splitlines() if ln.strip()]
        r.error = "compiler error: " + " ".join(lines[:2])[:300]
    return r


def _resident_bytes(program: Program, resident: dict[str, int]) -> int:
    return sum(b for name, b in resident.items() if name not in program.arguments)


def plan(config: Any, target: Target, *, only: tuple[str, ...] = (), recipe: str = "", log: Any = print) -> PlanReport:
    """Builds, compiles (one at a time) and measures every program of one iteration of `config`."""
    devices = target_devices(target)
    mesh = mesh_from_config(config.mesh, devices)
    run = abstract_run(config, mesh)
    resident = {name: shard_bytes(tree) for name, tree in run.resident().items()}  # an evaluation: no opt_state
    programs = iteration_programs(run)
    reports: list[ProgramReport] = []
    failed: set[str] = set()
    wanted = set(only) | {p.after for p in programs if p.name in only and p.after}
    for program in programs:
        if only and program.name not in wanted:
            continue
        extra = _resident_bytes(program, resident)
        if program.after in failed:
            reports.append(ProgramReport(program.name, program.in_iteration, program.calls,
                                         model_flops=program.model_flops, resident_bytes=extra,
                                         error=f"not compiled: its inputs are {program.after}'s outputs"))
            failed.add(program.name)
            continue
        log(f"compiling {program.name} ...")
        t0 = time.perf_counter()
        try:
            lowered = program.lower()
            compiled = lowered.compile()
        except Exception as e:  # noqa: BLE001 — a refusal is a result: record it, plan the rest
            reports.append(_refused(program, target, extra, str(e), time.perf_counter() - t0))
            failed.add(program.name)
            log(f"  {program.name}: NOT compiled ({reports[-1].error})")
            continue
        r = measure(program, compiled, target, extra)
        r.compile_s = time.perf_counter() - t0
        if program.on_compiled is not None:
            program.on_compiled(compiled, lowered)
        reports.append(r)
        log(f"  {program.name}: {r.compile_s:.1f} s, peak {r.peak_bytes / GIB:.2f} GiB per chip")
    geo = dataclasses.asdict(run.geometry)
    shape = dict(zip(mesh.axis_names, mesh.devices.shape))
    return PlanReport(recipe=recipe or config.algorithm, target=target,
                      mesh={k: int(v) for k, v in shape.items()}, geometry=geo, programs=reports, resident=resident)
