"""Every backend module against the network2-style reference, through the contract.

These tests call ``make_workspace`` / ``forward`` / ``gradient`` / ``train_epoch`` of
``fastbp/_contract.py`` directly, so the mini-batch order is the test's own and every
mini-batch can be replayed by the per-example reference (tests/reference.py):
parameters, velocity, update count, mini-batch costs and every statistic of SPEC
section 4, per mini-batch (record="batch") and per epoch (record="epoch").
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import (
    COST_RTOL,
    assert_layers_close,
    assert_stats_close,
    contract_setup,
    frac_units,
    run_train_epoch,
    stats_block_to_dict,
)
from reference import (
    HIDDEN_ACTIVATIONS,
    VALID_PAIRS,
    epoch_statistics,
    one_hot,
    statistics,
    step_statistics,
)

from fastbp._contract import (
    MOMENTUM_CONSTANT,
    MOMENTUM_NONE,
    MOMENTUM_SUTSKEVER,
    N_STATS,
    RECORD_BATCH,
    RECORD_EPOCH,
    RECORD_NONE,
    Hyper,
)

PAIR_IDS = ["-".join(p) for p in VALID_PAIRS]
SIZES = [4, 6, 5, 3]

# (name, Hyper kwargs, reference kwargs)
OPTIMISERS = {
    "sgd": (dict(momentum_kind=MOMENTUM_NONE), dict()),
    "momentum": (dict(momentum_kind=MOMENTUM_CONSTANT, mu=0.9), dict(momentum=0.9)),
    "nesterov": (dict(momentum_kind=MOMENTUM_CONSTANT, mu=0.9, nesterov=True),
                 dict(momentum=0.9, nesterov=True)),
    "sutskever": (dict(momentum_kind=MOMENTUM_SUTSKEVER, mu_max=0.8, period=2),
                  dict(schedule=(0.8, 2))),
    "sutskever-nesterov": (dict(momentum_kind=MOMENTUM_SUTSKEVER, mu_max=0.8, period=2,
                                nesterov=True), dict(schedule=(0.8, 2), nesterov=True)),
}


def _data(rng, n, sizes, output, scale=2.0):
    X = scale * rng.standard_normal((n, sizes[0]))
    if output == "linear":
        Y = rng.standard_normal((n, sizes[-1]))
    elif output == "softmax":
        Y = one_hot(rng.integers(0, sizes[-1], n), sizes[-1])
    else:
        Y = rng.uniform(0, 1, (n, sizes[-1]))
    return X, Y


def _replay(ref, X, Y, order, batch_size, eta, lmbda, **kw):
    w_start = [w.copy() for w in ref.weights]
    steps = ref.train_epoch(X, Y, order, batch_size, eta, lmbda, **kw)
    return w_start, steps


@pytest.mark.parametrize("pair", VALID_PAIRS, ids=PAIR_IDS)
@pytest.mark.parametrize("activation", HIDDEN_ACTIVATIONS)
def test_train_epoch_record_batch_equals_reference(backend_mod, rng, activation, pair):
    """One epoch of 5 mini-batches (the last one shorter) replayed example by example."""
    output, cost = pair
    # large weights saturate units; a linear output (regression) would diverge with them
    w_scale = 1.0 if output == "linear" else 2.0
    layout, params, ref = contract_setup(rng, SIZES, activation, output, cost, w_scale=w_scale)
    n, batch_size, lmbda = 23, 5, 2.0
    eta = 0.01 if output == "linear" else 0.1
    X, Y = _data(rng, n, SIZES, output)
    order = rng.permutation(n).astype(np.int64)
    velocity = np.zeros_like(params)
    hyper = Hyper(eta=eta, lmbda_n=lmbda / n, record=RECORD_BATCH)
    result, rec_batch, _, batch_cost, _ = run_train_epoch(
        backend_mod, layout, params, velocity, X, Y, order, batch_size, hyper)
    _, steps = _replay(ref, X, Y, order, batch_size, eta, lmbda)

    t, n_skipped, fault_batch, fault_layer, fault_phase = result
    assert (t, n_skipped, fault_batch) == (5, 0, -1)
    assert_layers_close(layout.weight_views(params), ref.weights, 1e-10, "W")
    assert_layers_close(layout.bias_views(params), ref.biases_1d, 1e-10, "b")
    assert not velocity.any(), "plain SGD must leave the velocity untouched"
    np.testing.assert_allclose(batch_cost, [s.trace.cost for s in steps], rtol=COST_RTOL)
    for k, step in enumerate(steps):
        assert_stats_close(stats_block_to_dict(rec_batch[k]), step_statistics(ref, step), 1e-10,
                           frac_unit=frac_units(SIZES, step.trace.m), what=f"batch {k}")


@pytest.mark.parametrize("opt", list(OPTIMISERS))
def test_train_epoch_optimisers_equal_reference(backend_mod, rng, opt):
    """Momentum, Nesterov and the Sutskever schedule over 3 epochs (velocity and t carried)."""
    hyper_kw, ref_kw = OPTIMISERS[opt]
    layout, params, ref = contract_setup(rng, SIZES, "tanh", "softmax", "log_likelihood")
    n, batch_size, eta, lmbda = 11, 4, 0.2, 1.5
    X, Y = _data(rng, n, SIZES, "softmax")
    velocity = np.zeros_like(params)
    t = 0
    for epoch in range(3):
        order = rng.permutation(n).astype(np.int64)
        hyper = Hyper(eta=eta, lmbda_n=lmbda / n, record=RECORD_BATCH, t=t, **hyper_kw)
        result, rec_batch, _, batch_cost, _ = run_train_epoch(
            backend_mod, layout, params, velocity, X, Y, order, batch_size, hyper)
        _, steps = _replay(ref, X, Y, order, batch_size, eta, lmbda, **ref_kw)
        t = result[0]
        assert t == ref.t == 3 * (epoch + 1)
        for k, step in enumerate(steps):
            assert_stats_close(stats_block_to_dict(rec_batch[k]), step_statistics(ref, step),
                               1e-10, frac_unit=frac_units(SIZES, step.trace.m),
                               what=f"epoch {epoch} batch {k}")
        np.testing.assert_allclose(batch_cost, [s.trace.cost for s in steps], rtol=COST_RTOL)
    assert_layers_close(layout.weight_views(params), ref.weights, 1e-10, "W")
    assert_layers_close(layout.bias_views(params), ref.biases_1d, 1e-10, "b")
    if opt != "sgd":
        assert_layers_close(layout.weight_views(velocity), ref.velocity_w, 1e-10, "v_W")
        assert_layers_close(layout.bias_views(velocity), [v.ravel() for v in ref.velocity_b],
                            1e-10, "v_b")


@pytest.mark.parametrize("pair", VALID_PAIRS, ids=PAIR_IDS)
@pytest.mark.parametrize("activation", ["sigmoid", "relu", "softsign"])
def test_train_epoch_record_epoch_equals_reference(backend_mod, rng, activation, pair):
    """Epoch reductions of SPEC section 4 (m-weighted mean gradient norms, mean gain,
    update ratio over the epoch, pooled activation and saturation statistics)."""
    output, cost = pair
    w_scale = 1.0 if output == "linear" else 2.0
    layout, params, ref = contract_setup(rng, SIZES, activation, output, cost, w_scale=w_scale)
    n, batch_size, lmbda = 26, 6, 1.0
    eta = 0.01 if output == "linear" else 0.1
    X, Y = _data(rng, n, SIZES, output)
    order = rng.permutation(n).astype(np.int64)
    velocity = np.zeros_like(params)
    hyper = Hyper(eta=eta, lmbda_n=lmbda / n, record=RECORD_EPOCH, momentum_kind=MOMENTUM_CONSTANT,
                  mu=0.5)
    result, _, rec_epoch, batch_cost, _ = run_train_epoch(
        backend_mod, layout, params, velocity, X, Y, order, batch_size, hyper)
    w_start, steps = _replay(ref, X, Y, order, batch_size, eta, lmbda, momentum=0.5)
    assert result[:3] == (5, 0, -1)
    expected = epoch_statistics(ref, steps, w_start, ref.weights)
    assert_stats_close(stats_block_to_dict(rec_epoch), expected, 1e-10,
                       frac_unit=frac_units(SIZES, n), what="epoch")
    np.testing.assert_allclose(batch_cost, [s.trace.cost for s in steps], rtol=COST_RTOL)
    # the reductions differ from a plain mean of the per-batch values: the check has teeth
    per_batch_speed = np.mean([statistics(ref, s.trace)["speed"] for s in steps], axis=0)
    assert not np.allclose(per_batch_speed, expected["speed"], rtol=1e-3)


@pytest.mark.parametrize("record", [RECORD_BATCH, RECORD_EPOCH], ids=["batch", "epoch"])
def test_train_epoch_in_chunks_equals_one_call(backend_mod, rng, record):
    """An epoch run as several chunks of mini-batches gives the same bits as one call."""
    layout, params, _ = contract_setup(rng, SIZES, "sigmoid", "sigmoid", "cross_entropy")
    n, batch_size = 29, 4
    X, Y = _data(rng, n, SIZES, "sigmoid")
    order = rng.permutation(n).astype(np.int64)
    p1, p2 = params.copy(), params.copy()
    v1, v2 = np.zeros_like(params), np.zeros_like(params)
    kw = dict(eta=0.5, lmbda_n=0.01, record=record, momentum_kind=MOMENTUM_SUTSKEVER, mu_max=0.9,
              period=3, nesterov=True)
    r1, rb1, re1, bc1, _ = run_train_epoch(backend_mod, layout, p1, v1, X, Y, order, batch_size,
                                           Hyper(**kw))
    r2, rb2, re2, bc2, _ = run_train_epoch(backend_mod, layout, p2, v2, X, Y, order, batch_size,
                                           Hyper(**kw), chunks=[0, 3, 4, 8])
    assert r1 == r2
    np.testing.assert_array_equal(p1, p2)
    np.testing.assert_array_equal(v1, v2)
    np.testing.assert_array_equal(bc1, bc2)
    if record == RECORD_BATCH:
        np.testing.assert_array_equal(rb1, rb2)
    else:
        np.testing.assert_array_equal(re1, re2)


def test_train_epoch_record_none_same_parameters(backend_mod, rng):
    """record=None computes no statistics but updates exactly as with statistics."""
    layout, params, _ = contract_setup(rng, SIZES, "relu", "linear", "quadratic")
    n = 17
    X, Y = _data(rng, n, SIZES, "linear")
    order = rng.permutation(n).astype(np.int64)
    results = []
    for record in (RECORD_NONE, RECORD_BATCH, RECORD_EPOCH):
        p, v = params.copy(), np.zeros_like(params)
        hyper = Hyper(eta=0.05, lmbda_n=0.1, record=record, momentum_kind=MOMENTUM_CONSTANT, mu=0.7)
        run_train_epoch(backend_mod, layout, p, v, X, Y, order, 5, hyper)
        results.append((p, v))
    for p, v in results[1:]:
        np.testing.assert_array_equal(p, results[0][0])
        np.testing.assert_array_equal(v, results[0][1])


@pytest.mark.parametrize("m_max", [3, 7, 40], ids=lambda m: f"chunk{m}")
@pytest.mark.parametrize("pair", VALID_PAIRS, ids=PAIR_IDS)
def test_gradient_equals_reference(backend_mod, rng, pair, m_max):
    """``gradient()`` over a set (processed in chunks of m_max rows) and its probe statistics."""
    output, cost = pair
    layout, params, ref = contract_setup(rng, SIZES, "tanh", output, cost, w_scale=3.0)
    n = 20
    X, Y = _data(rng, n, SIZES, output)
    ws = backend_mod.make_workspace(layout, m_max)
    grad = np.full(layout.n_params, np.nan)
    stats = np.full((N_STATS, layout.L), -7.0)
    cost_value, fault_layer, fault_phase = backend_mod.gradient(layout, ws, params, X, Y, grad,
                                                                stats)
    trace = ref.evaluate(X, Y)
    assert (fault_layer, fault_phase) == (-1, -1)
    assert cost_value == pytest.approx(trace.cost, rel=COST_RTOL)
    assert_layers_close(layout.weight_views(grad), trace.nabla_w, 1e-10, "dW")
    assert_layers_close(layout.bias_views(grad), trace.nabla_b, 1e-10, "db")
    assert_stats_close(stats_block_to_dict(stats), statistics(ref, trace), 1e-10,
                       frac_unit=frac_units(SIZES, n), what="probe")


@pytest.mark.parametrize("m_max", [4, 50], ids=lambda m: f"chunk{m}")
@pytest.mark.parametrize("pair", VALID_PAIRS, ids=PAIR_IDS)
def test_forward_equals_reference(backend_mod, rng, pair, m_max):
    output, cost = pair
    layout, params, ref = contract_setup(rng, SIZES, "softsign", output, cost)
    n = 13
    X, Y = _data(rng, n, SIZES, output)
    ws = backend_mod.make_workspace(layout, m_max)
    out = np.full((n, SIZES[-1]), np.nan)
    c = backend_mod.forward(layout, ws, params, X, out, Y)
    np.testing.assert_allclose(out, ref.feedforward_batch(X), rtol=1e-12, atol=1e-15)
    assert c == pytest.approx(ref.evaluate(X, Y).cost, rel=COST_RTOL)
    assert np.isnan(backend_mod.forward(layout, ws, params, X, out))


def test_workspace_smaller_than_batch_is_refused(backend_mod, rng):
    """A batch larger than the workspace must not be processed (no out-of-bounds writes)."""
    layout, params, _ = contract_setup(rng, SIZES, "sigmoid", "sigmoid", "cross_entropy")
    X, Y = _data(rng, 10, SIZES, "sigmoid")
    ws = backend_mod.make_workspace(layout, 2)
    with pytest.raises(ValueError):
        backend_mod.train_epoch(layout, ws, params, np.zeros_like(params), X, Y,
                                np.arange(10, dtype=np.int64), 5, 0, 2, Hyper(eta=0.1),
                                np.empty((2, N_STATS, layout.L)), np.empty((N_STATS, layout.L)),
                                np.empty(2))


# ---------------------------------------------------------------------------
# Non-finite values and tiny norms, per backend module (every compiled variant)
# ---------------------------------------------------------------------------

BIG = 2.0 ** 600


def _linear_layout(sizes, weights, biases):
    from fastbp._contract import Layout

    L = len(sizes) - 1
    layout = Layout(sizes, ["linear"] * L, "quadratic", np.dtype("float64"))
    params = np.zeros(layout.n_params)
    for view, w in zip(layout.weight_views(params), weights, strict=True):
        view[...] = w
    for view, b in zip(layout.bias_views(params), biases, strict=True):
        view[...] = b
    return layout, params


def _forward_fault():
    """z of layer 2 = BIG * BIG overflows (see tests/test_nonfinite.py)."""
    return _linear_layout([2, 2, 2, 2], [np.eye(2), BIG * np.eye(2), BIG * np.eye(2)],
                          [np.zeros(2)] * 3), np.ones((3, 2)), np.zeros((3, 2))


def _backward_fault():
    """Exact finite forward pass; delta of layer 0 = inf - inf (see tests/test_nonfinite.py)."""
    M = np.array([[BIG, -BIG], [BIG, -BIG]])
    return _linear_layout([1, 2, 2, 2, 1], [np.zeros((2, 1)), M, M, np.array([[1.0, 2.0]])],
                          [np.array([0.5, 0.5]), np.array([0.25, 0.25]),
                           np.array([0.5, -0.25]), np.array([0.75])]), np.ones((2, 1)), \
        np.zeros((2, 1))


@pytest.mark.parametrize("case,layer,phase", [(_forward_fault, 2, 0), (_backward_fault, 0, 1)],
                         ids=["forward", "backward"])
def test_faults_are_located(backend_mod, case, layer, phase):
    """SPEC section 5: the phase and the layer of the first non-finite value, parameters
    untouched, in train_epoch and in gradient()."""
    from fastbp._contract import PHASE_BACKWARD, PHASE_FORWARD

    assert (PHASE_FORWARD, PHASE_BACKWARD) == (0, 1)
    (layout, params), X, Y = case()
    before = params.copy()
    n = len(X)
    velocity = np.zeros_like(params)
    result, _, _, _, _ = run_train_epoch(backend_mod, layout, params, velocity, X, Y,
                                         np.arange(n, dtype=np.int64), n,
                                         Hyper(eta=0.1, record=RECORD_BATCH))
    t, n_skipped, fault_batch, fault_layer, fault_phase = result
    assert (t, n_skipped, fault_batch) == (0, 0, 0)
    assert (fault_layer, fault_phase) == (layer, phase), (
        f"fault reported at layer {fault_layer}, phase {fault_phase}")
    np.testing.assert_array_equal(params, before)
    ws = backend_mod.make_workspace(layout, n)
    grad = np.zeros(layout.n_params)
    stats = np.zeros((N_STATS, layout.L))
    _, g_layer, g_phase = backend_mod.gradient(layout, ws, params, X, Y, grad, stats)
    assert (g_layer, g_phase) == (layer, phase), (
        f"gradient() reported layer {g_layer}, phase {g_phase}")


def test_skip_at_contract_level(backend_mod):
    """skip_nonfinite: the faulty mini-batch's row is NaN except nonfinite = 1, its cost NaN,
    parameters, velocity and t untouched; the good mini-batches are applied."""
    layout, params = _linear_layout([1, 1], [np.array([[1.0]])], [np.array([0.0])])
    X = np.array([[1.0], [1.0], [1.0]])
    Y = np.zeros((3, 1))
    velocity = np.zeros_like(params)
    hyper = Hyper(eta=1e200, record=RECORD_BATCH, skip_nonfinite=True,
                  momentum_kind=MOMENTUM_CONSTANT, mu=0.5)
    result, rec_batch, _, batch_cost, _ = run_train_epoch(
        backend_mod, layout, params, velocity, X, Y, np.arange(3, dtype=np.int64), 1, hyper)
    t, n_skipped, fault_batch, _, _ = result
    assert (t, n_skipped, fault_batch) == (1, 2, -1)
    np.testing.assert_array_equal(params, [1.0 - 1e200, -1e200])
    np.testing.assert_array_equal(velocity, [-1e200, -1e200])
    assert batch_cost[0] == 0.5 and np.all(np.isnan(batch_cost[1:]))
    from fastbp._contract import S_NONFINITE

    for k in (1, 2):
        row = rec_batch[k]
        np.testing.assert_array_equal(row[S_NONFINITE], 1.0)
        assert np.all(np.isnan(np.delete(row, S_NONFINITE, axis=0)))
    assert rec_batch[0][S_NONFINITE, 0] == 0.0


def test_deep_sigmoid_tiny_norms(backend_mod):
    """300 sigmoid layers of width 5: speeds down to ~1e-230 (their squares underflow);
    every norm-based statistic equals the reference to 1e-6, none is zero."""
    sizes = [5] * 300 + [2]
    rng = np.random.default_rng(1)
    layout, params, ref = contract_setup(rng, sizes, "sigmoid", "sigmoid", "cross_entropy")
    X = rng.standard_normal((10, 5))
    Y = one_hot(rng.integers(0, 2, 10), 2)
    trace = ref.evaluate(X, Y)
    expected = statistics(ref, trace)
    assert expected["speed"].min() < 1e-160 and expected["speed"].min() > 1e-300
    ws = backend_mod.make_workspace(layout, 10)
    grad = np.zeros(layout.n_params)
    stats = np.zeros((N_STATS, layout.L))
    backend_mod.gradient(layout, ws, params, X, Y, grad, stats)
    got = stats_block_to_dict(stats)
    for name in ("speed", "grad_norm", "gain"):
        ok = ~np.isnan(expected[name])
        assert np.all(got[name][ok] > 0), f"{name} is 0 in layers {np.where(got[name] == 0)[0]}"
        np.testing.assert_allclose(got[name][ok], expected[name][ok], rtol=1e-6, err_msg=name)
    # and during training, per mini-batch (record="batch")
    velocity = np.zeros_like(params)
    _, rec_batch, _, _, _ = run_train_epoch(backend_mod, layout, params, velocity, X, Y,
                                            np.arange(10, dtype=np.int64), 10,
                                            Hyper(eta=1e-3, record=RECORD_BATCH))
    row = stats_block_to_dict(rec_batch[0])
    np.testing.assert_allclose(row["speed"], expected["speed"], rtol=1e-6)
    np.testing.assert_allclose(row["grad_norm"], expected["grad_norm"], rtol=1e-6)
