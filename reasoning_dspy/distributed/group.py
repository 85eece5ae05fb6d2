"""The process group of a `torchrun` launch: join it from torchrun's environment variables, tell each
process its rank and device, share small decisions of rank 0, leave it.

Every collective here is a `torch.distributed` call on the default group: gloo for CPU tensors, and
with CUDA also NCCL for GPU tensors (`cpu:gloo,cuda:nccl`, so small CPU-side messages keep using
gloo). Messages are JSON (never pickle), sent as byte tensors.
"""

from __future__ import annotations

import gc
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch

#: How long a collective waits for a slow rank before failing; extraction ranks meet only at the end.
TIMEOUT = timedelta(hours=2)


class DistributedError(RuntimeError):
    """The process group could not be set up, or the ranks disagree."""


@dataclass(frozen=True)
class Ranks:
    """Where this process stands in its group: `rank` of `world_size` (`local_rank` on its node)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 writes shared outputs (manifests, SAE, logs); the others only their own shards."""
        return self.rank == 0

    def owns(self, index: int) -> bool:
        """Round-robin ownership of work units (extraction chunks): unit `index` goes to rank `index % world_size`."""
        return index % self.world_size == self.rank


def torchrun_world_size() -> int:
    """`WORLD_SIZE` as set by `torchrun` (1 when not launched by it)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise DistributedError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not a number of processes") from None


def is_distributed() -> bool:
    """True once a process group is initialised in this process (by `process_group` or by the caller)."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def current() -> Ranks:
    """This process's place in the initialised group, or the single-process `Ranks()`."""
    if not is_distributed():
        return Ranks()
    import torch.distributed as dist

    return Ranks(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank())))


def default_backend(device: str | torch.device) -> str:
    """`gloo` on CPU; `cpu:gloo,cuda:nccl` on CUDA (NCCL for tensors on the GPU, gloo for the rest)."""
    return "cpu:gloo,cuda:nccl" if torch.device(device).type == "cuda" else "gloo"


def rank_device(device: str, ranks: Ranks | None = None) -> str:
    """The device this rank runs on: a bare `cuda` becomes `cuda:<local rank>`, one GPU per process."""
    ranks = ranks or current()
    if device == "cuda" and ranks.world_size > 1:
        return f"cuda:{ranks.local_rank}"
    return device


@contextmanager
def process_group(device: str = "cpu", backend: str | None = None) -> Iterator[Ranks]:
    """Join the group that `torchrun` describes (`env://`: MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE)
    for the block, and leave it afterwards. Inside an already initialised group it only reports it;
    in a process not started by torchrun (no WORLD_SIZE) the block runs as the only rank, so one
    script serves both.

    >>> with process_group("cpu") as ranks:  # under `torchrun --nproc-per-node 2 ...`
    ...     print(ranks.rank, ranks.world_size)
    """
    import torch.distributed as dist

    if is_distributed() or "WORLD_SIZE" not in os.environ:
        yield current()
        return
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise DistributedError(f"no process group to join: WORLD_SIZE is set but {', '.join(missing)} not. "
                               "Launch with `torchrun --nproc-per-node N ...` (see docs/scale-out.md)")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.device(device).type == "cuda":
        if torch.cuda.device_count() <= local:
            raise DistributedError(f"local rank {local} needs GPU cuda:{local}, but this node has "
                                   f"{torch.cuda.device_count()}; use --nproc-per-node <= the GPU count")
        torch.cuda.set_device(local)
    dist.init_process_group(backend or default_backend(device), timeout=TIMEOUT)
    try:
        yield current()
    finally:
        dist.destroy_process_group()
        # Free the group now, while the interpreter is whole. Left to the collector at exit, a gloo
        # worker thread can still be releasing a collective's tensors, which needs the GIL; it finds
        # the interpreter finalizing and the process aborts ("terminate called without an active
        # exception"), about one 2-process run in 15 on 2 busy cores.
        gc.collect()


@contextmanager
def torchrun_group(device: str = "cpu") -> Iterator[Ranks]:
    """`process_group(device)` when `torchrun` started several processes (WORLD_SIZE > 1), else a
    single-process block: what each CLI command wraps its work in."""
    if torchrun_world_size() > 1:
        with process_group(device) as ranks:
            yield ranks
    else:
        yield current()


def share_from_main(obj: Any) -> Any:
    """Rank 0's `obj` (JSON-serialisable) on every rank; the object itself in a single process."""
    if not is_distributed():
        return obj
    import torch.distributed as dist

    data = json.dumps(obj).encode("utf-8") if dist.get_rank() == 0 else b""
    size = torch.tensor([len(data)], dtype=torch.long)
    dist.broadcast(size, src=0)
    buf = torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else torch.empty(int(size), dtype=torch.uint8)
    dist.broadcast(buf, src=0)
    return obj if dist.get_rank() == 0 else json.loads(buf.numpy().tobytes().decode("utf-8"))


def all_ok(error: BaseException | None) -> None:
    """Collective error check: every rank says whether its part failed; if any did, every rank raises
    `DistributedError` naming the failed ranks and their messages (instead of the others hanging)."""
    if not is_distributed():
        if error is not None:
            raise error
        return
    import torch.distributed as dist

    ranks = current()
    mine = "" if error is None else f"{type(error).__name__}: {error}"
    messages: list[Any] = [None] * ranks.world_size
    # all_gather_object pickles; gather JSON strings instead, one fixed-size byte tensor each.
    data = json.dumps(mine).encode("utf-8")
    size = torch.tensor([len(data)], dtype=torch.long)
    sizes = [torch.zeros(1, dtype=torch.long) for _ in range(ranks.world_size)]
    dist.all_gather(sizes, size)
    width = int(max(s.item() for s in sizes))
    padded = torch.zeros(width, dtype=torch.uint8)
    padded[: len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    bufs = [torch.zeros(width, dtype=torch.uint8) for _ in range(ranks.world_size)]
    dist.all_gather(bufs, padded)
    for r, (buf, n) in enumerate(zip(bufs, sizes, strict=True)):
        messages[r] = json.loads(buf[: int(n.item())].numpy().tobytes().decode("utf-8"))
    failed = {r: m for r, m in enumerate(messages) if m}
    if not failed:
        return
    if error is not None and len(set(failed.values())) == 1:
        raise error  # the same failure everywhere (e.g. a check of shared input): report it as is
    detail = "; ".join(f"rank {r}: {m}" for r, m in failed.items())
    raise DistributedError(f"{len(failed)} of {ranks.world_size} ranks failed: {detail}") from error
