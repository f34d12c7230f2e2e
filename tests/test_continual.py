"""Tests for memtutor.continual (notebook 05) and its exercise checks."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from notebook_cells import notebook_parameters

from memtutor import continual as cl
from memtutor.experiments import nb05_continual as nb05
from memtutor.memory import content_weights, read_memory
from memtutor.utils import IMPLICIT_TRAINING_MINUTES, config_dict, load_or_train, set_threads

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINTS = ROOT / "notebooks" / "checkpoints"
FAST = cl.ContinualConfig(epochs=3, eval_every=5)
M = nb05.CONTINUAL_METHODS


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # torch's default of 2 intra-op threads stalls these small ops on a loaded 2-core machine
    previous = torch.get_num_threads()
    set_threads()
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def streams():
    return {s: cl.make_task_stream(s, seed=0) for s in cl.SCENARIOS}


# --------------------------------------------------------------------------------- the stream


def test_stream_train_test_disjoint_and_cover_every_class(streams):
    for s in streams.values():
        tr, te, va = set(s.train_index.tolist()), set(s.test_index.tolist()), set(s.val_index.tolist())
        assert not tr & te and not tr & va and not va & te
        assert len(tr) + len(te) + len(va) == 1797  # every image used once
        assert set(s.val_digit.tolist()) == set(range(10))
        assert set(s.train_digit.tolist()) == set(range(10)) == set(s.test_digit.tolist())
        assert sorted(s.task_classes.flatten().tolist()) == list(range(10))
        # each item's task holds its digit
        assert bool((s.task_classes[s.train_task] == s.train_digit[:, None]).any(1).all())
        assert bool((s.task_classes[s.test_task] == s.test_digit[:, None]).any(1).all())


def test_stream_split_is_stratified_and_fixed_by_seed():
    a, b, c = (cl.make_task_stream("class", seed=k) for k in (0, 0, 1))
    assert torch.equal(a.test_index, b.test_index)
    assert not torch.equal(a.test_index, c.test_index)
    n = sum(torch.bincount(d, minlength=10) for d in (a.train_digit, a.val_digit, a.test_digit))
    n_test = torch.bincount(a.test_digit, minlength=10).double()
    assert bool(((n_test - 0.25 * n.double()).abs() <= 0.5).all())  # round(0.25 n_c) per class
    # the same seed gives the same test images in every scenario
    assert torch.equal(cl.make_task_stream("task", seed=1).test_index, c.test_index)
    n_val = torch.bincount(a.val_digit, minlength=10).double()
    assert bool(((n_val - 0.2 * n.double()).abs() <= 0.5).all())  # round(0.2 n_c) per class


def test_validation_split_leaves_the_test_images_alone():
    with_val, without = cl.make_task_stream("class", seed=3), cl.make_task_stream("class", seed=3, val_fraction=0)
    assert torch.equal(with_val.test_index, without.test_index)  # the test split does not move
    assert without.val_x.shape[0] == 0 and set(with_val.val_index.tolist()) <= set(without.train_index.tolist())
    v = cl.validation_stream(with_val)
    assert torch.equal(v.test_index, with_val.val_index) and torch.equal(v.train_index, with_val.train_index)
    with pytest.raises(ValueError, match="no validation images"):
        cl.validation_stream(without)


def test_scenario_labels_and_masks(streams):
    cls, task, dom = streams["class"], streams["task"], streams["domain"]
    assert cls.num_outputs == 10 and bool(cls.output_mask.all())
    assert torch.equal(cls.train_y, cls.train_digit)
    assert task.num_outputs == 10 and task.output_mask.sum(1).tolist() == [2] * 5
    assert bool(task.output_mask[task.train_task, task.train_y].all())  # the target is always allowed
    assert dom.num_outputs == 2 and set(dom.train_y.tolist()) == {0, 1}
    assert torch.equal(dom.train_y, (dom.train_digit % 2))  # position within {2k, 2k+1}
    assert cls.train_x.min() >= 0 and cls.train_x.max() <= 1


def test_stream_errors():
    with pytest.raises(ValueError, match="unknown scenario"):
        cl.make_task_stream("online")
    with pytest.raises(ValueError, match="would be empty"):
        cl.make_task_stream("class", num_tasks=6)
    with pytest.raises(ValueError, match="test_fraction"):
        cl.make_task_stream("class", test_fraction=1.0)
    with pytest.raises(ValueError, match="val_fraction"):
        cl.make_task_stream("class", test_fraction=0.5, val_fraction=0.5)
    with pytest.raises(ValueError, match="class_order"):
        cl.make_task_stream("class", class_order=[0, 0, 1, 2, 3, 4, 5, 6, 7, 8])
    s = cl.make_task_stream("class", num_tasks=2)
    with pytest.raises(ValueError, match="no training items"):
        s.train_task_data(4)


def test_custom_class_order_and_short_stream():
    s = cl.make_task_stream("task", num_tasks=2, class_order=[9, 8, 7, 6, 5, 4, 3, 2, 1, 0])
    assert s.task_classes.tolist() == [[9, 8], [7, 6]]
    assert set(s.train_digit.tolist()) == {6, 7, 8, 9}


# --------------------------------------------------------------------------------- the metrics

# A hand-computed example. Task 0 peaks at 0.95 *after* it was learned, so forgetting differs
# from -BWT.
R3 = torch.tensor([[0.90, 0.10, 0.20], [0.95, 0.80, 0.30], [0.50, 0.70, 0.95]], dtype=torch.float64)
B3 = torch.tensor([0.10, 0.20, 0.25], dtype=torch.float64)


def test_metrics_on_hand_computed_matrix():
    assert cl.average_accuracy(R3).item() == pytest.approx((0.50 + 0.70 + 0.95) / 3)
    assert cl.backward_transfer(R3).item() == pytest.approx(((0.50 - 0.90) + (0.70 - 0.80)) / 2)  # -0.25
    # FWT: R[0,1] - b[1] = 0.10 - 0.20, R[1,2] - b[2] = 0.30 - 0.25
    assert cl.forward_transfer(R3, B3).item() == pytest.approx(((0.10 - 0.20) + (0.30 - 0.25)) / 2)  # -0.025
    # forgetting: task 0: max(0.90, 0.95) - 0.50; task 1: max(0.10, 0.80) - 0.70
    assert cl.average_forgetting(R3).item() == pytest.approx(((0.95 - 0.50) + (0.80 - 0.70)) / 2)  # 0.275


def test_fwt_baseline_term_matters():
    """With a zero baseline FWT is the mean of the superdiagonal; the baseline shifts it."""
    zero = torch.zeros(3, dtype=torch.float64)
    assert cl.forward_transfer(R3, zero).item() == pytest.approx((0.10 + 0.30) / 2)
    assert cl.forward_transfer(R3, zero + 0.5).item() == pytest.approx((0.10 + 0.30) / 2 - 0.5)
    b = torch.tensor([0.9, 0.0, 0.0], dtype=torch.float64)  # b[0] is never used
    assert cl.forward_transfer(R3, b).item() == pytest.approx((0.10 + 0.30) / 2)


def test_learning_and_newest_task_accuracy_on_hand_computed_matrix():
    assert cl.learning_accuracy(R3).item() == pytest.approx((0.90 + 0.80 + 0.95) / 3)
    assert cl.newest_task_accuracy(R3).item() == pytest.approx(0.95)
    # BWT is the final row minus the diagonal: a lower diagonal gives a better BWT at the same ACC
    lower = R3.clone()
    lower[0, 0] = 0.6
    assert cl.backward_transfer(lower) > cl.backward_transfer(R3) and cl.learning_accuracy(
        lower
    ) < cl.learning_accuracy(R3)


def test_metrics_perfect_and_catastrophic():
    eye = torch.eye(4)
    assert cl.average_accuracy(eye) == pytest.approx(0.25)
    assert cl.backward_transfer(eye) == pytest.approx(-1.0)
    assert cl.average_forgetting(eye) == pytest.approx(1.0)
    ones = torch.ones(4, 4)
    assert cl.average_accuracy(ones) == 1 and cl.backward_transfer(ones) == 0 and cl.average_forgetting(ones) == 0


def test_metrics_batched_over_seeds_equal_loop():
    g = torch.Generator().manual_seed(0)
    R = torch.rand(5, 4, 4, generator=g)
    b = torch.rand(5, 4, generator=g)
    for fn in (cl.average_accuracy, cl.backward_transfer, cl.average_forgetting):
        torch.testing.assert_close(fn(R), torch.stack([fn(r) for r in R]))
    torch.testing.assert_close(
        cl.forward_transfer(R, b), torch.stack([cl.forward_transfer(r, bb) for r, bb in zip(R, b, strict=True)])
    )
    table = nb05.summarize(R, b)
    assert table["ACC"][0] == pytest.approx(cl.average_accuracy(R).mean().item())
    assert table["BWT"][1] == pytest.approx(cl.backward_transfer(R).std().item())


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 6), st.integers(0, 2**31 - 1))
def test_metric_properties(T, seed):
    R = torch.rand(T, T, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    f, bwt = cl.average_forgetting(R), cl.backward_transfer(R)
    assert f >= -bwt - 1e-12  # forgetting >= -BWT: the max includes the row right after learning
    assert 0 <= cl.average_accuracy(R) <= 1
    assert -1 <= bwt <= 1


def test_metric_errors():
    with pytest.raises(ValueError, match="square"):
        cl.average_accuracy(torch.rand(3, 4))
    with pytest.raises(ValueError, match="square"):
        cl.backward_transfer(torch.rand(4))
    with pytest.raises(ValueError, match="at least 2 tasks"):
        cl.backward_transfer(torch.rand(1, 1))
    with pytest.raises(ValueError, match="outside"):
        cl.average_accuracy(torch.full((2, 2), 1.5))
    with pytest.raises(ValueError, match="baseline must have shape"):
        cl.forward_transfer(torch.rand(3, 3), torch.rand(2))
    with pytest.raises(ValueError, match="NaN"):
        cl.average_accuracy(torch.full((2, 2), float("nan")))
    with pytest.raises(ValueError, match="seed dimension"):
        nb05.summarize(torch.rand(3, 3), torch.rand(3))


def test_early_accuracy_equals_loop():
    g = torch.Generator().manual_seed(0)
    S, E, T = 3, 12, 4
    curve = torch.rand(S, E, T, generator=g)
    curve_step = torch.arange(1, E + 1).float().mul(10).expand(S, -1).clone()
    task_end = torch.tensor([[30, 60, 90, 120], [25, 55, 95, 120], [30, 70, 100, 120]])
    for k in (1, 2):
        got = cl.early_accuracy(curve, curve_step, task_end, k)
        want = torch.zeros(S, T - 1)
        for s in range(S):
            for j in range(1, T):
                first = next(e for e in range(E) if curve_step[s, e] > task_end[s, j - 1])
                want[s, j - 1] = curve[s, first + k - 1, j]
        torch.testing.assert_close(got, want)
    with pytest.raises(ValueError, match="fewer than k"):
        cl.early_accuracy(curve, curve_step, task_end, 5)
    with pytest.raises(ValueError, match="task_end"):
        cl.early_accuracy(curve, curve_step, task_end[:, :2])


# --------------------------------------------------------------------------------- the learner


def test_config_errors():
    with pytest.raises(ValueError, match="epochs"):
        cl.ContinualConfig(epochs=0)
    with pytest.raises(ValueError, match="replay_ratio"):
        cl.ContinualConfig(replay_ratio=-1)
    with pytest.raises(ValueError, match="meta_stepsize"):
        cl.ContinualConfig(meta_stepsize=0)
    with pytest.raises(ValueError, match="prototype_source"):
        cl.ContinualConfig(prototype_source="some")
    with pytest.raises(ValueError, match="ewc_lambda"):
        cl.ContinualConfig(ewc_lambda=-1.0)
    assert cl.ContinualConfig(batch_size=32, replay_ratio=0.5).replay_batch == 16


def test_train_stream_errors(streams):
    with pytest.raises(ValueError, match="dict of the switches"):
        cl.train_stream(streams["class"], "naive")
    with pytest.raises(ValueError, match="bad method switches"):
        cl.train_stream(streams["class"], dict(replay="ewc"))
    with pytest.raises(ValueError, match="memory=True needs replay"):
        cl.train_stream(streams["class"], dict(replay=None, memory=True, meta=False, joint=False))
    with pytest.raises(ValueError, match="meta must be"):
        cl.train_stream(streams["class"], dict(replay="uniform", meta="maml"))
    with pytest.raises(ValueError, match="meta-updates need replay"):
        cl.train_stream(streams["class"], dict(replay=None, meta="pooled"))
    with pytest.raises(ValueError, match="exceeds"):
        cl.train_stream(streams["class"], M["naive"], num_tasks=6)
    with pytest.raises(ValueError, match="unknown scenario"):
        nb05.run_methods("online", ["naive"], [0])
    with pytest.raises(ValueError, match="unknown method"):
        nb05.run_methods("task", ["ewc"], [0])
    with pytest.raises(ValueError, match="buffer_size too large"):  # 300 per class > ~135 training images
        cl.train_stream(streams["class"], M["uniform replay"], cl.ContinualConfig(buffer_size=3000, epochs=1))


def test_batched_loss_equals_one_sample_loop(streams):
    """The batched step's gradient is the mean of the one-sample-at-a-time gradients."""
    s = streams["task"]
    torch.manual_seed(0)
    net = cl.ContinualNet(64, 16, 10).double()
    x, y, t = s.train_x[:12].double(), s.train_y[:12], s.train_task[:12]
    loss = torch.nn.functional.cross_entropy(cl.masked_logits(net(x), s.output_mask[t]), y)
    g_batch = torch.autograd.grad(loss, list(net.parameters()))
    g_loop = [torch.zeros_like(p) for p in net.parameters()]
    for i in range(12):
        li = torch.nn.functional.cross_entropy(
            cl.masked_logits(net(x[i : i + 1]), s.output_mask[t[i : i + 1]]), y[i : i + 1]
        )
        for acc, g in zip(g_loop, torch.autograd.grad(li, list(net.parameters())), strict=True):
            acc += g / 12
    for a, b in zip(g_batch, g_loop, strict=True):
        torch.testing.assert_close(a, b)


