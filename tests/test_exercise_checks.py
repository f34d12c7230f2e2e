"""Every exercise check, tested: the teacher's answer passes, trivial answers fail, and each common
mistake an exercise names gets a message that names it.

The answers are the notebooks' own solution cells (function exercises are executed from the teacher
edition), so a test fails if a solution and its check drift apart.
"""

from __future__ import annotations

import math
from pathlib import Path

import nbformat
import pytest
import torch
import torch.nn.functional as F

from memtutor import continual as cl
from memtutor import memory as mem
from memtutor import memup as mu
from memtutor import meta
from memtutor.exercises import ex01, ex02, ex03, ex04, ex05, ex06, ex07, ex09
from memtutor.tasks import copy_task

ROOT = Path(__file__).resolve().parents[1]


def _solutions(name: str) -> dict:
    """The functions defined by the solution cells of notebook ``name`` (teacher edition)."""
    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    ns: dict = {"torch": torch, "math": math, "mem": mem, "mu": mu, "F": F, "meta": meta}
    ns["functional_call"], ns["grad"] = torch.func.functional_call, torch.func.grad
    for cell in nb.cells:
        if cell.cell_type == "code" and "solution" in cell.metadata.get("tags", []):
            code = cell.source.split("\n\n\nfor t_ in")[0]  # 07's exercise 2 prints with the notebook's sizes
            if code.lstrip().startswith(("def ", "import ")):
                exec(compile(code, name, "exec"), ns)
    return ns


def _rejects(result, *words: str) -> None:
    assert not result, f"a wrong answer passed: {result}"
    for w in words:
        assert w in result.message, f"expected {w!r} in the message: {result.message}"


def _stub(*args, **kwargs):
    raise NotImplementedError("the student's stub")


# ---------------------------------------------------------------- notebook 01


def test_ex01_allocation():
    s = _solutions("01_memory_bank.ipynb")
    assert ex01.check_allocation(s["allocation"])
    _rejects(ex01.check_allocation(_stub), "NotImplementedError")
    _rejects(ex01.check_allocation(torch.zeros_like))
    _rejects(ex01.check_allocation(lambda u: 1 - u), "sum to more than 1")
    _rejects(ex01.check_allocation(lambda u: torch.full_like(u, 1 / u.shape[-1])))
    _rejects(ex01.check_allocation(mem.allocation_weights), "write the allocation yourself")
    _rejects(ex01.check_allocation(lambda u: mem.allocation_weights(u) + 0), "write the allocation yourself")

    def inclusive(usage):  # the product includes the slot itself: the named mistake
        su, phi = torch.sort(usage, -1)
        return torch.zeros_like(usage).scatter(-1, phi, (1 - su) * torch.cumprod(su, -1))

    _rejects(ex01.check_allocation(inclusive), "exclusive cumulative product")


def test_ex01_strength():
    s = _solutions("01_memory_bank.ipynb")
    assert ex01.check_strength(s["strength_for"])
    _rejects(ex01.check_strength(_stub), "NotImplementedError")
    _rejects(ex01.check_strength(lambda c, s_, n: 1.0), "too weak")
    _rejects(ex01.check_strength(lambda c, s_, n: 1000.0), "more than needed")
    _rejects(ex01.check_strength(lambda c, s_, n: 2 * s["strength_for"](c, s_, n)), "more than needed")
    # forgetting the other rows' similarity (treating them as orthogonal)
    _rejects(ex01.check_strength(lambda c, s_, n: math.log(c * (n - 1) / (1 - c))))


# ---------------------------------------------------------------- notebook 02


def test_ex02_bits_error():
    s = _solutions("02_memory_controller.ipynb")
    assert ex02.check_bits_error(s["my_bits_error"])
    _rejects(ex02.check_bits_error(_stub), "NotImplementedError")
    _rejects(ex02.check_bits_error(lambda lg, t, m: torch.zeros(lg.shape[0])), "wrong counts")
    _rejects(ex02.check_bits_error(lambda lg, t, m: torch.zeros(())), "one number per sequence")
    unmasked = lambda lg, t, m: ((lg > 0) != (t > 0.5)).float().sum(dim=(1, 2))  # noqa: E731 - every step counted
    _rejects(ex02.check_bits_error(unmasked), "which steps count")


