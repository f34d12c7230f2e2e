"""Tests for memtutor.tool_agent (notebook 06): environment semantics, proofs, splits, policy, VPG loss, training."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from itertools import permutations, product
from pathlib import Path

import pytest
import torch
from notebook_cells import notebook_parameters

from memtutor import tool_agent as ta
from memtutor.experiments import nb06_tool_agent as nb06
from memtutor.tool_agent import ADD, MUL, NUM_ACTIONS, RCL, RSUB, STO, SUB, ToolAgentConfig, ToolPolicy
from memtutor.utils import config_dict, load_or_train, set_threads

set_threads()  # torch's default of 2 threads stalls these small ops on a 2-core machine

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINTS = ROOT / "notebooks" / "checkpoints"


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def one_problem(stage, numbers, ops):
    """A batch-of-one Problem with chosen numbers and operator symbols."""
    x = torch.zeros(1, ta.MAX_OPERANDS, dtype=torch.int64)
    x[0, : len(numbers)] = torch.tensor(numbers)
    o = torch.zeros(1, 3, dtype=torch.int64)
    o[0, : len(ops)] = torch.tensor([ta.OP_SYMBOLS.index(s) for s in ops])
    return ta.build_problems(stage, x, o)


def run_text(problem, text, **kw):
    prog = torch.tensor([ta.parse_program(text)])
    return ta.run_programs(problem, prog, **kw)


# ----------------------------------------------------------------------------- tool semantics
def test_pointer_loads_then_applies_pending_operator():
    p = one_problem(0, [7, 5, 3], "+-")
    s, _ = run_text(p, "P0")
    assert s.acc.item() == 7 and s.acc_full.item() and not s.done.item()
    for op, want in (("ADD", 12), ("SUB", 2), ("MUL", 35), ("RSUB", -2)):
        s, _ = run_text(p, f"P0 {op} P1")
        assert s.acc.item() == want, op
        assert s.pending.item() == -1


def test_sto_stores_and_empties_rcl_loads_or_applies():
    p = one_problem(2, [7, 5, 3, 2, 4], "++")
    s, _ = run_text(p, "P0 STO")
    assert s.mem.item() == 7 and s.mem_full.item() and not s.acc_full.item()
    s, _ = run_text(p, "P0 STO RCL")  # recall into an empty accumulator loads
    assert s.acc.item() == 7 and s.mem_full.item()
    s, _ = run_text(p, "P0 STO P1 RSUB RCL")  # 7 - 5
    assert s.acc.item() == 2 and s.mem.item() == 7


@pytest.mark.parametrize(
    "text",
    [
        "RCL",  # recall before store
        "ANS",  # answer with an empty accumulator
        "P0 ADD P0",  # a pointer used twice
        "P3",  # a pointer past the stage's operands
        "P0 P1",  # an operand with nothing pending
        "P0 ADD MUL",  # an operator after an operator
        "ADD",  # an operator with an empty accumulator
        "STO",  # store with an empty accumulator
        "P0 ADD ANS",  # answer with an operator pending
        "P0 ADD P1 ADD P2 ADD",  # an operator that no operand could follow
    ],
)
def test_invalid_tool_use_is_an_error_with_reward_zero(text):
    p = one_problem(0, [7, 5, 3], "++")
    s, r = run_text(p, text)
    assert s.error.item() and s.done.item() and not s.answered.item()
    assert r.sum().item() == 0
    ref = ta.reference_run_program([7, 5, 3], 0, p.target.item(), ta.parse_program(text))
    assert ref["error"]


def test_answer_ends_episode_and_later_actions_are_ignored():
    p = one_problem(0, [7, 5, 3], "++")
    s, r = run_text(p, "P0 ADD P1 ADD P2 ANS P0 RCL ANS")
    assert s.answered.item() and s.answer.item() == 15 and not s.error.item()
    assert s.steps.item() == 6 and r.tolist()[0] == [0, 0, 0, 0, 0, 1.0, 0, 0, 0]


def test_step_limit_ends_episode_unanswered():
    p = one_problem(2, [7, 5, 3, 2, 4], "++")
    # 13 valid actions, then the answer would be the 14th+1: past a limit of 13
    prog = "P0 STO RCL STO RCL STO RCL STO RCL STO RCL STO RCL ANS"
    s, _ = run_text(p, prog, max_steps=13)
    assert s.done.item() and not s.answered.item() and not s.error.item() and s.steps.item() == 13
    ref = ta.reference_run_program([7, 5, 3, 2, 4], 2, 0, ta.parse_program(prog), max_steps=13)
    assert not ref["answered"] and ref["steps"] == 13


def test_first_operand_always_loads_so_no_negation_trick():
    """RSUB on the first operand cannot negate: an operator needs a full accumulator."""
    p = one_problem(0, [7, 5, 3], "++")
    s, _ = run_text(p, "RSUB P0")
    assert s.error.item()


# ----------------------------------------------------------------------------- vectorised = loop
def test_vectorised_env_matches_per_episode_loop_on_random_programs():
    g = gen(1)
    probs = ta.cat_problems(ta.sample_problems(s, 60, g) for s in range(3))
    B, T = probs.stage.shape[0], 14
    # half uniformly random actions (mostly errors), half drawn among the valid ones
    state, progs = ta.initial_env_state(probs), []
    for _ in range(T):
        valid = ta.valid_actions(probs, state) | state.done[:, None]
        assert bool(valid.any(1).all())  # never a dead end
        w = torch.where(torch.arange(B)[:, None] % 2 == 0, valid.float(), torch.ones(B, NUM_ACTIONS))
        a = torch.multinomial(w, 1, generator=g).squeeze(1)
        state, _ = ta.env_step(probs, state, a)
        progs.append(a)
    prog = torch.stack(progs, 1)
    final, _ = ta.run_programs(probs, prog)
    assert bool((final.answered & ~final.error).any()) and bool(final.error.any())
    for i in range(B):
        ref = ta.reference_run_program(
            probs.numbers[i].tolist(), int(probs.stage[i]), int(probs.target[i]), prog[i].tolist()
        )
        assert ref["answered"] == bool(final.answered[i])
        assert ref["error"] == bool(final.error[i])
        assert ref["steps"] == int(final.steps[i])
        assert ref["correct"] == bool(final.answered[i] & (final.answer[i] == probs.target[i]))
        if ref["answered"]:
            assert ref["answer"] == int(final.answer[i])


# ----------------------------------------------------------------------------- proofs
@pytest.mark.parametrize("stage", [0, 1, 2])
def test_every_drawn_problem_is_solvable_by_its_canonical_program(stage):
    for split in ("train", "test"):
        p = ta.sample_problems(stage, 400, gen(stage), split=split)
        prog = ta.canonical_programs(p)
        s, r = ta.run_programs(p, prog, shaping=0.1)
        assert bool((s.answered & (s.answer == p.target)).all())
        # ordered shaping credits every canonical subgoal exactly once
        torch.testing.assert_close(r.sum(1), 1 + 0.1 * p.n_subgoals.float())


def _naive_memory_free(nums, target, n):
    for k in range(1, n + 1):
        for perm in permutations(range(n), k):
            for ops in product((ADD, SUB, MUL, RSUB), repeat=k - 1):
                v = nums[perm[0]]
                for o, j in zip(ops, perm[1:], strict=True):
                    y = nums[j]
                    v = v + y if o == ADD else v - y if o == SUB else v * y if o == MUL else y - v
                if v == target:
                    return True
    return False


@pytest.mark.parametrize("n", [3, 4, 5])
def test_meet_in_the_middle_search_equals_naive_enumeration(n):
    g = gen(n)
    x = torch.randint(1, 5, (25, 5), generator=g)  # small numbers: many coincidences
    t = torch.randint(-30, 120, (25,), generator=g)
    raw = ta.draw_raw_problems(2, 25, g, "cpu")
    x, t = torch.cat([x, raw.numbers]), torch.cat([t, raw.target])
    fast = ta.memory_free_solvable(x, n, t)
    slow = torch.tensor([_naive_memory_free(x[i].tolist(), int(t[i]), n) for i in range(len(t))])
    assert torch.equal(fast, slow) and bool(slow.any()) and bool((~slow).any())


def test_every_drawn_stage2_problem_needs_memory():
    for split in ("train", "test"):
        p = ta.sample_problems(2, 300, gen(5), split=split)
        assert not bool(ta.memory_free_solvable(p.numbers, 5, p.target).any())
    # and the filter matters: raw problems are often solvable without memory
    raw = ta.draw_raw_problems(2, 300, gen(6), "cpu")
    frac = ta.memory_free_solvable(raw.numbers, 5, raw.target).float().mean().item()
    assert 0.4 < frac < 0.8


def test_memory_free_search_rejects_bad_input():
    with pytest.raises(ValueError, match="operands >= 1"):
        ta.memory_free_solvable(torch.zeros(2, 5, dtype=torch.long), 5, torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="exceeds"):
        ta.memory_free_solvable(torch.ones(2, 3, dtype=torch.long), 5, torch.zeros(2, dtype=torch.long))


def test_held_out_split_is_disjoint_and_about_the_right_size():
    for stage in range(3):
        tr = ta.sample_problems(stage, 300, gen(7), split="train")
        te = ta.sample_problems(stage, 300, gen(8), split="test")
        tp = ta.sample_problems(stage, 300, gen(9), split="test-pattern")
        assert not bool(ta.is_held_out(ta.role_values(tr)).any()) and bool(ta.is_held_out(ta.role_values(te)).all())
        assert bool(ta.is_held_out(ta.role_values(tp)).all())
        assert not bool(ta.is_held_out_pattern(stage, tr.ops).any()) and not bool(
            ta.is_held_out_pattern(stage, te.ops).any()
        )
        assert bool(ta.is_held_out_pattern(stage, tp.ops).all())
        # every held-out pattern is drawn, and none of the training patterns
        held = {"".join(ta.OP_SYMBOLS[o] for o in row[: 3 if stage == 1 else 2]) for row in tp.ops.tolist()}
        assert held == set(ta.HELD_OUT_PATTERNS[stage])
    raw = ta.draw_raw_problems(0, 20000, gen(9), "cpu")
    assert abs(ta.is_held_out(raw.numbers).float().mean().item() - ta.HELD_OUT_FRACTION) < 0.02


def _stage_pattern_set(stage: int) -> set[str]:
    k = 3 if stage == 1 else 2
    patterns = {"".join(p) for p in product(ta.OP_SYMBOLS, repeat=k)}
    # stage 2 draws only patterns with a * among o1, o2 (the others never need the memory)
    return {p for p in patterns if "*" in p} if stage == 2 else patterns


def test_held_out_patterns_are_those_opening_with_a_held_out_opening_in_every_stage():
    for stage, held in enumerate(ta.HELD_OUT_PATTERNS):
        patterns = _stage_pattern_set(stage)
        want = {p for p in patterns if p[:2] in ta.HELD_OUT_OPENINGS}
        assert set(held) == want and want < patterns, stage
    # no training pattern of any stage opens with a held-out opening
    for stage in range(3):
        train = _stage_pattern_set(stage) - set(ta.HELD_OUT_PATTERNS[stage])
        assert not {p[:2] for p in train} & set(ta.HELD_OUT_OPENINGS), stage


def test_held_out_patterns_leave_every_operator_at_every_position_in_training():
    # within stages 0 and 1, and over all stages' training patterns for stage 2's two positions
    pooled: dict[int, set[str]] = {0: set(), 1: set()}
    for stage, held in enumerate(ta.HELD_OUT_PATTERNS):
        train = _stage_pattern_set(stage) - set(held)
        assert train
        for j in range(len(next(iter(train)))):
            if stage < 2:
                assert {p[j] for p in train} == set(ta.OP_SYMBOLS), (stage, j)
            if j < 2:
                pooled[j] |= {p[j] for p in train}
    assert pooled[0] == pooled[1] == set(ta.OP_SYMBOLS)


def test_a_config_records_the_held_out_openings_and_refuses_others():
    assert ta.ToolAgentConfig().held_out_openings == ta.HELD_OUT_OPENINGS
    with pytest.raises(ValueError, match="held_out_openings"):
        ta.ToolAgentConfig(held_out_openings=("++",))


def test_slots_are_shuffled_and_the_canonical_program_follows_them():
    p = ta.sample_problems(1, 2000, gen(4))
    # every permutation of the four slots occurs, about equally often
    counts = torch.unique(p.slot[:, :4], dim=0, return_counts=True)[1]
    assert counts.shape[0] == 24 and counts.min() > 40
    assert torch.equal(p.slot[:, 4], torch.full((2000,), 4))
    # the numbers in slot order, read through the slots, are the role values the target uses
    x = ta.role_values(p)
    tool = p.ops + ADD
    want = ta.apply_op(ta.apply_op(ta.apply_op(x[:, 0], tool[:, 0], x[:, 1]), tool[:, 1], x[:, 2]), tool[:, 2], x[:, 3])
    assert torch.equal(want, p.target)
    prog = ta.canonical_programs(p)
    assert torch.equal(prog[:, 0], p.slot[:, 0]) and torch.equal(prog[:, 6], p.slot[:, 3])
    # the in-order program (slot order, bindings ignored) is right only by luck
    blind = nb06.program_accuracy(p, nb06.in_order_programs(p)).float().mean().item()
    assert blind < 0.35


def _ops(pattern: str) -> torch.Tensor:
    return torch.tensor([[ta.OP_SYMBOLS.index(c) for c in pattern.ljust(3, "+")]])


def test_cross_stage_lookup_knows_no_held_out_opening():
    known = nb06.trained_operator_sequences()
    sym = {"".join(ta.OP_SYMBOLS[i] for i in seq) for seq in known}
    # every training pattern's operator sequence is known, with its prefixes ...
    assert {"++", "**", "+-*", "*-"} <= sym
    # ... and no held-out pattern of any stage, nor a held-out opening
    for held in ta.HELD_OUT_PATTERNS:
        assert not set(held) & sym
    assert not set(ta.HELD_OUT_OPENINGS) & sym
    for stage, held in enumerate(ta.HELD_OUT_PATTERNS):
        for pattern in held:
            out = nb06.cross_stage_lookup_pattern(stage, _ops(pattern))
            assert torch.equal(out, nb06.nearest_training_pattern(stage, _ops(pattern)))
            assert not torch.equal(out, _ops(pattern)) and not bool(ta.is_held_out_pattern(stage, out).any())
    # scored as in the notebook: a lookup of whole patterns or openings fails on every stage's held-out set
    for stage in range(3):
        p = ta.held_out_set(stage, 200, split="test-pattern")
        q = p._replace(ops=nb06.cross_stage_lookup_pattern(stage, p.ops))
        acc = nb06.program_accuracy(p, ta.canonical_programs(q)).float().mean().item()
        assert acc <= 0.01, (stage, acc)


def test_context_lists_each_slot_with_the_role_it_holds():
    p = ta.sample_problems(2, 200, gen(6))
    pairs = p.context[:, ta.FORMULA_LEN :].view(200, ta.MAX_OPERANDS, 2)  # (B, 5, [role, number])
    role_of_slot = pairs[:, :, 0] - ta.TOK_ROLE0
    assert torch.equal(role_of_slot.gather(1, p.slot), torch.arange(5).expand(200, 5))  # slot[r] holds role r
    assert torch.equal(pairs[:, :, 1], p.numbers)
    # the formula part names the roles in order, whatever the shuffle
    assert torch.equal(p.context[:, 0:9:2], (ta.TOK_ROLE0 + torch.arange(5)).expand(200, 5))


def test_build_problems_rejects_a_bad_slot_order():
    x = torch.tensor([[7, 5, 3, 0, 0]])
    o = torch.zeros(1, 3, dtype=torch.int64)
    with pytest.raises(ValueError, match="slot must permute"):
        ta.build_problems(0, x, o, torch.tensor([[0, 0, 2, 3, 4]]))
    with pytest.raises(ValueError, match="slot must permute"):
        ta.build_problems(0, x, o, torch.tensor([[0, 1, 3, 2, 4]]))  # moves an unused slot
    p = ta.build_problems(0, x, o, torch.tensor([[2, 0, 1, 3, 4]]))  # a in slot 2, b in slot 0, c in slot 1
    assert int(p.target) == 3 + 7 + 5 and ta.role_values(p)[0, :3].tolist() == [3, 7, 5]


def test_sampling_is_deterministic_given_the_generator():
    a, b = ta.sample_problems(2, 50, gen(3)), ta.sample_problems(2, 50, gen(3))
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)


def test_unordered_shaping_credits_out_of_order_subgoals():
    p = one_problem(2, [7, 5, 3, 2, 4], "++")
    text = "P3 MUL P4 STO P0 ADD P1 ADD P2 RSUB RCL"  # reaches d*e first (subgoal 4 of 5)
    _, r_ord = run_text(p, text, shaping=0.1, ordered_shaping=True)
    _, r_any = run_text(p, text, shaping=0.1, ordered_shaping=False)
    assert r_any.sum().item() > r_ord.sum().item()


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("stage", [3, -1, "0", 1.0, True])
def test_unknown_stage_raises(stage):
    with pytest.raises(ValueError, match="stage"):
        ta.sample_problems(stage, 4, gen())


def test_unknown_tool_token_raises():
    p = one_problem(0, [7, 5, 3], "++")
    with pytest.raises(ValueError, match="tool tokens"):
        ta.env_step(p, ta.initial_env_state(p), torch.tensor([NUM_ACTIONS]))
    with pytest.raises(ValueError, match="tool tokens"):
        ta.env_step(p, ta.initial_env_state(p), torch.tensor([-1]))
    with pytest.raises(ValueError, match="unknown tool token"):
        ta.parse_program("P0 FOO")
    with pytest.raises(ValueError, match="unknown tool token"):
        ta.reference_run_program([1, 2, 3], 0, 3, [99])


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_batch_size_below_one_raises(bad):
    with pytest.raises(ValueError, match="batch_size"):
        ta.sample_problems(0, bad, gen())


def test_config_validation():
    with pytest.raises(ValueError, match="encoder"):
        ToolAgentConfig(encoder="attention")
    with pytest.raises(ValueError, match="max_steps"):
        ToolAgentConfig(max_steps=11)
    with pytest.raises(ValueError, match="entropy_coef"):
        ToolAgentConfig(entropy_coef=-0.1)
    with pytest.raises(ValueError, match="split"):
        ta.sample_problems(0, 4, gen(), split="val")


# ----------------------------------------------------------------------------- policy
def _greedy_outputs(policy, problem):
    with torch.no_grad():
        ro = ta.rollout(policy, problem, greedy=True)
    return ro.actions, ro.value, ro.logp


def test_policy_is_batch_independent():
    torch.manual_seed(0)
    pol = ToolPolicy(ToolAgentConfig(d_model=16))
    p = ta.cat_problems(ta.sample_problems(s, 8, gen(s)) for s in range(3))
    perm = torch.randperm(24, generator=gen(1))
    a, v, lp = _greedy_outputs(pol, p)
    a2, v2, lp2 = _greedy_outputs(pol, ta.index_problems(p, perm))
    assert torch.equal(a[perm], a2)
    torch.testing.assert_close(v[perm], v2)
    torch.testing.assert_close(lp[perm], lp2)


def test_batch_mixing_bug_flag_mixes_episodes():
    """The (B, d) + (B, 1, d) broadcast ablation: episode 0 sees episode 3."""
    torch.manual_seed(0)
    for bug in (False, True):
        pol = ToolPolicy(ToolAgentConfig(d_model=16, batch_mixing_bug=bug))
        p = ta.sample_problems(0, 4, gen(0))
        ctx2 = p.context.clone()
        ctx2[3] = ta.sample_problems(1, 1, gen(5)).context[0]
        h1 = pol.encode(p.context, p.stage)
        h2 = pol.encode(ctx2, p.stage)
        moved = (h1[0] - h2[0]).abs().max().item()
        assert (moved > 1e-4) == bug


def test_mean_encoder_ignores_order_and_gru_does_not():
    torch.manual_seed(0)
    p = one_problem(0, [7, 5, 3], "+*")
    q = one_problem(0, [7, 5, 3], "*+")
    for enc, same in (("mean", True), ("gru", False)):
        pol = ToolPolicy(ToolAgentConfig(d_model=16, encoder=enc))
        h1, h2 = pol.encode(p.context, p.stage), pol.encode(q.context, q.stage)
        assert torch.allclose(h1, h2) == same


def test_action_mask_and_memory_removal():
    torch.manual_seed(0)
    p = ta.cat_problems(ta.sample_problems(s, 20, gen(s)) for s in range(3))
    ro = ta.rollout(ToolPolicy(ToolAgentConfig(d_model=16)), p, generator=gen(2))
    assert not bool(ro.state.error.any())  # masked: never an invalid call
    ro = ta.rollout(ToolPolicy(ToolAgentConfig(d_model=16, memory_tools=False)), p, generator=gen(2))
    used = ro.actions[ro.alive]
    assert not bool(((used == STO) | (used == RCL)).any())


def test_pointer_attention_follows_the_slot_keys():
    """Permuting the slots of a problem permutes the pointer scores the same way (content-based)."""
    torch.manual_seed(0)
    pol = ToolPolicy(ToolAgentConfig(d_model=16))
    p = ta.sample_problems(1, 1, gen(3))
    keys, formula = pol.keys(p.context), pol.formula(p.context)
    h = torch.randn(1, 16)
    logits, _, _ = pol.step(torch.tensor([ta.NUM_ACTIONS]), h, keys, formula)
    perm = torch.tensor([2, 0, 3, 1, 4])
    logits2, _, _ = pol.step(torch.tensor([ta.NUM_ACTIONS]), h, keys[:, perm], formula)
    torch.testing.assert_close(logits2[:, :5], logits[:, :5][:, perm])
    torch.testing.assert_close(logits2[:, 5:], logits[:, 5:])
    with pytest.raises(ValueError, match="slot keys"):
        pol.step(torch.tensor([ta.NUM_ACTIONS]), h, None, formula)
    with pytest.raises(ValueError, match="formula"):
        pol.step(torch.tensor([ta.NUM_ACTIONS]), h, keys)
    blind = ToolPolicy(ToolAgentConfig(d_model=16, context_blind=True))
    assert not bool(blind.keys(p.context).any()) and not bool(blind.formula(p.context).any())


def test_formula_attention_reads_the_operators_at_every_step():
    """With the same initial state, changing an operator of the formula changes the step's logits."""
    torch.manual_seed(0)
    p = one_problem(0, [7, 5, 3], "+*")
    q = one_problem(0, [7, 5, 3], "-*")
    h = torch.randn(1, 16)
    for flag in (True, False):
        pol = ToolPolicy(ToolAgentConfig(d_model=16, formula_attention=flag))
        args = [(pol.keys(x.context), pol.formula(x.context)) for x in (p, q)]
        a = pol.step(torch.tensor([ta.NUM_ACTIONS]), h, *args[0])[0]
        b = pol.step(torch.tensor([ta.NUM_ACTIONS]), h, *args[1])[0]
        assert (not torch.allclose(a, b)) == flag


