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

import dataclasses
import io
import math
import os
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "seed_everything",
    "wilson_interval",
    "set_threads",
    "default_device",
    "load_or_train",
    "save_result",
    "config_dict",
    "config_differences",
    "checkpoint_dirs",
    "writable_checkpoint_dir",
    "user_checkpoint_dir",
    "progress",
    "derive_seed",
    "generator",
    "register_seed_offset",
    "timer",
    "check_tensor",
    "check_positive_int",
    "check_device",
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


#: Environment variable naming a folder of cached results that is searched first and written to.
CHECKPOINTS_ENV = "MEMTUTOR_CHECKPOINTS"

#: Version tag of the cached-result format written by :func:`load_or_train`.
RESULT_FORMAT = "memtutor-result/1"

#: Training that takes longer than this (estimated, minutes) is never started implicitly: a cached
#: result made with another configuration raises instead of retraining.
IMPLICIT_TRAINING_MINUTES = 3.0


def _clone_checkpoints() -> Path | None:
    """``notebooks/checkpoints`` of the clone this package is imported from, if it is a clone."""
    root = Path(__file__).resolve().parents[1]
    if (root / "pyproject.toml").is_file() and (root / "notebooks" / "checkpoints").is_dir():
        return root / "notebooks" / "checkpoints"
    return None


def _package_checkpoints() -> Path | None:
    """The cached results shipped inside an installed wheel (package data), if any."""
    path = Path(__file__).resolve().parent / "checkpoints"
    return path if path.is_dir() else None


