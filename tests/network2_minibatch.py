"""A plain NumPy mini-batch SGD loop in the style of Nielsen's network2, for accuracy checks.

Independent of fastbp (no import of it): network2's algorithm (sigmoid layers,
cross-entropy cost with delta = a - y, L2 weight decay ``(1 - eta*lmbda/n)`` once per
mini-batch, biases not regularised, the last mini-batch shorter), written in
batch-matrix form with column vectors (``W @ A``, one column per example), so that 30
epochs of 50,000 images take a minute instead of network2's hour.  The per-example
oracle of the test suite is ``tests/reference.py``; this module reproduces network2's
*training runs*.

To compare like with like, a run takes the initial weights and biases (e.g. from a
``fastbp.Network(sizes, seed=s)``, which draws network2's initialiser) and shuffles
with ``numpy.random.Generator(PCG64(seed))``, one ``permutation(n)`` per epoch, as
``Network.fit(..., seed=seed)`` does.  The two runs then start from the same point and
see the same mini-batches; in float64 they agree to round-off for a while and then
drift apart chaotically, so what is compared over 30 epochs is the accuracy.

Used by ``tests/test_fashion.py`` (short runs) and by
``docs/chapter5/compare_accuracy.py`` (the book's full 30-epoch runs).
"""

from __future__ import annotations

import time

import numpy as np


def sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # = 1 / (1 + exp(-z)), without overflow


def feedforward(weights, biases, X):
    """Outputs for the rows of X: (N, n_L)."""
    A = X.T
    for W, b in zip(weights, biases):
        A = sigmoid(W @ A + b[:, None])
    return A.T


def accuracy(weights, biases, X, y):
    """Fraction of rows whose argmax output equals the label."""
    return float(np.mean(np.argmax(feedforward(weights, biases, X), axis=1) == y))


def update_mini_batch(weights, biases, Xb, Yb, eta, lmbda, n):
    """One network2 step on the mini-batch (columns of Xb, Yb); in place."""
    m = Xb.shape[1]
    activation = Xb
    activations = [Xb]
    zs = []
    for W, b in zip(weights, biases):
        z = W @ activation + b[:, None]
        zs.append(z)
        activation = sigmoid(z)
        activations.append(activation)
    delta = activations[-1] - Yb  # CrossEntropyCost.delta
    nabla_b = [None] * len(weights)
    nabla_w = [None] * len(weights)
    nabla_b[-1] = delta.sum(axis=1)
    nabla_w[-1] = delta @ activations[-2].T
    for l in range(2, len(weights) + 1):
        s = sigmoid(zs[-l])
        delta = (weights[-l + 1].T @ delta) * (s * (1.0 - s))
        nabla_b[-l] = delta.sum(axis=1)
        nabla_w[-l] = delta @ activations[-l - 1].T
    decay = 1.0 - eta * lmbda / n
    for l in range(len(weights)):
        weights[l] *= decay
        weights[l] -= (eta / m) * nabla_w[l]
        biases[l] -= (eta / m) * nabla_b[l]


def sgd(weights, biases, X, y, epochs, batch_size, eta, lmbda=0.0, seed=0,
        validation=None, n_classes=10):
    """network2's ``SGD`` with ``monitor_evaluation_accuracy``; returns accuracies per epoch.

    Parameters
    ----------
    weights, biases : lists of ndarray
        Initial parameters, book shapes (copied, not modified).
    X : ndarray (n, n_in); y : int labels (n,)
    seed : int
        Shuffling: ``Generator(PCG64(seed)).permutation(n)`` once per epoch.
    validation : (X_val, y_val), optional

    Returns
    -------
    dict with "accuracy" (epochs,), "seconds" (epochs,), "weights", "biases".
    """
    weights = [np.array(W, dtype=np.float64) for W in weights]
    biases = [np.array(b, dtype=np.float64) for b in biases]
    XT = np.ascontiguousarray(X.T)  # (n_in, n): columns are examples
    n = X.shape[0]
    Y = np.zeros((n_classes, n))
    Y[y, np.arange(n)] = 1.0
    rng = np.random.Generator(np.random.PCG64(seed))
    acc = np.full(epochs, np.nan)
    secs = np.full(epochs, np.nan)
    for e in range(epochs):
        start = time.perf_counter()
        order = rng.permutation(n)
        for k in range(0, n, batch_size):
            idx = order[k:k + batch_size]
            update_mini_batch(weights, biases, XT[:, idx], Y[:, idx], eta, lmbda, n)
        secs[e] = time.perf_counter() - start
        if validation is not None:
            acc[e] = accuracy(weights, biases, *validation)
    return {"accuracy": acc, "seconds": secs, "weights": weights, "biases": biases}
