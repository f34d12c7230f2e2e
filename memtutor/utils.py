"""Shared helpers: seeding, thread count, device choice, cached training, input checks.

Every notebook starts with::

    from memtutor.utils import seed_everything, set_threads, default_device
    set_threads()          # 1 thread unless MEMTUTOR_THREADS says otherwise
    seed_everything(0)
    device = default_device()

Why a thread helper: on a 2-core laptop torch's default of 2 intra-op threads can *stall*
small operations (a MAML step measured 140-300 ms at 2 threads, 4 ms at 1). The tutorial's
tensors are small, so one thread is the sane default; ``benchmarks/`` time both.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "seed_everything",
    "set_threads",
    "default_device",
    "load_or_train",
    "checkpoint_dir",
    "timer",
    "check_tensor",
    "check_positive_int",
]

#: Environment variable read by :func:`set_threads` when no count is given.
THREADS_ENV = "MEMTUTOR_THREADS"


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python's ``random``, NumPy and torch (CPU and every CUDA device).

    Returns a fresh ``torch.Generator`` seeded with ``seed`` for code that prefers an explicit
    generator over the global one (all of memtutor's data generators accept one).
    """
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise ValueError(f"seed must be an int, got {type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device
    return torch.Generator().manual_seed(seed)


def set_threads(n: int | None = None) -> int:
    """Set torch's intra-op thread count; default ``$MEMTUTOR_THREADS`` or 1. Returns it."""
    if n is None:
        raw = os.environ.get(THREADS_ENV, "1")
        try:
            n = int(raw)
        except ValueError as exc:
            raise ValueError(f"{THREADS_ENV} must be an integer, got {raw!r}") from exc
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise ValueError(f"thread count must be an int >= 1, got {n!r}")
    torch.set_num_threads(int(n))
    return torch.get_num_threads()


def default_device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def checkpoint_dir() -> Path:
    """``notebooks/checkpoints`` of the repository (created if missing).

    Small cached results (state dicts, result tables) live here and are committed, so the
    default run of a notebook loads instead of training.
    """
    root = Path(__file__).resolve().parents[1]
    path = root / "notebooks" / "checkpoints"
    path.mkdir(parents=True, exist_ok=True)
    return path


def load_or_train(
    path: str | os.PathLike,
    train_fn: Callable[[], Mapping],
    *,
    retrain: bool = False,
    map_location: str | torch.device | None = "cpu",
) -> dict:
    """Load a cached state dict from ``path``, or call ``train_fn()`` and save what it returns.

    ``train_fn`` must return a mapping of tensors and plain Python values (a ``state_dict`` or a
    dict of them, result tables as tensors); it is saved with ``torch.save`` and read back with
    ``torch.load(..., weights_only=True)``, so nothing but tensors and primitive containers is
    ever unpickled. ``retrain=True`` ignores (and overwrites) an existing file.
    """
    path = Path(path)
    if path.exists() and not retrain:
        return torch.load(path, map_location=map_location, weights_only=True)
    state = train_fn()
    if not isinstance(state, Mapping):
        raise ValueError(f"train_fn must return a mapping (a state dict), got {type(state).__name__}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(dict(state), tmp)
    os.replace(tmp, path)
    # Read it back the same way a later run will, so a train run and a cached run see the same object.
    return torch.load(path, map_location=map_location, weights_only=True)


@contextmanager
def timer() -> Iterator[dict]:
    """``with timer() as t: ...`` then ``t["seconds"]`` holds the wall time."""
    out: dict = {}
    start = time.perf_counter()
    try:
        yield out
    finally:
        out["seconds"] = time.perf_counter() - start


def check_positive_int(value, name: str) -> int:
    """Return ``value`` as an int, or raise ``ValueError`` unless it is an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


def check_tensor(
    x,
    name: str,
    *,
    ndim: int | None = None,
    shape: tuple | None = None,
    finite: bool = True,
) -> torch.Tensor:
    """Validate a tensor argument and return it.

    ``shape`` may contain ``None`` for a free dimension. Raises ``ValueError`` naming ``name``
    when ``x`` is not a tensor, has the wrong rank or shape, or holds NaN/inf (``finite=True``).
    """
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if ndim is not None and x.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(x.shape)}")
    if shape is not None:
        if x.dim() != len(shape) or any(s is not None and s != d for s, d in zip(shape, x.shape)):
            want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
            raise ValueError(f"{name} must have shape {want}, got {tuple(x.shape)}")
    if finite and x.is_floating_point() and x.numel() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    return x
