"""Agents that act with memory in the passive T-Maze (notebook 08).

Three kinds of memory, one task, one policy-gradient loss:

* ``"lstm"``: an LSTM agent trained with truncated back-propagation through time (TBPTT) of ``r``
  steps; ``"lstm_full"``, the same agent with full BPTT (the control that tells truncation from
  the LSTM itself);
* ``"dnc"``: notebook 02's memory controller (an LSTM controller with a DNC memory bank) as the
  agent's core, trained with the same truncation ``r``;
* ``"memup"``: an LSTM memory trained with MemUP (notebook 07) under a random policy, in rollouts of
  ``r`` steps, to predict the most surprising future outcome (the reward at the junction); then a
  policy on top of the frozen memory, the paper's two-phase recipe for long corridors.

The T-Maze (:mod:`memtutor.tmaze`) is passive: only the action at the junction (the last step)
changes anything, so a policy is needed there only, and the reward follows it at once. Every agent
is trained with REINFORCE with a learned baseline (notebook 06's estimator) on that one decision:

.. math::

    \\mathcal{L} = -\\frac{1}{B}\\sum_b \\log\\pi(a_b \\mid f_b)\\,(R_b - V(f_b))
    + \\frac{c_V}{B}\\sum_b (V(f_b) - R_b)^2 - \\frac{c_H}{B}\\sum_b H(\\pi(\\cdot \\mid f_b))

where :math:`f_b` is the core's feature vector at the junction. With the reward at the last step
only, truncated BPTT of ``r`` steps back-propagates that loss through the last ``r`` steps of the
corridor; every earlier step runs without a graph (the state carries its *values* forward), which
is also why an update's memory does not grow with ``L``.

Shapes: ``B`` episodes, ``L`` corridor length, ``F`` feature width, ``D`` memory width,
``P`` prediction steps of a rollout, ``K`` targets per prediction step.

Seeding: every ``train_*`` function takes a ``seed``, calls ``torch.manual_seed(seed)`` before
building its networks, and draws its episodes from ``generator(seed, "agent/train-episodes")``
and its actions from ``generator(seed, "agent/train-actions")``; the validation and test episodes
come from fixed seeds of their own (:data:`VALIDATION_SEED`, :data:`TEST_SEED`).

References: Sorokin et al., "Explain My Surprise: Learning Efficient Long-Term Memory by Predicting
Uncertain Outcomes", NeurIPS 2022; Ni et al., "When Do Transformers Shine in RL? Decoupling Memory
from Credit Assignment", NeurIPS 2023; Bakker, "Reinforcement Learning with Long Short-Term
Memory", NIPS 2001; Williams and Peng, "An Efficient Gradient-Based Algorithm for On-Line Training
of Recurrent Network Trajectories", Neural Computation 1990 (truncated BPTT).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from memtutor import tmaze, utils
from memtutor.controller import ControllerConfig, MemoryController
from memtutor.memup import detach_state, ema_update, gather_steps, init_forget_bias, rollout_targets
from memtutor.utils import check_positive_int, check_tensor, generator, register_seed_offset

__all__ = [
    "AGENTS",
    "NO_REWARD",
    "SUCCESS",
    "FAILURE",
    "N_OUTCOMES",
    "AgentConfig",
    "LSTMCore",
    "DNCCore",
    "make_core",
    "Heads",
    "Agent",
    "junction_features",
    "vpg_junction_loss",
    "sample_actions",
    "outcomes",
    "OutcomeDetector",
    "OutcomePredictor",
    "memup_memory_update",
    "make_memup_phase",
    "random_policy_batch",
    "policy_update",
    "train_agent",
    "junction_decisions",
    "act_in_maze",
    "success_rate",
    "load_agent",
    "TRAIN_EPISODES",
    "TRAIN_ACTIONS",
    "VALIDATION_SEED",
    "TEST_SEED",
]

#: The agents of the notebook (see the module docstring).
AGENTS = ("lstm", "lstm_full", "dnc", "memup")
#: Outcome classes MemUP's memory predicts at every step: no reward (the corridor), the reward for
#: the right turn, the reward for the wrong one.
NO_REWARD, SUCCESS, FAILURE = 0, 1, 2
N_OUTCOMES = 3
#: Seed purposes of the training streams, and the fixed seeds of validation and test episodes.
TRAIN_EPISODES = register_seed_offset("agent/train-episodes", 0)
TRAIN_ACTIONS = register_seed_offset("agent/train-actions", 104_729)
VALIDATION_SEED = 20_000
TEST_SEED = 30_000


@dataclass(frozen=True)
class AgentConfig:
    """Every knob of one training run (CPU-scale defaults, the same for every agent)."""

    agent: str = "lstm"
    """One of :data:`AGENTS`."""
    length: int = 100
    """L: corridor length (the cue is L - 1 steps before the junction)."""
    noisy: bool = True
    """Use the noisy T-Maze (a random ±1 in every observation)."""
    episodes: int = 8192
    """Training episodes, the budget every agent gets (MemUP splits it between its two phases)."""
    batch: int = 32
    """B: episodes per update."""
    truncation: int = 20
    """r: the longest path a gradient takes through time (TBPTT window, MemUP rollout); ``lstm_full``
    ignores it."""
    hidden: int = 32
    """D: LSTM width (the controller's width for ``dnc``), and the feature width F."""
    forget_bias: float = 1.0
    """Initial forget-gate bias of the ``nn.LSTM`` cores (the LSTM agents and MemUP's memory); the DNC's
    controller cell keeps PyTorch's initialisation."""
    num_slots: int = 16
    """N: DNC memory slots."""
    word_size: int = 8
    """W: DNC word width."""
    lr: float = 3e-3
    """Adam learning rate of every network."""
    clip: float = 1.0
    """Gradient-norm clip of every step."""
    value_coef: float = 0.5
    """c_V: weight of the baseline's squared error."""
    entropy_coef: float = 0.01
    """c_H: weight of the policy's entropy bonus."""
    memory_share: float = 0.5
    """MemUP: the share of ``episodes`` spent on training the memory (random policy)."""
    k: int = 1
    """MemUP: K, targets per prediction step."""
    ema_decay: float = 0.9
    """MemUP: decay of the detector's EMA copy, which scores surprise."""
    eval_every: int = 32
    """Updates between two validation checks (the training curve)."""
    eval_episodes: int = 256
    """Validation episodes per check."""

    def __post_init__(self):
        if self.agent not in AGENTS:
            raise ValueError(f"agent must be one of {AGENTS}, got {self.agent!r}")
        for name in ("length", "episodes", "batch", "truncation", "hidden", "num_slots", "word_size", "k"):
            check_positive_int(getattr(self, name), name)
        for name in ("eval_every", "eval_episodes"):
            check_positive_int(getattr(self, name), name)
        if self.length < 2:
            raise ValueError(f"length must be >= 2, got {self.length}")
        if not isinstance(self.noisy, bool):
            raise ValueError(f"noisy must be a bool, got {self.noisy!r}")
        for name in ("lr", "clip"):
            if not isinstance(getattr(self, name), (int, float)) or not getattr(self, name) > 0:
                raise ValueError(f"{name} must be a number > 0, got {getattr(self, name)!r}")
        for name in ("value_coef", "entropy_coef", "forget_bias"):
            if not isinstance(getattr(self, name), (int, float)) or getattr(self, name) != getattr(self, name):
                raise ValueError(f"{name} must be a number, got {getattr(self, name)!r}")
        if not 0 < self.memory_share < 1:
            raise ValueError(f"memory_share must be in (0, 1), got {self.memory_share!r}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay!r}")
        if min(self.phase_updates) < (1 if self.agent == "memup" else 0) or self.phase_updates[1] < 1:
            raise ValueError(
                f"episodes={self.episodes} with batch={self.batch} and memory_share={self.memory_share} leaves "
                f"{self.phase_updates} (memory, policy) updates: every phase needs at least one full batch"
            )

    @property
    def phase_updates(self) -> tuple[int, int]:
        """(memory updates, policy updates) of the budget: MemUP's memory phase takes
        ``memory_share`` of the episodes (0 for the other agents), the policy the remaining full batches."""
        memory = round(self.episodes * self.memory_share) // self.batch if self.agent == "memup" else 0
        return memory, (self.episodes - memory * self.batch) // self.batch

    @property
    def window(self) -> int:
        """The steps of the corridor the junction's gradient crosses: ``min(r, L)``, or L with full BPTT."""
        return self.length if self.agent == "lstm_full" else min(self.truncation, self.length)


# ----------------------------------------------------------------------------- cores


class LSTMCore(nn.Module):
    """An LSTM over observations: (B, n, 3) and a state -> (B, n, D) features and the state."""

    def __init__(self, hidden: int = 32, forget_bias: float = 1.0):
        super().__init__()
        self.lstm = nn.LSTM(tmaze.OBS_DIM, check_positive_int(hidden, "hidden"), batch_first=True)
        init_forget_bias(self.lstm, forget_bias)
        self.features = hidden

    def forward(self, obs: torch.Tensor, state=None):
        return self.lstm(obs, state)


class DNCCore(nn.Module):
    """Notebook 02's memory controller as a core: (B, n, 3) and a state -> (B, n, F) features (the
    controller's output layer on [h_t, r_t]) and the :class:`~memtutor.controller.ControllerState`."""

    def __init__(self, hidden: int = 32, num_slots: int = 16, word_size: int = 8):
        super().__init__()
        config = ControllerConfig(
            input_size=tmaze.OBS_DIM, output_size=hidden, hidden_size=hidden, num_slots=num_slots, word_size=word_size
        )
        self.controller = MemoryController(config, fused=True)
        self.features = hidden

    def forward(self, obs: torch.Tensor, state=None, *, return_trace: bool = False):
        return self.controller(obs, state, return_trace=return_trace)


def make_core(cfg: AgentConfig) -> LSTMCore | DNCCore:
    """The core of ``cfg.agent``: :class:`DNCCore` for ``"dnc"``, :class:`LSTMCore` otherwise."""
    if cfg.agent == "dnc":
        return DNCCore(cfg.hidden, cfg.num_slots, cfg.word_size)
    return LSTMCore(cfg.hidden, cfg.forget_bias)


def _detach(state):
    """Detach an LSTM ``(h, c)`` or a :class:`~memtutor.controller.ControllerState` (values go on)."""
    if isinstance(state, tuple) and not hasattr(state, "_fields"):
        return detach_state(state)
    return type(state)(*(_detach(s) if isinstance(s, tuple) else s.detach() for s in state))


def junction_features(core: nn.Module, obs: torch.Tensor, window: int) -> torch.Tensor:
    """The core's features at the last step, with a gradient path through the last ``window`` steps.

    obs: (B, L, 3) the episodes' observations. The first ``L - window`` steps run without a graph
    and their final state is carried in as a value: truncated BPTT for a loss at the last step only.
    Returns (B, F).
    """
    check_tensor(obs, "obs", ndim=3)
    window = check_positive_int(window, "window")
    cut = max(obs.shape[1] - window, 0)
    state = None
    if cut:
        with torch.no_grad():
            _, state = core(obs[:, :cut])
        state = _detach(state)
    h, _ = core(obs[:, cut:], state)
    return h[:, -1]


class Heads(nn.Module):
    """Policy logits (B, 2) and baseline V (B,) from the junction's features (B, F)."""

    def __init__(self, features: int):
        super().__init__()
        self.policy = nn.Linear(features, tmaze.NUM_ACTIONS)
        self.value = nn.Linear(features, 1)

    def forward(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.policy(f), self.value(f).squeeze(-1)


class Agent(nn.Module):
    """A core and its heads. ``forward(obs (B, L, 3), window) -> (logits (B, 2), value (B,))``."""

    def __init__(self, core: LSTMCore | DNCCore):
        super().__init__()
        self.core = core
        self.heads = Heads(core.features)

    def forward(self, obs: torch.Tensor, window: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.heads(junction_features(self.core, obs, window))


# ----------------------------------------------------------------------------- the loss


def vpg_junction_loss(
    logits: torch.Tensor,
    value: torch.Tensor,
    action: torch.Tensor,
    reward: torch.Tensor,
    value_coef: float,
    entropy_coef: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """REINFORCE with a learned baseline on the junction's decision (the module docstring's L).

    logits (B, 2), value (B,), action (B,) long, reward (B,). The advantage R - V is a constant for
    the policy term (the baseline is detached there). Returns the loss and its parts as floats.
    """
    check_tensor(logits, "logits", ndim=2)
    B = logits.shape[0]
    check_tensor(value, "value", shape=(B,))
    check_tensor(action, "action", shape=(B,))
    check_tensor(reward, "reward", shape=(B,))
    log_p = F.log_softmax(logits, -1)  # (B, 2)
    log_pa = log_p.gather(1, action.long()[:, None]).squeeze(1)  # (B,)
    advantage = reward - value.detach()  # (B,)
    policy = -(log_pa * advantage).mean()
    baseline = (value - reward).pow(2).mean()
    entropy = -(log_p.exp() * log_p).sum(-1).mean()
    loss = policy + value_coef * baseline - entropy_coef * entropy
    return loss, {"policy": policy.item(), "baseline": baseline.item(), "entropy": entropy.item()}


def sample_actions(logits: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """One action per row of ``logits`` (B, A), drawn from the softmax with ``gen``: (B,) long."""
    probs = F.softmax(logits.detach(), -1).cpu()
    return torch.multinomial(probs, 1, generator=gen).squeeze(1).to(logits.device)


# ----------------------------------------------------------------------------- MemUP's pieces


def outcomes(cue: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """What MemUP's memory predicts: the outcome class of every step, (B,) cues and (B, L) actions
    -> (B, L): :data:`NO_REWARD` in the corridor, :data:`SUCCESS` or :data:`FAILURE` at the junction
    (the reward at each step, gamma = 0, as classes)."""
    check_tensor(actions, "actions", ndim=2)
    y = torch.full_like(actions, NO_REWARD, dtype=torch.long)
    right = tmaze.junction_reward(cue, actions[:, -1]) == tmaze.SUCCESS_REWARD
    y[:, -1] = torch.where(right, SUCCESS, FAILURE)
    return y


def _context(obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """c_k, the local context of a step: its observation and its action, (B, L, 3 + 2)."""
    return torch.cat([obs, F.one_hot(actions.long(), tmaze.NUM_ACTIONS).to(obs.dtype)], -1)


class OutcomeDetector(nn.Module):
    """d_psi(y_k | c_k): the outcome of a step from its own observation and action, no memory.
    (..., 5) contexts -> (..., 3) logits; its cross-entropy is the step's surprise."""

    def __init__(self, hidden: int = 32):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(tmaze.OBS_DIM + tmaze.NUM_ACTIONS, hidden), nn.ReLU(), nn.Linear(hidden, 3))

    def forward(self, ctx: torch.Tensor) -> torch.Tensor:
        return self.net(ctx)


class OutcomePredictor(nn.Module):
    """q_phi(y_k | m_t, c_k): the outcome of a future step k from the memory at t and k's context.
    m (B, P, D) and ctx (B, P, K, 5) -> (B, P, K, 3) logits."""

    def __init__(self, hidden: int = 32):
        super().__init__()
        self.mem_in = nn.Linear(hidden, hidden)
        self.ctx_in = nn.Linear(tmaze.OBS_DIM + tmaze.NUM_ACTIONS, hidden, bias=False)
        self.out = nn.Linear(hidden, N_OUTCOMES)

    def forward(self, m: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.mem_in(m).unsqueeze(2) + self.ctx_in(ctx)))


def memup_memory_update(
    memory: nn.Module,
    predictor: OutcomePredictor,
    detector: OutcomeDetector,
    detector_ema: OutcomeDetector,
    opts: Mapping[str, torch.optim.Optimizer],
    obs: torch.Tensor,
    actions: torch.Tensor,
    y: torch.Tensor,
    cfg: AgentConfig,
) -> dict[str, float]:
    """One MemUP pass over a batch of episodes, an optimiser step per rollout of ``r`` steps.

    1. The EMA detector scores every step's surprise -log d(y_k | c_k) (no graph).
    2. Rollout by rollout, the memory runs from the detached carried state; from every step t of the
       rollout the predictor predicts the K most surprising steps k >= t (notebook 07's
       :func:`~memtutor.memup.rollout_targets`); the NLL is back-propagated through at most ``r``
       memory steps and applied. The detector learns on the same steps.

    obs (B, L, 3), actions (B, L) of a random policy, y (B, L) from :func:`outcomes`. Returns the
    mean losses and ``steps``, the memory's optimiser steps.
    """
    ctx = _context(obs, actions)  # (B, L, 5)
    with torch.no_grad():
        u = F.cross_entropy(detector_ema(ctx).transpose(1, 2), y, reduction="none")  # (B, L) surprise
    r = cfg.window
    mem_params = list(memory.parameters()) + list(predictor.parameters())
    state, mem_losses, det_losses = None, [], []
    for tg in rollout_targets(u, r, cfg.k):
        s = tg.start
        h, state = memory(obs[:, s : s + r], detach_state(state))  # (B, n, D)
        logits = predictor(h[:, tg.local], gather_steps(ctx, tg.idx))  # (B, P, K, 3)
        target = gather_steps(y, tg.idx)  # (B, P, K)
        loss = F.cross_entropy(logits[tg.valid], target[tg.valid])
        opts["memory"].zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(mem_params, cfg.clip)
        opts["memory"].step()
        mem_losses.append(loss.item())
        det_loss = F.cross_entropy(detector(ctx[:, s : s + r]).transpose(1, 2), y[:, s : s + r])
        opts["detector"].zero_grad()
        det_loss.backward()
        torch.nn.utils.clip_grad_norm_(detector.parameters(), cfg.clip)
        opts["detector"].step()
        det_losses.append(det_loss.item())
    ema_update(detector_ema, detector, cfg.ema_decay)
    n = len(mem_losses)
    return {"loss": sum(mem_losses) / n, "detector_loss": sum(det_losses) / n, "steps": n}


def make_memup_phase(
    memory: nn.Module, cfg: AgentConfig, device: torch.device | str = "cpu"
) -> tuple[OutcomePredictor, OutcomeDetector, OutcomeDetector, dict[str, torch.optim.Optimizer]]:
    """Fresh predictor and detector for MemUP's memory phase, the detector's EMA copy, and the two
    optimisers (memory + predictor, detector), as :func:`memup_memory_update` takes them."""
    predictor, detector = OutcomePredictor(cfg.hidden).to(device), OutcomeDetector(cfg.hidden).to(device)
    detector_ema = copy.deepcopy(detector).requires_grad_(False)
    opts: dict[str, torch.optim.Optimizer] = {
        "memory": torch.optim.Adam([*memory.parameters(), *predictor.parameters()], lr=cfg.lr),
        "detector": torch.optim.Adam(detector.parameters(), lr=cfg.lr),
    }
    return predictor, detector, detector_ema, opts


def random_policy_batch(
    cfg: AgentConfig, episode_gen: torch.Generator, action_gen: torch.Generator, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A batch of MemUP's phase 1: ``cfg.batch`` episodes (from ``episode_gen``), a uniformly random
    turn at every step (from ``action_gen``) and the outcomes. Returns obs (B, L, 3), actions (B, L)
    and :func:`outcomes` (B, L)."""
    state, _ = tmaze.reset(cfg.batch, cfg.length, episode_gen, noisy=cfg.noisy, device=device)
    actions = torch.randint(0, tmaze.NUM_ACTIONS, (cfg.batch, cfg.length), generator=action_gen).to(device)
    return tmaze.episode_observations(state), actions, outcomes(state.cue, actions)


# ----------------------------------------------------------------------------- training


def policy_update(
    agent: Agent,
    opt: torch.optim.Optimizer,
    params: list[torch.nn.Parameter],
    cfg: AgentConfig,
    episode_gen: torch.Generator,
    action_gen: torch.Generator,
    device: torch.device,
) -> dict[str, float]:
    """One policy-gradient update on ``cfg.batch`` fresh episodes: the agent reads the corridor,
    turns at the junction by sampling its policy, and takes one step on :func:`vpg_junction_loss`
    (``params``: what the step may change). Returns the loss parts and the mean reward."""
    state, _ = tmaze.reset(cfg.batch, cfg.length, episode_gen, noisy=cfg.noisy, device=device)
    obs = tmaze.episode_observations(state)  # (B, L, 3): the corridor is passive
    logits, value = agent(obs, cfg.window)
    action = sample_actions(logits, action_gen)
    reward = tmaze.junction_reward(state.cue, action)
    loss, parts = vpg_junction_loss(logits, value, action, reward, cfg.value_coef, cfg.entropy_coef)
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, cfg.clip)
    opt.step()
    return {**parts, "reward": reward.mean().item()}


def train_agent(
    cfg: AgentConfig,
    seed: int,
    *,
    progress: bool = False,
    device: torch.device | str = "cpu",
    on_update: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Train ``cfg.agent`` on ``cfg.episodes`` episodes of the T-Maze.

    ``lstm``, ``lstm_full``, ``dnc``: ``episodes / batch`` policy-gradient updates of the whole agent.
    ``memup``: ``memory_share`` of the episodes train the memory with MemUP under a uniformly random
    policy (:func:`memup_memory_update`), the rest train the heads on the frozen memory.
    Every ``eval_every`` updates the greedy success rate on :data:`VALIDATION_SEED` episodes is
    recorded (the training curve). ``on_update(i)`` is called after every update.

    Returns the agent's ``state_dict`` (and the MemUP networks'), the curves (tensors) and
    ``seconds``, the training wall time, ready for ``load_or_train``.
    """
    if utils.derive_seed(seed, TRAIN_EPISODES) in (VALIDATION_SEED, TEST_SEED):
        raise ValueError(f"seed {seed} would train on the validation or test episodes: pick another seed")
    device = torch.device(device)
    torch.manual_seed(seed)
    agent = Agent(make_core(cfg)).to(device)
    episode_gen, action_gen = generator(seed, TRAIN_EPISODES), generator(seed, TRAIN_ACTIONS)
    curve_updates, curve_success, rewards = [], [], []
    optimizer_steps = 0
    result: dict[str, Any] = {}
    start = time.perf_counter()
    n_memory, n_policy = cfg.phase_updates
    bar = utils.progress(total=n_memory + n_policy, enabled=progress, desc=f"{cfg.agent} L={cfg.length}")
    if n_memory:
        predictor, detector, detector_ema, opts = make_memup_phase(agent.core, cfg, device)
        mem_loss = []
        for i in range(n_memory):
            obs, actions, y = random_policy_batch(cfg, episode_gen, action_gen, device)
            out = memup_memory_update(agent.core, predictor, detector, detector_ema, opts, obs, actions, y, cfg)
            mem_loss.append(out["loss"])
            optimizer_steps += int(out["steps"])
            bar.update(1)
            if on_update is not None:
                on_update(i)
        agent.core.requires_grad_(False)  # phase 2: the memory is frozen
        result["predictor"], result["detector"] = predictor.state_dict(), detector.state_dict()
        result["memory_loss"] = torch.tensor(mem_loss)
    params = [p for p in agent.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.lr)
    for i in range(n_policy):
        agent.train()
        out = policy_update(agent, opt, params, cfg, episode_gen, action_gen, device)
        optimizer_steps += 1
        rewards.append(out["reward"])
        if (i + 1) % cfg.eval_every == 0 or i + 1 == n_policy:
            curve_updates.append(n_memory + i + 1)
            curve_success.append(success_rate(agent, cfg, cfg.eval_episodes, VALIDATION_SEED, device=device))
        bar.update(1)
        if on_update is not None:
            on_update(n_memory + i)
    bar.close()
    agent.core.requires_grad_(True)
    result.update(
        agent=agent.state_dict(),
        curve_updates=torch.tensor(curve_updates),
        curve_success=torch.tensor(curve_success, dtype=torch.float64),
        reward=torch.tensor(rewards),
        optimizer_steps=optimizer_steps,
        seconds=time.perf_counter() - start,
    )
    return result


# ----------------------------------------------------------------------------- evaluation


@torch.no_grad()
def junction_decisions(agent: Agent, cfg: AgentConfig, episodes: int, seed: int, *, device=None) -> torch.Tensor:
    """Greedy turns of ``agent`` on ``episodes`` fresh episodes drawn from ``seed``, read from the
    whole observation sequence at once: (episodes,) bool, True where the turn is right."""
    episodes = check_positive_int(episodes, "episodes")
    device = next(agent.parameters()).device if device is None else torch.device(device)
    state, _ = tmaze.reset(episodes, cfg.length, generator(seed), noisy=cfg.noisy, device=device)
    logits, _ = agent(tmaze.episode_observations(state), cfg.length)
    return tmaze.junction_reward(state.cue, logits.argmax(-1)) == tmaze.SUCCESS_REWARD


@torch.no_grad()
def act_in_maze(agent: Agent, cfg: AgentConfig, episodes: int, seed: int, *, device=None) -> torch.Tensor:
    """The same greedy agent acting step by step: the core reads one observation, the agent acts,
    the environment steps (:func:`memtutor.tmaze.step`) until the junction. Slower than
    :func:`junction_decisions`, and the same turns (a test checks it). Returns (episodes,) rewards."""
    episodes = check_positive_int(episodes, "episodes")
    device = next(agent.parameters()).device if device is None else torch.device(device)
    state, obs = tmaze.reset(episodes, cfg.length, generator(seed), noisy=cfg.noisy, device=device)
    core_state, total = None, torch.zeros(episodes, device=device)
    for _ in range(cfg.length):
        f, core_state = agent.core(obs[:, None], core_state)  # one step: (B, 1, F)
        logits, _ = agent.heads(f[:, -1])
        state, obs, reward, _ = tmaze.step(state, logits.argmax(-1))
        total += reward
    return total


def success_rate(agent: Agent, cfg: AgentConfig, episodes: int, seed: int, *, device=None) -> float:
    """The share of ``episodes`` fresh episodes (from ``seed``) in which the greedy agent turns right."""
    was_training = agent.training
    agent.eval()
    try:
        return junction_decisions(agent, cfg, episodes, seed, device=device).double().mean().item()
    finally:
        agent.train(was_training)


def load_agent(cfg: AgentConfig, result: dict, device: torch.device | str = "cpu") -> Agent:
    """The trained agent of a :func:`train_agent` result."""
    agent = Agent(make_core(cfg))
    agent.load_state_dict(result["agent"])
    return agent.to(device).eval()
