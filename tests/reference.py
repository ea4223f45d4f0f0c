"""An independent, per-example reference for fastbp, in the style of Nielsen's network2.

This module is the oracle of the test suite.  It is written for clarity, not speed:
one example at a time, column vectors of shape ``(n, 1)``, a Python loop over the
examples of a mini-batch, and the book's names (``activations``, ``zs``, ``delta``,
``nabla_b``, ``nabla_w``).  It shares no code with fastbp (it does not import it),
so that an error in fastbp cannot hide in the oracle too.

Conventions
-----------
Layers are numbered as in the book: ``a^0 = x`` is the input, ``l = 1 .. L`` are the
weight layers, ``z^l = W^l a^{l-1} + b^l`` and ``a^l = f_l(z^l)``.  In the Python lists
below, layer ``l`` of the book is index ``l - 1`` (``weights[0]`` is ``W^1``), exactly as
in fastbp's ``net.weights``.  ``W^l`` has shape ``(n_l, n_{l-1})`` (n_out x n_in).

``delta^l`` is the gradient of the *per-example* cost ``C_x`` with respect to ``z^l``.
The four backpropagation equations (Nielsen, chapter 2) are:

* **BP1** (output error):   ``delta^L = nabla_a C_x  (.)  f_L'(z^L)``; for the matched
  pairs sigmoid + cross-entropy, softmax + log-likelihood and linear + quadratic this
  simplifies to ``delta^L = a^L - y``; for sigmoid + quadratic it is
  ``(a^L - y) (.) sigma'(z^L)``.
* **BP2** (error of layer l): ``delta^l = ((W^{l+1})^T delta^{l+1})  (.)  f_l'(z^l)``.
* **BP3** (bias gradient):  ``dC_x/db^l = delta^l``.
* **BP4** (weight gradient): ``dC_x/dW^l = delta^l (a^{l-1})^T``.

The mini-batch gradient is the mean over its ``m`` examples:
``g_W = (1/m) sum_x delta^l_x (a^{l-1}_x)^T`` and ``g_b = (1/m) sum_x delta^l_x``.

Costs
-----
``cost_fn_network2`` evaluates the per-example cost from the output activation ``a``
exactly as network2 does (cross-entropy with ``np.nan_to_num`` applied element-wise
before the sum).  fastbp instead computes every cost from ``z`` (SPEC section 1), e.g.
cross-entropy as ``softplus(z) - y z`` summed over units and log-likelihood as
``logsumexp(z) - z_y``; ``cost_fn_from_z`` is that formula.  Where network2's value is
finite the two agree to round-off; where network2 returns ``nan_to_num``'s huge
number (``a`` rounded to exactly 0 or 1), the ``z`` form gives the true finite value.
The tests compare fastbp with ``cost_fn_from_z`` and check the agreement of the two
forms where ``a`` is well inside (0, 1).

Statistics
----------
:func:`statistics` and :func:`epoch_statistics` compute the per-layer statistics of
SPEC section 4 directly from their definitions, from the per-example deltas,
activations and pre-activations kept by :meth:`Reference.evaluate`.  Norms are
computed with scaling (:func:`nrm2`), so that speeds of a 300-layer sigmoid network
(about 1e-200) are tiny numbers and not zero.
"""

from __future__ import annotations

import math

import numpy as np

STAT_NAMES = (
    "speed",
    "grad_norm",
    "gain",
    "weight_norm",
    "update_ratio",
    "act_mean",
    "act_std",
    "sat_low",
    "sat_high",
    "slope_mean",
    "nonfinite",
)

#: Statistics that are counts or fractions (compared with a discrete tolerance).
DISCRETE_STATS = ("sat_low", "sat_high", "nonfinite")
#: Statistics that are continuous functions of the parameters and data.
CONTINUOUS_STATS = tuple(s for s in STAT_NAMES if s not in DISCRETE_STATS)

