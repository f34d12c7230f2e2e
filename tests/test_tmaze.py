"""The passive T-Maze: exact returns, passive observations, and clear errors."""

from __future__ import annotations

import pytest
import torch

from memtutor import tmaze as tm


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def run_episode(length, policy, *, noisy=False, batch=64, seed=0):
    """Roll a batch through the corridor with ``policy(obs, t, cue)``; returns rewards (B, L), dones, observations."""
    state, obs = tm.reset(batch, length, gen(seed), noisy=noisy)
    rewards, dones, seen = [], [], [obs]
    for t in range(length):
        state, obs, reward, done = tm.step(state, policy(obs, t, state.cue))
        rewards.append(reward)
        dones.append(done)
        seen.append(obs)
    return state, torch.stack(rewards, 1), torch.stack(dones, 1), torch.stack(seen[:-1], 1)


@pytest.mark.parametrize("noisy", [False, True])
@pytest.mark.parametrize("length", [2, 3, 17])
def test_a_policy_that_remembers_the_cue_earns_the_optimal_return(length, noisy):
    def oracle(obs, t, cue):
        return torch.where(cue > 0, tm.UP, tm.DOWN)

    state, rewards, dones, _ = run_episode(length, oracle, noisy=noisy)
    assert torch.equal(rewards.sum(1), torch.full((64,), tm.optimal_return()))
    assert bool(dones[:, -1].all()) and not bool(dones[:, :-1].any())
    assert bool((rewards[:, :-1] == 0).all())  # the corridor pays nothing
    with pytest.raises(ValueError, match="already done"):
        tm.step(state, torch.zeros(64, dtype=torch.long))


def test_the_junction_observation_does_not_depend_on_the_cue_so_memoryless_is_chance():
    for noisy in (False, True):
        state, _ = tm.reset(4000, 9, gen(1), noisy=noisy)
        obs = tm.episode_observations(state)
        junction = obs[:, -1]  # (B, 3): what a memoryless policy sees when it must turn
        assert bool((junction[:, 0] == 0).all()) and bool((junction[:, 1] == 1).all())
        # the cue is independent of everything seen at the junction: it is +1 on half of the episodes
        up = state.cue > 0
        for value in junction[:, 2].unique():
            share = up[junction[:, 2] == value].float().mean().item()
            assert abs(share - 0.5) < 0.05, (noisy, value, share)
    assert tm.memoryless_return() == (tm.SUCCESS_REWARD + tm.FAILURE_REWARD) / 2 == 0.5


def test_a_fixed_turn_earns_exactly_the_share_of_cues_it_matches():
    def always_up(obs, t, cue):
        return torch.full_like(cue, tm.UP)

    state, rewards, _, _ = run_episode(30, always_up, batch=5000, seed=2)
    up = (state.cue > 0).float()
    want = up * tm.SUCCESS_REWARD + (1 - up) * tm.FAILURE_REWARD
    assert torch.equal(rewards.sum(1), want)
    assert abs(rewards.sum(1).mean().item() - tm.memoryless_return()) < 0.15  # cues are balanced


@pytest.mark.parametrize("noisy", [False, True])
def test_observations_are_passive_and_match_the_whole_episode_at_once(noisy):
    state0, _ = tm.reset(32, 12, gen(3), noisy=noisy)
    whole = tm.episode_observations(state0)

    def random_policy(obs, t, cue):
        return torch.randint(0, 2, cue.shape, generator=gen(100 + t))

    _, _, _, stepped = run_episode(12, random_policy, noisy=noisy, batch=32, seed=3)
    assert torch.equal(stepped, whole)
    assert torch.equal(whole[:, 0, 0], state0.cue.float()) and bool((whole[:, 1:, 0] == 0).all())
    if noisy:
        assert set(whole[:, :, 2].unique().tolist()) == {-1.0, 1.0}
    else:
        assert bool((whole[:, :, 2] == 0).all())


def test_bad_input_is_refused_with_a_clear_message():
    with pytest.raises(ValueError, match="length must be >= 2"):
        tm.reset(4, 1, gen(0))
    with pytest.raises(ValueError, match="batch_size"):
        tm.reset(0, 5, gen(0))
    with pytest.raises(ValueError, match="noisy must be a bool"):
        tm.reset(4, 5, gen(0), noisy=1)
    with pytest.raises(ValueError, match="generator"):
        tm.reset(4, 5, 0)
    state, _ = tm.reset(4, 5, gen(0))
    with pytest.raises(ValueError, match="action must be 0"):
        tm.step(state, torch.tensor([0, 1, 2, 0]))
    with pytest.raises(ValueError, match="integers"):
        tm.step(state, torch.tensor([0.0, 1.0, 1.0, 0.0]))
    with pytest.raises(ValueError, match="shape"):
        tm.step(state, torch.tensor([0, 1]))
    # a rejected call changes nothing: the same state steps on normally
    state2, _, reward, done = tm.step(state, torch.tensor([0, 1, 1, 0]))
    assert torch.equal(state.t, torch.zeros(4, dtype=torch.long)) and torch.equal(
        state2.t, torch.ones(4, dtype=torch.long)
    )
    assert not bool(done.any()) and bool((reward == 0).all())
    with pytest.raises(ValueError, match="freshly reset"):
        tm.episode_observations(state2)


def test_the_benchmark_runs_and_the_batched_environment_is_faster():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "tmaze.py"
    spec = importlib.util.spec_from_file_location("tmaze_benchmark", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = bench.main(["--quick", "--threads", "1"])
    assert out["batched"]["steps"] == 64 * 20 and out["loop"]["steps"] == 8 * 20
    assert out["ratio_cpu"] > 5  # 64 episodes per call against one
