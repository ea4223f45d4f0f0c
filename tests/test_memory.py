"""Memory (issue 6): no growth over time; (issue 4) a peak close to the minimum.

The compiled backends allocate nothing per mini-batch (the workspace is made once per
network and batch size), so the resident set size stays flat over thousands of
epochs; ``tracemalloc`` sees NumPy's buffers and Python objects, not the extension's
own C allocations, hence the RSS measurement.  (The bounded memory of the evaluation
methods on large inputs is tested in tests/test_bad_input.py.)

The peak resident set of building and training workload B ([784, 1024 x 4, 10],
float32, 3.9 M parameters) stays within 1.2x of what any mini-batch SGD needs: see
:func:`minimum_nbytes`.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import textwrap
import tracemalloc

import numpy as np
import pytest

import fastbp


def _rss() -> int:
    """Resident set size of this process in bytes (Linux)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/statm"),
                                reason="needs /proc/self/statm (Linux)")


def _setup():
    g = np.random.default_rng(0)
    X = g.standard_normal((200, 8))
    y = g.integers(0, 2, 200)
    net = fastbp.Network([8, 16, 16, 2], activation="tanh", seed=0)
    return net, X, y


def test_rss_flat_over_thousands_of_epochs(backend):
    """2 x 1,000 epochs of 20 mini-batches (40,000 updates): RSS grows by less than 1 MiB,
    i.e. less than 26 bytes per mini-batch (the History of each call is released)."""
    if backend == "numpy":
        pytest.skip("the NumPy backend allocates temporaries per mini-batch by design")
    net, X, y = _setup()
    kw = dict(batch_size=10, eta=0.05, momentum=0.9, nesterov=True, record="epoch",
              validation=(X, y), probe=(X[:50], y[:50]))
    net.fit(X, y, epochs=20, seed=0, **kw)  # workspaces, first-call caches
    gc.collect()
    before = _rss()
    for seed in (1, 2):
        h = net.fit(X, y, epochs=1000, seed=seed, **kw)
        assert len(h.epoch) == 1000
        del h
        gc.collect()
    grown = _rss() - before
    assert grown < 1 << 20, f"RSS grew by {grown} bytes over 40,000 mini-batches"


def test_no_python_allocations_left_behind(backend):
    """Whatever fit allocates (records, History) is released with the History."""
    net, X, y = _setup()
    kw = dict(batch_size=10, eta=0.05, record="batch", seed=0)
    net.fit(X, y, epochs=3, **kw)
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for _ in range(5):
            h = net.fit(X, y, epochs=3, **kw)
            del h
        gc.collect()
        left = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert left < 16 << 10, f"{left} bytes still allocated after 5 fits"


def test_workspaces_are_reused_and_bounded(backend):
    """One workspace per (backend, rows), at most _MAX_WORKSPACES kept per network."""
    net, X, y = _setup()
    for bs in (5, 10, 5, 10):
        net.fit(X, y, epochs=1, batch_size=bs, eta=0.1, seed=0)
    assert len([k for k in net._workspaces if k[0] == backend]) == 2
    for bs in range(1, 30):
        net.fit(X[:60], y[:60], epochs=1, batch_size=bs, eta=0.1, seed=0)
    assert len(net._workspaces) <= fastbp.Network._MAX_WORKSPACES


# ----------------------------------------------------------------- peak RSS of B
B_SIZES = (784, 1024, 1024, 1024, 1024, 10)
B_BATCH = 128


