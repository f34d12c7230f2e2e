"""Tests for memtutor.memory_agent (notebook 08) and the pure pieces of its experiments module."""

from __future__ import annotations

import copy
import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest
import torch
from matplotlib.figure import Figure
from torch import nn
from torch.nn import functional as F

from memtutor import memory_agent as ma
from memtutor import memup as mu
from memtutor import tmaze
from memtutor.experiments import nb08_memory_agent as xp
from memtutor.utils import generator, set_threads

set_threads()  # torch's default of 2 threads stalls these small ops on a 2-core machine


def tiny(agent: str = "lstm", **overrides) -> ma.AgentConfig:
    """A training run of a fraction of a second: L = 8, r = 3, batches of 8, 64 episodes."""
    kw = {
        "agent": agent,
        "length": 8,
        "episodes": 64,
        "batch": 8,
        "truncation": 3,
        "hidden": 8,
        "num_slots": 4,
        "word_size": 4,
        "eval_every": 3,
        "eval_episodes": 16,
    }
    return ma.AgentConfig(**{**kw, **overrides})


def maze_obs(batch: int, length: int, seed: int = 0, noisy: bool = True):
    state, _ = tmaze.reset(batch, length, generator(seed), noisy=noisy)
    return state, tmaze.episode_observations(state)


def core_of(kind: str) -> nn.Module:
    torch.manual_seed(0)
    return ma.make_core(tiny(kind))


def same_state(a: dict, b: dict, keys=None) -> bool:
    keys = a.keys() if keys is None else keys
    return all(torch.equal(a[k], b[k]) for k in keys)


# ----------------------------------------------------------------------------- the loss


def test_vpg_loss_matches_a_per_sample_loop():
    g = generator(1)
    B, c_v, c_h = 6, 0.7, 0.05
    logits, value = torch.randn(B, 2, generator=g), torch.randn(B, generator=g)
    action = torch.randint(0, 2, (B,), generator=g)
    reward = torch.where(torch.rand(B, generator=g) < 0.5, tmaze.SUCCESS_REWARD, tmaze.FAILURE_REWARD)
    loss, parts = ma.vpg_junction_loss(logits, value, action, reward, c_v, c_h)
    policy = baseline = entropy = 0.0
    for b in range(B):
        p = [math.exp(x) / sum(math.exp(y) for y in logits[b].tolist()) for x in logits[b].tolist()]
        advantage = reward[b].item() - value[b].item()
        policy += -math.log(p[action[b].item()]) * advantage / B
        baseline += (value[b].item() - reward[b].item()) ** 2 / B
        entropy += -sum(q * math.log(q) for q in p) / B
    assert parts["policy"] == pytest.approx(policy, rel=1e-5)
    assert parts["baseline"] == pytest.approx(baseline, rel=1e-5)
    assert parts["entropy"] == pytest.approx(entropy, rel=1e-5)
    assert loss.item() == pytest.approx(policy + c_v * baseline - c_h * entropy, rel=1e-5)


def test_vpg_loss_gradients_baseline_detached_and_value_regressed():
    g = generator(2)
    B, c_v = 5, 0.5
    logits0, value0 = torch.randn(B, 2, generator=g), torch.randn(B, generator=g)
    action, reward = torch.tensor([0, 1, 1, 0, 1]), torch.tensor([4.0, -3.0, 4.0, 4.0, -3.0])

    def grads(value_coef):
        logits, value = logits0.clone().requires_grad_(), value0.clone().requires_grad_()
        loss, _ = ma.vpg_junction_loss(logits, value, action, reward, value_coef, 0.0)
        loss.backward()
        return logits.grad, value.grad

    # the policy term alone sends nothing to the value: the advantage's baseline is a constant there
    g_logits, g_value = grads(0.0)
    assert torch.equal(g_value, torch.zeros(B))
    p = F.softmax(logits0, -1)
    want = -(F.one_hot(action, 2) - p) * (reward - value0)[:, None] / B  # d(-log pi(a) A) / d logits
    torch.testing.assert_close(g_logits, want)
    # the baseline's squared error: 2 c_V (V - R) / B, and nothing more on the logits
    g_logits2, g_value2 = grads(c_v)
    torch.testing.assert_close(g_value2, 2 * c_v * (value0 - reward) / B)
    torch.testing.assert_close(g_logits2, g_logits)


def test_vpg_entropy_is_log2_for_uniform_logits_and_its_bonus_pushes_towards_uniform():
    value = torch.zeros(4)
    _, parts = ma.vpg_junction_loss(torch.zeros(4, 2), value, torch.tensor([0, 1, 0, 1]), value, 0.5, 0.01)
    assert parts["entropy"] == pytest.approx(math.log(2))
    assert parts["policy"] == 0 and parts["baseline"] == 0  # R = V: no advantage, no error
    logits = torch.tensor([[2.0, 0.0]], requires_grad=True)
    loss, _ = ma.vpg_junction_loss(logits, torch.ones(1), torch.tensor([0]), torch.ones(1), 0.0, 1.0)
    loss.backward()
    assert logits.grad[0, 0] > 0 > logits.grad[0, 1]  # descending the loss evens the two logits out


