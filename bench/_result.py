"""The machine-readable result a bench script writes with `--json PATH`, which `run_all.py` renders.

Every bench measures ours against the obvious alternative in the same run. A `Ratio` is one such
comparison: both quantities with their unit, and the ratio oriented so that above 1 means ours is
better (faster, or less memory). A `Target` says what ratio was promised and at which settings, so
the page can tell a target met at those settings from one met at other (smaller) settings. The
printed tables go in `tables`; `figures` keeps any raw data worth having that the page leaves out.

A bench script uses it like this:

    out = ResultWriter.from_args(args, "extract")      # right after parsing: remembers time and load
    ...
    out.write(title=..., compares=..., method=..., settings=..., ratios=[...], tables=[...])
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _machine import gpu, load_average
from pydantic import BaseModel, Field, computed_field

Cell = str | int | float | None


class Target(BaseModel):
    """A promised ratio and the settings it is stated for."""

    ratio: float = Field(description="the ratio must reach at least this")
    settings: dict[str, Any] = Field(default_factory=dict, description="settings the target is stated at")
    applies: bool = Field(True, description="whether this run used those settings")

    @classmethod
    def at(cls, ratio: float, settings: dict[str, Any], actual: dict[str, Any]) -> Target:
        """A target stated at `settings`; it applies when every one of them equals the run's value."""
        return cls(ratio=ratio, settings=settings,
                   applies=all(actual.get(k) == v for k, v in settings.items()))


class Ratio(BaseModel):
    """One comparison measured in one run."""

    label: str = Field(description="ours vs the alternative, e.g. 'micro-batched vs one at a time'")
    case: str = Field("", description="the workload, e.g. 'tinyllama-random, layer 6 of 22'")
    ours: float
    baseline: float
    unit: str = Field(description="unit of `ours` and `baseline`, e.g. tokens/s, s, MB")
    higher_is_better: bool = Field(True, description="False for times and memory")
    target: Target | None = None
    summary: bool = Field(True, description="also listed in the page's summary table")

    @computed_field
    @property
    def ratio(self) -> float:
        if not (self.ours and self.baseline):
            return float("nan")
        return self.ours / self.baseline if self.higher_is_better else self.baseline / self.ours

    @computed_field
    @property
    def met(self) -> bool | None:
        return None if self.target is None else bool(self.ratio >= self.target.ratio)


class Table(BaseModel):
    title: str = ""
    columns: list[str]
    rows: list[list[Cell]]


class BenchResult(BaseModel):
    """Everything one run of one bench script measured, with what and how."""

    bench: str = Field(description="short name: the script is bench/bench_<name>.py")
    title: str
    compares: str = Field(description="one line: ours vs the obvious alternative")
    method: str = Field(description="how it is measured, so that both sides do the same work; no figures")
    device: str
    settings: dict[str, Any]
    ratios: list[Ratio]
    tables: list[Table] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list, description="observations from this run")
    figures: dict[str, Any] = Field(default_factory=dict, description="raw data the page does not show")
    command: list[str]
    seconds: float
    load_before: float | None
    load_after: float | None
    torch_threads: int
    gpu: dict[str, Any] | None = None


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` to a temporary file next to `path`, then rename it: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def add_result_args(parser: argparse.ArgumentParser, *, device: bool = True) -> None:
    """`--json PATH` (and `--device` where the bench can run on a GPU)."""
    parser.add_argument("--json", type=Path, default=None, metavar="PATH",
                        help="also write the results here as JSON (what bench/run_all.py reads)")
    if device:
        parser.add_argument("--device", default="cpu", help="torch device: cpu (default), cuda, cuda:N")


def check_device_arg(parser: argparse.ArgumentParser, device: str) -> None:
    """Refuse a device this machine lacks with a one-line error instead of a torch stack trace."""
    from reasoning_dspy.models import check_device

    try:
        check_device(device)
    except ValueError as e:
        parser.error(str(e))


def sync(device: str) -> None:
    """Wait for queued GPU work, so a wall-clock reading covers it (no-op on CPU)."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


class ResultWriter:
    """Started right after argument parsing: it remembers the start time and load, then writes the result."""

    def __init__(self, path: Path | None, bench: str, device: str = "cpu"):
        self.path, self.bench, self.device = path, bench, device
        self.start = time.perf_counter()
        self.load_before = load_average()

    @classmethod
    def from_args(cls, args: argparse.Namespace, bench: str) -> ResultWriter:
        return cls(args.json, bench, getattr(args, "device", "cpu"))

    def write(self, *, title: str, compares: str, method: str, settings: dict[str, Any], ratios: list[Ratio],
              tables: list[Table] = (), notes: list[str] = (), figures: dict[str, Any] | None = None
              ) -> BenchResult | None:
        """Write the result when `--json` was given; return it either way (None without `--json`)."""
        if self.path is None:
            return None
        import torch

        result = BenchResult(
            bench=self.bench, title=title, compares=compares, method=method, device=self.device,
            settings=settings, ratios=ratios, tables=list(tables), notes=list(notes), figures=figures or {},
            command=[Path(sys.argv[0]).as_posix(), *sys.argv[1:]], seconds=time.perf_counter() - self.start,
            load_before=self.load_before, load_after=load_average(), torch_threads=torch.get_num_threads(),
            gpu=gpu() if self.device.startswith("cuda") else None)
        atomic_write_text(self.path, result.model_dump_json(indent=2))
        return result
