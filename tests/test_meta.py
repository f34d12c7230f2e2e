"""Tests for memtutor.meta (MAML / first-order MAML / Reptile with torch.func), notebook 04's experiments
(memtutor.experiments.nb04_meta) and notebook 09's (memtutor.experiments.nb09_meta_controller), with their
cached results."""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from notebook_cells import notebook_parameters as run_parameters_cell
from torch import nn
from torch.func import functional_call

from memtutor import meta
from memtutor.experiments import nb04_meta as nb04
from memtutor.experiments import nb09_meta_controller as nb09
from memtutor.utils import IMPLICIT_TRAINING_MINUTES, config_dict, derive_seed, load_or_train, set_threads

ROOT = Path(__file__).resolve().parents[1]
set_threads()


# --------------------------------------------------------------------------- helpers


def tiny_model(dtype=torch.float64, seed=0, hidden=4):
    """A smooth (tanh) 1-hidden-layer model: finite differences are exact up to O(eps^2)."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(1, hidden), nn.Tanh(), nn.Linear(hidden, 1)).to(dtype)


def tasks(n=3, k=5, q=7, seed=0, dtype=torch.float32):
    return meta.sample_sinusoid_tasks(n, k, q, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def params_of(model):
    return {k: v.detach().clone().requires_grad_(True) for k, v in model.named_parameters()}


def classic_meta_loss(model, params, batch, inner_lr, steps, first_order=False):
    """The approach of most tutorials: a Python loop over tasks with autograd.grad(create_graph=True)."""
    losses = []
    for xs, ys, xq, yq in zip(batch.x_support, batch.y_support, batch.x_query, batch.y_query, strict=True):
        phi = dict(params)
        for _ in range(steps):
            loss = nn.functional.mse_loss(functional_call(model, phi, (xs,)), ys)
            g = torch.autograd.grad(loss, list(phi.values()), create_graph=not first_order)
            phi = {k: v - inner_lr * gi for (k, v), gi in zip(phi.items(), g, strict=True)}
        losses.append(nn.functional.mse_loss(functional_call(model, phi, (xq,)), yq))
    return torch.stack(losses).mean()


# --------------------------------------------------------------------------- the task family


def test_sinusoid_tasks_shapes_ranges_and_values():
    b = tasks(n=50, k=4, q=6)
    assert b.x_support.shape == (50, 4, 1) and b.y_support.shape == (50, 4, 1)
    assert b.x_query.shape == (50, 6, 1) and b.y_query.shape == (50, 6, 1)
    assert b.amplitude.shape == (50,) and b.phase.shape == (50,)
    assert b.amplitude.min() >= 0.1 and b.amplitude.max() <= 5.0
    assert b.phase.min() >= 0 and b.phase.max() <= math.pi
    assert b.x_support.abs().max() <= 5.0 and b.x_query.abs().max() <= 5.0
    want = b.amplitude[:, None, None] * torch.sin(b.x_query + b.phase[:, None, None])
    torch.testing.assert_close(b.y_query, want)
    # support and query are independent draws, not the same points
    assert not torch.equal(b.x_support, b.x_query[:, :4])


def test_sinusoid_tasks_seeded_determinism():
    a, b, c = tasks(seed=3), tasks(seed=3), tasks(seed=4)
    for u, v in zip(a, b, strict=True):
        assert torch.equal(u, v)
    assert not torch.equal(a.amplitude, c.amplitude)


def test_sinusoid_tasks_device_argument():
    b = meta.sample_sinusoid_tasks(2, 3, 3, generator=torch.Generator().manual_seed(0), device="cpu")
    assert all(t.device.type == "cpu" for t in b)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_tasks": 0}, "n_tasks"),
        ({"k_support": 0}, "k_support"),
        ({"k_query": -1}, "k_query"),
        ({"generator": 0}, "generator"),
        ({"amplitude": (5.0, 0.1)}, "amplitude"),
    ],
)
def test_sinusoid_tasks_bad_input(kwargs, match):
    args = {"n_tasks": 2, "k_support": 3, "k_query": 3, "generator": torch.Generator()}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        meta.sample_sinusoid_tasks(**args)


def test_make_sine_mlp_is_the_papers_architecture():
    model = meta.make_sine_mlp()
    shapes = [tuple(p.shape) for p in model.parameters()]
    assert shapes == [(40, 1), (40,), (40, 40), (40,), (1, 40), (1,)]
    assert sum(isinstance(m, nn.ReLU) for m in model) == 2
    assert model(torch.zeros(7, 1)).shape == (7, 1)


def test_sine_config_validation():
    assert nb04.SineConfig().inner_lr == 0.01  # the paper's alpha, not cbfinn/maml's flag default
    for bad in ({"inner_lr": 0.0}, {"meta_lr": -1e-3}, {"meta_batch": 0}, {"k_support": 0}, {"inner_lr": float("nan")}):
        with pytest.raises(ValueError):
            nb04.SineConfig(**bad)


# --------------------------------------------------------------------------- the inner loop


@settings(max_examples=25, deadline=None)
@given(
    w0=st.floats(-2, 2),
    lr=st.floats(1e-3, 0.2),
    steps=st.integers(1, 4),
    xs=st.lists(st.floats(-3, 3), min_size=1, max_size=6),
    slope=st.floats(-3, 3),
)
def test_adapt_matches_closed_form_gradient_descent_on_a_line(w0, lr, steps, xs, slope):
    """For f(x) = w x and MSE, grad = 2 mean((w x - y) x): check the loop step by step."""
    model = nn.Linear(1, 1, bias=False).double()
    x = torch.tensor(xs, dtype=torch.float64)[:, None]
    y = slope * x
    w = w0
    for _ in range(steps):
        w = w - lr * 2 * float(((w * x - y) * x).mean())
    phi = meta.maml_adapt(model, {"weight": torch.tensor([[w0]], dtype=torch.float64)}, x, y, inner_lr=lr, steps=steps)
    assert phi["weight"].item() == pytest.approx(w, rel=1e-9, abs=1e-9)


def test_adapted_parameters_differ_and_are_the_ones_evaluated():
    model = meta.make_sine_mlp(8)
    params = dict(model.named_parameters())
    b = tasks(n=4, k=5, q=9)
    phi = meta.adapt_tasks(model, params, b.x_support, b.y_support, inner_lr=0.05, steps=2)
    for k, v in params.items():
        assert phi[k].shape == (4, *v.shape)
        assert not torch.allclose(phi[k], v.expand_as(phi[k]))  # adaptation moved every tensor
    # adaptation_curve at step s is the query loss of the model run with the s-step parameters
    curve = meta.adaptation_curve(model, params, b, inner_lr=0.05, max_steps=2)
    assert curve.shape == (4, 3)
    for i in range(4):
        p_i = {k: v[i] for k, v in phi.items()}
        torch.testing.assert_close(curve[i, 2], meta.task_loss(model, p_i, b.x_query[i], b.y_query[i]).detach())
        torch.testing.assert_close(curve[i, 0], meta.task_loss(model, params, b.x_query[i], b.y_query[i]).detach())
    # adapt_and_predict predicts with the adapted parameters, not the initial ones
    x_eval = torch.linspace(-5, 5, 11).expand(4, 11)[..., None]
    pred = meta.adapt_and_predict(model, params, b.x_support, b.y_support, x_eval, inner_lr=0.05, steps=2)
    assert pred.shape == (4, 11, 1)
    for i in range(4):
        want = functional_call(model, {k: v[i] for k, v in phi.items()}, (x_eval[i],))
        torch.testing.assert_close(pred[i], want.detach())
    assert not torch.allclose(pred, model(x_eval).detach())


def test_adaptation_lowers_the_support_loss():
    model = meta.make_sine_mlp(16)
    params = dict(model.named_parameters())
    b = tasks(n=6, k=10, q=10)
    phi = meta.adapt_tasks(model, params, b.x_support, b.y_support, inner_lr=0.01, steps=5)
    before = torch.stack([meta.task_loss(model, params, x, y) for x, y in zip(b.x_support, b.y_support, strict=True)])
    after = torch.stack(
        [meta.task_loss(model, {k: v[i] for k, v in phi.items()}, b.x_support[i], b.y_support[i]) for i in range(6)]
    )
    assert bool((after < before).all())


def test_generic_task_batch_and_scalar_inputs():
    """Any module and any TaskBatch: here (T, K) scalar inputs and a model with a custom forward."""

    class Quadratic(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Parameter(torch.tensor(0.5))
            self.b = nn.Parameter(torch.tensor(-0.2))

        def forward(self, x):
            return self.a * x**2 + self.b

    model = Quadratic()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 6, generator=g)
    b = meta.TaskBatch(x, 2 * x**2, x, 2 * x**2)
    params = dict(model.named_parameters())
    loss = meta.maml_meta_loss(model, params, b, inner_lr=0.1, steps=2)
    loop = meta.maml_meta_loss(model, params, b, inner_lr=0.1, steps=2, vectorize=False)
    torch.testing.assert_close(loss, loop)
    curve = meta.adaptation_curve(model, params, b, inner_lr=0.1, max_steps=3)
    assert curve.shape == (3, 4) and bool((curve[:, 3] < curve[:, 0]).all())


def test_maml_adapt_keeps_unlisted_parameters_fixed():
    """A params dict with a subset of names adapts only those (the rest are the module's own)."""
    model = tiny_model()
    b = tasks(n=1, dtype=torch.float64)
    only_head = {k: v for k, v in model.named_parameters() if k.startswith("2.")}
    phi = meta.maml_adapt(model, only_head, b.x_support[0], b.y_support[0], inner_lr=0.1, steps=1)
    assert set(phi) == {"2.weight", "2.bias"}


# --------------------------------------------------------------------------- meta-gradients


def test_second_order_meta_gradient_matches_finite_differences():
    """gradcheck compares autograd's meta-gradient with central finite differences, in float64."""
    model = tiny_model()
    names = [k for k, _ in model.named_parameters()]
    b = tasks(n=2, k=4, q=5, dtype=torch.float64)

    def outer(*tensors):
        return meta.maml_meta_loss(model, dict(zip(names, tensors, strict=True)), b, inner_lr=0.3, steps=2)

    inputs = tuple(v.detach().clone().requires_grad_(True) for v in model.parameters())
    assert torch.autograd.gradcheck(outer, inputs, eps=1e-6, atol=1e-6, rtol=1e-4)


def test_first_order_differs_by_exactly_the_hessian_term():
    """One inner step: grad_MAML = (I - alpha H_support(theta)) grad_query(phi), grad_FO = grad_query(phi)."""
    model = tiny_model(hidden=3)
    names = [k for k, _ in model.named_parameters()]
    shapes = [v.shape for v in model.parameters()]
    sizes = [v.numel() for v in model.parameters()]
    b = tasks(n=1, k=4, q=5, dtype=torch.float64)
    alpha = 0.2

    def unflat(v):
        return {n: t.reshape(s) for n, t, s in zip(names, torch.split(v, sizes), shapes, strict=True)}

    theta = torch.cat([v.detach().reshape(-1) for v in model.parameters()]).requires_grad_(True)
    full = torch.autograd.grad(meta.maml_meta_loss(model, unflat(theta), b, inner_lr=alpha, steps=1), theta)[0]
    fo = torch.autograd.grad(
        meta.maml_meta_loss(model, unflat(theta), b, inner_lr=alpha, steps=1, first_order=True), theta
    )[0]

    support = lambda v: meta.task_loss(model, unflat(v), b.x_support[0], b.y_support[0])  # noqa: E731
    query = lambda v: meta.task_loss(model, unflat(v), b.x_query[0], b.y_query[0])  # noqa: E731
    th = theta.detach()
    phi = th - alpha * torch.func.grad(support)(th)
    g_q = torch.func.grad(query)(phi)
    hess = torch.func.hessian(support)(th)
    torch.testing.assert_close(fo, g_q)
    torch.testing.assert_close(full, g_q - alpha * hess @ g_q)
    assert (full - fo).abs().max() > 1e-4  # the Hessian term is not negligible here


@pytest.mark.parametrize("first_order", [False, True])
def test_meta_gradient_matches_the_classic_autograd_loop(first_order):
    model = meta.make_sine_mlp(10).double()
    b = tasks(n=4, k=5, q=6, dtype=torch.float64)
    p1, p2 = params_of(model), params_of(model)
    ours = meta.maml_meta_loss(model, p1, b, inner_lr=0.05, steps=3, first_order=first_order)
    ref = classic_meta_loss(model, p2, b, 0.05, 3, first_order=first_order)
    torch.testing.assert_close(ours, ref)
    g1 = torch.autograd.grad(ours, list(p1.values()))
    g2 = torch.autograd.grad(ref, list(p2.values()))
    for a, c in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, c)


