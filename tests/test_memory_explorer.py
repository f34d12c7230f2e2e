"""The run of hand-set memory steps behind notebook 01's allocation-and-links explorer."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from memtutor import memory as mem
from memtutor.experiments import nb01_memory as nb01

N, W = 8, 5


def _words(steps: int) -> torch.Tensor:
    return torch.randn(steps, W, generator=torch.Generator().manual_seed(0))


def test_shapes_and_the_recorded_allocation_is_the_one_the_step_used():
    gw, ga = [1.0, 0.5, 1.0, 0.8], [1.0, 0.3, 0.0, 1.0]
    trace = nb01.allocation_trace(_words(4), gw, ga, [0.0] * 4, num_slots=N)
    for key in ("usage", "allocation", "write_weights", "read_weights", "precedence"):
        assert trace[key].shape == (4, N), key
    assert trace["link"].shape == (4, N, N)
    assert_close(trace["allocation"], mem.allocation_weights(trace["usage"]))
    # an all-zero write key has a uniform content weighting, so w^w = g^w [g^a a + (1 - g^a) / N]
    expected = torch.tensor(gw)[:, None] * (
        torch.tensor(ga)[:, None] * trace["allocation"] + (1 - torch.tensor(ga)[:, None]) / N
    )
    assert_close(trace["write_weights"], expected)


def test_a_free_gate_returns_the_first_words_slot_to_the_allocation():
    trace = nb01.allocation_trace(_words(5), [1.0] * 5, [1.0] * 5, [0.0, 0.0, 0.0, 1.0, 0.0], num_slots=N)
    slots = trace["write_weights"].argmax(-1).tolist()
    assert slots[3] == slots[0] and len(set(slots)) == 4
    kept = nb01.allocation_trace(_words(5), [1.0] * 5, [1.0] * 5, [0.0] * 5, num_slots=N)
    assert len(set(kept["write_weights"].argmax(-1).tolist())) == 5  # without the free, five different slots


def test_a_full_memory_takes_no_more_writes():
    trace = nb01.allocation_trace(_words(N + 1), [1.0] * (N + 1), [1.0] * (N + 1), [0.0] * (N + 1), num_slots=N)
    totals = trace["write_weights"].sum(-1)
    assert float(totals[:N].min()) > 0.99 and float(totals[N]) < 1e-3


@pytest.mark.parametrize(
    ("words", "gates", "match"),
    [
        (torch.zeros(3), [1.0] * 3, "words must be a floating tensor"),
        (torch.zeros(3, W, dtype=torch.long), [1.0] * 3, "words must be a floating tensor"),
        (torch.zeros(3, W), [1.0] * 2, "one gate per written word"),
        (torch.zeros(3, W), [1.0, 1.5, 0.0], r"must lie in \[0, 1\]"),
    ],
)
def test_bad_input_raises(words, gates, match):
    with pytest.raises(ValueError, match=match):
        nb01.allocation_trace(words, [1.0] * 3, [1.0] * 3, gates)
