"""Algorithmic tasks from the NTM/DNC papers, generated on the fly (taught in notebook 02).

Graves, Wayne, Danihelka, "Neural Turing Machines", arXiv 1410.5401 (2014): the copy and
associative recall tasks.

Shapes: B batch, T time steps, K bits per vector (the task's *width*), L a sequence's length.

The copy task: a sequence of ``L`` random binary vectors of width ``K`` is presented, one vector per
time step, followed by one step carrying a delimiter flag on an extra input channel; during the
next ``L`` steps the input is blank and the network must reproduce the sequence. Sequences in a
batch have different lengths; every batch is padded to ``T = 2 * max_length + 1`` steps and a mask
marks the answer steps, the only steps the loss and the bit error look at::

    step    0 .. L-1        L            L+1 .. 2L        2L+1 .. T-1
    input   bits            delimiter    blank            blank (padding)
    target  --              --           bits again       --
    mask    0               0            1                0

Everything is built with tensor indexing (no loop over samples), from an explicit
``torch.Generator`` so a batch is reproducible.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from memtutor.utils import check_positive_int, check_tensor

__all__ = [
    "CopyBatch",
    "copy_task",
    "associative_recall_task",
    "copy_sequence_steps",
    "masked_bce_loss",
    "bits_error",
]


class CopyBatch(NamedTuple):
    """One padded batch of the copy task.

    inputs: (B, T, K+1) float; channel K is the delimiter flag.
    targets: (B, T, K) float in {0, 1}; zero outside the answer steps.
    mask: (B, T) float in {0, 1}; 1 exactly on the L answer steps of each sequence.
    lengths: (B,) long, each sequence's L.
    """

    inputs: torch.Tensor
    targets: torch.Tensor
    mask: torch.Tensor
    lengths: torch.Tensor


def copy_sequence_steps(max_length: int) -> int:
    """Number of time steps ``T = 2 * max_length + 1`` of a padded copy batch."""
    return 2 * check_positive_int(max_length, "max_length") + 1


def copy_task(
    batch_size: int,
    min_length: int,
    max_length: int,
    width: int = 8,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> CopyBatch:
    """Draw a batch of copy sequences with lengths uniform in ``[min_length, max_length]``.

    Bits are fair coin flips. Random numbers come from ``generator`` (a CPU generator; the batch
    is then moved to ``device``), so the same generator state gives the same batch.
    Returns a :class:`CopyBatch` with inputs (B, T, K+1), targets (B, T, K), mask (B, T),
    lengths (B,), where ``T = 2 * max_length + 1``.
    """
    batch_size = check_positive_int(batch_size, "batch_size")
    min_length = check_positive_int(min_length, "min_length")
    max_length = check_positive_int(max_length, "max_length")
    width = check_positive_int(width, "width")
    if min_length > max_length:
        raise ValueError(f"min_length must be <= max_length, got {min_length} > {max_length}")
    steps = copy_sequence_steps(max_length)
    lengths = torch.randint(min_length, max_length + 1, (batch_size,), generator=generator)  # (B,)
    bits = torch.randint(0, 2, (batch_size, max_length, width), generator=generator).float()  # (B, Lmax, K)

    t = torch.arange(steps).unsqueeze(0)  # (1, T)
    length = lengths.unsqueeze(1)  # (B, 1)
    present = t < length  # (B, T) steps that show a vector
    answer = (t > length) & (t <= 2 * length)  # (B, T) steps that must reproduce it
    # Step t of the answer reproduces vector t - L - 1; clamp only to keep the gather in range,
    # the mask zeroes every clamped position.
    source = (t - length - 1).clamp(0, max_length - 1)  # (B, T)
    gathered = torch.gather(bits, 1, source.unsqueeze(-1).expand(-1, -1, width))  # (B, T, K)
    targets = gathered * answer.unsqueeze(-1)  # (B, T, K)

    shown = torch.zeros(batch_size, steps, width)
    shown[:, :max_length] = bits
    shown = shown * present.unsqueeze(-1)  # (B, T, K)
    delimiter = (t == length).float().unsqueeze(-1)  # (B, T, 1)
    inputs = torch.cat([shown, delimiter], dim=-1)  # (B, T, K+1)
    return CopyBatch(
        inputs.to(device),
        targets.to(device),
        answer.float().to(device),
        lengths.to(device),
    )


def associative_recall_task(
    batch_size: int,
    min_items: int,
    max_items: int,
    item_length: int = 3,
    width: int = 6,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> CopyBatch:
    """Associative recall (NTM paper): recall the item that followed a query item.

    Each sequence holds ``n`` items (uniform in ``[min_items, max_items]``, at least 2), an item
    being ``item_length`` random binary vectors of width ``K = width``. Layout, with m = item_length::

        item j (j < n):  step j(m+1) delimiter (channel K), steps j(m+1)+1 .. j(m+1)+m its vectors
        query:           step q = n(m+1) flag (channel K+1), steps q+1 .. q+m a copy of item i
                         (i uniform in [0, n-2]), step q+m+1 flag (channel K+1)
        answer:          steps q+m+2 .. q+2m+1 must output item i+1 (the mask is 1 only there)

    Returns a :class:`CopyBatch`: inputs (B, T, K+2), targets (B, T, K), mask (B, T) and, in
    ``lengths``, the number of items n (B,); ``T = max_items (m+1) + 2m + 2``.
    """
    batch_size = check_positive_int(batch_size, "batch_size")
    min_items = check_positive_int(min_items, "min_items")
    max_items = check_positive_int(max_items, "max_items")
    m = check_positive_int(item_length, "item_length")
    width = check_positive_int(width, "width")
    if min_items < 2:
        raise ValueError(f"min_items must be >= 2 (a query needs a following item), got {min_items}")
    if min_items > max_items:
        raise ValueError(f"min_items must be <= max_items, got {min_items} > {max_items}")
    steps = max_items * (m + 1) + 2 * m + 2
    n = torch.randint(min_items, max_items + 1, (batch_size,), generator=generator)  # (B,)
    # query index uniform in [0, n-2]: floor(u * (n-1)) with u uniform in [0, 1)
    u = torch.rand(batch_size, generator=generator)
    query = (u * (n - 1)).long().clamp(max=n - 2)  # clamp only guards u*(n-1) rounding up to n-1
    items = torch.randint(0, 2, (batch_size, max_items * m, width), generator=generator).float()  # (B, I*m, K)

    t = torch.arange(steps).unsqueeze(0)  # (1, T)
    nn_, qi = n.unsqueeze(1), query.unsqueeze(1)  # (B, 1)
    q0 = nn_ * (m + 1)  # (B, 1) first query flag
    in_items = t < q0
    seg, pos = t // (m + 1), t % (m + 1)
    item_step = in_items & (pos > 0)  # (B, T) an item vector is shown
    item_flag = in_items & (pos == 0)
    query_step = (t > q0) & (t <= q0 + m)
    query_flag = (t == q0) | (t == q0 + m + 1)
    answer = (t >= q0 + m + 2) & (t <= q0 + 2 * m + 1)
    # which stored vector each step shows or must output; clamps only keep gathers in range,
    # the step masks above zero every clamped position
    src_item = (seg * m + pos - 1).clamp(0, max_items * m - 1).expand(batch_size, -1)  # (B, T)
    src_query = (qi * m + (t - q0 - 1)).clamp(0, max_items * m - 1)
    src_answer = ((qi + 1) * m + (t - q0 - m - 2)).clamp(0, max_items * m - 1)

    def take(index):  # (B, T) -> (B, T, K); index must have the full batch dimension
        return torch.gather(items, 1, index.unsqueeze(-1).expand(-1, -1, width))

    shown = take(src_item) * item_step.unsqueeze(-1) + take(src_query) * query_step.unsqueeze(-1)
    flags = torch.stack([item_flag, query_flag], dim=-1).float()  # (B, T, 2)
    inputs = torch.cat([shown, flags], dim=-1)  # (B, T, K+2)
    targets = take(src_answer) * answer.unsqueeze(-1)  # (B, T, K)
    return CopyBatch(inputs.to(device), targets.to(device), answer.float().to(device), n.to(device))


def _check_prediction(logits, targets, mask) -> None:
    check_tensor(logits, "logits", ndim=3)
    check_tensor(targets, "targets", shape=tuple(logits.shape))
    check_tensor(mask, "mask", shape=tuple(logits.shape[:2]))


def masked_bce_loss(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sigmoid cross-entropy on the answer steps only, in bits per sequence.

    logits, targets: (B, T, K); mask: (B, T). Summed over time and bits, averaged over the batch
    (as the DNC reference code does), divided by ln 2 so the number reads in bits.
    Returns a scalar.
    """
    _check_prediction(logits, targets, mask)
    per_bit = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")  # (B, T, K)
    return (per_bit * mask.unsqueeze(-1)).sum() / (logits.shape[0] * math.log(2.0))


def bits_error(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Wrong bits per sequence after thresholding the output at probability 0.5 (logit 0).

    logits, targets: (B, T, K); mask: (B, T). Returns (B,) float: the NTM paper's
    "cost per sequence", counted on the answer steps only.
    """
    _check_prediction(logits, targets, mask)
    wrong = (logits > 0) != (targets > 0.5)  # (B, T, K)
    return (wrong.float() * mask.unsqueeze(-1)).sum(dim=(1, 2))  # (B,)