# ----------------------------------------------------------------------------- VPG loss
def test_vpg_returns_match_a_loop_and_gradients_flow():
    torch.manual_seed(0)
    cfg = ToolAgentConfig(d_model=16)
    pol = ToolPolicy(cfg)
    p = ta.cat_problems(ta.sample_problems(s, 6, gen(s)) for s in range(3))
    prog = ta.canonical_programs(p)
    ro = ta.rollout(pol, p, generator=gen(0))
    # reward-to-go by an explicit loop
    R = ro.reward
    loop = torch.zeros_like(R)
    for i in range(R.shape[0]):
        acc = 0.0
        for t in reversed(range(R.shape[1])):
            acc += R[i, t].item()
            loop[i, t] = acc
    torch.testing.assert_close(R.flip(1).cumsum(1).flip(1), loop)
    loss, info = ta.vpg_loss(ro, cfg)
    loss.backward()
    assert all(q.grad is not None and torch.isfinite(q.grad).all() for q in pol.parameters())
    assert info["entropy"] > 0 and prog.shape == (18, cfg.max_steps)


@pytest.mark.slow
def test_training_path_learns_stage0():
    """A tiny run: greedy stage-0 accuracy on fresh problems rises well above the number-blind programs."""
    cfg = ToolAgentConfig(d_model=32, batch_size=128, max_updates=160, eval_every=80, eval_size=128, lr=5e-3, seed=0)
    out = ta.train_agent(cfg)
    curve = out["curve"]
    assert curve.shape == (2, 4) and out["updates"] == 160
    pol = ToolPolicy(cfg)
    pol.load_state_dict(out["state_dict"])
    acc0 = ta.evaluate_programs(pol, ta.sample_problems(0, 256, gen(11), split="test")).float().mean().item()
    assert acc0 > 0.5, curve


