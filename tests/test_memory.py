"""Memory (issue 6): no growth over time.

The compiled backends allocate nothing per mini-batch (the workspace is made once per
network and batch size), so the resident set size stays flat over thousands of
epochs; ``tracemalloc`` sees NumPy's buffers and Python objects, not the extension's
own C allocations, hence the RSS measurement.  (The bounded memory of the evaluation
methods on large inputs is tested in tests/test_bad_input.py.)
"""

from __future__ import annotations

import gc
import os
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
