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
from memtutor.utils import config_dict, load_or_train, set_threads

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
        tr, te = set(s.train_index.tolist()), set(s.test_index.tolist())
        assert not tr & te
        assert len(tr) + len(te) == 1797  # every image used once
        assert set(s.train_digit.tolist()) == set(range(10)) == set(s.test_digit.tolist())
        assert sorted(s.task_classes.flatten().tolist()) == list(range(10))
        # each item's task holds its digit
        assert bool((s.task_classes[s.train_task] == s.train_digit[:, None]).any(1).all())
        assert bool((s.task_classes[s.test_task] == s.test_digit[:, None]).any(1).all())


def test_stream_split_is_stratified_and_fixed_by_seed():
    a, b, c = (cl.make_task_stream("class", seed=k) for k in (0, 0, 1))
    assert torch.equal(a.test_index, b.test_index)
    assert not torch.equal(a.test_index, c.test_index)
    n = torch.bincount(a.train_digit, minlength=10) + torch.bincount(a.test_digit, minlength=10)
    n_test = torch.bincount(a.test_digit, minlength=10).double()
    assert bool(((n_test - 0.25 * n.double()).abs() <= 0.5).all())  # round(0.25 n_c) per class
    # the same seed gives the same test images in every scenario
    assert torch.equal(cl.make_task_stream("task", seed=1).test_index, c.test_index)


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
    assert cl.ContinualConfig(batch_size=32, replay_ratio=0.5).replay_batch == 16


def test_train_stream_errors(streams):
    with pytest.raises(ValueError, match="dict of the switches"):
        cl.train_stream(streams["class"], "naive")
    with pytest.raises(ValueError, match="bad method switches"):
        cl.train_stream(streams["class"], dict(replay="ewc"))
    with pytest.raises(ValueError, match="memory=True needs replay"):
        cl.train_stream(streams["class"], dict(replay=None, memory=True, meta=False, joint=False))
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


def test_masked_logits_restrict_prediction(streams):
    s = streams["task"]
    logits = torch.randn(6, 10)
    task = torch.tensor([0, 1, 2, 3, 4, 0])
    pred = cl.masked_logits(logits, s.output_mask[task]).argmax(-1)
    assert bool((s.task_classes[task] == pred[:, None]).any(1).all())


@pytest.mark.slow
def test_training_path_shortened_stream_loss_falls_and_naive_forgets(streams):
    res = cl.train_stream(streams["class"], M["naive"], FAST, seed=0, num_tasks=2)
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
def test_run_methods_and_grid_shapes():
    res = nb05.run_methods("task", ["naive", "uniform replay"], [0, 1], replace(FAST, epochs=1), num_tasks=2)
    assert res["naive/R"].shape == (2, 2, 2) and res["uniform replay/baseline"].shape == (2, 2)
    grid = nb05.replay_grid("class", [20, 40], [0.5], [0], replace(FAST, epochs=1))
    assert grid["ACC"].shape == (2, 1, 1) and grid["BWT"].shape == (2, 1, 1)


# --------------------------------------------------------------------------------- cached results


@pytest.fixture(scope="module")
def params():
    """Notebook 05's parameters cell, run: the defaults a reader gets."""
    return notebook_parameters("05_continual_agent.ipynb", {"cl": cl})


def _methods_config(p: dict, **learner_changes) -> nb05.MethodsTableConfig:
    return nb05.MethodsTableConfig(learner=replace(p["CFG"], **learner_changes), seeds=p["SEEDS"])


def _grid_config(p: dict, **changes) -> nb05.ReplayGridConfig:
    kw = dict(buffer_sizes=p["GRID_BUFFERS"], replay_ratios=p["GRID_RATIOS"], seeds=p["GRID_SEEDS"])
    return nb05.ReplayGridConfig(learner=p["CFG"], **{**kw, **changes})


def _no_training():
    raise AssertionError("a cached result with an unchanged configuration must load without training")


def test_committed_results_record_the_notebook_defaults(params):
    for name, config in ((nb05.METHODS_FILE, _methods_config(params)), (nb05.REPLAY_GRID_FILE, _grid_config(params))):
        data = torch.load(CHECKPOINTS / name, weights_only=True)
        assert data["config"] == config_dict(config), name


