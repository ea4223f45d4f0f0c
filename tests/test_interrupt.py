"""Ctrl-C (SIGINT) during ``fit`` (issue 6, "Interruption").

``fit`` runs each epoch as short compiled calls and defers SIGINT to the boundaries
between them.  An interrupted ``fit`` raises ``fastbp.TrainingInterrupted`` (a
``KeyboardInterrupt``) within about one mini-batch, the network holds exactly the
parameters after the last completed mini-batch (checked against a replay through
the backend contract) and the exception's History holds the completed part.

The end-to-end test runs ``fit`` in a child process that reports when it is inside
``fit``, interrupts it with a real SIGINT and bounds the wait (a hang fails the
test, it does not hang the suite).  The latency itself is measured by
``benchmarks/test_interrupt_latency.py``.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import fastbp
from fastbp import _contract as C
from fastbp._backends import get_backend

HANG_BOUND = 10.0  # seconds


def _problem(n, n_in, n_out, seed=0, dtype="float64"):
    g = np.random.default_rng(seed)
    X = g.standard_normal((n, n_in)).astype(dtype)
    y = g.integers(0, n_out, n)
    return X, y


def replay(backend_name, net0, X, y, seed, epoch, batch, batch_size, eta, momentum=0.0):
    """Parameters after ``epoch`` whole epochs and ``batch`` mini-batches of the next one,
    through the backend contract: fit's orders are one Generator(PCG64(seed)), one
    permutation per epoch."""
    be = get_backend(backend_name)
    lay = net0.layout
    params = net0.params.copy()
    velocity = np.zeros_like(params)
    n = len(X)
    Y = np.eye(lay.sizes[-1], dtype=lay.dtype)[y]
    Xc = np.ascontiguousarray(X, dtype=lay.dtype)
    ws = be.make_workspace(lay, batch_size)
    g = np.random.Generator(np.random.PCG64(seed))
    nb = -(-n // batch_size)
    kind = C.MOMENTUM_CONSTANT if momentum else C.MOMENTUM_NONE
    hyper = C.Hyper(eta=eta, momentum_kind=kind, mu=momentum, mu_max=momentum,
                    record=C.RECORD_NONE)
    for e in range(epoch + 1):
        order = g.permutation(n).astype(np.int64)
        stop = nb if e < epoch else batch
        if stop == 0:
            break
        out = be.train_epoch(lay, ws, params, velocity, Xc, Y, order, batch_size, 0, stop,
                             hyper, np.empty((0, C.N_STATS, lay.L)),
                             np.empty((C.N_STATS, lay.L)), np.empty(stop))
        hyper.t = out[0]
    return params, velocity, hyper.t


def _check_interrupted_state(backend_name, net, net0, err, X, y, seed, batch_size, eta,
                             momentum=0.0):
    nb = -(-len(X) // batch_size)
    assert isinstance(err, KeyboardInterrupt)
    assert net.n_updates == err.epoch * nb + err.batch
    h = err.history
    assert len(h.epoch) == err.epoch
    assert len(h.batch) == net.n_updates  # record="batch": every completed mini-batch
    assert np.all(np.isfinite(h.batch["cost"]))
    params, velocity, t = replay(backend_name, net0, X, y, seed, err.epoch, err.batch,
                                 batch_size, eta, momentum)
    assert t == net.n_updates
    np.testing.assert_array_equal(net.params, params)
    np.testing.assert_array_equal(net.velocity, velocity)


# --------------------------------------------------------------------------- in process


@pytest.mark.parametrize("at_call", [1, 3])
def test_interrupt_stops_at_the_next_mini_batch(backend, monkeypatch, at_call):
    """A SIGINT raised inside the k-th compiled call (one mini-batch per call) stops fit
    right after that call: epoch 0, k mini-batches done, state = replay of k steps."""
    mod = get_backend(backend)
    real = mod.train_epoch
    calls = {"n": 0}

    def train_epoch(*args):
        calls["n"] += 1
        if calls["n"] == at_call:
            os.kill(os.getpid(), signal.SIGINT)  # arrives while "compiled code" runs
        return real(*args)

    monkeypatch.setattr(mod, "train_epoch", train_epoch)
    X, y = _problem(60, 4, 3)
    net = fastbp.Network([4, 5, 3], output="softmax", cost="log_likelihood", seed=1)
    net0 = fastbp.Network([4, 5, 3], output="softmax", cost="log_likelihood", seed=1)
    net._chunk = 1
    with pytest.raises(fastbp.TrainingInterrupted) as info:
        net.fit(X, y, epochs=5, batch_size=6, eta=0.2, momentum=0.5, record="batch", seed=7)
    err = info.value
    assert (err.epoch, err.batch) == (0, at_call)
    assert "interrupted" in str(err)
    _check_interrupted_state(backend, net, net0, err, X, y, 7, 6, 0.2, momentum=0.5)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_second_ctrl_c_interrupts_at_once(backend, monkeypatch):
    """A second SIGINT while the first is pending raises KeyboardInterrupt immediately
    (not at the next boundary): the way out of a long non-compiled step."""
    mod = get_backend(backend)
    real = mod.train_epoch
    calls = {"n": 0}

    def train_epoch(*args):
        calls["n"] += 1
        if calls["n"] == 2:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)  # raises here, in "the step"
            pytest.fail("the second SIGINT did not interrupt")
        return real(*args)

    monkeypatch.setattr(mod, "train_epoch", train_epoch)
    X, y = _problem(60, 4, 3)
    net = fastbp.Network([4, 5, 3], seed=1)
    net._chunk = 1
    with pytest.raises(KeyboardInterrupt) as info:
        net.fit(X, y, epochs=2, batch_size=6, eta=0.1, seed=0)
    assert not isinstance(info.value, fastbp.TrainingInterrupted)
    assert net.n_updates == 1
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_interrupt_between_epochs_and_during_validation(backend, monkeypatch):
    """Ctrl-C during the validation pass stops before the next epoch: whole epochs only."""
    X, y = _problem(30, 4, 3)
    net = fastbp.Network([4, 5, 3], output="softmax", cost="log_likelihood", seed=1)
    real = net._forward_rows
    calls = {"n": 0}

    def forward_rows(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return real(*args, **kwargs)

    monkeypatch.setattr(net, "_forward_rows", forward_rows)
    with pytest.raises(fastbp.TrainingInterrupted) as info:
        net.fit(X, y, epochs=5, batch_size=10, eta=0.2, validation=(X, y), seed=0)
    h = info.value.history
    assert (info.value.epoch, info.value.batch) == (2, 0)
    assert len(h.epoch) == len(h.validation) == 2
    assert net.n_updates == 6


def test_interrupt_after_the_last_epoch_is_not_lost(backend, monkeypatch):
    """A SIGINT noticed only after training finished still raises (with the whole run)."""
    X, y = _problem(20, 4, 3)
    net = fastbp.Network([4, 5, 3], output="softmax", cost="log_likelihood", seed=1)
    real = net._fit_loop

    def fit_loop(*args, **kwargs):
        history = real(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGINT)
        return history

    monkeypatch.setattr(net, "_fit_loop", fit_loop)
    with pytest.raises(KeyboardInterrupt):
        net.fit(X, y, epochs=2, batch_size=10, eta=0.2, seed=0)
    assert net.n_updates == 4


def test_custom_sigint_handler_is_left_alone(backend):
    """fit defers Ctrl-C only in place of Python's default handler."""
    seen = []

    def handler(signum, frame):
        seen.append(signum)

    old = signal.signal(signal.SIGINT, handler)
    try:
        X, y = _problem(20, 4, 3)
        net = fastbp.Network([4, 5, 3], seed=1)
        net._chunk = 1
        mod = get_backend(backend)
        real = mod.train_epoch

        def train_epoch(*args):
            assert signal.getsignal(signal.SIGINT) is handler
            return real(*args)

        mod.train_epoch = train_epoch
        try:
            net.fit(X, y, epochs=1, batch_size=5, eta=0.1, seed=0)
        finally:
            mod.train_epoch = real
        assert signal.getsignal(signal.SIGINT) is handler
    finally:
        signal.signal(signal.SIGINT, old)


