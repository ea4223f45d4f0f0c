"""The peers fastbp is measured against, written here from the same start and order.

Every factory takes a :class:`_harness.Problem`, the number ``k`` of mini-batches
to run from the start of the epoch (the epoch's order, full batches of
``workload.batch`` examples, the last one possibly shorter) and a record mode:

``"none"``   plain training;
``"speed"``  also record ||g_b|| of every layer after every mini-batch (the
             chapter's speed of learning, the one statistic all peers can give).

and returns a :class:`_harness.Runner` whose ``result()`` is in fastbp's layout
(flat parameters, W as n_out x n_in) so that :func:`_harness.check_peer` can
compare it with the NumPy reference backend.  Update rule everywhere (network2,
SPEC section 3): ``W <- (1 - eta*lambda/n) W - eta g_W``, ``b <- b - eta g_b``,
``g`` the mean gradient of the data cost over the mini-batch.

Peers
-----
``network2``   Nielsen's network2.py style: column vectors, one example at a time,
               gradients summed over the mini-batch.  Too slow for whole epochs:
               suites time the first ``k`` mini-batches and extrapolate.
``numpy-loop`` The same in batch-matrix form: one NumPy expression per layer.
``sklearn``    ``MLPClassifier(solver="sgd")``, one ``partial_fit`` over the epoch.
``torch``      PyTorch eager: a hand-written loop, autograd, in-place no_grad update.
``jax-loop``   JAX: one ``jax.jit`` step per mini-batch, called from Python.
``jax-scan``   JAX: the whole epoch as one ``jax.jit`` ``lax.scan`` over mini-batches.
"""

from __future__ import annotations

import warnings

import numpy as np
from _harness import Problem, Result, Runner

PEERS = ("network2", "numpy-loop", "sklearn", "torch", "jax-loop", "jax-scan")
#: The module a peer needs (None: only NumPy).
NEEDS = {
    "network2": None,
    "numpy-loop": None,
    "sklearn": "sklearn",
    "torch": "torch",
    "jax-loop": "jax",
    "jax-scan": "jax",
}


def _check_supported(p: Problem) -> None:
    w = p.workload
    assert w.hidden in ("sigmoid", "tanh", "relu"), w.hidden
    assert (w.output, w.cost) in (("sigmoid", "cross_entropy"), ("softmax", "log_likelihood"))


def _flat(p: Problem, weights, biases) -> np.ndarray:
    """Per-layer arrays (W as n_out x n_in, b of any shape) into fastbp's flat layout."""
    out = np.empty(p.layout.n_params, dtype=np.float64)
    for dst, src in zip(p.layout.weight_views(out), weights):
        dst[...] = np.asarray(src, dtype=np.float64).reshape(dst.shape)
    for dst, src in zip(p.layout.bias_views(out), biases):
        dst[...] = np.asarray(src, dtype=np.float64).reshape(dst.shape)
    return out


def _k_examples(p: Problem, k: int) -> int:
    return min(k * p.workload.batch, p.workload.n)


# ---------------------------------------------------------------- NumPy activations
def _act(name):
    if name == "sigmoid":

        def f(z):
            with np.errstate(over="ignore"):
                return 1.0 / (1.0 + np.exp(-z))

        return f
    if name == "tanh":
        return np.tanh
    if name == "relu":
        return lambda z: np.maximum(z, 0)
    raise ValueError(name)


def _dact(name):
    """f'(z) from a = f(z)."""
    if name == "sigmoid":
        return lambda a: a * (1 - a)
    if name == "tanh":
        return lambda a: 1 - a * a
    if name == "relu":
        return lambda a: (a > 0).astype(a.dtype)
    raise ValueError(name)


def _softmax(z, axis):
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


