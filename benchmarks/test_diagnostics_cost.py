"""What the optional statistic groups of ``fit(stats=...)`` cost, and the same in PyTorch.

Two workloads, one epoch each (``FASTBP_BENCH_SIZE=smoke`` shrinks them as for the
rest of the suite; data, start parameters and mini-batch order are the harness's, so
every row starts from the same parameters and sees the same order):

* ``chapter`` = workload A: [784,30,30,30,30,10] sigmoid, cross-entropy,
  normal_scaled, mini-batch 10, eta 0.1, lambda 5, 50,000 examples; float64
  (group ``diag-chapter-f64``) and float32 (``diag-chapter-f32``);
* ``wide`` = workload B: [784,1024x4,10] ReLU, softmax + log-likelihood,
  glorot_uniform, mini-batch 128, eta 0.01, 20,000 examples, float32
  (``diag-wide-f32``).

Rows of a group (``--benchmark-group-by=group``; the row's label is
``extra_info["row"]``, its baseline ``extra_info["baseline"]``):

fastbp, one epoch of the public ``Network.fit`` (the cython backend, or
``FASTBP_BACKEND``; the network reused, its parameters, optimiser and statistic state
reset before every round, untimed; ``X`` already C-contiguous in the network's dtype,
so ``fit`` does not copy it; ``y`` as labels, as the harness's ``fit_runner``; validation,
one-hot and History are in every row alike; ``seed=7``, the order of the harness):

1. ``fastbp record=None`` -- the baseline;
2. ``fastbp core`` -- ``record="batch"``: the eleven core statistics every mini-batch;
3. ``fastbp +pe+noise+distance`` -- also ``stats=("per_example", "noise_scale",
   "distance")``;
4. ``fastbp all`` -- ``stats="all"`` (adds ``moments`` and ``histograms``);
5. ``fastbp all every=16`` -- ``stats="all", stats_every=16``.

PyTorch eager (1 thread; ``nn.Linear`` layers, ``loss.backward()``, network2's update
written in place under ``no_grad`` as in ``_peers.torch``), what a PyTorch user writes
to get the same numbers:

1. ``torch plain``;
2. ``torch core`` -- ||grad|| of every layer's W and b after every step (``.grad``);
3. ``torch +pe+noise+distance`` -- forward hooks save each layer's input a and output
   z, full backward pre-hooks its output gradient (``register_full_backward_pre_hook``:
   ``register_full_backward_hook``'s machinery, without waiting for a grad_input that the
   first layer does not have; PyTorch warns on every step for that layer either way,
   the warning is filtered); then per layer
   ``||g_n||^2 = ||delta_n||^2 (||a_n||^2 + 1)``, their mean and max, ``tr Sigma``, the
   EMA noise scale and ``||W - W_0||`` (all in the parameters' dtype);
4. ``torch all`` -- also the element-wise second moments ``(delta^2)^T (a^2)`` with the
   GSNR, and the histograms of delta, z (signed decades: ``bucketize`` + ``bincount``)
   and a (``histc``) of every layer, fastbp's bins;
5. ``torch all every=16`` -- 2 every step, 3-4 on every 16th mini-batch.

fastbp's core is its eleven statistics, PyTorch's only the two norms per layer.

``test_fastbp_interleaved`` (group ``diag-<kind>-<dtype>-interleaved``) times fastbp's
five rows again, in turn within every round (each round starting from another row),
and reports per row the median over rounds of its time over record=None's time in
the same round: on a shared machine whose speed drifts over minutes this ratio is
steadier than one of medians taken minutes apart, and it is the one the goals are
read from.  Its times are of the training: ``fit`` minus the time ``fit`` spends
validating ``X`` and ``y`` (``_harness.validation_timer``).  That check of the whole
of ``X`` for NaN/Inf costs the same in every row (~8 ms of a ~100 ms epoch in
float32), so keeping it would dilute every ratio; the table gives the ratio of the
whole ``fit`` next to it.  (The rows of ``test_fastbp`` time all of ``fit``.)

Checks (after the timed rounds), so that neither a wrong kernel nor unequal work can
win: every row's parameters against the NumPy reference backend (the harness's
``check_fastbp`` / ``check_peer``: parameters, costs, first speeds); the parameters of
every statistics row equal, bit for bit, those of the same implementation's baseline
(statistics must not change training); the statistics of the first mini-batch equal
an independent float64 NumPy computation that forms every per-example gradient
explicitly (``_oracle``; 1e-6 relative in float64); every sampled row is finite and
positive where it must be, unsampled rows are NaN, every histogram row counts
``m * n_out`` values per layer.  ``test_torch_matches_fastbp`` compares both directly on
one mini-batch of ``chapter`` in float64 (1e-5 relative).

Run (full size; the torch rows only: ``-k torch``; ``-s`` prints the ratio table)::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE pytest benchmarks/test_diagnostics_cost.py \\
        --benchmark-group-by=group --benchmark-columns=median,iqr,min,rounds \\
        --benchmark-json=.benchmarks/diagnostics.json -s
    python benchmarks/test_diagnostics_cost.py .benchmarks/diagnostics.json   # the ratios again
"""

