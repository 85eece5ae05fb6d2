"""What machine a benchmark ran on: the facts that move the figures (CPU model and the instruction
sets torch uses, cores, memory, torch and its threads, load average, GPU).

Shared by the bench scripts (each records the load before and after itself) and `run_all.py` (the
page header). Reads /proc where it can and never needs CUDA: the GPU is described only when torch
sees one. torch is imported inside the functions that need it, so rendering a page does not.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo, or what `platform` knows elsewhere."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_features() -> dict[str, Any]:
    """torch's CPU kernel level and the bf16 instruction sets: without AVX512-BF16 or AMX, torch's bf16
    matmul is a generic fallback kernel, far slower than float32."""
    import torch

    out: dict[str, Any] = {"kernels": torch.backends.cpu.get_cpu_capability()}
    try:
        out["avx512_bf16"] = bool(torch.cpu._is_avx512_bf16_supported())
        out["amx"] = bool(torch.cpu._is_amx_tile_supported())
    except AttributeError:  # private helpers gone in this torch: unknown, not absent
        out["avx512_bf16"] = out["amx"] = None
    return out


def has_bf16_matmul() -> bool:
    """Whether bf16 matmuls run on real instructions here (unknown counts as yes)."""
    f = cpu_features()
    return f["avx512_bf16"] is not False or f["amx"] is not False


def memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except (OSError, ValueError, IndexError):
        pass
    return None


def load_average() -> float | None:
    """1-minute load average: on a shared machine, the other work that slowed both sides alike."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def gpu() -> dict[str, Any] | None:
    """The CUDA GPU torch sees (the first one, and how many), or None."""
    import torch

    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    return {"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
            "count": torch.cuda.device_count(), "cuda": torch.version.cuda}


def describe() -> dict[str, Any]:
    """Everything the page header shows, measured now."""
    import torch

    return {"cpu": cpu_model(), "arch": platform.machine(), "cores": os.cpu_count(), **cpu_features(),
            "memory_gib": None if (m := memory_gib()) is None else round(m, 1),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "os": f"{platform.system()} {platform.release()}",
            "load": load_average(), "gpu": gpu()}


def cpu_line(m: dict[str, Any]) -> str:
    """One line: `AMD EPYC, 2 cores, AVX512 kernels, AVX512-BF16, no AMX`."""
    def flag(key: str, name: str) -> str:
        return name if m.get(key) else (f"{name} unknown" if m.get(key) is None else f"no {name}")

    return (f"{m.get('cpu')} ({m.get('arch')}), {m.get('cores')} cores; torch kernel level "
            f"{m.get('kernels')}, {flag('avx512_bf16', 'AVX512-BF16')}, {flag('amx', 'AMX')}")