# ---------------------------------------------------------------- network2 style
def network2(p: Problem, k: int, record: str) -> Runner:
    """network2.py's SGD step, one example at a time (column vectors)."""
    _check_supported(p)
    w = p.workload
    dt = p.dtype.type
    f, df = _act(w.hidden), _dact(w.hidden)
    out_f = _act("sigmoid") if w.output == "sigmoid" else (lambda z: _softmax(z, 0))
    batches = p.batch_indices(k)
    n = w.n
    speeds = np.zeros((k, w.L)) if record == "speed" else None
    state = {}

    def reset():
        state["w"] = [W.copy() for W in p.weights()]
        state["b"] = [b.copy().reshape(-1, 1) for b in p.biases()]
        return (), {}

    def backprop(x, y, weights, biases):
        nabla_b = [None] * len(biases)
        nabla_w = [None] * len(weights)
        activation = x
        activations = [x]
        for b, W in zip(biases[:-1], weights[:-1]):
            activation = f(np.dot(W, activation) + b)
            activations.append(activation)
        activation = out_f(np.dot(weights[-1], activation) + biases[-1])
        activations.append(activation)
        delta = activation - y  # cross-entropy/sigmoid and log-likelihood/softmax
        nabla_b[-1] = delta
        nabla_w[-1] = np.dot(delta, activations[-2].T)
        for l in range(2, len(weights) + 1):
            delta = np.dot(weights[-l + 1].T, delta) * df(activations[-l])
            nabla_b[-l] = delta
            nabla_w[-l] = np.dot(delta, activations[-l - 1].T)
        return nabla_b, nabla_w

    def run():
        weights, biases = state["w"], state["b"]
        for i, idx in enumerate(batches):
            nabla_b = [np.zeros(b.shape, dtype=dt) for b in biases]
            nabla_w = [np.zeros(W.shape, dtype=dt) for W in weights]
            for j in idx:
                x = p.X[j].reshape(-1, 1)
                y = p.Y[j].reshape(-1, 1)
                delta_nabla_b, delta_nabla_w = backprop(x, y, weights, biases)
                nabla_b = [nb + dnb for nb, dnb in zip(nabla_b, delta_nabla_b)]
                nabla_w = [nw + dnw for nw, dnw in zip(nabla_w, delta_nabla_w)]
            m = len(idx)
            decay = dt(1 - w.eta * (w.lmbda / n))
            step = dt(w.eta / m)
            weights = [decay * W - step * nw for W, nw in zip(weights, nabla_w)]
            biases = [b - step * nb for b, nb in zip(biases, nabla_b)]
            if speeds is not None:
                speeds[i] = [np.linalg.norm(nb) / m for nb in nabla_b]
        state["w"], state["b"] = weights, biases

    def result():
        return Result(_flat(p, state["w"], state["b"]), speeds=speeds)

    return Runner(reset, run, result, k, _k_examples(p, k))


# ---------------------------------------------------------------- NumPy mini-batch loop
def numpy_loop(p: Problem, k: int, record: str) -> Runner:
    """A plain NumPy mini-batch loop (network2's update, vectorised over the batch)."""
    _check_supported(p)
    w = p.workload
    dt = p.dtype.type
    f, df = _act(w.hidden), _dact(w.hidden)
    out_f = _act("sigmoid") if w.output == "sigmoid" else (lambda z: _softmax(z, 1))
    work = p.params0.copy()
    Ws = p.layout.weight_views(work)
    bs = p.layout.bias_views(work)
    batches = p.batch_indices(k)
    speeds = np.zeros((k, w.L)) if record == "speed" else None
    decay = dt(1 - w.eta * w.lmbda / w.n)
    eta = dt(w.eta)
    L = w.L

    def reset():
        work[...] = p.params0
        return (), {}

    def run():
        for i, idx in enumerate(batches):
            a = p.X[idx]
            activations = [a]
            for W, b in zip(Ws[:-1], bs[:-1]):
                a = f(a @ W.T + b)
                activations.append(a)
            a = out_f(a @ Ws[-1].T + bs[-1])
            delta = a - p.Y[idx]
            m = dt(len(idx))
            for l in range(L - 1, -1, -1):
                nabla_w = delta.T @ activations[l] / m
                nabla_b = delta.mean(axis=0)
                if speeds is not None:
                    speeds[i, l] = np.linalg.norm(nabla_b)
                if l > 0:
                    delta = (delta @ Ws[l]) * df(activations[l])
                if decay != 1:
                    Ws[l] *= decay
                Ws[l] -= eta * nabla_w
                bs[l] -= eta * nabla_b

    def result():
        return Result(work.astype(np.float64), speeds=speeds)

    return Runner(reset, run, result, k, _k_examples(p, k))