def test_ex02_ablation_recomputes_the_number():
    from memtutor.controller import ControllerConfig, MemoryController, evaluate_copy, with_access

    torch.manual_seed(0)
    model = MemoryController(ControllerConfig(hidden_size=16, num_slots=8, word_size=4))
    batch = copy_task(8, 3, 6, 8, generator=torch.Generator().manual_seed(0))
    right = evaluate_copy(with_access(model, links=False), batch).mean().item()
    assert ex02.check_ablation(model, batch, right, links=False)
    full = evaluate_copy(model, batch).mean().item()
    _rejects(ex02.check_ablation(model, batch, full, links=False))
    for trivial in (0.0, 1.0, float("nan"), "48.3", None):
        _rejects(ex02.check_ablation(model, batch, trivial, links=False))
    no_alloc = evaluate_copy(with_access(model, allocation=False), batch).mean().item()
    if abs(no_alloc - right) > 1e-3:
        _rejects(ex02.check_ablation(model, batch, no_alloc, links=False))


# ---------------------------------------------------------------- notebook 03


def test_ex03_importance_weights():
    s = _solutions("03_prioritized_replay.ipynb")
    assert ex03.check_importance_weights(s["is_weights"])
    _rejects(ex03.check_importance_weights(_stub), "NotImplementedError")
    _rejects(ex03.check_importance_weights(lambda p, i, b: torch.ones(i.shape, dtype=p.dtype)))
    _rejects(ex03.check_importance_weights(lambda p, i, b: p[i]))

    def batch_max(p, i, b):  # normalised by the batch's largest weight: the named mistake
        w = (p.numel() * p[i] / p.sum()) ** (-b)
        return w / w.max()

    _rejects(ex03.check_importance_weights(batch_max), "least likely stored item")


def test_ex03_sampler():
    s = _solutions("03_prioritized_replay.ipynb")
    assert ex03.check_proportional_sampler(s["proportional_sample"])
    _rejects(ex03.check_proportional_sampler(_stub), "NotImplementedError")
    _rejects(ex03.check_proportional_sampler(lambda p, b, g: torch.zeros(b, dtype=torch.int64)))

    def multinomial(p, b, g):  # proportional but not stratified
        return torch.multinomial(p, b, replacement=True, generator=g)

    _rejects(ex03.check_proportional_sampler(multinomial), "not stratified")


def test_ex03_rank_based():
    s = _solutions("03_prioritized_replay.ipynb")
    assert ex03.check_rank_based_probabilities(s["rank_based_probabilities"])
    _rejects(ex03.check_rank_based_probabilities(_stub), "NotImplementedError")
    _rejects(ex03.check_rank_based_probabilities(lambda e, a: torch.full_like(e, 1 / e.numel())))
    _rejects(ex03.check_rank_based_probabilities(lambda e, a: e.abs() ** a / (e.abs() ** a).sum()))

    def ascending(e, a):  # rank 1 for the smallest error
        r = torch.empty_like(e)
        r[torch.argsort(e.abs())] = torch.arange(1, e.numel() + 1, dtype=e.dtype)
        return r ** (-a) / (r ** (-a)).sum()

    _rejects(ex03.check_rank_based_probabilities(ascending), "largest |error|")


# ---------------------------------------------------------------- notebook 04