# ----------------------------------------------------------------------------- display, exercises, benchmark
def test_trace_and_text_helpers(capsys):
    p = one_problem(2, [7, 5, 3, 2, 4], "*+")
    assert nb06.context_to_text(p.context[0]) == "a * b + c - d * e | P0: a=7  P1: b=5  P2: c=3  P3: d=2  P4: e=4"
    assert nb06.problem_text(p, 0) == "((7 * 5) + 3) - (2 * 4) = 30"
    q = ta.build_problems(
        0, torch.tensor([[13, 54, 72, 0, 0]]), torch.tensor([[1, 2, 0]]), torch.tensor([[1, 2, 0, 3, 4]])
    )
    assert nb06.problem_text(q, 0) == "(54 - 72) * 13 = -234"
    assert nb06.formula_text(1, [0, 1, 2]) == "((a + b) - c) * d"
    prog = ta.canonical_programs(p)[0].tolist()
    assert nb06.program_to_text(prog) == "P0 MUL P1 ADD P2 STO P3 MUL P4 RSUB RCL ANS"
    assert ta.parse_program(nb06.program_to_text(prog)) == prog[:12]
    rows = nb06.trace_program([7, 5, 3, 2, 4], 2, prog)
    assert rows[-2] == ("RCL", 30, 38) and rows[-1][0] == "ANS"
    torch.manual_seed(0)
    rows = nb06.explain_program(ToolPolicy(ToolAgentConfig(d_model=8)), ta.cat_problems([p, p]), 1)
    assert capsys.readouterr().out.startswith("stage 2: ((7 * 5) + 3) - (2 * 4) = 30") and rows