HIDDEN_ACTIVATIONS = ("sigmoid", "tanh", "relu", "leaky_relu", "softsign", "linear")
VALID_PAIRS = (
    ("sigmoid", "cross_entropy"),
    ("sigmoid", "quadratic"),
    ("softmax", "log_likelihood"),
    ("linear", "quadratic"),
)

#: max f'(z) of the activations for which saturation is defined (SPEC section 4).
MAX_PRIME = {"sigmoid": 0.25, "tanh": 1.0, "softsign": 1.0}
#: a unit is saturated when f'(z) < SATURATION_FRACTION * max f'.
SATURATION_FRACTION = 0.01


# ---------------------------------------------------------------------------
# Activations and their derivatives (element-wise, float64)
# ---------------------------------------------------------------------------


def sigmoid(z):
    """The logistic function, without overflow for large |z|."""
    z = np.asarray(z, dtype=np.float64)
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out


def sigmoid_prime(z):
    """sigma'(z) = sigma(z) (1 - sigma(z)), evaluated as e / (1 + e)^2 with e = exp(-|z|).

    network2 writes ``sigmoid(z) * (1 - sigmoid(z))``: the same function, but ``1 - s``
    cancels for saturated units (relative error eps / (1 - s): 1e-7 at z = 20 in
    float64, and exactly 0 from z ~ 37 on), so the oracle uses the exact form.
    """
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(-np.abs(z))
    return e / ((1.0 + e) * (1.0 + e))


def activation_fn(name, z, alpha=0.01):
    """f(z) for a hidden or output activation ``name`` (softmax over the whole vector)."""
    z = np.asarray(z, dtype=np.float64)
    if name == "sigmoid":
        return sigmoid(z)
    if name == "tanh":
        return np.tanh(z)
    if name == "relu":
        return np.where(z > 0, z, 0.0)
    if name == "leaky_relu":
        return np.where(z > 0, z, alpha * z)
    if name == "softsign":
        return z / (1.0 + np.abs(z))
    if name == "linear":
        return z.copy()
    if name == "softmax":
        e = np.exp(z - np.max(z))
        return e / np.sum(e)
    raise ValueError(f"unknown activation {name!r}")


def activation_prime(name, z, alpha=0.01):
    """f'(z) element-wise; relu has f'(0) = 0 (SPEC section 1).  Not defined for softmax."""
    z = np.asarray(z, dtype=np.float64)
    if name == "sigmoid":
        return sigmoid_prime(z)
    if name == "tanh":
        return 1.0 - np.tanh(z) ** 2
    if name == "relu":
        return np.where(z > 0, 1.0, 0.0)
    if name == "leaky_relu":
        return np.where(z > 0, 1.0, alpha)
    if name == "softsign":
        return 1.0 / (1.0 + np.abs(z)) ** 2
    if name == "linear":
        return np.ones_like(z)
    raise ValueError(f"f' is not element-wise for {name!r}")


def softplus(z):
    """log(1 + e^z), stable."""
    z = np.asarray(z, dtype=np.float64)
    return np.maximum(z, 0.0) + np.log1p(np.exp(-np.abs(z)))


# ---------------------------------------------------------------------------
# Costs (per example; y is a column vector of the output width)
# ---------------------------------------------------------------------------


def cost_fn_network2(cost, a, y):
    """Per-example cost from the output activation, exactly as network2.py writes it."""
    if cost == "cross_entropy":
        with np.errstate(all="ignore"):
            return float(np.sum(np.nan_to_num(-y * np.log(a) - (1 - y) * np.log(1 - a))))
    if cost == "quadratic":
        return float(0.5 * np.linalg.norm(a - y) ** 2)
    if cost == "log_likelihood":
        # -ln a_y for a one-hot y (network3's convention; -sum y ln a in general).
        with np.errstate(all="ignore"):
            hot = y > 0
            return float(-np.sum(y[hot] * np.log(a[hot])))
    raise ValueError(f"unknown cost {cost!r}")