def user_checkpoint_dir() -> Path:
    """The per-user folder where training runs save: ``$XDG_CACHE_HOME/memtutor/checkpoints``
    (``~/.cache/memtutor/checkpoints`` when ``XDG_CACHE_HOME`` is unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "memtutor" / "checkpoints"


def checkpoint_dirs() -> list[Path]:
    """The folders searched for a cached result; the first file with the asked configuration wins.

    1. ``$MEMTUTOR_CHECKPOINTS``, when set;
    2. :func:`user_checkpoint_dir`, where your own training runs are saved;
    3. the clone's ``notebooks/checkpoints`` (the committed results), when imported from a clone;
    4. the results shipped with the installed package.
    """
    found: list[Path] = []
    env = os.environ.get(CHECKPOINTS_ENV)
    for path in (Path(env) if env else None, user_checkpoint_dir(), _clone_checkpoints(), _package_checkpoints()):
        if path is not None and path not in found:
            found.append(path)
    return found


def writable_checkpoint_dir() -> Path:
    """Where a training run saves: ``$MEMTUTOR_CHECKPOINTS`` when set, else :func:`user_checkpoint_dir`.

    Never the installed package's folder, and never the clone's committed results unless asked
    (maintainers refresh those with ``MEMTUTOR_CHECKPOINTS=notebooks/checkpoints``).
    """
    env = os.environ.get(CHECKPOINTS_ENV)
    return Path(env) if env else user_checkpoint_dir()


def config_dict(config: Any) -> dict:
    """``config`` as plain, comparable values: dataclasses and mappings become dicts, tuples lists.

    Accepts a dataclass instance or a mapping whose leaves are ``None``, bool, int, float, str,
    tuples/lists of them, nested mappings or dataclasses, and ``torch.dtype``/``torch.device``
    (stored by name). Anything else raises ``ValueError``: a cached result's tag must load with
    ``weights_only=True`` and compare by value.
    """

    def plain(value: Any, where: str) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        if isinstance(value, Mapping):
            out = {}
            for key, item in value.items():
                if not isinstance(key, str):
                    raise ValueError(f"config keys must be strings, got {key!r} at {where or 'top level'}")
                out[key] = plain(item, f"{where}.{key}" if where else key)
            return out
        if isinstance(value, (tuple, list)):
            return [plain(item, f"{where}[{i}]") for i, item in enumerate(value)]
        if isinstance(value, (torch.dtype, torch.device)):
            return str(value)
        if isinstance(value, np.generic):
            value = value.item()
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        raise ValueError(f"config value at {where or 'top level'} must be plain data, got {type(value).__name__}")

    out = plain(config, "")
    if not isinstance(out, dict):
        raise ValueError(f"config must be a dataclass or a mapping, got {type(config).__name__}")
    return out


def _same_value(a: Any, b: Any) -> bool:
    """Equality of :func:`config_dict` values: ints and floats compare by value (``3 == 3.0``), but
    a bool is not a number (``True != 1``) and list items compare the same way, in order."""
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return not config_differences(a, b)
    numeric = (int, float)
    if isinstance(a, numeric) and isinstance(b, numeric) and not isinstance(a, bool) and not isinstance(b, bool):
        return a == b
    return type(a) is type(b) and a == b


def config_differences(cached: Mapping, wanted: Mapping, prefix: str = "") -> list[str]:
    """Lines ``field: cached X, asked Y`` for every field where two :func:`config_dict` values differ."""
    lines = []
    for key in sorted(set(cached) | set(wanted)):
        name = f"{prefix}{key}"
        a, b = cached.get(key, "<absent>"), wanted.get(key, "<absent>")
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            lines += config_differences(a, b, prefix=f"{name}.")
        elif key not in cached or key not in wanted or not _same_value(a, b):
            lines.append(f"{name}: cached {a!r}, asked {b!r}")
    return lines


def _read_result(path: Path, map_location) -> dict:
    """The cached result in ``path``; a file that cannot be read as one raises ``ValueError`` naming it."""
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated, corrupt, or holding objects weights_only refuses
        raise ValueError(
            f"{path} cannot be read as a memtutor cached result ({type(exc).__name__}: {str(exc)[:200]}); "
            "delete it to load or train again"
        ) from exc
    if not isinstance(data, dict) or data.get("format") != RESULT_FORMAT or not isinstance(data.get("config"), dict):
        raise ValueError(f"{path} is not a memtutor cached result (format {RESULT_FORMAT!r}); delete it or train again")
    return data


def load_or_train(
    name: str,
    config: Any,
    train_fn: Callable[[], Mapping],
    *,
    minutes: float,
    retrain: bool = False,
    directory: str | os.PathLike | None = None,
    map_location: str | torch.device | None = "cpu",
) -> dict:
    """Load the cached result ``name`` made with ``config``, or train it with ``train_fn()`` and save it.

    A cached result is a file ``name`` (e.g. ``"07_memup_L100.pt"``) holding
    ``{"format", "config", "result"}``: what ``train_fn`` returned (tensors and plain values, read
    back with ``torch.load(..., weights_only=True)``, so nothing else is ever unpickled) and the
    configuration that made it (:func:`config_dict` of ``config``; put the seed in it).

    The folders of :func:`checkpoint_dirs` are searched in order (only ``directory`` when given);
    the first file whose configuration equals ``config`` is loaded. Otherwise:

    * ``retrain=True``, no file at all, or a file made with another configuration when training is
      quick (``minutes`` <= :data:`IMPLICIT_TRAINING_MINUTES`): train, printing why, and save to
      ``directory`` or :func:`writable_checkpoint_dir` (never into the installed package), printing where;
    * a file made with another configuration and training is slow: raise ``ValueError`` naming
      the differing fields and how to train it (``RETRAIN = True`` in the notebook's parameters).

    ``minutes`` is the estimated training time on a laptop CPU, printed before training.
    Returns the ``result`` mapping (what ``train_fn`` returned, as read back from the file).
    """
    if not isinstance(name, str) or not name or Path(name).name != name:
        raise ValueError(f"name must be a file name without folders, got {name!r}")
    if isinstance(minutes, bool) or not isinstance(minutes, (int, float)) or not minutes >= 0:
        raise ValueError(f"minutes must be a non-negative number (estimated training time), got {minutes!r}")
    wanted = config_dict(config)
    folders = [Path(directory)] if directory is not None else checkpoint_dirs()
    first_mismatch: tuple[Path, list[str]] | None = None
    if not retrain:
        for folder in folders:
            path = folder / name
            if not path.is_file():
                continue
            data = _read_result(path, map_location)
            differences = config_differences(data["config"], wanted)
            if not differences:
                return data["result"]
            first_mismatch = first_mismatch or (path, differences)
    target = Path(directory) if directory is not None else writable_checkpoint_dir()
    if retrain:
        reason = "retrain=True"
    elif first_mismatch is None:
        reason = "no cached result"
    else:
        path, differences = first_mismatch
        listed = "; ".join(differences)
        if minutes > IMPLICIT_TRAINING_MINUTES:
            raise ValueError(
                f"the cached {name} ({path.parent}) was made with another configuration ({listed}). "
                f"Training it again takes about {minutes:g} min: set RETRAIN = True in the parameters cell "
                f"(it is saved to {target}), or restore the parameters it was made with."
            )
        reason = f"the cached result was made with another configuration ({listed})"
    print(f"[memtutor] training {name}: {reason}; about {minutes:g} min")
    result = train_fn()
    if not isinstance(result, Mapping):
        raise ValueError(f"train_fn must return a mapping (a state dict), got {type(result).__name__}")
    save_result(target / name, config, result)
    print(f"[memtutor] saved {name} to {target}")
    return _read_result(target / name, map_location)["result"]


def save_result(path: str | os.PathLike, config: Any, result: Mapping) -> Path:
    """Write ``result`` tagged with ``config`` in :func:`load_or_train`'s format.

    The file is written only if it reads back with ``torch.load(..., weights_only=True)`` (tensors
    and plain containers), and atomically: a result that could not be loaded later, or an
    interrupted write, leaves any existing file as it was.
    """
    path = Path(path)
    package = _package_checkpoints()
    if package is not None and package.resolve() in path.resolve().parents:
        raise ValueError(f"refusing to write into the installed package ({package}); set {CHECKPOINTS_ENV}")
    data = {"format": RESULT_FORMAT, "config": config_dict(config), "result": dict(result)}
    buffer = io.BytesIO()
    torch.save(data, buffer)
    try:
        torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)
    except Exception as exc:
        raise ValueError(
            "the result must hold only tensors and plain values (dict, list, tuple, str, int, float, bool, None) "
            f"to be read back with weights_only=True: {str(exc)[:300]}"
        ) from exc
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(buffer.getvalue())
    os.replace(tmp, path)
    return path


# --------------------------------------------------------------------------- progress and seeds


def progress(iterable: Iterable | None = None, *, enabled: bool = True, desc: str | None = None, **kwargs):
    """The collection's one progress bar: ``tqdm.auto`` (a widget in Jupyter, text elsewhere) when
    ``enabled``, else ``iterable`` itself (or a no-op bar when only ``total=`` is given)."""
    if enabled:
        from tqdm.auto import tqdm

        return tqdm(iterable, desc=desc, **kwargs)
    if iterable is not None:
        return iterable
    return _NoBar()


class _NoBar:
    """What :func:`progress` returns when disabled and used as a manual bar (``update``/``close``)."""

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, *args, **kwargs) -> None:
        pass

    def set_description(self, *args, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


#: Offsets that turn one experiment seed into independent streams, one per purpose. Every
#: generator a training or evaluation function draws from comes from :func:`derive_seed` with one
#: of these names, so the streams never overlap by accident and a reader finds them in one place.
SEED_OFFSETS: dict[str, int] = {}


def register_seed_offset(purpose: str, offset: int) -> str:
    """Declare the offset of a seed ``purpose`` (once per name; re-declaring the same value is a no-op)."""
    if not isinstance(purpose, str) or not purpose:
        raise ValueError(f"purpose must be a non-empty string, got {purpose!r}")
    if isinstance(offset, bool) or not isinstance(offset, int):
        raise ValueError(f"offset must be an int, got {offset!r}")
    if SEED_OFFSETS.get(purpose, offset) != offset:
        raise ValueError(f"seed purpose {purpose!r} already has offset {SEED_OFFSETS[purpose]}, not {offset}")
    SEED_OFFSETS[purpose] = offset
    return purpose


def derive_seed(seed: int, purpose: str, index: int = 0) -> int:
    """``seed + SEED_OFFSETS[purpose] + index``: the seed of one stream of an experiment."""
    if purpose not in SEED_OFFSETS:
        raise ValueError(f"unknown seed purpose {purpose!r}; known: {sorted(SEED_OFFSETS)}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return int(seed) + SEED_OFFSETS[purpose] + int(index)


def generator(seed: int, purpose: str | None = None, index: int = 0) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``seed`` (or :func:`derive_seed` of it for ``purpose``)."""
    value = seed if purpose is None else derive_seed(seed, purpose, index)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"seed must be a non-negative int, got {value!r}")
    return torch.Generator().manual_seed(int(value))


