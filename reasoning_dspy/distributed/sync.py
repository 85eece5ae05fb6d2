"""What SAE training needs from the process group to take, on R ranks, the step one process takes.

Each rank computes the loss on its slice of the same global batch; its gradient (a mean over its
rows) is weighted by its share of the batch and the weighted gradients are summed with one
`all_reduce` per parameter. The sum is the gradient of the mean over the whole batch, so every
rank then clips, steps Adam and renormalises exactly as a single process would, and the replicas
stay identical. This is what `DistributedDataParallel` does, written out: DDP hooks the module's
`forward`, while the trainer calls `training_loss` (and the TopK fast path is a custom autograd
function), and DDP divides by the world size, which is wrong for unequal slices.

`LocalSync` is the single-process stand-in: every method is the identity.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from reasoning_dspy.distributed.group import Ranks, current, is_distributed


class LocalSync:
    """One process: nothing to exchange."""

    ranks = Ranks()

    def broadcast_(self, tensors: Iterable[Tensor]) -> None:
        """Overwrite `tensors` with rank 0's."""

    def from_main(self, value: float) -> float:
        """Rank 0's `value` (a number or a bool), so every rank takes the same decision."""
        return value

    def reduce_grads_(self, params: Iterable[Tensor], weight: float) -> None:
        """Replace each `p.grad` by `Σ_ranks weight_r · p.grad_r` (in place)."""

    def any_(self, mask: Tensor) -> Tensor:
        """Element-wise OR of a bool `mask` over the ranks."""
        return mask

    def weighted_means(self, values: dict[str, float], weight: float) -> dict[str, float]:
        """Per-row means over the global batch from each rank's mean over its rows."""
        return values


class DistributedSync(LocalSync):
    """The ranks of the initialised default process group."""

    def __init__(self) -> None:
        import torch.distributed as dist

        self.dist = dist
        self.ranks = current()

    def broadcast_(self, tensors: Iterable[Tensor]) -> None:
        with torch.no_grad():
            for t in tensors:
                self.dist.broadcast(t.data, src=0)

    def from_main(self, value: float) -> float:
        t = torch.tensor([float(value)], dtype=torch.float64)
        self.dist.broadcast(t, src=0)
        return type(value)(t.item())

    def reduce_grads_(self, params: Iterable[Tensor], weight: float) -> None:
        for p in params:
            g = p.grad
            if g is None:  # the same parameters have gradients on every rank (same code path)
                continue
            flat = g if g.is_contiguous() else g.T if g.dim() == 2 and g.T.is_contiguous() else None
            if flat is None:
                flat = g.contiguous()
            flat.mul_(weight)
            self.dist.all_reduce(flat)
            if flat.data_ptr() != g.data_ptr():
                g.copy_(flat)

    def any_(self, mask: Tensor) -> Tensor:
        m = mask.to(torch.uint8)
        self.dist.all_reduce(m, op=self.dist.ReduceOp.MAX)
        return m.bool()

    def weighted_means(self, values: dict[str, float], weight: float) -> dict[str, float]:
        t = torch.tensor([v * weight for v in values.values()], dtype=torch.float64)
        self.dist.all_reduce(t)
        return dict(zip(values, t.tolist(), strict=True))

    def batch_fvu(self, x: Tensor, recon: Tensor) -> float:
        """FVU of the global batch, `Σ‖x − x̂‖² / Σ‖x − mean(x)‖²` over every rank's rows (float64 sums)."""
        x, recon = x.double(), recon.double()
        sums = torch.cat([(x - recon).pow(2).sum()[None], x.pow(2).sum()[None], x.sum(0),
                          torch.tensor([x.shape[0]], dtype=torch.float64, device=x.device)])
        self.dist.all_reduce(sums)
        err, sq, total, n = sums[0], sums[1], sums[2:-1], sums[-1]
        var = (sq - total.pow(2).sum() / n).item()
        return err.item() / var if var > 0 else float("nan")


def train_sync() -> LocalSync:
    """`DistributedSync` inside a process group (any size), else `LocalSync`."""
    return DistributedSync() if is_distributed() else LocalSync()