def test_ex04_inner_step():
    s = _solutions("04_meta_learning.ipynb")
    assert ex04.check_inner_step(s["inner_step"])
    _rejects(ex04.check_inner_step(_stub), "NotImplementedError")
    _rejects(ex04.check_inner_step(lambda m, p, x, y, lr: dict(p)), "did not move")
    _rejects(
        ex04.check_inner_step(lambda m, p, x, y, lr: meta.maml_adapt(m, p, x, y, inner_lr=lr, steps=1)), "maml_adapt"
    )
    up = lambda m, p, x, y, lr: s["inner_step"](m, p, x, y, -lr)  # noqa: E731 - gradient ascent
    _rejects(ex04.check_inner_step(up), "up the gradient")
    twice = lambda m, p, x, y, lr: s["inner_step"](m, p, x, y, 2 * lr)  # noqa: E731
    _rejects(ex04.check_inner_step(twice), "not lr times the gradient")

    def from_module(m, p, x, y, lr):  # reads the module's own parameters instead of the ones given
        own = {k: v.detach() for k, v in m.named_parameters()}
        return s["inner_step"](m, own, x, y, lr)

    _rejects(ex04.check_inner_step(from_module), "module's own parameters")


@pytest.fixture(scope="module")
def sine():
    torch.manual_seed(0)
    model = meta.make_sine_mlp(hidden=8)
    params = dict(model.named_parameters())
    tasks = meta.sample_sinusoid_tasks(20, 5, 5, generator=torch.Generator().manual_seed(1))
    return model, params, tasks


def test_ex04_lr_sweep(sine):
    model, params, tasks = sine
    lrs = [0.001, 0.01, 0.1]
    curves = {lr: meta.adaptation_curve(model, params, tasks, inner_lr=lr, max_steps=1).mean(0) for lr in lrs}
    sweep = {lr: float(c[1]) for lr, c in curves.items()}
    best = min(sweep, key=sweep.get)
    assert ex04.check_lr_sweep(sweep, best, model, params, tasks, lrs=lrs)
    _rejects(ex04.check_lr_sweep({}, best, model, params, tasks, lrs=lrs))
    _rejects(ex04.check_lr_sweep(dict.fromkeys(lrs, 0.0), lrs[0], model, params, tasks, lrs=lrs))
    _rejects(
        ex04.check_lr_sweep({lr: float(c[0]) for lr, c in curves.items()}, best, model, params, tasks, lrs=lrs),
        "before adaptation",
    )
    worst = max(sweep, key=sweep.get)
    _rejects(ex04.check_lr_sweep(sweep, worst, model, params, tasks, lrs=lrs), "lowest MSE")


def test_ex04_steps_to_threshold(sine):
    model, params, tasks = sine
    models = {"a": (model, params)}
    curve = meta.adaptation_curve(model, params, tasks, inner_lr=0.01, max_steps=20).mean(0)
    threshold = float(curve[7]) + 1e-6  # reached at step 7 at the latest
    hits = (curve <= threshold).nonzero()
    want = int(hits[0])
    kw = dict(inner_lr=0.01, threshold=threshold, max_steps=20)
    assert ex04.check_steps_to_threshold({"a": want}, models, tasks, **kw)
    _rejects(ex04.check_steps_to_threshold({"a": want + 1}, models, tasks, **kw), "one too many")
    _rejects(ex04.check_steps_to_threshold({"a": None}, models, tasks, **kw), "does reach")
    _rejects(ex04.check_steps_to_threshold({"a": 0} if want else {"a": 5}, models, tasks, **kw))
    _rejects(ex04.check_steps_to_threshold({"a": True}, models, tasks, **kw), "must be an int")
    _rejects(ex04.check_steps_to_threshold({}, models, tasks, **kw))


# ---------------------------------------------------------------- notebook 05


