"""The memory controller: an LSTM that drives the DNC memory (taught in notebook 02).

Graves et al., "Hybrid computing using a neural network with dynamic external memory",
Nature 538:471-476 (2016); the copy task from Graves, Wayne, Danihelka, "Neural Turing
Machines", arXiv 1410.5401 (2014).

Shapes: B batch, T time steps, I input size, O output size, H controller (LSTM) size,
N memory slots, W word size, R read heads (one write head).

At each time step ``t`` the controller

1. feeds ``[x_t, r_{t-1}]`` (input and the previous step's read vectors) to an LSTM cell -> h_t;
2. maps h_t through ONE linear layer to the interface vector ``xi_t`` and splits/squashes it with
   :func:`memtutor.memory.split_interface` (keys, strengths, gates, erase and write vectors, modes);
3. lets the memory (:func:`memtutor.memory.memory_step`, with the ablation switches of
   :class:`ControllerConfig`) write and then read, giving r_t and the new memory;
4. outputs ``y_t = W_y [h_t, r_t]``.

The memory state belongs to each sequence and is passed in and returned explicitly
(:class:`ControllerState`); nothing is kept in the module. Keeping one memory buffer for every
sample a model ever sees, or reading *before* writing (so each step reads the previous step's
memory), are the two mistakes notebook 02 shows; here the DNC order holds: write first, then read
the new memory.

The only Python loop is over time steps; everything else is batched.

Seeding: a run with seed ``s`` seeds torch with ``s`` before building its model, draws its
training batches from ``generator(s, "controller/train-data")`` (``s + 1000``) and measures its
training curves on fixed validation batches drawn from :data:`VALIDATION_SEED`, the same for every
seed. The seed loops and the LSTM comparison of notebook 02 are in
:mod:`memtutor.experiments.nb02_controller`.
"""

from __future__ import annotations

import copy
import functools
import math
import numbers
import time
from collections.abc import Collection
from dataclasses import dataclass, replace
from typing import NamedTuple

import torch
import torch.nn as nn

from memtutor import memory as mem
from memtutor.tasks import bits_error, copy_task, masked_bce_loss
from memtutor.utils import check_positive_int, check_tensor, generator, register_seed_offset
from memtutor.utils import progress as progress_bar

__all__ = [
    "ControllerConfig",
    "ControllerState",
    "MemoryController",
    "LSTMBaseline",
    "count_parameters",
    "baseline_hidden_size",
    "with_access",
    "compile_step",
    "CopyTrainConfig",
    "train_copy",
    "evaluate_copy",
    "validation_batches",
    "VALIDATION_SEED",
    "TRAIN_DATA",
]

#: Seed of the fixed validation batches used for the training curves (the same for every run).
#: Notebook 02's held-out test sets use other seeds.
VALIDATION_SEED = 10_000
#: Seed purpose of the training batches: ``generator(seed, TRAIN_DATA)`` is seeded with ``seed + 1000``.
TRAIN_DATA = register_seed_offset("controller/train-data", 1_000)


