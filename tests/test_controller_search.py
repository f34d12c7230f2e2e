"""Tests for notebook 02's learning-rate search, per-length measurements and CPU timing
(memtutor.experiments.nb02_controller) and the CPU time that train_copy records."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch
from notebook_cells import parameters_cell

from memtutor.controller import (
    ControllerConfig,
    CopyTrainConfig,
    LSTMBaseline,
    MemoryController,
    baseline_hidden_size,
    evaluate_copy,
    train_copy,
)
from memtutor.experiments import nb02_controller as nb02
from memtutor.tasks import copy_task
from memtutor.utils import config_dict, generator, set_threads

ROOT = Path(__file__).resolve().parents[1]
TINY = ControllerConfig(input_size=3, output_size=2, hidden_size=6, num_slots=4, word_size=3, num_reads=1)
TINY_TRAIN = CopyTrainConfig(
    num_updates=3, batch_size=4, min_length=1, max_length=2, width=2, eval_every=3, eval_size=4
)

set_threads()


def test_train_copy_records_cpu_time_per_update():
    torch.manual_seed(0)
    res = train_copy(MemoryController(TINY), TINY_TRAIN)
    cpu, wall = res["update_cpu_seconds"], res["update_seconds"]
    assert cpu.shape == wall.shape == (3,)
    assert (cpu > 0).all() and (cpu <= wall + 0.05).all()  # one thread: CPU time cannot run far ahead of the clock


def _fake_points(values: dict) -> dict:
    """Search points with the given final validation errors: (name, lr, seed) -> value."""
    points = {}
    for (name, lr, seed), v in values.items():
        state = {"w": torch.tensor([lr, float(seed)], dtype=torch.float64)}
        points[name, lr, seed] = {name: {"val_bits_train": v / 10, "val_bits_long": v, "state_dict": state}}
    return points


def test_assemble_search_chooses_the_lowest_mean_validation_error_per_model(monkeypatch):
    monkeypatch.setattr(nb02, "LR_GRID", (1e-3, 1e-2, 1e-1))
    seeds = (0, 1)
    long = {
        "memory model": {1e-3: (5.0, 1.0), 1e-2: (2.0, 2.0), 1e-1: (9.0, 9.0)},  # means 3, 2, 9
        "LSTM": {1e-3: (4.0, 4.0), 1e-2: (4.0, 4.0), 1e-1: (5.0, 3.5)},
    }  # a tie: the smaller step wins
    points = _fake_points(
        {(n, lr, s): v[k] for n, d in long.items() for lr, v in d.items() for k, s in enumerate(seeds)}
    )
    out = nb02.assemble_search(points, seeds)
    assert out["memory model"]["chosen"] == 1e-2 and out["LSTM"]["chosen"] == 1e-3
    assert out["memory model"]["val_bits_long"].shape == (3, 2)
    torch.testing.assert_close(out["memory model"]["val_bits_long"][0], torch.tensor([5.0, 1.0]))
    torch.testing.assert_close(out["memory model"]["val_bits_train"][0], torch.tensor([0.5, 0.1]))
    assert out["memory model"]["state_dicts"]["1"]["w"].tolist() == [1e-2, 1.0]  # the chosen step's weights, per seed


def test_search_point_trains_the_named_model_at_the_step_size(monkeypatch):
    seen = []
    original = nb02.train_copy

    def spy(model, cfg, *, seed):
        seen.append((type(model).__name__, cfg.learning_rate, seed))
        return original(model, cfg, seed=seed)

    monkeypatch.setattr(nb02, "train_copy", spy)
    a = nb02.search_point("memory model", 3e-3, 1, TINY, TINY_TRAIN)
    b = nb02.search_point("LSTM", 1e-2, 2, TINY, TINY_TRAIN)
    assert seen == [("MemoryController", 3e-3, 1), ("LSTMBaseline", 1e-2, 2)]
    assert set(a) == {"memory model"} and set(b) == {"LSTM"}
    points = {(n, lr, 0): a if n == "memory model" else b for n in nb02.SEARCH_BUDGETS for lr in nb02.LR_GRID}
    search = nb02.assemble_search(points, (0,))
    assert isinstance(nb02.searched_models(search, TINY, "memory model")[0], MemoryController)
    assert isinstance(nb02.searched_models(search, TINY, "LSTM")[0], LSTMBaseline)
    with pytest.raises(ValueError, match="model_name"):
        nb02.search_point("GRU", 1e-3, 0, TINY, TINY_TRAIN)
    with pytest.raises(ValueError, match="budget"):
        nb02.searched_models({}, TINY, "GRU")


def test_first_failing_length():
    perfect = torch.tensor([[1.0, 0.95, 0.6, 0.4], [1.0, 1.0, 1.0, 0.95]])
    assert nb02.first_failing_length(perfect, [5, 6, 7, 8], 0.9) == [7, None]
    assert nb02.first_failing_length(perfect, [5, 6, 7, 8], 0.5) == [8, None]


def test_per_length_errors_match_evaluate_copy():
    torch.manual_seed(0)
    model = LSTMBaseline(3, 2, 5)
    bits, perfect = nb02.per_length_errors(model, [1, 3], 2, torch.Generator().manual_seed(4), 16)
    gen = torch.Generator().manual_seed(4)
    for k, length in enumerate((1, 3)):
        errors = evaluate_copy(model, copy_task(16, length, length, 2, generator=gen))
        assert bits[k] == pytest.approx(errors.mean().item())
        assert perfect[k] == pytest.approx((errors == 0).float().mean().item())


def test_heldout_per_sequence_agrees_with_heldout_bit_errors(capsys):
    torch.manual_seed(0)
    models = {s: {"memory model": MemoryController(TINY), "LSTM": LSTMBaseline(3, 2, 5)} for s in (0, 1)}
    batches = {"short": copy_task(6, 1, 2, 2, generator=torch.Generator().manual_seed(1))}
    per_seq = nb02.heldout_per_sequence(models, batches)
    means = nb02.heldout_bit_errors(models, batches)
    assert per_seq["LSTM", "short"].shape == (2, 6)
    for key in means:
        torch.testing.assert_close(per_seq[key].mean(1), means[key].to(per_seq[key].dtype))
    nb02.print_heldout_table({k: (v == 0).double().mean(1) for k, v in per_seq.items()}, ["l"], what="fraction")
    assert capsys.readouterr().out.startswith("fraction on held-out data")


def test_update_times_are_positive_and_cpu_not_above_wall():
    torch.manual_seed(0)
    t = nb02.update_times(LSTMBaseline(3, 2, 5), TINY_TRAIN, 3)
    assert set(t) == {"wall", "cpu"} and 0 < t["cpu"] <= t["wall"] + 0.05


def test_variant_point_measures_every_length_up_to_n_plus_4(monkeypatch):
    monkeypatch.setattr(nb02, "VARIANTS", {"N = 6": ({"num_slots": 6}, {"num_updates": 2})})
    monkeypatch.setattr(nb02, "PER_LENGTH_SIZE", 3)
    out = nb02.variant_point("N = 6", 0, TINY, TINY_TRAIN, 20_000)
    assert out["lengths"].tolist() == list(range(1, 11))
    assert out["bits"].shape == out["perfect"].shape == (10,)
    assembled = nb02.assemble_variants({("N = 6", 0): out, ("N = 6", 1): out}, (0, 1))
    assert assembled["N = 6"]["perfect"].shape == (2, 10)


def _notebook_configs() -> dict:
    cells = json.loads((ROOT / "notebooks" / "02_memory_controller.ipynb").read_text())["cells"]
    code = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
    build = next(src for src in code if src.lstrip().startswith("CONFIG = "))
    namespace = {"ControllerConfig": ControllerConfig, "CopyTrainConfig": CopyTrainConfig}
    for source in (parameters_cell("02_memory_controller.ipynb"), build):
        exec(compile(ast.parse(source), "notebook 02", "exec"), namespace)
    return namespace


def test_cached_search_and_variants_hold_the_config_of_the_notebook_defaults():
    ns = _notebook_configs()
    folder = ROOT / "notebooks" / "checkpoints"
    search = torch.load(folder / "02_lr_search.pt", weights_only=True)
    assert search["config"] == config_dict(nb02.search_config(ns["SEEDS"], ns["CONFIG"], ns["TRAIN"]))
    assert set(search["result"]["memory model"]["state_dicts"]) == {"0", "1", "2"}
    variants = torch.load(folder / "02_variants.pt", weights_only=True)
    want = nb02.variant_config(ns["SEEDS"], ns["CONFIG"], ns["TRAIN"], ns["TEST_SEED"])
    assert variants["config"] == config_dict(want)
    assert variants["result"]["N = 64"]["perfect"].shape == (3, 68)
    edge = torch.load(folder / "02_lstm_edge.pt", weights_only=True)
    assert edge["config"] == config_dict(nb02.lstm_edge_config(ns["SEEDS"], ns["CONFIG"], ns["TRAIN"]))
    assert edge["result"]["val_bits_long"].shape == (3,) and set(edge["result"]["state_dicts"]) == {"0", "1", "2"}


def test_lstm_edge_trains_the_search_lstm_one_step_past_the_grid(monkeypatch, tmp_path):
    assert nb02.LSTM_EDGE_LR > max(nb02.LR_GRID)
    seen = []
    original = nb02.search_point

    def spy(name, lr, seed, config, train):
        seen.append((name, lr, seed))
        return original(name, lr, seed, config, train)

    monkeypatch.setattr(nb02, "search_point", spy)
    monkeypatch.setenv("MEMTUTOR_CHECKPOINTS", str(tmp_path))
    out = nb02.load_lstm_edge((0, 1), TINY, TINY_TRAIN)
    assert seen == [("LSTM", nb02.LSTM_EDGE_LR, 0), ("LSTM", nb02.LSTM_EDGE_LR, 1)]
    assert out["val_bits_long"].shape == out["val_bits_train"].shape == (2,)
    lstm = LSTMBaseline(TINY.input_size, TINY.output_size, baseline_hidden_size(TINY))
    lstm.load_state_dict(out["state_dicts"]["1"])
    direct = nb02.search_point("LSTM", nb02.LSTM_EDGE_LR, 1, TINY, TINY_TRAIN)["LSTM"]
    assert float(out["val_bits_long"][1]) == direct["val_bits_long"]  # the same run, seeded the same way
    seen.clear()
    nb02.load_lstm_edge((0, 1), TINY, TINY_TRAIN)  # now cached: nothing trains
    assert seen == []


def test_new_seed_purposes_do_not_collide_with_the_other_streams():
    used = {generator(20_000, p).initial_seed() for p in (nb02.TEST_BY_LENGTH, nb02.TEST_EXAMPLE)}
    new = {generator(20_000, p).initial_seed() for p in (nb02.TEST_BEYOND, nb02.TEST_VARIANTS)}
    assert len(new) == 2 and not new & used and not new & {10_000, 1000, 1001, 1002}