@pytest.mark.slow
def test_benchmark_quick_runs():
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "tool_agent.py"), "--quick"],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "ratio" in out.stdout


def test_held_out_sets_are_fixed():
    a, b = ta.held_out_set(1, 20), ta.held_out_set(1, 20)
    assert torch.equal(a.numbers, b.numbers) and bool(ta.is_held_out(ta.role_values(a)).all())
    # the held-out set of stage s is drawn from seed HELD_OUT_SEED + s, its held-out-pattern set from + 3 + s
    c = ta.sample_problems(1, 20, torch.Generator().manual_seed(ta.HELD_OUT_SEED + 1), split="test")
    assert torch.equal(a.numbers, c.numbers)
    d = ta.held_out_set(1, 20, split="test-pattern")
    e = ta.sample_problems(1, 20, torch.Generator().manual_seed(ta.HELD_OUT_SEED + 4), split="test-pattern")
    assert torch.equal(d.numbers, e.numbers) and bool(ta.is_held_out_pattern(1, d.ops).all())
    with pytest.raises(ValueError, match="split"):
        ta.held_out_set(1, 20, split="train")


def test_curriculum_stage_mixes():
    cfg = ToolAgentConfig()
    assert ta.stage_mix(0, cfg) == [1.0, 0.0, 0.0]
    assert ta.stage_mix(2, cfg) == [0.25, 0.25, 0.5]  # half newest, half revisits
    assert ta.stage_mix(1, ToolAgentConfig(curriculum=False)) == [1 / 3] * 3
    fw = ta.stage_mix(2, ToolAgentConfig(failure_weighted=True), [1.0, 0.9, 0.6])
    torch.testing.assert_close(torch.tensor(fw), torch.tensor([0.05, 0.1, 0.4]) / 0.55)


