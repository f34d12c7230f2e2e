"""Fuzz tests of the public entry points of replay, memory, meta and controller.

Hypothesis throws random shapes, dtypes and values at each function: every argument is either a
valid one or a spoiled copy (another shape, dtype or rank, a NaN or inf, values out of range, a
tensor that requires grad, or not a tensor at all). Each call must give either a clean result or
a ``ValueError``, never another exception, and never NaN when every input was finite. A rejected
call on an object (a replay buffer, a sum tree) must leave it exactly as it was.

Finite values are drawn with magnitudes up to 100 (meta: 10, with inner learning rates up to
0.1): large enough to leave every documented range, small enough that squares and inner-loop
steps stay representable in float16 and do not diverge, which is numerics, not bad input.
"""

from __future__ import annotations

import math
import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from memtutor import controller as ctl
from memtutor import memory as mem
from memtutor import meta
from memtutor import replay as rp

#: Examples per entry point (raise it locally, e.g. MEMTUTOR_FUZZ_EXAMPLES=2000, for a long hunt).
EXAMPLES = int(os.environ.get("MEMTUTOR_FUZZ_EXAMPLES", "60"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.bool,
          torch.complex64]  # fmt: skip
SPOILS = ["keep", "keep", "keep", "values", "dtype", "shape", "rank", "special", "grad", "not a tensor", "empty"]


# --------------------------------------------------------------------------- strategies


@st.composite
def spoiled(draw, valid, *, scale: float = 100.0):
    """``valid`` itself (about a quarter of the time) or a spoiled copy of it."""
    how = draw(st.sampled_from(SPOILS))
    x = valid.detach().clone()
    if how == "keep":
        return valid
    if how == "values":  # finite, possibly far outside the documented range
        if not x.is_floating_point() or x.numel() == 0:
            return x
        seed = draw(st.integers(0, 2**31 - 1))
        return (
            (torch.rand(x.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2 - 1)
            .mul(draw(st.sampled_from([1e-3, 1.0, 2.0, scale])))
            .to(x.dtype)
        )
    if how == "dtype":
        dtype = draw(st.sampled_from(DTYPES))
        return x.real.to(dtype) if x.is_complex() else x.to(dtype)
    if how == "shape":
        if x.dim() == 0:
            return x.reshape(1)
        dim = draw(st.integers(0, x.dim() - 1))
        size = draw(st.sampled_from([0, 1, x.shape[dim] + 1, max(x.shape[dim] - 1, 0)]))
        shape = list(x.shape)
        shape[dim] = size
        return torch.zeros(shape, dtype=x.dtype) if not x.is_floating_point() else torch.rand(shape, dtype=x.dtype)
    if how == "rank":
        return x.unsqueeze(0) if draw(st.booleans()) or x.dim() == 0 else x.flatten()[: max(x.shape[-1], 1)]
    if how == "special":
        if not x.is_floating_point() or x.numel() == 0:
            return x
        flat = x.flatten()
        flat[draw(st.integers(0, flat.numel() - 1))] = draw(st.sampled_from([math.nan, math.inf, -math.inf]))
        return flat.reshape(x.shape)
    if how == "grad":
        return x.requires_grad_() if x.is_floating_point() else x
    if how == "empty":
        return x[:0] if x.dim() else x
    return draw(st.sampled_from([None, 1.0, "x", [1.0, 2.0]]))


def numbers(valid: float, *, low=-2.0, high=2.0):
    """A valid number or a spoiled one."""
    return st.one_of(
        st.just(valid),
        st.floats(low, high, allow_nan=False),
        st.sampled_from([math.nan, math.inf, -1.0, 0.0, 1e308, 1e-320, True, "1", None]),
    )


def finite_inputs(*values) -> bool:
    """Every tensor among ``values`` (nested in tuples, lists, dicts, NamedTuples) is finite."""
    for v in values:
        if isinstance(v, torch.Tensor):
            if (v.is_floating_point() or v.is_complex()) and not bool(torch.isfinite(v).all()):
                return False
        elif isinstance(v, dict):
            if not finite_inputs(*v.values()):
                return False
        elif isinstance(v, (tuple, list)):
            if not finite_inputs(*v):
                return False
        elif isinstance(v, float) and not math.isfinite(v):
            return False
    return True


def assert_no_nan(out, where: str) -> None:
    if isinstance(out, torch.Tensor):
        if out.is_floating_point() or out.is_complex():
            assert not bool(torch.isnan(out).any()), f"{where} returned NaN from finite input"
    elif isinstance(out, dict):
        for k, v in out.items():
            assert_no_nan(v, f"{where}[{k!r}]")
    elif isinstance(out, (tuple, list)):
        for i, v in enumerate(out):
            assert_no_nan(v, f"{where}[{i}]")


def _unchecked(fn):
    """``fn`` wrapped so that :func:`call` does not look for NaN in its result (stored NaN comes back)."""
    return lambda *args: (fn(*args), None)[1]


#: What :func:`call` returns when the call raised ``ValueError``.
REJECTED = object()


def call(fn, *args, **kwargs):
    """``fn(*args, **kwargs)``: a result, or :data:`REJECTED` when it raised ValueError (anything
    else fails the test). A result from finite inputs must hold no NaN."""
    try:
        out = fn(*args, **kwargs)
    except ValueError:
        return REJECTED
    if finite_inputs(args, kwargs):
        assert_no_nan(out, getattr(fn, "__name__", "call"))
    return out


def snapshot(obj) -> list[torch.Tensor]:
    if isinstance(obj, rp.PrioritizedReplay):
        return [v.clone() for v in obj.state_dict().values()] + snapshot(obj.tree)
    return [t.clone() for t in (*obj._sums, *obj._mins)]


def _same(x: torch.Tensor, y: torch.Tensor) -> bool:
    """Equal values, dtype and shape; NaN equals NaN (a buffer may store non-finite transitions)."""
    if x.dtype != y.dtype or x.shape != y.shape:
        return False
    return torch.equal(x, y) or bool(((x == y) | (x != x) & (y != y)).all())


def assert_same(a: list[torch.Tensor], b: list[torch.Tensor], what: str) -> None:
    assert len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True)), f"{what} changed it"


