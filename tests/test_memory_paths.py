"""Which implementation of the memory step runs: the readable functions by default, the hand-written
autograd nodes only where ``fused`` asks for them (values alone cannot tell the two apart)."""

import pytest
import torch

from memtutor import memory as mem
from memtutor.controller import ControllerConfig, MemoryController


def _graph_nodes(t: torch.Tensor) -> set[str]:
    seen, stack, names = set(), [t.grad_fn], set()
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        names.add(type(fn).__name__)
        stack.extend(next_fn for next_fn, _ in fn.next_functions)
    return names


def _step_graph(fused) -> set[str]:
    g = torch.Generator().manual_seed(0)
    b, n, w, r = 2, 5, 3, 2
    raw = torch.randn(b, mem.interface_size(w, r), generator=g, requires_grad=True)
    interface = mem.split_interface(raw, w, r)
    state = mem.initial_state(b, n, w, r)
    reads, _ = mem.memory_step(interface, state, fused=fused)
    return _graph_nodes(reads.sum())


@pytest.mark.parametrize(
    "fused, content, link",
    [
        (False, False, False),
        ((), False, False),
        (("content",), True, False),
        (("link",), False, True),
        (True, True, True),
    ],
)
def test_memory_step_runs_the_nodes_fused_names(fused, content, link):
    names = _step_graph(fused)
    assert any("ContentWeights" in n for n in names) == content, names
    assert any("LinkStep" in n for n in names) == link, names


def test_the_controller_runs_the_readable_step_unless_asked():
    x = torch.randn(2, 4, ControllerConfig().input_size)
    for fused, expect in ((False, False), (("link",), True)):
        y, _ = MemoryController(ControllerConfig(), fused=fused)(x)
        assert any("LinkStep" in n for n in _graph_nodes(y.sum())) == expect
