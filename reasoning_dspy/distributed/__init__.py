"""Scale-out with `torch.distributed`: launch with `torchrun`, one process per device (gloo on CPU,
NCCL on GPU). See docs/scale-out.md.

* `process_group(device)`: join the group torchrun describes for a block; `current()` says this
  process's `Ranks` (rank, world size, local rank).
* `extract_activations` inside a group splits the prompts into chunks taken in turn by the ranks
  (`reasoning_dspy.activations.chunked`): per-rank shards, per-rank resume, one merged manifest.
* `train_sae` inside a group trains on R slices of every global batch with averaged gradients
  (`reasoning_dspy.distributed.sync`): the same data order, seed and weights as one process.
* `StreamedPrompts`: prompts from a `datasets` streaming dataset, for corpora larger than memory or disk.

    $ torchrun --nproc-per-node 2 -m reasoning_dspy.cli extract --model tiny-random --layer 2 --out runs/acts
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS: dict[str, str] = {
    "DistributedError": "reasoning_dspy.distributed.group",
    "Ranks": "reasoning_dspy.distributed.group",
    "current": "reasoning_dspy.distributed.group",
    "is_distributed": "reasoning_dspy.distributed.group",
    "process_group": "reasoning_dspy.distributed.group",
    "rank_device": "reasoning_dspy.distributed.group",
    "torchrun_group": "reasoning_dspy.distributed.group",
    "torchrun_world_size": "reasoning_dspy.distributed.group",
    "StreamedPrompts": "reasoning_dspy.distributed.streaming",
}
__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # pragma: no cover
    from reasoning_dspy.distributed.group import (  # noqa: F401
        DistributedError,
        Ranks,
        current,
        is_distributed,
        process_group,
        rank_device,
        torchrun_group,
        torchrun_world_size,
    )
    from reasoning_dspy.distributed.streaming import StreamedPrompts  # noqa: F401


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