# --------------------------------------------------------------------------- replay


def _buffer(alpha: float = 0.6) -> rp.PrioritizedReplay:
    buf = rp.PrioritizedReplay(6, alpha=alpha)
    buf.add({"obs": torch.randn(4, 2), "action": torch.arange(4), "done": torch.tensor([0, 1, 0, 1]).bool()})
    return buf


@FUZZ
@given(data=st.data())
def test_fuzz_prioritized_replay(data):
    """A random sequence of add / sample / update_priorities / load_state_dict calls with spoiled
    arguments: a rejected call leaves the buffer as it was, an accepted one keeps it consistent."""
    buf = _buffer(alpha=data.draw(st.sampled_from([0.0, 0.6, 1.0, 2.0])))
    stored_finite = True  # transitions may hold NaN or inf (the buffer stores data as given)
    for _ in range(data.draw(st.integers(1, 6))):
        op = data.draw(st.sampled_from(["add", "add_errors", "sample", "update", "load"]))
        before = snapshot(buf)
        if op in ("add", "add_errors"):
            n = data.draw(st.integers(0, 7))
            items = {"obs": torch.randn(n, 2), "action": torch.arange(n), "done": torch.zeros(n, dtype=torch.bool)}
            key = data.draw(st.sampled_from(list(items)))
            items[key] = data.draw(spoiled(items[key]))
            errors = data.draw(spoiled(torch.rand(n, dtype=torch.float64), scale=1e308)) if op == "add_errors" else None
            out = call(buf.add, items, errors)
            stored_finite &= out is REJECTED or finite_inputs(items)
        elif op == "sample":
            gen = data.draw(st.sampled_from([None, torch.Generator().manual_seed(0), 123]))
            out = call(
                buf.sample if stored_finite else _unchecked(buf.sample),
                data.draw(st.sampled_from([0, 1, 5, -1, 2.0])),
                data.draw(numbers(0.5)),
                gen,
            )
        elif op == "update":
            n = data.draw(st.integers(0, 5))
            idx = data.draw(spoiled(torch.randint(0, max(len(buf), 1), (n,))))
            errors = data.draw(spoiled(torch.randn(n, dtype=torch.float64), scale=1e308))
            out = call(buf.update_priorities, idx, errors)
        else:
            state = buf.state_dict()
            key = data.draw(st.sampled_from(sorted(state)))
            state[key] = data.draw(spoiled(state[key]))
            out = call(buf.load_state_dict, state)
        if out is REJECTED:
            assert_same(snapshot(buf), before, f"a rejected {op}")
        assert not any(t.requires_grad for t in buf.storage.values()), "storage joined an autograd graph"
        assert math.isfinite(float(buf.tree.total)), "the tree's total overflowed"