@pytest.mark.parametrize(
    "logits, value, action, reward",
    [
        (torch.zeros(4), torch.zeros(4), torch.zeros(4, dtype=torch.long), torch.zeros(4)),
        (torch.zeros(4, 2), torch.zeros(4, 1), torch.zeros(4, dtype=torch.long), torch.zeros(4)),
        (torch.zeros(4, 2), torch.zeros(4), torch.zeros(3, dtype=torch.long), torch.zeros(4)),
        (torch.zeros(4, 2), torch.zeros(4), torch.zeros(4, dtype=torch.long), torch.zeros(5)),
        (torch.full((4, 2), math.nan), torch.zeros(4), torch.zeros(4, dtype=torch.long), torch.zeros(4)),
    ],
)
def test_vpg_loss_refuses_bad_shapes(logits, value, action, reward):
    with pytest.raises(ValueError):
        ma.vpg_junction_loss(logits, value, action, reward, 0.5, 0.01)


def test_sample_actions_follows_the_policy_and_the_generator():
    logits = torch.tensor([[0.0, 30.0], [30.0, 0.0]]).repeat(50, 1)
    a = ma.sample_actions(logits, generator(0))
    assert a.dtype == torch.long and a.shape == (100,)
    assert torch.equal(a, torch.tensor([1, 0]).repeat(50))
    even = torch.zeros(2000, 2)
    assert torch.equal(ma.sample_actions(even, generator(3)), ma.sample_actions(even, generator(3)))
    assert abs(ma.sample_actions(even, generator(3)).float().mean().item() - 0.5) < 0.05


# ----------------------------------------------------------------------------- cores and truncation


@pytest.mark.parametrize("kind", ["lstm", "dnc"])
def test_truncation_cuts_the_gradient_before_the_window(kind):
    core, L = core_of(kind), 8
    _, obs = maze_obs(4, L)
    for window, reached in [(3, L - 3), (1, L - 1), (L, 0), (L + 5, 0)]:
        x = obs.clone().requires_grad_()
        ma.junction_features(core, x, window).pow(2).sum().backward()
        grad = x.grad.abs().sum((0, 2))  # (L,) how much each step's observation moves the features
        assert torch.equal(grad[:reached], torch.zeros(reached)), (window, grad)
        assert grad[reached] > 0, (window, grad)
        assert grad[0] > 0 if window >= L else grad[0] == 0  # the cue's step: reached only when r >= L


@pytest.mark.parametrize("kind", ["lstm", "dnc"])
def test_truncation_changes_gradients_not_values(kind):
    core, L = core_of(kind), 7
    _, obs = maze_obs(5, L, seed=1)
    with torch.no_grad():
        full, _ = core(obs)  # (B, L, F)
    assert full.shape == (5, L, core.features)
    for window in range(1, L + 3):
        torch.testing.assert_close(ma.junction_features(core, obs, window), full[:, -1])


@pytest.mark.parametrize("kind", ["lstm", "dnc"])
def test_the_steps_before_the_window_build_no_graph(kind):
    core, grad_on = core_of(kind), []
    core.register_forward_pre_hook(lambda mod, args: grad_on.append(torch.is_grad_enabled()))
    obs = maze_obs(2, 6)[1]
    ma.junction_features(core, obs, 2)
    assert grad_on == [False, True]  # the prefix runs without a graph, the window with one
    grad_on.clear()
    ma.junction_features(core, obs, 6)
    assert grad_on == [True]


def test_agent_shapes_and_cores():
    assert isinstance(ma.make_core(tiny("dnc")), ma.DNCCore)
    for agent in ("lstm", "lstm_full", "memup"):
        assert isinstance(ma.make_core(tiny(agent)), ma.LSTMCore)
    core = ma.make_core(tiny(forget_bias=2.5))
    H = core.features
    assert torch.equal(core.lstm.bias_ih_l0[H : 2 * H], torch.full((H,), 2.5))
    agent = ma.Agent(ma.make_core(tiny("dnc")))
    logits, value = agent(maze_obs(3, 6)[1], 2)
    assert logits.shape == (3, tmaze.NUM_ACTIONS) and value.shape == (3,)
    with pytest.raises(ValueError):
        ma.junction_features(agent.core, torch.zeros(3, 6), 2)
    with pytest.raises(ValueError):
        ma.junction_features(agent.core, torch.zeros(3, 6, 3), 0)


# ----------------------------------------------------------------------------- acting