def _filled_buffer(s, replay="prioritized", tasks=2, per_task=20):
    buf = cl.make_replay_buffer(tasks * per_task, replay, cl.ContinualConfig(), "cpu")
    for t in range(tasks):
        idx = (s.train_task == t).nonzero().squeeze(1)[:per_task]
        buf.add({"x": s.train_x[idx], "y": s.train_y[idx], "task": s.train_task[idx]})
    return buf


def test_replay_step_equals_a_plain_loop_and_rescores_what_it_replayed(streams):
    """replay_step: current CE mean + mean of w_i CE_i over replayed items, priorities <- (CE_i + eps)^alpha."""
    import copy

    s = streams["class"]
    cfg = cl.ContinualConfig(lr=0.1, batch_size=8, replay_ratio=0.5, alpha=0.6, beta=0.5)  # the buffer's alpha
    torch.manual_seed(0)
    net = cl.ContinualNet(64, 16, 10)
    buf = _filled_buffer(s)
    net2, buf2 = copy.deepcopy(net), _filled_buffer(s)  # an identical second buffer, built the same way
    bx, by, bt = s.train_x[:8], s.train_y[:8], s.train_task[:8]
    loss, images = cl.replay_step(
        net, torch.optim.SGD(net.parameters(), lr=cfg.lr), s, bx, by, bt, buf, cfg, torch.Generator().manual_seed(5)
    )
    assert images == 8 + 4
    # by hand: the same draw, two separate forward passes, an explicit SGD update
    rb, ridx, rw = buf2.sample(4, cfg.beta, generator=torch.Generator().manual_seed(5))
    ce = torch.nn.functional.cross_entropy
    cur = ce(cl.masked_logits(net2(bx), s.output_mask[bt]), by)
    rep = ce(cl.masked_logits(net2(rb["x"]), s.output_mask[rb["task"]]), rb["y"], reduction="none")
    want = cur + (rw * rep).mean()
    grads = torch.autograd.grad(want, list(net2.parameters()))
    torch.testing.assert_close(loss, want.detach())
    for p, q, g in zip(net.parameters(), net2.parameters(), grads, strict=True):
        torch.testing.assert_close(p.detach(), q.detach() - cfg.lr * g)
    last = {int(k): float(e) for k, e in zip(ridx, rep.detach(), strict=True)}  # a repeated draw keeps its last loss
    stored = buf.tree.leaves(torch.tensor(list(last)))
    want_p = (torch.tensor(list(last.values()), dtype=torch.float64) + cl.PRIORITY_EPS) ** cfg.alpha
    torch.testing.assert_close(stored, want_p, check_dtype=False)