def test_fit_in_a_thread_leaves_signals_alone(backend):
    X, y = _problem(20, 4, 3)
    net = fastbp.Network([4, 5, 3], seed=1)
    out = {}

    def run():
        with fastbp.use_backend(backend):
            out["h"] = net.fit(X, y, epochs=2, batch_size=5, eta=0.1, seed=0)

    t = threading.Thread(target=run)
    t.start()
    t.join(HANG_BOUND)
    assert len(out["h"].epoch) == 2
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_chunking_gives_the_same_bits(backend):
    """One call per mini-batch, a few per call, or sized by time: the same parameters and
    History (this is what makes prompt interruption free)."""
    X, y = _problem(101, 4, 3)
    results = []
    for chunk in (1, 3, None):
        net = fastbp.Network([4, 6, 5, 3], activation="tanh", output="softmax",
                             cost="log_likelihood", seed=2)
        net._chunk = chunk
        if chunk is None:
            net._chunk_seconds = 1e-5  # several calls per epoch even for a tiny net
        h = net.fit(X, y, epochs=3, batch_size=4, eta=0.1, momentum=fastbp.Sutskever(0.9, 7),
                    nesterov=True, lmbda=0.5, record="batch", seed=3)
        h2 = copy_history_without_backend(h)
        results.append((net.params.copy(), net.velocity.copy(), h2))
    for params, velocity, h in results[1:]:
        np.testing.assert_array_equal(params, results[0][0])
        np.testing.assert_array_equal(velocity, results[0][1])
        assert h == results[0][2]