def varied_agent(cfg: ma.AgentConfig, seed: int) -> ma.Agent:
    """An untrained agent whose policy head is shifted so that its greedy turns differ between
    episodes (an untrained head turns the same way everywhere, which would make the test vacuous)."""
    torch.manual_seed(seed)
    agent = ma.Agent(ma.make_core(cfg))
    _, obs = maze_obs(256, cfg.length, seed=99, noisy=cfg.noisy)
    with torch.no_grad():
        f = ma.junction_features(agent.core, obs, cfg.length)
        w = agent.heads.policy.weight
        diff = f @ (w[1] - w[0])  # (B,) logit of UP minus DOWN, before the bias
        agent.heads.policy.bias.copy_(torch.tensor([0.0, -diff.mean().item()]))
    return agent


@pytest.mark.parametrize("noisy", [False, True])
@pytest.mark.parametrize("kind", ["lstm", "dnc"])
def test_acting_step_by_step_turns_as_reading_the_whole_corridor(kind, noisy):
    cfg = tiny(kind, noisy=noisy, length=7)
    agent = varied_agent(cfg, seed=3)
    right = ma.junction_decisions(agent, cfg, 64, 11)
    assert right.dtype == torch.bool and right.shape == (64,)
    state, _ = tmaze.reset(64, cfg.length, generator(11), noisy=noisy)
    up = state.cue > 0
    turned_up = right == up
    assert 0 < turned_up.sum() < 64  # both turns occur: the comparison below means something
    if not noisy:  # the plain maze differs between episodes in the cue only: so do the turns
        assert torch.equal(turned_up, up) or torch.equal(turned_up, ~up)
    rewards = ma.act_in_maze(agent, cfg, 64, 11)
    want = torch.where(right, tmaze.SUCCESS_REWARD, tmaze.FAILURE_REWARD)
    assert torch.equal(rewards, want)


def test_plain_untrained_agents_turn_the_same_way_on_both_paths():
    for kind in ("lstm", "dnc"):
        for noisy in (False, True):
            cfg = tiny(kind, noisy=noisy)
            torch.manual_seed(7)
            agent = ma.Agent(ma.make_core(cfg))
            right = ma.junction_decisions(agent, cfg, 32, 4)
            want = torch.where(right, tmaze.SUCCESS_REWARD, tmaze.FAILURE_REWARD)
            assert torch.equal(ma.act_in_maze(agent, cfg, 32, 4), want)


# ----------------------------------------------------------------------------- MemUP's pieces


def test_outcomes_mark_the_junction_only():
    cue = torch.tensor([1, 1, -1, -1])
    actions = torch.zeros(4, 5, dtype=torch.long)
    actions[:, -1] = torch.tensor([tmaze.UP, tmaze.DOWN, tmaze.UP, tmaze.DOWN])
    actions[:, 1] = 1  # corridor actions change nothing
    y = ma.outcomes(cue, actions)
    assert y.dtype == torch.long and y.shape == (4, 5)
    assert torch.equal(y[:, :-1], torch.full((4, 4), ma.NO_REWARD))
    assert y[:, -1].tolist() == [ma.SUCCESS, ma.FAILURE, ma.FAILURE, ma.SUCCESS]
    g = generator(5)
    cue = torch.randint(0, 2, (300,), generator=g) * 2 - 1
    actions = torch.randint(0, 2, (300, 9), generator=g)
    y = ma.outcomes(cue, actions)
    assert bool((y[:, :-1] == ma.NO_REWARD).all())
    match = (cue > 0) == (actions[:, -1] == tmaze.UP)
    assert torch.equal(y[:, -1], torch.where(match, ma.SUCCESS, ma.FAILURE))
    assert 0 < int(match.sum()) < 300
    with pytest.raises(ValueError):
        ma.outcomes(cue, actions[:, 0])


def memup_nets(cfg: ma.AgentConfig, seed: int = 0):
    torch.manual_seed(seed)
    memory = ma.make_core(cfg)
    predictor, detector = ma.OutcomePredictor(cfg.hidden), ma.OutcomeDetector(cfg.hidden)
    ema = copy.deepcopy(detector).requires_grad_(False)
    opts = {
        "memory": torch.optim.Adam([*memory.parameters(), *predictor.parameters()], lr=cfg.lr),
        "detector": torch.optim.Adam(detector.parameters(), lr=cfg.lr),
    }
    return memory, predictor, detector, ema, opts


def memup_batch(cfg: ma.AgentConfig, seed: int = 0):
    state, obs = maze_obs(cfg.batch, cfg.length, seed=seed, noisy=cfg.noisy)
    actions = torch.randint(0, 2, (cfg.batch, cfg.length), generator=generator(seed + 1))
    return obs, actions, ma.outcomes(state.cue, actions)