@pytest.mark.parametrize("first_order", [False, True])
def test_vmap_and_loop_agree_on_loss_and_gradient(first_order):
    model = meta.make_sine_mlp(12)
    b = tasks(n=5, k=6, q=4)
    p1, p2 = params_of(model), params_of(model)
    l1 = meta.maml_meta_loss(model, p1, b, inner_lr=0.02, steps=2, first_order=first_order, vectorize=True)
    l2 = meta.maml_meta_loss(model, p2, b, inner_lr=0.02, steps=2, first_order=first_order, vectorize=False)
    torch.testing.assert_close(l1, l2)
    for a, c in zip(
        torch.autograd.grad(l1, list(p1.values())), torch.autograd.grad(l2, list(p2.values())), strict=True
    ):
        torch.testing.assert_close(a, c, rtol=1e-4, atol=1e-6)


def test_vmap_and_loop_agree_on_reptile_curves_and_predictions():
    model = meta.make_sine_mlp(12)
    params = dict(model.named_parameters())
    b = tasks(n=5, k=6, q=4)
    d1, s1 = meta.reptile_direction(model, params, b, inner_lr=0.02, steps=3, vectorize=True)
    d2, s2 = meta.reptile_direction(model, params, b, inner_lr=0.02, steps=3, vectorize=False)
    torch.testing.assert_close(s1, s2)
    for k in d1:
        torch.testing.assert_close(d1[k], d2[k], rtol=1e-4, atol=1e-7)
    c1 = meta.adaptation_curve(model, params, b, inner_lr=0.02, max_steps=3, vectorize=True)
    c2 = meta.adaptation_curve(model, params, b, inner_lr=0.02, max_steps=3, vectorize=False)
    torch.testing.assert_close(c1, c2)
    xe = b.x_query
    p1 = meta.adapt_and_predict(model, params, b.x_support, b.y_support, xe, inner_lr=0.02, steps=2, vectorize=True)
    p2 = meta.adapt_and_predict(model, params, b.x_support, b.y_support, xe, inner_lr=0.02, steps=2, vectorize=False)
    torch.testing.assert_close(p1, p2)