def test_ewc_fisher_and_penalty_equal_loops(streams):
    s = streams["task"]
    torch.manual_seed(0)
    net = cl.ContinualNet(64, 8, 10).double()
    x, y, t = s.train_x[:7].double(), s.train_y[:7], s.train_task[:7]
    fisher = cl.diagonal_fisher(net, s, x, y, t)
    want = {k: torch.zeros_like(v) for k, v in net.named_parameters()}
    for i in range(7):
        li = torch.nn.functional.cross_entropy(
            cl.masked_logits(net(x[i : i + 1]), s.output_mask[t[i : i + 1]]), y[i : i + 1]
        )
        for (k, _), g in zip(net.named_parameters(), torch.autograd.grad(li, list(net.parameters())), strict=True):
            want[k] += g.pow(2) / 7
    for k in want:
        torch.testing.assert_close(fisher[k], want[k])
    params = {k: v.detach() + 0.1 for k, v in net.named_parameters()}
    anchor = {k: v.detach() for k, v in net.named_parameters()}
    expected = sum(0.5 * (fisher[k] * 0.01).sum() for k in params)
    torch.testing.assert_close(cl.ewc_penalty(params, anchor, fisher), torch.as_tensor(expected))
    assert float(cl.ewc_penalty(anchor, anchor, fisher)) == 0.0


