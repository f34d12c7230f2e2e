"""Tests for the experiment functions of notebook 04 (memtutor.experiments.nb04_meta: the oracle, the
per-seed sinusoid evaluation) and notebook 09 (memtutor.experiments.nb09_meta_controller: the
validation/held-out mask split, the controller snapshots, the choice on validation masks and the linear
probe), and their diagrams."""

from __future__ import annotations

import pytest
import torch

from memtutor import meta
from memtutor.controller import ControllerConfig, MemoryController
from memtutor.experiments import nb04_meta as nb04
from memtutor.experiments import nb09_meta_controller as nb09
from memtutor.utils import set_threads

set_threads()
TINY_CTRL = ControllerConfig(input_size=5, output_size=4, hidden_size=8, num_slots=6, word_size=4, num_reads=1)
TINY_META = dict(meta_batch=2, n_support=3, n_query=3, width=4, n_heldout=3, n_val=3, max_length=3)


def _tiny_controller(seed=0):
    torch.manual_seed(seed)
    return MemoryController(TINY_CTRL)


def _tiny_tasks(n=2, seed=0):
    return meta.xor_copy_tasks(meta.xor_masks(4)[:n], 4, 4, max_length=3, generator=torch.Generator().manual_seed(seed))


def test_oracle_inputs_append_amplitude_and_phase():
    b = meta.sample_sinusoid_tasks(3, 4, 2, generator=torch.Generator().manual_seed(0))
    x = nb04.oracle_inputs(b.x_support, b.amplitude, b.phase)
    assert x.shape == (3, 4, 3)
    torch.testing.assert_close(x[..., 0], b.x_support[..., 0])
    torch.testing.assert_close(x[1, :, 1], b.amplitude[1].expand(4))
    torch.testing.assert_close(x[2, :, 2], b.phase[2].expand(4))
    with pytest.raises(ValueError, match="oracle_inputs"):
        nb04.oracle_inputs(b.x_support, b.amplitude[:2], b.phase)


def test_the_oracle_learns_what_the_pretrained_model_cannot():
    """Given amplitude and phase, plain regression fits each task; without them it cannot."""
    cfg = nb04.SineConfig(meta_steps=400, meta_batch=10, hidden=32, meta_lr=3e-3)
    models = {}
    for m in ("oracle", "pretrained"):
        models[m] = meta.make_sine_mlp(32, in_features=3 if m == "oracle" else 1)
        models[m].load_state_dict(nb04.train_sine_model(m, cfg, seed=0)["model"])
    out = nb04.sine_evaluation(
        models, shots=(5,), n_tasks=50, n_query=20, max_steps=1, inner_lr=0.01, baseline_lrs=(0.01,),
        eval_seed=3, val_seed=4, n_val_tasks=10,
    )  # fmt: skip
    assert out["oracle"]["5"].mean() < 0.5 * out["curves"]["pretrained/5"][:, 0].mean()


def test_sine_evaluation_scores_the_documented_quantities():
    torch.manual_seed(0)
    models = {"maml": meta.make_sine_mlp(8), "pretrained": meta.make_sine_mlp(8)}
    lrs = (0.001, 0.01, 0.1)
    out = nb04.sine_evaluation(
        models, shots=(3, 6), n_tasks=7, n_query=5, max_steps=2, inner_lr=0.01, baseline_lrs=lrs, eval_seed=5,
        val_seed=6, n_val_tasks=4,
    )  # fmt: skip
    held = nb04.sine_heldout_tasks((3, 6), 7, 5, eval_seed=5)
    assert held[6].x_support.shape == (7, 6, 1)
    for k in (3, 6):
        torch.testing.assert_close(out["zero"][str(k)], (held[k].y_query ** 2).mean((1, 2)))
        p = dict(models["maml"].named_parameters())
        direct = meta.adaptation_curve(models["maml"], p, held[k], inner_lr=0.01, max_steps=2)
        torch.testing.assert_close(out["curves"][f"maml/{k}"], direct)
        val = nb04.sine_val_tasks(k, 4, 5, val_seed=6)
        pb = dict(models["pretrained"].named_parameters())
        scores = torch.stack(
            [meta.adaptation_curve(models["pretrained"], pb, val, inner_lr=lr, max_steps=2).mean(0)[1:].mean()
             for lr in lrs]
        )  # fmt: skip
        torch.testing.assert_close(out["sweep"][str(k)], scores)
        best = lrs[int(scores.argmin())]
        tuned = meta.adaptation_curve(models["pretrained"], pb, held[k], inner_lr=best, max_steps=2)
        torch.testing.assert_close(out["tuned"][str(k)], tuned)


def test_sine_file_names_the_seed_and_rejects_bad_ones():
    assert nb04.sine_file("oracle", 2) == "04_sine_oracle_seed2.pt"
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="seed"):
            nb04.sine_file("maml", bad)
    with pytest.raises(ValueError, match="unknown evaluation settings"):
        nb04.sine_eval_config(0, {}, shot=(5,))


def test_controller_masks_are_disjoint_and_cover_every_mask():
    cfg = nb09.ControllerMetaConfig()
    train, val, held = nb09.controller_masks(cfg)
    assert (len(train), len(val), len(held)) == (192, 32, 32)
    sets = [{tuple(m.tolist()) for m in x} for x in (train, val, held)]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert len(sets[0] | sets[1] | sets[2]) == 256
    _, held_before = nb09.split_xor_masks(cfg.width, cfg.n_heldout, cfg.mask_seed)
    torch.testing.assert_close(held, held_before)  # the held-out masks do not depend on n_val


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"snapshots": (150,)}, "snapshots"), ({"snapshots": [50]}, "snapshots"), ({"n_val": 230}, "n_val")],
)
def test_controller_meta_config_rejects_bad_snapshots_and_splits(kwargs, match):
    with pytest.raises(ValueError, match=match):
        nb09.ControllerMetaConfig(**kwargs)