def test_reptile_direction_is_theta_minus_mean_adapted_params():
    model = meta.make_sine_mlp(6)
    params = dict(model.named_parameters())
    b = tasks(n=3)
    direction, _ = meta.reptile_direction(model, params, b, inner_lr=0.03, steps=4)
    phi = meta.adapt_tasks(model, params, b.x_support, b.y_support, inner_lr=0.03, steps=4, first_order=True)
    for k, v in params.items():
        torch.testing.assert_close(direction[k], (v - phi[k].mean(0)).detach())
        assert direction[k].grad_fn is None
    # with SGD(lr=eps) the step is the paper's theta <- theta + eps (mean phi - theta)
    before = {k: v.detach().clone() for k, v in params.items()}
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    meta.meta_train_step(model, opt, b, method="reptile", inner_lr=0.03, steps=4)
    for k, v in model.named_parameters():
        torch.testing.assert_close(v.detach(), before[k] + 0.5 * (phi[k].mean(0).detach() - before[k]))


def test_meta_train_step_changes_every_parameter_for_every_method():
    for method in meta.META_METHODS:
        model = meta.make_sine_mlp(8)
        before = [p.detach().clone() for p in model.parameters()]
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        loss = meta.meta_train_step(model, opt, tasks(), method=method, inner_lr=0.01, steps=2)
        assert loss.dim() == 0 and loss.grad_fn is None and math.isfinite(loss.item())
        for p, q in zip(model.parameters(), before, strict=True):
            assert not torch.equal(p.detach(), q), method


# --------------------------------------------------------------------------- training paths


def _held_out_one_step_mse(model, held_out):
    params = dict(model.named_parameters())
    return meta.adaptation_curve(model, params, held_out, inner_lr=0.01, max_steps=1).mean(0)[1].item()


@pytest.mark.slow
@pytest.mark.parametrize("method", meta.META_METHODS + ("pretrained",))
def test_train_sine_model_loss_falls(method):
    """The training path of the notebook's cached checkpoints, on a tiny configuration."""
    cfg = nb04.SineConfig(meta_steps=200, meta_batch=10, hidden=16, reptile_steps=3, meta_lr=3e-3)
    out = nb04.train_sine_model(method, cfg, seed=0, history=10)
    assert set(out) == {"model", "losses"} and out["losses"].shape == (10,)
    assert out["losses"][-1] < out["losses"][0], out["losses"]
    held_out = meta.sample_sinusoid_tasks(100, 10, 20, generator=torch.Generator().manual_seed(7))
    torch.manual_seed(0)
    init = meta.make_sine_mlp(16)  # the same initialisation train_sine_model starts from
    trained = meta.make_sine_mlp(16)
    trained.load_state_dict(out["model"])
    before, after = _held_out_one_step_mse(init, held_out), _held_out_one_step_mse(trained, held_out)
    assert after < 0.8 * before, (before, after)


@pytest.mark.parametrize("method", nb04.SINE_TRAINERS)
def test_train_sine_model_is_seeded(method):
    cfg = nb04.SineConfig(meta_steps=3, meta_batch=4, hidden=8, reptile_steps=2)
    out, again = nb04.train_sine_model(method, cfg, seed=0), nb04.train_sine_model(method, cfg, seed=0)
    for k, v in out["model"].items():
        assert torch.equal(v, again["model"][k])
    other = nb04.train_sine_model(method, cfg, seed=1)
    assert not torch.equal(out["model"]["0.weight"], other["model"]["0.weight"])


@pytest.mark.slow
def test_meta_training_beats_joint_pretraining_after_one_step_tiny():
    """A short run already shows the paper's qualitative result on held-out tasks."""
    cfg = nb04.SineConfig(meta_steps=200, meta_batch=10, hidden=16, meta_lr=3e-3)
    held_out = meta.sample_sinusoid_tasks(100, 10, 20, generator=torch.Generator().manual_seed(999))
    mse = {}
    for method in ("maml", "pretrained"):
        model = meta.make_sine_mlp(16)
        model.load_state_dict(nb04.train_sine_model(method, cfg, seed=0)["model"])
        mse[method] = _held_out_one_step_mse(model, held_out)
    assert mse["maml"] < mse["pretrained"], mse


# --------------------------------------------------------------------------- bad input