def test_stage2_sampling_survives_an_empty_round():
    """A sampling round can leave no stage-2 candidate on the test split; the search must accept an
    empty batch (seed 0 used to raise a RuntimeError from a reshape of 0 elements)."""
    empty = ta.memory_free_solvable(torch.zeros(0, 5, dtype=torch.long), 5, torch.zeros(0, dtype=torch.long))
    assert empty.shape == (0,)
    problems = ta.sample_problems(2, 1000, torch.Generator().manual_seed(0), split="test")
    assert problems.numbers.shape[0] == 1000


# ----------------------------------------------------------------------------- cached results
@pytest.fixture(scope="module")
def params():
    """Notebook 06's parameters cell, run: the defaults a reader gets."""
    return notebook_parameters("06_tool_agent.ipynb", {"torch": torch, "ToolAgentConfig": ToolAgentConfig})


def _table_config(p: dict, **changes) -> nb06.AblationTableConfig:
    kw = dict(headline=p["cfg"], seeds=p["SEEDS"], ablation_seeds=p["ABLATION_SEEDS"], n_held_out=p["N_HELD_OUT"])
    return nb06.AblationTableConfig(**{**kw, **changes})


def _no_training():
    raise AssertionError("a cached result with an unchanged configuration must load without training")


def test_default_table_config_is_the_notebooks(params):
    """The script entry trains what the notebook loads."""
    assert config_dict(nb06.default_table_config()) == config_dict(_table_config(params))