from __future__ import annotations

import json
import math
import os
import sys
import warnings
from dataclasses import dataclass, field

import numpy as np
import pytest
from _harness import (
    MAX_ROUNDS,
    ORDER_SEED,
    ROUND_BUDGET,
    WORKLOADS,
    Problem,
    Result,
    Runner,
    backend_or_skip,
    check_fastbp,
    check_peer,
    interleaved_rounds,
    is_installed,
    pinned_threads,
    problem,
    run_once,
    time_runner,
    validation_timer,
)

from fastbp import _diagnostics as dx

# --------------------------------------------------------------------------- the rows
#: group kind -> (harness workload, dtypes)
KINDS = {"chapter": ("A", ("float64", "float32")), "wide": ("B", ("float32",))}
PE_NOISE_DISTANCE = ("per_example", "noise_scale", "distance")
EVERY = 16

#: fastbp rows: id -> (label, fit keyword arguments)
FASTBP_ROWS = {
    "record=None": ("fastbp record=None", {"record": None}),
    "core": ("fastbp core", {"record": "batch"}),
    "pe+noise+distance": (
        "fastbp +pe+noise+distance",
        {"record": "batch", "stats": PE_NOISE_DISTANCE},
    ),
    "all": ("fastbp all", {"record": "batch", "stats": "all"}),
    "all-every16": (
        f"fastbp all every={EVERY}",
        {"record": "batch", "stats": "all", "stats_every": EVERY},
    ),
}
#: torch rows: id -> (label, level, every); level 1 plain, 2 core, 3 +pe+noise+distance, 4 all
TORCH_ROWS = {
    "plain": ("torch plain", 1, 1),
    "core": ("torch core", 2, 1),
    "pe+noise+distance": ("torch +pe+noise+distance", 3, 1),
    "all": ("torch all", 4, 1),
    "all-every16": (f"torch all every={EVERY}", 4, EVERY),
}
TORCH_GROUPS = {1: (), 2: (), 3: PE_NOISE_DISTANCE, 4: dx.GROUPS}
BASELINE = {"fastbp": FASTBP_ROWS["record=None"][0], "torch": TORCH_ROWS["plain"][0]}
#: fastbp's default ``noise_ema``; the torch rows use the same coefficient.
NOISE_EMA = 0.99


def group_of(kind: str, dtype: str) -> str:
    return f"diag-{kind}-{'f64' if dtype == 'float64' else 'f32'}"


def _cases():
    return [(kind, key, dtype) for kind, (key, dtypes) in KINDS.items() for dtype in dtypes]


def _short(dtype: str) -> str:
    return "f64" if dtype == "float64" else "f32"


def _params(rows):
    return [
        pytest.param(kind, dtype, row, id=f"{kind}-{_short(dtype)}-{row}")
        for kind, _, dtype in _cases()
        for row in rows
    ]


def _problem(kind: str, dtype: str) -> Problem:
    return problem(WORKLOADS[KINDS[kind][0]], dtype)


def _fastbp_backend() -> str:
    return os.environ.get("FASTBP_BACKEND", "").strip().lower() or "cython"


# --------------------------------------------------------------------------- results
@dataclass
class DiagResult(Result):
    """A run's result plus its optional statistics, in fastbp's History conventions."""

    xstats: dict = field(default_factory=dict)  # XSTAT name -> (rows, L), NaN if not sampled
    hist: dict = field(default_factory=dict)  # "batch" (sampled indices), "delta", "z", "a"
    sizes: np.ndarray | None = None  # examples in each mini-batch
    grad_norms: np.ndarray | None = None  # (rows, L) ||g_W|| (torch core)


# --------------------------------------------------------------------------- fastbp rows
def fastbp_runner(p: Problem, row: str) -> Runner:
    """One epoch of ``Network.fit`` with the row's ``record``/``stats``/``stats_every``."""
    import fastbp

    w = p.workload
    backend = _fastbp_backend()
    net = fastbp.Network(
        list(w.sizes), activation=w.hidden, output=w.output, cost=w.cost, dtype=p.dtype.name
    )
    weights = [W.copy() for W in p.weights()]
    biases = [b.copy() for b in p.biases()]
    kwargs = dict(FASTBP_ROWS[row][1])
    out = {}

    def reset():
        net.set_params(weights, biases)
        net.reset_optimizer()
        if hasattr(net, "reset_stats"):  # distance's W_0 and the noise averages
            net.reset_stats()
        return (), {}

    def run():
        with fastbp.use_backend(backend), validation_timer() as spent:
            out["h"] = net.fit(
                p.X, p.labels, epochs=1, batch_size=w.batch, eta=w.eta, lmbda=w.lmbda,
                seed=ORDER_SEED, **kwargs,
            )  # fmt: skip
        runner.info["validation_s"] = spent[0]

    def result() -> DiagResult:
        h = out["h"]
        res = DiagResult(net.params.copy())
        if kwargs["record"] == "batch":
            res.speeds = np.asarray(h.batch["speed"])
            res.costs = np.asarray(h.batch["cost"])
            res.sizes = np.asarray(h.batch["size"])
            res.xstats = {c: np.asarray(h.batch[c]) for c in dx.XSTAT_NAMES if c in h.batch}
            hist = getattr(h, "histograms", None)
            if hist is not None and "delta" in hist:
                res.hist = {c: np.asarray(hist[c]) for c in ("batch", "delta", "z", "a")}
        return res

    runner = Runner(reset, run, result, w.n_batches, w.n)
    runner.info["backend"] = backend
    return runner