@FUZZ
@given(data=st.data())
def test_fuzz_sum_tree(data):
    tree = rp.SumTree(5, branching=2, root_fanout=2)
    tree.update(torch.arange(5), torch.rand(5, dtype=torch.float64) + 0.1)
    before = snapshot(tree)
    idx = data.draw(spoiled(torch.tensor([0, 3])))
    values = data.draw(spoiled(torch.tensor([1.0, 2.0], dtype=torch.float64), scale=1e308))
    if call(tree.update, idx, values) is REJECTED:
        assert_same(snapshot(tree), before, "a rejected update")
    assert math.isfinite(float(tree.total))
    if float(tree.total) > 0:
        total = float(tree.total)
        call(tree.find, data.draw(spoiled(torch.tensor([0.0, total / 2], dtype=torch.float64))))
        call(tree.sample, data.draw(st.sampled_from([1, 3, 0, -2])), data.draw(st.sampled_from([None, 7, "g"])))
    call(tree.leaves, data.draw(spoiled(torch.tensor([1, 2]))))


@FUZZ
@given(data=st.data())
def test_fuzz_replay_functions(data):
    call(rp.priority, data.draw(spoiled(torch.randn(4))), data.draw(numbers(0.6)), data.draw(numbers(1e-6)))
    probs = torch.tensor([0.5, 0.2, 0.3], dtype=torch.float64)
    call(
        rp.importance_weights,
        data.draw(spoiled(probs)),
        data.draw(st.sampled_from([3, 0, 2.5])),
        data.draw(numbers(0.4)),
        data.draw(st.one_of(numbers(0.2), st.just(probs.min()))),
    )
    call(
        rp.stratified_prefixes,
        data.draw(st.sampled_from([1, 4, 0, -1, 2.0])),
        data.draw(numbers(1.0, low=-1.0, high=1e3)),
        data.draw(st.sampled_from([None, torch.Generator(), 123])),
        data.draw(st.sampled_from([None, "cpu", "nowhere"])),
    )
    call(rp.linear_beta_schedule, data.draw(numbers(0.4)), data.draw(st.sampled_from([10, 0, -1, 1.5])))
    call(rp.PrioritizedReplay, data.draw(st.sampled_from([4, 0, 2.0])), alpha=data.draw(numbers(0.6, high=50.0)),
         eps=data.draw(numbers(1e-6)))  # fmt: skip


# --------------------------------------------------------------------------- memory

B, N, W, R = 2, 4, 3, 2


def _valid_memory_args(seed: int):
    g = torch.Generator().manual_seed(seed)
    raw = torch.randn(B, mem.interface_size(W, R), generator=g)
    x = mem.split_interface(raw, W, R)
    s = mem.initial_state(B, N, W, R)
    s = s._replace(memory=torch.randn(B, N, W, generator=g), usage=torch.rand(B, N, generator=g))
    return raw, x, s