def cost_fn_from_z(output, cost, z, y):
    """Per-example cost computed from z, as fastbp does (SPEC section 1)."""
    if cost == "cross_entropy":  # sigmoid output: -y ln s(z) - (1-y) ln(1-s(z)) = softplus(z) - y z
        return float(np.sum(softplus(z) - y * z))
    if cost == "log_likelihood":  # softmax output: -ln a_y = logsumexp(z) - sum y z (y sums to 1)
        zmax = np.max(z)
        lse = zmax + math.log(float(np.sum(np.exp(z - zmax))))
        return float(np.sum(y) * lse - np.sum(y * z))
    if cost == "quadratic":
        a = activation_fn(output, z)
        return float(0.5 * np.sum((a - y) ** 2))
    raise ValueError(f"unknown cost {cost!r}")


def output_delta(output, cost, z, a, y):
    """BP1: delta^L for the valid (output, cost) pairs of SPEC section 1."""
    if (output, cost) == ("sigmoid", "quadratic"):
        return (a - y) * sigmoid_prime(z)
    if (output, cost) in VALID_PAIRS:
        return a - y
    raise ValueError(f"invalid pair {(output, cost)!r}")


# ---------------------------------------------------------------------------
# Norms without underflow or overflow
# ---------------------------------------------------------------------------


def nrm2(x):
    """Euclidean (Frobenius) norm of all entries of ``x``, scaled like BLAS nrm2.

    ``sqrt(sum(x**2))`` underflows to 0 for entries below about 1e-154 and overflows
    above about 1e154; scaling by ``max|x|`` keeps every finite norm representable.
    """
    x = np.abs(np.asarray(x, dtype=np.float64).ravel())
    if x.size == 0:
        return 0.0
    s = float(np.max(x))
    if s == 0.0 or not math.isfinite(s):
        return s
    return s * math.sqrt(math.fsum((x / s) ** 2))


def ieee_div(a, b):
    """a / b with IEEE semantics (x/0 = +-inf, 0/0 = nan), as a ratio of norms is defined."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.float64(a) / np.float64(b))


def rel_norm_diff(a, b):
    """``||a - b|| / ||b||`` (scaled norms; 0 when both are exactly equal)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    nb = nrm2(b)
    d = nrm2(a - b)
    if d == 0.0:
        return 0.0
    return d / nb if nb > 0 else math.inf


# ---------------------------------------------------------------------------
# The reference network
# ---------------------------------------------------------------------------


class Trace:
    """Everything a pass over a set of examples produced, one row per example.

    Attributes (lists over layers ``l = 0 .. L-1``, i.e. the book's ``1 .. L``)
    ------------------------------------------------------------------------
    nabla_w, nabla_b : mean gradient of the data cost, shapes of W and b (b 1-D).
    deltas : ``(m, n_l)`` matrices of per-example deltas (the batch's Delta^l).
    activations : ``(m, n_l)`` matrices of a^l.
    zs : ``(m, n_l)`` matrices of z^l.
    cost : mean data cost over the set, computed from z (fastbp's convention).
    cost_network2 : the same mean with network2's formula from a.
    m : number of examples.
    """

    def __init__(self, nabla_w, nabla_b, deltas, activations, zs, cost, cost_network2, m):
        self.nabla_w = nabla_w
        self.nabla_b = nabla_b
        self.deltas = deltas
        self.activations = activations
        self.zs = zs
        self.cost = cost
        self.cost_network2 = cost_network2
        self.m = m