@pytest.mark.parametrize("length, truncation, steps", [(8, 3, 3), (9, 3, 3), (10, 3, 4), (6, 6, 1), (6, 20, 1)])
def test_memup_update_steps_and_what_it_changes(length, truncation, steps):
    cfg = tiny("memup", length=length, truncation=truncation, ema_decay=0.75)
    assert steps == math.ceil(length / cfg.window)
    memory, predictor, detector, ema, opts = memup_nets(cfg)
    before = [copy.deepcopy(m.state_dict()) for m in (memory, predictor, detector, ema)]
    out = ma.memup_memory_update(memory, predictor, detector, ema, opts, *memup_batch(cfg), cfg)
    assert out["steps"] == steps
    assert out["loss"] > 0 and out["detector_loss"] > 0
    for net, old in zip((memory, predictor, detector), before, strict=False):
        assert all(not torch.equal(v, old[k]) for k, v in net.state_dict().items()), type(net).__name__
    # the EMA copy moves towards the (updated) detector by 1 - decay
    for (k, v), new in zip(ema.state_dict().items(), detector.state_dict().values(), strict=True):
        torch.testing.assert_close(v, 0.75 * before[3][k] + 0.25 * new)


def test_memup_predicts_the_junction_when_its_surprise_peaks_there():
    cfg = tiny("memup", length=8, truncation=3)
    memory, predictor, detector, ema, opts = memup_nets(cfg)
    # the EMA detector is sure every step is NO_REWARD: the junction (a reward) is its only surprise;
    # the trained detector believes the opposite, so scoring with it would pick corridor steps
    for net, bias in ((ema, [10.0, 0.0, 0.0]), (detector, [-10.0, 5.0, 5.0])):
        with torch.no_grad():
            net.net[-1].weight.zero_()
            net.net[-1].bias.copy_(torch.tensor(bias))
    seen_ctx, seen_in = [], []
    predictor.register_forward_hook(lambda mod, args, out: seen_ctx.append(args[1].detach().clone()))
    memory.register_forward_pre_hook(lambda mod, args: seen_in.append((args[0].shape[1], args[1])))
    obs, actions, y = memup_batch(cfg)
    out = ma.memup_memory_update(memory, predictor, detector, ema, opts, obs, actions, y, cfg)
    assert out["steps"] == 3 and len(seen_ctx) == 3
    assert [n for n, _ in seen_in] == [3, 3, 2]  # rollouts of r steps
    assert seen_in[0][1] is None
    assert all(not s.requires_grad for _, state in seen_in[1:] for s in state)  # detached carried state
    junction_ctx = torch.cat([obs[:, -1], F.one_hot(actions[:, -1], 2).float()], -1)  # (B, 5)
    for ctx in seen_ctx:  # (B, P, K, 5): every prediction step's target is the junction
        torch.testing.assert_close(ctx, junction_ctx[:, None, None].expand_as(ctx))
    # the same choice from notebook 07's selection, on a hand-made surprise
    u = torch.zeros(4, 8)
    u[:, -1] = 5.0
    for tg in mu.rollout_targets(u, 3, 1):
        assert bool((tg.idx == 7).all()) and bool(tg.valid.all())


def test_memup_memory_learns_the_cue_of_a_short_noisy_corridor():
    # r = 2 of L = 8: the memory has to carry the cue on its own, from predicting the junction's outcome
    cfg = ma.AgentConfig(
        agent="memup", length=8, episodes=3072, batch=16, truncation=2, hidden=16, lr=1e-2, eval_every=1000
    )
    result = ma.train_agent(cfg, 0)
    assert result["memory_loss"][-8:].mean() < 0.05
    agent = ma.load_agent(cfg, result)
    assert ma.success_rate(agent, cfg, 256, ma.TEST_SEED) > 0.95
    assert xp.cue_information(agent, cfg, 256)[-1] > 0.95


# ----------------------------------------------------------------------------- training


def counts(cfg: ma.AgentConfig) -> tuple[int, int]:
    """(memory updates, policy updates) of the documented split."""
    n_memory = round(cfg.episodes * cfg.memory_share) // cfg.batch if cfg.agent == "memup" else 0
    return n_memory, cfg.episodes // cfg.batch - n_memory


@pytest.mark.parametrize("agent", ma.AGENTS)
def test_train_agent_returns_the_documented_result(agent):
    cfg = tiny(agent)
    calls = []
    result = ma.train_agent(cfg, 0, on_update=calls.append)
    n_memory, n_policy = counts(cfg)
    keys = {"agent", "curve_updates", "curve_success", "reward", "optimizer_steps", "seconds"}
    if agent == "memup":
        keys |= {"predictor", "detector", "memory_loss"}
        assert result["memory_loss"].shape == (n_memory,)
    assert set(result) == keys
    steps = n_memory * math.ceil(cfg.length / cfg.window) + n_policy
    assert result["optimizer_steps"] == steps
    assert calls == list(range(n_memory + n_policy))
    assert result["reward"].shape == (n_policy,)
    means = {
        (k * tmaze.SUCCESS_REWARD + (cfg.batch - k) * tmaze.FAILURE_REWARD) / cfg.batch for k in range(cfg.batch + 1)
    }
    assert all(min(abs(r - m) for m in means) < 1e-6 for r in result["reward"].tolist())  # batch means
    want = [n_memory + i for i in range(cfg.eval_every, n_policy + 1, cfg.eval_every)]
    want += [] if n_policy % cfg.eval_every == 0 else [n_memory + n_policy]
    assert result["curve_updates"].tolist() == want
    success = result["curve_success"]
    assert success.dtype == torch.float64 and success.shape == (len(want),)
    assert bool(((success >= 0) & (success <= 1)).all())
    assert (success * cfg.eval_episodes).eq((success * cfg.eval_episodes).round()).all()
    assert result["seconds"] > 0
    loaded = ma.load_agent(cfg, result)
    assert not loaded.training