# --------------------------------------------------------------------------- torch rows
def _f32_edges(edges: np.ndarray) -> np.ndarray:
    """The smallest float32 >= each double edge: float32 values then fall in the bins
    of fastbp, which compares them as doubles with the double edges."""
    e32 = edges.astype(np.float32)
    low = e32.astype(np.float64) < edges
    e32[low] = np.nextafter(e32[low], np.float32(np.inf))
    return e32


def torch_runner(p: Problem, k: int, level: int, every: int = 1) -> Runner:
    """Mini-batches 0..k-1 in PyTorch eager, with the statistics of ``level``."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(1)  # also in the untimed check runs: same bits as the timed ones
    w = p.workload
    L = w.L
    dt = torch.float64 if p.dtype == np.float64 else torch.float32
    f64 = torch.float64
    X = torch.from_numpy(p.X)
    Y = torch.from_numpy(p.Y)
    labels = torch.from_numpy(p.labels)
    batches = [torch.from_numpy(idx) for idx in p.batch_indices(k)]
    layers = [
        torch.nn.Linear(n_in, n_out, dtype=dt) for n_in, n_out in zip(w.sizes[:-1], w.sizes[1:])
    ]
    Ws = [lin.weight for lin in layers]
    bs = [lin.bias for lin in layers]
    params = Ws + bs
    act = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu}[w.hidden]
    sigmoid_ce = w.output == "sigmoid"
    out_act = torch.sigmoid if sigmoid_ce else (lambda z: torch.softmax(z, 1))
    decay = 1.0 - w.eta * w.lmbda / w.n
    eta = w.eta
    core, pe, mom = level >= 2, level >= 3, level >= 4
    sampled = [i for i in range(k) if i % every == 0]

    costs = torch.zeros(k, dtype=f64)
    speeds = torch.full((k, L), math.nan, dtype=f64) if core else None
    gnorms = torch.full((k, L), math.nan, dtype=f64) if core else None
    xs = torch.full((k, dx.N_X, L), math.nan, dtype=f64) if pe else None
    hist = torch.zeros((len(sampled), L, dx.N_HIST), dtype=torch.int64) if mom else None
    ema = torch.zeros((2, L), dtype=f64)
    W0 = [torch.empty_like(W, requires_grad=False) for W in Ws]

    # hooks: a (layer input), z (layer output), dL/dz (the output gradient)
    saved_a: list = [None] * L
    saved_z: list = [None] * L
    saved_g: list = [None] * L
    if pe:
        for l, lin in enumerate(layers):

            def fwd(mod, inp, out, l=l):
                saved_a[l] = inp[0]
                saved_z[l] = out

            def bwd(mod, grad_output, l=l):
                saved_g[l] = grad_output[0]

            lin.register_forward_hook(fwd)
            lin.register_full_backward_pre_hook(bwd)

    edges_np = dx.DECADE_EDGES if dt == f64 else _f32_edges(dx.DECADE_EDGES)
    edges = torch.from_numpy(np.ascontiguousarray(edges_np))
    zero_bin = dx.N_DECADES + 2
    ranges = [tuple(map(float, r)) for r in dx.a_ranges(p.layout)]

    def decade_counts(x):
        pos = torch.bucketize(x.abs(), edges, right=True)  # edges <= |x|
        idx = (pos + 1) * torch.sign(x).to(torch.int64) + zero_bin
        return torch.bincount(idx.reshape(-1), minlength=dx.N_DECADE_BINS)

    def linear_counts(a, lo, hi):
        inner = torch.histc(a, bins=dx.N_LINEAR, min=lo, max=hi).to(torch.int64)
        return torch.cat([(a < lo).sum().reshape(1), inner, (a > hi).sum().reshape(1)])

    def stats_step(i, m, nW, nb):
        """The optional statistics of mini-batch i (after its update), as a user writes them."""
        pe_mean, pe_max, trace, dist, gsnr, gzero = [], [], [], [], [], []
        for l in range(L):
            d = saved_g[l] * m  # per-example deltas dC_n/dz (the loss is a mean over m)
            a = saved_a[l]
            d2 = d * d
            a2 = a * a
            sq = d2.sum(1) * (a2.sum(1) + 1)  # ||g_n||^2, rank-one trick
            norms = sq.sqrt()
            pe_mean.append(norms.mean())
            pe_max.append(norms.max())
            g2 = nW[l] * nW[l] + nb[l] * nb[l]
            trace.append((sq.sum() - m * g2) / (m - 1))
            dist.append(torch.linalg.vector_norm(Ws[l] - W0[l]))
            if mom:
                gW, gb = Ws[l].grad, bs[l].grad
                gW2, gb2 = gW * gW, gb * gb
                vW = (d2.t() @ a2 - m * gW2) / (m - 1)
                vb = (d2.sum(0) - m * gb2) / (m - 1)
                posW, posb = vW > 0, vb > 0
                s = torch.where(posW, gW2 / vW, 0).sum() + torch.where(posb, gb2 / vb, 0).sum()
                cnt = posW.sum() + posb.sum()
                gsnr.append(s / cnt)
                gzero.append(gW.numel() + gb.numel() - cnt)
                row = hist[i // every, l]
                row[dx.H_DELTA : dx.H_DELTA + dx.N_DECADE_BINS] = decade_counts(d)
                row[dx.H_Z : dx.H_Z + dx.N_DECADE_BINS] = decade_counts(saved_z[l])
                a_out = saved_a[l + 1] if l < L - 1 else out_act(saved_z[l])
                row[dx.H_A :] = linear_counts(a_out, *ranges[l])
        tr = torch.stack(trace).to(f64)
        g2_all = nW.to(f64) ** 2 + nb.to(f64) ** 2
        ema.mul_(NOISE_EMA)
        ema[0].add_(tr, alpha=1 - NOISE_EMA)
        ema[1].add_(g2_all - tr / m, alpha=1 - NOISE_EMA)
        xs[i, dx.X_PE_MEAN] = torch.stack(pe_mean)
        xs[i, dx.X_PE_MAX] = torch.stack(pe_max)
        xs[i, dx.X_TRACE] = tr
        xs[i, dx.X_NOISE] = ema[0] / ema[1]
        xs[i, dx.X_DISTANCE] = torch.stack(dist)
        if mom:
            xs[i, dx.X_GSNR] = torch.stack(gsnr)
            xs[i, dx.X_GSNR_ZERO] = torch.stack(gzero).to(f64)

    def reset():
        with torch.no_grad():
            for t, W, t0 in zip(Ws, p.weights(), W0):
                t.copy_(torch.from_numpy(W))
                t0.copy_(t)
            for t, b in zip(bs, p.biases()):
                t.copy_(torch.from_numpy(b))
        for t in params:
            t.grad = None
        ema.zero_()
        for buf in (speeds, gnorms, xs):
            if buf is not None:
                buf.fill_(math.nan)
        if hist is not None:
            hist.zero_()
        return (), {}

    def run():
        with warnings.catch_warnings():
            # the first layer's input needs no gradient: PyTorch warns on every step
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            for i, idx in enumerate(batches):
                a = X[idx]
                for lin in layers[:-1]:
                    a = act(lin(a))
                z = layers[-1](a)
                m = len(idx)
                if sigmoid_ce:
                    loss = F.binary_cross_entropy_with_logits(z, Y[idx], reduction="sum") / m
                else:
                    loss = F.cross_entropy(z, labels[idx])
                for t in params:
                    t.grad = None
                loss.backward()
                with torch.no_grad():
                    costs[i] = loss
                    if core:
                        nW = torch.stack([torch.linalg.vector_norm(W.grad) for W in Ws])
                        nb = torch.stack([torch.linalg.vector_norm(b.grad) for b in bs])
                        gnorms[i] = nW
                        speeds[i] = nb
                    for W, b in zip(Ws, bs):
                        if decay != 1.0:
                            W.mul_(decay)
                        W.sub_(W.grad, alpha=eta)
                        b.sub_(b.grad, alpha=eta)
                    if pe and i % every == 0:
                        stats_step(i, m, nW, nb)

    def result() -> DiagResult:
        with torch.no_grad():
            flat = np.empty(p.layout.n_params, dtype=np.float64)
            for dst, t in zip(p.layout.weight_views(flat), Ws):
                dst[...] = t.numpy()
            for dst, t in zip(p.layout.bias_views(flat), bs):
                dst[...] = t.numpy()
        res = DiagResult(flat, costs=costs.numpy().copy())
        res.sizes = np.array([len(idx) for idx in batches])
        if core:
            res.speeds = speeds.numpy().copy()
            res.grad_norms = gnorms.numpy().copy()
        if pe:
            cols = dx.columns_of(TORCH_GROUPS[level])
            res.xstats = {c: xs[:, dx.XSTAT_NAMES.index(c)].numpy().copy() for c in cols}
        if mom:
            h = hist.numpy()
            res.hist = {
                "batch": np.array(sampled),
                "delta": h[:, :, dx.H_DELTA : dx.H_DELTA + dx.N_DECADE_BINS].copy(),
                "z": h[:, :, dx.H_Z : dx.H_Z + dx.N_DECADE_BINS].copy(),
                "a": h[:, :, dx.H_A :].copy(),
            }
        return res

    return Runner(reset, run, result, k, min(k * w.batch, w.n))


# --------------------------------------------------------------------------- the oracle
_ORACLE: dict = {}


def _oracle(p: Problem) -> dict:
    """Every statistic of the epoch's first mini-batch, in float64, from explicit
    per-example gradients (each ``g_n`` formed as a matrix, no rank-one identity)."""
    key = (p.workload, p.dtype.name)
    if key in _ORACLE:
        return _ORACLE[key]
    w = p.workload
    L = w.L
    idx = p.order[: w.batch]
    m = len(idx)
    Ws = [W.astype(np.float64) for W in p.weights()]
    bs = [b.astype(np.float64) for b in p.biases()]

    def sigmoid(z):
        return 0.5 * (1.0 + np.tanh(0.5 * z))

    def softmax(z):
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    hidden = {"sigmoid": sigmoid, "relu": lambda z: np.maximum(z, 0.0), "tanh": np.tanh}[w.hidden]
    slope = {
        "sigmoid": lambda z, a: a * (1 - a),
        "relu": lambda z, a: (z > 0).astype(np.float64),
        "tanh": lambda z, a: 1 - a * a,
    }[w.hidden]
    out = sigmoid if w.output == "sigmoid" else softmax
    acts = [p.X[idx].astype(np.float64)]
    zs = []
    for l in range(L):
        z = acts[-1] @ Ws[l].T + bs[l]
        zs.append(z)
        acts.append(hidden(z) if l < L - 1 else out(z))
    deltas = [None] * L
    deltas[L - 1] = acts[-1] - p.Y[idx].astype(np.float64)
    for l in range(L - 2, -1, -1):
        deltas[l] = (deltas[l + 1] @ Ws[l + 1]) * slope(zs[l], acts[l + 1])
    decay = 1.0 - w.eta * w.lmbda / w.n
    names = ("speed",) + dx.XSTAT_NAMES
    r = {name: np.zeros(L) for name in names}
    bins = {"delta": dx.N_DECADE_BINS, "z": dx.N_DECADE_BINS, "a": dx.N_LINEAR_BINS}
    r["hist"] = {c: np.zeros((L, n), np.int64) for c, n in bins.items()}
    for l in range(L):
        d, a = deltas[l], acts[l]
        sq = np.empty(m)
        S2W = np.zeros_like(Ws[l])
        for n in range(m):
            G = np.outer(d[n], a[n])  # the weight gradient of example n
            G2 = G * G
            sq[n] = G2.sum() + d[n] @ d[n]
            S2W += G2
        gW = d.T @ a / m
        gb = d.mean(axis=0)
        g2 = float((gW * gW).sum() + gb @ gb)
        tr = (sq.sum() - m * g2) / (m - 1)
        norms = np.sqrt(sq)
        g2e = np.concatenate([(gW * gW).ravel(), gb * gb])
        v = np.concatenate([(S2W - m * gW * gW).ravel(), (d * d).sum(axis=0) - m * gb * gb])
        v /= m - 1
        pos = v > 0
        r["speed"][l] = np.linalg.norm(gb)
        r["pe_norm_mean"][l] = norms.mean()
        r["pe_norm_max"][l] = norms.max()
        r["trace_cov"][l] = tr
        r["noise_scale"][l] = tr / (g2 - tr / m)  # first sampled batch: the EMAs cancel
        r["gsnr"][l] = (g2e[pos] / v[pos]).mean()
        r["gsnr_zero"][l] = np.count_nonzero(~pos)
        r["distance"][l] = np.linalg.norm((decay - 1.0) * Ws[l] - w.eta * gW)
        r["hist"]["delta"][l] = dx.count(dx.decade_index(d), dx.N_DECADE_BINS)
        r["hist"]["z"][l] = dx.count(dx.decade_index(zs[l]), dx.N_DECADE_BINS)
        lo, hi = dx.activation_range(p.layout.acts[l])
        r["hist"]["a"][l] = dx.count(dx.linear_index(acts[l + 1], lo, hi), dx.N_LINEAR_BINS)
    _ORACLE[key] = r
    return r


# --------------------------------------------------------------------------- checks
#: Relative tolerance of the first mini-batch's statistics against the oracle.  float32
#: runs compute in float32 (PyTorch entirely, fastbp its products): ``noise_scale``
#: (1 / (||g||^2 - tr/m)), ``gsnr`` (g^2 / v) and ``distance`` (||W_1 - W_0|| of
#: float32 weights moved by ~1e-3 of their size) lose digits to cancellation; the
#: float32 ``gsnr`` is not compared at all: its mean is dominated by the parameters of
#: smallest variance v = (sum g_n^2 - m g^2) / (m - 1), computed with all digits
#: cancelled (chapter's output layer: 4.5e6 against the oracle's 2.9e6), and
#: ``gsnr_zero`` then counts the v that rounded to <= 0.
RTOL = {"float64": 1e-6, "float32": 2e-3}
RTOL_F32_LOOSE = {"noise_scale": 5e-2, "distance": 5e-2, "gsnr": None, "gsnr_zero": None}
POSITIVE = ("pe_norm_mean", "pe_norm_max", "trace_cov", "distance", "gsnr")


def _rtol(dtype: str, name: str) -> float | None:
    return RTOL_F32_LOOSE.get(name, RTOL[dtype]) if dtype == "float32" else RTOL[dtype]


def check_diag(p: Problem, res: DiagResult, groups, every: int) -> dict:
    """The optional statistics of a run: first mini-batch against the oracle, the rest
    finite / positive / NaN as they must be, histograms complete."""
    dt = p.dtype.name
    w = p.workload
    cols = dx.columns_of(groups)
    ora = _oracle(p)
    k = len(res.sizes)
    sampled = np.arange(k) % every == 0
    out = {}
    for c in cols:
        assert c in res.xstats, f"statistic {c!r} missing (have {sorted(res.xstats)})"
        x = res.xstats[c]
        assert x.shape == (k, w.L), (c, x.shape)
        rtol = _rtol(dt, c)
        if rtol is not None:
            np.testing.assert_allclose(x[0], ora[c], rtol=rtol, err_msg=c)
        assert np.isnan(x[~sampled]).all(), f"{c}: values on mini-batches not sampled"
        xs = x[sampled]
        assert np.isfinite(xs).all(), f"{c}: non-finite values on sampled mini-batches"
        if c in POSITIVE:
            assert (xs > 0).all(), f"{c}: values <= 0"
        if c == "gsnr_zero":
            assert (xs >= 0).all() and (xs == np.round(xs)).all()
        out[f"{c}_0"] = [float(v) for v in x[0]]
    if "pe_norm_max" in cols:
        ok = res.xstats["pe_norm_max"][sampled] >= res.xstats["pe_norm_mean"][sampled] * (1 - 1e-6)
        assert ok.all(), "pe_norm_max < pe_norm_mean"
    if "distance" in cols and (k - 1) % every == 0:  # the last row is after the last update
        start = p.weights()
        end = p.weights(res.params)
        want = [
            np.linalg.norm(e.astype(np.float64) - s.astype(np.float64)) for e, s in zip(end, start)
        ]
        np.testing.assert_allclose(
            res.xstats["distance"][-1], want, rtol=RTOL[dt], err_msg="distance"
        )
    if "histograms" in groups:
        assert res.hist, "histograms missing"
        np.testing.assert_array_equal(res.hist["batch"], np.flatnonzero(sampled))
        n_out = np.array(w.sizes[1:])
        for c in ("delta", "z", "a"):
            h = res.hist[c]
            assert h.shape[:2] == (sampled.sum(), w.L), (c, h.shape)
            np.testing.assert_array_equal(
                h.sum(axis=2), np.outer(res.sizes[sampled], n_out), err_msg=f"{c} counts"
            )
            # bins of the first mini-batch: exact in float64; a float32 value may sit on
            # the other side of a bin edge than its float64 oracle
            diff = int(np.abs(h[0] - ora["hist"][c]).sum())
            allowed = 0 if dt == "float64" else max(4, int(1e-4 * h[0].sum()))
            assert diff <= allowed, f"histogram of {c}: {diff} values in other bins than the oracle"
    return out


_BASE_PARAMS: dict = {}


def _baseline_params(impl: str, p: Problem, make) -> np.ndarray:
    key = (impl, p.workload, p.dtype.name)
    if key not in _BASE_PARAMS:
        _BASE_PARAMS[key] = run_once(make()).params
    return _BASE_PARAMS[key]


def _same_training(got: np.ndarray, base: np.ndarray, what: str) -> None:
    if not np.array_equal(got, base):
        diff = np.abs(got.astype(np.float64) - base.astype(np.float64))
        raise AssertionError(
            f"{what}: statistics changed training: parameters differ from the baseline's "
            f"(max |diff| {diff.max():.3g}, {np.count_nonzero(diff)} of {diff.size})"
        )


# --------------------------------------------------------------------------- timing rows
#: group -> label -> (impl, median seconds per epoch); filled after each row's checks
MEASURED: dict = {}


def _record(benchmark, kind, dtype, impl, label, p: Problem, runner: Runner, **extra):
    w = p.workload
    benchmark.extra_info.update(
        workload=f"diag-{kind}",
        dtype=dtype,
        impl=f"{impl}-diag",
        row=label,
        baseline=BASELINE[impl],
        threads=1,
        sizes=w.shape(),
        batch=w.batch,
        n=w.n,
        scale=w.n / runner.examples,
        **runner.info,
        **extra,
    )
    stats = getattr(benchmark, "stats", None)
    if stats is not None and getattr(stats, "stats", None) is not None and stats.stats.data:
        MEASURED.setdefault(group_of(kind, dtype), {})[label] = (
            impl,
            stats.stats.median * w.n / runner.examples,
        )


@pytest.mark.parametrize(("kind", "dtype", "row"), _params(FASTBP_ROWS))
def test_fastbp(benchmark, kind, dtype, row):
    backend_or_skip(_fastbp_backend())
    p = _problem(kind, dtype)
    label, kwargs = FASTBP_ROWS[row]
    runner = fastbp_runner(p, row)
    benchmark.group = group_of(kind, dtype)
    time_runner(benchmark, runner, 1)
    res = runner.result()
    record = "none" if kwargs["record"] is None else kwargs["record"]
    checks = check_fastbp(p, res, runner.batches, record)
    if row == "record=None":
        _BASE_PARAMS[("fastbp", p.workload, p.dtype.name)] = res.params
    else:
        base = _baseline_params("fastbp", p, lambda: fastbp_runner(p, "record=None"))
        _same_training(res.params, base, label)
    groups = dx.parse_stats(kwargs.get("stats"))
    if groups:
        checks.update(check_diag(p, res, groups, kwargs.get("stats_every", 1)))
    _record(
        benchmark, kind, dtype, "fastbp", label, p, runner,
        record=record, stats=list(groups), stats_every=kwargs.get("stats_every", 1), **checks,
    )  # fmt: skip


#: group -> label -> (median seconds, median of the per-round ratios to record=None)
INTERLEAVED: dict = {}


@pytest.mark.parametrize(
    ("kind", "dtype"),
    [pytest.param(kind, dtype, id=f"{kind}-{_short(dtype)}") for kind, _, dtype in _cases()],
)
def test_fastbp_interleaved(benchmark, kind, dtype):
    """fastbp's five rows in turn, round after round: the ratios from the same round.

    On a shared machine the speed drifts over minutes, so rows timed one after the
    other (as ``test_fastbp`` does) can differ by more than what the statistics cost.
    Here every round runs each row once (after its reset), starting from a different
    row each round; the ratio of a row is the median over rounds of its time over
    record=None's time in the same round.  The parameters of every row must equal
    record=None's, bit for bit.
    """
    backend_or_skip(_fastbp_backend())
    p = _problem(kind, dtype)
    rows = list(FASTBP_ROWS)
    runners = {row: fastbp_runner(p, row) for row in rows}
    benchmark.group = group_of(kind, dtype) + "-interleaved"
    with pinned_threads(1):
        walls, infos, rounds = interleaved_rounds(
            runners, benchmark, budget=5 * ROUND_BUDGET, max_rounds=MAX_ROUNDS
        )
    # the training: fit minus its validation of X and y
    times = {
        row: [w - i["validation_s"] for w, i in zip(walls[row], infos[row])] for row in rows
    }
    base = np.asarray(times["record=None"])
    wall_base = np.asarray(walls["record=None"])
    w = p.workload
    scale = w.n / runners["record=None"].examples
    out = {}
    for row in rows:
        t = np.asarray(times[row])
        out[FASTBP_ROWS[row][0]] = (
            float(np.median(t)) * scale,
            float(np.median(t / base)),
            float(np.median(np.asarray(walls[row]) / wall_base)),
        )
    base_params = runners["record=None"].result().params
    for row in rows[1:]:
        _same_training(runners[row].result().params, base_params, FASTBP_ROWS[row][0])
    INTERLEAVED[group_of(kind, dtype)] = out
    benchmark.extra_info.update(
        workload=f"diag-{kind}", dtype=dtype, impl="fastbp-diag-interleaved", rounds=rounds,
        interleaved={label: {"median_s": t, "ratio": r, "fit_ratio": f}
                     for label, (t, r, f) in out.items()},
    )  # fmt: skip


def _torch_or_skip():
    reason = is_installed("torch")
    if reason:
        pytest.skip(reason)


@pytest.mark.peer
@pytest.mark.parametrize(("kind", "dtype", "row"), _params(TORCH_ROWS))
def test_torch(benchmark, kind, dtype, row):
    _torch_or_skip()
    import torch

    p = _problem(kind, dtype)
    label, level, every = TORCH_ROWS[row]
    k = p.workload.n_batches
    runner = torch_runner(p, k, level, every)
    benchmark.group = group_of(kind, dtype)
    time_runner(benchmark, runner, 1)
    res = runner.result()
    rerun = lambda kk: run_once(torch_runner(p, kk, level, every))  # noqa: E731
    checks = check_peer(p, res, k, rerun)
    if level == 1:
        _BASE_PARAMS[("torch", p.workload, p.dtype.name)] = res.params
    else:
        base = _baseline_params("torch", p, lambda: torch_runner(p, k, 1))
        _same_training(res.params, base, label)
    if level >= 3:
        checks.update(check_diag(p, res, TORCH_GROUPS[level], every))
    _record(
        benchmark, kind, dtype, "torch", label, p, runner,
        level=level, stats_every=every, torch=torch.__version__, **checks,
    )  # fmt: skip


@pytest.mark.peer
def test_torch_matches_fastbp():
    """Equal work: PyTorch's statistics of the first mini-batch of ``chapter`` (float64)
    against fastbp's, both from the same start (1e-5 relative)."""
    _torch_or_skip()
    import fastbp

    backend_or_skip(_fastbp_backend())
    p = _problem("chapter", "float64")
    w = p.workload
    idx = p.order[: w.batch]
    t = run_once(torch_runner(p, 1, 4))
    net = fastbp.Network(
        list(w.sizes), activation=w.hidden, output=w.output, cost=w.cost, dtype="float64",
        init=(p.weights(), p.biases()),
    )  # fmt: skip
    m = len(idx)
    with fastbp.use_backend(_fastbp_backend()):
        h = net.fit(
            p.X[idx], p.labels[idx], epochs=1, batch_size=m, eta=w.eta,
            lmbda=w.lmbda * m / w.n,  # the same decay eta*lambda/n as over the epoch
            record="batch", stats="all", seed=0,
        )  # fmt: skip
    np.testing.assert_allclose(t.speeds[0], h.batch["speed"][0], rtol=1e-5)
    for c in dx.XSTAT_NAMES:
        np.testing.assert_allclose(t.xstats[c][0], h.batch[c][0], rtol=1e-5, err_msg=c)
    for c in ("delta", "z", "a"):
        np.testing.assert_array_equal(t.hist[c][0], h.histograms[c][0], err_msg=c)
    np.testing.assert_allclose(net.params, t.params, rtol=0, atol=1e-12)