@dataclass(frozen=True)
class ControllerConfig:
    """Sizes of a memory controller (defaults: the notebook's copy-task model)."""

    input_size: int = 9
    """I: width of x_t (8 bits + 1 delimiter channel for the copy task)."""
    output_size: int = 8
    """O: width of y_t."""
    hidden_size: int = 64
    """H: LSTM controller size."""
    num_slots: int = 32
    """N: memory slots; a copy sequence longer than N cannot be stored."""
    word_size: int = 16
    """W: width of one memory word."""
    num_reads: int = 1
    """R: read heads."""
    clip_value: float = 20.0
    """Controller output and final output are clipped to +-clip_value (DNC reference code)."""
    allocation: bool = True
    """Use dynamic allocation in the write weighting (switch off for the ablation)."""
    links: bool = True
    """Use the temporal link matrix for reads (switch off for the ablation)."""

    def __post_init__(self):
        for name in ("input_size", "output_size", "hidden_size", "num_slots", "word_size", "num_reads"):
            check_positive_int(getattr(self, name), name)
        _check_positive_number(self.clip_value, "clip_value", allow_inf=True)
        for name in ("allocation", "links"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")


def _check_positive_number(value, name: str, *, allow_inf: bool = False) -> float:
    """``value`` as a float, or ``ValueError`` unless it is a real number > 0 (finite unless ``allow_inf``)."""
    real = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not (real and value > 0 and (allow_inf or math.isfinite(value))):  # NaN fails value > 0
        raise ValueError(f"{name} must be a {'' if allow_inf else 'finite '}number > 0, got {name}={value!r}")
    return float(value)


class ControllerState(NamedTuple):
    """Everything the controller carries from step t-1 to step t.

    hidden, cell: (B, H) LSTM state; read_vectors: (B, R, W) r_{t-1}; memory: the MemoryState.
    """

    hidden: torch.Tensor
    cell: torch.Tensor
    read_vectors: torch.Tensor
    memory: mem.MemoryState


def _check_state(state, config: ControllerConfig, batch: int, ref: torch.Tensor) -> None:
    """``state`` must be a :class:`ControllerState` of ``batch`` sequences, sized by ``config``, in
    ``ref``'s dtype and on its device (the memory's own checks follow in the first step)."""
    if not isinstance(state, ControllerState):
        raise ValueError(f"prev_state must be a ControllerState (see initial_state), got {type(state).__name__}")
    if not isinstance(state.memory, mem.MemoryState):
        raise ValueError(f"prev_state.memory must be a MemoryState, got {type(state.memory).__name__}")
    c = config
    b, h, n, r, w = batch, c.hidden_size, c.num_slots, c.num_reads, c.word_size
    shapes = {
        "hidden": (b, h), "cell": (b, h), "read_vectors": (b, r, w), "memory.memory": (b, n, w),
        "memory.usage": (b, n), "memory.link": (b, n, n), "memory.precedence": (b, n),
        "memory.read_weights": (b, r, n), "memory.write_weights": (b, n),
    }  # fmt: skip
    for name, shape in shapes.items():
        x = getattr(state.memory, name[7:]) if name.startswith("memory.") else getattr(state, name)
        check_tensor(x, f"prev_state.{name}", finite=False)
        if tuple(x.shape) != shape:
            raise ValueError(
                f"prev_state.{name} has shape {tuple(x.shape)}, expected {shape} "
                "(batch size from the inputs, other sizes from the ControllerConfig)"
            )
        if x.dtype != ref.dtype or x.device != ref.device:
            raise ValueError(
                f"prev_state.{name} is {x.dtype} on {x.device}, expected {ref.dtype} on {ref.device} "
                "(the dtype and device of the inputs)"
            )


def _check_inputs(x: torch.Tensor, name: str, ndim: int, features: int, weight: torch.Tensor) -> None:
    """``x`` (B, [T,] I): finite, ``features`` wide, non-empty, in the model's dtype and on its device."""
    check_tensor(x, name, ndim=ndim)
    if x.shape[-1] != features:
        raise ValueError(f"{name} must have {features} features, got shape {tuple(x.shape)}")
    if 0 in x.shape:
        raise ValueError(f"{name} must have at least one sequence and one step, got {tuple(x.shape)}")
    if x.dtype != weight.dtype or x.device != weight.device:
        raise ValueError(
            f"{name} is {x.dtype} on {x.device} but the model's parameters are {weight.dtype} on "
            f"{weight.device}: convert one of them (e.g. inputs.to(model.output.weight))"
        )


class MemoryController(nn.Module):
    """LSTM controller + DNC memory. ``forward(inputs (B,T,I), state) -> (outputs (B,T,O), state)``.

    ``fused`` selects the memory step's implementation (see :func:`memtutor.memory.memory_step`):
    ``False``, the default, composes notebook 01's equation functions; ``True`` or a subset of
    :data:`memtutor.memory.FUSED_NODES` uses hand-written autograd nodes, faster, with the same
    values and gradients up to float rounding. It is not part of the state dict.
    """

    def __init__(self, config: ControllerConfig = ControllerConfig(), *, fused: bool | Collection[str] = False):
        super().__init__()
        if not isinstance(config, ControllerConfig):
            raise ValueError(f"config must be a ControllerConfig, got {type(config).__name__}")
        c = config
        self.config = c
        self.fused = mem.fused_nodes(fused)
        read_size = c.num_reads * c.word_size
        self.core = nn.LSTMCell(c.input_size + read_size, c.hidden_size)
        # xi_t = W_xi h_t: one projection for the whole interface vector.
        self.interface = nn.Linear(c.hidden_size, mem.interface_size(c.word_size, c.num_reads))
        self.output = nn.Linear(c.hidden_size + read_size, c.output_size)
        # The memory itself has no parameters: it is the function memtutor.memory.memory_step.

    def initial_state(self, batch_size: int, *, device=None, dtype=None) -> ControllerState:
        """Zero LSTM state and reads, and a fresh memory per sequence: (B, ...) tensors."""
        batch_size = check_positive_int(batch_size, "batch_size")
        ref = self.output.weight
        device = ref.device if device is None else device
        dtype = ref.dtype if dtype is None else dtype  # memory.initial_state checks both
        c = self.config
        zeros = torch.zeros(batch_size, c.hidden_size, device=device, dtype=dtype)
        reads = torch.zeros(batch_size, c.num_reads, c.word_size, device=device, dtype=dtype)
        memory = mem.initial_state(batch_size, c.num_slots, c.word_size, c.num_reads, device=device, dtype=dtype)
        return ControllerState(zeros, zeros.clone(), reads, memory)

    def step(self, x: torch.Tensor, prev_state: ControllerState, *, check: bool = True):
        """One time step. x: (B, I). Returns (y (B, O), next_state, interface).

        ``check=False`` skips every input check (of ``x``, of the state against the config, and the
        memory's checks of the interface and the memory state); :meth:`forward` checks the first
        step of a sequence only, since every later step gets its state from the step before and its
        interface from the same layers.
        """
        c = self.config
        if check:
            _check_inputs(x, "x", 2, c.input_size, self.output.weight)
            _check_state(prev_state, c, x.shape[0], x)
        batch = x.shape[0]
        controller_in = torch.cat([x, prev_state.read_vectors.reshape(batch, -1)], dim=-1)  # (B, I+RW)
        hidden, cell = self.core(controller_in, (prev_state.hidden, prev_state.cell))  # (B, H)
        # Clip as the DNC reference code does: keeps the interface finite early in training.
        h = hidden.clamp(-c.clip_value, c.clip_value)
        interface = mem.split_interface(self.interface(h), c.word_size, c.num_reads, check=check)
        reads, memory = mem.memory_step(
            interface, prev_state.memory, allocation=c.allocation, links=c.links, fused=self.fused, check=check
        )
        y = self.output(torch.cat([h, reads.reshape(batch, -1)], dim=-1))  # (B, O)
        y = y.clamp(-c.clip_value, c.clip_value)
        return y, ControllerState(hidden, cell, reads, memory), interface

    def forward(self, inputs: torch.Tensor, prev_state: ControllerState | None = None, *, return_trace=False):
        """Run a batch of sequences. inputs: (B, T, I).

        Returns (outputs (B, T, O), final ControllerState), plus, with ``return_trace=True``, a dict
        of per-step tensors for plots: write_weights (B, T, N), read_weights (B, T, R, N),
        usage (B, T, N), allocation_gate (B, T), write_gate (B, T), read_modes (B, T, R, 3).
        """
        _check_inputs(inputs, "inputs", 3, self.config.input_size, self.output.weight)
        batch, steps = inputs.shape[:2]
        state = prev_state
        if state is None:
            state = self.initial_state(batch, device=inputs.device, dtype=inputs.dtype)
        outputs: list[torch.Tensor] = []
        trace: dict[str, list[torch.Tensor]] = {k: [] for k in _TRACE_KEYS}
        for t in range(steps):  # the only Python loop: over time
            y, state, interface = self.step(inputs[:, t], state, check=t == 0)
            outputs.append(y)
            if return_trace:
                _record(trace, state, interface)
        out = torch.stack(outputs, dim=1)  # (B, T, O)
        if not return_trace:
            return out, state
        return out, state, {k: torch.stack(v, dim=1) for k, v in trace.items()}


_TRACE_KEYS = ("write_weights", "read_weights", "usage", "allocation_gate", "write_gate", "read_modes")


def _record(trace: dict, state: ControllerState, interface) -> None:
    trace["write_weights"].append(state.memory.write_weights)
    trace["read_weights"].append(state.memory.read_weights)
    trace["usage"].append(state.memory.usage)
    trace["allocation_gate"].append(interface.allocation_gate)
    trace["write_gate"].append(interface.write_gate)
    trace["read_modes"].append(interface.read_modes)


class LSTMBaseline(nn.Module):
    """A plain LSTM + linear readout, the memory-free baseline. ``forward(inputs (B,T,I)) -> (outputs, state)``."""

    def __init__(self, input_size: int, output_size: int, hidden_size: int, num_layers: int = 1):
        super().__init__()
        for name, v in (
            ("input_size", input_size),
            ("output_size", output_size),
            ("hidden_size", hidden_size),
            ("num_layers", num_layers),
        ):
            check_positive_int(v, name)
        self.input_size = input_size
        self.lstm = nn.LSTM(input_size, hidden_size, num_layers=num_layers, batch_first=True)
        self.output = nn.Linear(hidden_size, output_size)

    def forward(self, inputs: torch.Tensor, prev_state=None):
        _check_inputs(inputs, "inputs", 3, self.input_size, self.output.weight)
        hidden, state = self.lstm(inputs, prev_state)  # (B, T, H)
        return self.output(hidden), state  # (B, T, O)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable scalars."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def baseline_hidden_size(config: ControllerConfig, num_layers: int = 1) -> int:
    """Smallest LSTM size whose :class:`LSTMBaseline` has at least as many parameters as the controller."""
    target = count_parameters(MemoryController(config))
    i, o = config.input_size, config.output_size
    hidden = 1
    while True:
        # per layer: 4H(in + H) weights + 8H biases; readout H*O + O
        n = sum(4 * hidden * ((i if layer == 0 else hidden) + hidden) + 8 * hidden for layer in range(num_layers))
        if n + hidden * o + o >= target:
            return hidden
        hidden += 1


def with_access(model: MemoryController, *, allocation: bool = True, links: bool = True) -> MemoryController:
    """A copy of ``model`` (same weights and ``fused``) whose memory has allocation and/or links switched off."""
    clone = MemoryController(replace(model.config, allocation=allocation, links=links), fused=model.fused)
    clone.load_state_dict(model.state_dict())
    return clone.to(model.output.weight.device)


def compile_step(model: MemoryController) -> MemoryController:
    """Compile ``model``'s time step with ``torch.compile`` (in place; returns ``model``).

    Optional speed: inductor fuses the step's small element-wise ops, forward and backward, into a
    few C++ loops (about 2x faster training on one CPU core, measured by ``benchmarks/controller.py``
    on a model with ``fused=("link",)``).
    Same weights, state dict and results up to float rounding; the first calls compile (tens of
    seconds, cached on disk afterwards) and need a C++ compiler. The eager step stays the default.
    """
    if not isinstance(model, MemoryController):
        raise ValueError(f"compile_step needs a MemoryController, got {type(model).__name__}")
    eager_step = model.step
    # Only the unchecked steps are compiled: the checks of a sequence's first step read values
    # (``bool(isfinite(x).all())``), which would split the compiled graph.
    fast_step = torch.compile(functools.partial(eager_step, check=False), dynamic=False)

    def step(x, prev_state, *, check: bool = True):
        return eager_step(x, prev_state, check=True) if check else fast_step(x, prev_state)

    model.step = step  # type: ignore[method-assign]  # an instance attribute shadows the method
    return model


# --------------------------------------------------------------------------------------------
# Training and evaluation on the copy task


@dataclass(frozen=True)
class CopyTrainConfig:
    """Training knobs for the copy task (defaults: the notebook's run)."""

    num_updates: int = 2500
    """Optimiser steps (upper bound when ``max_seconds`` is set)."""
    batch_size: int = 32
    min_length: int = 1
    max_length: int = 10
    """Training lengths are uniform in [min_length, max_length]."""
    width: int = 8
    """Bits per vector K."""
    learning_rate: float = 1e-3
    """Adam step size (the reference code's RMSProp 1e-4 needs ~100k updates; we have 2,500)."""
    grad_clip: float = 10.0
    """Global gradient-norm clip."""
    eval_every: int = 100
    """Validation bit error is measured every this many updates (not timed)."""
    eval_size: int = 128
    """Validation sequences per length range."""
    max_seconds: float | None = None
    """Stop once this much *training* wall time has been spent (for the same-wall-time comparison)."""
    snapshot_at: tuple = ()
    """Update counts at which a copy of the weights is kept (e.g. the other model's budget)."""

    def __post_init__(self):
        for name in ("num_updates", "batch_size", "min_length", "max_length", "width", "eval_every", "eval_size"):
            check_positive_int(getattr(self, name), name)
        if self.min_length > self.max_length:
            raise ValueError(f"min_length must be <= max_length, got {self.min_length} > {self.max_length}")
        _check_positive_number(self.learning_rate, "learning_rate")
        _check_positive_number(self.grad_clip, "grad_clip", allow_inf=True)
        if self.max_seconds is not None:
            _check_positive_number(self.max_seconds, "max_seconds", allow_inf=True)


def evaluate_copy(model: nn.Module, batch, *, chunk: int = 256) -> torch.Tensor:
    """Bit errors per sequence (B,) of ``model`` on a :class:`~memtutor.tasks.CopyBatch`, no gradients."""
    check_positive_int(chunk, "chunk")
    was_training = model.training
    model.eval()
    errors = []
    with torch.no_grad():
        for start in range(0, batch.inputs.shape[0], chunk):  # chunks of the held-out set, not samples
            sl = slice(start, start + chunk)
            logits, _ = model(batch.inputs[sl])
            errors.append(bits_error(logits, batch.targets[sl], batch.mask[sl]))
    model.train(was_training)
    return torch.cat(errors)


def validation_batches(cfg: CopyTrainConfig, device: torch.device | str | None = None):
    """The fixed validation batches of :func:`train_copy`: ``(short, long)``, ``cfg.eval_size``
    sequences each, lengths in the training range and in ``(max_length, 2 max_length]``, drawn from
    :data:`VALIDATION_SEED` (the same for every run)."""
    gen = generator(VALIDATION_SEED)
    short = copy_task(cfg.eval_size, cfg.min_length, cfg.max_length, cfg.width, generator=gen, device=device)
    long = copy_task(cfg.eval_size, cfg.max_length + 1, 2 * cfg.max_length, cfg.width, generator=gen, device=device)
    return short, long


def train_copy(
    model: nn.Module, cfg: CopyTrainConfig = CopyTrainConfig(), *, seed: int = 0, progress: bool = False
) -> dict:
    """Train ``model`` on the copy task with Adam; return its weights and measured curves.

    Seeding: the caller seeds torch with ``seed`` before building ``model``; training batches come
    from ``generator(seed, TRAIN_DATA)`` (seeded ``seed + 1000``). Every ``eval_every`` updates the
    mean bit error on the fixed :func:`validation_batches` is recorded; that evaluation is not timed.
    Returns a dict of tensors: ``state_dict``, ``loss`` (U,) bits per sequence, ``update_seconds``
    (U,) wall time of each update (data, forward, backward, step), ``update_cpu_seconds`` (U,) the
    CPU time of this process over the same span (``time.process_time``: unlike the wall time, it
    does not grow when another job shares the core), ``eval_updates`` (E,),
    ``eval_seconds`` (E,) training time spent so far, ``val_bits_train`` (E,), ``val_bits_long`` (E,),
    and ``snapshots`` {str(update): state_dict}.
    """
    device = next(model.parameters()).device
    gen = generator(seed, TRAIN_DATA)
    val_short, val_long = validation_batches(cfg, device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate)
    losses, seconds, cpu_seconds, ev_u, ev_s, ev_a, ev_b, snaps = [], [], [], [], [], [], [], {}
    spent = 0.0

    def record(update: int) -> None:
        ev_u.append(update)
        ev_s.append(spent)
        ev_a.append(evaluate_copy(model, val_short).mean().item())
        ev_b.append(evaluate_copy(model, val_long).mean().item())

    record(0)
    bar = progress_bar(range(1, cfg.num_updates + 1), enabled=progress, desc=type(model).__name__)
    for update in bar:
        start, cpu_start = time.perf_counter(), time.process_time()
        batch = copy_task(cfg.batch_size, cfg.min_length, cfg.max_length, cfg.width, generator=gen, device=device)
        logits, _ = model(batch.inputs)
        loss = masked_bce_loss(logits, batch.targets, batch.mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        seconds.append(time.perf_counter() - start)
        cpu_seconds.append(time.process_time() - cpu_start)
        spent += seconds[-1]
        losses.append(loss.item())
        if update in cfg.snapshot_at:
            snaps[str(update)] = copy.deepcopy(model.state_dict())
        out_of_time = cfg.max_seconds is not None and spent >= cfg.max_seconds
        if update % cfg.eval_every == 0 or update == cfg.num_updates or out_of_time:
            record(update)
        if progress and update % cfg.eval_every == 0:  # after record: show this evaluation
            bar.set_postfix(bits_train=f"{ev_a[-1]:.2f}", bits_long=f"{ev_b[-1]:.2f}", refresh=False)
        if out_of_time:
            break

    def as_tensor(values: list, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        return torch.tensor(values, dtype=dtype)

    return {
        "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
        # per-update records in float32 keep a 100k-update run's file small
        "loss": as_tensor(losses, torch.float32),
        "update_seconds": as_tensor(seconds, torch.float32),
        "update_cpu_seconds": as_tensor(cpu_seconds, torch.float32),
        "eval_updates": as_tensor(ev_u, torch.long),
        "eval_seconds": as_tensor(ev_s),
        "val_bits_train": as_tensor(ev_a),
        "val_bits_long": as_tensor(ev_b),
        "snapshots": snaps,
    }