def _model_params_batch():
    model = meta.make_sine_mlp(4)
    return model, dict(model.named_parameters()), tasks(n=2, k=3, q=3)


def test_value_error_on_empty_support_set():
    model, params, _ = _model_params_batch()
    with pytest.raises(ValueError, match="empty"):
        meta.maml_adapt(model, params, torch.zeros(0, 1), torch.zeros(0, 1), inner_lr=0.1, steps=1)
    with pytest.raises(ValueError, match="empty"):
        meta.adapt_tasks(model, params, torch.zeros(2, 0, 1), torch.zeros(2, 0, 1), inner_lr=0.1, steps=1)
    b = meta.SineTasks(
        torch.zeros(2, 0, 1), torch.zeros(2, 0, 1), torch.zeros(2, 3, 1), torch.zeros(2, 3, 1), None, None
    )
    with pytest.raises(ValueError, match="empty"):
        meta.maml_meta_loss(model, params, b, inner_lr=0.1, steps=1)


def test_value_error_on_mismatched_support_shapes():
    model, params, b = _model_params_batch()
    with pytest.raises(ValueError, match="x_support and y_support"):
        meta.maml_adapt(model, params, torch.zeros(4, 1), torch.zeros(3, 1), inner_lr=0.1, steps=1)
    with pytest.raises(ValueError, match="x_support and y_support"):
        meta.adapt_tasks(model, params, b.x_support, b.y_support[:1], inner_lr=0.1, steps=1)
    bad = b._replace(x_query=b.x_query[:1], y_query=b.y_query[:1])
    with pytest.raises(ValueError, match="numbers of tasks"):
        meta.maml_meta_loss(model, params, bad, inner_lr=0.1, steps=1)
    with pytest.raises(ValueError, match="x_eval"):
        meta.adapt_and_predict(model, params, b.x_support, b.y_support, torch.zeros(5, 3, 1), inner_lr=0.1, steps=1)


@pytest.mark.parametrize("lr", [0.0, -0.01, float("nan"), float("inf"), "0.1", True])
def test_value_error_on_bad_learning_rate(lr):
    model, params, b = _model_params_batch()
    with pytest.raises(ValueError, match="inner_lr"):
        meta.maml_adapt(model, params, b.x_support[0], b.y_support[0], inner_lr=lr, steps=1)
    with pytest.raises(ValueError, match="inner_lr"):
        meta.maml_meta_loss(model, params, b, inner_lr=lr, steps=1)
    with pytest.raises(ValueError, match="inner_lr"):
        meta.adaptation_curve(model, params, b, inner_lr=lr, max_steps=2)


@pytest.mark.parametrize("steps", [0, -1, 1.5, True])
def test_value_error_on_bad_step_count(steps):
    model, params, b = _model_params_batch()
    with pytest.raises(ValueError, match="steps"):
        meta.maml_adapt(model, params, b.x_support[0], b.y_support[0], inner_lr=0.1, steps=steps)
    with pytest.raises(ValueError, match="steps"):
        meta.reptile_direction(model, params, b, inner_lr=0.1, steps=steps)
    with pytest.raises(ValueError, match="max_steps"):
        meta.adaptation_curve(model, params, b, inner_lr=0.1, max_steps=steps)


def test_value_error_on_bad_model_params_method_or_nan():
    model, params, b = _model_params_batch()
    with pytest.raises(ValueError, match="not a parameter"):
        meta.maml_adapt(model, {"nope": torch.zeros(1)}, b.x_support[0], b.y_support[0], inner_lr=0.1, steps=1)
    with pytest.raises(ValueError, match="non-empty"):
        meta.maml_adapt(model, {}, b.x_support[0], b.y_support[0], inner_lr=0.1, steps=1)
    with pytest.raises(ValueError, match="nn.Module"):
        meta.maml_adapt(lambda x: x, params, b.x_support[0], b.y_support[0], inner_lr=0.1, steps=1)
    with pytest.raises(ValueError, match="method"):
        meta.meta_train_step(model, torch.optim.SGD(model.parameters(), 0.1), b, method="mamml", inner_lr=0.1, steps=1)
    with pytest.raises(ValueError, match="method"):
        nb04.train_sine_model("joint", nb04.SineConfig(meta_steps=1), seed=0)
    nan_x = b.x_support.clone()
    nan_x[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        meta.adapt_tasks(model, params, nan_x, b.y_support, inner_lr=0.1, steps=1)
    with pytest.raises(ValueError, match="x_support"):
        meta.maml_meta_loss(model, params, object(), inner_lr=0.1, steps=1)


# --------------------------------------------------------------------------- benchmark smoke


@pytest.mark.slow
def test_benchmark_quick_runs():
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "maml.py"), "--quick"],
        capture_output=True, text=True, timeout=240, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert "speed-up" in out.stdout


# --------------------------------------------------------------------------- exercise checks


def _good_inner_step(model, params, x, y, lr):
    loss = lambda p: nn.functional.mse_loss(functional_call(model, p, (x,)), y)  # noqa: E731
    g = torch.func.grad(loss)(params)
    return {k: params[k] - lr * g[k] for k in params}


def test_ex04_check_inner_step():
    from memtutor.exercises import ex04

    assert ex04.check_inner_step(_good_inner_step)
    up = lambda m, p, x, y, lr: _good_inner_step(m, p, x, y, -lr)  # noqa: E731
    double = lambda m, p, x, y, lr: _good_inner_step(m, p, x, y, 2 * lr)  # noqa: E731
    cases = {
        "up the gradient": up,
        "not lr times": double,
        "did not move": lambda m, p, x, y, lr: dict(p),
        "exactly the keys": lambda m, p, x, y, lr: {"w": torch.zeros(1)},
        "raised ZeroDivisionError": lambda m, p, x, y, lr: 1 / 0,
        "must return a dict": lambda m, p, x, y, lr: 3,
    }
    for fragment, fn in cases.items():
        result = ex04.check_inner_step(fn)
        assert not result and fragment in result.message, (fragment, result)

    def sum_loss(m, p, x, y, lr):  # summed instead of mean squared error: a K times larger step
        g = torch.func.grad(lambda q: ((functional_call(m, q, (x,)) - y) ** 2).sum())(p)
        return {k: p[k] - lr * g[k] for k in p}

    assert "MSE" in ex04.check_inner_step(sum_loss).message


