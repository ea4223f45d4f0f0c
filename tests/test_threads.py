"""Threads (issue 6): the GIL is released during compiled work, networks train in
parallel threads with the same results as one after the other, and one network used
from several threads at once stays correct (its calls are serialised)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import fastbp
from fastbp import _contract as C
from fastbp._backends import get_backend

JOIN = 60.0  # seconds: a deadlock fails the test instead of hanging the suite


def _problem(n, n_in, n_out, seed):
    g = np.random.default_rng(seed)
    return g.standard_normal((n, n_in)), g.integers(0, n_out, n)


def test_python_thread_runs_during_one_compiled_call(backend):
    """While one ``train_epoch`` call runs (a single call, no Python in between), another
    Python thread keeps making progress: the GIL is released for the computation."""
    be = get_backend(backend)
    sizes = [64, 128, 128, 10]
    lay = C.Layout(sizes, ["tanh", "tanh", "softmax"], "log_likelihood", np.float64)
    g = np.random.default_rng(0)
    params = g.standard_normal(lay.n_params) * 0.1
    velocity = np.zeros_like(params)
    n = {"numpy": 1000, "numba": 5000}.get(backend, 20000)  # calls of ~0.3 s
    X, y = _problem(n, sizes[0], sizes[-1], 1)
    Y = np.eye(sizes[-1])[y]
    order = np.arange(len(X), dtype=np.int64)
    batch = 8
    nb = -(-len(X) // batch)
    ws = be.make_workspace(lay, batch)
    stamps = []
    done = threading.Event()

    def counter():  # a timestamp every 64 iterations of pure Python
        i = 0
        while not done.is_set():
            i += 1
            if i % 64 == 0:
                stamps.append(time.perf_counter())

    t = threading.Thread(target=counter)
    t.start()
    try:
        time.sleep(0.01)
        t0 = time.perf_counter()
        be.train_epoch(lay, ws, params, velocity, X, Y, order, batch, 0, nb,
                       C.Hyper(eta=0.01, record=C.RECORD_BATCH),
                       np.empty((nb, C.N_STATS, lay.L)), np.empty((C.N_STATS, lay.L)),
                       np.empty(nb))
        t1 = time.perf_counter()
    finally:
        done.set()
        t.join(JOIN)
    span = t1 - t0
    inside = [s for s in stamps if t0 + 0.1 * span < s < t1 - 0.1 * span]
    assert span > 0.02, f"the call was too short ({span:.3f} s) to show anything"
    print(f"{backend}: one call of {span:.3f} s, {64 * len(inside)} iterations elsewhere")
    # with the GIL held for the whole call, the counter could not run at all in there
    assert len(inside) >= 20, f"{64 * len(inside)} iterations of the other thread in {span:.3f} s"


def _train(seed, dtype, record="batch"):
    X, y = _problem(120, 6, 3, seed)
    net = fastbp.Network([6, 16, 12, 3], activation="relu", output="softmax",
                         cost="log_likelihood", init="he_normal", dtype=dtype, seed=seed)
    h = net.fit(X, y, epochs=3, batch_size=8, eta=0.05, momentum=0.9, nesterov=True,
                record=record, validation=(X[:30], y[:30]), probe=(X[:20], y[:20]),
                seed=seed)
    return net, h


def test_two_networks_in_two_threads_equal_sequential(backend, dtype):
    sequential = [_train(s, dtype) for s in (1, 2)]
    results = {}
    errors = []
    barrier = threading.Barrier(2)

    def work(s):
        try:
            with fastbp.use_backend(backend):  # a new thread starts from an empty context
                barrier.wait()
                results[s] = _train(s, dtype)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s,)) for s in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(JOIN)
    assert not errors, errors
    for s, (net, h) in zip((1, 2), sequential):
        got_net, got_h = results[s]
        np.testing.assert_array_equal(got_net.params, net.params)
        np.testing.assert_array_equal(got_net.velocity, net.velocity)
        assert got_h == h


def test_one_network_shared_by_threads(backend):
    """Concurrent calls on one Network are serialised: each gives the same result as alone
    (they share the network's workspaces)."""
    X, y = _problem(3000, 6, 3, 0)
    net = fastbp.Network([6, 32, 3], output="softmax", cost="log_likelihood", seed=0)
    expected_out = net.forward(X)
    expected_cost = net.cost(X, y)
    expected_grad = net.gradient(X[:500], y[:500]).flat.copy()
    errors = []

    def work(i):
        try:
            with fastbp.use_backend(backend):
                for _ in range(5):
                    if i % 3 == 0:
                        np.testing.assert_array_equal(net.forward(X), expected_out)
                    elif i % 3 == 1:
                        assert net.cost(X, y) == expected_cost
                    else:
                        np.testing.assert_array_equal(net.gradient(X[:500], y[:500]).flat,
                                                      expected_grad)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(JOIN)
    assert not errors, errors


def test_fit_and_predict_from_two_threads(backend):
    """A thread predicting while another trains the same network waits for the training
    to finish (fit holds the network's lock), and sees its final parameters."""
    X, y = _problem(400, 6, 3, 0)
    net = fastbp.Network([6, 16, 3], output="softmax", cost="log_likelihood", seed=0)
    twin = fastbp.Network([6, 16, 3], output="softmax", cost="log_likelihood", seed=0)
    twin.fit(X, y, epochs=3, batch_size=4, eta=0.1, seed=0)
    started = threading.Event()
    outputs = []

    def trainer():
        with fastbp.use_backend(backend):
            with net._lock:  # make sure fit starts before the reader asks
                started.set()
                net.fit(X, y, epochs=3, batch_size=4, eta=0.1, seed=0)

    def reader():
        started.wait(JOIN)
        with fastbp.use_backend(backend):
            outputs.append(net.forward(X))

    threads = [threading.Thread(target=trainer), threading.Thread(target=reader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(JOIN)
    assert len(outputs) == 1
    np.testing.assert_array_equal(outputs[0], twin.forward(X))


@pytest.mark.parametrize("n_threads", [2, 4])
def test_many_networks_many_threads(n_threads):
    """Default backend, several threads, each with its own network: no crash, same bits."""
    expected = [_train(s, "float32", record="epoch")[0].params for s in range(n_threads)]
    got = [None] * n_threads

    def work(i):
        got[i] = _train(i, "float32", record="epoch")[0].params

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(JOIN)
    for e, g in zip(expected, got):
        np.testing.assert_array_equal(g, e)