def test_ewc_implicit_step_is_the_proximal_step_and_stable_for_any_lambda():
    g = torch.Generator().manual_seed(0)
    theta = {"w": torch.randn(4, 3, generator=g, dtype=torch.float64)}
    anchor = {"w": torch.randn(4, 3, generator=g, dtype=torch.float64)}
    fisher = {"w": torch.rand(4, 3, generator=g, dtype=torch.float64)}
    for step in (1e-6, 0.3, 1e6):
        p = {"w": theta["w"].clone()}
        cl.ewc_implicit_step(p, anchor, fisher, step)
        # the minimiser of step * penalty + ||p - theta||^2 / 2: its gradient vanishes there
        q = p["w"].clone().requires_grad_()
        obj = step * cl.ewc_penalty({"w": q}, anchor, fisher) + 0.5 * (q - theta["w"]).pow(2).sum()
        (grad,) = torch.autograd.grad(obj, q)
        assert grad.abs().max() < 1e-6 * max(1.0, step)
        # it never overshoots the anchor: each weight moves part of the way towards it
        moved, gap = p["w"] - theta["w"], anchor["w"] - theta["w"]
        assert ((moved * gap) >= 0).all() and (moved.abs() <= gap.abs() + 1e-12).all()
    small = {"w": theta["w"].clone()}
    cl.ewc_implicit_step(small, anchor, fisher, 1e-6)  # to first order, a gradient step on the penalty
    explicit = theta["w"] - 1e-6 * fisher["w"] * (theta["w"] - anchor["w"])
    torch.testing.assert_close(small["w"], explicit, rtol=0, atol=1e-11)
    with pytest.raises(ValueError, match="step"):
        cl.ewc_implicit_step(theta, anchor, fisher, -1.0)


def test_online_ewc_with_a_huge_lambda_stays_finite_and_divergence_is_reported(streams):
    s = streams["domain"]
    cfg = replace(FAST, epochs=2, eval_every=10**6, lr=0.5, ewc_lambda=1e5)
    ewc = cl.train_stream(s, M["online EWC"], cfg, num_tasks=3)
    assert not bool(ewc["diverged"]) and torch.isfinite(ewc["loss"]).all()
    # a huge lambda pins the weights the first task needs: it keeps that task through the next two
    assert ewc["R"][-1, 0] > ewc["R"][0, 0] - 0.05
    broken = cl.train_stream(s, M["naive"], replace(cfg, lr=1e30), num_tasks=2)
    assert bool(broken["diverged"])