def test_ex04_check_lr_sweep():
    from memtutor.exercises import ex04

    model = meta.make_sine_mlp(8)
    params = dict(model.named_parameters())
    b = tasks(n=10, k=5, q=10)
    lrs = [0.001, 0.01, 0.1]
    sweep = {lr: meta.adaptation_curve(model, params, b, inner_lr=lr, max_steps=1).mean(0)[1].item() for lr in lrs}
    best = min(sweep, key=sweep.get)
    assert ex04.check_lr_sweep(sweep, best, model, params, b, lrs=lrs)
    worst = max(sweep, key=sweep.get)
    assert "best_lr" in ex04.check_lr_sweep(sweep, worst, model, params, b, lrs=lrs).message
    before = {lr: meta.adaptation_curve(model, params, b, inner_lr=lr, max_steps=1).mean(0)[0].item() for lr in lrs}
    assert "before adaptation" in ex04.check_lr_sweep(before, best, model, params, b, lrs=lrs).message
    assert not ex04.check_lr_sweep({0.01: 1.0}, 0.01, model, params, b, lrs=lrs)
    off = dict(sweep)
    off[0.01] *= 1.1
    assert "not the mean query MSE" in ex04.check_lr_sweep(off, best, model, params, b, lrs=lrs).message


def test_ex04_check_steps_to_threshold():
    from memtutor.exercises import ex04

    model = meta.make_sine_mlp(8)
    params = dict(model.named_parameters())
    b = tasks(n=10, k=10, q=10)
    curve = meta.adaptation_curve(model, params, b, inner_lr=0.05, max_steps=8).mean(0)
    threshold = float(curve[3]) + 1e-6  # reached at step <= 3 (the curve falls on this problem)
    want = int((curve <= threshold).nonzero()[0])
    models = {"a": (model, params)}
    kw = {"inner_lr": 0.05, "threshold": threshold, "max_steps": 8}
    assert ex04.check_steps_to_threshold({"a": want}, models, b, **kw)
    assert "one too many" in ex04.check_steps_to_threshold({"a": want + 1}, models, b, **kw).message
    assert "does reach" in ex04.check_steps_to_threshold({"a": None}, models, b, **kw).message
    never = dict(kw, threshold=-1.0)
    assert ex04.check_steps_to_threshold({"a": None}, models, b, **never)
    assert "never reaches" in ex04.check_steps_to_threshold({"a": 2}, models, b, **never).message
    assert "int" in ex04.check_steps_to_threshold({"a": 1.5}, models, b, **kw).message


# --------------------------------------------------------------------------- the memory controller

from memtutor.controller import ControllerConfig, CopyTrainConfig, MemoryController  # noqa: E402
from memtutor.tasks import bits_error, copy_task, masked_bce_loss  # noqa: E402

TINY_CTRL = ControllerConfig(input_size=5, output_size=4, hidden_size=8, num_slots=6, word_size=4, num_reads=1)


def _tiny_controller(seed=0):
    torch.manual_seed(seed)
    return MemoryController(TINY_CTRL)


def test_xor_masks_and_split():
    masks = meta.xor_masks(3)
    assert masks.shape == (8, 3)
    torch.testing.assert_close(masks[5], torch.tensor([1.0, 0.0, 1.0]))  # 5 = 0b101, low bit first
    assert len({tuple(m.tolist()) for m in masks}) == 8
    train, held = nb09.split_xor_masks(3, 2, seed=0)
    assert train.shape == (6, 3) and held.shape == (2, 3)
    rows = {tuple(m.tolist()) for m in train} | {tuple(m.tolist()) for m in held}
    assert len(rows) == 8  # disjoint and complete
    with pytest.raises(ValueError, match="n_heldout"):
        nb09.split_xor_masks(3, 8, seed=0)
    with pytest.raises(ValueError, match="width"):
        meta.xor_masks(0)


def test_xor_copy_tasks_flip_the_masked_bits_on_answer_steps_only():
    masks = torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 1.0, 1.0]])
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    tasks = meta.xor_copy_tasks(masks, 3, 2, min_length=1, max_length=4, generator=g1)
    assert tasks.x_support.shape == (2, 3, 9, 5) and tasks.y_query.shape == (2, 2, 9, 5)
    for i, m in enumerate(masks):  # same generator order: support of task 0, task 1, then queries
        plain = copy_task(3, 1, 4, 4, generator=g2)
        torch.testing.assert_close(tasks.x_support[i], plain.inputs)
        y = tasks.y_support[i]
        torch.testing.assert_close(y[..., -1], plain.mask)
        expected = torch.where(plain.mask.bool().unsqueeze(-1), (plain.targets + m) % 2, 0.0)
        torch.testing.assert_close(y[..., :-1], expected)
    with pytest.raises(ValueError, match="0s and 1s"):
        meta.xor_copy_tasks(torch.full((1, 4), 0.5), 1, 1)
    with pytest.raises(ValueError, match="n_support"):
        meta.xor_copy_tasks(masks, 0, 1)


