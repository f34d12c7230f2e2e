"""Notebook 08's exercise checks, tested: the teacher's answers pass, the package's own function is
refused, and each mistake a check names gets its message.

The answers are the solution cells below, the text the notebook's exercises hold; once the notebook
exists, its own solution cells are run through the checks as well.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
import torch
import torch.nn.functional as F

from memtutor import memory_agent as ma
from memtutor.exercises import ex08

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "08_memory_agent.ipynb"

VPG_SOLUTION = '''\
import torch.nn.functional as F


def vpg_junction_loss(logits, value, action, reward, value_coef, entropy_coef):
    """REINFORCE with a learned baseline at the junction: logits (B, 2), value (B,), action (B,) long and
    reward (B,) -> the 0-d loss: policy term + value_coef * the baseline's squared error - entropy_coef * entropy."""
    # Hint: log pi(a) from F.log_softmax and .gather; detach V in the advantage R - V; every term is a batch mean.
    ### BEGIN SOLUTION
    log_p = F.log_softmax(logits, dim=-1)  # (B, 2)
    log_pi_a = log_p.gather(1, action.long().unsqueeze(1)).squeeze(1)  # (B,) log pi(a_b | f_b)
    advantage = (reward - value).detach()  # R - V, a constant for the policy term
    policy_term = -(log_pi_a * advantage).mean()
    value_term = (value - reward).pow(2).mean()  # the baseline's squared error
    entropy = -(log_p.exp() * log_p).sum(dim=-1).mean()  # H(pi(. | f)), averaged over the batch
    return policy_term + value_coef * value_term - entropy_coef * entropy
    ### END SOLUTION
'''

REACH_SOLUTION = '''\
import memtutor.memory_agent as ma


def gradient_reach(core, obs, window):
    """The earliest step s (an int) whose observation obs[:, s] gets a nonzero gradient from the junction's
    features ma.junction_features(core, obs, window); obs (B, L, 3)."""
    # Hint: a leaf copy of obs that requires grad, backward() on the features' sum, then obs.grad's first nonzero step.
    ### BEGIN SOLUTION
    obs = obs.detach().clone().requires_grad_(True)
    ma.junction_features(core, obs, window).sum().backward()
    reached = obs.grad.abs().sum(dim=(0, 2)) > 0  # (L,) does step s get any gradient?
    return int(reached.nonzero()[0])
    ### END SOLUTION