def test_search_and_table_share_one_split_and_never_share_an_image():
    search = nb05.SearchConfig(learner=FAST, seeds=[100, 101], trials=2)
    table = nb05.MethodsTableConfig(learner=FAST, seeds=[0, 1], chosen={sc: {m: {} for m in M} for sc in cl.SCENARIOS})
    assert search.split_seed == table.split_seed == nb05.SPLIT_SEED
    assert nb05.check_disjoint(search, table) == 3 * 450  # every scenario's 450 test images checked
    with pytest.raises(ValueError, match="test images are training or validation images"):
        nb05.check_disjoint(search, replace(table, split_seed=1))


def test_pooled_episodes_hold_the_same_images_in_one_episode(streams):
    s = streams["task"]
    buf = _filled_buffer(s)
    x, y, task = s.train_task_data(2)
    per = cl.make_episodes(x, y, task, buf, 8, torch.Generator().manual_seed(0))
    pooled = cl.make_episodes(x, y, task, buf, 8, torch.Generator().manual_seed(0), pooled=True)
    assert pooled.x_support.shape == (1, 24, 64)
    torch.testing.assert_close(pooled.x_support[0], per.x_support.reshape(24, 64))
    torch.testing.assert_close(pooled.y_support[0], per.y_support.reshape(24, 2))


