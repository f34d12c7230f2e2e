"""MemUP: long-term memory learned by predicting the most uncertain future outcomes (notebook 07).

Sorokin, Buzun, Pugachev, Burtsev, "Explain My Surprise: Learning Efficient Long-Term Memory by
Predicting Uncertain Outcomes", NeurIPS 2022 (arXiv 2207.13649); authors' code: ``griver/memup``.

The pieces, in the paper's notation:

* copy task: ``H`` head symbols from an alphabet of 8, ``L`` fillers, ``H`` recall tokens; the
  output at the recall steps must reproduce the head (dependency length ``L + 2H``);
* uncertainty detector ``d_psi``: a model of the outcome ``y_k`` from the *local* context ``c_k``
  only (the last ``w`` inputs, no long-term memory); its per-step cross-entropy
  ``-log p_psi(y_k | c_k)`` (the "surprise") estimates how unpredictable ``y_k`` is locally;
* target selection: for a prediction step ``t``, the ``K`` steps ``k >= t`` with the largest surprise;
* memory ``g_theta`` (an LSTM) run over the sequence in rollouts of ``r`` steps, its state carried
  forward *detached*; predictor ``q_phi(y_k | m_t, c_k)``; their loss is the predictor's NLL on the
  selected targets, so a gradient crosses at most ``r`` memory steps and ``K`` targets.

Baselines: the same LSTM trained to predict ``y_t`` from its own state with truncated BPTT of
``r`` steps, or with full BPTT (``r = T``), the loss on every step or (``loss_mask``) on the recall
steps only.

Memory: every activation and gradient of a MemUP update is bounded by the rollout; the detector
scores the sequence :data:`SCORE_CHUNK` steps at a time, so only per-step scalars (the inputs, the
targets, the surprise of each step) grow with ``T``.

Seeding: :func:`train_memup` and :func:`train_tbptt` take a ``seed``, call ``torch.manual_seed(seed)``
before building their models, and draw the training sequences from ``generator(seed,
"memup/train-data")`` (the seed itself) and MemUP's random targets (the ablation) from
``generator(seed, "memup/random-targets")`` (``seed + 7919``), so every method trained from one
seed sees the same sequences.

The notebook's runs (every method at every length, the cached results, the cost of an update and
the tables) are in :mod:`memtutor.experiments.nb07_memup`.

Shape legend: ``B`` batch, ``T`` sequence length, ``P`` prediction steps in a rollout, ``K``
targets per prediction step, ``w`` local-context width, ``D`` memory width, ``C`` classes.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any, NamedTuple, TypedDict

import torch
from torch import nn
from torch.nn import functional as F

from memtutor import utils
from memtutor.utils import check_positive_int, check_tensor, generator, register_seed_offset

__all__ = [
    "ALPHABET",
    "FILLER",
    "RECALL",
    "PAD",
    "VOCAB",
    "N_CLASSES",
    "ECHO",
    "NOISY_VOCAB",
    "MemUPConfig",
    "TRAIN_DATA_SEED",
    "RANDOM_TARGETS_SEED",
    "memup_copy_task",
    "NoisyCopy",
    "noisy_copy_task",
    "surprise_given_memory",
    "NOISY_DETECTORS",
    "train_noisy_memup",
    "recall_mask",
    "filler_schedule",
    "local_windows",
    "LocalContext",
    "Detector",
    "surprise",
    "surprise_from_windows",
    "SCORE_CHUNK",
    "score_steps",
    "select_targets",
    "rollout_targets",
    "RolloutTargets",
    "select_random_targets",
    "gather_steps",
    "MemoryLSTM",
    "init_forget_bias",
    "Predictor",
    "RecurrentClassifier",
    "MemUPRollout",
    "RunForward",
    "rollouts",
    "detach_state",
    "ema_update",
    "memup_rollout_loss",
    "memup_update",
    "make_memup",
    "train_memup",
    "tbptt_update",
    "train_tbptt",
    "EVAL_CHUNK",
    "outputs_at",
    "memup_logits",
    "recurrent_logits",
    "recall_accuracy",
    "MemUPNets",
    "build_memup",
    "build_recurrent",
]

#: Head symbols are 0..7 (the alphabet), 8 is the filler input, 9 the recall cue, 10 pads the
#: local window before the sequence starts.
ALPHABET = 8
FILLER = 8
RECALL = 9
PAD = 10
VOCAB = 11
#: Output classes: the 8 symbols and "blank" (8), the target everywhere except the recall steps.
N_CLASSES = ALPHABET + 1
BLANK = ALPHABET
#: The noisy copy task's echo cue (:func:`noisy_copy_task`), and the vocabulary of its models.
ECHO = 11
NOISY_VOCAB = 12
#: Seed purposes (see the module docstring): the training sequences, and the random targets of
#: the ablation, drawn from a generator of their own so that both selections see the same data.
TRAIN_DATA_SEED = register_seed_offset("memup/train-data", 0)
RANDOM_TARGETS_SEED = register_seed_offset("memup/random-targets", 7_919)


@dataclass(frozen=True)
class MemUPConfig:
    """Every knob of the copy-task experiments (CPU-scale defaults)."""

    n_head: int = 3
    """H: head symbols to remember (the paper's copy task uses 10)."""
    n_filler: int = 1000
    """L: filler steps between the head and the recall; dependency length is L + 2H."""
    rollout: int = 20
    """r: steps per rollout; a gradient never crosses more than r memory steps."""
    k: int = 3
    """K: targets selected per prediction step."""
    pred_every: int = 5
    """A prediction step every this many steps of a rollout (the authors use 10)."""
    window: int = 8
    """w: width of the local context c_k (last w inputs); must exceed H to locate a recall step."""
    hidden: int = 64
    """D: memory LSTM width."""
    embed: int = 16
    """Input embedding width."""
    batch: int = 64
    """Sequences per batch."""
    batches: int = 300
    """Batches of fresh sequences to train on (each gives T / r optimiser steps)."""
    lr: float = 1e-3
    """Adam learning rate (memory, predictor, detector). At 3e-3 MemUP stalls on some seeds with
    one head symbol remembered (accuracy ~0.43); 1e-3 learned all three on every seed tried."""
    clip: float = 1.0
    """Gradient-norm clip."""
    forget_bias: float = 1.0
    """Initial forget-gate bias of the memory LSTM (Gers et al. 2000; Jozefowicz et al. 2015)."""
    ema_decay: float = 0.9
    """Decay of the detector's slowly averaged copy that scores the steps."""
    warmup_batches: int = 0
    """A length curriculum: the first ``warmup_batches`` of the ``batches`` use ``warmup_filler``
    fillers (0: none). Every method trained from a config sees the same schedule."""
    warmup_filler: int = 100
    """L of the warm-up batches (ignored when ``n_filler`` is not longer)."""
    selection: str = "topk"
    """'topk' (MemUP) or 'random' (the ablation: K random future steps)."""

    def __post_init__(self):
        for name in (
            "n_head",
            "n_filler",
            "rollout",
            "k",
            "pred_every",
            "window",
            "hidden",
            "embed",
            "batch",
            "batches",
        ):
            check_positive_int(getattr(self, name), name)
        if self.window <= self.n_head:
            raise ValueError(
                f"window must exceed n_head to locate a recall step, got window={self.window}, n_head={self.n_head}"
            )
        if self.rollout > self.length:
            raise ValueError(f"sequence length {self.length} is shorter than one rollout (rollout={self.rollout})")
        check_positive_int(self.warmup_filler, "warmup_filler")
        if not (isinstance(self.warmup_batches, int) and 0 <= self.warmup_batches <= self.batches):
            raise ValueError(
                f"warmup_batches must be an int in [0, batches={self.batches}], got {self.warmup_batches!r}"
            )
        if self.warmup_batches and self.warmup_filler + 2 * self.n_head < self.rollout:
            raise ValueError(
                f"warm-up sequences ({self.warmup_filler + 2 * self.n_head} steps) are "
                f"shorter than one rollout (rollout={self.rollout})"
            )
        if self.selection not in ("topk", "random"):
            raise ValueError(f"selection must be 'topk' or 'random', got {self.selection!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if not (self.lr > 0 and self.clip > 0):
            raise ValueError(f"lr and clip must be > 0, got lr={self.lr}, clip={self.clip}")

    @property
    def length(self) -> int:
        """T = H + L + H."""
        return 2 * self.n_head + self.n_filler


# ----------------------------------------------------------------------------- the copy task


def memup_copy_task(
    batch: int, n_head: int, n_filler: int, generator: torch.Generator, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample copy-task sequences.

    Returns ``x`` (B, T) inputs: H symbols in 0..7, L fillers (8), H recall cues (9); and ``y``
    (B, T) targets: blank (8) everywhere except the last H steps, which repeat the head.
    """
    batch = check_positive_int(batch, "batch")
    n_head = check_positive_int(n_head, "n_head")
    n_filler = check_positive_int(n_filler, "n_filler")
    head = torch.randint(0, ALPHABET, (batch, n_head), generator=generator)  # (B, H)
    x = torch.full((batch, 2 * n_head + n_filler), FILLER, dtype=torch.long)
    x[:, :n_head] = head
    x[:, -n_head:] = RECALL
    y = torch.full_like(x, BLANK)
    y[:, -n_head:] = head
    return x.to(device), y.to(device)


def recall_mask(n_head: int, n_filler: int, device=None) -> torch.Tensor:
    """(T,) bool, True at the H recall steps."""
    n_head = check_positive_int(n_head, "n_head")
    n_filler = check_positive_int(n_filler, "n_filler")
    mask = torch.zeros(2 * n_head + n_filler, dtype=torch.bool, device=device)
    mask[-n_head:] = True
    return mask


@dataclass(frozen=True)
class NoisyCopy:
    """The noise of :func:`noisy_copy_task`: ``n_noise`` echo pairs in the fillers."""

    n_noise: int = 8
    """Noise symbols per sequence, each asked back once."""
    delay: int = 10
    """Steps from a noise symbol to its echo cue (longer than the detector's window hides it)."""

    def __post_init__(self):
        check_positive_int(self.n_noise, "n_noise")
        check_positive_int(self.delay, "delay")

    def check_fits(self, n_filler: int) -> None:
        """Raise ``ValueError`` unless ``n_filler`` fillers hold ``n_noise`` slots of ``delay + 1`` steps."""
        if n_filler // self.n_noise < self.delay + 1:
            raise ValueError(
                f"{self.n_noise} noise pairs {self.delay} steps apart need n_filler >= "
                f"{self.n_noise * (self.delay + 1)}, got {n_filler}"
            )


def noisy_copy_task(
    batch: int,
    n_head: int,
    n_filler: int,
    noise: NoisyCopy,
    generator: torch.Generator,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The copy task with surprising but irrelevant steps: echoes of random noise symbols.

    The fillers are cut into ``noise.n_noise`` equal slots; in each, a random symbol ``s`` (0..7)
    replaces a filler at a random step ``p`` of the slot, and ``noise.delay`` steps later the
    input is the echo cue (:data:`ECHO`) and the target is ``s``. Head, recall and every other
    step are as in :func:`memup_copy_task` (same head for the same generator state). Returns ``x``
    and ``y``, both (B, T) with T = 2H + L.
    """
    batch = check_positive_int(batch, "batch")
    n_head = check_positive_int(n_head, "n_head")
    n_filler = check_positive_int(n_filler, "n_filler")
    noise.check_fits(n_filler)
    x, y = memup_copy_task(batch, n_head, n_filler, generator)
    slot = n_filler // noise.n_noise
    offset = torch.randint(0, slot - noise.delay, (batch, noise.n_noise), generator=generator)  # (B, N)
    source = n_head + slot * torch.arange(noise.n_noise) + offset  # (B, N) steps of the noise symbols
    symbol = torch.randint(0, ALPHABET, (batch, noise.n_noise), generator=generator)  # (B, N)
    echo = source + noise.delay  # (B, N), inside the same slot
    x.scatter_(1, source, symbol)
    x.scatter_(1, echo, ECHO)
    y.scatter_(1, echo, symbol)
    return x.to(device), y.to(device)


def local_windows(x: torch.Tensor, window: int) -> torch.Tensor:
    """The local context of every step: (B, T) inputs -> (B, T, w), ``[..., -1]`` is x_t itself.

    Steps before the sequence start are PAD.
    """
    check_tensor(x, "x", ndim=2)
    window = check_positive_int(window, "window")
    padded = F.pad(x, (window - 1, 0), value=PAD)  # (B, T + w - 1)
    return padded.unfold(1, window, 1)  # (B, T, w)


class LocalContext(nn.Module):
    """c_k: an embedding of the last w inputs, (..., w) long -> (..., D). No long-term memory."""

    def __init__(self, window: int, embed: int, out: int, vocab: int = VOCAB):
        super().__init__()
        self.window = check_positive_int(window, "window")
        self.emb = nn.Embedding(check_positive_int(vocab, "vocab"), embed)
        self.proj = nn.Linear(window * embed, out)

    def forward(self, win: torch.Tensor) -> torch.Tensor:
        e = self.emb(win).flatten(-2)  # (..., w * E)
        return torch.relu(self.proj(e))  # (..., D)


class Detector(nn.Module):
    """d_psi: predicts y_k from c_k alone; its cross-entropy is the surprise of step k."""

    def __init__(self, window: int = 8, embed: int = 16, hidden: int = 64, vocab: int = VOCAB):
        super().__init__()
        self.context = LocalContext(window, embed, hidden, vocab)
        self.head = nn.Linear(hidden, N_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T) inputs -> (B, T, C) logits."""
        return self.forward_windows(local_windows(x, self.context.window))

    def forward_windows(self, win: torch.Tensor) -> torch.Tensor:
        """(B, T, w) local windows (:func:`local_windows`) -> (B, T, C) logits."""
        return self.head(self.context(win))


def surprise(detector: Detector, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-step surprise -log p_psi(y_k | c_k): (B, T) inputs and targets -> (B, T)."""
    check_tensor(y, "y", shape=tuple(x.shape))
    return surprise_from_windows(detector, local_windows(x, detector.context.window), y)


def surprise_from_windows(detector: Detector, windows: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """:func:`surprise` from precomputed windows (B, T, w) and targets (B, T) -> (B, T).

    A slice ``windows[:, a:b]`` of a whole sequence's windows keeps the real inputs before step
    ``a``; windows built from the chunk ``x[:, a:b]`` alone would pad them.
    """
    check_tensor(windows, "windows", ndim=3)
    check_tensor(y, "y", shape=tuple(windows.shape[:2]))
    logits = detector.forward_windows(windows)  # (B, T, C)
    return F.cross_entropy(logits.transpose(1, 2), y, reduction="none")  # (B, T)


#: Steps the detector scores at once in :func:`score_steps`: its activations are
#: (B, SCORE_CHUNK, D) whatever the sequence length.
SCORE_CHUNK = 256


@torch.no_grad()
def score_steps(detector: Detector, windows: torch.Tensor, y: torch.Tensor, chunk: int = SCORE_CHUNK) -> torch.Tensor:
    """:func:`surprise_from_windows` without a graph, ``chunk`` steps at a time: (B, T, w) windows
    and (B, T) targets -> (B, T) surprise. Only the (B, T) result grows with T."""
    chunk = check_positive_int(chunk, "chunk")
    check_tensor(windows, "windows", ndim=3)
    parts = [
        surprise_from_windows(detector, windows[:, s : s + chunk], y[:, s : s + chunk])
        for s in range(0, windows.shape[1], chunk)
    ]
    return torch.cat(parts, 1)


@torch.no_grad()
def surprise_given_memory(
    memory: MemoryLSTM,
    predictor: Predictor,
    x: torch.Tensor,
    windows: torch.Tensor,
    y: torch.Tensor,
    chunk: int = SCORE_CHUNK,
) -> torch.Tensor:
    """The authors' detector: surprise *given the memory*, ``-log q_phi(y_k | m_k, c_k)``.

    The memory runs over ``x`` (B, T), ``chunk`` steps at a time with its state carried on, and the
    predictor reads each step's own state ``m_k`` and window ``c_k`` (``windows`` (B, T, w)).
    Called with slowly averaged (EMA) copies of the memory and predictor being trained, a step whose
    outcome the memory already explains scores low. -> (B, T), no graph.
    """
    check_tensor(x, "x", ndim=2)
    check_tensor(windows, "windows", ndim=3)
    check_tensor(y, "y", shape=tuple(x.shape))
    chunk = check_positive_int(chunk, "chunk")
    parts, state = [], None
    for s in range(0, x.shape[1], chunk):
        h, state = memory(x[:, s : s + chunk], state)  # (B, n, D): m_k after reading step k
        logits = predictor(h, windows[:, s : s + chunk].unsqueeze(2)).squeeze(2)  # (B, n, C)
        parts.append(F.cross_entropy(logits.transpose(1, 2), y[:, s : s + chunk], reduction="none"))
    return torch.cat(parts, 1)


# ----------------------------------------------------------------------------- target selection


def _future_mask(length: int, steps: torch.Tensor) -> torch.Tensor:
    """(P, T) bool, True where k >= t_p (a step may be its own target)."""
    k = torch.arange(length, device=steps.device)
    return k.unsqueeze(0) >= steps.unsqueeze(1)


def _check_steps(uncertainty, steps, k) -> tuple[torch.Tensor, int]:
    check_tensor(uncertainty, "uncertainty", ndim=2)
    check_tensor(steps, "steps", ndim=1)
    k = check_positive_int(k, "k")
    if steps.numel() and (int(steps.min()) < 0 or int(steps.max()) >= uncertainty.shape[1]):
        raise ValueError(f"steps must lie in [0, {uncertainty.shape[1]}), got {int(steps.min())}..{int(steps.max())}")
    if k > uncertainty.shape[1]:
        raise ValueError(f"k={k} exceeds the sequence length {uncertainty.shape[1]}")
    return steps.long(), k


def select_targets(uncertainty: torch.Tensor, steps: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """MemUP's target selection: for each prediction step t, the K most uncertain steps k >= t.

    Args:
        uncertainty: (B, T) surprise of every step.
        steps: (P,) prediction steps t.
        k: K, targets per prediction step.
    Returns:
        idx (B, P, K) selected steps, in decreasing uncertainty; valid (B, P, K) bool, False where
        fewer than K future steps exist (the entry is then a past step and must be ignored).
    """
    steps, k = _check_steps(uncertainty, steps, k)
    future = _future_mask(uncertainty.shape[1], steps)  # (P, T)
    scores = uncertainty.unsqueeze(1).masked_fill(~future, -math.inf)  # (B, P, T)
    top, idx = scores.topk(k, dim=-1)  # (B, P, K)
    return idx, top > -math.inf


class RolloutTargets(NamedTuple):
    start: int
    local: torch.Tensor
    idx: torch.Tensor
    valid: torch.Tensor
    candidates: torch.Tensor
    pos: torch.Tensor


def rollout_targets(uncertainty: torch.Tensor, rollout: int, k: int, pred_every: int = 1) -> Iterator[RolloutTargets]:
    """:func:`select_targets` for the prediction steps of every rollout, in O(B T (r + K)).

    The K best steps at or after t are among the steps of t's own rollout from t on, and the K best
    steps after that rollout ("the tail"); the tails are built once by a backward scan over
    rollouts, so no step compares itself with the whole future. Yields
    ``(start, local_steps (P,), (idx, valid) each (B, P, K))`` rollout by rollout. With ties the
    chosen indices may differ from :func:`select_targets`, the chosen values do not.
    """
    check_tensor(uncertainty, "uncertainty", ndim=2)
    rollout, k = check_positive_int(rollout, "rollout"), check_positive_int(k, "k")
    pred_every = check_positive_int(pred_every, "pred_every")
    B, T = uncertainty.shape
    dev = uncertainty.device
    if T < rollout:
        raise ValueError(f"sequence length {T} is shorter than one rollout ({rollout})")
    starts = list(range(0, T, rollout))
    tails, tail_v, tail_i = [], uncertainty.new_empty(B, 0), torch.empty(B, 0, dtype=torch.long, device=dev)
    for s in reversed(starts):  # backward scan: tail of rollout j = top-K of everything after it
        tails.append((tail_v, tail_i))
        steps = torch.arange(s, min(s + rollout, T), device=dev).expand(B, -1)
        v, i = torch.cat([uncertainty[:, s : s + rollout], tail_v], 1), torch.cat([steps, tail_i], 1)
        tail_v, pos = v.topk(min(k, v.shape[1]), dim=1)
        tail_i = i.gather(1, pos)
    for s, (tv, ti) in zip(starts, reversed(tails), strict=True):
        n = min(s + rollout, T) - s
        local = torch.arange(0, n, pred_every, device=dev)  # (P,)
        own = torch.arange(n, device=dev)
        past = own.unsqueeze(0) < local.unsqueeze(1)  # (P, n): before t, not a candidate
        cand_v = torch.cat(
            [
                uncertainty[:, s : s + n].unsqueeze(1).masked_fill(past, -math.inf),
                tv.unsqueeze(1).expand(-1, local.numel(), -1),
            ],
            2,
        )  # (B, P, n + K')
        cand_i = torch.cat([(own + s).expand(B, local.numel(), -1), ti.unsqueeze(1).expand(-1, local.numel(), -1)], 2)
        if cand_v.shape[2] < k:  # fewer than K steps left in the whole sequence
            pad = k - cand_v.shape[2]
            cand_v = F.pad(cand_v, (0, pad), value=-math.inf)
            cand_i = F.pad(cand_i, (0, pad), value=s)
        top, pos = cand_v.topk(k, dim=2)  # (B, P, K)
        yield RolloutTargets(s, local, cand_i.gather(2, pos), top > -math.inf, cand_i[:, 0], pos)


def select_random_targets(
    uncertainty: torch.Tensor, steps: torch.Tensor, k: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ablation: K future steps drawn uniformly (without replacement), same shapes as
    :func:`select_targets`; ``uncertainty`` only supplies the shape."""
    steps, k = _check_steps(uncertainty, steps, k)
    B, T = uncertainty.shape
    noise = torch.rand((B, steps.numel(), T), generator=generator).to(uncertainty.device)
    future = _future_mask(T, steps)  # (P, T)
    top, idx = noise.masked_fill(~future, -1.0).topk(k, dim=-1)  # (B, P, K)
    return idx, top >= 0


def gather_steps(values: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """values (B, T, ...) at idx (B, P, K) -> (B, P, K, ...)."""
    B, P, K = idx.shape
    flat = idx.reshape(B, P * K)
    rows = torch.arange(B, device=idx.device).unsqueeze(1)
    return values[rows, flat].reshape(B, P, K, *values.shape[2:])


# ----------------------------------------------------------------------------- memory & predictor


class MemoryLSTM(nn.Module):
    """g_theta: embedding + one LSTM layer; (B, n) inputs and a state -> (B, n, D) states."""

    def __init__(self, embed: int = 16, hidden: int = 64, forget_bias: float = 1.0, vocab: int = VOCAB):
        super().__init__()
        self.emb = nn.Embedding(check_positive_int(vocab, "vocab"), embed)
        self.lstm = nn.LSTM(embed, hidden, batch_first=True)
        init_forget_bias(self.lstm, forget_bias)

    def forward(self, x: torch.Tensor, state=None):
        return self.lstm(self.emb(x), state)


def init_forget_bias(lstm: nn.LSTM, value: float) -> None:
    """Set the forget-gate bias of every layer to ``value`` (torch gate order: i, f, g, o).

    The forget gate multiplies the cell each step: with bias b and small inputs the cell keeps a
    fraction sigmoid(b) per step, sigmoid(b)**n after n steps. b = 0 halves it every step.
    """
    H = lstm.hidden_size
    with torch.no_grad():
        for name, p in lstm.named_parameters():
            if name.startswith("bias_ih"):
                p[H : 2 * H].fill_(value)
            elif name.startswith("bias_hh"):
                p[H : 2 * H].zero_()


class Predictor(nn.Module):
    """q_phi(y_k | m_t, c_k): an MLP on [m_t, c_k], c_k from its own local-context net (same
    width w as the detector's). The first layer is split, W [m; c] = W_m m + W_c c, so that a
    rollout can encode each candidate target once and share it across prediction steps."""

    def __init__(self, window: int = 8, embed: int = 16, hidden: int = 64, vocab: int = VOCAB):
        super().__init__()
        self.context = LocalContext(window, embed, hidden, vocab)
        self.mem_in = nn.Linear(hidden, 2 * hidden)
        self.ctx_in = nn.Linear(hidden, 2 * hidden, bias=False)
        self.out = nn.Linear(2 * hidden, N_CLASSES)

    def forward(self, m: torch.Tensor, win: torch.Tensor) -> torch.Tensor:
        """m (B, P, D) memory states, win (B, P, K, w) target windows -> (B, P, K, C) logits."""
        c = self.ctx_in(self.context(win))  # (B, P, K, 2D)
        return self.out(torch.relu(self.mem_in(m).unsqueeze(2) + c))  # (B, P, K, C)

    def forward_candidates(self, m: torch.Tensor, cand_win: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """The same logits when the targets are ``pos`` (B, P, K) into M candidate windows
        ``cand_win`` (B, M, w): each candidate is encoded once. -> (B, P, K, C)."""
        c = self.ctx_in(self.context(cand_win))  # (B, M, 2D)
        c = gather_steps(c, pos)  # (B, P, K, 2D)
        return self.out(torch.relu(self.mem_in(m).unsqueeze(2) + c))


class RecurrentClassifier(nn.Module):
    """The baselines' model: the same memory LSTM with a linear read-out of y_t from h_t."""

    def __init__(self, embed: int = 16, hidden: int = 64, forget_bias: float = 1.0):
        super().__init__()
        self.memory = MemoryLSTM(embed, hidden, forget_bias)
        self.head = nn.Linear(hidden, N_CLASSES)

    def forward(self, x: torch.Tensor, state=None):
        h, state = self.memory(x, state)  # (B, n, D)
        return self.head(h), state  # (B, n, C)


class MemUPNets(TypedDict):
    """The three networks MemUP trains (a plain dict: ``nets["memory"]``)."""

    detector: Detector
    memory: MemoryLSTM
    predictor: Predictor


def build_memup(cfg: MemUPConfig, vocab: int = VOCAB) -> MemUPNets:
    """Fresh detector, memory and predictor for ``cfg`` (inputs in ``0 .. vocab - 1``)."""
    return {
        "detector": Detector(cfg.window, cfg.embed, cfg.hidden, vocab),
        "memory": MemoryLSTM(cfg.embed, cfg.hidden, cfg.forget_bias, vocab),
        "predictor": Predictor(cfg.window, cfg.embed, cfg.hidden, vocab),
    }


def build_recurrent(cfg: MemUPConfig) -> RecurrentClassifier:
    return RecurrentClassifier(cfg.embed, cfg.hidden, cfg.forget_bias)


# ----------------------------------------------------------------------------- rollouts


class MemUPRollout(NamedTuple):
    """One chunk of :func:`rollouts`: its first step, its outputs (B, n, ...) and the state after it."""

    start: int
    outputs: torch.Tensor
    state: tuple


def detach_state(state):
    """Cut the graph at a rollout boundary: the values go on, the gradient path stops."""
    return None if state is None else tuple(s.detach() for s in state)


def rollouts(step_fn: Callable, inputs: torch.Tensor, rollout: int, state=None) -> Iterator[MemUPRollout]:
    """Run ``step_fn(chunk, state) -> (outputs, state)`` over ``inputs`` (B, T, ...) in chunks of
    ``rollout`` steps, detaching the state carried into each chunk (truncated BPTT).

    Yields ``MemUPRollout(start, outputs (B, n, ...), state)``; the caller back-propagates each chunk's
    loss before asking for the next one.
    """
    check_tensor(inputs, "inputs", finite=False)
    rollout = check_positive_int(rollout, "rollout")
    T = inputs.shape[1]
    if T < rollout:
        raise ValueError(f"sequence length {T} is shorter than one rollout ({rollout})")
    for start in range(0, T, rollout):
        # The carried state is a value from the previous chunk, not a path for gradients.
        out, state = step_fn(inputs[:, start : start + rollout], detach_state(state))
        yield MemUPRollout(start, out, state)


@torch.no_grad()
def ema_update(target: nn.Module, source: nn.Module, decay: float) -> None:
    """target <- decay * target + (1 - decay) * source, parameter by parameter."""
    for pt, ps in zip(target.parameters(), source.parameters(), strict=True):
        pt.lerp_(ps, 1.0 - decay)


def memup_rollout_loss(
    predictor: Predictor,
    h: torch.Tensor,
    windows: torch.Tensor,
    y: torch.Tensor,
    idx_valid: tuple[torch.Tensor, torch.Tensor],
    local_steps: torch.Tensor,
) -> torch.Tensor:
    """The predictor's NLL on the selected targets of one rollout.

    Args:
        h: (B, n, D) memory states of one rollout.
        windows: (B, T, w) local windows of the whole sequence; y: (B, T) targets.
        idx_valid: (idx, valid), each (B, P, K), from the target selector.
        local_steps: (P,) prediction steps, relative to ``start``.
    """
    idx, valid = idx_valid
    m = h[:, local_steps]  # (B, P, D)
    logits = predictor(m, gather_steps(windows, idx))  # (B, P, K, C)
    target = gather_steps(y, idx)  # (B, P, K)
    return F.cross_entropy(logits[valid], target[valid])


# ----------------------------------------------------------------------------- training


def _clip_step(opt: torch.optim.Optimizer, params, clip: float) -> None:
    torch.nn.utils.clip_grad_norm_(params, clip)
    opt.step()


def _call(fn: Callable[[], torch.Tensor]) -> torch.Tensor:
    return fn()


#: How an update runs the forward pass of each rollout: ``run_forward(loss_fn) -> loss``. The
#: default calls it; a cost measurement passes one that also counts what autograd saves.
RunForward = Callable[[Callable[[], torch.Tensor]], torch.Tensor]


def memup_update(
    nets: MemUPNets,
    det_ema: Detector | None,
    opts: dict[str, torch.optim.Optimizer],
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: MemUPConfig,
    generator: torch.Generator | None = None,
    run_forward: RunForward | None = None,
    *,
    scorer: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    target_mask: torch.Tensor | None = None,
    current_step_opt: torch.optim.Optimizer | None = None,
) -> dict[str, float]:
    """One MemUP pass over a batch of sequences (B, T), with an optimiser step per rollout.

    1. The EMA detector scores every step (no graph: it only ranks steps), :data:`SCORE_CHUNK`
       steps at a time, so its activations do not grow with T.
    2. The memory runs rollout by rollout from the detached carried state; for each rollout the
       predictor's NLL on the selected targets of its prediction steps is back-propagated through
       at most r memory steps and K targets, and applied. The detector takes a step on the same
       r-step chunk, so nothing in the update builds a graph longer than a rollout.

    ``generator`` draws the random targets of ``cfg.selection == 'random'``; ``run_forward`` runs
    each rollout's loss closure (see :data:`RunForward`). ``scorer(x, windows, y) -> (B, T)``
    replaces the detector (e.g. :func:`surprise_given_memory` of EMA copies); the detector then
    takes no step (``det_ema`` may be None). ``current_step_opt`` (an optimiser of the predictor
    alone): after each memory step, the predictor takes a step on current-step targets, every
    step ``k`` of the rollout predicted from its own state ``m_k`` (detached: the memory is frozen
    for it), as the authors' code trains the predictor whose EMA copy scores surprise given the
    memory; reported as ``current_loss``. ``target_mask`` (B, T) bool: also report
    ``target_share``, the fraction of the selected targets that lie in it, and ``first_share``,
    the same for the targets of the first rollout's prediction steps. Returns the mean
    losses and ``steps``, the optimiser steps taken (one per rollout).
    """
    run_forward = run_forward or _call
    windows = local_windows(x, cfg.window)  # (B, T, w), a view of x built once for detector and predictor
    if scorer is None:
        if det_ema is None:
            raise ValueError("memup_update needs det_ema or a scorer")
        u = score_steps(det_ema, windows, y)  # (B, T), chunk by chunk: no (B, T, D) activations
    else:
        u = scorer(x, windows, y)
        check_tensor(u, "scorer output", shape=tuple(x.shape))
    if target_mask is not None:
        check_tensor(target_mask, "target_mask", shape=tuple(x.shape), finite=False)
    hits, chosen, first_hits, first_chosen = 0, 0, 0, 0
    cur_losses = []
    mem_params = list(nets["memory"].parameters()) + list(nets["predictor"].parameters())
    mem_losses, det_losses = [], []
    state = None
    for tg in rollout_targets(u, cfg.rollout, cfg.k, cfg.pred_every):
        start, local = tg.start, tg.local
        # Copies, not views: a saved view would keep the whole (B, T) storage alive.
        xs = x[:, start : start + cfg.rollout].contiguous()  # (B, n)
        ys = y[:, start : start + cfg.rollout].contiguous()
        carried = detach_state(state)  # values go on, gradients stop at the rollout boundary
        h_rollout: torch.Tensor | None = None
        sel = None
        if cfg.selection == "random":  # the ablation: same steps t, random future targets
            sel = select_random_targets(u, local + start, cfg.k, generator)
        if target_mask is not None:
            idx, valid = (tg.idx, tg.valid) if sel is None else sel
            hits += int((gather_steps(target_mask, idx) & valid).sum())
            chosen += int(valid.sum())
            if start == 0:  # the first rollout: the only one that sees a head of H < r symbols
                first_hits, first_chosen = hits, chosen

        def rollout_loss(xs=xs, carried=carried, sel=sel, tg=tg) -> torch.Tensor:
            nonlocal state, h_rollout
            h, state = nets["memory"](xs, carried)  # (B, n, D)
            h_rollout = h
            if sel is not None:
                return memup_rollout_loss(nets["predictor"], h, windows, y, sel, tg.local)
            # Same loss as memup_rollout_loss, each candidate target encoded once.
            cand_win = gather_steps(windows, tg.candidates.unsqueeze(1)).squeeze(1)  # (B, M, w)
            logits = nets["predictor"].forward_candidates(h[:, tg.local], cand_win, tg.pos)
            target = gather_steps(y, tg.idx)  # (B, P, K)
            return F.cross_entropy(logits[tg.valid], target[tg.valid])

        loss = run_forward(rollout_loss)
        opts["memory"].zero_grad()
        loss.backward()
        _clip_step(opts["memory"], mem_params, cfg.clip)
        mem_losses.append(loss.item())
        # The rollout's r steps with their real windows (windows of the chunk alone would pad its
        # first w - 1 steps, unlike the windows the steps are scored on).
        det_win = windows[:, start : start + cfg.rollout].contiguous()  # (B, n, w)
        if current_step_opt is not None:
            assert h_rollout is not None
            m_k = h_rollout.detach()  # (B, n, D), the memory frozen for this step

            def current_loss(m_k=m_k, det_win=det_win, ys=ys) -> torch.Tensor:
                logits = nets["predictor"](m_k, det_win.unsqueeze(2)).squeeze(2)  # (B, n, C)
                return F.cross_entropy(logits.transpose(1, 2), ys)

            cur = run_forward(current_loss)
            current_step_opt.zero_grad()
            cur.backward()
            _clip_step(current_step_opt, nets["predictor"].parameters(), cfg.clip)
            cur_losses.append(cur.item())
        if scorer is not None:  # no detector network to train
            continue

        # The detector learns on the same r steps, each with its real window.
        def detector_loss(det_win=det_win, ys=ys) -> torch.Tensor:
            return surprise_from_windows(nets["detector"], det_win, ys).mean()

        det_loss = run_forward(detector_loss)
        opts["detector"].zero_grad()
        det_loss.backward()
        _clip_step(opts["detector"], nets["detector"].parameters(), cfg.clip)
        det_losses.append(det_loss.item())
    out = {"loss": sum(mem_losses) / len(mem_losses), "steps": len(mem_losses)}
    if scorer is None:
        assert det_ema is not None
        ema_update(det_ema, nets["detector"], cfg.ema_decay)
        out["detector_loss"] = sum(det_losses) / len(det_losses)
    if target_mask is not None:
        out["target_share"] = hits / max(chosen, 1)
        out["first_share"] = first_hits / max(first_chosen, 1)
    if cur_losses:
        out["current_loss"] = sum(cur_losses) / len(cur_losses)
    return out


def filler_schedule(cfg: MemUPConfig) -> list[int]:
    """Fillers L of each of the ``cfg.batches`` training batches: ``warmup_filler`` for the first
    ``warmup_batches`` when that is shorter than ``n_filler`` (the curriculum), then ``n_filler``."""
    warm = cfg.warmup_filler < cfg.n_filler
    return [cfg.warmup_filler if warm and i < cfg.warmup_batches else cfg.n_filler for i in range(cfg.batches)]


def make_memup(
    cfg: MemUPConfig, device: torch.device | str = "cpu", vocab: int = VOCAB
) -> tuple[MemUPNets, Detector, dict[str, torch.optim.Optimizer]]:
    """Fresh nets, the detector's EMA copy and the optimisers for ``cfg``."""
    nets = build_memup(cfg, vocab)
    for net in (nets["detector"], nets["memory"], nets["predictor"]):
        net.to(device)  # in place
    det_ema = copy.deepcopy(nets["detector"]).requires_grad_(False)
    mem_params = list(nets["memory"].parameters()) + list(nets["predictor"].parameters())
    opts: dict[str, torch.optim.Optimizer] = {
        "memory": torch.optim.Adam(mem_params, lr=cfg.lr),
        "detector": torch.optim.Adam(nets["detector"].parameters(), lr=cfg.lr),
    }
    return nets, det_ema, opts


def train_memup(cfg: MemUPConfig, seed: int, *, progress: bool = False, device: torch.device | str = "cpu") -> dict:
    """Train detector, memory and predictor with MemUP on ``cfg.batches`` fresh batches.

    ``seed`` sets the initial weights and the training sequences (see the module docstring);
    ``cfg.selection`` chooses the targets. Returns the state dicts and the loss histories
    (tensors), ready for ``load_or_train``.
    """
    torch.manual_seed(seed)  # the initial weights
    nets, det_ema, opts = make_memup(cfg, device)
    data_gen = generator(seed, TRAIN_DATA_SEED)
    # Random targets come from a generator of their own, so that top-K and random-target runs of
    # one seed see exactly the same training sequences.
    select_gen = generator(seed, RANDOM_TARGETS_SEED)
    mem_loss, det_loss = [], []
    for n_filler in utils.progress(filler_schedule(cfg), enabled=progress, desc=f"MemUP ({cfg.selection})"):
        x, y = memup_copy_task(cfg.batch, cfg.n_head, n_filler, data_gen, device)
        out = memup_update(nets, det_ema, opts, x, y, cfg, select_gen)
        mem_loss.append(out["loss"])
        det_loss.append(out["detector_loss"])
    result: dict[str, Any] = {name: nets[name].state_dict() for name in ("detector", "memory", "predictor")}
    result["detector_ema"] = det_ema.state_dict()
    result["memup_loss"] = torch.tensor(mem_loss)
    result["detector_loss"] = torch.tensor(det_loss)
    return result


#: The target selections compared on the noisy copy task: the memory-less detector of the paper
#: ('local'), the authors' code's surprise given the memory ('memory'), random targets, and the two
#: controls that separate the two differences between 'local' and 'memory': the memory-less
#: detector plus the predictor's current-step step ('local_step'), and surprise given the memory
#: without it ('memory_nostep').
NOISY_DETECTORS = ("local", "memory", "random", "local_step", "memory_nostep")


def _zero_scores(x: torch.Tensor, windows: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.zeros(x.shape, device=x.device)  # random targets only need the shape


def train_noisy_memup(
    cfg: MemUPConfig,
    noise: NoisyCopy,
    detector: str,
    seed: int,
    *,
    progress: bool = False,
    device: torch.device | str = "cpu",
) -> dict:
    """MemUP on :func:`noisy_copy_task` sequences, the targets selected by ``detector``:

    * ``'local'``: the memory-less detector ``-log p_psi(y_k | c_k)`` (as :func:`train_memup`);
    * ``'memory'``: :func:`surprise_given_memory` of EMA copies (decay ``cfg.ema_decay``, one
      update per batch) of the memory and predictor being trained; no detector network: in its
      place the predictor takes a step on current-step targets after each memory step (its own
      Adam, ``cfg.lr``), as in the authors' code;
    * ``'random'``: K random future steps;
    * ``'local_step'``: as ``'local'``, plus the predictor's current-step step of ``'memory'``
      after each memory step (its own Adam): ``'memory'`` with the memory-less detector's scores;
    * ``'memory_nostep'``: as ``'memory'`` without the current-step step.

    Every selection takes one optimiser step per rollout on the same ``cfg.batches`` batches from
    ``seed`` (initial weights, data and random targets seeded as in :func:`train_memup`); no
    length curriculum (``cfg.warmup_batches`` must be 0). Returns the state dicts, ``loss`` and
    ``recall_share`` (per batch: the fraction of selected targets that are recall steps),
    ``first_share`` (the same for the first rollout, where the head is) and
    ``seconds`` (training wall time).
    """
    if detector not in NOISY_DETECTORS:
        raise ValueError(f"detector must be one of {NOISY_DETECTORS}, got {detector!r}")
    if cfg.warmup_batches:
        raise ValueError(f"the noisy task has no length curriculum: warmup_batches must be 0, got {cfg.warmup_batches}")
    noise.check_fits(cfg.n_filler)
    cfg = replace(cfg, selection="random" if detector == "random" else "topk")
    torch.manual_seed(seed)  # the initial weights
    nets, det_ema, opts = make_memup(cfg, device, NOISY_VOCAB)
    mem_ema = copy.deepcopy(nets["memory"]).requires_grad_(False)
    pred_ema = copy.deepcopy(nets["predictor"]).requires_grad_(False)
    scorer: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    current_opt = None
    given_memory = detector in ("memory", "memory_nostep")
    if detector in ("memory", "local_step"):  # the predictor's current-step step
        current_opt = torch.optim.Adam(nets["predictor"].parameters(), lr=cfg.lr)
    if given_memory:

        def scorer(x: torch.Tensor, windows: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return surprise_given_memory(mem_ema, pred_ema, x, windows, y)

    elif detector == "random":
        scorer = _zero_scores
    data_gen = generator(seed, TRAIN_DATA_SEED)
    select_gen = generator(seed, RANDOM_TARGETS_SEED)
    recall = recall_mask(cfg.n_head, cfg.n_filler, device).expand(cfg.batch, -1)  # (B, T)
    losses, shares, first, seconds = [], [], [], 0.0
    for _ in utils.progress(range(cfg.batches), enabled=progress, desc=f"MemUP, noisy ({detector})"):
        x, y = noisy_copy_task(cfg.batch, cfg.n_head, cfg.n_filler, noise, data_gen, device)
        with utils.timer() as t:
            out = memup_update(
                nets,
                det_ema,
                opts,
                x,
                y,
                cfg,
                select_gen,
                scorer=scorer,
                target_mask=recall,
                current_step_opt=current_opt,
            )
            if given_memory:
                ema_update(mem_ema, nets["memory"], cfg.ema_decay)
                ema_update(pred_ema, nets["predictor"], cfg.ema_decay)
        seconds += t["seconds"]
        losses.append(out["loss"])
        shares.append(out["target_share"])
        first.append(out["first_share"])
    result: dict[str, Any] = {name: nets[name].state_dict() for name in ("memory", "predictor")}
    if detector in ("local", "local_step"):
        result["detector_ema"] = det_ema.state_dict()
    elif given_memory:
        result["memory_ema"] = mem_ema.state_dict()
        result["predictor_ema"] = pred_ema.state_dict()
    result["loss"] = torch.tensor(losses)
    result["recall_share"] = torch.tensor(shares)
    result["first_share"] = torch.tensor(first)
    result["seconds"] = seconds
    return result


def tbptt_update(
    model: RecurrentClassifier,
    opt: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    rollout: int,
    clip: float,
    run_forward: RunForward | None = None,
    loss_mask: torch.Tensor | None = None,
) -> dict[str, float]:
    """One pass of the baseline over a batch (B, T): cross-entropy of y_t from h_t,
    back-propagated within rollouts of ``rollout`` steps (T gives full BPTT), a step per rollout.

    ``loss_mask`` (T,) bool restricts the loss to its steps (e.g. :func:`recall_mask`); a rollout
    without any of them runs without a graph and takes no optimiser step. By default every step
    counts. ``run_forward`` as in :func:`memup_update`. Returns the mean loss and ``steps``, the
    optimiser steps taken.
    """
    rollout = check_positive_int(rollout, "rollout")
    if x.shape[1] < rollout:
        raise ValueError(f"sequence length {x.shape[1]} is shorter than one rollout ({rollout})")
    if loss_mask is not None:
        check_tensor(loss_mask, "loss_mask", shape=(x.shape[1],), finite=False)
        if loss_mask.dtype != torch.bool or not bool(loss_mask.any()):
            raise ValueError("loss_mask must be a bool tensor with at least one True step")
    run_forward = run_forward or _call
    losses, state = [], None
    for start in range(0, x.shape[1], rollout):
        xs = x[:, start : start + rollout].contiguous()  # (B, n); a copy, see memup_update
        ys = y[:, start : start + rollout].contiguous()
        carried = detach_state(state)  # truncation: the value goes on, the gradient stops
        keep = None if loss_mask is None else loss_mask[start : start + rollout]  # (n,)
        if keep is not None and not bool(keep.any()):  # no loss here: carry the state on, no step
            with torch.no_grad():
                _, state = model(xs, carried)
            continue

        def rollout_loss(xs=xs, ys=ys, carried=carried, keep=keep) -> torch.Tensor:
            nonlocal state
            logits, state = model(xs, carried)  # (B, n, C)
            if keep is not None:
                logits, ys = logits[:, keep], ys[:, keep]
            return F.cross_entropy(logits.transpose(1, 2), ys)

        loss = run_forward(rollout_loss)
        opt.zero_grad()
        loss.backward()
        _clip_step(opt, model.parameters(), clip)
        losses.append(loss.item())
    return {"loss": sum(losses) / len(losses), "steps": len(losses)}


def train_tbptt(
    cfg: MemUPConfig,
    seed: int,
    *,
    rollout: int | None = None,
    progress: bool = False,
    device: torch.device | str = "cpu",
) -> dict:
    """Baseline: the LSTM predicts y_t from h_t, cross-entropy on every step, truncated BPTT of
    ``rollout`` steps (``cfg.rollout`` by default; the sequence length gives full BPTT).
    One optimiser step per rollout; ``seed`` gives the same batches as :func:`train_memup`."""
    rollout = cfg.rollout if rollout is None else check_positive_int(rollout, "rollout")
    torch.manual_seed(seed)  # the initial weights
    model = build_recurrent(cfg).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    data_gen = generator(seed, TRAIN_DATA_SEED)
    hist = []
    for n_filler in utils.progress(filler_schedule(cfg), enabled=progress, desc=f"BPTT (r={rollout})"):
        x, y = memup_copy_task(cfg.batch, cfg.n_head, n_filler, data_gen, device)
        # full BPTT (rollout = cfg.length) covers a whole warm-up sequence in one rollout
        hist.append(tbptt_update(model, opt, x, y, min(rollout, x.shape[1]), cfg.clip)["loss"])
    out = model.state_dict()
    out["loss"] = torch.tensor(hist)
    return out


# ----------------------------------------------------------------------------- evaluation


#: Steps of a sequence that the evaluation runs through a network at once (:func:`outputs_at`).
EVAL_CHUNK = 256


@torch.no_grad()
def outputs_at(run: Callable, x: torch.Tensor, steps: torch.Tensor, chunk: int = EVAL_CHUNK) -> torch.Tensor:
    """The outputs of a recurrent ``run(x_chunk, state) -> (outputs (B, n, ...), state)`` at ``steps``
    (S,) of the inputs ``x`` (B, T), running ``chunk`` steps at a time with the state carried on, so
    that only (B, chunk, ...) outputs exist at once whatever T. -> (B, S, ...)."""
    check_tensor(x, "x", ndim=2)
    check_tensor(steps, "steps", ndim=1)
    chunk = check_positive_int(chunk, "chunk")
    T = x.shape[1]
    if steps.numel() and (int(steps.min()) < 0 or int(steps.max()) >= T):
        raise ValueError(f"steps must lie in [0, {T}), got {int(steps.min())}..{int(steps.max())}")
    out: torch.Tensor | None = None
    state = None
    for start in range(0, T, chunk):
        h, state = run(x[:, start : start + chunk], state)  # (B, n, ...)
        inside = ((steps >= start) & (steps < start + h.shape[1])).nonzero().squeeze(1)
        if out is None:
            out = h.new_empty(h.shape[0], steps.numel(), *h.shape[2:])
        out[:, inside] = h[:, steps[inside] - start]
    assert out is not None
    return out


@torch.no_grad()
def memup_logits(memory: MemoryLSTM, predictor: Predictor, x: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """Online prediction at ``steps`` (S,): the predictor reads m_k (the memory after step k)
    and c_k. (B, T) inputs -> (B, S, C) logits."""
    m = outputs_at(memory, x, steps)  # (B, S, D), the memory run EVAL_CHUNK steps at a time
    win = local_windows(x, predictor.context.window)[:, steps]  # (B, S, w)
    return predictor(m, win.unsqueeze(2)).squeeze(2)  # (B, S, C)


@torch.no_grad()
def recurrent_logits(model: RecurrentClassifier, x: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """The baseline's read-out at ``steps``: (B, T) -> (B, S, C)."""
    return outputs_at(model, x, steps)


def recall_accuracy(logits: torch.Tensor, target: torch.Tensor) -> float:
    """Fraction of recall steps right: logits (B, S, C), target (B, S)."""
    check_tensor(logits, "logits", ndim=3)
    check_tensor(target, "target", shape=tuple(logits.shape[:2]))
    return (logits.argmax(-1) == target).float().mean().item()