@pytest.mark.parametrize("agent", ma.AGENTS)
def test_train_agent_is_deterministic(agent):
    cfg = tiny(agent, episodes=32)
    a, b, c = ma.train_agent(cfg, 4), ma.train_agent(cfg, 4), ma.train_agent(cfg, 5)
    assert same_state(a["agent"], b["agent"])
    assert torch.equal(a["reward"], b["reward"]) and torch.equal(a["curve_success"], b["curve_success"])
    assert not same_state(a["agent"], c["agent"])
    if agent == "memup":
        assert same_state(a["predictor"], b["predictor"]) and same_state(a["detector"], b["detector"])


def test_one_policy_update_by_hand_follows_the_documented_seeding():
    cfg = tiny("lstm", episodes=64, batch=64, clip=0.05)
    result = ma.train_agent(cfg, 6)
    torch.manual_seed(6)
    agent = ma.Agent(ma.make_core(cfg))
    episodes, actions = generator(6, ma.TRAIN_EPISODES), generator(6, ma.TRAIN_ACTIONS)
    state, _ = tmaze.reset(64, cfg.length, episodes, noisy=True)
    logits, value = agent(tmaze.episode_observations(state), cfg.window)
    action = ma.sample_actions(logits, actions)
    reward = tmaze.junction_reward(state.cue, action)
    loss, _ = ma.vpg_junction_loss(logits, value, action, reward, cfg.value_coef, cfg.entropy_coef)
    opt = torch.optim.Adam(agent.parameters(), lr=cfg.lr)
    loss.backward()
    assert torch.nn.utils.clip_grad_norm_(agent.parameters(), cfg.clip) > cfg.clip  # the clip acts
    opt.step()
    assert result["reward"].tolist() == [reward.mean().item()]
    for k, v in agent.state_dict().items():
        torch.testing.assert_close(result["agent"][k], v, msg=k)


def test_truncation_is_what_tells_lstm_from_lstm_full():
    # same seed, same network, same episodes: only the gradient's path through time differs
    full = ma.train_agent(tiny("lstm_full", episodes=24), 3)["agent"]
    assert not same_state(ma.train_agent(tiny("lstm", episodes=24), 3)["agent"], full)
    assert same_state(ma.train_agent(tiny("lstm", episodes=24, truncation=8), 3)["agent"], full)


@pytest.fixture
def spy_policy_update(monkeypatch):
    """Record, at every call of ``policy_update``, the agent, its core's state and the parameters it may change."""
    calls = []
    real = ma.policy_update

    def spy(agent, opt, params, *args, **kwargs):
        calls.append(
            {"agent": agent, "core": copy.deepcopy(agent.core.state_dict()), "params": {id(p) for p in params}}
        )
        calls[-1]["heads"] = copy.deepcopy(agent.heads.state_dict())
        return real(agent, opt, params, *args, **kwargs)

    monkeypatch.setattr(ma, "policy_update", spy)
    return calls


def test_memup_phase_two_freezes_the_memory(spy_policy_update):
    cfg = tiny("memup")
    result = ma.train_agent(cfg, 0)
    calls = spy_policy_update
    assert len(calls) == counts(cfg)[1]
    agent = calls[0]["agent"]
    core_keys = [f"core.{k}" for k in calls[0]["core"]]
    head_keys = [f"heads.{k}" for k in calls[0]["heads"]]
    assert calls[0]["params"] == {id(p) for p in agent.heads.parameters()}  # only the heads may move
    # phase 1 trained the memory ...
    torch.manual_seed(0)
    fresh = ma.Agent(ma.make_core(cfg)).state_dict()
    assert not any(torch.equal(fresh[k], result["agent"][k]) for k in core_keys)
    # ... phase 2 left it as phase 1 did, and trained the heads
    for call in calls:
        assert same_state(call["core"], calls[0]["core"])
    assert all(torch.equal(result["agent"][k], calls[0]["core"][k.removeprefix("core.")]) for k in core_keys)
    assert not any(torch.equal(result["agent"][k], calls[0]["heads"][k.removeprefix("heads.")]) for k in head_keys)
    assert all(p.requires_grad for p in agent.parameters())  # the freeze is undone for later use


