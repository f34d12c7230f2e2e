"""Tests for memtutor.memory: naive-loop parity, gradcheck, hypothesis properties, bad input.

The naive references below are written straight from the equations of Graves et al. (Nature
2016, Methods) with Python floats and explicit loops over samples, heads and slots, so they share
no code (and no vectorisation trick) with the package.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memtutor import memory as mem
from memtutor.memory import Interface, MemoryBank, MemoryConfig, MemoryState

DT = torch.float64
PROPS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def rand(*shape, gen, low=0.0, high=1.0):
    return low + (high - low) * torch.rand(*shape, generator=gen, dtype=DT)


def simplex(*shape, gen, total=None):
    """Non-negative rows summing to ``total`` (default: a random number in [0, 1])."""
    x = torch.rand(*shape, generator=gen, dtype=DT) ** 3
    x = x / x.sum(-1, keepdim=True)
    scale = rand(*shape[:-1], 1, gen=gen) if total is None else total
    return x * scale


def random_interface(b, n, w, r, gen, requires_grad=False) -> Interface:
    raw = torch.randn(b, mem.interface_size(w, r), generator=gen, dtype=DT) * 2
    iface = mem.split_interface(raw, w, r)
    if requires_grad:
        iface = Interface(*(t.detach().requires_grad_() for t in iface))
    return iface


def random_state(b, n, w, r, gen) -> MemoryState:
    return MemoryState(
        memory=torch.randn(b, n, w, generator=gen, dtype=DT),
        usage=rand(b, n, gen=gen),
        link=rand(b, n, n, gen=gen) / n * (1 - torch.eye(n, dtype=DT)),
        precedence=simplex(b, n, gen=gen),
        read_weights=simplex(b, r, n, gen=gen),
        write_weights=simplex(b, n, gen=gen),
    )


# --------------------------------------------------------------------------- naive references
# Each takes one sample (and one head) as nested Python lists and returns nested lists.


def naive_content(M, k, beta):
    """C(M, k, beta)[i] = exp(beta D(k, M[i])) / sum_j exp(beta D(k, M[j]))."""
    eps = mem.NORM_EPS
    knorm = math.sqrt(sum(x * x for x in k) + eps)
    scores = []
    for row in M:
        dot = sum(a * b for a, b in zip(k, row, strict=True))
        rnorm = math.sqrt(sum(x * x for x in row) + eps)
        scores.append(beta * dot / (knorm * rnorm + mem.SIMILARITY_EPS))
    top = max(scores)
    ex = [math.exp(s - top) for s in scores]
    return [e / sum(ex) for e in ex]


def naive_usage(u, ww, free, wr):
    """u_t = (u + w^w - u w^w) psi,  psi[i] = prod_r (1 - f^r w^{r}[i])."""
    out = []
    for i in range(len(u)):
        psi = 1.0
        for r in range(len(free)):
            psi *= 1 - free[r] * wr[r][i]
        out.append((u[i] + ww[i] - u[i] * ww[i]) * psi)
    return out


def naive_allocation(u):
    """a[phi[j]] = (1 - u[phi[j]]) prod_{i<j} u[phi[i]], phi sorted ascending (usage squashed)."""
    u = [mem.USAGE_EPS + (1 - mem.USAGE_EPS) * x for x in u]
    phi = sorted(range(len(u)), key=lambda i: u[i])
    a = [0.0] * len(u)
    prod = 1.0
    for j in phi:
        a[j] = (1 - u[j]) * prod
        prod *= u[j]
    return a


def naive_write_weights(a, c, ga, gw):
    return [gw * (ga * a[i] + (1 - ga) * c[i]) for i in range(len(a))]


def naive_erase_add(M, w, e, v):
    return [[M[i][k] * (1 - w[i] * e[k]) + w[i] * v[k] for k in range(len(e))] for i in range(len(M))]


def naive_link(L, p, w):
    n = len(w)
    return [[0.0 if i == j else (1 - w[i] - w[j]) * L[i][j] + w[i] * p[j] for j in range(n)] for i in range(n)]


def naive_precedence(p, w):
    s = sum(w)
    return [(1 - s) * p[i] + w[i] for i in range(len(p))]


def naive_directional(L, wr):
    """forward f[i] = sum_j L[i][j] w[j]; backward b[i] = sum_j L[j][i] w[j] (one head)."""
    n = len(wr)
    f = [sum(L[i][j] * wr[j] for j in range(n)) for i in range(n)]
    b = [sum(L[j][i] * wr[j] for j in range(n)) for i in range(n)]
    return f, b


def naive_read_weights(c, f, b, pi):
    return [pi[0] * b[i] + pi[1] * c[i] + pi[2] * f[i] for i in range(len(c))]


def naive_read(M, w):
    return [sum(w[i] * M[i][k] for i in range(len(M))) for k in range(len(M[0]))]


def naive_step(x: Interface, s: MemoryState, b: int):
    """One memory step for sample ``b``, head by head, in the order of memory_step."""
    L = lambda t: t[b].tolist()  # noqa: E731
    R = x.read_keys.shape[1]
    u = naive_usage(L(s.usage), L(s.write_weights), L(x.free_gates), L(s.read_weights))
    cw = naive_content(L(s.memory), L(x.write_key), float(x.write_strength[b]))
    ww = naive_write_weights(naive_allocation(u), cw, float(x.allocation_gate[b]), float(x.write_gate[b]))
    M = naive_erase_add(L(s.memory), ww, L(x.erase_vector), L(x.write_vector))
    link = naive_link(L(s.link), L(s.precedence), ww)
    prec = naive_precedence(L(s.precedence), ww)
    wr, reads = [], []
    for h in range(R):
        c = naive_content(M, L(x.read_keys)[h], L(x.read_strengths)[h])
        f, bw = naive_directional(link, L(s.read_weights)[h])
        w_h = naive_read_weights(c, f, bw, L(x.read_modes)[h])
        wr.append(w_h)
        reads.append(naive_read(M, w_h))
    return reads, MemoryState(M, u, link, prec, wr, ww)


T = lambda x: torch.tensor(x, dtype=DT)  # noqa: E731
close = lambda a, b: torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)  # noqa: E731


# --------------------------------------------------------------------------- parity with the loops

SIZES = [(1, 1, 1, 1), (3, 5, 4, 2), (2, 8, 3, 4)]  # (B, N, W, R)


@pytest.mark.parametrize("b,n,w,r", SIZES)
def test_content_weights_match_loop(b, n, w, r):
    g = torch.Generator().manual_seed(1)
    M, k, beta = (
        torch.randn(b, n, w, generator=g, dtype=DT),
        torch.randn(b, r, w, generator=g, dtype=DT),
        rand(b, r, gen=g, low=1, high=10),
    )
    want = T([[naive_content(M[i].tolist(), k[i, h].tolist(), float(beta[i, h])) for h in range(r)] for i in range(b)])
    close(mem.content_weights(M, k, beta), want)


@pytest.mark.parametrize("b,n,w,r", SIZES)
def test_usage_and_allocation_match_loop(b, n, w, r):
    g = torch.Generator().manual_seed(2)
    u, ww, f, wr = rand(b, n, gen=g), simplex(b, n, gen=g), rand(b, r, gen=g), simplex(b, r, n, gen=g)
    got = mem.update_usage(u, ww, f, wr)
    close(got, T([naive_usage(u[i].tolist(), ww[i].tolist(), f[i].tolist(), wr[i].tolist()) for i in range(b)]))
    close(mem.allocation_weights(got), T([naive_allocation(got[i].tolist()) for i in range(b)]))


def test_allocation_with_ties_and_extremes_matches_loop():
    u = T([[0.0, 0.0, 1.0, 0.5, 0.5, 1.0], [1.0] * 6, [0.0] * 6])
    close(mem.allocation_weights(u), T([naive_allocation(row) for row in u.tolist()]))


@pytest.mark.parametrize("b,n,w,r", SIZES)
def test_write_and_erase_match_loop(b, n, w, r):
    g = torch.Generator().manual_seed(3)
    a, c, ga, gw = simplex(b, n, gen=g), simplex(b, n, gen=g, total=1.0), rand(b, gen=g), rand(b, gen=g)
    ww = mem.write_weights(a, c, ga, gw)
    close(ww, T([naive_write_weights(a[i].tolist(), c[i].tolist(), float(ga[i]), float(gw[i])) for i in range(b)]))
    M, e, v = torch.randn(b, n, w, generator=g, dtype=DT), rand(b, w, gen=g), torch.randn(b, w, generator=g, dtype=DT)
    want = T([naive_erase_add(M[i].tolist(), ww[i].tolist(), e[i].tolist(), v[i].tolist()) for i in range(b)])
    close(mem.erase_and_add(M, ww, e, v), want)


@pytest.mark.parametrize("b,n,w,r", SIZES)
def test_link_precedence_directional_read_match_loop(b, n, w, r):
    g = torch.Generator().manual_seed(4)
    s = random_state(b, n, w, r, g)
    ww = simplex(b, n, gen=g)
    link = mem.update_link(s.link, s.precedence, ww)
    close(link, T([naive_link(s.link[i].tolist(), s.precedence[i].tolist(), ww[i].tolist()) for i in range(b)]))
    close(
        mem.update_precedence(s.precedence, ww),
        T([naive_precedence(s.precedence[i].tolist(), ww[i].tolist()) for i in range(b)]),
    )
    fwd, bwd = mem.directional_weights(link, s.read_weights)
    loops = [[naive_directional(link[i].tolist(), s.read_weights[i, h].tolist()) for h in range(r)] for i in range(b)]
    close(fwd, T([[fb[0] for fb in row] for row in loops]))
    close(bwd, T([[fb[1] for fb in row] for row in loops]))
    content, modes = simplex(b, r, n, gen=g, total=1.0), torch.softmax(torch.randn(b, r, 3, generator=g, dtype=DT), -1)
    wr = mem.read_weights(content, fwd, bwd, modes)
    want = [
        [
            naive_read_weights(content[i, h].tolist(), fwd[i, h].tolist(), bwd[i, h].tolist(), modes[i, h].tolist())
            for h in range(r)
        ]
        for i in range(b)
    ]
    close(wr, T(want))
    close(
        mem.read_memory(s.memory, wr),
        T([[naive_read(s.memory[i].tolist(), wr[i, h].tolist()) for h in range(r)] for i in range(b)]),
    )


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("b,n,w,r", SIZES)
def test_memory_step_matches_loop_over_several_steps(b, n, w, r, fused):
    g = torch.Generator().manual_seed(5)
    bank = MemoryBank(num_slots=n, word_size=w, num_reads=r, fused=fused)
    state = bank.initial_state(b, dtype=DT)
    for _ in range(4):
        x = random_interface(b, n, w, r, g)
        reads, nxt = bank(x, state)
        for i in range(b):
            want_reads, want = naive_step(x, state, i)
            close(reads[i], T(want_reads))
            for got_t, want_t in zip(nxt, want, strict=True):
                close(got_t[i], T(want_t))
        state = nxt


# --------------------------------------------------------------------------- shapes and interface


def test_documented_shapes():
    b, n, w, r = 2, 6, 3, 4
    g = torch.Generator().manual_seed(6)
    s, x = random_state(b, n, w, r, g), random_interface(b, n, w, r, g)
    assert mem.cosine_similarity(s.memory, x.read_keys).shape == (b, r, n)
    assert mem.content_weights(s.memory, x.read_keys, x.read_strengths).shape == (b, r, n)
    assert mem.retention(x.free_gates, s.read_weights).shape == (b, n)
    assert mem.update_usage(s.usage, s.write_weights, x.free_gates, s.read_weights).shape == (b, n)
    assert mem.allocation_weights(s.usage).shape == (b, n)
    assert mem.write_weights(s.usage, s.usage, x.write_gate, x.allocation_gate).shape == (b, n)
    assert mem.erase_and_add(s.memory, s.write_weights, x.erase_vector, x.write_vector).shape == (b, n, w)
    assert mem.update_precedence(s.precedence, s.write_weights).shape == (b, n)
    assert mem.update_link(s.link, s.precedence, s.write_weights).shape == (b, n, n)
    assert [t.shape for t in mem.directional_weights(s.link, s.read_weights)] == [(b, r, n)] * 2
    assert mem.read_weights(s.read_weights, s.read_weights, s.read_weights, x.read_modes).shape == (b, r, n)
    assert mem.read_memory(s.memory, s.read_weights).shape == (b, r, w)
    reads, nxt = mem.memory_step(x, s)
    assert reads.shape == (b, r, w)
    assert [tuple(t.shape) for t in nxt] == [(b, n, w), (b, n), (b, n, n), (b, n), (b, r, n), (b, n)]
    assert [tuple(t.shape) for t in MemoryBank(num_slots=n, word_size=w, num_reads=r).initial_state(b)] == [
        (b, n, w), (b, n), (b, n, n), (b, n), (b, r, n), (b, n)]  # fmt: skip


def test_interface_size_and_squashing():
    w, r = 5, 3
    assert mem.interface_size(w, r) == w * r + 3 * w + 5 * r + 3  # paper, one write head
    assert MemoryConfig(num_slots=4, word_size=w, num_reads=r).interface_size == mem.interface_size(w, r)
    raw = torch.linspace(-30, 30, 2 * mem.interface_size(w, r), dtype=DT).reshape(2, -1)
    x = mem.split_interface(raw, w, r)
    assert x.read_keys.shape == (2, r, w) and x.write_key.shape == (2, w)
    assert bool((x.read_strengths >= 1).all()) and bool((x.write_strength >= 1).all())
    for gate in (x.erase_vector, x.free_gates, x.allocation_gate, x.write_gate):
        assert bool(((gate >= 0) & (gate <= 1)).all())
    close(x.read_modes.sum(-1), torch.ones(2, r, dtype=DT))
    # oneplus is the paper's 1 + softplus, not deepmind/dnc's plain softplus
    close(mem.oneplus(torch.tensor([0.0], dtype=DT)), torch.tensor([1 + math.log(2)], dtype=DT))


def test_interface_layout_follows_the_paper():
    """xi = [k^r (R*W), beta^r (R), k^w (W), beta^w (1), e (W), v (W), f (R), g^a (1), g^w (1), pi (3R)].

    The linear fields (read keys, write key, write vector) cannot be told apart by their ranges,
    so check every field's position with a raw vector whose entries are their own indices."""
    w, r = 3, 2
    raw = torch.arange(mem.interface_size(w, r), dtype=DT).reshape(1, -1)
    x = mem.split_interface(raw, w, r)
    seg, start = {}, 0
    for name, size in [
        ("rk", r * w),
        ("rs", r),
        ("wk", w),
        ("ws", 1),
        ("e", w),
        ("v", w),
        ("f", r),
        ("ga", 1),
        ("gw", 1),
        ("pi", 3 * r),
    ]:
        seg[name], start = raw[0, start : start + size], start + size
    assert start == raw.shape[1]
    close(x.read_keys[0], seg["rk"].reshape(r, w))
    close(x.read_strengths[0], mem.oneplus(seg["rs"]))
    close(x.write_key[0], seg["wk"])
    close(x.write_strength, mem.oneplus(seg["ws"]))
    close(x.erase_vector[0], torch.sigmoid(seg["e"]))
    close(x.write_vector[0], seg["v"])
    close(x.free_gates[0], torch.sigmoid(seg["f"]))
    close(x.allocation_gate, torch.sigmoid(seg["ga"]))
    close(x.write_gate, torch.sigmoid(seg["gw"]))
    close(x.read_modes[0], torch.softmax(seg["pi"].reshape(r, 3), -1))