def test_ex05_forgetting_curve():
    s = _solutions("05_continual_agent.ipynb")
    fc = s["forgetting_curve"]
    assert ex05.check_forgetting_curve(fc)
    R = torch.rand(5, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(fc(R)[-1], cl.average_forgetting(R))
    _rejects(ex05.check_forgetting_curve(_stub), "NotImplementedError")
    _rejects(ex05.check_forgetting_curve(cl.average_forgetting), "shape")
    _rejects(ex05.check_forgetting_curve(lambda R: torch.zeros(R.shape[0] - 1, dtype=R.dtype)))
    minus_bwt = lambda R: torch.stack([(R.diagonal()[:k] - R[k, :k]).mean() for k in range(1, R.shape[0])])  # noqa: E731
    _rejects(ex05.check_forgetting_curve(minus_bwt), "-BWT")
    with_k = lambda R: torch.stack([(R[: k + 1, :k].amax(0) - R[k, :k]).mean() for k in range(1, R.shape[0])])  # noqa: E731
    _rejects(ex05.check_forgetting_curve(with_k), "before* k")

    def over_all(R):
        return torch.stack(  # noqa: E731
            [(R[:k, :k].amax(0) - R[k, :k]).sum() / (R.shape[0] - 1) for k in range(1, R.shape[0])]
        )

    _rejects(ex05.check_forgetting_curve(over_all), "average over them")


def test_ex05_ewc_penalty():
    s = _solutions("05_continual_agent.ipynb")
    assert ex05.check_ewc_penalty(s["ewc_penalty"])
    assert ex05.check_ewc_penalty(cl.ewc_penalty)
    _rejects(ex05.check_ewc_penalty(_stub), "NotImplementedError")
    _rejects(ex05.check_ewc_penalty(lambda p, a, f: sum((f[k] * (v - a[k]) ** 2).sum() for k, v in p.items())), "1/2")
    _rejects(ex05.check_ewc_penalty(lambda p, a, f: 0.5 * sum(((v - a[k]) ** 2).sum() for k, v in p.items())), "Fisher")
    _rejects(ex05.check_ewc_penalty(lambda p, a, f: cl.ewc_penalty(p, a, f).detach()), "connected")


def test_ex05_balanced_exemplars():
    s = _solutions("05_continual_agent.ipynb")
    assert ex05.check_balanced_exemplars(s["balanced_exemplars"])
    _rejects(ex05.check_balanced_exemplars(_stub), "NotImplementedError")
    _rejects(ex05.check_balanced_exemplars(lambda lab, k, g: torch.arange(4 * k)))

    def first(lab, k, g):  # the first k of every class: balanced, but not random
        return torch.cat([(lab == c).nonzero().squeeze(1)[:k] for c in lab.unique()])

    _rejects(ex05.check_balanced_exemplars(first), "random within each class")

    def global_rng(lab, k, g):  # ignores the generator
        return torch.cat(
            [(lab == c).nonzero().squeeze(1)[torch.randperm(int((lab == c).sum()))[:k]] for c in lab.unique()]
        )

    _rejects(ex05.check_balanced_exemplars(global_rng), "generator")


# ---------------------------------------------------------------- notebook 06


def test_ex06_right_nested():
    s = _solutions("06_tool_agent.ipynb")
    assert ex06.check_right_nested_program(s["right_nested_program"])
    _rejects(ex06.check_right_nested_program(_stub), "NotImplementedError")
    _rejects(ex06.check_right_nested_program(lambda ops: ["P0", "ANS"]))
    _rejects(ex06.check_right_nested_program(lambda ops: None))
    tool = {"+": "ADD", "-": "SUB", "*": "MUL"}
    sub_not_rsub = lambda ops: ["P1", tool[ops[1]], "P2", tool[ops[0]], "P0", "ANS"]  # noqa: E731
    _rejects(ex06.check_right_nested_program(sub_not_rsub), "RSUB")
    left_fold = lambda ops: ["P0", tool[ops[0]], "P1", tool[ops[1]], "P2", "ANS"]  # noqa: E731 - stage 0's habit
    _rejects(ex06.check_right_nested_program(left_fold))


def test_ex06_memory_free():
    s = _solutions("06_tool_agent.ipynb")
    assert ex06.check_memory_free_program(s["memory_free_program"])
    _rejects(ex06.check_memory_free_program(_stub), "NotImplementedError")
    _rejects(ex06.check_memory_free_program(lambda ops: None), "a memory-free program exists")
    _rejects(ex06.check_memory_free_program(lambda ops: ["P0", "ANS"]), "return None")
    memory = lambda ops: s["product_stage_program"](ops) if ops == ("*", "*") else s["memory_free_program"](ops)  # noqa: E731
    _rejects(ex06.check_memory_free_program(memory), "return None")
    tool = {"+": "ADD", "-": "SUB", "*": "MUL"}

    def no_flip(ops):  # forgets to distribute the minus over the bracket
        if ops == ("*", "*"):
            return None
        if ops[1] == "*":
            return s["memory_free_program"](ops)
        return ["P0", tool[ops[0]], "P1", "SUB", "P2", tool[ops[1]], "P3", "ANS"]

    _rejects(ex06.check_memory_free_program(no_flip), "applies to d as well")
    with_memory = lambda ops: None if ops == ("*", "*") else ["P0", tool[ops[0]], "P1", "STO", "P2", "ANS"]  # noqa: E731
    _rejects(ex06.check_memory_free_program(with_memory), "forbids")


def test_ex06_product_stage():
    s = _solutions("06_tool_agent.ipynb")
    assert ex06.check_product_stage_program(s["product_stage_program"])
    _rejects(ex06.check_product_stage_program(_stub), "NotImplementedError")
    _rejects(ex06.check_product_stage_program(lambda ops: ["P0", "MUL", "P1", "MUL", "P2", "MUL", "P3", "ANS"]))
    _rejects(ex06.check_product_stage_program(lambda ops: ["RCL", "ANS"]), "invalid tool call")
    _rejects(ex06.check_product_stage_program("P0 ANS"), "function itself")


# ---------------------------------------------------------------- notebook 07


def test_ex07_selector():
    s = _solutions("07_memup.ipynb")
    fn = s["topk_future"]
    assert ex07.check_topk_selector(fn)
    _rejects(ex07.check_topk_selector(_stub), "NotImplementedError")
    _rejects(ex07.check_topk_selector(mu.select_targets), "package's selector")
    _rejects(ex07.check_topk_selector(lambda u, st, k: (torch.zeros(u.shape[0], st.numel(), k, dtype=torch.long),) * 2))

    def strict(u, steps, k):  # k > t instead of k >= t: the named off-by-one
        return fn(u, steps + 1, k) if int(steps.max()) + 1 < u.shape[1] else fn(u[:, 1:], steps, k)

    _rejects(ex07.check_topk_selector(strict), "k > t instead of k >= t")

    def strict_mask(u, steps, k):
        T_ = u.shape[1]
        future = torch.arange(T_).unsqueeze(0) > steps.unsqueeze(1)
        top, idx = u.unsqueeze(1).masked_fill(~future, float("-inf")).topk(k, dim=-1)
        return idx, top > float("-inf")

    _rejects(ex07.check_topk_selector(strict_mask), "k > t instead of k >= t")

    def all_valid(u, steps, k):
        idx, _ = fn(u, steps, k)
        return idx, torch.ones_like(idx, dtype=torch.bool)

    assert not ex07.check_topk_selector(all_valid)

    def least(u, steps, k):
        return fn(-u, steps, k)

    _rejects(ex07.check_topk_selector(least), "not the K most uncertain")


def test_ex07_random_hit_probability():
    s = _solutions("07_memup.ipynb")
    assert ex07.check_random_hit_probability(s["random_hit_probability"])
    _rejects(ex07.check_random_hit_probability(_stub), "NotImplementedError")
    for const in (0.0, 1.0, 0.5):
        _rejects(ex07.check_random_hit_probability(lambda t, T, H, K, c=const: c))
    _rejects(ex07.check_random_hit_probability(lambda t, T, H, K: 1 - (1 - H / (T - t)) ** K), "with replacement")
    _rejects(ex07.check_random_hit_probability(lambda t, T, H, K: K * H / (T - t)), "expected number")
    _rejects(
        ex07.check_random_hit_probability(lambda t, T, H, K: 1 - math.comb(T - H, K) / math.comb(T, K)),
        "future steps",
    )


def test_ex07_saved_bytes():
    s = _solutions("07_memup.ipynb")
    cfg = mu.MemUPConfig()
    rollout_loss, bptt_loss = s["rollout_loss"], s["bptt_loss"]
    assert ex07.check_saved_bytes(rollout_loss, bptt_loss, cfg)
    _rejects(ex07.check_saved_bytes(_stub, _stub, cfg), "NotImplementedError")
    _rejects(ex07.check_saved_bytes(lambda *a: torch.tensor(1.0), bptt_loss, cfg), "without a graph")

    def not_detached(nets, x, y, u, start, c):  # the carried state keeps its graph: the named mistake
        windows = mu.local_windows(x, c.window)
        local = torch.arange(c.rollout)
        _, state = nets["memory"](x[:, :start])
        h, _ = nets["memory"](x[:, start : start + c.rollout].contiguous(), state)
        return mu.memup_rollout_loss(nets["predictor"], h, windows, y, mu.select_targets(u, local + start, c.k), local)

    _rejects(ex07.check_saved_bytes(not_detached, bptt_loss, cfg), "without a graph")

    def fresh_state(nets, x, y, u, start, c):  # no carried state at all
        windows = mu.local_windows(x, c.window)
        local = torch.arange(c.rollout)
        h, _ = nets["memory"](x[:, start : start + c.rollout].contiguous())
        return mu.memup_rollout_loss(nets["predictor"], h, windows, y, mu.select_targets(u, local + start, c.k), local)

    _rejects(ex07.check_saved_bytes(fresh_state, bptt_loss, cfg), "fresh state")

    def truncated(model, x, y):  # only the last 50 steps: not full BPTT
        return F.cross_entropy(model(x[:, -50:])[0].transpose(1, 2), y[:, -50:])

    _rejects(ex07.check_saved_bytes(rollout_loss, truncated, cfg), "in proportion to T")


# ---------------------------------------------------------------- notebook 09


def test_ex09_head_step():
    s = _solutions("09_meta_controller.ipynb")
    head_step = s["head_step"]
    assert ex09.check_head_step(head_step)
    _rejects(ex09.check_head_step(_stub), "NotImplementedError")
    _rejects(ex09.check_head_step(lambda m, h, x, y, lr: dict(h)), "did not move")
    package = lambda m, h, x, y, lr: meta.maml_adapt(m, h, x, y, inner_lr=lr, steps=1, loss_fn=meta.packed_bce_loss)  # noqa: E731
    _rejects(ex09.check_head_step(package), "maml_adapt")
    _rejects(ex09.check_head_step(lambda m, h, x, y, lr: head_step(m, h, x, y, -lr)), "up the gradient")
    _rejects(ex09.check_head_step(lambda m, h, x, y, lr: head_step(m, h, x, y, 2 * lr)), "not lr times the gradient")
    every = lambda m, h, x, y, lr: head_step(m, meta.select_params(m), x, y, lr)  # noqa: E731
    _rejects(ex09.check_head_step(every), "output layer only")

    def mse_step(m, h, x, y, lr):  # the wrong loss: squared error of the logits against the target bits
        g = torch.func.grad(lambda p: ((torch.func.functional_call(m, p, (x,)) - y[..., :-1]) ** 2).mean())(h)
        return {k: v - lr * g[k] for k, v in h.items()}

    _rejects(ex09.check_head_step(mse_step), "differs from one SGD step")

    def in_place(m, h, x, y, lr):  # moves the model's own head
        out = head_step(m, h, x, y, lr)
        with torch.no_grad():
            m.controller.output.bias.add_(1.0)
        return out

    _rejects(ex09.check_head_step(in_place), "changed the model's own parameters")

    def from_model(m, h, x, y, lr):  # reads the model's own output layer instead of the head given
        own = {k: v.detach() for k, v in meta.select_params(m, meta.CONTROLLER_HEAD).items()}
        return head_step(m, own, x, y, lr)

    _rejects(ex09.check_head_step(from_model), "model's own output layer")

    def with_backward(m, h, x, y, lr):  # the module's backward: the gradient of its own head, not of h
        m.zero_grad()
        meta.packed_bce_loss(m(x), y).backward()
        own = dict(meta.select_params(m, meta.CONTROLLER_HEAD))
        return {k: own[k].detach() - lr * own[k].grad for k in h}

    _rejects(ex09.check_head_step(with_backward), "model's own output layer")
    _rejects(ex09.check_head_step(lambda m, h, x, y, lr: [v for v in h.values()]), "must return a dict")


def test_ex09_wrong_bits():
    s = _solutions("09_meta_controller.ipynb")
    wrong_bits = s["wrong_bits"]
    assert ex09.check_wrong_bits(wrong_bits)
    _rejects(ex09.check_wrong_bits(_stub), "NotImplementedError")
    _rejects(ex09.check_wrong_bits(lambda lg, y: meta.packed_bits_error(lg, y)), "packed_bits_error")
    every_step = lambda lg, y: ((lg > 0) != (y[..., :-1] > 0.5)).float().sum((1, 2)).mean()  # noqa: E731
    _rejects(ex09.check_wrong_bits(every_step), "answer steps only")
    _rejects(ex09.check_wrong_bits(lambda lg, y: wrong_bits(lg, y) * lg.shape[0]), "sum over the sequences")
    right = lambda lg, y: (((lg > 0) == (y[..., :-1] > 0.5)).float() * y[..., -1:]).sum((1, 2)).mean()  # noqa: E731
    _rejects(ex09.check_wrong_bits(right), "right bits")
    per_sequence = lambda lg, y: (((lg > 0) != (y[..., :-1] > 0.5)).float() * y[..., -1:]).sum((1, 2))  # noqa: E731
    _rejects(ex09.check_wrong_bits(per_sequence), "0-d tensor")
    _rejects(ex09.check_wrong_bits(lambda lg, y: wrong_bits(lg, y) + 0.5), "differs")


def test_ex09_steps_to_one_bit(monkeypatch):
    from memtutor.controller import MemoryController

    tiny = ex09.PROBE_CONTROLLER
    torch.manual_seed(0)
    starts = {"a": MemoryController(tiny), "b": MemoryController(tiny)}
    tasks = meta.xor_copy_tasks(meta.xor_masks(4)[:2], 4, 4, max_length=3, generator=torch.Generator().manual_seed(0))
    kw = dict(inner_lr=0.3, max_steps=3)
    # untrained controllers never get to one wrong bit: the check computes their curves itself
    assert ex09.check_steps_to_one_bit({"a": None, "b": None}, starts, tasks, **kw)
    _rejects(ex09.check_steps_to_one_bit({"a": 2, "b": None}, starts, tasks, **kw), "never gets to one wrong bit")
    _rejects(ex09.check_steps_to_one_bit({"a": None}, starts, tasks, **kw), "one entry per start")
    _rejects(ex09.check_steps_to_one_bit({}, starts, tasks, **kw), "non-empty")
    # a start whose curve reaches one wrong bit at step 2
    monkeypatch.setattr(ex09, "_bits_curve", lambda *a, **k: torch.tensor([4.0, 2.0, 1.0, 0.5]))
    assert ex09.check_steps_to_one_bit({"a": 2, "b": 2}, starts, tasks, **kw)
    _rejects(ex09.check_steps_to_one_bit({"a": 3, "b": 2}, starts, tasks, **kw), "one too many")
    _rejects(ex09.check_steps_to_one_bit({"a": None, "b": 2}, starts, tasks, **kw), "does get to one wrong bit")
    _rejects(ex09.check_steps_to_one_bit({"a": 1, "b": 2}, starts, tasks, **kw), "too small")
    _rejects(ex09.check_steps_to_one_bit({"a": 2, "b": 0}, starts, tasks, **kw), "too small")
    _rejects(ex09.check_steps_to_one_bit({"a": True, "b": 2}, starts, tasks, **kw), "must be an int")
    monkeypatch.setattr(ex09, "_bits_curve", lambda *a, **k: torch.tensor([4.0, 1.0, 1.0, 0.5, 0.2, 0.1]))
    _rejects(ex09.check_steps_to_one_bit({"a": 4, "b": 1}, starts, tasks, **kw), "too large")