MEMORY_FUNCTIONS = {
    "cosine_similarity": (mem.cosine_similarity, lambda x, s: (s.memory, x.read_keys)),
    "content_weights": (mem.content_weights, lambda x, s: (s.memory, x.read_keys, x.read_strengths)),
    "retention": (mem.retention, lambda x, s: (x.free_gates, s.read_weights)),
    "update_usage": (mem.update_usage, lambda x, s: (s.usage, s.write_weights, x.free_gates, s.read_weights)),
    "allocation_weights": (mem.allocation_weights, lambda x, s: (s.usage,)),
    "write_weights": (mem.write_weights, lambda x, s: (s.usage, s.usage, x.allocation_gate, x.write_gate)),
    "erase_and_add": (mem.erase_and_add, lambda x, s: (s.memory, s.usage, x.erase_vector, x.write_vector)),
    "update_precedence": (mem.update_precedence, lambda x, s: (s.precedence, s.usage)),
    "update_link": (mem.update_link, lambda x, s: (s.link, s.precedence, s.usage)),
    "directional_weights": (mem.directional_weights, lambda x, s: (s.link, s.read_weights)),
    "read_weights": (mem.read_weights, lambda x, s: (s.read_weights, s.read_weights, s.read_weights, x.read_modes)),
    "read_memory": (mem.read_memory, lambda x, s: (s.memory, s.read_weights)),
    "oneplus": (mem.oneplus, lambda x, s: (s.memory,)),
}


@FUZZ
@given(name=st.sampled_from(sorted(MEMORY_FUNCTIONS)), seed=st.integers(0, 99), data=st.data())
def test_fuzz_memory_functions(name, seed, data):
    fn, make = MEMORY_FUNCTIONS[name]
    _, x, s = _valid_memory_args(seed)
    args = [data.draw(spoiled(a)) for a in make(x, s)]
    call(fn, *args)


@FUZZ
@given(seed=st.integers(0, 99), data=st.data())
def test_fuzz_memory_step_and_bank(seed, data):
    raw, x, s = _valid_memory_args(seed)
    x = mem.Interface(*(data.draw(spoiled(t)) for t in x)) if data.draw(st.booleans()) else x
    s = mem.MemoryState(*(data.draw(spoiled(t)) for t in s)) if data.draw(st.booleans()) else s
    fused = data.draw(st.sampled_from([False, True, ("link",), "link", 3]))
    call(mem.memory_step, x, s, num_reads=data.draw(st.sampled_from([None, R, R + 1])), fused=fused)
    bank = mem.MemoryBank(num_slots=N, word_size=W, num_reads=R)
    call(bank, data.draw(spoiled(raw)), s)
    call(mem.split_interface, data.draw(spoiled(raw)), W, R)
    call(mem.initial_state, data.draw(st.sampled_from([1, 0, 2.0])), N, W, R,
         dtype=data.draw(st.sampled_from([None, torch.float64, torch.int64, "float"])))  # fmt: skip


# --------------------------------------------------------------------------- meta


def _meta_setup(seed: int):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, 1))
    b = meta.sample_sinusoid_tasks(3, 4, 5, generator=torch.Generator().manual_seed(seed))
    return model, dict(model.named_parameters()), b


@FUZZ
@given(seed=st.integers(0, 9), data=st.data())
def test_fuzz_meta(seed, data):
    model, params, b = _meta_setup(seed)
    before = [p.detach().clone() for p in model.parameters()]
    b = meta.TaskBatch(*(data.draw(spoiled(t, scale=10.0)) for t in b[:4]))
    if data.draw(st.booleans()):
        key = data.draw(st.sampled_from(sorted(params)))
        params = {**params, key: data.draw(spoiled(params[key]))}
    lr = data.draw(st.one_of(st.floats(1e-3, 0.1), st.sampled_from([0.0, -0.1, math.nan, "0.1", None])))
    steps = data.draw(st.sampled_from([1, 2, 0, 1.5]))
    loss_fn = data.draw(st.sampled_from([meta.mse_loss, meta.mse_loss, None]))
    which = data.draw(st.sampled_from(["meta_loss", "adapt_tasks", "maml_adapt", "reptile", "curve", "predict"]))
    kw = {"inner_lr": lr, "loss_fn": loss_fn, "vectorize": data.draw(st.booleans())}
    if which == "meta_loss":
        call(meta.maml_meta_loss, model, params, b, steps=steps, **kw)
    elif which == "adapt_tasks":
        call(meta.adapt_tasks, model, params, b.x_support, b.y_support, steps=steps, **kw)
    elif which == "maml_adapt":
        kw.pop("vectorize")
        one = isinstance(b.x_support, torch.Tensor) and b.x_support.dim() and len(b.x_support)
        call(meta.maml_adapt, model, params, b.x_support[0] if one else b.x_support, b.y_support, steps=steps, **kw)
    elif which == "reptile":
        call(meta.reptile_direction, model, params, b, steps=steps, **kw)
    elif which == "curve":
        call(meta.adaptation_curve, model, params, b, max_steps=steps, **kw)
    else:
        call(meta.adapt_and_predict, model, params, b.x_support, b.y_support, b.x_query, steps=steps, **kw)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))