def test_packed_losses_match_the_copy_task_losses():
    b = copy_task(3, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    logits = torch.randn(b.targets.shape, generator=torch.Generator().manual_seed(2))
    packed = meta.pack_targets(b.targets, b.mask)
    torch.testing.assert_close(meta.packed_bce_loss(logits, packed), masked_bce_loss(logits, b.targets, b.mask))
    torch.testing.assert_close(meta.packed_bits_error(logits, packed), bits_error(logits, b.targets, b.mask).mean())
    with pytest.raises(ValueError, match="mask"):
        meta.pack_targets(b.targets, b.mask[:, :-1])


def test_select_params():
    model = meta.ControllerLogits(_tiny_controller())
    head = meta.select_params(model, meta.CONTROLLER_HEAD)
    assert list(head) == list(meta.CONTROLLER_HEAD)
    assert head["controller.output.weight"] is model.controller.output.weight
    assert len(meta.select_params(model)) == len(list(model.parameters()))
    with pytest.raises(ValueError, match="unknown"):
        meta.select_params(model, ["controller.nope"])
    with pytest.raises(ValueError, match="non-empty"):
        meta.select_params(model, [])


def test_head_only_maml_meta_gradient_reaches_every_controller_parameter():
    """The inner loop adapts the output layer only; the second-order outer gradient still reaches
    the LSTM, interface and output parameters (through the features the head is adapted on)."""
    model = meta.ControllerLogits(_tiny_controller())
    tasks = meta.xor_copy_tasks(meta.xor_masks(4)[:2], 3, 3, max_length=3, generator=torch.Generator().manual_seed(0))
    for first_order in (False, True):
        model.zero_grad()
        loss = meta.maml_meta_loss(
            model,
            meta.select_params(model, meta.CONTROLLER_HEAD),
            tasks,
            inner_lr=0.1,
            steps=1,
            first_order=first_order,
            loss_fn=meta.packed_bce_loss,
            vectorize=False,
        )
        loss.backward()
        for name, p in model.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, (first_order, name)


@pytest.mark.slow
@pytest.mark.parametrize("method", nb09.CONTROLLER_TRAINERS)
def test_train_controller_init_runs_and_changes_the_controller(method):
    cfg = nb09.ControllerMetaConfig(
        meta_steps=3, meta_batch=2, n_support=3, n_query=3, width=4, n_heldout=4, n_val=4, snapshots=(1,),
        max_length=3,
    )  # fmt: skip
    ctrl = _tiny_controller()
    before = {k: v.clone() for k, v in ctrl.state_dict().items()}
    out = nb09.train_controller_init(method, ctrl, cfg, seed=0)
    assert out["losses"].shape == (3,) and torch.isfinite(out["losses"]).all()
    assert out["controller"].keys() == before.keys()
    for name in ("core.weight_hh", "output.weight"):
        assert not torch.equal(out["controller"][name], before[name]), name
    again = nb09.train_controller_init(method, _tiny_controller(), cfg, seed=0)  # seeded: the same run
    torch.testing.assert_close(again["losses"], out["losses"])
    with pytest.raises(ValueError, match="method"):
        nb09.train_controller_init("reptile", ctrl, cfg, seed=0)


def test_controller_adaptation_curves_start_unadapted_and_adapt():
    ctrl = _tiny_controller()
    tasks = meta.xor_copy_tasks(meta.xor_masks(4)[:3], 4, 5, max_length=3, generator=torch.Generator().manual_seed(0))
    curves = nb09.controller_adaptation_curves(ctrl, tasks, inner_lr=0.5, max_steps=3)
    assert curves["loss"].shape == (3, 4) and curves["bits"].shape == (3, 4)
    model = meta.ControllerLogits(ctrl)
    with torch.no_grad():
        for i in range(3):
            logits = model(tasks.x_query[i])
            torch.testing.assert_close(curves["loss"][i, 0], meta.packed_bce_loss(logits, tasks.y_query[i]))
            torch.testing.assert_close(curves["bits"][i, 0], meta.packed_bits_error(logits, tasks.y_query[i]))
    assert (curves["loss"][:, 1:] != curves["loss"][:, :1]).all()  # the adapted head is what is scored


@pytest.mark.parametrize("method", meta.META_METHODS)
def test_meta_train_step_with_an_adapted_subset(method):
    """adapt= names the inner loop's parameters: MAML and first-order MAML still move every
    parameter in the outer step, Reptile only the adapted ones."""
    torch.manual_seed(0)
    model = meta.make_sine_mlp(8)
    batch = meta.sample_sinusoid_tasks(3, 5, 5, generator=torch.Generator().manual_seed(0))
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    last = [n for n, _ in model.named_parameters()][-2:]  # the output layer
    meta.meta_train_step(model, opt, batch, method=method, inner_lr=0.01, steps=2, adapt=last)
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert moved == (set(last) if method == "reptile" else set(before))
    with pytest.raises(ValueError, match="unknown"):
        meta.meta_train_step(model, opt, batch, method=method, inner_lr=0.01, steps=1, adapt=["nope"])


# --------------------------------------------------------------------------- notebooks 04 and 09: cached results

NOTEBOOK = ROOT / "notebooks" / "04_meta_learning.ipynb"
NOTEBOOK_09 = ROOT / "notebooks" / "09_meta_controller.ipynb"
CHECKPOINTS = ROOT / "notebooks" / "checkpoints"


def notebook_parameters(notebook: Path = NOTEBOOK) -> dict:
    """The names defined by a notebook's ``parameters``-tagged cell (plain assignments of literals)."""
    return run_parameters_cell(notebook.name)


def notebook_configs() -> dict[str, dict]:
    """File name -> the configuration notebook 04 loads it with, built from its parameters."""
    p = notebook_parameters()
    sine = nb04.SineConfig(meta_steps=p["META_STEPS"], inner_lr=p["INNER_LR"])
    configs = nb04.sine_configs(sine, reptile_meta_steps=p["REPTILE_META_STEPS"])
    settings = dict(
        shots=p["SHOTS"], n_tasks=p["N_EVAL_TASKS"], n_query=p["N_EVAL_QUERY"], max_steps=p["MAX_STEPS"],
        inner_lr=p["INNER_LR"], baseline_lrs=p["BASELINE_LRS"], eval_seed=p["EVAL_SEED"], val_seed=p["VAL_SEED"],
    )  # fmt: skip
    out = {}
    for seed in p["SEEDS"]:
        out.update({nb04.sine_file(m, seed): nb04.sine_run_config(m, c, seed=seed) for m, c in configs.items()})
        out[nb04.sine_eval_file(seed)] = nb04.sine_eval_config(seed, configs, **settings)
    return out


def notebook_09_configs() -> dict[str, dict]:
    """File name -> the configuration notebook 09 loads it with, built from its parameters."""
    p = notebook_parameters(NOTEBOOK_09)
    ctrl = nb09.ControllerMetaConfig(meta_steps=p["CTRL_META_STEPS"])
    eval_kw = dict(
        eval_seed=p["CTRL_EVAL_SEED"], val_seed=p["CTRL_VAL_SEED"], n_query=p["CTRL_QUERY"],
        val_query=p["CTRL_VAL_QUERY"], max_steps=p["CTRL_STEPS"], val_steps=p["CTRL_VAL_STEPS"],
    )  # fmt: skip
    out = {}
    first = p["CTRL_SEEDS"][0]  # the seed whose runs make the validation choices
    for seed in p["CTRL_SEEDS"]:
        start = nb09.copy_start(seed, ControllerConfig(), CopyTrainConfig(), lstm_update_cap=300_000)
        for m in ("maml", "joint"):
            out[nb09.controller_file(m, seed)] = nb09.controller_run_config(m, ctrl, seed=seed, start=start)
        for s in nb09.CONTROLLER_STARTS:
            if seed == first:
                out[nb09.select_file(s, seed)] = nb09.select_run_config(s, seed, ctrl, **eval_kw)
            else:
                choice = torch.load(CHECKPOINTS / nb09.select_file(s, first), weights_only=True)["result"]["choice"]
                out[nb09.test_file(s, seed)] = nb09.controller_test_config(s, seed, ctrl, choice=choice, **eval_kw)
    return out


def all_configs() -> dict[str, dict]:
    return {**notebook_configs(), **notebook_09_configs()}


def refuse_to_train():
    raise AssertionError("the committed result should have been loaded, not trained")


def test_notebook_starts_from_notebook_02s_copy_runs():
    """notebook_09_configs() mirrors the notebook's copy starts (seed s from notebook 02's run s)."""
    source = NOTEBOOK_09.read_text()
    assert "load_copy_run(seed, ControllerConfig(), CopyTrainConfig(), lstm_update_cap=300_000)" in source
    start = nb09.copy_start(2, ControllerConfig(), CopyTrainConfig(), lstm_update_cap=300_000)
    assert nb09.controller_start(2) == start
    assert nb09.controller_start(2)["run"] == "02_copy_seed2.pt"


@pytest.mark.parametrize(("prefix", "configs"), [("04", notebook_configs), ("09", notebook_09_configs)])
def test_committed_results_were_made_with_the_notebooks_configuration(prefix, configs):
    configs = configs()
    assert sorted(configs) == sorted(p.name for p in CHECKPOINTS.glob(f"{prefix}_*.pt"))
    for name, config in configs.items():
        data = torch.load(CHECKPOINTS / name, weights_only=True)
        assert data["config"] == config_dict(config), name
    sine = torch.load(CHECKPOINTS / nb04.sine_file("maml"), weights_only=True)["result"]
    assert sine["losses"].shape == (nb04.SINE_HISTORY,)


@pytest.mark.parametrize("name", sorted(all_configs()))
def test_unchanged_configuration_loads_without_training(tmp_path, name):
    shutil.copy(CHECKPOINTS / name, tmp_path)
    result = load_or_train(name, all_configs()[name], refuse_to_train, minutes=60, directory=tmp_path)
    assert result


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"seed": 1}, "seed"),
        ({"history": 50}, "history"),
        ({"sine": nb04.SineConfig(meta_steps=70_000)}, "sine.meta_steps"),
        ({"sine": nb04.SineConfig(meta_steps=40_000, inner_lr=0.02)}, "sine.inner_lr"),
        ({"sine": nb04.SineConfig(meta_steps=40_000, hidden=64)}, "sine.hidden"),
    ],
)
def test_a_changed_field_of_a_long_sine_run_raises_naming_it(tmp_path, change, field):
    """MAML's sinusoid run takes more than IMPLICIT_TRAINING_MINUTES: a changed field raises."""
    name = nb04.sine_file("maml")
    shutil.copy(CHECKPOINTS / name, tmp_path)
    config = {**notebook_configs()[name], **change}
    minutes = nb04.sine_minutes("maml", config["sine"])
    assert minutes > IMPLICIT_TRAINING_MINUTES
    with pytest.raises(ValueError, match=f"{field}: cached"):
        load_or_train(name, config, refuse_to_train, minutes=minutes, directory=tmp_path)