class Reference:
    """A network2-style network with fastbp's activations, output/cost pairs and updates.

    Parameters
    ----------
    sizes : list of int
        Units per layer, input first.
    weights, biases : lists of arrays
        ``W^l`` of shape ``(n_l, n_{l-1})`` and ``b^l`` of shape ``(n_l,)`` (copied, float64).
    activation : str
        Hidden activation (layers 1 .. L-1).
    output, cost : str
        A valid (output, cost) pair.
    alpha : float
        leaky_relu slope below 0.
    """

    def __init__(self, sizes, weights, biases, activation="sigmoid", output="sigmoid",
                 cost="cross_entropy", alpha=0.01):
        if (output, cost) not in VALID_PAIRS:
            raise ValueError(f"invalid pair {(output, cost)!r}")
        self.sizes = list(sizes)
        self.num_layers = len(sizes)
        self.L = len(sizes) - 1
        self.weights = [np.array(w, dtype=np.float64) for w in weights]
        # column vectors, as network2
        self.biases = [np.array(b, dtype=np.float64).reshape(-1, 1) for b in biases]
        self.activation = activation
        self.output = output
        self.cost = cost
        self.alpha = alpha
        self.layer_activations = [activation] * (self.L - 1) + [output]
        self.velocity_w = [np.zeros_like(w) for w in self.weights]
        self.velocity_b = [np.zeros_like(b) for b in self.biases]
        self.t = 0  # updates applied so far (the schedule's clock)
        for l, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            assert w.shape == (sizes[l + 1], sizes[l]), (l, w.shape)
            assert b.shape == (sizes[l + 1], 1), (l, b.shape)

    # -- accessors ----------------------------------------------------------

    def copy(self):
        other = Reference(self.sizes, self.weights, [b.ravel() for b in self.biases],
                          self.activation, self.output, self.cost, self.alpha)
        other.velocity_w = [v.copy() for v in self.velocity_w]
        other.velocity_b = [v.copy() for v in self.velocity_b]
        other.t = self.t
        return other

    @property
    def biases_1d(self):
        return [b.ravel().copy() for b in self.biases]

    # -- forward / backward, one example -------------------------------------

    def feedforward(self, x, weights=None, biases=None):
        """Return (activations, zs) of one example ``x`` (column vector)."""
        weights = self.weights if weights is None else weights
        biases = self.biases if biases is None else biases
        activation = x
        activations = [x]
        zs = []
        for l, (w, b) in enumerate(zip(weights, biases, strict=True)):
            z = np.dot(w, activation) + b
            zs.append(z)
            activation = activation_fn(self.layer_activations[l], z, self.alpha)
            activations.append(activation)
        return activations, zs

    def backprop(self, x, y, weights=None, biases=None):
        """network2's backprop for one example (column vectors).

        Returns ``(nabla_b, nabla_w, activations, zs, deltas)``; ``nabla_b[l]`` and
        ``nabla_w[l]`` are ``dC_x/db`` and ``dC_x/dW`` of book layer ``l + 1``.
        """
        weights = self.weights if weights is None else weights
        biases = self.biases if biases is None else biases
        nabla_b = [np.zeros(b.shape) for b in biases]
        nabla_w = [np.zeros(w.shape) for w in weights]
        activations, zs = self.feedforward(x, weights, biases)
        deltas = [None] * self.L
        # BP1
        delta = output_delta(self.output, self.cost, zs[-1], activations[-1], y)
        deltas[-1] = delta
        nabla_b[-1] = delta  # BP3
        nabla_w[-1] = np.dot(delta, activations[-2].transpose())  # BP4
        for l in range(2, self.num_layers):
            z = zs[-l]
            sp = activation_prime(self.layer_activations[-l], z, self.alpha)
            delta = np.dot(weights[-l + 1].transpose(), delta) * sp  # BP2
            deltas[-l] = delta
            nabla_b[-l] = delta  # BP3
            nabla_w[-l] = np.dot(delta, activations[-l - 1].transpose())  # BP4
        return nabla_b, nabla_w, activations, zs, deltas

    # -- a pass over a set -----------------------------------------------------

    def evaluate(self, X, Y, weights=None, biases=None):
        """Loop over the examples (rows of X, Y) and return a :class:`Trace`."""
        weights = self.weights if weights is None else weights
        biases = self.biases if biases is None else biases
        X = np.asarray(X, dtype=np.float64)
        Y = np.asarray(Y, dtype=np.float64)
        m = len(X)
        nabla_b = [np.zeros(b.shape) for b in biases]
        nabla_w = [np.zeros(w.shape) for w in weights]
        deltas = [np.empty((m, n)) for n in self.sizes[1:]]
        acts = [np.empty((m, n)) for n in self.sizes[1:]]
        zs_all = [np.empty((m, n)) for n in self.sizes[1:]]
        cost = 0.0
        cost2 = 0.0
        for i in range(m):
            x = X[i].reshape(-1, 1)
            y = Y[i].reshape(-1, 1)
            delta_nabla_b, delta_nabla_w, activations, zs, dl = self.backprop(x, y, weights, biases)
            nabla_b = [nb + dnb for nb, dnb in zip(nabla_b, delta_nabla_b, strict=True)]
            nabla_w = [nw + dnw for nw, dnw in zip(nabla_w, delta_nabla_w, strict=True)]
            for l in range(self.L):
                deltas[l][i] = dl[l].ravel()
                acts[l][i] = activations[l + 1].ravel()
                zs_all[l][i] = zs[l].ravel()
            cost += cost_fn_from_z(self.output, self.cost, zs[-1], y)
            cost2 += cost_fn_network2(self.cost, activations[-1], y)
        return Trace(
            nabla_w=[nw / m for nw in nabla_w],
            nabla_b=[nb.ravel() / m for nb in nabla_b],
            deltas=deltas,
            activations=acts,
            zs=zs_all,
            cost=cost / m,
            cost_network2=cost2 / m,
            m=m,
        )

    def total_cost(self, X, Y, lmbda=0.0):
        """network2's total_cost: mean data cost + 0.5 * lmbda / N * sum ||W||_F^2."""
        N = len(X)
        return self.evaluate(X, Y).cost + 0.5 * (lmbda / N) * sum(
            np.linalg.norm(w) ** 2 for w in self.weights
        )

    def feedforward_batch(self, X):
        """Output activations of every row of X, ``(N, n_L)``."""
        rows = [np.asarray(x, dtype=np.float64).reshape(-1, 1) for x in X]
        return np.vstack([self.feedforward(x)[0][-1].ravel() for x in rows])

    # -- updates (SPEC section 3) ---------------------------------------------

    def update_mini_batch(self, X, Y, eta, lmbda=0.0, n=None, momentum=0.0, nesterov=False,
                          schedule=None):
        """Apply one update with the mini-batch (X, Y) and return a :class:`Step`.

        * ``momentum == 0`` and no schedule: network2's plain SGD,
          ``W <- (1 - eta lmbda / n) W - eta g_W``, ``b <- b - eta g_b`` (velocity untouched).
        * classical momentum: ``v_W <- mu_t v_W - eta (g_W + lmbda/n W)``, ``W <- W + v_W``;
          ``v_b <- mu_t v_b - eta g_b``, ``b <- b + v_b``.
        * Nesterov: the same with ``g`` and the L2 term taken at the look-ahead point
          ``theta + mu_t v``.

        ``schedule`` is ``(mu_max, period)`` for Sutskever's
        ``mu_t = min(1 - 1/(2 (floor(t/period) + 1)), mu_max)``, ``t`` = updates so far.
        """
        n = len(X) if n is None else n
        if schedule is not None:
            mu_max, period = schedule
            mu = min(1.0 - 1.0 / (2.0 * (self.t // period + 1)), mu_max)
            use_momentum = True
        else:
            mu = momentum
            use_momentum = momentum != 0.0 or nesterov
        w_old = [w.copy() for w in self.weights]
        b_old = [b.copy() for b in self.biases]
        if use_momentum and nesterov:
            w_eval = [w + mu * v for w, v in zip(self.weights, self.velocity_w, strict=True)]
            b_eval = [b + mu * v for b, v in zip(self.biases, self.velocity_b, strict=True)]
        else:
            w_eval, b_eval = self.weights, self.biases
        trace = self.evaluate(X, Y, w_eval, b_eval)
        if not use_momentum:
            self.weights = [(1 - eta * (lmbda / n)) * w - eta * nw
                            for w, nw in zip(self.weights, trace.nabla_w, strict=True)]
            self.biases = [b - eta * nb.reshape(-1, 1)
                           for b, nb in zip(self.biases, trace.nabla_b, strict=True)]
        else:
            self.velocity_w = [mu * v - eta * (nw + (lmbda / n) * we)
                               for v, nw, we in zip(self.velocity_w, trace.nabla_w, w_eval,
                                                    strict=True)]
            self.velocity_b = [mu * v - eta * nb.reshape(-1, 1)
                               for v, nb in zip(self.velocity_b, trace.nabla_b, strict=True)]
            self.weights = [w + v for w, v in zip(self.weights, self.velocity_w, strict=True)]
            self.biases = [b + v for b, v in zip(self.biases, self.velocity_b, strict=True)]
        self.t += 1
        return Step(trace, w_old, b_old, [w.copy() for w in self.weights], mu)

    def train_epoch(self, X, Y, order, batch_size, eta, lmbda=0.0, momentum=0.0, nesterov=False,
                    schedule=None):
        """One epoch over the rows ``X[order]`` in mini-batches; returns the list of Steps."""
        n = len(X)
        steps = []
        for k in range(0, n, batch_size):
            idx = np.asarray(order)[k:k + batch_size]
            steps.append(self.update_mini_batch(X[idx], Y[idx], eta, lmbda, n, momentum, nesterov,
                                                schedule))
        return steps


class Step:
    """One applied update: the trace at the evaluation point, W before and after, mu_t."""

    def __init__(self, trace, w_old, b_old, w_new, mu):
        self.trace = trace
        self.w_old = w_old
        self.b_old = b_old
        self.w_new = w_new
        self.mu = mu


# ---------------------------------------------------------------------------
# Statistics from their definitions (SPEC section 4)
# ---------------------------------------------------------------------------


def saturation(name, z, alpha=0.01):
    """(sat_low, sat_high) fractions over all entries of ``z`` for activation ``name``.

    sigmoid, tanh, softsign: fraction with f'(z) < 1% of max f' and z < 0 (resp. z > 0);
    relu: sat_low is the fraction with z <= 0 (dead units), sat_high = 0;
    linear, softmax: NaN (no saturation).
    leaky_relu: SPEC section 4 does not say; see ``LEAKY_RELU_SATURATION``.
    """
    z = np.asarray(z, dtype=np.float64)
    if name in MAX_PRIME:
        sat = activation_prime(name, z, alpha) < SATURATION_FRACTION * MAX_PRIME[name]
        return float(np.mean(sat & (z < 0))), float(np.mean(sat & (z > 0)))
    if name == "relu" or (name == "leaky_relu" and LEAKY_RELU_SATURATION == "relu"):
        return float(np.mean(z <= 0)), 0.0
    return math.nan, math.nan


#: SPEC section 4 does not list leaky_relu.  fastbp documents (numpy backend,
#: ``_layer_moments``) that leaky_relu counts like relu: sat_low = fraction with
#: z <= 0, sat_high = 0.  "nan" would be the other reading (undefined).
LEAKY_RELU_SATURATION = "relu"


def slope_mean(name, z, alpha=0.01):
    """mean f'(z) over all entries; NaN for softmax."""
    if name == "softmax":
        return math.nan
    return float(np.mean(activation_prime(name, z, alpha)))


def statistics(ref, trace, w_old=None, w_new=None):
    """Per-layer statistics of one pass (a mini-batch, or a probe set), as a dict name -> (L,).

    ``w_old``/``w_new`` are the weights before and after the update (mini-batch
    statistics); without them (probe / ``gradient()``) ``weight_norm`` is ``||W||_F``
    of the reference's current weights and ``update_ratio`` is NaN.
    """
    L = ref.L
    out = {name: np.full(L, np.nan) for name in STAT_NAMES}
    for l in range(L):
        act = ref.layer_activations[l]
        out["speed"][l] = nrm2(trace.nabla_b[l])
        out["grad_norm"][l] = nrm2(trace.nabla_w[l])
        if l < L - 1:
            out["gain"][l] = ieee_div(nrm2(trace.deltas[l]), nrm2(trace.deltas[l + 1]))
        if w_new is None:
            out["weight_norm"][l] = nrm2(ref.weights[l])
            out["update_ratio"][l] = math.nan
        else:
            out["weight_norm"][l] = nrm2(w_new[l])
            out["update_ratio"][l] = ieee_div(nrm2(w_new[l] - w_old[l]), nrm2(w_old[l]))
        a = trace.activations[l]
        out["act_mean"][l] = float(np.mean(a))
        out["act_std"][l] = float(np.std(a))  # two-pass, population (ddof=0)
        out["sat_low"][l], out["sat_high"][l] = saturation(act, trace.zs[l], ref.alpha)
        out["slope_mean"][l] = slope_mean(act, trace.zs[l], ref.alpha)
        out["nonfinite"][l] = 0.0
    return out


def step_statistics(ref, step):
    """Mini-batch statistics (record="batch") of one :class:`Step`."""
    return statistics(ref, step.trace, step.w_old, step.w_new)


def epoch_statistics(ref, steps, w_start, w_end):
    """Epoch reductions (record="epoch") of SPEC section 4 over a list of Steps.

    speed: ||sum_k m_k g_b,k / sum_k m_k||; grad_norm: the same with g_W;
    gain: plain mean over mini-batches; weight_norm: ||W_end||;
    update_ratio: ||W_end - W_start|| / ||W_start||; act_mean/act_std, sat_low/high,
    slope_mean: pooled over every (example, unit) pair of the epoch; nonfinite: count
    of flagged mini-batches (0 here: the reference has no faults).
    """
    L = ref.L
    ms = np.array([s.trace.m for s in steps], dtype=np.float64)
    M = ms.sum()
    out = {name: np.full(L, np.nan) for name in STAT_NAMES}
    for l in range(L):
        act = ref.layer_activations[l]
        gb = sum(m * s.trace.nabla_b[l] for m, s in zip(ms, steps, strict=True)) / M
        gw = sum(m * s.trace.nabla_w[l] for m, s in zip(ms, steps, strict=True)) / M
        out["speed"][l] = nrm2(gb)
        out["grad_norm"][l] = nrm2(gw)
        if l < L - 1:
            out["gain"][l] = float(np.mean([ieee_div(nrm2(s.trace.deltas[l]),
                                                     nrm2(s.trace.deltas[l + 1])) for s in steps]))
        out["weight_norm"][l] = nrm2(w_end[l])
        out["update_ratio"][l] = ieee_div(nrm2(w_end[l] - w_start[l]), nrm2(w_start[l]))
        a = np.concatenate([s.trace.activations[l].ravel() for s in steps])
        z = np.concatenate([s.trace.zs[l].ravel() for s in steps])
        out["act_mean"][l] = float(np.mean(a))
        out["act_std"][l] = float(np.std(a))
        out["sat_low"][l], out["sat_high"][l] = saturation(act, z, ref.alpha)
        out["slope_mean"][l] = slope_mean(act, z, ref.alpha)
        out["nonfinite"][l] = 0.0
    return out


def sutskever_mu(t, mu_max, period=250):
    """Sutskever et al. (2013) eq. 5: min(1 - 2^(-1 - log2(floor(t/period) + 1)), mu_max)."""
    return min(1.0 - 2.0 ** (-1.0 - math.log2(t // period + 1)), mu_max)


# ---------------------------------------------------------------------------
# Targets
# ---------------------------------------------------------------------------


def one_hot(labels, width):
    """Integer labels -> one-hot float64 matrix ``(N, width)``."""
    labels = np.asarray(labels)
    Y = np.zeros((len(labels), width))
    Y[np.arange(len(labels)), labels.astype(np.int64)] = 1.0
    return Y
