"""Benchmark results: one :class:`Row` per measurement, one rich table, one JSON file.

A row holds every sample it was computed from, so the JSON can be re-analysed later; the table
shows the median (or the single value), the reference it is compared with, their ratio, the
target and whether it was met, the number of runs, and the min-max range.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).with_name("results")


@dataclass
class Row:
    """One line of the table.

    Attributes:
        key: stable identifier (``join.n20``, ``calls.create.n100``, ...); tests look rows up by it.
        what: what was measured, for people.
        unit: ``s``, ``calls``, ``MiB``.
        samples: our measurements (one per run); empty when the row could not be measured.
        reference: the value ours is compared with (the floor, the original tool), or None.
        reference_samples: the reference's measurements, when it has several.
        target: the goal as text (``<= 1.2x``, ``<= 8 calls``).
        target_ok: whether the target was met (None: not judged).
        error: why the row has no number (the failing tool's own text), or "".
        notes: anything a reader needs (fewer runs than asked, what was excluded).
        extra: row-specific details for the JSON (breakdowns, per-operation call counts).
    """

    key: str
    what: str
    unit: str
    samples: list[float] = field(default_factory=list)
    reference: float | None = None
    reference_samples: list[float] = field(default_factory=list)
    target: str = ""
    target_ok: bool | None = None
    error: str = ""
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def value(self) -> float | None:
        """The median of the samples (None without samples)."""
        return statistics.median(self.samples) if self.samples else None

    @property
    def ratio(self) -> float | None:
        """ours / reference, when both exist and the reference is not zero."""
        if self.value is None or not self.reference:
            return None
        return self.value / self.reference

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form, with the derived numbers."""
        d = asdict(self)
        d.update(value=self.value, ratio=self.ratio, runs=len(self.samples),
                 min=min(self.samples) if self.samples else None,
                 max=max(self.samples) if self.samples else None)
        return d


def median(xs: list[float]) -> float | None:
    """Median, or None for no data."""
    return statistics.median(xs) if xs else None


def fmt(value: float | None, unit: str) -> str:
    """A number for the table: seconds with 2-3 significant decimals, counts as integers."""
    if value is None:
        return "—"
    if unit == "calls":
        return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"
    if unit == "MiB":
        return f"{value:.0f} MiB"
    if unit == "s":
        return f"{value:.3f} s" if value < 1 else f"{value:.1f} s"
    return f"{value:g} {unit}"


def table(rows: list[Row], title: str):
    """The rich table of ``rows`` (columns: what, ours, reference, ratio, target, runs, min–max)."""
    from rich.table import Table

    t = Table(title=title, show_lines=False)
    for col, justify in (("what", "left"), ("ours", "right"), ("reference", "right"),
                         ("ratio", "right"), ("target", "left"), ("runs", "right"),
                         ("min–max", "right")):
        t.add_column(col, justify=justify, overflow="fold")
    for r in rows:
        ours = fmt(r.value, r.unit) if r.samples else f"[red]{_short(r.error) or 'n/a'}[/]"
        ref = fmt(r.reference, r.unit) if r.reference is not None else "—"
        ratio = f"{r.ratio:.2f}×" if r.ratio is not None else "—"
        mark = {True: "[green]✓[/] ", False: "[red]✗[/] ", None: ""}[r.target_ok]
        span = (f"{fmt(min(r.samples), r.unit)}–{fmt(max(r.samples), r.unit)}"
                if len(r.samples) > 1 else "—")
        what = r.what + (f" [dim]({r.notes})[/]" if r.notes else "")
        t.add_row(what, ours, ref, ratio, mark + r.target, str(len(r.samples)), span)
    return t


def _short(text: str, limit: int = 90) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def machine() -> dict[str, Any]:
    """Where the numbers were taken."""
    mem = 0
    try:
        with open("/proc/meminfo") as f:
            mem = int(f.readline().split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    return {"host": platform.node(), "cpus": os.cpu_count(), "mem_mib": mem,
            "python": platform.python_version(), "kernel": platform.release()}


def write_json(rows: list[Row], meta: dict[str, Any], directory: Path = RESULTS_DIR) -> Path:
    """Write ``<UTC timestamp>.json`` and ``latest.json`` in ``directory``; return the first."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    doc = {"schema": 1, "written_at": stamp, "machine": machine(), **meta,
           "columns": ["what", "ours", "reference", "ratio", "target", "runs", "min–max"],
           "rows": [r.as_dict() for r in rows]}
    text = json.dumps(doc, indent=1, default=_json_default, allow_nan=False) + "\n"
    path = directory / f"{stamp}.json"
    for p in (path, directory / "latest.json"):
        tmp = p.with_suffix(".json.tmp")
        tmp.write_text(text)
        tmp.replace(p)
    return path


def _json_default(o: Any) -> Any:
    if isinstance(o, float) and (math.isnan(o) or math.isinf(o)):
        return None
    if isinstance(o, Path):
        return str(o)
    return str(o)