@pytest.mark.parametrize(
    ("name", "change", "field", "minutes"),
    [
        ("04_sine_fomaml_seed0.pt", {"sine": nb04.SineConfig(meta_steps=40_000, k_query=5)}, "sine.k_query", None),
        ("09_controller_maml_seed0.pt", {"meta": nb09.ControllerMetaConfig(mask_seed=1)}, "meta.mask_seed", 3.0),
        ("09_controller_maml_seed1.pt", {"meta": nb09.ControllerMetaConfig(n_val=16)}, "meta.n_val", 3.0),
        ("09_controller_joint_seed0.pt", {"seed": 1}, "seed", 0.5),
        ("09_controller_joint_seed2.pt", {"start": {"run": "02_copy_seed1.pt"}}, "start.run", 0.5),
        ("09_controller_eval_maml_seed0.pt", {"eval_seed": 1}, "eval_seed", 3.0),
        ("09_controller_test_copy_seed1.pt", {"choice": "head|0.3|0"}, "choice", 2.0),
        ("04_sine_eval_seed2.pt", {"shots": [5, 10]}, "shots", nb04.SINE_EVAL_MINUTES),
    ],
)
def test_a_changed_field_of_a_quick_run_retrains_and_says_why(tmp_path, capsys, name, change, field, minutes):
    shutil.copy(CHECKPOINTS / name, tmp_path)
    config = {**all_configs()[name], **change}
    if minutes is None:
        minutes = nb04.sine_minutes("fomaml", config["sine"])
    assert minutes <= IMPLICIT_TRAINING_MINUTES
    result = load_or_train(name, config, lambda: {"marker": torch.tensor(1)}, minutes=minutes, directory=tmp_path)
    assert int(result["marker"]) == 1
    out = capsys.readouterr().out
    assert "another configuration" in out and f"{field}: cached" in out


def test_minutes_estimates_decide_raise_or_retrain():
    sine = nb04.sine_configs(nb04.SineConfig(), reptile_meta_steps=20_000)
    assert nb04.sine_minutes("maml", sine["maml"]) > IMPLICIT_TRAINING_MINUTES  # about 3.3 min: raises
    assert nb04.sine_minutes("pretrained", sine["pretrained"]) < 1
    assert nb04.sine_minutes("maml", nb04.SineConfig(meta_steps=200)) < 0.1  # a tiny run retrains
    assert max(nb09.CONTROLLER_MINUTES.values()) <= IMPLICIT_TRAINING_MINUTES
    with pytest.raises(ValueError, match="method"):
        nb04.sine_file("joint")