def test_training_never_sees_a_validation_or_held_out_mask(monkeypatch):
    cfg = nb09.ControllerMetaConfig(meta_steps=2, snapshots=(1,), **TINY_META)
    train, val, held = nb09.controller_masks(cfg)
    seen = []
    real = nb09.xor_copy_tasks

    def spy(masks, *args, **kwargs):
        seen.extend(tuple(m.tolist()) for m in masks)
        return real(masks, *args, **kwargs)

    monkeypatch.setattr(nb09, "xor_copy_tasks", spy)
    nb09.train_controller_init("joint", _tiny_controller(), cfg, seed=0)
    assert seen and set(seen) <= {tuple(m.tolist()) for m in train}


@pytest.mark.slow
def test_a_snapshot_is_the_controller_after_that_many_updates():
    long = nb09.ControllerMetaConfig(meta_steps=3, snapshots=(2,), **TINY_META)
    short = nb09.ControllerMetaConfig(meta_steps=2, snapshots=(1,), **TINY_META)
    a = nb09.train_controller_init("maml", _tiny_controller(), long, seed=0)
    b = nb09.train_controller_init("maml", _tiny_controller(), short, seed=0)
    assert set(a["snapshots"]) == {"2"}
    for k, v in b["controller"].items():
        torch.testing.assert_close(a["snapshots"]["2"][k], v)
    assert not torch.equal(a["snapshots"]["2"]["output.weight"], a["controller"]["output.weight"])


def test_head_only_false_adapts_more_than_the_head():
    tasks = _tiny_tasks()
    head = nb09.controller_adaptation_curves(_tiny_controller(), tasks, inner_lr=0.3, max_steps=2)
    every = nb09.controller_adaptation_curves(_tiny_controller(), tasks, inner_lr=0.3, max_steps=2, head_only=False)
    torch.testing.assert_close(head["loss"][:, 0], every["loss"][:, 0])  # the same start
    assert not torch.allclose(head["loss"][:, 1:], every["loss"][:, 1:])


def test_select_and_test_picks_the_best_validation_candidate():
    val, test = _tiny_tasks(2, 0), _tiny_tasks(3, 1)
    candidates = {"1": _tiny_controller(1), "2": _tiny_controller(2)}
    out = nb09.controller_select_and_test(
        candidates, val, test, train_lr=0.1, max_steps=3, val_steps=2, head_lrs=(0.01, 1.0), all_lrs=(0.1,)
    )
    assert set(out["val"]) == {"head|0.01|1", "head|1|1", "head|0.01|2", "head|1|2", "all|0.1|2"}
    scores = {k: v[1:].mean().item() for k, v in out["val"].items()}
    assert out["choice"] == min(scores, key=scores.get)
    mode, lr, updates = nb09.parse_choice(out["choice"])
    direct = nb09.controller_adaptation_curves(
        candidates[str(updates)], test, inner_lr=lr, max_steps=3, head_only=mode == "head"
    )
    torch.testing.assert_close(out["test"]["bits"], direct["bits"])
    default = nb09.controller_adaptation_curves(candidates["2"], test, inner_lr=0.1, max_steps=3)
    torch.testing.assert_close(out["test_default"]["loss"], default["loss"])
    assert out["test"]["bits"].shape == (3, 4)


def test_output_features_are_what_the_output_layer_reads():
    c = _tiny_controller()
    x = _tiny_tasks().x_support[0]
    feats = nb09.output_features(c, x)
    with torch.no_grad():
        torch.testing.assert_close(c.output(feats), c(x)[0])


def test_probe_fits_at_least_as_well_as_the_controllers_own_read_out():
    """A read-out fitted to the sequences can only do better than the one the controller has, there."""
    c = _tiny_controller()
    tasks = _tiny_tasks()
    fitted = nb09.probe_wrong_bits(c, tasks, steps=300, lr=0.05)
    with torch.no_grad():
        own = torch.stack(
            [meta.packed_bits_error(c(x)[0], y) for x, y in zip(tasks.x_support, tasks.y_support, strict=True)]
        )
    assert fitted.shape == (2,) and (fitted <= own).all(), (fitted, own)


def test_the_diagram_names_what_the_notebook_names():
    """The θ -> φ_i picture labels θ, φ_i, the inner and outer steps and Reptile's ε, as the equations do."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = nb04.draw_maml_geometry()
    try:
        text = " ".join(t.get_text() for ax in fig.axes for t in ax.texts)
        for symbol in (r"\theta", r"\varphi_1", r"\varphi_3", r"\alpha", r"\beta", r"\varepsilon", r"H^{\mathrm{sup}}"):
            assert symbol in text, symbol
        assert "first-order MAML" in text and "Reptile" in text
    finally:
        plt.close(fig)


def test_controller_diagram_labels_body_head_and_both_steps():
    """The controller picture names theta_body, theta_head, phi_i and the inner and outer steps, as the
    equations of notebook 09 do."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = nb09.draw_controller_maml()
    try:
        text = " ".join(t.get_text() for ax in fig.axes for t in ax.texts)
        for symbol in (r"\theta_{\mathrm{body}}", r"\theta_{\mathrm{head}}", r"\varphi_{i}", r"\alpha", r"\beta",
                       "M_t", "[h_t, r_t]", r"\mathcal{L}^{\mathrm{sup}}_i"):  # fmt: skip
            assert symbol in text, symbol
        assert "inner step" in text and "outer step on every parameter" in text
    finally:
        plt.close(fig)
