"""Results: one table on stdout, JSON and a PNG chart under bench/results/."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["Result", "Target", "render_table", "write_chart", "write_json"]


@dataclass(frozen=True, slots=True)
class Target:
    """A goal for context, never an assert: ``value <op> bound``."""

    text: str  # e.g. ">= 60% of bare"
    value: str  # which number is compared: "ratio", "calls_per_s" or "rss_mib"
    op: str  # ">=" or "<="
    bound: float


@dataclass
class Result:
    key: str  # stable id, e.g. "get_user"
    scenario: str
    backend: str  # "sqlite", "postgres" or "-" for a baseline
    calls_per_s: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    calls: int = 0
    errors: int = 0
    server_cpu: float | None = None  # CPU seconds per second, all server processes
    baseline: str | None = None  # key of the baseline Result
    ratio: float | None = None
    ratio_kind: str = ""  # "throughput" (calls/s over the baseline's), "p99" or "rss"
    ratio_text: str = ""
    target: Target | None = None
    met: bool | None = None
    is_baseline: bool = False
    skipped: str = ""
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def judge(self) -> None:
        if self.target is None:
            return
        values = {
            "ratio": self.ratio,
            "calls_per_s": self.calls_per_s,
            "rss_mib": self.extra.get("peak_rss_mib"),
        }
        value = values.get(self.target.value)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            self.met = None
            return
        self.met = (
            value >= self.target.bound if self.target.op == ">=" else value <= self.target.bound
        )


def _number(value: float | None, digits: int = 1) -> str:
    if value is None or math.isnan(value):
        return "-"
    if digits == 0 or abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def _target_cell(result: Result) -> str:
    if result.skipped:
        return "skipped"
    if result.target is None:
        return "-"
    verdict = {True: "met", False: "NOT MET", None: "n/a"}[result.met]
    return f"{verdict} ({result.target.text})"


HEADERS = (
    "scenario",
    "backend",
    "calls/s",
    "p50 ms",
    "p99 ms",
    "errors",
    "srv CPU",
    "vs baseline",
    "target",
)


def render_table(results: list[Result]) -> str:
    rows: list[tuple[str, ...]] = []
    for r in results:
        if r.skipped:
            rows.append((r.scenario, r.backend, "-", "-", "-", "-", "-", r.skipped, "skipped"))
            continue
        rows.append(
            (
                r.scenario,
                r.backend,
                _number(r.calls_per_s, 0 if (r.calls_per_s or 0) >= 100 else 1),
                _number(r.p50_ms, 2),
                _number(r.p99_ms, 2),
                f"{r.errors:,}",
                "-" if r.server_cpu is None else f"{r.server_cpu:.0%}",
                r.ratio_text or ("(baseline)" if r.is_baseline else "-"),
                _target_cell(r),
            )
        )
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(HEADERS)]
    numeric = {2, 3, 4, 5, 6}

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(
            c.rjust(w) if i in numeric else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    out = [line(HEADERS), line(tuple("-" * w for w in widths))]
    out.extend(line(row) for row in rows)
    return "\n".join(out)


def _clean(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def write_json(path: Path, meta: dict[str, Any], results: list[Result]) -> None:
    payload = {"meta": meta, "results": [_clean(asdict(r)) for r in results]}
    path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def write_chart(path: Path, title: str, results: list[Result]) -> None:
    """Three panels: calls/s, share of the baseline (with targets), p99 latency."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in results if not r.skipped and r.calls_per_s is not None]
    if not shown:
        return
    labels = [f"{r.scenario} [{r.backend}]" for r in shown]
    colors = {"sqlite": "#4c72b0", "postgres": "#dd8452", "-": "#7f7f7f"}
    bar_colors = [colors["-"] if r.is_baseline else colors.get(r.backend, "#55a868") for r in shown]
    positions = list(range(len(shown)))[::-1]
    height = max(4.0, 0.32 * len(shown) + 1.5)
    figure, (rate_ax, ratio_ax, p99_ax) = plt.subplots(
        1, 3, figsize=(18, height), sharey=True, gridspec_kw={"width_ratios": [1.2, 1, 1]}
    )

    rate_ax.barh(positions, [r.calls_per_s or 0 for r in shown], color=bar_colors)
    rate_ax.set_xscale("log")
    rate_ax.set_xlabel("calls/s (log)")
    rate_ax.set_yticks(positions, labels, fontsize=8)

    throughput = [r.ratio_kind == "throughput" and r.ratio is not None for r in shown]
    ratio_ax.barh(
        positions,
        [(r.ratio or 0) * 100 if ok else 0 for r, ok in zip(shown, throughput, strict=True)],
        color=bar_colors,
    )
    for pos, r, ok in zip(positions, shown, throughput, strict=True):
        if ok and r.target is not None and r.target.value == "ratio":
            ratio_ax.plot([r.target.bound * 100] * 2, [pos - 0.4, pos + 0.4], color="black")
    ratio_ax.set_xlabel("% of its baseline's calls/s (black tick: target)")

    p99 = [r.p99_ms if r.p99_ms is not None and not math.isnan(r.p99_ms) else 0 for r in shown]
    p99_ax.barh(positions, p99, color=bar_colors)
    p99_ax.set_xscale("log")
    p99_ax.set_xlabel("p99 latency, ms (log)")

    for axis in (rate_ax, ratio_ax, p99_ax):
        axis.grid(axis="x", alpha=0.3)
    from matplotlib.patches import Patch

    backends = sorted({"-" if r.is_baseline else r.backend for r in shown})
    rate_ax.legend(
        handles=[
            Patch(color=colors.get(b, "#55a868"), label="baseline" if b == "-" else b)
            for b in backends
        ],
        loc="lower right",
        fontsize=8,
    )
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