# ---------------------------------------------------------------- scikit-learn
def sklearn(p: Problem, k: int, record: str) -> Runner:
    """``MLPClassifier(solver="sgd")``; the timed epoch is one ``partial_fit``.

    Matching settings: ``learning_rate_init=eta``, constant rate, no momentum,
    ``batch_size=m``, ``shuffle=False`` on rows pre-arranged in the epoch's order
    (the gather is done before the timed region), and ``alpha = lambda*m/n``:
    scikit-learn adds ``alpha*W/m_batch`` to the mean gradient, network2 decays by
    ``eta*lambda/n``, equal for full mini-batches.  A sigmoid/cross-entropy output is
    obtained as scikit-learn's multilabel case (one-hot targets): logistic outputs
    and the binary log-loss summed over outputs, network2's cross-entropy.  The
    start parameters are written into ``coefs_``/``intercepts_`` in place after an
    untimed initialising call.  scikit-learn also computes the loss of every
    mini-batch (with its L2 term) and validates its input in each call.
    """
    _check_supported(p)
    from sklearn.neural_network import MLPClassifier

    w = p.workload
    m = w.batch
    rows = p.order[: _k_examples(p, k)]
    Xo = np.ascontiguousarray(p.X[rows])
    multilabel = w.output == "sigmoid"
    yo = p.Y[rows].astype(np.int64) if multilabel else p.labels[rows]
    clf = MLPClassifier(
        hidden_layer_sizes=w.sizes[1:-1],
        activation={"sigmoid": "logistic", "tanh": "tanh", "relu": "relu"}[w.hidden],
        solver="sgd",
        alpha=w.lmbda * m / w.n,
        batch_size=m,
        learning_rate="constant",
        learning_rate_init=w.eta,
        momentum=0.0,
        nesterovs_momentum=False,
        shuffle=False,
        max_iter=1,
        tol=0.0,
        n_iter_no_change=10**9,
        random_state=0,
    )
    init_y = p.Y[:m].astype(np.int64) if multilabel else np.arange(m) % 10
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning of the 1-iteration fit
        clf.fit(np.ascontiguousarray(p.X[:m]), init_y)
    assert clf.out_activation_ == ("logistic" if multilabel else "softmax")
    assert clf.coefs_[0].dtype == p.dtype
    speeds = np.zeros((k, w.L)) if record == "speed" else None
    if speeds is not None:
        optimizer = clf._optimizer
        original = optimizer.update_params
        count = [0]

        def update_params(params, grads):  # grads = coef grads + intercept grads (= g_b)
            speeds[count[0]] = [np.linalg.norm(g) for g in grads[w.L :]]
            count[0] += 1
            original(params, grads)

        optimizer.update_params = update_params

    def reset():
        for c, W in zip(clf.coefs_, p.weights()):
            c[...] = W.T
        for c, b in zip(clf.intercepts_, p.biases()):
            c[...] = b
        if speeds is not None:
            count[0] = 0
        return (), {}

    def run():
        clf.partial_fit(Xo, yo)

    def result():
        return Result(_flat(p, [c.T for c in clf.coefs_], clf.intercepts_), speeds=speeds)

    return Runner(reset, run, result, k, _k_examples(p, k))


# ---------------------------------------------------------------- PyTorch
def torch(p: Problem, k: int, record: str) -> Runner:
    """PyTorch eager: forward with ``addmm``, ``torch.autograd.grad``, in-place update.

    The update is written by hand under ``torch.no_grad()`` (``W.mul_(decay).sub_(g,
    alpha=eta)``): on workload A it is 20-30% faster per mini-batch than
    ``torch.optim.SGD(weight_decay=lambda/n)`` (the same arithmetic), so the faster
    is the peer.  The loss is
    ``binary_cross_entropy_with_logits(reduction="sum")/m`` (cross-entropy summed
    over outputs, mean over examples) or ``cross_entropy`` (log-likelihood of a
    softmax), both from ``z``.  Index tensors are built before the timed region.
    """
    _check_supported(p)
    import torch
    import torch.nn.functional as F

    w = p.workload
    X = torch.from_numpy(p.X)
    Y = torch.from_numpy(p.Y)
    labels = torch.from_numpy(p.labels)
    batches = [torch.from_numpy(idx) for idx in p.batch_indices(k)]
    Ws = [torch.tensor(W, requires_grad=True) for W in p.weights()]
    bs = [torch.tensor(b, requires_grad=True) for b in p.biases()]
    act = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu}[w.hidden]
    params = Ws + bs
    decay = 1.0 - w.eta * w.lmbda / w.n
    eta = w.eta
    costs = torch.zeros(k, dtype=torch.float64)
    speeds = torch.zeros((k, w.L), dtype=torch.float64) if record == "speed" else None
    sigmoid_ce = w.output == "sigmoid"

    def reset():
        with torch.no_grad():
            for t, W in zip(Ws, p.weights()):
                t.copy_(torch.from_numpy(W))
            for t, b in zip(bs, p.biases()):
                t.copy_(torch.from_numpy(b))
        return (), {}

    def run():
        for i, idx in enumerate(batches):
            a = X[idx]
            for W, b in zip(Ws[:-1], bs[:-1]):
                a = act(torch.addmm(b, a, W.t()))
            z = torch.addmm(bs[-1], a, Ws[-1].t())
            if sigmoid_ce:
                loss = F.binary_cross_entropy_with_logits(z, Y[idx], reduction="sum") / len(idx)
            else:
                loss = F.cross_entropy(z, labels[idx])
            grads = torch.autograd.grad(loss, params)
            with torch.no_grad():
                for W, g in zip(Ws, grads[: len(Ws)]):
                    if decay != 1.0:
                        W.mul_(decay)
                    W.sub_(g, alpha=eta)
                for b, g in zip(bs, grads[len(Ws) :]):
                    b.sub_(g, alpha=eta)
                if speeds is not None:
                    speeds[i] = torch.stack([torch.linalg.vector_norm(g) for g in grads[len(Ws) :]])
                costs[i] = loss

    def result():
        with torch.no_grad():
            params = _flat(p, [t.numpy() for t in Ws], [t.numpy() for t in bs])
        return Result(
            params, costs=costs.numpy().copy(), speeds=None if speeds is None else speeds.numpy()
        )

    return Runner(reset, run, result, k, _k_examples(p, k))


