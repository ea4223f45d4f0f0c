"""Parameter initialisers (SPEC section 2).

Every initialiser draws from one ``numpy.random.Generator(PCG64(seed))``, layer by
layer in the order ``W[0], b[0], W[1], b[1], ...`` (a zero bias draws nothing), in
float64, and the result is then cast to the network dtype.  The same seed therefore
gives the same float64 values whatever the dtype, and the float32 network holds
exactly those values rounded.

``W[l]`` has the book's shape ``(n_out, n_in)`` and is drawn row-major.

* ``normal_scaled`` (default; network2): W ~ N(0, 1) / sqrt(n_in), b ~ N(0, 1).
* ``normal`` (the book's "large" initialiser): W ~ N(0, 1), b ~ N(0, 1).
* ``uniform_fan_in`` (Glorot & Bengio eq. 1): W ~ U[-1/sqrt(n_in), 1/sqrt(n_in)], b = 0.
* ``glorot_uniform`` (Glorot & Bengio eq. 16): W ~ U[-r, r] with
  r = sqrt(6 / (n_in + n_out)), b = 0.
* ``glorot_normal``: W ~ N(0, 2 / (n_in + n_out)), b = 0.
* ``he_normal``: W ~ N(0, 2 / n_in), b = 0.
* ``sparse`` (Martens 2010; Sutskever et al. 2013): 15 random incoming weights per
  unit drawn N(0, 1), the others 0; b = 0.

``sparse`` draws, for each unit (row of ``W``) in turn, the column indices with
``rng.choice(n_in, 15, replace=False)`` and then their 15 values with
``rng.standard_normal(15)``; when ``n_in <= 15`` every weight is drawn, as for
``normal``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["INITIALISERS", "SPARSE_CONNECTIONS", "initialise"]

#: Incoming connections per unit of the ``sparse`` initialiser.
SPARSE_CONNECTIONS = 15

_Draw = Callable[[np.random.Generator, int, int], "tuple[np.ndarray, np.ndarray | None]"]


def _normal_scaled(rng, n_in, n_out):
    W = rng.standard_normal((n_out, n_in)) / np.sqrt(n_in)
    return W, rng.standard_normal(n_out)


def _normal(rng, n_in, n_out):
    W = rng.standard_normal((n_out, n_in))
    return W, rng.standard_normal(n_out)


def _uniform_fan_in(rng, n_in, n_out):
    r = 1.0 / np.sqrt(n_in)
    return rng.uniform(-r, r, size=(n_out, n_in)), None


def _glorot_uniform(rng, n_in, n_out):
    r = np.sqrt(6.0 / (n_in + n_out))
    return rng.uniform(-r, r, size=(n_out, n_in)), None


def _glorot_normal(rng, n_in, n_out):
    return rng.standard_normal((n_out, n_in)) * np.sqrt(2.0 / (n_in + n_out)), None


def _he_normal(rng, n_in, n_out):
    return rng.standard_normal((n_out, n_in)) * np.sqrt(2.0 / n_in), None


def _sparse(rng, n_in, n_out):
    k = SPARSE_CONNECTIONS
    if n_in <= k:
        return rng.standard_normal((n_out, n_in)), None
    W = np.zeros((n_out, n_in))
    for j in range(n_out):
        idx = rng.choice(n_in, size=k, replace=False)
        W[j, idx] = rng.standard_normal(k)
    return W, None


#: Initialiser name -> function ``(rng, n_in, n_out) -> (W, b or None)`` in float64.
INITIALISERS: dict[str, _Draw] = {
    "normal_scaled": _normal_scaled,
    "normal": _normal,
    "uniform_fan_in": _uniform_fan_in,
    "glorot_uniform": _glorot_uniform,
    "glorot_normal": _glorot_normal,
    "he_normal": _he_normal,
    "sparse": _sparse,
}


def initialise(name: str, layout, params: np.ndarray, rng: np.random.Generator) -> None:
    """Fill the flat parameter buffer ``params`` with the initialiser ``name``.

    Parameters
    ----------
    name : str
        A key of :data:`INITIALISERS` (already validated).
    layout : fastbp._contract.Layout
        Shapes of the network.
    params : ndarray, shape (layout.n_params,)
        Flat buffer of the network dtype, written in place.
    rng : numpy.random.Generator
        Source of the draws.
    """
    draw = INITIALISERS[name]
    Ws = layout.weight_views(params)
    bs = layout.bias_views(params)
    for l in range(layout.L):
        n_in, n_out = int(layout.sizes[l]), int(layout.sizes[l + 1])
        W, b = draw(rng, n_in, n_out)
        Ws[l][...] = W  # float64 -> network dtype, rounded to nearest
        bs[l][...] = 0.0 if b is None else b