# --------------------------------------------------------------------------- ratios
def ratio_table(measured: dict) -> str:
    """Seconds per epoch and the ratio to the same implementation's baseline."""
    lines = []
    for group in sorted(measured):
        rows = measured[group]
        lines.append(f"{group}:")
        for label, (impl, t) in rows.items():
            base = rows.get(BASELINE[impl])
            ratio = f"{t / base[1]:7.3f}x" if base else "      -"
            lines.append(f"  {label:<28} {t:10.4g} s/epoch   {ratio} {BASELINE[impl]}")
    return "\n".join(lines)


def interleaved_table(found: dict) -> str:
    """Per group: median seconds per epoch and the median per-round ratio, of the
    training (fit without its validation of X and y: the goals) and of all of fit."""
    lines = []
    for group in sorted(found):
        lines.append(f"{group} (interleaved rounds; ratios to fastbp record=None):")
        lines.append(f"  {'':<28} {'s/epoch':>10}   {'training':>8}   {'whole fit':>9}")
        for label, (t, r, f) in found[group].items():
            lines.append(f"  {label:<28} {t:10.4g}   {r:7.3f}x   {f:8.3f}x")
    return "\n".join(lines)


@pytest.fixture(scope="module", autouse=True)
def _print_ratios():
    yield
    if MEASURED:
        print("\nCost of the statistic groups (medians; ratio to the baseline of the same")
        print("implementation, same run):")
        print(ratio_table(MEASURED))
    if INTERLEAVED:
        print("\nThe same, fastbp's rows interleaved round by round (median of the ratios):")
        print(interleaved_table(INTERLEAVED))


def _from_json(path: str) -> tuple[dict, dict]:
    with open(path) as f:
        data = json.load(f)
    measured: dict = {}
    interleaved: dict = {}
    for b in data["benchmarks"]:
        e = b.get("extra_info", {})
        if e.get("impl") == "fastbp-diag-interleaved":
            interleaved[b["group"][: -len("-interleaved")]] = {
                label: (v["median_s"], v["ratio"], v.get("fit_ratio", float("nan")))
                for label, v in e["interleaved"].items()
            }
            continue
        if not str(e.get("impl", "")).endswith("-diag"):
            continue
        impl = e["impl"][: -len("-diag")]
        measured.setdefault(b["group"], {})[e["row"]] = (
            impl,
            b["stats"]["median"] * float(e.get("scale", 1.0)),
        )
    return measured, interleaved


if __name__ == "__main__":  # python benchmarks/test_diagnostics_cost.py RUN.json
    if len(sys.argv) != 2:
        sys.exit("usage: python benchmarks/test_diagnostics_cost.py BENCHMARK.json")
    _measured, _interleaved = _from_json(sys.argv[1])
    print(ratio_table(_measured))
    if _interleaved:
        print(interleaved_table(_interleaved))