def test_committed_results_record_the_notebook_defaults(params):
    agent = torch.load(CHECKPOINTS / nb06.AGENT_FILE, weights_only=True)
    assert agent["config"] == config_dict(params["cfg"])
    table = torch.load(CHECKPOINTS / nb06.ABLATIONS_FILE, weights_only=True)
    assert table["config"] == config_dict(_table_config(params))
    rows = table["result"]["rows"]
    assert list(rows) == list(nb06.ABLATIONS)
    assert rows["headline"]["seeds"].tolist() == list(params["SEEDS"]) and len(params["SEEDS"]) >= 5
    for name, row in rows.items():
        assert len(row["seeds"]) >= 3, name
        assert row["test"].shape == row["test_pattern"].shape == (len(row["seeds"]), ta.NUM_STAGES)
        assert bool((row["updates"] <= params["cfg"].max_updates).all()), name
    # the cached agent is the first headline seed of the table
    sd = table["result"]["state_dicts"]["headline"]
    assert all(torch.equal(sd[k], v) for k, v in agent["result"]["state_dict"].items())
    # every seed's agent of these rows is kept, the first also as the explorer's
    for name in nb06.EVERY_SEED_ROWS:
        kept = table["result"]["seed_state_dicts"][name]
        assert len(kept) == len(params["SEEDS"] if name == "headline" else params["ABLATION_SEEDS"])
        first = table["result"]["state_dicts"][name]
        assert all(torch.equal(kept[0][k], v) for k, v in first.items())