'''


def _define(source: str) -> dict:
    ns: dict = {}
    exec(compile(source, "solution", "exec"), ns)
    return ns


@pytest.fixture(scope="module")
def vpg():
    return _define(VPG_SOLUTION)["vpg_junction_loss"]


@pytest.fixture(scope="module")
def reach():
    return _define(REACH_SOLUTION)["gradient_reach"]


def _rejects(result, *words: str) -> None:
    assert not result, f"a wrong answer passed: {result}"
    for w in words:
        assert w in result.message, f"expected {w!r} in the message: {result.message}"


def _stub(*args, **kwargs):
    raise NotImplementedError("the student's stub")


# ---------------------------------------------------------------- exercise 1


def _terms(logits, value, action, reward):
    log_p = F.log_softmax(logits, -1)
    log_pa = log_p.gather(1, action.long()[:, None]).squeeze(1)
    entropy = -(log_p.exp() * log_p).sum(-1)
    return log_pa, entropy


def test_vpg_solution_passes(vpg):
    result = ex08.check_vpg_loss(vpg)
    assert result, result
    assert "Correct" in repr(result)


def test_vpg_refuses_the_package_function():
    _rejects(ex08.check_vpg_loss(ma.vpg_junction_loss), "write your own")
    _rejects(ex08.check_vpg_loss(lambda *a: ma.vpg_junction_loss(*a)[0]), "write the loss yourself")
    from memtutor.memory_agent import vpg_junction_loss as package  # bound before the check's spy

    _rejects(ex08.check_vpg_loss(lambda *a: package(*a)[0]), "write the loss yourself")


def test_vpg_stub_and_trivial_answers_fail():
    _rejects(ex08.check_vpg_loss(_stub), "NotImplementedError")
    _rejects(ex08.check_vpg_loss(lambda lg, v, a, r, cv, ch: torch.zeros(())), "no graph")
    _rejects(ex08.check_vpg_loss(lambda lg, v, a, r, cv, ch: (lg.sum(), {})), "loss only")
    _rejects(ex08.check_vpg_loss(lambda lg, v, a, r, cv, ch: lg.sum(-1)), "0-d tensor")
    _rejects(ex08.check_vpg_loss(lambda lg, v, a, r, cv, ch: lg.sum() + v.sum()), "your loss is")
    _rejects(ex08.check_vpg_loss(lambda lg, v, a, r, cv, ch: float("nan") * lg.sum()), "not finite")


def test_vpg_baseline_not_detached():
    def undetached(logits, value, action, reward, cv, ch):
        log_pa, entropy = _terms(logits, value, action, reward)
        return -(log_pa * (reward - value)).mean() + cv * (value - reward).pow(2).mean() - ch * entropy.mean()

    _rejects(ex08.check_vpg_loss(undetached), "not detached", "value.detach()")


def test_vpg_entropy_sign_flipped():
    def plus_entropy(logits, value, action, reward, cv, ch):
        log_pa, entropy = _terms(logits, value, action, reward)
        advantage = reward - value.detach()
        return -(log_pa * advantage).mean() + cv * (value - reward).pow(2).mean() + ch * entropy.mean()

    _rejects(ex08.check_vpg_loss(plus_entropy), "entropy term has the wrong sign")


@pytest.mark.parametrize("summed", [(1, 1, 1), (1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0)])
def test_vpg_sum_instead_of_mean(summed):
    def summing(logits, value, action, reward, cv, ch):
        log_pa, entropy = _terms(logits, value, action, reward)
        terms = (-(log_pa * (reward - value.detach())), (value - reward).pow(2), entropy)
        p, b, e = (t.sum() if s else t.mean() for t, s in zip(terms, summed, strict=True))
        return p + cv * b - ch * e

    _rejects(ex08.check_vpg_loss(summing), "sum over the batch")


def test_vpg_missing_value_term():
    def no_value(logits, value, action, reward, cv, ch):
        log_pa, entropy = _terms(logits, value, action, reward)
        return -(log_pa * (reward - value.detach())).mean() - ch * entropy.mean()

    _rejects(ex08.check_vpg_loss(no_value), "value term is missing")


def test_vpg_other_wrong_gradients_get_a_general_message(vpg):
    def entropy_of_detached_logits(logits, value, action, reward, cv, ch):  # right value, wrong logits gradient
        log_p = F.log_softmax(logits, -1)
        log_pa = log_p.gather(1, action.long()[:, None]).squeeze(1)
        lp = log_p.detach()
        entropy = -(lp.exp() * lp).sum(-1).mean()
        return -(log_pa * (reward - value.detach())).mean() + cv * (value - reward).pow(2).mean() - ch * entropy

    _rejects(ex08.check_vpg_loss(entropy_of_detached_logits), "gradient with respect to the logits")

    def wrong_advantage_sign(logits, value, action, reward, cv, ch):
        return vpg(logits, value, action, -reward, cv, ch)

    assert not ex08.check_vpg_loss(wrong_advantage_sign)


# ---------------------------------------------------------------- exercise 2


def test_reach_solution_passes(reach):
    result = ex08.check_gradient_reach(reach)
    assert result, result


def test_reach_expected_answers_follow_the_formula_on_plain_cores():
    """What the check measures equals L - window (0 when window >= L) on unmasked cores, and
    max(L - window, m) on the cores that ignore their first m steps."""
    cores = ex08._cores()
    for name, core in cores.items():
        for L, w in ex08.REACH_CASES:
            reached = ex08._reached_steps(core, ex08._observations(L, 0), w)
            assert int(reached.nonzero()[0]) == max(L - w, 0), (name, L, w)
            assert bool(reached[max(L - w, 0) :].all()), (name, L, w)
        for L, w, m in ex08.MASKED_CASES:
            reached = ex08._reached_steps(ex08._MaskedCore(core, m), ex08._observations(L, 0), w)
            assert m > L - w, "the masked cases must tell the measurement from the formula"
            assert int(reached.nonzero()[0]) == max(L - w, m), (name, L, w, m)


def test_masked_core_reads_like_its_core_after_the_mask():
    """The wrapper counts steps across chunks: cut or not, it reads the same features."""
    core = ex08._cores()["a DNCCore"]
    masked = ex08._MaskedCore(core, 3)
    obs = ex08._observations(8, 1)
    whole, _ = masked(obs)
    first, state = masked(obs[:, :5])
    second, _ = masked(obs[:, 5:], state)
    assert torch.allclose(whole, torch.cat([first, second], 1), atol=1e-6)
    keep = obs.clone()
    keep[:, :3] = 0
    plain, _ = core(keep)
    assert torch.allclose(whole, plain, atol=1e-6)


def test_reach_stub_and_wrong_types_fail():
    _rejects(ex08.check_gradient_reach(_stub), "NotImplementedError")
    _rejects(ex08.check_gradient_reach(lambda core, obs, w: "4"), "step index")
    _rejects(ex08.check_gradient_reach(lambda core, obs, w: 2.5), "step index")


def test_reach_typed_formula_fails_on_the_masked_core():
    _rejects(ex08.check_gradient_reach(lambda core, obs, w: max(obs.shape[1] - w, 0)), "formula", "measure")
    _rejects(ex08.check_gradient_reach(lambda core, obs, w: obs.shape[1] - w), "before the episode starts")


@pytest.mark.parametrize("shift", [1, -1])
def test_reach_off_by_one(reach, shift):
    _rejects(ex08.check_gradient_reach(lambda core, obs, w: reach(core, obs, w) + shift), "off by one")


def test_reach_count_of_steps_is_named():
    def count(core, obs, window):
        obs = obs.clone().requires_grad_(True)
        ma.junction_features(core, obs, window).sum().backward()
        return int((obs.grad.abs().sum(dim=(0, 2)) > 0).sum())

    _rejects(ex08.check_gradient_reach(count), "how many steps")


def test_reach_accepts_an_integer_tensor(reach):
    assert ex08.check_gradient_reach(lambda core, obs, w: torch.tensor(reach(core, obs, w)))


def test_checks_leave_the_global_random_state_alone(reach):
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    ex08.check_gradient_reach(reach)
    assert torch.equal(torch.rand(3), before)


# ---------------------------------------------------------------- the notebook's cells


@pytest.mark.parametrize(
    "source, name, check",
    [
        (VPG_SOLUTION, "vpg_junction_loss", ex08.check_vpg_loss),
        (REACH_SOLUTION, "gradient_reach", ex08.check_gradient_reach),
    ],
)
def test_student_stub_keeps_the_signature_and_fails_the_check(source, name, check):
    from memtutor import course

    hint = course.solution_hint(source)
    assert hint != course.DEFAULT_HINT and len(hint) > 20
    stub = course.stub_source(source)
    assert f"def {name}(" in stub and "### BEGIN SOLUTION" not in stub
    assert not [line for line in course.answer_lines(source) if len(line.strip()) >= 25 and line.strip() in stub]
    ns = _define(stub)
    _rejects(check(ns[name]), "NotImplementedError")


def _notebook_solutions() -> dict:
    if not NOTEBOOK.exists():
        pytest.skip("notebook 08 is not in the collection yet")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    ns: dict = {"torch": torch, "F": F, "ma": ma}
    for cell in nb.cells:
        if cell.cell_type == "code" and "solution" in cell.metadata.get("tags", []):
            if cell.source.lstrip().startswith(("def ", "import ")):
                exec(compile(cell.source, NOTEBOOK.name, "exec"), ns)
    return ns


def test_notebook_solutions_pass_their_checks():
    ns = _notebook_solutions()
    for name, check in (("vpg_junction_loss", ex08.check_vpg_loss), ("gradient_reach", ex08.check_gradient_reach)):
        if name not in ns:
            pytest.fail(f"notebook 08 has no solution cell that defines {name}")
        assert ns[name] is not ma.vpg_junction_loss
        result = check(ns[name])
        assert result, f"{name}: {result}"