# ---------------------------------------------------------------- JAX
def _jax():
    import jax

    jax.config.update("jax_enable_x64", True)  # float64 workloads; float32 ones stay float32
    return jax


def _jax_model(p: Problem, record: str):
    """The jitted-to-be pieces shared by the step loop and the scan epoch."""
    jax = _jax()
    jnp = jax.numpy
    w = p.workload
    act = {"sigmoid": jax.nn.sigmoid, "tanh": jnp.tanh, "relu": jax.nn.relu}[w.hidden]
    decay = 1.0 - w.eta * w.lmbda / w.n
    sigmoid_ce = w.output == "sigmoid"

    def loss_fn(params, xb, yb):
        a = xb
        for W, b in params[:-1]:
            a = act(a @ W.T + b)
        W, b = params[-1]
        z = a @ W.T + b
        if sigmoid_ce:
            per_example = jnp.sum(jax.nn.softplus(z) - yb * z, axis=1)
        else:
            per_example = -jnp.sum(yb * jax.nn.log_softmax(z), axis=1)
        return jnp.mean(per_example)

    def update(params, xb, yb):
        loss, grads = jax.value_and_grad(loss_fn)(params, xb, yb)
        if decay != 1.0:
            new = [
                (W * decay - w.eta * gW, b - w.eta * gb) for (W, b), (gW, gb) in zip(params, grads)
            ]
        else:
            new = [(W - w.eta * gW, b - w.eta * gb) for (W, b), (gW, gb) in zip(params, grads)]
        speeds = jnp.stack([jnp.linalg.norm(gb) for _, gb in grads]) if record == "speed" else None
        return new, loss, speeds

    return jax, update


def _jax_data(p: Problem):
    """Device copies of X and Y (made once per problem, outside any timed region)."""
    if "jax" not in p.cache:
        jax = _jax()
        p.cache["jax"] = (jax.device_put(p.X), jax.device_put(p.Y))
    return p.cache["jax"]


def _jax_params(p: Problem):
    jax = _jax()
    return [
        (jax.device_put(W.copy()), jax.device_put(b.copy()))
        for W, b in zip(p.weights(), p.biases())
    ]


def _jax_result(p: Problem, params, costs, speeds) -> Result:
    import jax

    params = jax.device_get(params)
    return Result(
        _flat(p, [W for W, _ in params], [b for _, b in params]),
        costs=np.asarray(costs, dtype=np.float64),
        speeds=None if speeds is None else np.asarray(speeds, dtype=np.float64),
    )


def jax_loop(p: Problem, k: int, record: str) -> Runner:
    """One ``jax.jit`` step per mini-batch (gather inside), parameters donated."""
    jax, update = _jax_model(p, record)
    X, Y = _jax_data(p)
    batches = [jax.device_put(idx) for idx in p.batch_indices(k)]
    step = jax.jit(lambda params, X, Y, idx: update(params, X[idx], Y[idx]), donate_argnums=0)
    state = {}

    def reset():
        state["params"] = _jax_params(p)
        return (), {}

    def run():
        params = state["params"]
        costs, speeds = [], []
        for idx in batches:
            params, loss, sp = step(params, X, Y, idx)
            costs.append(loss)
            speeds.append(sp)
        jax.block_until_ready((params, costs, speeds))
        state.update(params=params, costs=costs, speeds=speeds)

    def result():
        sp = None if record != "speed" else np.stack([np.asarray(s) for s in state["speeds"]])
        return _jax_result(p, state["params"], [float(c) for c in state["costs"]], sp)

    return Runner(reset, run, result, k, _k_examples(p, k))