def test_unchanged_configuration_loads_without_training(params):
    results = load_or_train(
        nb05.METHODS_FILE, _methods_config(params), _no_training, minutes=nb05.METHODS_MINUTES, directory=CHECKPOINTS
    )
    assert results["class/naive/R"].shape == (len(params["SEEDS"]), 5, 5)
    grid = load_or_train(
        nb05.REPLAY_GRID_FILE,
        _grid_config(params),
        _no_training,
        minutes=nb05.REPLAY_GRID_MINUTES,
        directory=CHECKPOINTS,
    )
    assert grid["ACC"].shape == (len(params["GRID_BUFFERS"]), len(params["GRID_RATIOS"]), len(params["GRID_SEEDS"]))


@pytest.mark.parametrize(
    ("which", "change", "field"),
    [
        ("methods", dict(lr=0.05), "learner.lr"),
        ("methods", dict(buffer_size=100), "learner.buffer_size"),
        ("grid", dict(seeds=(0, 1)), "seeds"),
        ("grid", dict(replay_ratios=(0.5, 1.0)), "replay_ratios"),
    ],
)
def test_changed_parameter_is_detected(params, which, change, field):
    """Both results take minutes to recompute: a changed parameter raises, naming the field."""
    if which == "methods":
        name, config, minutes = nb05.METHODS_FILE, _methods_config(params, **change), nb05.METHODS_MINUTES
    else:
        name, config, minutes = nb05.REPLAY_GRID_FILE, _grid_config(params, **change), nb05.REPLAY_GRID_MINUTES
    assert minutes > 3
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        load_or_train(name, config, _no_training, minutes=minutes, directory=CHECKPOINTS)


def test_changed_method_switches_are_detected(params):
    methods = {**nb05.CONTINUAL_METHODS, "full agent": dict(M["full agent"], replay="uniform")}
    config = nb05.MethodsTableConfig(learner=params["CFG"], seeds=params["SEEDS"], methods=methods)
    with pytest.raises(ValueError, match=r"methods\.full agent\.replay"):
        load_or_train(nb05.METHODS_FILE, config, _no_training, minutes=nb05.METHODS_MINUTES, directory=CHECKPOINTS)


def test_configs_take_notebook_values_and_reject_bad_ones():
    c = nb05.ReplayGridConfig(learner=FAST, buffer_sizes=[20, 50], replay_ratios=[1], seeds=[0])
    assert c.buffer_sizes == (20, 50) and c.replay_ratios == (1.0,) and c.switches == M["prioritized replay"]
    with pytest.raises(ValueError, match="unknown method"):
        nb05.ReplayGridConfig(learner=FAST, buffer_sizes=[20], replay_ratios=[1.0], seeds=[0], method="ewc")
    with pytest.raises(ValueError, match="scenarios"):
        nb05.MethodsTableConfig(learner=FAST, seeds=[0], scenarios=["online"])
    with pytest.raises(ValueError, match="seeds"):
        nb05.MethodsTableConfig(learner=FAST, seeds=[])


@pytest.mark.slow
def test_training_path_of_both_tables_with_a_tiny_budget(tmp_path):
    tiny = replace(FAST, epochs=1)
    table = nb05.MethodsTableConfig(learner=tiny, seeds=[0], scenarios=["task"], methods={"naive": M["naive"]})
    res = load_or_train("t.pt", table, lambda: nb05.train_methods(table), minutes=0.1, directory=tmp_path)
    assert res["task/naive/R"].shape == (1, 5, 5)
    again = load_or_train("t.pt", table, _no_training, minutes=0.1, directory=tmp_path)
    torch.testing.assert_close(again["task/naive/R"], res["task/naive/R"])
    grid = nb05.ReplayGridConfig(learner=tiny, buffer_sizes=[20], replay_ratios=[0.5], seeds=[0])
    out = load_or_train("g.pt", grid, lambda: nb05.train_replay_grid(grid), minutes=0.1, directory=tmp_path)
    assert out["ACC"].shape == (1, 1, 1) and 0 <= float(out["ACC"]) <= 1


# --------------------------------------------------------------------------------- benchmark


@pytest.mark.slow
def test_benchmark_quick_runs():
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "continual.py"), "--quick"],
        check=True, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert "ratio" in out.stdout
