"""Continual learning on a stream of digit tasks, measured with the field's metrics (notebook 05).

The stream: scikit-learn's bundled handwritten digits (``load_digits``: 1,797 images of 8x8 pixels,
values 0-16, nothing downloaded) split into tasks of two classes each ({0,1}, {2,3}, ...). Each task
has its own stratified train/test split, fixed by a seed; the test images are never trained on.
Three scenarios (van de Ven & Tolias, "Three scenarios for continual learning", 2019):

- ``"task"``   task-incremental: the task identity is given at test time, so the model only has to
  choose between the two classes of that task (a multi-headed output: logits outside the task's
  classes are masked).
- ``"domain"`` domain-incremental: no task identity, and the label is the *position* of the digit in
  its task (first or second digit), so every task has the same two outputs.
- ``"class"``  class-incremental: no task identity, the model must pick among all ten digits.

The metrics (Lopez-Paz & Ranzato, "Gradient Episodic Memory for Continual Learning", NeurIPS 2017;
forgetting from Chaudhry et al., "Riemannian Walk for Incremental Learning", ECCV 2018), with
``R[i, j]`` the test accuracy on task ``j`` after training on task ``i`` (0-based here) and ``b[j]``
the accuracy on task ``j`` of the model at its random initialisation:

- ``ACC  = 1/T sum_j R[T-1, j]``
- ``BWT  = 1/(T-1) sum_{j<T-1} (R[T-1, j] - R[j, j])``           (negative = forgetting)
- ``FWT  = 1/(T-1) sum_{j>0} (R[j-1, j] - b[j])``
- ``F    = 1/(T-1) sum_{j<T-1} (max_{l<T-1} R[l, j] - R[T-1, j])``
- ``LA   = 1/T sum_j R[j, j]``  (learning accuracy: how well each task is learned in the first place)

The learners: naive fine-tuning, joint (cumulative) training, online EWC (a diagonal-Fisher
penalty, Kirkpatrick et al. 2017; Schwarz et al. 2018), experience replay from a fixed-size buffer
(uniform, or prioritised by the replayed items' current losses), a nearest-class-mean read of
stored prototypes (iCaRL's classifier, Rebuffi et al. 2017, written as the DNC's content read
``memtutor.memory.content_weights`` over a memory whose rows are class means: nothing learns to
read or write, and the memory is rebuilt at every refresh), and Reptile meta-updates
(``memtutor.meta.reptile_direction``) over one episode per task seen so far, interleaved with the
ordinary steps, with their compute-matched control (the same inner steps on one pooled episode).
Training is batched: one forward pass per step over the current minibatch and the replayed one
(:func:`replay_step`). Notebook 05's comparisons (the named learners, the validation search, the
seed loops) are in ``memtutor.experiments.nb05_continual``.

Shapes: ``B`` batch, ``T`` number of tasks, ``D`` input size (64), ``H`` hidden size, ``K`` outputs
(10 for task/class, 2 for domain), ``N`` memory slots (one per digit), ``E`` evaluation points.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from memtutor.memory import content_weights, erase_and_add
from memtutor.meta import reptile_direction
from memtutor.replay import PrioritizedReplay
from memtutor.utils import check_positive_int, check_tensor, register_seed_offset
from memtutor.utils import generator as make_generator

__all__ = [
    "CONTINUAL_SPLIT",
    "CONTINUAL_DRAWS",
    "CONTINUAL_VAL_SPLIT",
    "SCENARIOS",
    "METHOD_SWITCHES",
    "TaskStream",
    "make_task_stream",
    "validation_stream",
    "check_accuracy_matrix",
    "average_accuracy",
    "backward_transfer",
    "forward_transfer",
    "average_forgetting",
    "learning_accuracy",
    "newest_task_accuracy",
    "early_accuracy",
    "ContinualConfig",
    "ContinualNet",
    "masked_logits",
    "PrototypeMemory",
    "write_prototypes",
    "prototype_scores",
    "predict",
    "evaluate_stream",
    "make_replay_buffer",
    "Episodes",
    "make_episodes",
    "reptile_update",
    "diagonal_fisher",
    "ewc_penalty",
    "ewc_implicit_step",
    "replay_step",
    "train_stream",
]

#: The three scenarios of van de Ven & Tolias (2019).
SCENARIOS = ("task", "domain", "class")

#: Number of digit classes in ``load_digits``.
NUM_DIGITS = 10

#: Pixel values of ``load_digits`` run from 0 to 16; dividing by this maps them to [0, 1].
PIXEL_MAX = 16.0

#: Added to the replay priorities |loss| so that a perfectly fitted item can still be drawn.
PRIORITY_EPS = 1e-3

#: The switches that make up a learner (see :func:`train_stream`).
METHOD_SWITCHES = ("replay", "memory", "meta", "joint", "ewc")

# Seed purposes (memtutor.utils.derive_seed): one experiment seed gives these independent streams.
#: The stratified train/test split of the digits (the seed itself, so a seed names its split).
CONTINUAL_SPLIT = register_seed_offset("continual/test-split", 0)
#: Everything a training run draws: minibatch order, exemplars, replay and episode draws.
CONTINUAL_DRAWS = register_seed_offset("continual/train-draws", 1)
#: The validation images, drawn from what the test split leaves (far from the other offsets: no shared stream).
CONTINUAL_VAL_SPLIT = register_seed_offset("continual/validation-split", 50_000)

# ---------------------------------------------------------------------------------------------
# The task stream
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskStream:
    """A sequence of tasks; every split is stored once as concatenated tensors.

    ``train_x`` (n, D) float in [0, 1]; ``train_y`` (n,) target output index; ``train_task`` (n,)
    task index; ``train_digit`` (n,) the digit shown; ``train_index`` (n,) the row in
    ``load_digits``. Same for ``test_*`` and ``val_*`` (the validation images, held apart from both:
    every choice of a learner's settings is made on them). ``task_classes`` (T, C)
    the digits of each task; ``output_mask`` (T, K) which outputs a task may use (only the task's
    own classes in the task-incremental scenario, all of them otherwise); ``digit_to_output`` (10,)
    the target output of each digit.
    """

    scenario: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    train_task: torch.Tensor
    train_digit: torch.Tensor
    train_index: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    test_task: torch.Tensor
    test_digit: torch.Tensor
    test_index: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    val_task: torch.Tensor
    val_digit: torch.Tensor
    val_index: torch.Tensor
    task_classes: torch.Tensor
    output_mask: torch.Tensor
    digit_to_output: torch.Tensor

    @property
    def num_tasks(self) -> int:
        return self.task_classes.shape[0]

    @property
    def num_outputs(self) -> int:
        return self.output_mask.shape[1]

    @property
    def input_size(self) -> int:
        return self.train_x.shape[1]

    def train_task_data(self, tasks: int | Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x (n, D), y (n,), task (n,)) of the training items of task index or list ``tasks``."""
        keep = torch.isin(self.train_task, torch.as_tensor(tasks, device=self.train_task.device))
        if not bool(keep.any()):
            raise ValueError(f"task(s) {tasks} have no training items")
        return self.train_x[keep], self.train_y[keep], self.train_task[keep]


def _load_digits(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits  # imported lazily: only the stream needs sklearn

    data = load_digits()
    x = torch.as_tensor(data.data, dtype=dtype) / PIXEL_MAX  # (1797, 64)
    y = torch.as_tensor(data.target, dtype=torch.long)  # (1797,)
    return x, y


def _stratified_split(
    labels: torch.Tensor, test_fraction: float, generator: torch.Generator, among: torch.Tensor | None = None
):
    """Boolean test mask (n,): within each class, a random ``round(test_fraction * n_c)`` items.

    ``among`` (n,) bool restricts the draw to those items (``n_c`` still counts the whole class).
    """
    test = torch.zeros(labels.shape[0], dtype=torch.bool)
    pool = torch.ones_like(test) if among is None else among
    for c in labels.unique().tolist():  # loop over classes (10), not samples
        n_class = int((labels == c).sum())
        idx = ((labels == c) & pool).nonzero().squeeze(1)
        n_test = round(test_fraction * n_class)
        if n_test < 1 or n_test >= idx.numel():
            raise ValueError(f"test_fraction={test_fraction} leaves class {c} without train or test items")
        test[idx[torch.randperm(idx.numel(), generator=generator)[:n_test]]] = True
    return test


def make_task_stream(
    scenario: str = "class",
    *,
    num_tasks: int = 5,
    classes_per_task: int = 2,
    test_fraction: float = 0.25,
    val_fraction: float = 0.2,
    seed: int = 0,
    class_order: Sequence[int] | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> TaskStream:
    """Split ``load_digits`` into ``num_tasks`` tasks of ``classes_per_task`` digits each.

    ``class_order`` (default 0..9) lists the digits in the order they are assigned to tasks. Each
    digit is split, stratified, into ``test_fraction`` test images, then ``val_fraction`` (of the
    whole digit) validation images drawn from the rest, and the remaining training images. The
    split depends only on ``seed``, so every method and every scenario built with the same seed
    sees exactly the same test and validation images; the test images do not depend on
    ``val_fraction``.
    """
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; expected one of {SCENARIOS}")
    check_positive_int(num_tasks, "num_tasks")
    check_positive_int(classes_per_task, "classes_per_task")
    if not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if not 0.0 <= float(val_fraction) < 1.0 - float(test_fraction):
        raise ValueError(f"val_fraction must be in [0, 1 - test_fraction), got {val_fraction}")
    order = list(range(NUM_DIGITS)) if class_order is None else [int(c) for c in class_order]
    if sorted(set(order)) != sorted(order) or any(not 0 <= c < NUM_DIGITS for c in order):
        raise ValueError(f"class_order must list distinct digits 0-9, got {class_order}")
    if num_tasks * classes_per_task > len(order):
        raise ValueError(
            f"{num_tasks} tasks of {classes_per_task} classes need {num_tasks * classes_per_task} digits, "
            f"class_order has {len(order)}: task {len(order) // classes_per_task} would be empty"
        )
    x, digit = _load_digits(dtype)
    task_classes = torch.tensor(order[: num_tasks * classes_per_task]).view(num_tasks, classes_per_task)
    task_of_digit = torch.full((NUM_DIGITS,), -1, dtype=torch.long)
    task_of_digit[task_classes.flatten()] = torch.arange(num_tasks).repeat_interleave(classes_per_task)
    keep = task_of_digit[digit] >= 0
    row = torch.arange(x.shape[0])[keep]
    x, digit = x[keep], digit[keep]
    task = task_of_digit[digit]

    if scenario == "domain":  # the label is the digit's position within its task
        digit_to_output = torch.zeros(NUM_DIGITS, dtype=torch.long)
        digit_to_output[task_classes.flatten()] = torch.arange(classes_per_task).repeat(num_tasks)
        output_mask = torch.ones(num_tasks, classes_per_task, dtype=torch.bool)
    else:
        digit_to_output = torch.arange(NUM_DIGITS)
        output_mask = torch.ones(num_tasks, NUM_DIGITS, dtype=torch.bool)
        if scenario == "task":  # multi-headed: only the task's own classes compete
            output_mask = torch.zeros(num_tasks, NUM_DIGITS, dtype=torch.bool)
            output_mask[torch.arange(num_tasks).unsqueeze(1), task_classes] = True
    y = digit_to_output[digit]

    test = _stratified_split(digit, float(test_fraction), make_generator(seed, CONTINUAL_SPLIT))
    val = torch.zeros_like(test)
    if val_fraction > 0:
        val = _stratified_split(digit, float(val_fraction), make_generator(seed, CONTINUAL_VAL_SPLIT), among=~test)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    parts = {}
    for name, m in (("train", ~test & ~val), ("test", test), ("val", val)):
        parts.update(
            {
                f"{name}_x": x[m],
                f"{name}_y": y[m],
                f"{name}_task": task[m],
                f"{name}_digit": digit[m],
                f"{name}_index": row[m],
            }
        )
    return TaskStream(
        scenario=scenario,
        **{k: v.to(dev) for k, v in parts.items()},
        task_classes=task_classes.to(dev),
        output_mask=output_mask.to(dev),
        digit_to_output=digit_to_output.to(dev),
    )


def validation_stream(stream: TaskStream) -> TaskStream:
    """The same stream with the validation images in the place of the test images.

    A learner trained on it is scored on validation images only: what every choice is made on.
    """
    if stream.val_x.shape[0] == 0:
        raise ValueError("this stream has no validation images (make_task_stream(val_fraction=0))")
    return replace(stream, **{f"test_{k}": getattr(stream, f"val_{k}") for k in ("x", "y", "task", "digit", "index")})


# ---------------------------------------------------------------------------------------------
# The metrics
# ---------------------------------------------------------------------------------------------


def check_accuracy_matrix(R: torch.Tensor, name: str = "R", *, min_tasks: int = 1) -> torch.Tensor:
    """Validate an accuracy matrix (..., T, T) with entries in [0, 1] and T >= ``min_tasks``."""
    check_tensor(R, name)
    if R.dim() < 2 or R.shape[-1] != R.shape[-2]:
        raise ValueError(f"{name} must be a square (..., T, T) accuracy matrix, got shape {tuple(R.shape)}")
    if R.shape[-1] < min_tasks:
        raise ValueError(f"{name} needs at least {min_tasks} tasks for this metric, got T={R.shape[-1]}")
    if not R.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {R.dtype}")
    if bool(((R < 0) | (R > 1)).any()):
        raise ValueError(f"{name} holds accuracies outside [0, 1]")
    return R


def average_accuracy(R: torch.Tensor) -> torch.Tensor:
    """ACC = 1/T sum_j R[T-1, j]: the mean final accuracy. R (..., T, T) -> (...)."""
    R = check_accuracy_matrix(R)
    return R[..., -1, :].mean(-1)


def backward_transfer(R: torch.Tensor) -> torch.Tensor:
    """BWT = 1/(T-1) sum_{j<T-1} (R[T-1, j] - R[j, j]). R (..., T, T) -> (...). Negative = forgetting."""
    R = check_accuracy_matrix(R, min_tasks=2)
    diag = R.diagonal(dim1=-2, dim2=-1)  # (..., T): accuracy right after learning each task
    return (R[..., -1, :-1] - diag[..., :-1]).mean(-1)


def forward_transfer(R: torch.Tensor, baseline: torch.Tensor) -> torch.Tensor:
    """FWT = 1/(T-1) sum_{j>0} (R[j-1, j] - b[j]). R (..., T, T), baseline b (..., T) -> (...).

    ``b[j]`` is the accuracy on task ``j`` of the model at random initialisation (GEM's b-bar), so
    FWT measures how much training on the earlier tasks helps on a task before it is seen.
    """
    R = check_accuracy_matrix(R, min_tasks=2)
    check_tensor(baseline, "baseline")
    if baseline.shape != R.shape[:-1]:
        raise ValueError(
            f"baseline must have shape {tuple(R.shape[:-1])} (one entry per task), got {tuple(baseline.shape)}"
        )
    before = R.diagonal(offset=1, dim1=-2, dim2=-1)  # (..., T-1): R[j-1, j]
    return (before - baseline[..., 1:]).mean(-1)


def average_forgetting(R: torch.Tensor) -> torch.Tensor:
    """F = 1/(T-1) sum_{j<T-1} (max_{l<T-1} R[l, j] - R[T-1, j]). R (..., T, T) -> (...).

    The best accuracy reached on a task before the last training stage minus the final one
    (Chaudhry et al. 2018). It is >= -BWT and, unlike -BWT, also counts accuracy that peaked
    after the task was learned; it is negative only if the final accuracy beats every earlier one.
    """
    R = check_accuracy_matrix(R, min_tasks=2)
    best = R[..., :-1, :-1].amax(-2)  # (..., T-1): max over the rows before the last
    return (best - R[..., -1, :-1]).mean(-1)


def learning_accuracy(R: torch.Tensor) -> torch.Tensor:
    """LA = 1/T sum_j R[j, j]: the accuracy on each task right after learning it. R (..., T, T) -> (...).

    The plasticity side of the trade-off that BWT measures: a learner that learns each task less
    well loses less of it, so BWT is read beside LA (Riemer et al. 2019 call it learning accuracy).
    """
    R = check_accuracy_matrix(R)
    return R.diagonal(dim1=-2, dim2=-1).mean(-1)


def newest_task_accuracy(R: torch.Tensor) -> torch.Tensor:
    """R[T-1, T-1], the final accuracy on the task learned last. R (..., T, T) -> (...)."""
    R = check_accuracy_matrix(R)
    return R[..., -1, -1]


def early_accuracy(curve: torch.Tensor, curve_step: torch.Tensor, task_end: torch.Tensor, k: int = 1) -> torch.Tensor:
    """Test accuracy on each new task at the k-th evaluation after its training starts.

    A measure of how fast a new task is learned (the "fast adaptation" a meta-learned
    initialisation promises). curve (S, E, T), curve_step (S, E) increasing, task_end (S, T)
    -> (S, T-1), one column per task after the first. Task j starts at step task_end[j-1].
    """
    check_tensor(curve, "curve", ndim=3, finite=False)
    S, E, T = curve.shape
    check_tensor(curve_step, "curve_step", shape=(S, E), finite=False)
    check_tensor(task_end, "task_end", shape=(S, T))
    check_positive_int(k, "k")
    steps = torch.nan_to_num(curve_step.double(), nan=float("inf")).contiguous()  # NaN padding sorts last
    first = torch.searchsorted(steps, task_end[:, :-1].double().contiguous(), right=True)  # (S, T-1)
    idx = first + (k - 1)
    if bool((idx >= E).any()):
        raise ValueError(f"k={k}: some task has fewer than k evaluations after its start")
    tasks = torch.arange(1, T, device=curve.device).expand(S, -1)  # (S, T-1)
    return curve[torch.arange(S, device=curve.device)[:, None], idx, tasks]


# ---------------------------------------------------------------------------------------------
# The learner
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ContinualConfig:
    """Every knob of a continual-learning run (CPU-scale defaults)."""

    hidden_size: int = 128
    """H, width of the two hidden layers of the encoder."""
    lr: float = 0.1
    """SGD step size (plain SGD, so that the Reptile interpolation acts on the same steps)."""
    epochs: int = 15
    """Passes over each task's training items."""
    batch_size: int = 32
    """Current-task items per step."""
    buffer_size: int = 200
    """Total replay memory (items), split equally over the tasks: the same for every replay method."""
    replay_ratio: float = 1.0
    """Replayed items per current item in a step (replay batch = round(ratio * batch_size))."""
    alpha: float = 0.6
    """Priority exponent of prioritized replay, P(i) = p_i^alpha / sum_k p_k^alpha."""
    beta: float = 0.4
    """Importance-sampling exponent, w_i = (N P(i))^-beta / max_k w_k."""
    meta_every: int = 5
    """Ordinary steps between two Reptile meta-updates (only with meta=True)."""
    meta_steps: int = 5
    """k, inner SGD steps (step size ``lr``) per task in a Reptile meta-update."""
    meta_shots: int = 16
    """Items per task in a meta-update's episodes (capped by the items stored per task)."""
    meta_stepsize: float = 0.5
    """epsilon, the Reptile step theta <- theta + epsilon (mean_i phi_i - theta)."""
    prototype_strength: float = 10.0
    """beta of the content read of the class prototypes (softmax sharpness). It changes predictions only
    where several slots vote for one output (domain-IL); with one slot per output the argmax is unaffected."""
    prototype_source: str = "all"
    """Where the current task's prototypes come from: ``"all"`` its training images (all of them are
    at hand while it is learned), ``"exemplars"`` only the ones that will be stored. Past tasks always
    use the stored exemplars."""
    ewc_lambda: float = 100.0
    """lambda of (online) EWC, loss + lambda/2 sum_k F_k (theta_k - theta*_k)^2 (only with ewc=True)."""
    ewc_gamma: float = 1.0
    """Online EWC's decay of the accumulated Fisher, F <- gamma F + F_task (Schwarz et al. 2018)."""
    eval_every: int = 10
    """Steps between two points of the per-task accuracy curves."""

    def __post_init__(self):
        for name in (
            "hidden_size",
            "epochs",
            "batch_size",
            "buffer_size",
            "meta_every",
            "meta_steps",
            "meta_shots",
            "eval_every",
        ):
            check_positive_int(getattr(self, name), name)
        for name in ("lr", "prototype_strength"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.prototype_source not in ("all", "exemplars"):
            raise ValueError(f"prototype_source must be 'all' or 'exemplars', got {self.prototype_source!r}")
        if not self.ewc_lambda >= 0 or not 0 <= self.ewc_gamma <= 1:
            raise ValueError(f"need ewc_lambda >= 0 and 0 <= ewc_gamma <= 1, got {self.ewc_lambda}, {self.ewc_gamma}")
        if not self.replay_ratio >= 0:
            raise ValueError(f"replay_ratio must be >= 0, got {self.replay_ratio}")
        if not self.alpha >= 0 or not 0 <= self.beta <= 1:
            raise ValueError(f"need alpha >= 0 and 0 <= beta <= 1, got alpha={self.alpha}, beta={self.beta}")
        if not 0 < self.meta_stepsize <= 1:
            raise ValueError(f"meta_stepsize must be in (0, 1], got {self.meta_stepsize}")

    @property
    def replay_batch(self) -> int:
        return round(self.replay_ratio * self.batch_size)


class ContinualNet(nn.Module):
    """An MLP encoder (D -> H -> H, ReLU) and one linear head over all K outputs."""

    def __init__(self, input_size: int, hidden_size: int, num_outputs: int):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Linear(input_size, hidden_size), nn.ReLU(), nn.Linear(hidden_size, hidden_size), nn.ReLU()
        )
        self.head = nn.Linear(hidden_size, num_outputs)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, D) -> features (B, H)."""
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, D) -> logits (B, K)."""
        return self.head(self.encoder(x))


def masked_logits(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Outputs a sample may not use get -inf. logits (B, K), mask (B, K) bool -> (B, K)."""
    return logits.masked_fill(~mask, float("-inf"))


class PrototypeMemory(NamedTuple):
    """Class prototypes kept in a DNC-style memory matrix, one slot per digit.

    ``memory`` (N, H) the slots; ``written`` (N,) bool which slots hold a prototype;
    ``slot_output`` (N,) the output each slot votes for.
    """

    memory: torch.Tensor
    written: torch.Tensor
    slot_output: torch.Tensor


def write_prototypes(model: ContinualNet, stream: TaskStream, x: torch.Tensor, digit: torch.Tensor) -> PrototypeMemory:
    """Write the mean feature of each digit in (x (n, D), digit (n,)) into its memory slot.

    Each write is the DNC's erase-and-add with a one-hot write weighting and a full erase, so a
    refreshed prototype replaces the stale one. Loops over the (at most 10) digits, not samples.
    """
    with torch.no_grad():  # prototypes are statistics of the encoder, not trained by the loss
        feats = model.embed(x)  # (n, H)
    H = feats.shape[1]
    memory = torch.zeros(1, NUM_DIGITS, H, device=feats.device, dtype=feats.dtype)
    written = torch.zeros(NUM_DIGITS, dtype=torch.bool, device=feats.device)
    for d in digit.unique().tolist():
        w = F.one_hot(torch.tensor([d], device=feats.device), NUM_DIGITS).to(feats.dtype)  # (1, N)
        proto = feats[digit == d].mean(0, keepdim=True)  # (1, H)
        memory = erase_and_add(memory, w, torch.ones_like(proto), proto)
        written[d] = True
    return PrototypeMemory(memory[0], written, stream.digit_to_output)


def prototype_scores(
    pm: PrototypeMemory, feats: torch.Tensor, strength: float, num_outputs: int, slot_mask: torch.Tensor
):
    """Read the memory by content with each feature vector as the key; sum slot weights per output.

    A soft vote: each output scores the summed read weights of its slots. With one slot per output
    (task- and class-IL) the argmax is the nearest class mean by cosine; in domain-IL five digits
    share an output, and ``strength`` decides how much the far slots still count.
    feats (B, H), slot_mask (B, N) which slots may answer -> scores (B, K) (rows sum to <= 1).
    """
    B = feats.shape[0]
    mem = pm.memory.unsqueeze(0).expand(B, -1, -1)  # (B, N, H)
    strengths = torch.full((B, 1), float(strength), device=feats.device, dtype=feats.dtype)
    w = content_weights(mem, feats.unsqueeze(1), strengths)[:, 0]  # (B, N)
    w = w * (slot_mask & pm.written).to(w.dtype)  # unwritten or other tasks' slots do not vote
    out = torch.zeros(B, num_outputs, device=feats.device, dtype=w.dtype)
    return out.index_add_(1, pm.slot_output, w)  # (B, K)


def predict(
    model: ContinualNet,
    stream: TaskStream,
    x: torch.Tensor,
    task: torch.Tensor,
    pm: PrototypeMemory | None = None,
    strength: float = 10.0,
) -> torch.Tensor:
    """Predicted output (B,) for x (B, D) of tasks ``task`` (B,), without changing any state.

    With a prototype memory the prediction is the nearest class mean read by content; a sample
    whose allowed slots are all still empty falls back to the head.
    """
    mask = stream.output_mask[task]  # (B, K)
    feats = model.embed(x)
    head = masked_logits(model.head(feats), mask).argmax(-1)
    if pm is None:
        return head
    if stream.scenario == "task":
        slot_mask = (stream.task_classes[task].unsqueeze(-1) == torch.arange(NUM_DIGITS, device=x.device)).any(1)
    else:
        slot_mask = torch.ones(x.shape[0], NUM_DIGITS, dtype=torch.bool, device=x.device)
    scores = prototype_scores(pm, feats, strength, stream.num_outputs, slot_mask)
    has_slot = (slot_mask & pm.written).any(-1)
    return torch.where(has_slot, scores.argmax(-1), head)


@torch.no_grad()
def evaluate_stream(
    model: ContinualNet, stream: TaskStream, pm: PrototypeMemory | None = None, strength: float = 10.0
) -> torch.Tensor:
    """Test accuracy on every task (T,), in one batched pass; nothing is written anywhere."""
    was_training = model.training
    model.eval()
    correct = (predict(model, stream, stream.test_x, stream.test_task, pm, strength) == stream.test_y).float()
    T = stream.num_tasks
    hits = torch.zeros(T, device=correct.device).index_add_(0, stream.test_task, correct)
    counts = torch.zeros(T, device=correct.device).index_add_(0, stream.test_task, torch.ones_like(correct))
    model.train(was_training)
    return hits / counts


def make_replay_buffer(
    capacity: int, replay: str, cfg: ContinualConfig, device: torch.device | str | None = None
) -> PrioritizedReplay:
    """The replay buffer of a learner: prioritized (exponent ``cfg.alpha``) or uniform (alpha = 0)."""
    if replay not in ("uniform", "prioritized"):
        raise ValueError(f"replay must be 'uniform' or 'prioritized', got {replay!r}")
    alpha = 0.0 if replay == "uniform" else cfg.alpha  # uniform replay = prioritized with alpha = 0
    return PrioritizedReplay(capacity, alpha=alpha, eps=PRIORITY_EPS, device=device)


def _exemplars(stream: TaskStream, t: int, per_task: int, generator: torch.Generator) -> torch.Tensor:
    """Indices into the training set of ``per_task`` items of task ``t``, equally many per class."""
    classes = stream.task_classes[t].tolist()
    per_class = per_task // len(classes)
    if per_class < 1:
        raise ValueError(f"buffer_size too small: fewer than one replayed item per class ({per_task} per task)")
    picks = []
    for c in classes:  # two classes per task
        idx = (stream.train_digit == c).nonzero().squeeze(1)
        if idx.numel() < per_class:  # fewer picks than asked would unbalance the buffer (and make_episodes)
            raise ValueError(
                f"buffer_size too large: {per_class} replayed items per class, but digit {c} has only "
                f"{idx.numel()} training items"
            )
        picks.append(idx[torch.randperm(idx.numel(), generator=generator)[:per_class]])
    return torch.cat(picks)


class Episodes(NamedTuple):
    """A meta-batch for ``memtutor.meta``: one episode per task seen so far.

    ``x_support`` (T', K, D); ``y_support`` (T', K, 2) packs each item's target output and task
    index, so that the loss can apply the task's output mask inside ``vmap``.
    """

    x_support: torch.Tensor
    y_support: torch.Tensor


def _masked_ce(output_mask: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Cross-entropy on logits (K, K_out) against a packed target (K, 2) = (output, task)."""

    def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(masked_logits(logits, output_mask[target[:, 1]]), target[:, 0])

    return loss


def make_episodes(
    x: torch.Tensor,
    y: torch.Tensor,
    task: torch.Tensor,
    buf: PrioritizedReplay | None,
    shots: int,
    generator: torch.Generator,
    pooled: bool = False,
) -> Episodes:
    """``shots`` random items of the current task (x (n, D), y (n,), task (n,)) and of every task in the buffer.

    The buffer holds the same number of items for each past task, so sorting its items by task
    and reshaping gives (T_past, per_task, ...) without a loop over tasks. ``pooled`` puts the same
    items into one episode (1, T' shots, ...): the compute-matched rehearsal control, which takes
    the same inner steps on the same images with no per-task structure.
    """
    dev = x.device
    pick = torch.randperm(x.shape[0], generator=generator)[:shots].to(dev)
    xs, ys = [x[pick].unsqueeze(0)], [torch.stack([y[pick], task[pick]], -1).unsqueeze(0)]
    if buf is not None and len(buf) > 0:
        items = _buffer_items(buf)
        order = items["task"].argsort(stable=True)
        n_past = int(items["task"].unique().numel())
        px = items["x"][order].view(n_past, -1, x.shape[1])  # (T_past, per_task, D)
        pt = torch.stack([items["y"][order], items["task"][order]], -1).view(n_past, -1, 2)
        k = min(shots, px.shape[1])
        sel = torch.rand(n_past, px.shape[1], generator=generator).argsort(1)[:, :k].to(dev)  # (T_past, k)
        k_cur = min(k, xs[0].shape[1])
        xs = [xs[0][:, :k_cur], px.gather(1, sel[:, :k_cur, None].expand(-1, -1, px.shape[2]))]
        ys = [ys[0][:, :k_cur], pt.gather(1, sel[:, :k_cur, None].expand(-1, -1, 2))]
    xs_all, ys_all = torch.cat(xs), torch.cat(ys)
    if pooled:
        xs_all, ys_all = xs_all.reshape(1, -1, xs_all.shape[-1]), ys_all.reshape(1, -1, 2)
    return Episodes(xs_all, ys_all)


def reptile_update(model: ContinualNet, stream: TaskStream, episodes: Episodes, cfg: ContinualConfig) -> None:
    """One Reptile step over the episodes: theta <- theta - epsilon (theta - mean_i phi_i)."""
    params = dict(model.named_parameters())
    direction, _ = reptile_direction(
        model, params, episodes, inner_lr=cfg.lr, steps=cfg.meta_steps, loss_fn=_masked_ce(stream.output_mask)
    )
    with torch.no_grad():  # a parameter update, outside autograd
        for name, p in params.items():
            p.sub_(cfg.meta_stepsize * direction[name])


def diagonal_fisher(
    model: ContinualNet, stream: TaskStream, x: torch.Tensor, y: torch.Tensor, task: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Diagonal empirical Fisher F_k = mean_i (d log p(y_i | x_i) / d theta_k)^2 over x (n, D), y (n,), task (n,).

    One per-sample gradient per item (``torch.func.vmap`` over ``grad``), with the scenario's output
    mask; uses the true labels (the empirical Fisher). Returns {name: tensor shaped like the parameter}.
    """
    params = {k: v.detach() for k, v in model.named_parameters()}
    mask = stream.output_mask[task]  # (n, K)

    def nll(p, xi, yi, mi):
        logits = torch.func.functional_call(model, p, (xi.unsqueeze(0),))
        return F.cross_entropy(masked_logits(logits, mi.unsqueeze(0)), yi.unsqueeze(0))

    grads = torch.func.vmap(torch.func.grad(nll), in_dims=(None, 0, 0, 0))(params, x, y, mask)
    return {k: g.pow(2).mean(0) for k, g in grads.items()}


def ewc_penalty(
    params: Mapping[str, torch.Tensor], anchor: Mapping[str, torch.Tensor], fisher: Mapping[str, torch.Tensor]
) -> torch.Tensor:
    """1/2 sum_k F_k (theta_k - theta*_k)^2, summed over every parameter tensor -> () (EWC, Kirkpatrick et al. 2017)."""
    total = [(fisher[k] * (p - anchor[k]).pow(2)).sum() for k, p in params.items()]
    return 0.5 * torch.stack(total).sum()


def ewc_implicit_step(
    params: Mapping[str, torch.Tensor],
    anchor: Mapping[str, torch.Tensor],
    fisher: Mapping[str, torch.Tensor],
    step: float,
) -> None:
    """The EWC penalty's exact (implicit, proximal) step of size ``step`` = lr x lambda, in place on ``params``.

    theta_k <- (theta_k + step F_k theta*_k) / (1 + step F_k): the minimiser of
    1/2 sum_k F_k (theta_k - theta*_k)^2 + ||theta - theta_old||^2 / (2 step). It moves each weight
    towards its anchor by the fraction step F_k / (1 + step F_k) < 1, so it is stable for every
    step >= 0, where a plain gradient step on the penalty diverges once step F_k > 2.
    Every dict maps a parameter name to a tensor of that parameter's shape.
    """
    if not step >= 0:
        raise ValueError(f"step must be >= 0, got {step}")
    with torch.no_grad():
        for k, p in params.items():
            shrink = step * fisher[k]
            p.add_(shrink * anchor[k]).div_(1 + shrink)


def replay_step(
    model: ContinualNet,
    opt: torch.optim.Optimizer,
    stream: TaskStream,
    bx: torch.Tensor,
    by: torch.Tensor,
    btask: torch.Tensor,
    buf: PrioritizedReplay | None,
    cfg: ContinualConfig,
    generator: torch.Generator,
    ewc: tuple[Mapping[str, torch.Tensor], Mapping[str, torch.Tensor]] | None = None,
) -> tuple[torch.Tensor, int]:
    """One SGD step on a current minibatch (bx (B, D), by (B,), btask (B,)) plus a replayed one.

    Replayed items are drawn from ``buf`` (probability P(i), importance weights w_i), appended to
    the batch for one forward pass, weighted by w_i in the loss, and re-scored: their priorities
    become their current losses. ``ewc`` = (anchor, fisher): after the SGD step on the data loss,
    the penalty ``cfg.ewc_lambda`` x :func:`ewc_penalty` is applied as its exact implicit step
    (:func:`ewc_implicit_step` with step ``cfg.lr * cfg.ewc_lambda``), stable for any lambda.
    Returns the data loss () and the number of images in the step's gradient.
    """
    nb = bx.shape[0]
    replayed = buf is not None and len(buf) > 0 and cfg.replay_batch > 0
    if buf is not None and replayed:
        rb, ridx, rw = buf.sample(cfg.replay_batch, cfg.beta, generator=generator)
        bx, by, btask = torch.cat([bx, rb["x"]]), torch.cat([by, rb["y"]]), torch.cat([btask, rb["task"]])
    logits = masked_logits(model(bx), stream.output_mask[btask])  # one pass: current + replay
    per_item = F.cross_entropy(logits, by, reduction="none")  # (B + Br,)
    loss = per_item[:nb].mean()
    if buf is not None and replayed:
        loss = loss + (rw.to(per_item) * per_item[nb:]).mean()
        buf.update_priorities(ridx, per_item[nb:].detach())  # re-score the replayed items
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    if ewc is not None:  # the penalty's exact step: a gradient step on it diverges once lr lambda F > 2
        ewc_implicit_step(dict(model.named_parameters()), *ewc, step=cfg.lr * cfg.ewc_lambda)
    return loss.detach(), per_item.shape[0]


def train_stream(
    stream: TaskStream,
    method: Mapping[str, Any],
    cfg: ContinualConfig = ContinualConfig(),
    *,
    seed: int = 0,
    num_tasks: int | None = None,
    return_model: bool = False,
) -> dict:
    """Train one learner on the stream and measure it on the stream's test images.

    ``method`` is a dict of the learner's switches (:data:`METHOD_SWITCHES`): ``replay`` None,
    "uniform" or "prioritized"; ``memory`` (predict with the prototype memory); ``meta`` False,
    "reptile" (True means the same) or "pooled" (the compute-matched rehearsal control: the same
    inner steps on one episode pooling every task's images); ``joint`` (train on every task seen
    so far); ``ewc`` (online EWC). Notebook 05's named learners are in
    ``memtutor.experiments.nb05_continual.CONTINUAL_METHODS``. ``num_tasks`` shortens the stream
    (tests). Pass :func:`validation_stream` of a stream to score on validation images instead.

    Seeding: ``torch.manual_seed(seed)`` before the model is built fixes its initialisation, and
    every draw of the run (minibatch order, exemplars, replay and episode draws) comes from
    ``generator(seed, "continual/train-draws")``; the split is the stream's own (its seed).
    Returns tensors: ``R`` (T, T) accuracy matrix, ``baseline`` (T,) accuracy at initialisation,
    ``curve`` (E, T) test accuracy every ``cfg.eval_every`` steps, ``curve_step`` (E,),
    ``task_end`` (T,) the step at which each task ended, ``loss`` (steps,) training loss per step,
    ``priority_changes`` () summed over tasks, how many stored items' priorities differ at the
    end of the task from its start (re-scored by replay), ``grad_evals`` () images whose gradient
    was computed (ordinary steps, meta-updates' inner steps, EWC's Fisher), ``grad_evals_meta`` ()
    the meta-updates' share, ``diverged`` () bool, True when any training loss was not finite
    (the run blew up; its scores are those of a broken model). With ``return_model`` also ``model`` (the trained
    :class:`ContinualNet`) and ``memory`` (its :class:`PrototypeMemory`, or None), which are not
    tensors and so not for caching.
    """
    if not isinstance(method, Mapping):
        raise ValueError(f"method must be a dict of the switches {METHOD_SWITCHES}, got {method!r}")
    unknown = set(method) - set(METHOD_SWITCHES)
    if unknown or method.get("replay") not in (None, "uniform", "prioritized"):
        raise ValueError(f"bad method switches {dict(method)}; expected keys {METHOD_SWITCHES}")
    if method.get("meta") not in (None, False, True, "reptile", "pooled"):
        raise ValueError(f"meta must be False, 'reptile' or 'pooled', got {method.get('meta')!r}")
    replay, use_memory, meta, joint, use_ewc = (method.get(k) for k in METHOD_SWITCHES)
    if use_memory and replay is None:
        raise ValueError("memory=True needs replay: the prototypes are computed from the replay buffer")
    if meta and replay is None:
        raise ValueError("meta-updates need replay: the episodes of past tasks come from the replay buffer")
    T = stream.num_tasks if num_tasks is None else check_positive_int(num_tasks, "num_tasks")
    if T > stream.num_tasks:
        raise ValueError(f"num_tasks={T} exceeds the stream's {stream.num_tasks} tasks")
    device = stream.train_x.device
    torch.manual_seed(seed)  # the model's initialisation
    gen = make_generator(seed, CONTINUAL_DRAWS)  # shuffling, exemplars, replay draws, episodes
    model = ContinualNet(stream.input_size, cfg.hidden_size, stream.num_outputs).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr)
    sub = replace(stream, task_classes=stream.task_classes[:T], output_mask=stream.output_mask[:T])
    sub = _restrict(sub, T)
    use_replay = replay is not None and cfg.replay_batch > 0
    per_task = cfg.buffer_size // T
    buf = make_replay_buffer(per_task * T, replay, cfg, device) if replay is not None and use_replay else None
    pm = None
    ewc: tuple[dict, dict] | None = None

    R = torch.zeros(T, T, device=device)
    baseline = evaluate_stream(model, sub)
    curve, curve_step, losses, task_end = [], [], [], []
    changed = grad_evals = grad_evals_meta = step = 0
    for t in range(T):
        x, y, task = sub.train_task_data(list(range(t + 1)) if joint else t)
        n = x.shape[0]
        new_idx = _exemplars(sub, t, per_task, gen) if use_replay else None
        # the current task's prototypes: all its training images, or only the ones that will be stored
        cur_idx = (sub.train_task == t).nonzero().squeeze(1) if cfg.prototype_source == "all" else new_idx
        before = _priorities_of(buf) if buf is not None else None
        for _ in range(cfg.epochs):
            order = torch.randperm(n, generator=gen).to(device)
            for b in range(0, n, cfg.batch_size):
                bi = order[b : b + cfg.batch_size]
                loss, images = replay_step(model, opt, sub, x[bi], y[bi], task[bi], buf, cfg, gen, ewc)
                losses.append(loss)
                grad_evals += images
                step += 1
                if meta and step % cfg.meta_every == 0:
                    episodes = make_episodes(x, y, task, buf, cfg.meta_shots, gen, pooled=meta == "pooled")
                    reptile_update(model, sub, episodes, cfg)
                    grad_evals_meta += episodes.x_support.shape[0] * episodes.x_support.shape[1] * cfg.meta_steps
                if step % cfg.eval_every == 0:
                    if use_memory:
                        pm = _refresh(model, sub, buf, cur_idx)
                    curve.append(evaluate_stream(model, sub, pm, cfg.prototype_strength))
                    curve_step.append(step)
        if use_memory:
            pm = _refresh(model, sub, buf, cur_idx)  # the buffer does not yet hold task t
        if buf is not None and before is not None:
            changed += int((_priorities_of(buf) != before).sum())  # stored items re-scored this task
            buf.add({"x": sub.train_x[new_idx], "y": sub.train_y[new_idx], "task": sub.train_task[new_idx]})
        R[t] = evaluate_stream(model, sub, pm, cfg.prototype_strength)
        task_end.append(step)
        if use_ewc and t < T - 1:  # online EWC: decay the old Fisher, add this task's, re-anchor
            fisher = diagonal_fisher(model, sub, x, y, task)
            grad_evals += n
            if ewc is not None:
                fisher = {k: cfg.ewc_gamma * ewc[1][k] + v for k, v in fisher.items()}
            ewc = ({k: v.detach().clone() for k, v in model.named_parameters()}, fisher)
    return {
        "R": R.cpu(),
        "baseline": baseline.cpu(),
        "curve": torch.stack(curve).cpu() if curve else torch.zeros(0, T),
        "curve_step": torch.tensor(curve_step),
        "task_end": torch.tensor(task_end),
        "loss": torch.stack(losses).cpu(),
        "priority_changes": torch.tensor(changed),
        "grad_evals": torch.tensor(grad_evals + grad_evals_meta),
        "grad_evals_meta": torch.tensor(grad_evals_meta),
        "diverged": ~torch.isfinite(torch.stack(losses)).all().cpu(),
        **({"model": model, "memory": pm} if return_model else {}),
    }


def _priorities_of(buf: PrioritizedReplay) -> torch.Tensor:
    """The stored priorities p_i^alpha of every filled slot (len(buf),)."""
    return buf.tree.leaves(torch.arange(len(buf))).clone()


def _buffer_items(buf: PrioritizedReplay) -> dict[str, torch.Tensor]:
    """Every stored item, as a dict of (len(buf), ...) tensors."""
    return {k: v[: len(buf)] for k, v in buf.storage.items()}


def _refresh(model, stream: TaskStream, buf, pending: torch.Tensor | None) -> PrototypeMemory:
    """Prototypes from the buffer's items plus the current task's chosen exemplars (if not yet stored)."""
    xs, ds = [], []
    if len(buf) > 0:
        items = _buffer_items(buf)
        xs.append(items["x"])
        ds.append(_digits_of(stream, items))
    if pending is not None:
        xs.append(stream.train_x[pending])
        ds.append(stream.train_digit[pending])
    return write_prototypes(model, stream, torch.cat(xs), torch.cat(ds))


def _digits_of(stream: TaskStream, items: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Recover each stored item's digit from its task and output (the buffer stores y, not the digit)."""
    classes = stream.task_classes[items["task"]]  # (n, C)
    if stream.scenario == "domain":
        return classes.gather(1, items["y"].unsqueeze(1)).squeeze(1)
    return items["y"]


def _restrict(stream: TaskStream, T: int) -> TaskStream:
    """The stream's first T tasks (train and test items of later tasks dropped)."""
    keep = {split: getattr(stream, f"{split}_task") < T for split in ("train", "test", "val")}
    return replace(
        stream,
        **{
            f"{split}_{k}": getattr(stream, f"{split}_{k}")[m]
            for split, m in keep.items()
            for k in ("x", "y", "task", "digit", "index")
        },
    )