def minimum_nbytes(sizes, itemsize, m, n, n_batches, record, momentum) -> dict:
    """What mini-batch SGD with fastbp's records cannot do without, in bytes.

    The parameters; the velocity (with momentum only); one gradient of every
    parameter (its norms are recorded before the update); each layer's output for the
    m rows of a mini-batch (kept for the backward pass) and two delta buffers of the
    widest layer; the shuffled order; the records.  record="epoch" adds the
    parameters at the start of the epoch (update_ratio) and the epoch's gradient sum,
    in float64: a float32 sum over an epoch's mini-batches would miss SPEC's 1e-6
    accuracy of the statistics.
    """
    L = len(sizes) - 1
    n_params = sum(sizes[l] * sizes[l + 1] + sizes[l + 1] for l in range(L))
    n_stats = fastbp._contract.N_STATS
    parts = {
        "parameters": n_params * itemsize,
        "velocity": n_params * itemsize if momentum else 0,
        "gradient": n_params * itemsize,
        "activations": m * sum(sizes[1:]) * itemsize,
        "deltas": 2 * m * max(sizes[1:]) * itemsize,
        "order": 8 * n,
        "records": 8 * n_batches * (1 + (n_stats * L if record == "batch" else 0)),
    }
    if record == "epoch":
        parts["epoch start and gradient sum"] = n_params * (itemsize + 8)
    return parts


_PEAK_SCRIPT = textwrap.dedent("""
    import gc, json, sys
    import numpy as np
    import fastbp

    def kib(key):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])

    sizes, batch, n, record, momentum = json.loads(sys.argv[1])
    rng = np.random.default_rng(0)
    X = rng.random((n, sizes[0]), dtype=np.float32)
    Y = np.eye(sizes[-1], dtype=np.float32)[rng.integers(0, sizes[-1], n)]
    kw = dict(epochs=1, batch_size=batch, eta=0.01, momentum=momentum, record=record)
    # the first fit imports modules and starts BLAS threads: not the network's memory
    warm = fastbp.Network([sizes[0], 8, sizes[-1]], dtype="float32", seed=0)
    warm.fit(X[:2 * batch], Y[:2 * batch], **kw)
    del warm
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets the peak (VmHWM) to the current resident set
    before = kib("VmRSS:")
    net = fastbp.Network(sizes, activation="relu", output="softmax", cost="log_likelihood",
                         init="glorot_uniform", dtype="float32", seed=0)
    net.fit(X, Y, **kw)
    print(json.dumps({"peak_increase": 1024 * (kib("VmHWM:") - before)}))
""")


def _clear_refs_works() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


@pytest.mark.parametrize(
    ("record", "momentum"),
    [("batch", 0.0), (None, 0.9), ("epoch", 0.0)],
    ids=["batch-sgd", "none-momentum", "epoch-sgd"],
)
def test_peak_rss_of_building_and_training_B(tmp_path, record, momentum):
    """Network(...) then fit on B's shape, 10 mini-batches of 128 (the peak does not
    depend on n beyond the order and the records): peak RSS increase <= 1.2x the
    minimum, and at least the parameters and the gradient (the measurement works)."""
    if not _clear_refs_works():
        pytest.skip("needs a writable /proc/self/clear_refs (Linux) to reset the peak")
    if not fastbp.backends()["cython"].available:
        pytest.skip("the goal is the compiled backend's")
    n = 10 * B_BATCH
    script = tmp_path / "peak.py"
    script.write_text(_PEAK_SCRIPT)
    env = dict(os.environ, FASTBP_BACKEND="cython")
    proc = subprocess.run(
        [sys.executable, str(script), json.dumps([B_SIZES, B_BATCH, n, record, momentum])],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])["peak_increase"]
    parts = minimum_nbytes(B_SIZES, 4, B_BATCH, n, 10, record, momentum)
    need = sum(parts.values())
    detail = ", ".join(f"{k} {v / 2**20:.1f}" for k, v in parts.items() if v)
    print(f"\nB record={record} momentum={momentum}: peak +{got / 2**20:.1f} MiB = "
          f"{got / need:.3f}x the minimum {need / 2**20:.1f} MiB ({detail})")
    assert got <= 1.2 * need, (
        f"peak RSS grew by {got / 2**20:.1f} MiB, {got / need:.2f}x the minimum "
        f"{need / 2**20:.1f} MiB ({detail})"
    )
    assert got >= parts["parameters"] + parts["gradient"]