def test_gradient_evaluations_are_counted(streams):
    """Ordinary steps count current + replayed images; a meta-update counts episodes x shots x inner steps."""
    s = streams["task"]
    cfg = replace(FAST, epochs=1, eval_every=10**6)
    n = [int((s.train_task == t).sum()) for t in range(2)]
    steps = [-(-k // cfg.batch_size) for k in n]
    naive = cl.train_stream(s, M["naive"], cfg, num_tasks=2)
    assert int(naive["grad_evals"]) == sum(n) and int(naive["grad_evals_meta"]) == 0
    uni = cl.train_stream(s, M["uniform replay"], cfg, num_tasks=2)
    assert int(uni["grad_evals"]) == sum(n) + steps[1] * cfg.replay_batch  # the buffer is empty during task 0
    full = cl.train_stream(s, M["full agent"], cfg, num_tasks=2)
    ctrl = cl.train_stream(s, M["rehearsal control"], cfg, num_tasks=2)
    per_task = min(cfg.meta_shots, cfg.buffer_size // 2)
    metas = [steps[0] // cfg.meta_every, (steps[0] + steps[1]) // cfg.meta_every - steps[0] // cfg.meta_every]
    want_meta = (metas[0] * 1 + metas[1] * 2) * per_task * cfg.meta_steps
    assert int(full["grad_evals_meta"]) == want_meta == int(ctrl["grad_evals_meta"])
    assert int(full["grad_evals"]) == int(uni["grad_evals"]) + want_meta
    ewc = cl.train_stream(s, M["online EWC"], cfg, num_tasks=2)
    assert int(ewc["grad_evals"]) == sum(n) + n[0]  # the Fisher of every task but the last


def test_current_task_prototypes_from_all_its_images(streams):
    s = streams["class"]
    cfg = replace(FAST, epochs=1, buffer_size=40)
    res = cl.train_stream(s, M["replay + memory"], replace(cfg, prototype_source="all"), num_tasks=1, return_model=True)
    net, pm = res["model"], res["memory"]
    x0, d0 = s.train_task_data(0)[0], s.train_digit[s.train_task == 0]
    with torch.no_grad():
        f = net.embed(x0)
    for d in (0, 1):
        torch.testing.assert_close(pm.memory[d], f[d0 == d].mean(0))
    ex = cl.train_stream(
        s, M["replay + memory"], replace(cfg, prototype_source="exemplars"), num_tasks=1, return_model=True
    )
    assert not torch.allclose(ex["memory"].memory[0], pm.memory[0])  # 20 exemplars, not all ~100 images


def test_masked_logits_restrict_prediction(streams):
    s = streams["task"]
    logits = torch.randn(6, 10)
    task = torch.tensor([0, 1, 2, 3, 4, 0])
    pred = cl.masked_logits(logits, s.output_mask[task]).argmax(-1)
    assert bool((s.task_classes[task] == pred[:, None]).any(1).all())


@pytest.mark.slow
def test_training_path_shortened_stream_loss_falls_and_naive_forgets(streams):
    # 6 passes: with a validation split held out, 3 passes over ~200 images are too few to learn task 1
    res = cl.train_stream(streams["class"], M["naive"], replace(FAST, epochs=6), seed=0, num_tasks=2)
    loss = res["loss"]
    assert loss[-5:].mean() < 0.5 * loss[:5].mean()
    R = res["R"]
    assert R.shape == (2, 2) and res["baseline"].shape == (2,)
    assert R[0, 0] > 0.9 and R[1, 1] > 0.9  # each task learned (held-out test data)
    assert R[1, 0] < 0.2  # ...and task 0 forgotten in class-incremental learning
    assert res["curve"].shape[1] == 2 and res["curve"].shape[0] == res["curve_step"].shape[0]
    assert res["task_end"].tolist() == sorted(res["task_end"].tolist())


@pytest.mark.slow
def test_replay_priorities_change_after_replay_and_replay_helps(streams):
    s = streams["class"]
    res = cl.train_stream(s, M["prioritized replay"], FAST, seed=0, num_tasks=2)
    assert int(res["priority_changes"]) > 0
    assert res["R"][1, 0] > 0.5  # replay keeps task 0 alive where naive fine-tuning drops it
    uni = cl.train_stream(s, M["uniform replay"], FAST, seed=0, num_tasks=2)
    assert int(uni["priority_changes"]) == 0  # alpha = 0: every priority stays 1


@pytest.mark.slow
def test_full_agent_and_joint_run_every_scenario(streams):
    for name in ("full agent", "joint"):
        for scen in ("task", "domain"):
            res = cl.train_stream(streams[scen], M[name], replace(FAST, epochs=2), seed=1, num_tasks=2)
            assert bool((res["R"].diagonal() > 0.8).all()), (name, scen, res["R"])


@pytest.mark.slow
def test_training_is_deterministic(streams):
    fast = replace(FAST, epochs=2)
    a = cl.train_stream(streams["domain"], M["full agent"], fast, seed=3, num_tasks=2)
    b = cl.train_stream(streams["domain"], M["full agent"], fast, seed=3, num_tasks=2, return_model=True)
    torch.testing.assert_close(a["loss"], b["loss"], rtol=0, atol=0)
    torch.testing.assert_close(a["R"], b["R"], rtol=0, atol=0)
    assert isinstance(b["model"], cl.ContinualNet) and isinstance(b["memory"], cl.PrototypeMemory)
    assert "model" not in a


def test_evaluate_does_not_change_state(streams):
    """The seed's evaluation wrote to memory, so the order of evaluation changed the scores."""
    s = streams["class"]
    torch.manual_seed(0)
    net = cl.ContinualNet(64, 32, 10)
    pm = cl.write_prototypes(net, s, s.train_x[:100], s.train_digit[:100])
    before = [p.clone() for p in net.parameters()]
    mem = pm.memory.clone()
    a = cl.evaluate_stream(net, s, pm)
    b = cl.evaluate_stream(net, s, pm)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert all(torch.equal(p, q) for p, q in zip(before, net.parameters(), strict=True))
    assert torch.equal(mem, pm.memory)
    assert net.training  # train/eval mode restored


def test_prototypes_are_class_means_read_by_content(streams):
    s = streams["class"]
    torch.manual_seed(0)
    net = cl.ContinualNet(64, 32, 10)
    x, d = s.train_x[:300], s.train_digit[:300]
    pm = cl.write_prototypes(net, s, x, d)
    feats = net.embed(x).detach()
    for digit in d.unique().tolist():
        torch.testing.assert_close(pm.memory[digit], feats[d == digit].mean(0))
    assert pm.written.tolist() == [k in d.tolist() for k in range(10)]
    # rewriting replaces (full erase), it does not accumulate
    pm2 = cl.write_prototypes(net, s, x[d == d[0]], d[d == d[0]])
    torch.testing.assert_close(pm2.memory[d[0]], pm.memory[d[0]])
    # the scores are memtutor.memory's content weights summed per output
    allowed = torch.ones(5, 10, dtype=torch.bool)
    sc = cl.prototype_scores(pm, feats[:5], 10.0, 10, allowed)
    w = content_weights(pm.memory.expand(5, -1, -1), feats[:5, None], torch.full((5, 1), 10.0))[:, 0]
    torch.testing.assert_close(sc, w * pm.written)
    # reading with one-hot weights returns the stored prototype
    onehot = torch.nn.functional.one_hot(torch.tensor([[3]]), 10).float()
    torch.testing.assert_close(read_memory(pm.memory[None], onehot)[0, 0], pm.memory[3])


def test_task_il_prototypes_only_vote_within_task(streams):
    s = streams["task"]
    torch.manual_seed(0)
    net = cl.ContinualNet(64, 32, 10)
    pm = cl.write_prototypes(net, s, s.train_x, s.train_digit)
    pred = cl.predict(net, s, s.test_x, s.test_task, pm)
    assert bool((s.task_classes[s.test_task] == pred[:, None]).any(1).all())


def test_episodes_hold_one_task_each(streams):
    s = streams["task"]
    buf = cl.make_replay_buffer(40, "prioritized", cl.ContinualConfig(), "cpu")
    for t in range(2):
        idx = (s.train_task == t).nonzero().squeeze(1)[:20]
        buf.add({"x": s.train_x[idx], "y": s.train_y[idx], "task": s.train_task[idx]})
    x, y, task = s.train_task_data(2)
    ep = cl.make_episodes(x, y, task, buf, 8, torch.Generator().manual_seed(0))
    assert ep.x_support.shape == (3, 8, 64) and ep.y_support.shape == (3, 8, 2)
    assert ep.y_support[..., 1].tolist() == [[2] * 8, [0] * 8, [1] * 8]


def test_meta_update_is_a_reptile_step_towards_the_adapted_weights(streams):
    """theta <- theta + eps (mean_i phi_i - theta), phi_i = meta_steps SGD steps on episode i's masked CE."""
    s = streams["task"]
    torch.manual_seed(0)
    net = cl.ContinualNet(64, 16, 10)
    x = torch.stack([s.train_x[s.train_task == t][:6] for t in range(3)])  # (3 episodes, 6, D)
    tgt = torch.stack(
        [torch.stack([s.train_y[s.train_task == t][:6], s.train_task[s.train_task == t][:6]], -1) for t in range(3)]
    )
    episodes = cl.Episodes(x, tgt)
    cfg = cl.ContinualConfig(lr=0.2, meta_steps=3, meta_stepsize=0.5)
    theta = {k: v.detach().clone() for k, v in net.named_parameters()}
    # reference: a plain loop over episodes, ordinary autograd, copies of the network
    phis = []
    for i in range(3):
        p = {k: v.clone().requires_grad_(True) for k, v in theta.items()}
        for _ in range(cfg.meta_steps):
            logits = torch.func.functional_call(net, p, (x[i],))
            loss = torch.nn.functional.cross_entropy(
                cl.masked_logits(logits, s.output_mask[tgt[i, :, 1]]), tgt[i, :, 0]
            )
            grads = torch.autograd.grad(loss, list(p.values()))
            p = {
                k: (v - cfg.lr * gk).detach().requires_grad_(True) for (k, v), gk in zip(p.items(), grads, strict=True)
            }
        phis.append({k: v.detach() for k, v in p.items()})
    cl.reptile_update(net, s, episodes, cfg)
    for k, v in net.named_parameters():
        mean_phi = torch.stack([ph[k] for ph in phis]).mean(0)
        torch.testing.assert_close(v.detach(), theta[k] + 0.5 * (mean_phi - theta[k]), rtol=1e-4, atol=1e-6)
    assert any(not torch.equal(v.detach(), theta[k]) for k, v in net.named_parameters())


@pytest.mark.slow
def test_run_methods_and_search_shapes():
    res = nb05.run_methods("task", ["naive", "uniform replay"], [0, 1], replace(FAST, epochs=1), num_tasks=2)
    assert res["naive/R"].shape == (2, 2, 2) and res["uniform replay/baseline"].shape == (2, 2)
    assert res["naive/grad_evals"].shape == (2,)
    tiny = nb05.SearchConfig(
        learner=replace(FAST, epochs=1), seeds=[7], trials=2, scenarios=["task"], methods=["naive", "online EWC"]
    )
    search = nb05.validation_search(tiny)
    assert search["task/online EWC/ACC"].shape == (2, 1)
    chosen = nb05.choose(search, tiny)
    best = int(search["task/naive/ACC"].mean(1).argmax())
    assert chosen["task"]["naive"] == nb05.search_trials("naive", 2)[best]


def test_search_trials_share_draws_across_learners():
    trials = {m: nb05.search_trials(m, 5) for m in nb05.SEARCH_KNOBS}
    lrs = {m: [t["lr"] for t in ts] for m, ts in trials.items()}
    assert all(v == lrs["naive"] for v in lrs.values())  # the same learning rate in trial i for everyone
    assert trials["full agent"] == trials["rehearsal control"]  # the control shares every setting
    assert len(set(lrs["naive"])) == 5 and all(0.02 <= lr <= 0.5 for lr in lrs["naive"])
    assert all(set(t) == {"lr", *nb05.SEARCH_KNOBS[m]} for m, ts in trials.items() for t in ts)
    assert nb05.search_trials("naive", 5, search_seed=1) != trials["naive"]
    with pytest.raises(ValueError, match="unknown method"):
        nb05.search_trials("GEM", 2)
    switches, cfg = nb05.learner_settings("replay + memory", FAST, {"replay": "uniform", "lr": 0.3})
    assert switches["replay"] == "uniform" and cfg.lr == 0.3 and M["replay + memory"]["replay"] == "prioritized"


def test_paired_interval_is_a_t_interval():
    d = torch.tensor([0.002, 0.002, 0.004, 0.0, 0.004])
    mean, lo, hi = nb05.paired_interval(d)
    half = 2.7764451 * d.double().std().item() / 5**0.5  # t_{0.975, 4}
    assert mean == pytest.approx(0.0024) and lo == pytest.approx(mean - half) and hi == pytest.approx(mean + half)
    with pytest.raises(ValueError, match="at least 2"):
        nb05.paired_interval(torch.tensor([0.1]))


# --------------------------------------------------------------------------------- cached results


@pytest.fixture(scope="module")
def params():
    """Notebook 05's parameters cell, run: the defaults a reader gets."""
    return notebook_parameters("05_continual_agent.ipynb", {"cl": cl})


def _search_config(p: dict, **changes) -> nb05.SearchConfig:
    kw = dict(learner=p["CFG"], seeds=p["VAL_SEEDS"], trials=p["TRIALS"])
    return nb05.SearchConfig(**{**kw, **changes})


def _search(p: dict) -> dict:
    return torch.load(CHECKPOINTS / nb05.SEARCH_FILE, weights_only=True)["result"]


def _methods_config(p: dict, **learner_changes) -> nb05.MethodsTableConfig:
    chosen = nb05.choose(_search(p), _search_config(p))
    return nb05.MethodsTableConfig(learner=replace(p["CFG"], **learner_changes), seeds=p["SEEDS"], chosen=chosen)


def _no_training():
    raise AssertionError("a cached result with an unchanged configuration must load without training")


def test_committed_results_record_the_notebook_defaults(params):
    for name, config in ((nb05.SEARCH_FILE, _search_config(params)), (nb05.METHODS_FILE, _methods_config(params))):
        data = torch.load(CHECKPOINTS / name, weights_only=True)
        assert data["config"] == config_dict(config), name


def test_test_seeds_are_not_validation_seeds(params):
    assert not set(params["SEEDS"]) & set(params["VAL_SEEDS"])
    assert len(params["SEEDS"]) >= 3 and len(params["VAL_SEEDS"]) >= 2


def test_unchanged_configuration_loads_without_training(params):
    results = load_or_train(
        nb05.METHODS_FILE, _methods_config(params), _no_training, minutes=nb05.METHODS_MINUTES, directory=CHECKPOINTS
    )
    assert results["class/naive/R"].shape == (len(params["SEEDS"]), 5, 5)
    search = load_or_train(
        nb05.SEARCH_FILE, _search_config(params), _no_training, minutes=nb05.SEARCH_MINUTES, directory=CHECKPOINTS
    )
    assert search["class/naive/ACC"].shape == (params["TRIALS"], len(params["VAL_SEEDS"]))


@pytest.mark.parametrize(
    ("which", "change", "field"),
    [
        ("methods", dict(lr=0.05), "learner.lr"),
        ("methods", dict(buffer_size=100), "learner.buffer_size"),
        ("search", dict(seeds=(100, 101)), "seeds"),
        ("search", dict(trials=4), "trials"),
    ],
)
def test_changed_parameter_is_detected(params, which, change, field):
    """Both results take minutes to recompute: a changed parameter raises, naming the field."""
    if which == "methods":
        name, config, minutes = nb05.METHODS_FILE, _methods_config(params, **change), nb05.METHODS_MINUTES
    else:
        name, config, minutes = nb05.SEARCH_FILE, _search_config(params, **change), nb05.SEARCH_MINUTES
    assert minutes > IMPLICIT_TRAINING_MINUTES
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        load_or_train(name, config, _no_training, minutes=minutes, directory=CHECKPOINTS)


def test_changed_method_switches_are_detected(params):
    methods = {**nb05.CONTINUAL_METHODS, "full agent": dict(M["full agent"], meta="pooled")}
    config = _search_config(params, methods=methods)
    with pytest.raises(ValueError, match=r"methods\.full agent\.meta"):
        load_or_train(nb05.SEARCH_FILE, config, _no_training, minutes=nb05.SEARCH_MINUTES, directory=CHECKPOINTS)


def test_configs_take_notebook_values_and_reject_bad_ones():
    c = nb05.SearchConfig(learner=FAST, seeds=[100, 101], trials=3)
    assert c.seeds == (100, 101) and c.methods["naive"] == M["naive"]
    with pytest.raises(ValueError, match="no search space"):
        nb05.SearchConfig(learner=FAST, seeds=[0], trials=2, methods={"GEM": M["naive"]})
    with pytest.raises(ValueError, match="scenarios"):
        nb05.SearchConfig(learner=FAST, seeds=[0], trials=2, scenarios=["online"])
    with pytest.raises(ValueError, match="seeds"):
        nb05.MethodsTableConfig(learner=FAST, seeds=[], chosen={})
    with pytest.raises(ValueError, match="no chosen settings"):
        nb05.MethodsTableConfig(learner=FAST, seeds=[0], chosen={"task": {}})


@pytest.mark.slow
def test_training_path_of_both_results_with_a_tiny_budget(tmp_path):
    tiny = replace(FAST, epochs=1)
    search_cfg = nb05.SearchConfig(learner=tiny, seeds=[9], trials=1, scenarios=["task"], methods=["naive"])
    search = load_or_train(
        "s.pt", search_cfg, lambda: nb05.validation_search(search_cfg), minutes=0.1, directory=tmp_path
    )
    table = nb05.MethodsTableConfig(
        learner=tiny,
        seeds=[0],
        scenarios=["task"],
        methods={"naive": M["naive"]},
        chosen=nb05.choose(search, search_cfg),
    )
    res = load_or_train("t.pt", table, lambda: nb05.train_methods(table), minutes=0.1, directory=tmp_path)
    assert res["task/naive/R"].shape == (1, 5, 5)
    again = load_or_train("t.pt", table, _no_training, minutes=0.1, directory=tmp_path)
    torch.testing.assert_close(again["task/naive/R"], res["task/naive/R"])


# --------------------------------------------------------------------------------- benchmark


@pytest.mark.slow
def test_benchmark_quick_runs():
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "continual.py"), "--quick"],
        check=True, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert "ratio" in out.stdout


def test_agent_diagram_labels_every_part_and_rejects_bad_sizes():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for n in (2, 5, 8):
        fig = nb05.draw_continual_agent(n)
        texts = " ".join(t.get_text() for ax in fig.axes for t in ax.texts)
        plt.close(fig)
        assert f"$T_{{{n}}}$" in texts and f"$T_{{{n + 1}}}$" not in texts  # one box per task of the stream
        for part in ("replay buffer", "$f_\\theta$", "Reptile", "prototype memory $M$", "$R_{i,j}$", "ACC, BWT, LA"):
            assert part in texts, part
    for bad in (1, 9, 2.5, "5"):
        with pytest.raises(ValueError, match="num_tasks"):
            nb05.draw_continual_agent(bad)
