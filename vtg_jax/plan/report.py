"""The plan's table (what `python -m vtg_jax.plan` prints)."""
from __future__ import annotations

from typing import Any, Optional

from vtg_jax.plan.hardware import GIB
from vtg_jax.plan.planner import PlanReport

COLUMNS = ("program", "calls", "compile s", "args", "out", "temp", "resident", "peak GiB", "HBM %",
           "TFLOP", "GB moved", "roofline ms", "fits")


def _gib(n: int) -> str:
    return f"{n / GIB:.2f}"


def _opt(x: Optional[float], fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def format_table(report: PlanReport) -> str:
    """Per-program rows (per chip), then the iteration's totals and what does not fit."""
    t = report.target
    hbm = t.chip.hbm_bytes
    geo = report.geometry
    lines = [f"{report.recipe} on {t.name} ({t.num_chips} chips{'' if t.topology is None else ', ' + t.topology}; "
             f"mesh {report.mesh}; HBM/chip {'-' if not hbm else _gib(hbm) + ' GiB'})",
             f"video: {geo['seconds']:g} s -> {geo['frames']} frames of {geo['height']}x{geo['width']}, "
             f"{geo['video_tokens']} video tokens; prompt {geo['prompt_tokens']} tokens",
             "resident per chip: " + ", ".join(f"{k} {_gib(v)} GiB" for k, v in report.resident.items()), ""]
    rows = [COLUMNS]
    for p in report.programs:
        name = p.name + ("" if p.in_iteration else " (eval)")
        if p.error and not p.argument_bytes:
            rows.append((name, str(p.calls), f"{p.compile_s:.0f}", "-", "-", "-", _gib(p.resident_bytes),
                         _gib(p.peak_bytes) if p.peak_bytes else "-",
                         f"{100 * p.peak_bytes / hbm:.0f}" if hbm and p.peak_bytes else "-", "-", "-", "-", "NO"))
            continue
        rows.append((name, str(p.calls), f"{p.compile_s:.0f}", _gib(p.argument_bytes), _gib(p.output_bytes),
                     _gib(p.temp_bytes), _gib(p.resident_bytes), _gib(p.peak_bytes),
                     f"{100 * p.peak_bytes / hbm:.0f}" if hbm else "-", f"{p.flops / 1e12:.2f}",
                     f"{p.bytes_accessed / 1e9:.1f}", _opt(None if p.roofline_s is None else 1e3 * p.roofline_s, ".1f"),
                     {True: "yes", False: "NO", None: "-"}[p.fits]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    for r in rows:
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    tot = report.totals()
    lines.append("")
    roofline_ms = None if tot["roofline_s"] is None else 1e3 * tot["roofline_s"]
    lines.append(f"iteration: roofline {_opt(roofline_ms, '.1f')} ms, "
                 f"model {tot['model_flops'] / 1e12:.1f} TFLOP, hardware {tot['hardware_flops'] / 1e12:.1f} TFLOP, "
                 f"roofline MFU {_opt(None if tot['roofline_mfu'] is None else 100 * tot['roofline_mfu'], '.1f')}%, "
                 f"peak {_gib(tot['peak_bytes'])} GiB per chip")
    for p in report.not_fitting():
        why = p.error or f"needs {_gib(p.peak_bytes)} GiB per chip of {_gib(hbm)} GiB"
        short = f"; short by {_gib(p.shortfall_bytes)} GiB" if p.shortfall_bytes else ""
        lines.append(f"DOES NOT FIT: {p.name}: {why}{short}")
    return "\n".join(lines)


def summary_line(report: PlanReport) -> dict[str, Any]:
    """The figures README's Scale table quotes."""
    tot = report.totals()
    return {"recipe": report.recipe, "topology": report.target.name, "fits": tot["fits"],
            "peak_gib": round(tot["peak_bytes"] / GIB, 2), "roofline_s": tot["roofline_s"],
            "roofline_mfu": tot["roofline_mfu"]}