@pytest.mark.parametrize("agent", ["lstm", "lstm_full", "dnc"])
def test_the_other_agents_train_core_and_heads_together(agent, spy_policy_update):
    cfg = tiny(agent)
    result = ma.train_agent(cfg, 0)
    first = spy_policy_update[0]
    assert first["params"] == {id(p) for p in first["agent"].parameters()}
    torch.manual_seed(0)
    fresh = ma.Agent(ma.make_core(cfg)).state_dict()
    assert all(torch.equal(fresh[f"core.{k}"], v) for k, v in first["core"].items())  # no phase before the policy's
    moved = [k for k in fresh if not torch.equal(fresh[k], result["agent"][k])]
    assert any(k.startswith("core.") for k in moved) and any(k.startswith("heads.") for k in moved)


# ----------------------------------------------------------------------------- evaluation


def test_success_rate_evaluates_greedily_in_eval_mode_and_restores_the_mode():
    cfg = tiny("dnc", length=6)
    agent = varied_agent(cfg, seed=3)
    modes = []
    agent.heads.register_forward_pre_hook(lambda mod, args: modes.append(mod.training))
    want = ma.junction_decisions(agent, cfg, 40, 2).double().mean().item()
    for training in (True, False):
        agent.train(training)
        modes.clear()
        assert ma.success_rate(agent, cfg, 40, 2) == want
        assert modes == [False] and agent.training is training and agent.core.training is training
    assert 0 < want < 1


def test_load_agent_round_trip_turns_as_the_trained_agent(spy_policy_update, tmp_path):
    cfg = tiny("dnc")
    result = ma.train_agent(cfg, 1)
    trained = spy_policy_update[-1]["agent"]
    torch.save(result, tmp_path / "run.pt")
    loaded = ma.load_agent(cfg, torch.load(tmp_path / "run.pt", weights_only=True))
    assert isinstance(loaded.core, ma.DNCCore) and not loaded.training
    _, obs = maze_obs(32, cfg.length, seed=8)
    with torch.no_grad():
        torch.testing.assert_close(loaded(obs, cfg.length), trained(obs, cfg.length), rtol=0, atol=0)
    assert torch.equal(ma.junction_decisions(loaded, cfg, 64, 3), ma.junction_decisions(trained, cfg, 64, 3))


# ----------------------------------------------------------------------------- the config


@pytest.mark.parametrize(
    "bad",
    [
        {"agent": "gru"},
        {"agent": "LSTM"},
        {"length": 1},
        {"length": 0},
        {"length": 8.0},
        {"noisy": 1},
        {"noisy": "yes"},
        {"lr": 0},
        {"lr": -1e-3},
        {"lr": "0.01"},
        {"clip": 0.0},
        {"memory_share": 0.0},
        {"memory_share": 1.0},
        {"memory_share": 1.5},
        {"ema_decay": 1.0},
        {"ema_decay": -0.1},
        {"episodes": 4},
        {"batch": 0},
        {"truncation": 0},
        {"hidden": 2.5},
        {"k": 0},
        {"eval_every": 0},
        {"value_coef": math.nan},
        {"agent": "memup", "episodes": 12},  # two phases need a batch each
    ],
)
def test_agent_config_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        tiny(**bad)


def test_agent_config_accepts_the_edges_and_defaults():
    tiny(ema_decay=0.0)
    tiny(episodes=8)
    tiny("memup", episodes=16)
    ma.AgentConfig()
    for agent in ma.AGENTS:
        ma.AgentConfig(agent=agent)


@pytest.mark.parametrize(
    "agent, length, truncation, window",
    [("lstm", 10, 3, 3), ("lstm", 10, 20, 10), ("dnc", 10, 4, 4), ("memup", 5, 7, 5), ("memup", 50, 7, 7)]
    + [("lstm_full", 10, 3, 10), ("lstm_full", 4, 20, 4)],
)
def test_window_property(agent, length, truncation, window):
    assert tiny(agent, length=length, truncation=truncation).window == window


# ----------------------------------------------------------------------------- the experiments module


def test_wilson_interval_known_values_and_bad_input():
    lo, hi = xp.wilson_interval(8, 10)
    assert (lo, hi) == pytest.approx((0.4902, 0.9433), abs=1e-4)  # the textbook 95% interval of 8/10
    assert xp.wilson_interval(50, 100) == pytest.approx((0.4038, 0.5962), abs=1e-4)
    lo, hi = xp.wilson_interval(0, 10)
    assert lo == pytest.approx(0.0, abs=1e-12) and hi == pytest.approx(0.2775, abs=1e-4)
    assert xp.wilson_interval(10, 10)[1] == pytest.approx(1.0)
    a, b = xp.wilson_interval(900, 1000), xp.wilson_interval(90, 100)
    assert a[1] - a[0] < b[1] - b[0]  # more episodes, a narrower interval
    for successes, n in [(-1, 10), (11, 10), (2.5, 10), (True, 10), (3, 0), (3, 2.0)]:
        with pytest.raises(ValueError):
            xp.wilson_interval(successes, n)