def test_bank_accepts_raw_interface_and_does_not_mutate_state():
    g = torch.Generator().manual_seed(7)
    bank = MemoryBank(MemoryConfig(num_slots=5, word_size=3, num_reads=2))
    assert list(bank.parameters()) == [] and list(bank.buffers()) == []
    state = random_state(2, 5, 3, 2, g)
    before = [t.clone() for t in state]
    raw = torch.randn(2, bank.interface_size, generator=g, dtype=DT)
    reads_raw, next_raw = bank(raw, state)
    reads, nxt = bank(mem.split_interface(raw, 3, 2), state)
    close(reads_raw, reads)
    for a, b in zip(state, before, strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(next_raw.memory, state.memory)


def test_batch_samples_are_independent():
    g = torch.Generator().manual_seed(8)
    b, n, w, r = 4, 6, 3, 2
    s, x = random_state(b, n, w, r, g), random_interface(b, n, w, r, g)
    perm = torch.tensor([2, 0, 3, 1])
    reads, nxt = mem.memory_step(x, s)
    reads_p, nxt_p = mem.memory_step(Interface(*(t[perm] for t in x)), MemoryState(*(t[perm] for t in s)))
    close(reads_p, reads[perm])
    for a, b_ in zip(nxt_p, nxt, strict=True):
        close(a, b_[perm])


def test_allocation_picks_least_used_and_fills_fresh_slots():
    usage = T([[0.9, 0.1, 0.5, 0.0, 0.7]])
    assert int(mem.allocation_weights(usage).argmax()) == 3
    # Pure allocation writes (g^a = g^w = 1, nothing freed) go to N different slots, one per step.
    n, w = 6, 4
    bank = MemoryBank(num_slots=n, word_size=w, num_reads=1)
    state = bank.initial_state(1, dtype=DT)
    raw = torch.zeros(1, bank.interface_size, dtype=DT)
    x = mem.split_interface(raw, w, 1)._replace(
        allocation_gate=T([1.0]), write_gate=T([1.0]), free_gates=T([[0.0]]), erase_vector=torch.ones(1, w, dtype=DT)
    )
    slots = []
    for _ in range(n):
        _, state = bank(x, state)
        slots.append(int(state.write_weights.argmax()))
    assert sorted(slots) == list(range(n))


def test_links_follow_the_write_order():
    n = 5
    link, prec = torch.zeros(1, n, n, dtype=DT), torch.zeros(1, n, dtype=DT)
    order = [3, 0, 4, 1]
    for slot in order:
        w = torch.nn.functional.one_hot(torch.tensor([slot]), n).to(DT)
        link, prec = mem.update_link(link, prec, w), mem.update_precedence(prec, w)
    for a, b in itertools.pairwise(order):
        start = torch.nn.functional.one_hot(torch.tensor([[a]]), n).to(DT)
        fwd, _ = mem.directional_weights(link, start)
        _, bwd = mem.directional_weights(link, torch.nn.functional.one_hot(torch.tensor([[b]]), n).to(DT))
        assert int(fwd.argmax()) == b and float(fwd.max()) == pytest.approx(1.0)
        assert int(bwd.argmax()) == a and float(bwd.max()) == pytest.approx(1.0)


# --------------------------------------------------------------------------- gradients


def test_gradcheck_content_addressing():
    g = torch.Generator().manual_seed(10)
    M = torch.randn(2, 5, 3, generator=g, dtype=DT, requires_grad=True)
    k = torch.randn(2, 3, 3, generator=g, dtype=DT, requires_grad=True)
    beta = rand(2, 3, gen=g, low=1, high=5).requires_grad_()
    assert torch.autograd.gradcheck(mem.content_weights, (M, k, beta))


def test_gradcheck_write():
    g = torch.Generator().manual_seed(11)
    M = torch.randn(2, 5, 3, generator=g, dtype=DT, requires_grad=True)
    ww = simplex(2, 5, gen=g).requires_grad_()
    e = rand(2, 3, gen=g).requires_grad_()
    v = torch.randn(2, 3, generator=g, dtype=DT, requires_grad=True)
    assert torch.autograd.gradcheck(mem.erase_and_add, (M, ww, e, v))
    a, c = simplex(2, 5, gen=g).requires_grad_(), simplex(2, 5, gen=g, total=1.0).requires_grad_()
    ga, gw = rand(2, gen=g).requires_grad_(), rand(2, gen=g).requires_grad_()
    assert torch.autograd.gradcheck(mem.write_weights, (a, c, ga, gw))


def test_gradcheck_allocation_and_usage():
    g = torch.Generator().manual_seed(12)
    # distinct usages (sorting is only piecewise differentiable: ties are measure zero)
    u = (torch.randperm(6, generator=g).to(DT) / 6 + 0.05).reshape(1, 6).repeat(2, 1).requires_grad_()
    assert torch.autograd.gradcheck(mem.allocation_weights, (u,))
    ww, f, wr = (
        simplex(2, 6, gen=g).requires_grad_(),
        rand(2, 3, gen=g).requires_grad_(),
        simplex(2, 3, 6, gen=g).requires_grad_(),
    )
    assert torch.autograd.gradcheck(mem.update_usage, (u, ww, f, wr))


def test_gradcheck_link_update():
    g = torch.Generator().manual_seed(13)
    s = random_state(2, 5, 3, 2, g)
    link, p, ww = s.link.requires_grad_(), s.precedence.requires_grad_(), s.write_weights.requires_grad_()
    assert torch.autograd.gradcheck(mem.update_link, (link, p, ww))
    assert torch.autograd.gradcheck(mem.update_precedence, (p, ww))


def test_gradcheck_read():
    g = torch.Generator().manual_seed(14)
    s = random_state(2, 5, 3, 2, g)
    link, wr_prev = s.link.requires_grad_(), s.read_weights.requires_grad_()
    assert torch.autograd.gradcheck(mem.directional_weights, (link, wr_prev))
    c, f, b = (simplex(2, 2, 5, gen=g).requires_grad_() for _ in range(3))
    modes = torch.softmax(torch.randn(2, 2, 3, generator=g, dtype=DT), -1).requires_grad_()
    assert torch.autograd.gradcheck(mem.read_weights, (c, f, b, modes))
    M = s.memory.requires_grad_()
    assert torch.autograd.gradcheck(mem.read_memory, (M, c))


@pytest.mark.parametrize("fused", [False, True])
def test_gradcheck_whole_step(fused):
    g = torch.Generator().manual_seed(15)
    b, n, w, r = 2, 4, 3, 2
    s = random_state(b, n, w, r, g)
    raw = (torch.randn(b, mem.interface_size(w, r), generator=g, dtype=DT)).requires_grad_()
    mem_in = s.memory.clone().requires_grad_()

    def f(raw, m):
        reads, nxt = mem.memory_step(mem.split_interface(raw, w, r), s._replace(memory=m), fused=fused)
        return reads, nxt.memory, nxt.link, nxt.usage

    assert torch.autograd.gradcheck(f, (raw, mem_in))


# --------------------------------------------------------------------------- the fused option
# memory_step(fused=...) swaps two parts of the step for hand-written autograd nodes. The
# default (fused=False) composes the equation functions; the option must agree with it.

SWITCHES = [(True, True), (False, True), (True, False), (False, False)]  # (allocation, links)


def _run_steps(fused, allocation, links, steps=3, seed=30, b=3, n=5, w=4, r=2):
    """Several memory steps from a random state; returns the leaves and every output of every step."""
    g = torch.Generator().manual_seed(seed)
    state = MemoryState(*(t.requires_grad_() for t in random_state(b, n, w, r, g)))
    raws = [torch.randn(b, mem.interface_size(w, r), generator=g, dtype=DT).requires_grad_() for _ in range(steps)]
    outputs, s = [], state
    for raw in raws:
        reads, s = mem.memory_step(mem.split_interface(raw, w, r), s, allocation=allocation, links=links, fused=fused)
        outputs += [reads, *s]
    return (*state, *raws), outputs


@pytest.mark.parametrize("fused", [("content",), ("link",), True])
@pytest.mark.parametrize("allocation,links", SWITCHES)
def test_fused_step_matches_the_readable_step_values_and_gradients(fused, allocation, links):
    leaves, want = _run_steps(False, allocation, links)
    leaves_f, got = _run_steps(fused, allocation, links)
    for a, c in zip(got, want, strict=True):
        torch.testing.assert_close(a, c)
    g = torch.Generator().manual_seed(31)
    upstream = [torch.randn(t.shape, generator=g, dtype=DT) for t in want]
    grad_want = torch.autograd.grad(sum((t * u).sum() for t, u in zip(want, upstream, strict=True)), leaves)
    grad_got = torch.autograd.grad(sum((t * u).sum() for t, u in zip(got, upstream, strict=True)), leaves_f)
    for a, c in zip(grad_got, grad_want, strict=True):
        torch.testing.assert_close(a, c)


def test_fused_option_in_bank_and_its_names():
    g = torch.Generator().manual_seed(32)
    s, x = random_state(2, 5, 3, 2, g), random_interface(2, 5, 3, 2, g)
    want = MemoryBank(num_slots=5, word_size=3, num_reads=2)(x, s)
    for fused in (True, ["link", "content"], frozenset({"link"}), ("content",), ()):
        got = MemoryBank(num_slots=5, word_size=3, num_reads=2, fused=fused)(x, s)
        torch.testing.assert_close(got, want)
    assert "fused" not in repr(MemoryBank())
    assert "fused=('content', 'link')" in repr(MemoryBank(fused=True))
    for bad in ("link", ["links"], 3, None):
        with pytest.raises(ValueError, match="fused"):
            mem.memory_step(x, s, fused=bad)


def test_ablation_switches():
    """allocation=False writes by content only (w^w = g^w c^w); links=False reads by content only
    (w^r = c^r) and still updates the links."""
    g = torch.Generator().manual_seed(33)
    b, n, w, r = 3, 6, 4, 2
    s, x = random_state(b, n, w, r, g), random_interface(b, n, w, r, g)
    _, full = mem.memory_step(x, s)
    _, no_alloc = mem.memory_step(x, s, allocation=False)
    write_content = mem.content_weights(s.memory, x.write_key[:, None], x.write_strength[:, None])[:, 0]
    torch.testing.assert_close(no_alloc.write_weights, x.write_gate[:, None] * write_content)
    torch.testing.assert_close(no_alloc.usage, full.usage)  # usage depends on the previous step only
    _, no_links = mem.memory_step(x, s, links=False)
    torch.testing.assert_close(no_links.read_weights, mem.content_weights(full.memory, x.read_keys, x.read_strengths))
    torch.testing.assert_close(no_links.link, full.link)
    torch.testing.assert_close(no_links.memory, full.memory)
    assert not torch.allclose(no_links.read_weights, full.read_weights)


def test_unchecked_step_equals_the_checked_one():
    g = torch.Generator().manual_seed(34)
    s = random_state(2, 4, 3, 2, g)
    raw = torch.randn(2, mem.interface_size(3, 2), generator=g, dtype=DT)
    x = mem.split_interface(raw, 3, 2, check=False)
    torch.testing.assert_close(x, mem.split_interface(raw, 3, 2))
    torch.testing.assert_close(mem.memory_step(x, s, check=False), mem.memory_step(x, s))


def _composed_link_step(prev_link, p, ww, wr):
    link = mem.update_link(prev_link, p, ww)
    return (link, *mem.directional_weights(link, wr))


def _link_inputs(b, n, w, r, seed, dtype=DT):
    g = torch.Generator().manual_seed(seed)
    s = random_state(b, n, w, r, g)
    return tuple(t.to(dtype).requires_grad_() for t in (s.link, s.precedence, s.write_weights, s.read_weights))


@pytest.mark.parametrize("b,n,w,r", [(1, 1, 2, 1), (3, 5, 3, 2), (2, 7, 2, 4)])
def test_fused_link_step_matches_the_composed_functions(b, n, w, r):
    """memory_step(fused=...) can use a fused L_t + (f, b) node with a hand-written backward: same values
    and the same gradients as update_link followed by directional_weights, for every output used or not."""
    inputs = _link_inputs(b, n, w, r, seed=16 + n)
    fused = mem.fused_link_and_directions(*inputs)
    composed = _composed_link_step(*inputs)
    for a, c in zip(fused, composed, strict=True):
        torch.testing.assert_close(a, c)
    g = torch.Generator().manual_seed(17)
    for used in [(0, 1, 2), (0,), (1,), (2,), (1, 2)]:
        weights = [torch.randn(composed[i].shape, generator=g, dtype=DT) for i in used]
        grads = []
        for outs in (mem.fused_link_and_directions(*inputs), _composed_link_step(*inputs)):
            loss = sum((outs[i] * wt).sum() for i, wt in zip(used, weights, strict=True))
            grads.append(torch.autograd.grad(loss, inputs, allow_unused=True))
        for gf, gc in zip(*grads, strict=True):
            torch.testing.assert_close(gf, gc)


def test_gradcheck_fused_link_step_first_and_second_order():
    inputs = _link_inputs(2, 5, 3, 2, seed=18)
    assert torch.autograd.gradcheck(mem.fused_link_and_directions, inputs)
    # second order: MAML differentiates through the inner loop's gradients
    torch.manual_seed(0)  # gradgradcheck draws its grad_outputs from the global generator: same in any test order
    assert torch.autograd.gradgradcheck(mem.fused_link_and_directions, inputs)


def test_fused_link_step_under_torch_func_grad_and_vmap():
    inputs = _link_inputs(3, 4, 2, 2, seed=19)
    detached = [t.detach() for t in inputs]

    def loss(fn, link, p, ww, wr):
        out = fn(link, p, ww, wr)
        return out[0].square().sum() + out[1].sin().sum() + out[2].cos().sum()

    for argnum in range(4):
        got = torch.func.grad(lambda *a: loss(mem.fused_link_and_directions, *a), argnums=argnum)(*detached)
        want = torch.func.grad(lambda *a: loss(_composed_link_step, *a), argnums=argnum)(*detached)
        torch.testing.assert_close(got, want)
    # vmap over an extra leading dimension: each slice is its own batch of size 1
    unbatched = [t.unsqueeze(1) for t in detached]
    got = torch.func.vmap(mem.fused_link_and_directions)(*unbatched)
    for a, c in zip(got, _composed_link_step(*detached), strict=True):
        torch.testing.assert_close(a.squeeze(1), c)


@pytest.mark.parametrize("b,n,w,h", [(1, 1, 2, 1), (3, 5, 3, 2), (2, 7, 4, 4)])
def test_fused_content_weights_match_the_composed_function(b, n, w, h):
    g = torch.Generator().manual_seed(20 + n)
    memory = torch.randn(b, n, w, generator=g, dtype=DT).requires_grad_()
    keys = torch.randn(b, h, w, generator=g, dtype=DT).requires_grad_()
    beta = (1 + torch.rand(b, h, generator=g, dtype=DT) * 5).requires_grad_()
    fused = mem.fused_content_weights(memory, keys, beta)
    composed = mem.content_weights(memory, keys, beta)
    torch.testing.assert_close(fused, composed)
    upstream = torch.randn(fused.shape, generator=g, dtype=DT)
    got = torch.autograd.grad((fused * upstream).sum(), (memory, keys, beta))
    want = torch.autograd.grad((composed * upstream).sum(), (memory, keys, beta))
    for a, c in zip(got, want, strict=True):
        torch.testing.assert_close(a, c)


def test_gradcheck_fused_content_weights_first_and_second_order():
    g = torch.Generator().manual_seed(21)
    memory = torch.randn(2, 4, 3, generator=g, dtype=DT)
    memory[0, 1] = 0.0  # a zero row: the norm's epsilon keeps everything finite
    inputs = (
        memory.requires_grad_(),
        torch.randn(2, 2, 3, generator=g, dtype=DT).requires_grad_(),
        (1 + torch.rand(2, 2, generator=g, dtype=DT)).requires_grad_(),
    )
    assert torch.autograd.gradcheck(mem.fused_content_weights, inputs)
    torch.manual_seed(0)  # gradgradcheck draws its grad_outputs from the global generator: same in any test order
    assert torch.autograd.gradgradcheck(mem.fused_content_weights, inputs)
    out = torch.func.vmap(mem.fused_content_weights)(*(t.detach().unsqueeze(1) for t in inputs))
    torch.testing.assert_close(out.squeeze(1), mem.content_weights(*(t.detach() for t in inputs)))


def test_write_path_receives_gradient_through_a_later_read():
    """Regression for the original tutorial: its writes were .detach()ed, so the write key, write
    vector and erase vector never got a gradient. Here a loss on a read after the write reaches
    all three (and the write strength)."""
    g = torch.Generator().manual_seed(16)
    b, n, w, r = 2, 5, 4, 1
    s = random_state(b, n, w, r, g)
    x = random_interface(b, n, w, r, g, requires_grad=True)
    x = x._replace(allocation_gate=T([0.3, 0.6]).requires_grad_(), read_modes=T([[[0.0, 1.0, 0.0]]] * b))
    _, after_write = mem.memory_step(x, s)
    reads, _ = mem.memory_step(x._replace(write_gate=torch.zeros(b, dtype=DT)), after_write)
    reads.pow(2).sum().backward()
    for name in ("write_key", "write_strength", "write_vector", "erase_vector", "write_gate", "allocation_gate"):
        grad = getattr(x, name).grad
        assert grad is not None and float(grad.abs().sum()) > 0, name


def test_zero_memory_gives_finite_gradients():
    """The initial state is all zeros: norms must not divide by zero (deepmind's testDivideByZero)."""
    bank = MemoryBank(num_slots=4, word_size=3, num_reads=2)
    state = bank.initial_state(2, dtype=DT)
    raw = torch.zeros(2, bank.interface_size, dtype=DT, requires_grad=True)
    reads, nxt = bank(raw, state)
    reads2, _ = bank(raw, nxt)
    (reads.sum() + reads2.sum()).backward()
    assert bool(torch.isfinite(raw.grad).all())


# --------------------------------------------------------------------------- hypothesis properties

sizes = st.tuples(st.integers(1, 3), st.integers(1, 7), st.integers(1, 4), st.integers(1, 3))  # B, N, W, R
seeds = st.integers(0, 2**31 - 1)


@PROPS
@given(sizes, seeds, st.floats(1.0, 200.0), st.floats(1e-3, 1e3))
def test_prop_content_weights_sum_to_one(shape, seed, beta, scale):
    b, n, w, r = shape
    g = torch.Generator().manual_seed(seed)
    M = torch.randn(b, n, w, generator=g, dtype=DT) * scale
    M[:, 0] = 0.0  # include an empty row
    k = torch.randn(b, r, w, generator=g, dtype=DT) * scale
    c = mem.content_weights(M, k, torch.full((b, r), beta, dtype=DT))
    assert bool((c >= 0).all())
    close(c.sum(-1), torch.ones(b, r, dtype=DT))


@PROPS
@given(sizes, seeds, st.sampled_from([0.0, 1.0, None]))
def test_prop_allocation_and_write_weights_are_subprobabilities(shape, seed, extreme):
    b, n, w, r = shape
    g = torch.Generator().manual_seed(seed)
    u = rand(b, n, gen=g) if extreme is None else torch.full((b, n), extreme, dtype=DT)
    a = mem.allocation_weights(u)
    assert bool((a >= 0).all()) and bool((a.sum(-1) <= 1 + 1e-12).all())
    c = mem.content_weights(
        torch.randn(b, n, w, generator=g, dtype=DT),
        torch.randn(b, 1, w, generator=g, dtype=DT),
        rand(b, 1, gen=g, low=1, high=20),
    )[:, 0]
    ww = mem.write_weights(a, c, rand(b, gen=g), rand(b, gen=g))
    assert bool((ww >= 0).all()) and bool((ww.sum(-1) <= 1 + 1e-12).all())


@PROPS
@given(sizes, seeds, st.integers(1, 6))
def test_prop_usage_stays_in_unit_interval_and_links_stay_valid(shape, seed, steps):
    """Run whole steps from random squashed interfaces; check usage and the link matrix."""
    b, n, w, r = shape
    g = torch.Generator().manual_seed(seed)
    bank = MemoryBank(num_slots=n, word_size=w, num_reads=r)
    state = bank.initial_state(b, dtype=DT)
    for _ in range(steps):
        _, state = bank(random_interface(b, n, w, r, g), state)
        u, L = state.usage, state.link
        assert bool(((u >= 0) & (u <= 1)).all())
        assert bool((torch.diagonal(L, dim1=-2, dim2=-1) == 0).all())
        assert bool(((L >= 0) & (L <= 1)).all())
        assert bool((L.sum(-1) <= 1 + 1e-12).all()) and bool((L.sum(-2) <= 1 + 1e-12).all())
        assert bool((state.precedence >= 0).all()) and bool((state.precedence.sum(-1) <= 1 + 1e-12).all())


@PROPS
@given(sizes, seeds, st.sampled_from([0.0, 1.0, None]))
def test_prop_usage_update_in_unit_interval(shape, seed, extreme):
    b, n, w, r = shape
    g = torch.Generator().manual_seed(seed)
    u = rand(b, n, gen=g) if extreme is None else torch.full((b, n), extreme, dtype=DT)
    free = rand(b, r, gen=g) if extreme is None else torch.full((b, r), extreme, dtype=DT)
    new = mem.update_usage(u, simplex(b, n, gen=g), free, simplex(b, r, n, gen=g, total=1.0))
    assert bool(((new >= 0) & (new <= 1)).all())


@PROPS
@given(sizes, seeds, st.integers(1, 8))
def test_prop_link_update_from_arbitrary_write_sequences(shape, seed, steps):
    b, n, _, _ = shape
    g = torch.Generator().manual_seed(seed)
    L, p = torch.zeros(b, n, n, dtype=DT), torch.zeros(b, n, dtype=DT)
    for t in range(steps):
        ww = simplex(b, n, gen=g, total=1.0 if t % 3 == 0 else None)
        L, p = mem.update_link(L, p, ww), mem.update_precedence(p, ww)
        assert bool((torch.diagonal(L, dim1=-2, dim2=-1) == 0).all())
        assert bool(((L >= 0) & (L <= 1)).all())
        assert bool((L.sum(-1) <= 1 + 1e-12).all()) and bool((L.sum(-2) <= 1 + 1e-12).all())


# --------------------------------------------------------------------------- bad input


def _good(b=2, n=5, w=3, r=2):
    g = torch.Generator().manual_seed(20)
    return random_interface(b, n, w, r, g), random_state(b, n, w, r, g)


def test_mismatched_shapes_raise():
    x, s = _good()
    with pytest.raises(ValueError, match="keys must have shape"):
        mem.content_weights(s.memory, torch.zeros(2, 2, 4, dtype=DT), torch.ones(2, 2, dtype=DT))
    with pytest.raises(ValueError, match="keys must have shape"):
        mem.content_weights(s.memory, torch.zeros(3, 2, 3, dtype=DT), torch.ones(3, 2, dtype=DT))
    with pytest.raises(ValueError, match="strengths must have shape"):
        mem.content_weights(s.memory, x.read_keys, torch.ones(2, 3, dtype=DT))
    with pytest.raises(ValueError, match="write_vector must have shape"):
        mem.erase_and_add(s.memory, s.write_weights, x.erase_vector, torch.zeros(2, 4, dtype=DT))
    with pytest.raises(ValueError, match="prev_link must be square"):
        mem.update_link(torch.zeros(2, 5, 4, dtype=DT), s.precedence, s.write_weights)
    with pytest.raises(ValueError, match="write_weights must have shape"):
        mem.update_link(s.link, s.precedence, torch.zeros(2, 4, dtype=DT))
    with pytest.raises(ValueError, match="write_key must have shape"):
        mem.memory_step(x._replace(write_key=torch.zeros(2, 4, dtype=DT)), s)
    with pytest.raises(ValueError, match="allocation_gate must have shape"):
        mem.memory_step(x._replace(allocation_gate=torch.zeros(2, 1, dtype=DT)), s)
    with pytest.raises(ValueError, match="prev_state.link must have shape"):
        mem.memory_step(x, s._replace(link=torch.zeros(2, 4, 4, dtype=DT)))
    with pytest.raises(ValueError, match=r"prev_state.memory has shape \(2, 5, 3\), expected \(B, 6, 3\)"):
        MemoryBank(num_slots=6, word_size=3, num_reads=2)(x, s)
    with pytest.raises(ValueError, match="raw interface must have shape"):
        MemoryBank(num_slots=5, word_size=3, num_reads=2)(torch.zeros(2, 7), s)


def test_zero_slots_or_width_raise():
    with pytest.raises(ValueError, match="at least one slot"):
        mem.content_weights(torch.zeros(1, 0, 3), torch.zeros(1, 1, 3), torch.ones(1, 1))
    with pytest.raises(ValueError, match="word size of at least 1"):
        mem.erase_and_add(torch.zeros(1, 4, 0), torch.zeros(1, 4), torch.zeros(1, 0), torch.zeros(1, 0))
    with pytest.raises(ValueError, match="at least one slot"):
        mem.allocation_weights(torch.zeros(2, 0))
    with pytest.raises(ValueError, match="num_slots must be >= 1"):
        MemoryConfig(num_slots=0)
    with pytest.raises(ValueError, match="word_size must be >= 1"):
        MemoryBank(num_slots=4, word_size=0, num_reads=1)
    with pytest.raises(ValueError, match="num_reads must be >= 1"):
        mem.initial_state(1, 4, 3, 0)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nan_or_infinite_keys_raise(bad):
    x, s = _good()
    keys = x.read_keys.clone()
    keys[1, 0, 2] = bad
    with pytest.raises(ValueError, match="keys contains NaN or infinite"):
        mem.content_weights(s.memory, keys, x.read_strengths)
    with pytest.raises(ValueError, match="read_keys contains NaN or infinite"):
        mem.memory_step(x._replace(read_keys=keys), s)
    wk = x.write_key.clone()
    wk[0, 0] = bad
    with pytest.raises(ValueError, match="write_key contains NaN or infinite"):
        MemoryBank(num_slots=5, word_size=3, num_reads=2)(x._replace(write_key=wk), s)
    mem_bad = s.memory.clone()
    mem_bad[0, 0, 0] = bad
    with pytest.raises(ValueError, match="prev_state.memory contains NaN or infinite"):
        mem.memory_step(x, s._replace(memory=mem_bad))


def test_wrong_number_of_heads_raise():
    x, s = _good(r=2)
    g = torch.Generator().manual_seed(21)
    x3 = random_interface(2, 5, 3, 3, g)
    with pytest.raises(ValueError, match="read_keys has 3 heads, expected 2"):
        mem.memory_step(x3, s)
    with pytest.raises(ValueError, match="free_gates has 3 heads, expected 2"):
        mem.memory_step(x._replace(free_gates=x3.free_gates), s)
    with pytest.raises(ValueError, match="read_modes has 3 heads, expected 2"):
        mem.memory_step(x._replace(read_modes=x3.read_modes), s)
    with pytest.raises(ValueError, match="read_weights has 2 heads, expected 3 read heads"):
        MemoryBank(num_slots=5, word_size=3, num_reads=3)(x3, s)
    with pytest.raises(ValueError, match="free_gates has 3 heads, expected 2"):
        mem.update_usage(s.usage, s.write_weights, x3.free_gates, s.read_weights)
    with pytest.raises(ValueError, match="read_modes has 3 heads, expected 2"):
        mem.read_weights(s.read_weights, s.read_weights, s.read_weights, x3.read_modes)


def test_bad_types_and_config_raise():
    x, s = _good()
    with pytest.raises(ValueError, match="prev_state must be a MemoryState"):
        mem.memory_step(x, tuple(s))
    with pytest.raises(ValueError, match="interface must be an Interface"):
        mem.memory_step(tuple(x), s)
    with pytest.raises(ValueError, match="either a MemoryConfig or sizes"):
        MemoryBank(MemoryConfig(), num_slots=3)
    with pytest.raises(ValueError, match="memory must be a torch.Tensor"):
        mem.read_memory([[1.0]], s.read_weights)


# --------------------------------------------------------------------------- benchmark


@pytest.mark.slow
def test_benchmark_quick_runs():
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "memory.py"
    res = subprocess.run(
        [sys.executable, str(script), "--quick", "--batch", "8"], capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stderr
    assert "faster per sample" in res.stdout


# --------------------------------------------------------------------------- bad input: a clear ValueError


def _standalone_args(gen):
    """Valid arguments for every standalone equation function (B=2, N=5, W=3, R=2), float64."""
    b, n, w, r = 2, 5, 3, 2
    s, x = random_state(b, n, w, r, gen), random_interface(b, n, w, r, gen)
    return {
        "cosine_similarity": (mem.cosine_similarity, {"memory": s.memory, "keys": x.read_keys}),
        "content_weights": (
            mem.content_weights,
            {"memory": s.memory, "keys": x.read_keys, "strengths": x.read_strengths},
        ),
        "retention": (mem.retention, {"free_gates": x.free_gates, "prev_read_weights": s.read_weights}),
        "update_usage": (
            mem.update_usage,
            {
                "prev_usage": s.usage,
                "prev_write_weights": s.write_weights,
                "free_gates": x.free_gates,
                "prev_read_weights": s.read_weights,
            },
        ),  # fmt: skip
        "allocation_weights": (mem.allocation_weights, {"usage": s.usage}),
        "write_weights": (
            mem.write_weights,
            {
                "allocation": s.write_weights,
                "write_content": s.write_weights,
                "allocation_gate": x.allocation_gate,
                "write_gate": x.write_gate,
            },
        ),  # fmt: skip
        "erase_and_add": (
            mem.erase_and_add,
            {
                "memory": s.memory,
                "write_weights": s.write_weights,
                "erase_vector": x.erase_vector,
                "write_vector": x.write_vector,
            },
        ),  # fmt: skip
        "update_precedence": (
            mem.update_precedence,
            {"prev_precedence": s.precedence, "write_weights": s.write_weights},
        ),
        "update_link": (
            mem.update_link,
            {"prev_link": s.link, "prev_precedence": s.precedence, "write_weights": s.write_weights},
        ),
        "directional_weights": (mem.directional_weights, {"link": s.link, "prev_read_weights": s.read_weights}),
        "read_weights": (
            mem.read_weights,
            {
                "content": s.read_weights,
                "forward": s.read_weights,
                "backward": s.read_weights,
                "read_modes": x.read_modes,
            },
        ),  # fmt: skip
        "read_memory": (mem.read_memory, {"memory": s.memory, "read_weights": s.read_weights}),
    }


def _replaced(kwargs, name, fn):
    return {**kwargs, name: fn(kwargs[name])}


# (function, argument, how to spoil it, what the message says)
SPOILED = [
    *[(f, "memory", lambda t: t.clone().index_fill_(1, torch.tensor([1]), float("nan")), "memory contains NaN")
      for f in ("cosine_similarity", "content_weights", "erase_and_add", "read_memory")],
    ("allocation_weights", "usage", lambda t: t + 1.5, r"usage must be in \[0.0, 1.0\]"),
    ("update_usage", "prev_usage", lambda t: t + 1.5, "prev_usage must be in"),
    ("update_usage", "free_gates", lambda t: t - 2.0, "free_gates must be in"),
    ("retention", "free_gates", lambda t: t + 1.5, "free_gates must be in"),
    ("write_weights", "write_gate", lambda t: t * 3.0 + 1.1, "write_gate must be in"),
    ("write_weights", "allocation_gate", lambda t: -t - 0.1, "allocation_gate must be in"),
    ("erase_and_add", "erase_vector", lambda t: t + 1.5, "erase_vector must be in"),
    ("read_weights", "read_modes", lambda t: t * 4.0, "read_modes must be in"),
    ("content_weights", "strengths", lambda t: -t, "strengths must be >= 0"),
    ("cosine_similarity", "keys", lambda t: t[:, :0], "heads must be >= 1"),
    ("read_memory", "read_weights", lambda t: t[:, :0], "heads must be >= 1"),
    ("retention", "prev_read_weights", lambda t: t[:0], "free_gates must have shape"),
    ("allocation_weights", "usage", lambda t: t[:0], "batch, slots"),
    ("cosine_similarity", "keys", lambda t: t.float(), "keys has dtype torch.float32 but memory has torch.float64"),
    ("update_link", "write_weights", lambda t: t.float(), "write_weights has dtype torch.float32 but prev_link"),
    ("allocation_weights", "usage", lambda t: (t > 0.5).long(), "usage must have a floating dtype"),
]  # fmt: skip


@pytest.mark.parametrize(("fn_name", "arg", "spoil", "match"), SPOILED)
def test_standalone_functions_reject_bad_values_dtypes_and_empty_dimensions(fn_name, arg, spoil, match):
    gen = torch.Generator().manual_seed(0)
    fn, kwargs = _standalone_args(gen)[fn_name]
    fn(**kwargs)  # the unspoiled call is fine
    kwargs = _replaced(kwargs, arg, spoil)
    before = {k: v.clone() for k, v in kwargs.items()}
    with pytest.raises(ValueError, match=match):
        fn(**kwargs)
    # nothing was written in place
    assert all(torch.allclose(v, before[k], rtol=0, atol=0, equal_nan=True) for k, v in kwargs.items())


def test_ranges_allow_float32_rounding():
    """A usage of 1 + 1 ulp (float32 rounding) is no mistake; 1 + 1e-3 is."""
    usage = torch.ones(1, 4).nextafter(torch.full((1, 4), 2.0))
    mem.allocation_weights(usage)
    with pytest.raises(ValueError, match="usage must be in"):
        mem.allocation_weights(usage + 1e-3)


def test_memory_step_names_mixed_dtypes_and_checks_ranges():
    gen = torch.Generator().manual_seed(1)
    b, n, w, r = 2, 5, 3, 2
    state, iface = random_state(b, n, w, r, gen), random_interface(b, n, w, r, gen)
    f32 = Interface(*(t.float() for t in iface))
    with pytest.raises(ValueError, match="read_keys has dtype torch.float32 but prev_state.memory has torch.float64"):
        mem.memory_step(f32, state)
    for field, value, match in (
        ("write_gate", iface.write_gate + 1.0, "write_gate must be in"),
        ("free_gates", -iface.free_gates, "free_gates must be in"),
        ("read_strengths", -iface.read_strengths, "read_strengths must be >= 0"),
        ("read_modes", iface.read_modes * 3, "read_modes must be in"),
    ):
        with pytest.raises(ValueError, match=match):
            mem.memory_step(iface._replace(**{field: value}), state)
    with pytest.raises(ValueError, match="prev_state.usage must be in"):
        mem.memory_step(iface, state._replace(usage=state.usage + 1.0))
    no_heads = state._replace(read_weights=state.read_weights[:, :0])
    with pytest.raises(ValueError, match="heads"):
        mem.memory_step(mem.split_interface(torch.zeros(b, mem.interface_size(w, 1)), w, 1), no_heads)


def test_split_interface_and_initial_state_reject_empty_batches_and_bad_dtypes():
    with pytest.raises(ValueError, match="batch, slots"):
        mem.split_interface(torch.zeros(0, mem.interface_size(3, 2)), 3, 2)
    with pytest.raises(ValueError, match="floating dtype"):
        mem.split_interface(torch.zeros(1, mem.interface_size(3, 2), dtype=torch.long), 3, 2)
    with pytest.raises(ValueError, match="dtype must be a floating"):
        mem.initial_state(1, 4, 3, 2, dtype=torch.int64)
    with pytest.raises(ValueError, match="device"):
        mem.initial_state(1, 4, 3, 2, device="nowhere")
    with pytest.raises(ValueError, match="floating"):
        mem.oneplus(torch.ones(2, dtype=torch.long))
