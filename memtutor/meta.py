"""Meta-learning an initialisation: MAML, first-order MAML and Reptile with ``torch.func``.

Finn, Abbeel, Levine, "Model-Agnostic Meta-Learning for Fast Adaptation of Deep Networks",
ICML 2017 (arXiv 1703.03400); Nichol, Achiam, Schulman, "On First-Order Meta-Learning
Algorithms", arXiv 1803.02999 (2018). Taught in notebook 04 (``notebooks/04_meta_learning.ipynb``),
applied to the memory controller in notebook 09 (``notebooks/09_meta_controller.ipynb``).

Shape legend: ``T`` tasks in a meta-batch, ``K`` support points per task, ``Q`` query points per
task, ``G`` evaluation points, ``...`` whatever the model takes per example (``D_in``/``D_out``).

The model is *functional*: every function takes an ``nn.Module`` and a dict ``params`` of its
parameters (``dict(model.named_parameters())``) and runs it with
``torch.func.functional_call(model, params, (x,))``, so any module works, including a recurrent
controller whose memory state is an explicit input (wrap it so that ``forward(x)`` builds the
initial state). The inner loop differentiates with ``torch.func.grad``; the outer gradient is
ordinary autograd through it, so MAML's meta-gradient is second order; ``torch.func.vmap`` runs
all tasks of a meta-batch at once (``vectorize=False`` loops over tasks instead, for models that
``vmap`` cannot batch and as the reference the tests compare with).

The three methods differ only in what they do with the adapted parameters phi_i of task i:

* ``"maml"``:    theta <- theta - beta grad_theta sum_i L_query_i(phi_i(theta))   (through the inner loop)
* ``"fomaml"``:  same, with the inner gradients treated as constants (d phi_i / d theta = I)
* ``"reptile"``: theta <- theta + eps (mean_i phi_i - theta)   (the query set is not used)

Evaluation always runs the model with the *adapted* parameters (:func:`adaptation_curve`,
:func:`adapt_and_predict`), which the seed tutorial's ``MetaLearner`` never does.

Notebook 04's experiments (the sinusoid training runs, their configurations, cached results and
held-out evaluation) are in :mod:`memtutor.experiments.nb04_meta`; notebook 09's (the memory
controller meta-learned over XOR-copy tasks) are in :mod:`memtutor.experiments.nb09_meta_controller`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from memtutor.utils import check_positive_int, check_tensor
from memtutor.utils import progress as progress_bar

__all__ = [
    "META_METHODS",
    "SINE_AMPLITUDE",
    "SINE_PHASE",
    "SINE_X",
    "TaskBatch",
    "SineTasks",
    "sinusoid",
    "sample_sinusoid_tasks",
    "make_sine_mlp",
    "mse_loss",
    "task_loss",
    "maml_adapt",
    "adapt_tasks",
    "maml_meta_loss",
    "reptile_direction",
    "meta_train_step",
    "meta_train",
    "select_params",
    "pretrain_joint",
    "adaptation_curve",
    "adapt_and_predict",
    "CONTROLLER_HEAD",
    "ControllerLogits",
    "pack_targets",
    "packed_bce_loss",
    "packed_bits_error",
    "xor_masks",
    "xor_copy_tasks",
]

#: The meta-training rules this module implements (see the module docstring).
META_METHODS = ("maml", "fomaml", "reptile")

#: Sinusoid task family of the MAML paper (Sec. 5.1): y = A sin(x + phi).
SINE_AMPLITUDE = (0.1, 5.0)  # A ~ U[0.1, 5.0]
SINE_PHASE = (0.0, math.pi)  # phi ~ U[0, pi]
SINE_X = (-5.0, 5.0)  # x ~ U[-5, 5]

LossFn = Callable[[Tensor, Tensor], Tensor]
Params = dict[str, Tensor]


class TaskBatch(NamedTuple):
    """A meta-batch of any task family. Every function here accepts any object with these fields."""

    x_support: Tensor  # (T, K, ...)
    y_support: Tensor  # (T, K, ...)
    x_query: Tensor  # (T, Q, ...)
    y_query: Tensor  # (T, Q, ...)


class SineTasks(NamedTuple):
    """A meta-batch of sinusoid regression tasks (support and query drawn independently)."""

    x_support: Tensor  # (T, K, 1)
    y_support: Tensor  # (T, K, 1)
    x_query: Tensor  # (T, Q, 1)
    y_query: Tensor  # (T, Q, 1)
    amplitude: Tensor  # A   (T,)
    phase: Tensor  # phi     (T,)


# --------------------------------------------------------------------------- input checks


def _check_lr(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite positive number, got {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return float(value)


def _check_pair(x, y, x_name: str, y_name: str, *, batched: bool) -> None:
    """x: (T, K, ...) / y: (T, K, ...) when batched, else (K, ...); T, K >= 1, same T and K.

    A batched 2-D ``x`` of shape ``(T, 1)`` is rejected as ambiguous: it is what one task's
    ``(K, 1)`` inputs look like, which would otherwise run silently as K tasks of one point each
    (T tasks of one scalar point each are written ``(T, 1, 1)``).
    """
    lead = 2 if batched else 1
    check_tensor(x, x_name)
    check_tensor(y, y_name)
    for t, name in ((x, x_name), (y, y_name)):
        if t.dim() < lead:
            want = "(T, K, ...)" if batched else "(K, ...)"
            raise ValueError(f"{name} must have shape {want}, got {tuple(t.shape)}")
    if batched and x.dim() == 2 and x.shape[1] == 1:
        raise ValueError(
            f"{x_name} has shape {tuple(x.shape)}, which reads as {x.shape[0]} tasks of one scalar point each: "
            f"for one task's (K, 1) inputs add the task dimension ({x_name}.unsqueeze(0), (1, K, 1)); "
            "for one scalar point per task write (T, 1, 1)"
        )
    if 0 in x.shape[:lead] or 0 in y.shape[:lead]:
        raise ValueError(f"{x_name} is an empty set (T or K = 0): adaptation needs at least one example")
    if x.shape[:lead] != y.shape[:lead]:
        raise ValueError(
            f"{x_name} and {y_name} disagree on their leading dimensions: {tuple(x.shape)} vs {tuple(y.shape)}"
        )


def _check_params(model, params) -> Params:
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be an nn.Module, got {type(model).__name__}")
    if not isinstance(params, Mapping) or not params:
        raise ValueError("params must be a non-empty dict of tensors (e.g. dict(model.named_parameters()))")
    names = dict(model.named_parameters())
    for k, v in params.items():
        if k not in names:
            raise ValueError(f"params has {k!r}, which is not a parameter of the model")
        if not isinstance(v, Tensor):
            raise ValueError(f"params[{k!r}] must be a tensor, got {type(v).__name__}")
        want = names[k]
        if v.shape != want.shape or v.dtype != want.dtype:
            raise ValueError(
                f"params[{k!r}] is {v.dtype} {tuple(v.shape)}, "
                f"but the model's parameter is {want.dtype} {tuple(want.shape)}"
            )
    return dict(params)


def _check_loss_fn(loss_fn, name: str = "loss_fn") -> LossFn:
    if not callable(loss_fn):
        raise ValueError(f"{name} must be a function (prediction, target) -> scalar loss, got {loss_fn!r}")
    return loss_fn


def _predict(model: nn.Module, params: Mapping[str, Tensor], x: Tensor, x_name: str) -> Tensor:
    """``functional_call(model, params, (x,))``; an input the model cannot take is a ``ValueError``
    naming the argument (the model's own ``RuntimeError`` says only which matrices disagree)."""
    try:
        return functional_call(model, dict(params), (x,))
    except torch.OutOfMemoryError:
        raise
    except RuntimeError as err:
        raise ValueError(
            f"the model cannot take {x_name} ({x.dtype}, shape {tuple(x.shape)} per task): "
            f"check its feature size and dtype against the model's. The model said: {err}"
        ) from err


def _loss(model, params, x, y, loss_fn: LossFn, names: tuple[str, str]) -> Tensor:
    """:func:`task_loss`, naming the arguments when the model or the default loss rejects them."""
    prediction = _predict(model, params, x, names[0])
    if loss_fn is mse_loss and (prediction.shape != y.shape or prediction.dtype != y.dtype):
        raise ValueError(
            f"{names[1]} has shape {tuple(y.shape)} per task ({y.dtype}) but the model predicts "
            f"{tuple(prediction.shape)} ({prediction.dtype}): mse_loss needs equal shapes and dtypes "
            "(broadcasting would average the wrong differences)"
        )
    return loss_fn(prediction, y)


def _check_batch(batch, *, query: bool = True) -> None:
    for name in ("x_support", "y_support") + (("x_query", "y_query") if query else ()):
        if not hasattr(batch, name):
            raise ValueError(f"the task batch must have a field {name!r} (e.g. a SineTasks)")
    _check_pair(batch.x_support, batch.y_support, "x_support", "y_support", batched=True)
    if query:
        _check_pair(batch.x_query, batch.y_query, "x_query", "y_query", batched=True)
        if batch.x_query.shape[0] != batch.x_support.shape[0]:
            raise ValueError(
                "support and query have different numbers of tasks: "
                f"{batch.x_support.shape[0]} vs {batch.x_query.shape[0]}"
            )


def _check_sampler(sample_batch, generator) -> None:
    if not callable(sample_batch):
        raise ValueError(f"sample_batch must be a function generator -> task batch, got {sample_batch!r}")
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator, got {type(generator).__name__}")


def _check_method(method) -> str:
    if method not in META_METHODS:
        raise ValueError(f"method must be one of {META_METHODS}, got {method!r}")
    return method


# --------------------------------------------------------------------------- the sinusoid family


def sinusoid(x: Tensor, amplitude: Tensor, phase: Tensor) -> Tensor:
    """y = A sin(x + phi), one (A, phi) per task.

    Args:
        x: (T, K, 1).  amplitude: (T,).  phase: (T,).
    Returns:
        (T, K, 1).
    """
    check_tensor(x, "x", ndim=3)
    check_tensor(amplitude, "amplitude", shape=(x.shape[0],))
    check_tensor(phase, "phase", shape=(x.shape[0],))
    return amplitude[:, None, None] * torch.sin(x + phase[:, None, None])  # (T, K, 1)


def _check_interval(bounds, name: str) -> None:
    ok = isinstance(bounds, (tuple, list)) and len(bounds) == 2
    ok = ok and all(isinstance(b, (int, float)) and not isinstance(b, bool) and math.isfinite(b) for b in bounds)
    if not (ok and bounds[0] <= bounds[1]):
        raise ValueError(f"{name} must be a pair of finite numbers (low, high) with low <= high, got {bounds!r}")


def _uniform(shape, bounds, generator, dtype) -> Tensor:
    lo, hi = bounds
    return lo + (hi - lo) * torch.rand(shape, generator=generator, dtype=dtype)


def sample_sinusoid_tasks(
    n_tasks: int,
    k_support: int,
    k_query: int,
    *,
    generator: torch.Generator,
    amplitude: tuple[float, float] = SINE_AMPLITUDE,
    phase: tuple[float, float] = SINE_PHASE,
    x_range: tuple[float, float] = SINE_X,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> SineTasks:
    """Draw ``n_tasks`` fresh sinusoid tasks with K support and Q query points each.

    Sampling runs on the CPU ``generator`` (so a seed gives the same tasks on every device) and
    the result is moved to ``device``. Support and query x are independent draws.

    Returns:
        :class:`SineTasks` with x/y support (T, K, 1), x/y query (T, Q, 1), amplitude and phase (T,).
    """
    t = check_positive_int(n_tasks, "n_tasks")
    k = check_positive_int(k_support, "k_support")
    q = check_positive_int(k_query, "k_query")
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    for name, bounds in (("amplitude", amplitude), ("phase", phase), ("x_range", x_range)):
        _check_interval(bounds, name)
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    amp = _uniform((t,), amplitude, generator, dtype)  # (T,)
    ph = _uniform((t,), phase, generator, dtype)  # (T,)
    xs = _uniform((t, k, 1), x_range, generator, dtype)  # (T, K, 1)
    xq = _uniform((t, q, 1), x_range, generator, dtype)  # (T, Q, 1)
    out = SineTasks(xs, sinusoid(xs, amp, ph), xq, sinusoid(xq, amp, ph), amp, ph)
    return SineTasks(*(v.to(device) for v in out)) if device is not None else out


def make_sine_mlp(hidden: int = 40, *, in_features: int = 1, out_features: int = 1) -> nn.Sequential:
    """The paper's regressor: in -> hidden -> hidden -> out with ReLU (1-40-40-1 by default)."""
    h = check_positive_int(hidden, "hidden")
    i = check_positive_int(in_features, "in_features")
    o = check_positive_int(out_features, "out_features")
    return nn.Sequential(nn.Linear(i, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, o))


# --------------------------------------------------------------------------- the inner loop


def mse_loss(prediction: Tensor, target: Tensor) -> Tensor:
    """Mean squared error over every element of two tensors of the same shape and dtype; a scalar.

    Unequal shapes raise ``ValueError`` instead of broadcasting: a ``(K,)`` target against a
    ``(K, 1)`` prediction would compare every prediction with every target.
    """
    if not (isinstance(prediction, Tensor) and isinstance(target, Tensor)):
        raise ValueError("prediction and target must be tensors")
    if prediction.shape != target.shape or prediction.dtype != target.dtype:
        raise ValueError(
            f"target is {target.dtype} {tuple(target.shape)} but prediction is {prediction.dtype} "
            f"{tuple(prediction.shape)}: mse_loss needs equal shapes and dtypes"
        )
    return F.mse_loss(prediction, target)


def task_loss(
    model: nn.Module, params: Mapping[str, Tensor], x: Tensor, y: Tensor, loss_fn: LossFn = mse_loss
) -> Tensor:
    """loss_fn(f_params(x), y): the model run with ``params`` instead of its own parameters."""
    return _loss(model, _check_params(model, params), x, y, _check_loss_fn(loss_fn), ("x", "y"))


def _adapt(model, params: Params, x, y, inner_lr: float, steps: int, first_order: bool, loss_fn) -> Params:
    """``steps`` SGD steps phi <- phi - alpha grad L_support(phi); no checks (runs under vmap)."""
    grad_fn = grad(lambda p: _loss(model, p, x, y, loss_fn, ("x_support", "y_support")))
    for _ in range(steps):
        g = grad_fn(params)
        if first_order:
            # First-order MAML: the inner gradient is a constant for the outer derivative, so
            # d phi / d theta = I and no Hessian-vector product is ever formed.
            g = {k: v.detach() for k, v in g.items()}
        params = {k: params[k] - inner_lr * g[k] for k in params}
    return params


def maml_adapt(
    model: nn.Module,
    params: Mapping[str, Tensor],
    x_support: Tensor,
    y_support: Tensor,
    *,
    inner_lr: float,
    steps: int,
    first_order: bool = False,
    loss_fn: LossFn = mse_loss,
) -> Params:
    """Adapt to ONE task: ``steps`` steps of phi <- phi - alpha grad_phi L(f_phi(x_support), y_support).

    The result stays differentiable with respect to ``params`` (second order unless
    ``first_order``), so a loss on it can be backpropagated to the initialisation.

    Args:
        params: name -> tensor, a subset of ``model``'s parameters (the rest stay the module's own).
        x_support: (K, ...).  y_support: (K, ...) with the same K >= 1; with the default
            ``mse_loss``, the model's output shape.
        inner_lr: alpha > 0.  steps: >= 1.
    Returns:
        The adapted parameters phi, a dict with the same names and shapes as ``params``.
    """
    params = _check_params(model, params)
    _check_pair(x_support, y_support, "x_support", "y_support", batched=False)
    lr = _check_lr(inner_lr, "inner_lr")
    n = check_positive_int(steps, "steps")
    return _adapt(model, params, x_support, y_support, lr, n, bool(first_order), _check_loss_fn(loss_fn))


def _over_tasks(fn, args: tuple, vectorize: bool):
    """fn applied to each task (dim 0 of every arg): vmap, or a Python loop stacked the same way."""
    if vectorize:
        return vmap(fn)(*args)
    return _stack([fn(*task) for task in zip(*args, strict=True)])


def _stack(outs: list):
    """Stack a list of equally structured outputs (tensors, dicts and tuples of them) along dim 0."""
    if isinstance(outs[0], dict):
        return {k: _stack([o[k] for o in outs]) for k in outs[0]}
    if isinstance(outs[0], tuple):
        return tuple(_stack(list(parts)) for parts in zip(*outs, strict=True))
    return torch.stack(outs)


def adapt_tasks(
    model: nn.Module,
    params: Mapping[str, Tensor],
    x_support: Tensor,
    y_support: Tensor,
    *,
    inner_lr: float,
    steps: int,
    first_order: bool = False,
    loss_fn: LossFn = mse_loss,
    vectorize: bool = True,
) -> Params:
    """:func:`maml_adapt` for every task of a meta-batch at once.

    Args:
        x_support: (T, K, ...): a task dimension, then one task's inputs (one task's ``(K, 1)``
            alone is rejected, not read as K tasks of one point).  y_support: (T, K, ...).
    Returns:
        name -> (T, *param.shape): one adapted parameter set per task.
    """
    params = _check_params(model, params)
    _check_pair(x_support, y_support, "x_support", "y_support", batched=True)
    lr = _check_lr(inner_lr, "inner_lr")
    n = check_positive_int(steps, "steps")
    loss_fn = _check_loss_fn(loss_fn)
    fn = lambda xs, ys: _adapt(model, params, xs, ys, lr, n, bool(first_order), loss_fn)  # noqa: E731
    return _over_tasks(fn, (x_support, y_support), vectorize)


# --------------------------------------------------------------------------- the outer loop


def maml_meta_loss(
    model: nn.Module,
    params: Mapping[str, Tensor],
    batch,
    *,
    inner_lr: float,
    steps: int,
    first_order: bool = False,
    loss_fn: LossFn = mse_loss,
    vectorize: bool = True,
) -> Tensor:
    """(1/T) sum_i L(f_{phi_i}(x_query_i), y_query_i) with phi_i = adapt(theta, support_i).

    ``batch`` is a :class:`TaskBatch` (or any object with its fields, e.g. :class:`SineTasks`):
    ``x_support`` (T, K, ...), ``y_support``, ``x_query`` (T, Q, ...), ``y_query``; with
    the default ``mse_loss`` the targets have the model's output shape, e.g. (T, K, 1), not (T, K).
    Backpropagating the returned scalar gives MAML's meta-gradient (second order), or first-order
    MAML's when ``first_order=True``.
    """
    params = _check_params(model, params)
    _check_batch(batch)
    lr = _check_lr(inner_lr, "inner_lr")
    n = check_positive_int(steps, "steps")
    loss_fn = _check_loss_fn(loss_fn)

    def one_task(xs, ys, xq, yq):
        phi = _adapt(model, params, xs, ys, lr, n, bool(first_order), loss_fn)
        return _loss(model, phi, xq, yq, loss_fn, ("x_query", "y_query"))

    args = (batch.x_support, batch.y_support, batch.x_query, batch.y_query)
    return _over_tasks(one_task, args, vectorize).mean()


def reptile_direction(
    model: nn.Module,
    params: Mapping[str, Tensor],
    batch,
    *,
    inner_lr: float,
    steps: int,
    loss_fn: LossFn = mse_loss,
    vectorize: bool = True,
) -> tuple[Params, Tensor]:
    """Reptile's pseudo-gradient theta - mean_i phi_i, and the mean support loss after adaptation.

    Handing the pseudo-gradient to ``SGD(lr=eps)`` performs theta <- theta + eps (mean phi - theta),
    the paper's update; handing it to Adam (as :func:`meta_train` does) rescales it per coordinate.
    Only the support set is used.
    """
    # Reptile's update is not a derivative of anything: no graph back to theta is needed.
    params = {k: v.detach() for k, v in _check_params(model, params).items()}
    _check_batch(batch, query=False)
    lr = _check_lr(inner_lr, "inner_lr")
    n = check_positive_int(steps, "steps")
    loss_fn = _check_loss_fn(loss_fn)

    def one_task(xs, ys):
        phi = _adapt(model, params, xs, ys, lr, n, True, loss_fn)
        return phi, _loss(model, phi, xs, ys, loss_fn, ("x_support", "y_support"))

    with torch.no_grad():  # no outer graph: Reptile never differentiates through the inner loop
        phi, losses = _over_tasks(one_task, (batch.x_support, batch.y_support), vectorize)
    return {k: params[k] - phi[k].mean(0) for k in params}, losses.mean()


def meta_train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch,
    *,
    method: str = "maml",
    inner_lr: float,
    steps: int,
    loss_fn: LossFn = mse_loss,
    vectorize: bool = True,
    adapt: Sequence[str] | None = None,
) -> Tensor:
    """One meta-update of ``model``'s parameters (all of them) by ``method`` in :data:`META_METHODS`.

    ``adapt`` names the parameters the inner loop adapts (default: all). With a subset, MAML and
    first-order MAML still update every parameter in the outer step (the others through the
    query loss of the adapted model); Reptile moves only the adapted ones.
    Returns the detached meta-loss: the mean query loss after adaptation for MAML and first-order
    MAML, the mean support loss after adaptation for Reptile.
    """
    method = _check_method(method)
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise ValueError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    params = select_params(model, adapt)
    # The loss first, then zero_grad: a batch the checks reject leaves the gradients as they were.
    if method == "reptile":
        direction, loss = reptile_direction(
            model, params, batch, inner_lr=inner_lr, steps=steps, loss_fn=loss_fn, vectorize=vectorize
        )
        optimizer.zero_grad(set_to_none=True)
        for name, p in params.items():
            p.grad = direction[name]
    else:
        loss = maml_meta_loss(
            model, params, batch, inner_lr=inner_lr, steps=steps, first_order=method == "fomaml",
            loss_fn=loss_fn, vectorize=vectorize,
        )  # fmt: skip
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
    optimizer.step()
    return loss.detach()  # a number to log, not a graph to keep


def select_params(model: nn.Module, names: Sequence[str] | None = None) -> Params:
    """``{name: parameter}`` of ``model`` for ``names`` (all parameters when ``None``)."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be an nn.Module, got {type(model).__name__}")
    params: Params = dict(model.named_parameters())
    if names is None:
        return params
    if isinstance(names, str) or not isinstance(names, Sequence):
        raise ValueError(f"names must be a list of parameter names, got {names!r}")
    names = list(names)
    missing = [n for n in names if n not in params]
    if not names or missing:
        raise ValueError(f"names must be a non-empty list of parameters of the model; unknown: {missing}")
    return {n: params[n] for n in names}


def meta_train(
    model: nn.Module,
    sample_batch: Callable[[torch.Generator], TaskBatch],
    *,
    method: str,
    meta_steps: int,
    inner_lr: float,
    inner_steps: int,
    meta_lr: float = 1e-3,
    generator: torch.Generator,
    loss_fn: LossFn = mse_loss,
    vectorize: bool = True,
    progress: bool = False,
) -> Tensor:
    """Meta-train ``model`` in place with Adam(meta_lr); ``sample_batch(generator)`` gives each batch.

    Returns:
        (meta_steps,) the meta-loss of every update.
    """
    _check_method(method)
    n = check_positive_int(meta_steps, "meta_steps")
    _check_sampler(sample_batch, generator)
    optimizer = torch.optim.Adam(model.parameters(), lr=_check_lr(meta_lr, "meta_lr"))
    losses = torch.empty(n)
    for i in progress_bar(range(n), enabled=progress, desc=f"meta-train ({method})", mininterval=1.0):
        losses[i] = meta_train_step(
            model, optimizer, sample_batch(generator), method=method, inner_lr=inner_lr,
            steps=inner_steps, loss_fn=loss_fn, vectorize=vectorize,
        )  # fmt: skip
    return losses


def pretrain_joint(
    model: nn.Module,
    sample_batch: Callable[[torch.Generator], TaskBatch],
    *,
    steps: int,
    lr: float = 1e-3,
    generator: torch.Generator,
    loss_fn: LossFn = mse_loss,
    progress: bool = False,
) -> Tensor:
    """The paper's "pretrained" baseline: one model regressed on the points of all tasks jointly.

    Each update pools the support and query points of a fresh meta-batch; the model never sees
    which task a point came from, so it learns the average function. Returns (steps,) losses.
    """
    n = check_positive_int(steps, "steps")
    _check_sampler(sample_batch, generator)
    loss_fn = _check_loss_fn(loss_fn)
    optimizer = torch.optim.Adam(model.parameters(), lr=_check_lr(lr, "lr"))
    losses = torch.empty(n)
    for i in progress_bar(range(n), enabled=progress, desc="pretrain (joint)", mininterval=1.0):
        b = sample_batch(generator)
        x = torch.cat([b.x_support, b.x_query], dim=1).flatten(0, 1)  # (T*(K+Q), ...)
        y = torch.cat([b.y_support, b.y_query], dim=1).flatten(0, 1)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        losses[i] = loss.detach()
    return losses


# --------------------------------------------------------------------------- evaluation


def adaptation_curve(
    model: nn.Module,
    params: Mapping[str, Tensor],
    batch,
    *,
    inner_lr: float,
    max_steps: int,
    loss_fn: LossFn = mse_loss,
    vectorize: bool = True,
    metric_fn: LossFn | None = None,
) -> Tensor:
    """Query loss of every task after 0, 1, ..., ``max_steps`` adaptation steps on its support set.

    Step s evaluates the model with the parameters adapted for s steps (step 0: ``params``).
    The inner steps descend ``loss_fn``; the query is scored with ``metric_fn`` (default
    ``loss_fn``), e.g. an error count that has no useful gradient.
    Nothing is differentiated through, so call it under ``torch.no_grad()`` or not, as you like.

    Returns:
        (T, max_steps + 1).
    """
    # Evaluation only: detached, so no outer graph is kept alive across the steps.
    params = {k: v.detach() for k, v in _check_params(model, params).items()}
    _check_batch(batch)
    lr = _check_lr(inner_lr, "inner_lr")
    n = check_positive_int(max_steps, "max_steps")
    loss_fn = _check_loss_fn(loss_fn)
    score = loss_fn if metric_fn is None else _check_loss_fn(metric_fn, "metric_fn")

    def one_task(xs, ys, xq, yq):
        phi, out = params, []
        grad_fn = grad(lambda p: _loss(model, p, xs, ys, loss_fn, ("x_support", "y_support")))
        for s in range(n + 1):  # a loop over adaptation steps (time), not over tasks
            out.append(_loss(model, phi, xq, yq, score, ("x_query", "y_query")))
            if s < n:
                g = grad_fn(phi)
                phi = {k: phi[k] - lr * g[k].detach() for k in phi}
        return torch.stack(out)  # (S + 1,)

    args = (batch.x_support, batch.y_support, batch.x_query, batch.y_query)
    return _over_tasks(one_task, args, vectorize).detach()


def adapt_and_predict(
    model: nn.Module,
    params: Mapping[str, Tensor],
    x_support: Tensor,
    y_support: Tensor,
    x_eval: Tensor,
    *,
    inner_lr: float,
    steps: int,
    loss_fn: LossFn = mse_loss,
    vectorize: bool = True,
) -> Tensor:
    """Adapt to each task's support set, then predict at ``x_eval`` with the adapted parameters.

    Args:
        x_support: (T, K, ...).  y_support: (T, K, ...).  x_eval: (T, G, ...), G >= 1.
        steps: >= 1 (for the unadapted model call ``functional_call`` directly).
    Returns:
        (T, G, D_out) predictions of the adapted models.
    """
    _check_pair(x_support, y_support, "x_support", "y_support", batched=True)
    check_tensor(x_eval, "x_eval")
    if x_eval.dim() != x_support.dim() or x_eval.shape[0] != x_support.shape[0] or x_eval.shape[1] == 0:
        raise ValueError(f"x_eval must have shape (T, G, ...) with T = {x_support.shape[0]}, got {tuple(x_eval.shape)}")
    phi = adapt_tasks(
        model, params, x_support, y_support, inner_lr=inner_lr, steps=steps, first_order=True,
        loss_fn=loss_fn, vectorize=vectorize,
    )  # fmt: skip
    phi = {k: v.detach() for k, v in phi.items()}  # predictions only: drop the graph to theta
    predict = lambda p, x: _predict(model, p, x, "x_eval")  # noqa: E731
    if vectorize:
        return vmap(predict)(phi, x_eval)  # (T, G, D_out)
    per_task = [{k: v[i] for k, v in phi.items()} for i in range(x_eval.shape[0])]
    return torch.stack([predict(p, x) for p, x in zip(per_task, x_eval, strict=True)])  # (T, G, D_out)


# --------------------------------------------------------------------------- the memory controller
#
# Notebook 09 meta-learns the initialisation of notebook 02's controller over a
# family of copy tasks: task m copies each vector XOR-ed with its own bit mask m (flip the bits
# where m is 1). The memory work is the same for every task; only the output code differs.


#: The controller's output layer y_t = W_y [h_t, r_t] + b_y: the parameters the inner loop adapts.
CONTROLLER_HEAD = ("controller.output.weight", "controller.output.bias")


class ControllerLogits(nn.Module):
    """A :class:`~memtutor.controller.MemoryController` as a sequence model: (B, T, I) -> (B, T, O).

    The controller takes its memory state as an explicit input; this wrapper starts every
    sequence from a fresh state built from ``x``, so ``functional_call`` runs the whole model
    (LSTM, interface, memory, output) with any parameter dict.
    """

    def __init__(self, controller: nn.Module):
        super().__init__()
        self.controller = controller

    def forward(self, x: Tensor) -> Tensor:
        return self.controller(x)[0]  # (B, T, O) logits


def pack_targets(targets: Tensor, mask: Tensor) -> Tensor:
    """(B, T, O) targets and (B, T) answer mask -> (B, T, O + 1), the mask as the last channel.

    The meta-learning functions pass one target tensor per example; packing keeps the mask with it.
    """
    check_tensor(targets, "targets", ndim=3)
    check_tensor(mask, "mask", shape=tuple(targets.shape[:2]))
    return torch.cat([targets, mask.unsqueeze(-1).to(targets.dtype)], dim=-1)


def packed_bce_loss(logits: Tensor, packed: Tensor) -> Tensor:
    """:func:`memtutor.tasks.masked_bce_loss` (bits per sequence) on :func:`pack_targets` targets."""
    from memtutor.tasks import masked_bce_loss

    return masked_bce_loss(logits, packed[..., :-1], packed[..., -1])


def packed_bits_error(logits: Tensor, packed: Tensor) -> Tensor:
    """Mean wrong bits per sequence (:func:`memtutor.tasks.bits_error`) on packed targets."""
    from memtutor.tasks import bits_error

    return bits_error(logits, packed[..., :-1], packed[..., -1]).mean()


def xor_masks(width: int = 8) -> Tensor:
    """Every mask of ``width`` bits: (2**width, width) floats, row i = the binary digits of i."""
    width = check_positive_int(width, "width")
    if width > 16:
        raise ValueError(f"width must be at most 16 (2**width masks), got {width}")
    i = torch.arange(2**width).unsqueeze(1)
    return ((i >> torch.arange(width)) & 1).float()


def xor_copy_tasks(
    masks: Tensor,
    n_support: int,
    n_query: int,
    *,
    min_length: int = 1,
    max_length: int = 10,
    generator: torch.Generator | None = None,
) -> TaskBatch:
    """A meta-batch of XOR-copy tasks, one per mask: copy sequences whose answer is x XOR m.

    Args:
        masks: (T, W) of 0/1.  n_support, n_query: sequences per task (fresh, independent).
    Returns:
        :class:`TaskBatch` with x (T, K, S, W + 1) inputs and y (T, K, S, W + 1) packed targets.
    """
    from memtutor.tasks import copy_task

    check_tensor(masks, "masks", ndim=2)
    if masks.shape[0] == 0 or not bool(((masks == 0) | (masks == 1)).all()):
        raise ValueError(f"masks must be a non-empty (T, W) tensor of 0s and 1s, got shape {tuple(masks.shape)}")
    sizes = check_positive_int(n_support, "n_support"), check_positive_int(n_query, "n_query")
    parts = []
    for n in sizes:
        xs, ys = [], []
        for m in masks:
            b = copy_task(n, min_length, max_length, masks.shape[1], generator=generator)
            flipped = (b.targets + m) % 2 * b.mask.unsqueeze(-1)  # x XOR m on the answer steps
            xs.append(b.inputs)
            ys.append(pack_targets(flipped, b.mask))
        parts += [torch.stack(xs), torch.stack(ys)]
    return TaskBatch(*parts)