def test_seed_purposes_give_the_documented_streams():
    assert derive_seed(0, nb04.SINE_TASKS) == 1 and derive_seed(5, nb09.CONTROLLER_TASKS) == 6
    train, held = nb09.split_xor_masks(4, 3, seed=2)
    order = torch.randperm(16, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(held, meta.xor_masks(4)[order[:3]])
    tasks = nb09.controller_eval_tasks(nb09.ControllerMetaConfig(width=4, n_heldout=3, n_val=3, mask_seed=2), n_query=2,
                                       eval_seed=9)  # fmt: skip
    direct = meta.xor_copy_tasks(held, 16, 2, generator=torch.Generator().manual_seed(9))
    for a, b in zip(tasks, direct, strict=True):
        torch.testing.assert_close(a, b)


def test_controller_curves_runs_every_start():
    tasks = meta.xor_copy_tasks(meta.xor_masks(4)[:2], 3, 3, max_length=3, generator=torch.Generator().manual_seed(0))
    curves = nb09.controller_curves({"a": _tiny_controller(0), "b": _tiny_controller(1)}, tasks, inner_lr=0.5,
                                    max_steps=2)  # fmt: skip
    assert list(curves) == ["a", "b"] and curves["a"]["bits"].shape == (2, 3)


# --------------------------------------------------------------------------- bad input: a clear ValueError


def _flat_targets(b):
    """The slip: targets (T, K) instead of (T, K, 1)."""
    return b._replace(y_support=b.y_support.squeeze(-1), y_query=b.y_query.squeeze(-1))


BAD_META_CALLS = {
    "targets (T, K) for a (T, K, 1) model": (
        lambda m, p, b: meta.maml_meta_loss(m, p, _flat_targets(b), inner_lr=0.1, steps=1),
        r"y_support has shape \(5,\) per task \(torch.float64\) but the model predicts \(5, 1\)",
    ),
    "query targets (T, Q)": (
        lambda m, p, b: meta.maml_meta_loss(m, p, b._replace(y_query=b.y_query.squeeze(-1)), inner_lr=0.1, steps=1),
        r"y_query has shape \(7,\) per task",
    ),
    "one task's (K, 1) to adapt_tasks": (
        lambda m, p, b: meta.adapt_tasks(m, p, b.x_support[0], b.y_support[0], inner_lr=0.1, steps=1),
        "reads as 5 tasks of one scalar point each",
    ),
    "wrong-shaped params": (
        lambda m, p, b: meta.maml_meta_loss(
            m, {**p, "0.weight": torch.zeros(3, 1, dtype=torch.float64)}, b, inner_lr=0.1, steps=1
        ),
        r"params\['0.weight'\] is torch.float64 \(3, 1\), but the model's parameter is torch.float64 \(4, 1\)",
    ),
    "inputs with two features": (
        lambda m, p, b: meta.maml_meta_loss(
            m, p, b._replace(x_support=b.x_support.expand(-1, -1, 2)), inner_lr=0.1, steps=1
        ),
        "the model cannot take x_support",
    ),
    "float32 inputs, float64 model": (
        lambda m, p, b: meta.adapt_tasks(m, p, b.x_support.float(), b.y_support, inner_lr=0.1, steps=1),
        "the model cannot take x_support",
    ),
    "loss_fn=None": (
        lambda m, p, b: meta.maml_meta_loss(m, p, b, inner_lr=0.1, steps=1, loss_fn=None),
        "loss_fn must be a function",
    ),
    "loss_fn=None (reptile)": (
        lambda m, p, b: meta.reptile_direction(m, p, b, inner_lr=0.1, steps=1, loss_fn=None),
        "loss_fn must be a function",
    ),
    "metric_fn=3": (
        lambda m, p, b: meta.adaptation_curve(m, p, b, inner_lr=0.1, max_steps=1, metric_fn=3),
        "metric_fn must be a function",
    ),
    "x_eval of another rank": (
        lambda m, p, b: meta.adapt_and_predict(m, p, b.x_support, b.y_support, b.x_query[0], inner_lr=0.1, steps=1),
        "x_eval must have shape",
    ),
    "x_support not a tensor (adapt_and_predict)": (
        lambda m, p, b: meta.adapt_and_predict(m, p, [1.0], b.y_support, b.x_query, inner_lr=0.1, steps=1),
        "x_support must be a torch.Tensor",
    ),
}


@pytest.mark.parametrize("case", list(BAD_META_CALLS))
def test_meta_boundary_rejects_shapes_losses_and_params(case):
    call, match = BAD_META_CALLS[case]
    model = tiny_model()
    params = params_of(model)
    b = tasks(dtype=torch.float64)
    before = {k: v.detach().clone() for k, v in params.items()}
    with pytest.raises(ValueError, match=match):
        call(model, params, b)
    assert all(torch.equal(params[k], v) for k, v in before.items())


def test_mse_loss_refuses_to_broadcast():
    """(K, 1) predictions against (K,) targets gave 4.6082 instead of 4.6587 (every pair compared)."""
    with pytest.raises(ValueError, match=r"target is torch.float32 \(5,\) but prediction is torch.float32 \(5, 1\)"):
        meta.mse_loss(torch.zeros(5, 1), torch.ones(5))


def test_rejected_meta_train_step_leaves_weights_gradients_and_optimizer_unchanged():
    model = tiny_model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    meta.meta_train_step(model, opt, tasks(dtype=torch.float64), inner_lr=0.1, steps=1)  # grads and Adam state
    weights = [p.detach().clone() for p in model.parameters()]
    grads = [p.grad.clone() for p in model.parameters()]
    adam = {k: v.clone() for k, v in opt.state[next(model.parameters())].items()}
    for method in meta.META_METHODS:
        with pytest.raises(ValueError, match="y_support has shape"):
            meta.meta_train_step(model, opt, _flat_targets(tasks(dtype=torch.float64)), method=method, inner_lr=0.1,
                                 steps=1)  # fmt: skip
    assert all(torch.equal(p, w) for p, w in zip(model.parameters(), weights, strict=True))
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads, strict=True))
    assert all(torch.equal(opt.state[next(model.parameters())][k], v) for k, v in adam.items())
    with pytest.raises(ValueError, match="optimizer must be"):
        meta.meta_train_step(model, "adam", tasks(dtype=torch.float64), inner_lr=0.1, steps=1)


def test_sinusoid_sampler_validates_intervals_and_dtype():
    g = torch.Generator().manual_seed(0)
    for kwargs, match in (
        ({"amplitude": 5.0}, "amplitude must be a pair"),
        ({"phase": (0.0, 1.0, 2.0)}, "phase must be a pair"),
        ({"x_range": (1.0, float("nan"))}, "x_range"),
        ({"dtype": torch.int64}, "dtype must be a floating"),
    ):
        with pytest.raises(ValueError, match=match):
            meta.sample_sinusoid_tasks(2, 3, 3, generator=g, **kwargs)
    with pytest.raises(ValueError, match="sample_batch must be a function"):
        meta.meta_train(tiny_model(), None, method="maml", meta_steps=1, inner_lr=0.1, inner_steps=1, generator=g)