def test_choose_lr_prefers_the_best_mean_curve_and_breaks_ties_to_the_middle():
    lrs = torch.tensor(xp.LRS, dtype=torch.float64)
    assert len(xp.LRS) == 3

    def search(*curves):
        return {"lrs": lrs, "curve_success": torch.tensor(curves, dtype=torch.float64)}

    chance = [0.5, 0.5, 0.5]
    assert xp.choose_lr(search(chance, chance, chance)) == xp.LRS[1]
    assert xp.choose_lr(search([0.5, 1.0, 1.0], chance, [0.5, 0.6, 0.9])) == xp.LRS[0]
    assert xp.choose_lr(search(chance, [0.5, 0.6, 0.9], [0.5, 0.9, 1.0])) == xp.LRS[2]
    # the mean over the curve decides, not its end: the early learner wins
    assert xp.choose_lr(search([0.9, 0.9, 0.9], chance, [0.5, 0.5, 1.0])) == xp.LRS[0]
    assert xp.choose_lr(search([0.9, 1.0, 1.0], [0.9, 1.0, 1.0], chance)) == xp.LRS[1]  # a tie with the middle


def test_longest_solved_every_seed_or_the_mean():
    per_length = {10: [1.0, 0.96, 0.99], 30: [0.99, 0.9, 1.0], 100: [0.5, 0.6, 0.5], 300: [1.0, 0.5, 0.5]}
    assert xp.longest_solved(per_length) == 10
    assert xp.longest_solved(per_length, every_seed=False) == 30
    assert xp.longest_solved({10: [0.94, 1.0]}) is None
    assert xp.longest_solved({10: [0.95]}) == 10  # SOLVED is reached, not exceeded
    assert xp.longest_solved({30: [1.0], 10: [1.0]}) == 30


def test_success_table_groups_runs_by_agent_and_length():
    def res(*right):
        return {"test_right": torch.tensor(right, dtype=torch.bool)}

    runs = {
        ("memup", 10, 2): res(True, False, False, False),
        ("lstm", 30, 1): res(False, False),
        ("lstm", 10, 2): res(True, False),
        ("lstm", 10, 1): res(True, True),
        ("memup", 10, 1): res(True, True, True, False),
    }
    table = xp.success_table(runs)
    assert table == {"lstm": {10: [1.0, 0.5], 30: [0.0]}, "memup": {10: [0.75, 0.25]}}


class CopyCore(nn.Module):
    """A core whose features are the observations themselves: the cue is there at step 0 only."""

    features = tmaze.OBS_DIM

    def forward(self, obs, state=None):
        return obs, state


def test_cue_information_reads_the_cue_where_the_features_hold_it():
    agent = ma.Agent(CopyCore())
    cfg = tiny(length=6, noisy=True)
    info = xp.cue_information(agent, cfg, episodes=600)
    assert info.shape == (6,) and info.dtype == torch.float64
    assert info[0] == 1.0
    assert bool(((info[1:] - 0.5).abs() < 0.1).all()), info  # the noise says nothing about the cue
    with pytest.raises(ValueError):
        xp.cue_information(agent, cfg, episodes=3)


def test_readout_accuracy_on_hand_made_values():
    g = generator(4)
    up = torch.rand(400, generator=g) < 0.5
    noise = torch.randn(400, 3, 2, generator=g)
    sign = torch.where(up, 1.0, -1.0)
    values = noise * 0.1
    values[:, 0, 0] += sign * 2  # the cue at "step" 0, gone at 1 and 2
    acc = xp.readout_accuracy(values, up)
    assert acc.shape == (3,) and acc.dtype == torch.float64
    assert acc[0] == 1.0 and bool(((acc[1:] - 0.5).abs() < 0.1).all()), acc
    assert xp.readout_accuracy(values[:, 0], up).item() == 1.0  # (B, D): one accuracy
    # fitted on the first half, scored on the second: flipping the cue on the second half inverts it
    flipped = values.clone()
    flipped[200:, 0, 0] *= -1
    assert xp.readout_accuracy(flipped, up)[0] == 0.0
    # two unequal up clusters: only the means of each class put the boundary where it belongs
    spread_up = torch.tensor([True, True, False, False] * 2)
    spread = torch.tensor([1.0, 0.5, 0.0, 0.0] * 2)[:, None]
    assert xp.readout_accuracy(spread, spread_up).item() == 1.0
    with pytest.raises(ValueError):
        xp.readout_accuracy(values[:3], up[:3])
    with pytest.raises(ValueError):
        xp.readout_accuracy(values, torch.cat([torch.ones(200, dtype=torch.bool), up[200:]]))
    with pytest.raises(ValueError):
        xp.readout_accuracy(values, up[:10])