def test_unchanged_configuration_loads_without_training(params):
    cfg = params["cfg"]
    agent = load_or_train(nb06.AGENT_FILE, cfg, _no_training, minutes=nb06.AGENT_MINUTES, directory=CHECKPOINTS)
    policy = ToolPolicy(cfg)
    policy.load_state_dict(agent["state_dict"])
    assert agent["updates"] <= cfg.max_updates
    table = load_or_train(
        nb06.ABLATIONS_FILE, _table_config(params), _no_training, minutes=nb06.ABLATIONS_MINUTES, directory=CHECKPOINTS
    )
    assert table["max_updates"] == cfg.max_updates


@pytest.mark.parametrize(("change", "field"), [(dict(lr=1e-3), "lr"), (dict(seed=1), "seed")])
def test_changed_agent_parameter_is_detected(params, change, field):
    assert nb06.AGENT_MINUTES > 3  # training takes minutes: a changed parameter raises instead
    with pytest.raises(ValueError, match=f"{field}: cached"):
        load_or_train(
            nb06.AGENT_FILE,
            replace(params["cfg"], **change),
            _no_training,
            minutes=nb06.AGENT_MINUTES,
            directory=CHECKPOINTS,
        )


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (dict(ablation_seeds=(0, 1, 2, 3)), "ablation_seeds"),
        (dict(seeds=(0, 1, 2, 3)), "seeds"),
        (dict(n_held_out=500), "n_held_out"),
        (dict(ablations={"no formula attention": {"formula_attention": True}}), r"ablations\.no formula attention"),
    ],
)
def test_changed_table_parameter_is_detected(params, change, field):
    with pytest.raises(ValueError, match=field):
        load_or_train(
            nb06.ABLATIONS_FILE,
            _table_config(params, **change),
            _no_training,
            minutes=nb06.ABLATIONS_MINUTES,
            directory=CHECKPOINTS,
        )
    with pytest.raises(ValueError, match=r"headline\.entropy_coef"):
        load_or_train(
            nb06.ABLATIONS_FILE,
            _table_config(params, headline=replace(params["cfg"], entropy_coef=0.01)),
            _no_training,
            minutes=nb06.ABLATIONS_MINUTES,
            directory=CHECKPOINTS,
        )


def _more_config(p: dict, **changes) -> nb06.MoreAblationsConfig:
    kw = dict(headline=p["cfg"], seeds=p["ABLATION_SEEDS"], n_held_out=p["N_HELD_OUT"])
    return nb06.MoreAblationsConfig(**{**kw, **changes})


def test_default_more_config_is_the_notebooks(params):
    assert config_dict(nb06.default_more_config()) == config_dict(_more_config(params))


def test_every_row_of_the_second_part_changes_one_field_of_the_headline(params):
    headline = config_dict(params["cfg"])
    jobs = _more_config(params).jobs()
    assert [name for name, _ in jobs] == [n for n in nb06.MORE_ABLATIONS for _ in params["ABLATION_SEEDS"]]
    for name, cfg in jobs:
        changed = {k for k, v in config_dict(cfg).items() if v != headline[k]} - {"seed"}
        assert changed == set(nb06.MORE_ABLATIONS[name]), name
        assert cfg.max_updates == params["cfg"].max_updates
    assert [cfg.seed for _, cfg in jobs[: len(params["ABLATION_SEEDS"])]] == list(params["ABLATION_SEEDS"])
    with pytest.raises(ValueError, match="headline"):
        _more_config(params, ablations={"headline": {}})
    with pytest.raises(ValueError, match="must not be empty"):
        _more_config(params, seeds=())


def test_committed_second_part_records_the_notebook_defaults(params):
    more = torch.load(CHECKPOINTS / nb06.MORE_ABLATIONS_FILE, weights_only=True)
    assert more["config"] == config_dict(_more_config(params))
    rows = more["result"]["rows"]
    assert list(rows) == list(nb06.MORE_ABLATIONS) and more["result"]["max_updates"] == params["cfg"].max_updates
    for name, row in rows.items():
        assert row["seeds"].tolist() == list(params["ABLATION_SEEDS"]), name
        assert row["test"].shape == row["test_pattern"].shape == (len(row["seeds"]), ta.NUM_STAGES)
        assert bool((row["updates"] <= params["cfg"].max_updates).all()), name
        assert len(row["curves"]) == len(row["pattern_curves"]) == len(row["seeds"])
        assert len(more["result"]["seed_state_dicts"][name]) == len(row["seeds"]), name  # every agent is kept
    loaded = load_or_train(
        nb06.MORE_ABLATIONS_FILE,
        _more_config(params),
        _no_training,
        minutes=nb06.MORE_ABLATIONS_MINUTES,
        directory=CHECKPOINTS,
    )
    assert list(loaded["rows"]) == list(nb06.MORE_ABLATIONS)
    with pytest.raises(ValueError, match=r"ablations\.no shaping"):
        load_or_train(
            nb06.MORE_ABLATIONS_FILE,
            _more_config(params, ablations={**nb06.MORE_ABLATIONS, "no shaping": {"shaping": 0.05}}),
            _no_training,
            minutes=nb06.MORE_ABLATIONS_MINUTES,
            directory=CHECKPOINTS,
        )