def copy_history_without_backend(h):
    return fastbp.History.from_json(h.to_json())


# --------------------------------------------------------------------------- child process

_CHILD = textwrap.dedent("""
    import json, sys, time
    import numpy as np
    import fastbp
    from fastbp._backends import get_backend

    backend, out = sys.argv[1], sys.argv[2]
    sizes, n, batch_size, seed, eta = json.loads(sys.argv[3])
    g = np.random.default_rng(0)
    X = g.standard_normal((n, sizes[0]))
    y = g.integers(0, sizes[-1], n)
    mod = get_backend(backend)
    real = mod.train_epoch
    calls = [0]

    def train_epoch(*args):
        calls[0] += 1
        if calls[0] == 3:
            print("inside fit", flush=True)
        return real(*args)

    mod.train_epoch = train_epoch
    net = fastbp.Network(sizes, activation="relu", output="softmax", cost="log_likelihood",
                         init="he_normal", seed=1)
    result = {}
    with fastbp.use_backend(backend):
        try:
            net.fit(X, y, epochs=200, batch_size=batch_size, eta=eta, record="batch",
                    seed=seed)
        except fastbp.TrainingInterrupted as err:
            result = dict(type="TrainingInterrupted", epoch=err.epoch, batch=err.batch,
                          keyboard=isinstance(err, KeyboardInterrupt), t=time.monotonic())
            net.save(out, history=err.history)
        except BaseException as err:
            result = dict(type=type(err).__name__)
    import signal
    result["handler_restored"] = signal.getsignal(signal.SIGINT) is signal.default_int_handler
    print(json.dumps(result), flush=True)
""")


def test_sigint_to_a_child_process_inside_fit(backend, tmp_path):
    """A real Ctrl-C, delivered to a process busy in fit: it stops promptly (bounded wait),
    raises TrainingInterrupted, and its saved state is the replay of what it completed."""
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    sizes, n, batch_size, seed, eta = [30, 200, 200, 10], 3000, 25, 5, 0.01
    out = tmp_path / "state.npz"
    proc = subprocess.Popen(
        [sys.executable, str(script), backend, str(out),
         json.dumps([sizes, n, batch_size, seed, eta])],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        assert ready, "the child did not reach fit"
        assert proc.stdout.readline().strip() == "inside fit"
        time.sleep(0.15)
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        try:
            stdout, stderr = proc.communicate(timeout=HANG_BOUND)
        except subprocess.TimeoutExpired:
            pytest.fail(f"fit did not stop within {HANG_BOUND} s of SIGINT")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    result = json.loads(stdout.strip().splitlines()[-1])
    assert result["type"] == "TrainingInterrupted" and result["keyboard"]
    assert result["handler_restored"]
    assert result["t"] - sent < HANG_BOUND
    net = fastbp.load(out)
    err = fastbp.TrainingInterrupted(result["epoch"], result["batch"], fastbp.load_history(out))
    g = np.random.default_rng(0)
    X = g.standard_normal((n, sizes[0]))
    y = g.integers(0, sizes[-1], n)
    net0 = fastbp.Network(sizes, activation="relu", output="softmax", cost="log_likelihood",
                          init="he_normal", seed=1)
    _check_interrupted_state(backend, net, net0, err, X, y, seed, batch_size, eta)
