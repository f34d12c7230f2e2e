"""The passive T-Maze: a batched, vectorised environment where the only hard part is memory.

An episode is a corridor of ``L`` steps. At step 0 the agent sees a **cue** (+1: the goal is up,
-1: down); at the last step it stands at the **junction** and must turn, up (action 1) or down
(action 0). Every other action is ignored: the agent walks forward whatever it does (a *passive*
corridor), so the credit-assignment length is one step while the memory length is ``L`` (Ni et al.
2023 separate the two this way). The reward is paid only at the junction: ``SUCCESS_REWARD`` for the
turn the cue asked for, ``FAILURE_REWARD`` for the other (the values of the MemUP authors' T-Maze).

Observations are 3 floats per step, as in the MemUP authors' T-Maze ``[hint, at_junction, noise]``:
the cue at step 0 (0 elsewhere), a junction flag (1 at the last step), and in the **noisy** variant
a random ±1 at every step (0 in the plain one). Because the corridor is passive the observations do
not depend on the actions, so a whole episode's observations can be drawn at once
(:func:`episode_observations`), which is what sequence models and MemUP's memory training read.

State in, state out: :func:`reset` draws a batch of episodes, :func:`step` advances all of them by
one step with one action each. Shapes: ``B`` episodes, ``L`` corridor length, ``OBS_DIM`` = 3.

References: Bakker, "Reinforcement Learning with Long Short-Term Memory", NIPS 2001 (the T-Maze);
Ni, Ma, Eysenbach, Bacon, "When Do Transformers Shine in RL? Decoupling Memory from Credit
Assignment", NeurIPS 2023 (the passive T-Maze); Sorokin et al., "Explain My Surprise: Learning
Efficient Long-Term Memory by Predicting Uncertain Outcomes", NeurIPS 2022 (MemUP; its T-Maze-LNR).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from memtutor.utils import check_positive_int, check_tensor

__all__ = [
    "OBS_DIM",
    "NUM_ACTIONS",
    "UP",
    "DOWN",
    "SUCCESS_REWARD",
    "FAILURE_REWARD",
    "TMazeState",
    "reset",
    "step",
    "episode_observations",
    "optimal_return",
    "memoryless_return",
    "junction_reward",
]

#: Floats per observation: [cue, at_junction, noise].
OBS_DIM = 3
#: Actions: DOWN = 0, UP = 1 (only the action at the junction matters).
NUM_ACTIONS = 2
DOWN, UP = 0, 1
#: Reward for the turn the cue asked for, and for the other turn (the MemUP authors' T-Maze values).
SUCCESS_REWARD = 4.0
FAILURE_REWARD = -3.0


class TMazeState(NamedTuple):
    """A batch of episodes: ``cue`` (B,) ±1 long, ``t`` (B,) steps taken, ``length`` the corridor
    length L (int), ``noisy`` (bool), ``noise`` (B, L) ±1 floats of the noisy channel (zeros when
    not noisy), ``done`` (B,) bool."""

    cue: torch.Tensor
    t: torch.Tensor
    length: int
    noisy: bool
    noise: torch.Tensor
    done: torch.Tensor


def _check_flag(value, name: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be a bool, got {value!r}")
    return value


def _check_generator(generator) -> torch.Generator:
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    return generator


def _observation(cue: torch.Tensor, t: torch.Tensor, length: int, noise: torch.Tensor) -> torch.Tensor:
    """(B,) cue, (B,) step index, (B, L) noise -> (B, OBS_DIM) observation at step t."""
    obs = torch.zeros(cue.shape[0], OBS_DIM, device=cue.device)
    obs[:, 0] = torch.where(t == 0, cue.float(), 0.0)
    obs[:, 1] = (t == length - 1).float()
    obs[:, 2] = noise.gather(1, t.clamp(max=length - 1)[:, None]).squeeze(1)
    return obs


def reset(
    batch_size: int,
    length: int,
    generator: torch.Generator,
    *,
    noisy: bool = False,
    device: torch.device | str | None = None,
) -> tuple[TMazeState, torch.Tensor]:
    """Draw ``batch_size`` episodes of corridor length ``length``: cues uniform over ±1 (and the
    noise channel, when ``noisy``), from ``generator``. Returns the state and the first observation
    (B, OBS_DIM), which holds the cue."""
    batch_size = check_positive_int(batch_size, "batch_size")
    length = check_positive_int(length, "length")
    if length < 2:
        raise ValueError(f"length must be >= 2 (with L = 1 the cue is seen at the junction), got {length}")
    _check_flag(noisy, "noisy")
    _check_generator(generator)
    device = torch.device("cpu") if device is None else torch.device(device)
    cue = torch.randint(0, 2, (batch_size,), generator=generator).mul(2).sub(1).to(device)
    if noisy:
        noise = torch.randint(0, 2, (batch_size, length), generator=generator).float().mul(2).sub(1).to(device)
    else:
        noise = torch.zeros(batch_size, length, device=device)
    t = torch.zeros(batch_size, dtype=torch.long, device=device)
    state = TMazeState(cue, t, length, noisy, noise, torch.zeros(batch_size, dtype=torch.bool, device=device))
    return state, _observation(cue, t, length, noise)


def junction_reward(cue: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    """(B,) cue ±1, (B,) action -> (B,) reward of turning ``action`` at the junction."""
    right = torch.where(cue > 0, UP, DOWN)
    return torch.where(action == right, SUCCESS_REWARD, FAILURE_REWARD)


def step(state: TMazeState, action: torch.Tensor) -> tuple[TMazeState, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Advance every episode by one step with ``action`` (B,) in {DOWN, UP}.

    Returns ``(state, observation (B, OBS_DIM), reward (B,), done (B,))``. The reward is 0 in the
    corridor and :func:`junction_reward` at the last step, which ends the episode; the observation
    after the last step is all zeros. Stepping a finished episode is an error (nothing changes).
    """
    B = state.cue.shape[0]
    check_tensor(action, "action", shape=(B,))
    if action.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise ValueError(f"action must hold integers, got dtype {action.dtype}")
    if bool(((action != DOWN) & (action != UP)).any()):
        raise ValueError(f"action must be {DOWN} (down) or {UP} (up), got values {action.unique().tolist()}")
    if bool(state.done.any()):
        raise ValueError("some episodes are already done: call reset for a new batch")
    at_junction = state.t == state.length - 1
    reward = torch.where(at_junction, junction_reward(state.cue, action.long()), 0.0)
    t = state.t + 1
    done = at_junction
    obs = torch.where(done[:, None], 0.0, _observation(state.cue, t, state.length, state.noise))
    return state._replace(t=t, done=done), obs, reward, done


def episode_observations(state: TMazeState) -> torch.Tensor:
    """(B, L, OBS_DIM) every observation of the episodes of a freshly reset ``state`` (the corridor
    is passive, so they do not depend on the actions)."""
    if bool((state.t != 0).any()):
        raise ValueError("episode_observations needs a freshly reset state (t = 0 for every episode)")
    B, L = state.cue.shape[0], state.length
    obs = torch.zeros(B, L, OBS_DIM, device=state.cue.device)
    obs[:, 0, 0] = state.cue.float()
    obs[:, L - 1, 1] = 1.0
    obs[:, :, 2] = state.noise
    return obs


def optimal_return() -> float:
    """Expected return of a policy that remembers the cue: it always turns right."""
    return SUCCESS_REWARD


def memoryless_return() -> float:
    """Expected return of the best policy without memory: at the junction it cannot tell the cue (the
    observation there is the same for both cues), so any turn is right with probability 1/2."""
    return (SUCCESS_REWARD + FAILURE_REWARD) / 2