@contextmanager
def timer() -> Iterator[dict]:
    """``with timer() as t: ...`` then ``t["seconds"]`` holds the wall time."""
    out: dict = {}
    start = time.perf_counter()
    try:
        yield out
    finally:
        out["seconds"] = time.perf_counter() - start


def check_device(device: torch.device | str | None) -> torch.device | None:
    """``device`` as a ``torch.device`` (``None`` stays ``None``), or ``ValueError`` if it names no device."""
    if device is None or isinstance(device, torch.device):
        return device
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device must be a torch.device or a device string such as 'cpu', got {device!r}") from err


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
        if x.dim() != len(shape) or any(s is not None and s != d for s, d in zip(shape, x.shape, strict=True)):
            want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
            raise ValueError(f"{name} must have shape {want}, got {tuple(x.shape)}")
    if finite and x.is_floating_point() and x.numel() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval (95% with the default ``z``) of a proportion ``successes / n``, the
    interval every notebook puts around a success rate or an accuracy on a finite test set."""
    n = check_positive_int(n, "n")
    if isinstance(successes, bool) or not isinstance(successes, (int, np.integer)) or not 0 <= successes <= n:
        raise ValueError(f"successes must be an int in [0, n={n}], got {successes!r}")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)  # exact 0 and 1 at the ends, not -1e-17