def test_dnc_cue_information_where_the_controller_keeps_the_cue():
    cfg = tiny("dnc", length=6, noisy=False)
    torch.manual_seed(0)
    agent = ma.Agent(ma.make_core(cfg))
    got = xp.dnc_cue_information(agent, cfg, [4, 1, 6, 4], episodes=64)
    assert set(got) == {"memory", "reads", "controller", "features"}
    assert all(v.shape == (3,) and v.dtype == torch.float64 for v in got.values())
    # the plain maze differs in the cue only: right after reading it, the controller holds it
    assert got["controller"][0] == 1.0 and got["features"][0] == 1.0
    # the features are the core's output: the same read-out as cue_information at steps 1, 4, 6
    torch.testing.assert_close(got["features"], xp.cue_information(agent, cfg, 64)[[0, 3, 5]])
    with pytest.raises(ValueError):
        xp.dnc_cue_information(agent, cfg, [0, 2])
    with pytest.raises(ValueError):
        xp.dnc_cue_information(agent, cfg, [7])
    with pytest.raises(ValueError):
        xp.dnc_cue_information(agent, cfg, [])
    with pytest.raises(ValueError):
        xp.dnc_cue_information(ma.Agent(ma.make_core(tiny())), cfg, [1])


@pytest.mark.parametrize("agent", ["lstm", "memup"])
def test_update_cost_measures_one_update(agent):
    cfg = tiny(agent, length=6)
    cost = xp.update_cost(cfg, updates=1)
    assert set(cost) == {"wall", "cpu", "peak_bytes"}
    assert all(isinstance(v, float) and v > 0 for v in cost.values()), cost
    with pytest.raises(ValueError):
        xp.update_cost(cfg, updates=0)


def test_recipe_names_and_time_estimates():
    cfg = xp.base_config(agent="dnc", length=30)
    assert (cfg.episodes, cfg.batch, cfg.truncation, cfg.eval_every) == (16_384, 32, 20, 64)
    assert xp.base_config(episodes=64).episodes == 64
    assert set(xp.SECONDS_PER_UPDATE) == set(ma.AGENTS) == set(xp.AGENT_LABELS)
    assert xp.run_name(cfg, 2) == "08_dnc_noisy_L30_seed2.pt"
    assert xp.run_name(xp.base_config(noisy=False, length=10), 1) == "08_lstm_plain_L10_seed1.pt"
    assert xp.run_config(cfg, 2) == {
        "agent": cfg,
        "seed": 2,
        "test_episodes": xp.TEST_EPISODES,
        "test_seed": ma.TEST_SEED,
    }
    for agent in ma.AGENTS:
        assert xp.training_minutes(tiny(agent)) > 0
    assert xp.training_minutes(xp.base_config(length=1000, agent="dnc")) > xp.training_minutes(
        xp.base_config(length=100, agent="dnc")
    )


def test_train_and_test_touches_the_test_episodes_once_with_the_trained_agent():
    cfg = tiny("lstm", episodes=16)
    result = xp.train_and_test(cfg, 2)
    right = result["test_right"]
    assert right.dtype == torch.bool and right.shape == (xp.TEST_EPISODES,)
    assert torch.equal(right, ma.junction_decisions(ma.load_agent(cfg, result), cfg, xp.TEST_EPISODES, ma.TEST_SEED))


def test_draw_memory_agent():
    fig = xp.draw_memory_agent()
    try:
        assert isinstance(fig, Figure)
        texts = [t.get_text() for ax in fig.axes for t in ax.texts]
        assert len(texts) >= 4
        assert any("MemUP" in t for t in texts) and any("cue" in t for t in texts)
    finally:
        plt.close(fig)


def test_every_phase_of_the_budget_gets_a_full_batch():
    """A budget that leaves MemUP's memory phase or any agent's policy phase without an update is
    rejected, instead of silently training something else."""
    small = dict(length=6, batch=32, hidden=8, eval_every=1, eval_episodes=8)
    with pytest.raises(ValueError, match="every phase"):
        ma.AgentConfig(agent="memup", episodes=64, memory_share=0.1, **small)  # no memory update
    with pytest.raises(ValueError, match="every phase"):
        ma.AgentConfig(agent="memup", episodes=65, memory_share=0.99, **small)  # no policy update
    assert ma.AgentConfig(agent="memup", episodes=64, memory_share=0.5, **small).phase_updates == (1, 1)
    assert ma.AgentConfig(agent="lstm", episodes=64, **small).phase_updates == (0, 2)


def test_a_training_seed_never_draws_the_validation_or_test_episodes():
    cfg = ma.AgentConfig(agent="lstm", length=6, episodes=32, batch=32, hidden=8, eval_every=1, eval_episodes=8)
    before = torch.get_rng_state()
    for seed in (ma.VALIDATION_SEED, ma.TEST_SEED):
        with pytest.raises(ValueError, match="validation or test"):
            ma.train_agent(cfg, seed)
    assert torch.equal(torch.get_rng_state(), before)  # rejected before anything was seeded


def test_wilson_interval_is_exact_at_the_ends():
    assert xp.wilson_interval(0, 10)[0] == 0.0 and xp.wilson_interval(10, 10)[1] == 1.0