@FUZZ
@given(seed=st.integers(0, 9), data=st.data())
def test_fuzz_meta_train_step(seed, data):
    model, _, b = _meta_setup(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    b = meta.TaskBatch(*(data.draw(spoiled(t, scale=10.0)) for t in b[:4]))
    before = [p.detach().clone() for p in model.parameters()]
    method = data.draw(st.sampled_from([*meta.META_METHODS, "sgd"]))
    out = call(meta.meta_train_step, model, opt, b, method=method, inner_lr=0.05, steps=1)
    if out is REJECTED:
        assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))
        assert all(p.grad is None for p in model.parameters()), "a rejected step touched the gradients"


# --------------------------------------------------------------------------- controller

SMALL = ctl.ControllerConfig(input_size=3, output_size=2, hidden_size=6, num_slots=4, word_size=3, num_reads=2)


@FUZZ
@given(data=st.data())
def test_fuzz_controller(data):
    torch.manual_seed(0)
    model = ctl.MemoryController(SMALL)
    weights = [p.detach().clone() for p in model.parameters()]
    x = data.draw(spoiled(torch.randn(2, 3, SMALL.input_size)))
    state = model.initial_state(2)
    if data.draw(st.booleans()):
        hidden, cell, reads, memory = state
        memory = mem.MemoryState(*(data.draw(spoiled(t)) for t in memory))
        state = ctl.ControllerState(data.draw(spoiled(hidden)), cell, data.draw(spoiled(reads)), memory)
    if data.draw(st.booleans()):
        call(model, x, state)
    else:
        first = isinstance(x, torch.Tensor) and x.dim() == 3 and x.shape[1] > 0
        call(model.step, x[:, 0] if first else x, state)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), weights, strict=True))
    call(ctl.LSTMBaseline(SMALL.input_size, 2, 4), x)
    call(model.initial_state, data.draw(st.sampled_from([1, 0, -1, 1.0])),
         dtype=data.draw(st.sampled_from([None, torch.float64, torch.int64])))  # fmt: skip


@FUZZ
@given(
    field=st.sampled_from(["input_size", "num_slots", "num_reads", "clip_value", "allocation"]),
    value=st.one_of(st.integers(-2, 3), st.floats(allow_nan=True), st.sampled_from(["20", None, True, 2.0])),
    train_field=st.sampled_from(["learning_rate", "grad_clip", "max_seconds", "batch_size", "max_length"]),
)
def test_fuzz_controller_configs(field, value, train_field):
    call(ctl.ControllerConfig, **{field: value})
    call(ctl.CopyTrainConfig, **{train_field: value})


@pytest.mark.parametrize("name", sorted(MEMORY_FUNCTIONS))
def test_every_memory_function_accepts_its_valid_arguments(name):
    """The fuzz's 'keep' arguments are valid: each function returns a finite result on them."""
    fn, make = MEMORY_FUNCTIONS[name]
    _, x, s = _valid_memory_args(0)
    out = fn(*make(x, s))
    assert_no_nan(out, name)