def jax_scan(p: Problem, k: int, record: str) -> Runner:
    """The epoch as one jitted ``lax.scan`` over the full mini-batches (+ one step for a
    shorter last one), parameters donated."""
    jax, update = _jax_model(p, record)
    jnp = jax.numpy
    X, Y = _jax_data(p)
    w = p.workload
    idx_all = p.batch_indices(k)
    full = [idx for idx in idx_all if len(idx) == w.batch]
    rest = [idx for idx in idx_all if len(idx) != w.batch]
    assert len(rest) <= 1 and (not rest or len(full) == k - 1)
    idx_mat = jax.device_put(np.stack(full))
    idx_rest = jax.device_put(rest[0]) if rest else None

    def body(params, idx):
        params, loss, sp = update(params, X[idx], Y[idx])
        return params, (loss, sp)

    @jax.jit
    def _epoch(params, idx_mat):
        return jax.lax.scan(body, params, idx_mat)

    epoch = jax.jit(_epoch, donate_argnums=0)
    step = jax.jit(lambda params, idx: update(params, X[idx], Y[idx]), donate_argnums=0)
    state = {}

    def reset():
        state["params"] = _jax_params(p)
        return (), {}

    def run():
        params, (costs, speeds) = epoch(state["params"], idx_mat)
        if idx_rest is not None:
            params, loss, sp = step(params, idx_rest)
            costs = jnp.concatenate([costs, loss[None]])
            if sp is not None:
                speeds = jnp.concatenate([speeds, sp[None]])
        jax.block_until_ready((params, costs, speeds))
        state.update(params=params, costs=costs, speeds=speeds)

    def result():
        sp = None if record != "speed" else np.asarray(state["speeds"])
        return _jax_result(p, state["params"], np.asarray(state["costs"]), sp)

    return Runner(reset, run, result, k, _k_examples(p, k))


FACTORIES = {
    "network2": network2,
    "numpy-loop": numpy_loop,
    "sklearn": sklearn,
    "torch": torch,
    "jax-loop": jax_loop,
    "jax-scan": jax_scan,
}


# ---------------------------------------------------------------- BLAS products alone
def gemm_only(p: Problem, k: int, blas: str = "scipy") -> Runner:
    """The matrix products of ``k`` mini-batches, alone, with SciPy's BLAS (fastbp's),
    or oneMKL's (``blas="mkl"``, fastbp.set_blas's).

    Per mini-batch and layer: Z = A_prev W^T (forward), G = Delta^T A_prev (weight
    gradient) and, except into the input layer, Delta_prev = Delta W (backward), on
    preallocated C-contiguous arrays of the workload's shapes (no gather, no
    element-wise work, no update).  This is the "same matrix products done alone"
    of workload B's throughput goal.
    """
    from _harness import product_into

    w = p.workload
    into = product_into(blas, p.dtype)
    rng = np.random.default_rng(0)
    m = w.batch
    Ws = [W.copy() for W in p.weights()]
    A = [rng.random((m, n)).astype(p.dtype) for n in w.sizes]
    D = [rng.random((m, n)).astype(p.dtype) for n in w.sizes]
    G = [np.empty_like(W) for W in Ws]
    # Check once that the wrapper computes in place, without copies, the right product.
    # (to 1e-5 of the largest entry: another library sums in another order, and the
    # relative error of an entry near zero, a sum that cancels, means nothing)
    into(A[1], A[0], Ws[0], tb=True)
    want = A[0] @ Ws[0].T
    np.testing.assert_allclose(A[1], want, rtol=1e-4, atol=1e-5 * np.abs(want).max())
    sizes = [min(m, w.n - i * m) for i in range(k)]

    def run():
        for mb in sizes:
            for l in range(w.L):
                into(A[l + 1][:mb], A[l][:mb], Ws[l], tb=True)
            for l in range(w.L - 1, -1, -1):
                into(G[l], D[l + 1][:mb], A[l][:mb], ta=True)
                if l > 0:
                    into(D[l][:mb], D[l + 1][:mb], Ws[l])

    return Runner(lambda: ((), {}), run, lambda: None, k, sum(sizes))