def test_unlocked_stages_follow_the_training_loop():
    cfg = ToolAgentConfig(d_model=16, batch_size=16, max_updates=6, eval_every=1, eval_size=16, promote_at=0.0)
    out = ta.train_agent(cfg)
    read = nb06.unlocked_stages(out["curve"], cfg.promote_at)
    assert read[:-1].tolist() == out["unlocked"].tolist() and read.tolist() == [0, 1, 2, 2, 2, 2, 2]
    curve = torch.tensor([[50, 0.95, 0.2, 0.0], [100, 0.97, 0.5, 0.0], [150, 0.99, 0.91, 0.3]])
    assert nb06.unlocked_stages(curve, 0.9).tolist() == [0, 1, 1, 2]
    assert nb06.unlocked_stages(curve, 0.99).tolist() == [0, 0, 0, 1]


@pytest.mark.slow
def test_training_path_of_the_ablation_table_with_a_tiny_budget(tmp_path):
    tiny = ToolAgentConfig(d_model=8, batch_size=8, max_updates=2, eval_every=1, eval_size=8)
    config = nb06.AblationTableConfig(
        headline=tiny,
        seeds=[0, 1],
        ablation_seeds=[0],
        n_held_out=8,
        ablations={"no formula attention": {"formula_attention": False}, "no shaping": {"shaping": 0.0}},
    )
    table = load_or_train("t.pt", config, lambda: nb06.train_ablation_table(config), minutes=0.1, directory=tmp_path)
    rows = table["rows"]
    assert list(rows) == ["headline", "no formula attention", "no shaping"]
    assert rows["headline"]["test"].shape == rows["headline"]["test_pattern"].shape == (2, ta.NUM_STAGES)
    assert rows["no shaping"]["updates"].tolist() == [2] and table["max_updates"] == 2
    assert set(table["state_dicts"]) == set(nb06.EXPLORER_ROWS)
    kept = table["seed_state_dicts"]["no formula attention"]
    assert set(table["seed_state_dicts"]) == set(nb06.EVERY_SEED_ROWS) and len(kept) == len(config.ablation_seeds)
    assert all(torch.equal(kept[0][k], v) for k, v in table["state_dicts"]["no formula attention"].items())
    again = load_or_train("t.pt", config, _no_training, minutes=0.1, directory=tmp_path)
    torch.testing.assert_close(again["rows"]["headline"]["test"], rows["headline"]["test"])
    out = ta.train_agent(tiny, progress=True)
    assert out["updates"] == 2 and "config" not in out
    more = nb06.MoreAblationsConfig(headline=tiny, seeds=[0], n_held_out=8)
    second = load_or_train("m.pt", more, lambda: nb06.train_ablation_table(more), minutes=0.1, directory=tmp_path)
    assert list(second["rows"]) == list(nb06.MORE_ABLATIONS) and second["max_updates"] == 2
    assert all(r["seeds"].tolist() == [0] for r in second["rows"].values())
    assert {n: len(k) for n, k in second["seed_state_dicts"].items()} == {n: 1 for n in nb06.MORE_ABLATIONS}


def _one_update_by_hand(cfg: ToolAgentConfig, value_coef: float | None = None) -> dict:
    """The first update of train_agent written out from its documented seeding (notebook 06's my_update)."""
    from memtutor.utils import generator as make_generator

    torch.manual_seed(cfg.seed)
    policy = ToolPolicy(cfg)
    opt = torch.optim.Adam(policy.parameters(), lr=cfg.lr)
    g = make_generator(cfg.seed, ta.TOOL_TRAIN_DRAWS)
    mix = torch.tensor(ta.stage_mix(0, cfg, None))
    counts = torch.bincount(torch.multinomial(mix, cfg.batch_size, True, generator=g), minlength=ta.NUM_STAGES)
    problems = ta.cat_problems(ta.sample_problems(s, c, g) for s, c in enumerate(counts.tolist()) if c > 0)
    ro = ta.rollout(policy, problems, generator=g)
    loss, _ = ta.vpg_loss(ro, cfg if value_coef is None else replace(cfg, value_coef=value_coef))
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.grad_clip)
    opt.step()
    return policy.state_dict()


def test_one_training_update_is_reproducible_by_hand_from_the_documented_seeding():
    """Notebook 06 checks its my_update against train_agent(max_updates=1): the update must be exactly
    the documented one (seed, generator, stage mix, rollout, loss, clip, Adam), and a different loss must show."""
    cfg = ToolAgentConfig(batch_size=32, max_updates=1, eval_size=4, seed=3)
    theirs = ta.train_agent(cfg)["state_dict"]
    mine = _one_update_by_hand(cfg)
    assert mine.keys() == theirs.keys()
    for name in theirs:
        torch.testing.assert_close(mine[name], theirs[name])
    wrong = _one_update_by_hand(cfg, value_coef=0.25)  # an injected change to the loss is detected
    assert any(not torch.allclose(wrong[name], theirs[name]) for name in theirs)


def test_a_diagnostic_at_the_checks_sees_every_check_and_changes_no_weight():
    cfg = ta.ToolAgentConfig(batch_size=16, max_updates=4, eval_every=2, eval_size=8, seed=3)
    seen = []

    def diagnose(update, policy):
        seen.append(update)
        ta.evaluate_programs(policy, ta.held_out_set(0, 16, split="test-pattern"))

    plain = ta.train_agent(cfg)
    watched = ta.train_agent(cfg, on_check=diagnose)
    assert seen == [2, 4]
    assert torch.equal(plain["curve"], watched["curve"])
    for name, w in plain["state_dict"].items():
        assert torch.equal(w, watched["state_dict"][name]), name
