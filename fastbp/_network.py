"""The :class:`Network`: parameters, evaluation and training, on any backend.

The Python layer owns every policy decision (validation, dtypes, seeds, shuffling,
records) and calls the backend functions of ``fastbp/_contract.py`` with
C-contiguous arrays and plain numbers.  The backend is resolved at each call
(:func:`fastbp.use_backend`, ``FASTBP_BACKEND``, then cython -> numba -> numpy).

Threads: the compiled backend releases the GIL for its whole computation, so
several networks train in parallel in several threads.  One ``Network`` runs one
computation at a time: a call from a second thread waits until the first one has
finished (a lock per network; ``fit`` holds it for the whole run).  For parallel
work on one model, give each thread its own ``copy.deepcopy(net)``.

Interruption: ``fit`` runs every epoch as a sequence of short compiled calls (about
``_chunk_seconds`` = 20 ms each, sized from the measured time per mini-batch) and
defers Ctrl-C (SIGINT) to the boundaries between them, so an interrupted ``fit``
stops within about one mini-batch and raises :class:`fastbp.TrainingInterrupted`
(a ``KeyboardInterrupt``) with the network at the last completed mini-batch.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import _diagnostics as dx
from ._backends import _resolve
from ._contract import (
    MOMENTUM_SUTSKEVER,
    N_STATS,
    PHASE_NAMES,
    RECORD_BATCH,
    RECORD_EPOCH,
    RECORD_NONE,
    STAT_NAMES,
    Diag,
    Hyper,
    Layout,
    aligned,
    aligned_zeros,
)
from ._errors import NonFiniteError, TrainingInterrupted
from ._history import History, Table
from ._init import initialise
from ._schedules import Sutskever
from ._validation import (
    NONFINITE_POLICIES,
    RECORD_MODES,
    all_finite,
    cast_rows,
    check_activation,
    check_alpha,
    check_batch_size,
    check_bool,
    check_choice,
    check_dataset,
    check_dtype,
    check_epochs,
    check_eta,
    check_fit_size,
    check_fraction,
    check_init,
    check_int,
    check_layer_array,
    check_lmbda,
    check_memory,
    check_momentum,
    check_network_size,
    check_not_aliasing,
    check_output_cost,
    check_params,
    check_seed,
    check_sizes,
    check_targets,
    check_X,
    workspace_nbytes,
)

__all__ = ["Gradient", "Network"]

_STATE_VERSION = 1


@dataclass(frozen=True)
class Gradient:
    """Result of :meth:`Network.gradient`.

    Attributes
    ----------
    weights : list of ndarray, shape (sizes[l+1], sizes[l]) each
        ``dC/dW[l]``: the gradient of the mean data cost (no L2 term), book shapes.
    biases : list of ndarray, shape (sizes[l+1],) each
        ``dC/db[l]``.
    cost : float
        Mean data cost over the examples (no L2 term).
    stats : dict of str to ndarray, shape (L,) each, float64
        The probe statistics of SPEC section 4, one value per layer, keyed by
        ``fastbp.STAT_NAMES`` (``update_ratio`` is NaN: no update happened).
    flat : ndarray, shape (n_params,)
        The whole gradient in the network's flat parameter layout; ``weights`` and
        ``biases`` are views into it.
    """

    weights: list[np.ndarray]
    biases: list[np.ndarray]
    cost: float
    stats: dict[str, np.ndarray]
    flat: np.ndarray


class _LayerViews(list):
    """The list of per-layer views returned by ``Network.weights`` / ``.biases``.

    Writing into an element (``net.weights[0][...] = W``) changes the network, and
    so does assigning an element (``net.weights[0] = W``: shape-checked, then copied
    into the parameter buffer).  The length is fixed.
    """

    def __init__(self, views: Iterable[np.ndarray], what: str, dtype: np.dtype) -> None:
        super().__init__(views)
        self._what = what
        self._dtype = dtype

    def __setitem__(self, index, value):  # type: ignore[override]
        if isinstance(index, slice):
            targets = list(range(len(self)))[index]
            values = list(value)
            if len(values) != len(targets):
                raise ValueError(
                    f"cannot assign {len(values)} arrays to {len(targets)} layers of {self._what}"
                )
            for i, v in zip(targets, values, strict=True):
                self[i] = v
            return
        view = list.__getitem__(self, index)
        i = index if index >= 0 else index + len(self)
        view[...] = check_layer_array(value, f"{self._what}[{i}]", view.shape, self._dtype)

    def __reduce_ex__(self, protocol):
        # copy/deepcopy/pickle give a plain list (of copies, for deepcopy and pickle):
        # a snapshot, detached from the network.
        return (list, (list(self),))

    def _fixed(self, *args, **kwargs):
        raise TypeError(f"net.{self._what} has one entry per layer; its length cannot change")

    append = extend = insert = pop = remove = clear = sort = reverse = _fixed
    __delitem__ = __iadd__ = __imul__ = _fixed  # type: ignore[assignment]


class Network:
    """A fully-connected feed-forward network trained by mini-batch SGD.

    Parameters
    ----------
    sizes : sequence of int, length L+1 >= 2
        Units per layer, input first, e.g. ``[784, 30, 30, 10]`` (L = 3 weight layers).
    activation : str or sequence of str, default "sigmoid"
        Activation of the hidden layers: ``"sigmoid"``, ``"tanh"``, ``"relu"``,
        ``"leaky_relu"``, ``"softsign"`` or ``"linear"``; one name for all, or one per
        hidden layer (L-1 names).
    output : str, default "sigmoid"
        Output activation: ``"sigmoid"``, ``"softmax"`` or ``"linear"``.
    cost : str, default "cross_entropy"
        ``"cross_entropy"``, ``"quadratic"`` or ``"log_likelihood"``; the valid
        ``(output, cost)`` pairs are (sigmoid, cross_entropy), (sigmoid, quadratic),
        (softmax, log_likelihood) and (linear, quadratic).
    init : str or (list of ndarray, list of ndarray), default "normal_scaled"
        Initialiser name (``"normal_scaled"``, ``"normal"``, ``"uniform_fan_in"``,
        ``"glorot_uniform"``, ``"glorot_normal"``, ``"he_normal"``, ``"sparse"``; see
        ``fastbp/_init.py``) or explicit ``(weights, biases)`` in the book's shapes.
    dtype : {"float64", "float32"}, default "float64"
        Dtype of the parameters and of every computation on them (statistics and
        costs are accumulated in float64 whatever the dtype).
    seed : int, optional
        Seed of the initialiser's ``numpy.random.Generator(PCG64(seed))``; ``None``
        draws fresh entropy.
    alpha : float, default 0.01
        Slope of ``leaky_relu`` below zero.

    Attributes
    ----------
    sizes : tuple of int
    weights, biases : list of ndarray
        Per-layer views into the parameter buffer (see :attr:`weights`).
    params : ndarray, shape (n_params,)
        Read-only view of the flat parameter buffer.
    n_updates : int
        Parameter updates applied so far (``t`` of the momentum schedule).

    Notes
    -----
    All parameters live in one flat buffer (``W[0]`` row-major, ``b[0]``, ``W[1]``,
    ...; see ``fastbp/_contract.py``).  A velocity buffer of the same layout and the
    update count persist across :meth:`fit` calls, so training continues where it
    stopped; :meth:`reset_optimizer` clears them.

    Costs are computed from ``z`` (e.g. cross-entropy as ``softplus(z) - y*z``), so they
    are exact and finite for every finite input.  Where network2's value is finite
    the two agree to round-off; where network2 returns ``nan_to_num``'s huge number
    (a saturated unit with the wrong target), fastbp returns the true finite value.

    Examples
    --------
    >>> import numpy as np, fastbp
    >>> net = fastbp.Network([4, 8, 3], output="softmax", cost="log_likelihood", seed=0)
    >>> X = np.random.default_rng(0).normal(size=(100, 4)); y = (X[:, 0] > 0).astype(int)
    >>> h = net.fit(X, y, epochs=5, batch_size=10, eta=0.5, seed=1)
    >>> h.epoch["speed"].shape
    (5, 2)
    """

    #: Mini-batches per ``train_epoch`` call; ``None`` sizes the calls from the
    #: measured time per mini-batch so that each takes about ``_chunk_seconds``.
    #: (The contract allows chunks, so Python can report progress or honour Ctrl-C
    #: between them; the History is the same bits whatever the chunk.)
    _chunk: int | None = None
    #: Target duration of one compiled call of ``fit`` (the Ctrl-C latency).
    _chunk_seconds: float = 0.02
    #: Rows of the workspaces used by the evaluation methods (at most).
    _EVAL_ROWS = 1024
    #: Bytes of an evaluation workspace (at most, above one row); the evaluation
    #: methods cast and process X in chunks of that many rows, so their memory is
    #: bounded by the workspace, not by len(X).
    _EVAL_BYTES = 64 << 20
    #: Workspaces kept per network (least recently used dropped first).
    _MAX_WORKSPACES = 8

    def __init__(
        self,
        sizes: Iterable[int],
        activation: str | Iterable[str] = "sigmoid",
        output: str = "sigmoid",
        cost: str = "cross_entropy",
        init: str | tuple[Any, Any] = "normal_scaled",
        dtype: Any = "float64",
        seed: int | None = None,
        alpha: float = 0.01,
    ) -> None:
        sizes_t = check_sizes(sizes)
        L = len(sizes_t) - 1
        hidden = check_activation(activation, L)
        output, cost = check_output_cost(output, cost, sizes_t[-1])
        dt = check_dtype(dtype)
        alpha = check_alpha(alpha)
        init_v = check_init(init)
        rng, _ = check_seed(seed)
        check_network_size(sizes_t, dt)
        layout = Layout(sizes_t, hidden + (output,), cost, dt, alpha)
        params = aligned_zeros(layout.n_params, dt)
        if isinstance(init_v, str):
            initialise(init_v, layout, params, rng)
            init_name = init_v
        else:
            Ws, bs = check_params(init_v[0], init_v[1], layout)
            for view, W in zip(layout.weight_views(params), Ws, strict=True):
                view[...] = W
            for view, b in zip(layout.bias_views(params), bs, strict=True):
                view[...] = b
            init_name = "explicit"
        # zeros whose pages stay unmapped until momentum first writes them (not
        # zeros_like), so plain SGD never holds a second copy of the parameters
        self._setup(layout, params, aligned_zeros(layout.n_params, dt), 0, init_name)

    def _setup(self, layout: Layout, params, velocity, n_updates: int, init_name: str) -> None:
        self._layout = layout
        # the kernels stream through both: on cache-line boundaries (see aligned_zeros)
        self._params = aligned(params)
        self._velocity = aligned(velocity)
        self._n_updates = int(n_updates)
        self._init_name = init_name
        self._workspaces: dict[tuple[str, int], Any] = {}
        # seconds of fixed cost of a train_epoch call, per workspace (see _ChunkSizer)
        self._call_overhead: dict[tuple[str, int], float] = {}
        # one computation at a time (workspaces are shared); re-entrant for internals
        self._lock = threading.RLock()
        # the shuffling generator of the last fit (seed="continue" continues it)
        self._rng: np.random.Generator | None = None
        self._rng_seed: int | None = None
        # state of the optional statistic groups: the weights of the first fit
        # ("distance") and the noise scale's moving averages
        self._stats_start: np.ndarray | None = None
        self._noise_ema = np.zeros((2, layout.L))

    def _rng_record(self) -> dict[str, Any] | None:
        """The shuffling generator's state as plain JSON-able data (None if none)."""
        if self._rng is None:
            return None
        state = self._rng.bit_generator.state
        return {"seed": self._rng_seed, "bit_generator": state["bit_generator"], "state": state}

    def _rng_restore(self, record: dict[str, Any] | None) -> None:
        """Inverse of :meth:`_rng_record`."""
        if record is None:
            self._rng, self._rng_seed = None, None
            return
        if not isinstance(record, dict) or record.get("bit_generator") != "PCG64":
            raise ValueError("the shuffling generator state is not a PCG64 state")
        bitgen = np.random.PCG64()
        bitgen.state = record["state"]
        seed = record.get("seed")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
            raise ValueError(f"the generator's seed {seed!r} is not an int")
        self._rng, self._rng_seed = np.random.Generator(bitgen), seed

    # ------------------------------------------------------------------ description

    @property
    def sizes(self) -> tuple[int, ...]:
        """Units per layer, input first."""
        return tuple(int(s) for s in self._layout.sizes)

    @property
    def n_layers(self) -> int:
        """Number of weight layers L (``len(sizes) - 1``)."""
        return self._layout.L

    @property
    def activation(self) -> str | tuple[str, ...] | None:
        """Hidden activation: a name, a tuple of names when they differ, or None (L = 1)."""
        hidden = self._layout.activation_names[:-1]
        if not hidden:
            return None
        if len(set(hidden)) == 1:
            return hidden[0]
        return hidden

    @property
    def output(self) -> str:
        """Output activation."""
        return self._layout.activation_names[-1]

    @property
    def cost_name(self) -> str:
        """Name of the cost (``cost`` is the method computing it)."""
        return self._layout.cost_name

    @property
    def dtype(self) -> np.dtype:
        """Dtype of the parameters."""
        return self._layout.dtype

    @property
    def alpha(self) -> float:
        """Slope of leaky_relu below zero."""
        return self._layout.alpha

    @property
    def layout(self) -> Layout:
        """The :class:`fastbp._contract.Layout` given to the backends."""
        return self._layout

    def __repr__(self) -> str:
        act = "" if self.activation is None else f", activation={self.activation!r}"
        return (
            f"Network({list(self.sizes)}{act}, output={self.output!r}, "
            f"cost={self.cost_name!r}, dtype={self.dtype.name!r}, alpha={self.alpha!r})"
        )

    # ------------------------------------------------------------------- parameters

    @property
    def weights(self) -> list[np.ndarray]:
        """``W[l]``, shape ``(sizes[l+1], sizes[l])``: writeable views into the buffer.

        ``net.weights[0][...] = W`` and ``net.weights[0] = W`` both change the network.
        """
        return _LayerViews(self._layout.weight_views(self._params), "weights", self.dtype)

    @property
    def biases(self) -> list[np.ndarray]:
        """``b[l]``, shape ``(sizes[l+1],)``: writeable views into the buffer."""
        return _LayerViews(self._layout.bias_views(self._params), "biases", self.dtype)

    @property
    def params(self) -> np.ndarray:
        """Read-only view of the flat parameter buffer, shape ``(n_params,)``."""
        view = self._params.view()
        view.flags.writeable = False
        return view

    @property
    def velocity(self) -> np.ndarray:
        """Read-only view of the momentum velocity, same layout as :attr:`params`."""
        view = self._velocity.view()
        view.flags.writeable = False
        return view

    @property
    def n_updates(self) -> int:
        """Parameter updates applied so far (``t`` of the momentum schedule)."""
        return self._n_updates

    def set_params(self, weights: Iterable[ArrayLike], biases: Iterable[ArrayLike]) -> None:
        """Replace all weights and biases at once (validated, then copied).

        Parameters
        ----------
        weights : sequence of array_like, L arrays of shape (sizes[l+1], sizes[l])
        biases : sequence of array_like, L arrays of shape (sizes[l+1],)

        Notes
        -----
        Nothing is written unless every array has the right shape and is finite in
        the network dtype.  The optimizer state (velocity, ``n_updates``) is kept; call
        :meth:`reset_optimizer` to clear it.
        """
        Ws, bs = check_params(weights, biases, self._layout)
        # arrays that are views of this network's own buffer (net.weights of another
        # layer, say) are copied first, so no layer is read after it was overwritten
        Ws = [W.copy() if np.may_share_memory(W, self._params) else W for W in Ws]
        bs = [b.copy() if np.may_share_memory(b, self._params) else b for b in bs]
        with self._lock:
            for view, W in zip(self._layout.weight_views(self._params), Ws, strict=True):
                view[...] = W
            for view, b in zip(self._layout.bias_views(self._params), bs, strict=True):
                view[...] = b

    def reset_stats(self) -> None:
        """Forget the state of the optional statistic groups of ``fit(stats=...)``.

        ``distance`` is then measured from the weights at the start of the next
        ``fit``, and the noise scale's moving averages restart from zero.
        """
        with self._lock:
            self._stats_start = None
            self._noise_ema[...] = 0.0

    def reset_optimizer(self) -> None:
        """Zero the momentum velocity and the update count ``n_updates``."""
        with self._lock:
            self._velocity[...] = 0
            self._n_updates = 0

    # ---------------------------------------------------------------- save & load

    def save(self, path: Any, *, history: History | None = None, optimizer: bool = True) -> None:
        """Write the network to a file, atomically (see ``fastbp/_io.py`` for the format).

        Parameters
        ----------
        path : str or os.PathLike
            The file, written as given (``.npz`` by convention): a NumPy ``.npz``
            archive plus a JSON header, no pickle.  It is written to a temporary
            file, fsync-ed and renamed over ``path``, so an interrupted save leaves
            the previous file intact.
        history : fastbp.History, optional
            Stored too (read back with :func:`fastbp.load_history`).
        optimizer : bool, default True
            Store the optimiser state: momentum velocity, ``n_updates`` and the
            state of the shuffling generator of the last ``fit``, so that training
            resumed with ``fit(..., seed="continue")`` gives the same bits as an
            uninterrupted run.

        See Also
        --------
        fastbp.load, fastbp.load_history
        """
        from . import _io

        with self._lock:
            _io.save(self, path, history=history, optimizer=optimizer)

    # --------------------------------------------------------------- copy & pickle

    def __getstate__(self) -> dict[str, Any]:
        # Copies, so that copy.copy (which does not copy the state) is independent too.
        # Workspaces are scratch memory: not pickled, re-made on first use.
        with self._lock:  # a consistent snapshot, never one taken half way through a step
            return self._state()

    def _state(self) -> dict[str, Any]:
        lay = self._layout
        return {
            "version": _STATE_VERSION,
            "sizes": [int(s) for s in lay.sizes],
            "activations": list(lay.activation_names),
            "cost": lay.cost_name,
            "dtype": lay.dtype.name,
            "alpha": lay.alpha,
            "init": self._init_name,
            "params": self._params.copy(),
            "velocity": self._velocity.copy(),
            "n_updates": self._n_updates,
            "rng": self._rng_record(),
            "stats_start": None if self._stats_start is None else self._stats_start.copy(),
            "noise_ema": self._noise_ema.copy(),
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        if state.get("version") != _STATE_VERSION:
            raise ValueError(
                f"cannot restore a Network saved with state version {state.get('version')!r}"
            )
        layout = Layout(
            state["sizes"], state["activations"], state["cost"], state["dtype"], state["alpha"]
        )
        params = np.ascontiguousarray(state["params"], dtype=layout.dtype)
        velocity = np.ascontiguousarray(state["velocity"], dtype=layout.dtype)
        if params.shape != (layout.n_params,) or velocity.shape != (layout.n_params,):
            raise ValueError("corrupt Network state: buffer sizes do not match the layout")
        self._setup(layout, params, velocity, state["n_updates"], state["init"])
        self._rng_restore(state.get("rng"))
        self._restore_stats_state(state.get("stats_start"), state.get("noise_ema"))

    def _restore_stats_state(self, start: Any, ema: Any) -> None:
        """Set the state of the optional statistic groups (None: keep the fresh one)."""
        if start is not None:
            start = np.ascontiguousarray(start, dtype=self._layout.dtype)
            if start.shape != (self._layout.n_params,):
                raise ValueError("corrupt Network state: stats_start does not match the layout")
            self._stats_start = aligned(start)
        if ema is not None:
            ema = np.asarray(ema, dtype=np.float64)
            if ema.shape != (2, self._layout.L):
                raise ValueError("corrupt Network state: noise_ema does not match the layout")
            self._noise_ema[...] = ema

    # ------------------------------------------------------------------- internals

    def _workspace(self, name: str, backend: Any, m_max: int) -> Any:
        """The workspace of ``backend`` for up to ``m_max`` rows (cached, LRU)."""
        key = (name, int(m_max))
        ws = self._workspaces.pop(key, None)
        if ws is None:
            while len(self._workspaces) >= self._MAX_WORKSPACES:
                self._workspaces.pop(next(iter(self._workspaces)))
            ws = backend.make_workspace(self._layout, int(m_max))
        self._workspaces[key] = ws
        return ws

    def _eval_rows(self, n: int) -> int:
        """Rows of the evaluation workspace for ``n`` rows: at most ``_EVAL_ROWS``, and
        at most ``_EVAL_BYTES`` of workspace (wide layers get fewer rows)."""
        lay = self._layout
        per_row = max(1, workspace_nbytes(lay, 1) - workspace_nbytes(lay, 0))
        return max(1, min(n, self._EVAL_ROWS, self._EVAL_BYTES // per_row))

    def _eval_workspace(self, name: str, backend: Any, n: int) -> Any:
        rows = self._eval_rows(n)
        check_memory(
            workspace_nbytes(self._layout, rows),
            f"the evaluation workspace of {self!r}",
            "use narrower layers",
        )
        return self._workspace(name, backend, rows)

    def _row_chunks(self, n: int) -> Iterator[tuple[int, int]]:
        """``(start, stop)`` row ranges in which the evaluation methods cast and process
        X: about 1 MiB of input per chunk, and at least one workspace of rows."""
        row_bytes = int(self._layout.sizes[0]) * self.dtype.itemsize
        step = max(self._eval_rows(n), min(n, (1 << 20) // max(1, row_bytes)))
        for start in range(0, n, step):
            yield start, min(n, start + step)

    def _forward_rows(
        self,
        backend: Any,
        ws: Any,
        X: np.ndarray,
        name: str,
        out: np.ndarray | None,
        Y: np.ndarray | None = None,
        labels: np.ndarray | None = None,
        check: str = "",
    ) -> tuple[float, int]:
        """Run ``backend.forward`` over X chunk by chunk (cast and checked per chunk).

        Writes the outputs into ``out`` if given; returns the mean data cost (if ``Y``)
        and the number of correct labels (if ``labels``).  With ``check`` (the name of
        the public method, for the message), a non-finite output or cost raises
        :class:`NonFiniteError` (finite inputs can still overflow inside the network).
        """
        n = X.shape[0]
        n_out = int(self._layout.sizes[-1])
        costs: list[tuple[float, int]] = []
        correct = 0
        scratch = None
        for start, stop in self._row_chunks(n):
            Xc = cast_rows(X, start, stop, self.dtype, name)
            if out is not None:
                oc = out[start:stop]
            else:
                if scratch is None:
                    scratch = np.empty((stop - start, n_out), dtype=self.dtype)
                oc = scratch[: stop - start]
            Yc = None if Y is None else Y[start:stop]
            with self._lock:
                c = backend.forward(self._layout, ws, self._params, Xc, oc, Yc)
            costs.append((float(c), stop - start))
            if check and not all_finite(oc):
                raise NonFiniteError(
                    None, None, self.n_layers - 1, "forward", f"the outputs of net.{check}()"
                )
            if labels is not None:
                pred = self._labels_from_outputs(oc)
                correct += int(np.count_nonzero(pred == labels[start:stop]))
            del Xc, Yc, oc  # before the next chunk's cast
        if len(costs) == 1:
            cost = costs[0][0]
        else:  # the mean over all rows, from the chunks' means
            cost = sum(c * m for c, m in costs) / n
        if check and Y is not None and not np.isfinite(cost):
            raise NonFiniteError(
                None, None, self.n_layers - 1, "forward", f"the cost of net.{check}()"
            )
        return cost, correct

    def _l2_term(self, lmbda: float, n: int) -> float:
        """``0.5 * lmbda / n * sum_l ||W[l]||_F^2`` in float64 (network2's total_cost)."""
        if lmbda == 0.0:
            return 0.0
        total = 0.0
        for W in self._layout.weight_views(self._params):
            w = W.reshape(-1).astype(np.float64, copy=False)
            total += float(np.dot(w, w))
        return 0.5 * lmbda / n * total

    def _labels_from_outputs(self, out: np.ndarray) -> np.ndarray:
        if out.shape[1] == 1:
            return (out[:, 0] > 0.5).astype(np.int64)
        return np.argmax(out, axis=1).astype(np.int64)

    def _require_classifier(self, method: str) -> None:
        if self.output == "linear":
            raise ValueError(
                f"{method}() needs class labels, but this network has a linear (regression) "
                "output; use forward(X) for the outputs and cost(X, y) to score them"
            )

    def _stats_dict(self, stats: np.ndarray) -> dict[str, np.ndarray]:
        return {name: stats[i] for i, name in enumerate(STAT_NAMES)}

    # ------------------------------------------------------------------- evaluation

    def forward(self, X: ArrayLike) -> NDArray[np.floating]:
        """Output activations.

        Parameters
        ----------
        X : array_like, shape (N, sizes[0])
            One example per row; cast once to the network dtype.

        Returns
        -------
        ndarray, shape (N, sizes[-1]), network dtype
            ``a^L`` for every example (softmax rows sum to 1).

        Raises
        ------
        fastbp.NonFiniteError
            If an output overflows (finite but extreme inputs or weights); the same
            holds for :meth:`predict`, :meth:`accuracy`, and for :meth:`cost` when the
            cost itself is not representable.

        Notes
        -----
        ``X`` is cast and processed in chunks of rows, so the memory used besides the
        result is bounded by the workspace, not by ``len(X)`` (this holds for
        :meth:`predict`, :meth:`accuracy` and :meth:`cost` too).
        """
        X = check_X(X, self._layout, allow_empty=True, cast=False)
        out = np.empty((X.shape[0], int(self._layout.sizes[-1])), dtype=self.dtype)
        if X.shape[0] == 0:
            return out
        name, backend = _resolve()
        ws = self._eval_workspace(name, backend, X.shape[0])
        self._forward_rows(backend, ws, X, "X", out, check="forward")
        return out

    def predict(self, X: ArrayLike) -> NDArray[np.int64]:
        """Predicted class labels.

        Parameters
        ----------
        X : array_like, shape (N, sizes[0])

        Returns
        -------
        ndarray of int64, shape (N,)
            ``argmax`` of the outputs; for a single sigmoid output unit, ``a > 0.5``
            (labels 0 and 1).

        Raises
        ------
        ValueError
            For a linear (regression) output.
        """
        self._require_classifier("predict")
        return self._labels_from_outputs(self.forward(X))

    def accuracy(self, X: ArrayLike, y: ArrayLike) -> float:
        """Fraction of examples whose predicted label is right.

        Parameters
        ----------
        X : array_like, shape (N, sizes[0])
        y : array_like, shape (N,) or (N, sizes[-1])
            Integer labels, or one-hot / [0, 1] rows (label = argmax, or
            ``y > 0.5`` for a single unit).

        Returns
        -------
        float
            In [0, 1].
        """
        self._require_classifier("accuracy")
        X = check_X(X, self._layout, cast=False)
        _, labels = check_targets(y, self._layout, X.shape[0])
        name, backend = _resolve()
        ws = self._eval_workspace(name, backend, X.shape[0])
        _, correct = self._forward_rows(backend, ws, X, "X", None, labels=labels, check="accuracy")
        return correct / X.shape[0]

    def cost(self, X: ArrayLike, y: ArrayLike, lmbda: float = 0.0) -> float:
        """network2's ``total_cost``: mean data cost plus the L2 term.

        Parameters
        ----------
        X : array_like, shape (N, sizes[0])
        y : array_like, shape (N,) or (N, sizes[-1])
            Targets (see ``fastbp/_validation.py`` for the accepted forms).
        lmbda : float, default 0.0
            L2 coefficient.

        Returns
        -------
        float
            ``mean_x C_x + 0.5 * lmbda / N * sum_l ||W[l]||_F^2`` with ``N = len(X)``.
        """
        lmbda = check_lmbda(lmbda)
        X = check_X(X, self._layout, cast=False)
        Y, _ = check_targets(y, self._layout, X.shape[0])
        name, backend = _resolve()
        ws = self._eval_workspace(name, backend, X.shape[0])
        data, _ = self._forward_rows(backend, ws, X, "X", None, Y=Y, check="cost")
        return data + self._l2_term(lmbda, X.shape[0])

    def gradient(self, X: ArrayLike, Y: ArrayLike) -> Gradient:
        """Average gradient of the mean data cost over a set, and its statistics.

        This is the chapter's "speed of learning" measurement: ``stats["speed"][l]``
        is ``||dC/db[l]||`` over the set.

        Parameters
        ----------
        X : array_like, shape (N, sizes[0])
        Y : array_like, shape (N,) or (N, sizes[-1])
            Targets (labels or one-hot rows; float targets for a linear output).

        Returns
        -------
        Gradient
            ``.weights`` / ``.biases`` (book shapes, no L2 term), ``.cost`` (mean data
            cost) and ``.stats`` (name -> ``(L,)`` float64; the probe column of SPEC
            section 4).

        Raises
        ------
        fastbp.NonFiniteError
            If a NaN or Inf appears (``epoch`` and ``batch`` are None).

        Notes
        -----
        The computation runs in chunks of the workspace's rows, but ``X`` is cast
        whole to the network dtype first when it is not already a C-contiguous array
        of that dtype (the statistics pool all rows in one backend call).
        """
        X = check_X(X, self._layout)
        Yd, _ = check_targets(Y, self._layout, X.shape[0], name="Y")
        name, backend = _resolve()
        ws = self._eval_workspace(name, backend, X.shape[0])
        grad = np.zeros(self._layout.n_params, dtype=self.dtype)
        stats = np.full((N_STATS, self._layout.L), np.nan)
        with self._lock:
            cost, fault_layer, fault_phase = backend.gradient(
                self._layout, ws, self._params, X, Yd, grad, stats
            )
        if fault_layer >= 0:
            raise NonFiniteError(
                None, None, int(fault_layer), PHASE_NAMES[fault_phase], "net.gradient()"
            )
        return Gradient(
            weights=self._layout.weight_views(grad),
            biases=self._layout.bias_views(grad),
            cost=float(cost),
            stats=self._stats_dict(stats),
            flat=grad,
        )

    # --------------------------------------------------------------------- training

    def fit(
        self,
        X: ArrayLike,
        y: ArrayLike,
        epochs: int,
        batch_size: int,
        eta: float,
        lmbda: float = 0.0,
        momentum: float | Sutskever = 0.0,
        nesterov: bool = False,
        validation: tuple[ArrayLike, ArrayLike] | None = None,
        record: str | None = "epoch",
        probe: tuple[ArrayLike, ArrayLike] | None = None,
        on_nonfinite: str = "raise",
        seed: int | str | None = None,
        checkpoint: Any = None,
        checkpoint_every: int = 1,
        stats: Any = None,
        stats_every: int = 1,
        noise_ema: float = 0.99,
        callbacks: Any = None,
        callback_every: int | None = None,
    ) -> History:
        """Train by mini-batch stochastic gradient descent.

        Parameters
        ----------
        X : array_like, shape (n, sizes[0])
            Training inputs, one example per row; cast once to the network dtype.
        y : array_like, shape (n,) or (n, sizes[-1])
            Integer labels, one-hot / [0, 1] rows, or float targets for a linear output.
        epochs : int
            Passes over the data (0 is allowed: only the probe is measured).
        batch_size : int
            Mini-batch size m, ``1 <= m <= n``; the last mini-batch of an epoch holds
            the remaining ``n - (ceil(n/m) - 1) * m`` examples.
        eta : float
            Learning rate, > 0.
        lmbda : float, default 0.0
            L2 coefficient (network2's lambda; the update uses ``lmbda / n``).
        momentum : float in [0, 1) or fastbp.Sutskever, default 0.0
            Constant momentum coefficient, or the Sutskever schedule.  0 is plain SGD.
        nesterov : bool, default False
            Nesterov's accelerated gradient (the gradient is taken at the look-ahead
            point; ``net.weights`` always shows the parameters themselves).
        validation : (X_val, y_val), optional
            Evaluated at the end of every epoch: accuracy and cost.
        record : {"epoch", "batch", None}, default "epoch"
            Per-layer statistics per epoch, per mini-batch, or none (fastest).
        probe : (X_probe, y_probe), optional
            :meth:`gradient` statistics on this set at the start of every epoch and
            after the last (``epochs + 1`` rows): the chapter's speed of learning.
        on_nonfinite : {"raise", "skip"}, default "raise"
            On a NaN/Inf: raise :class:`fastbp.NonFiniteError`, or drop the mini-batch
            (counted in ``n_skipped`` and the ``nonfinite`` statistic) and go on.
        seed : int, "continue" or None, default None
            Seed of the shuffling ``numpy.random.Generator(PCG64(seed))``, created once
            per call; each epoch draws one permutation from it.  ``None`` draws fresh
            entropy; the seed used is kept in ``history.settings["seed"]``.
            ``"continue"`` continues the generator of this network's previous ``fit``
            (or of the checkpoint it was loaded from), so ``fit(k epochs, seed=s)``
            then ``fit(k epochs, seed="continue")`` equals ``fit(2k epochs, seed=s)``
            bit for bit.
        checkpoint : str or os.PathLike, optional
            Write a checkpoint there every ``checkpoint_every`` epochs and after the
            last one: :meth:`save` with the optimiser state and the History so far,
            atomically.  Resume with ``net = fastbp.load(path)``,
            ``done = fastbp.load_history(path)`` and ``net.fit(..., seed="continue")``
            for the remaining epochs; ``History.concatenate([done, more])`` then equals
            the History of an uninterrupted run.
        checkpoint_every : int, default 1
            Epochs between checkpoints.
        stats : None, "core", "all", str or iterable of str, default None
            Optional statistic groups computed in the same pass, on top of the core
            statistics of ``record``: ``"per_example"`` (per-example gradient norms
            and the trace of their covariance), ``"noise_scale"`` (the gradient noise
            scale B_simple), ``"moments"`` (per-parameter second moments: the gradient
            signal-to-noise ratio), ``"histograms"`` (counts of delta, z and a per
            layer, in ``history.histograms``), ``"distance"`` (``||W - W_0||``).
            ``None``/``"core"``: none; ``"all"``: every group.  Needs ``record``
            ``"batch"`` or ``"epoch"``.  Definitions: ``fastbp/_diagnostics.py`` and
            the README.
        stats_every : int, default 1
            Compute the groups on mini-batch ``k`` of each epoch only when
            ``k % stats_every == 0`` (their columns are NaN on the others).
        noise_ema : float in [0, 1), default 0.99
            Coefficient of the moving averages behind ``noise_scale``.
        callbacks : callable or list of callables, optional
            Called as ``cb(net, history)`` with the History so far, after every epoch
            (after its validation) or every ``callback_every`` mini-batches, never
            inside compiled code.  An object's ``on_fit_begin(net)`` and
            ``on_fit_end(net, history)`` methods, if present, are called at the start
            and at the end of ``fit`` (also when it raises).  Ready writers:
            :mod:`fastbp.callbacks`.
        callback_every : int, optional
            Mini-batches between callback calls (the epoch's end always calls).

        Returns
        -------
        History
            Tables ``batch``, ``epoch``, ``probe``, ``validation`` (see
            :class:`fastbp.History`).

        Raises
        ------
        fastbp.NonFiniteError
            With ``on_nonfinite="raise"``, at the first non-finite value; the network
            keeps the parameters of the last good step and the exception's ``history``
            attribute holds everything recorded up to it.
        fastbp.TrainingInterrupted
            On Ctrl-C (SIGINT; a ``KeyboardInterrupt``), within about one mini-batch:
            the network keeps the parameters of the last completed mini-batch and the
            exception's ``history`` attribute holds the completed part.
        fastbp.TooLargeError
            If the records or the workspace would not fit in memory (before
            allocating anything).

        Notes
        -----
        * The training cost of an epoch (``history.epoch["train_cost"]``) is not a
          separate pass over the data: it is the mean of the mini-batch costs already
          computed during the epoch -- each with the parameters *before* that
          mini-batch's update -- weighted by the mini-batch sizes (skipped mini-batches
          left out), plus the L2 term ``0.5 * lmbda / n * sum ||W||^2`` of the
          parameters at the end of the epoch.  It therefore lags network2's
          ``total_cost`` of the end-of-epoch parameters a little.
        * The validation cost is network2's ``total_cost`` on the validation set at the
          end of the epoch, L2 term with ``N = len(X_val)``.
        * The probe cost is the mean data cost only.
        * Momentum velocity and ``n_updates`` persist across calls (see
          :meth:`reset_optimizer`).
        * Each epoch runs as compiled calls of about 20 ms (sized from the measured
          time per mini-batch, and long enough that the fixed cost of a call stays
          under 5% of it); Ctrl-C is noticed between them.  The results are the same
          bits whatever the split.
        """
        # ---- validation: everything is checked before any backend code runs
        buffers = (self._params, self._velocity)
        check_not_aliasing(X, "X", buffers)
        check_not_aliasing(y, "y", buffers)
        for pair_name, pair in (("validation", validation), ("probe", probe)):
            if isinstance(pair, (tuple, list)):
                for i, part in enumerate(pair):
                    check_not_aliasing(part, f"{pair_name}[{i}]", buffers)
        X = check_X(X, self._layout)
        n = X.shape[0]
        Y, _ = check_targets(y, self._layout, n)
        epochs = check_epochs(epochs)
        batch_size = check_batch_size(batch_size, n)
        eta = check_eta(eta)
        lmbda = check_lmbda(lmbda)
        kind, mu, mu_max, period = check_momentum(momentum)
        nesterov = check_bool(nesterov, "nesterov")
        record = check_choice(record, "record", tuple(RECORD_MODES))
        on_nonfinite = check_choice(on_nonfinite, "on_nonfinite", NONFINITE_POLICIES)
        val = (
            check_dataset(validation, "validation", self._layout)
            if validation is not None
            else None
        )
        prb = check_dataset(probe, "probe", self._layout) if probe is not None else None
        continued = isinstance(seed, str) and seed == "continue"
        if continued:
            if self._rng is None:
                raise ValueError(
                    "seed='continue' continues the shuffling generator of a previous fit() "
                    "or of a loaded checkpoint, but this network has none; pass an int seed"
                )
            rng, seed_used = None, self._rng_seed
        else:
            if isinstance(seed, str):
                raise ValueError(
                    f"seed={seed!r} is not valid; pass an int, None (fresh entropy) or "
                    "'continue' (continue the previous fit's shuffling)"
                )
            rng, seed_used = check_seed(seed)
        if checkpoint is not None:
            from ._io import check_writable

            checkpoint = check_writable(checkpoint)
        checkpoint_every = check_int(
            checkpoint_every, "checkpoint_every", 1, fix="pass the epochs between checkpoints"
        )
        rec_mode = RECORD_MODES[record]
        groups = dx.parse_stats(stats)
        stats_every = check_int(
            stats_every, "stats_every", 1, fix="pass the mini-batches between samples (>= 1)"
        )
        noise_ema = check_fraction(noise_ema, "noise_ema")
        if groups and rec_mode == RECORD_NONE:
            raise ValueError(
                f"stats={stats!r} needs record='batch' or record='epoch' (record=None "
                "computes no statistics)"
            )
        cbs = _check_callbacks(callbacks)
        if callback_every is not None:
            callback_every = check_int(
                callback_every, "callback_every", 1, fix="pass the mini-batches between calls"
            )
        diag_rows = (
            _hist_rows(n, batch_size, stats_every, rec_mode) if "histograms" in groups else 0
        )
        if diag_rows and rec_mode == RECORD_EPOCH and n * max(self.sizes[1:]) >= 2**31:
            raise ValueError(
                f"stats='histograms' with record='epoch' counts up to n * width = "
                f"{n * max(self.sizes[1:])} values per bin, more than its int32 counts hold; "
                "use record='batch' (one row per sampled mini-batch) or fewer examples per fit"
            )
        check_fit_size(
            self._layout,
            n,
            batch_size,
            epochs,
            rec_mode,
            extra=_diag_nbytes(self._layout, epochs, n, batch_size, rec_mode, groups, diag_rows),
        )
        name, backend = _resolve()

        hyper = Hyper(
            eta=eta,
            lmbda_n=lmbda / n,
            momentum_kind=kind,
            mu=mu,
            mu_max=mu_max,
            period=period,
            nesterov=nesterov,
            record=rec_mode,
            skip_nonfinite=on_nonfinite == "skip",
            t=self._n_updates,
        )
        settings = {
            "epochs": epochs,
            "batch_size": batch_size,
            "eta": eta,
            "lmbda": lmbda,
            "momentum": (
                {"schedule": "sutskever", "mu_max": mu_max, "period": period}
                if kind == MOMENTUM_SUTSKEVER
                else mu
            ),
            "nesterov": nesterov,
            "record": record,
            "on_nonfinite": on_nonfinite,
            "seed": seed_used,
            "n_train": n,
            "n_validation": None if val is None else int(val[0].shape[0]),
            "n_probe": None if prb is None else int(prb[0].shape[0]),
            "activation": list(self._layout.activation_names[:-1]),
            "output": self.output,
            "cost": self.cost_name,
            "alpha": self.alpha,
            "n_updates_start": self._n_updates,
            "stats": list(groups),
            "stats_every": stats_every,
            "noise_ema": noise_ema,
            "a_range": dx.a_ranges(self._layout).tolist(),
        }
        with self._lock, _DeferredInterrupt() as interrupt:
            if rng is None:
                rng = self._rng
            else:
                self._rng, self._rng_seed = rng, seed_used
            if groups and self._stats_start is None:
                self._stats_start = aligned(self._params, copy=True)
            diag = (
                _DiagSetup(dx.group_mask(groups), groups, stats_every, noise_ema, diag_rows)
                if groups
                else None
            )
            for cb in cbs:
                if hasattr(cb, "on_fit_begin"):
                    cb.on_fit_begin(self)
            history = None
            try:
                history = self._fit_loop(
                    backend,
                    name,
                    X,
                    Y,
                    n,
                    epochs,
                    batch_size,
                    hyper,
                    rec_mode,
                    val,
                    prb,
                    on_nonfinite,
                    lmbda,
                    rng,
                    settings,
                    interrupt,
                    checkpoint,
                    checkpoint_every,
                    diag,
                    cbs,
                    callback_every,
                )
            except (NonFiniteError, TrainingInterrupted) as exc:
                history = exc.history
                raise
            finally:
                for cb in cbs:
                    if hasattr(cb, "on_fit_end"):
                        cb.on_fit_end(self, history)
            return history

    def _fit_loop(
        self,
        backend,
        name,
        X,
        Y,
        n,
        epochs,
        batch_size,
        hyper,
        rec_mode,
        val,
        prb,
        on_nonfinite,
        lmbda,
        rng,
        settings,
        interrupt,
        checkpoint,
        checkpoint_every,
        diag_setup,
        cbs,
        callback_every,
    ) -> History:
        """The training loop of :meth:`fit` (arguments validated; lock held)."""
        rec = _Recorder(self._layout, epochs, n, batch_size, rec_mode, val, prb, diag_setup)
        diag = None
        if diag_setup is not None:
            diag = Diag(
                diag_setup.mask,
                diag_setup.every,
                diag_setup.beta,
                rec.diag_batch[:0],
                rec.diag_epoch[0],
                rec.hist[0],
                self._noise_ema,
                self._stats_start,
                dx.a_ranges(self._layout),
                np.array(
                    [np.sqrt(np.sum(np.square(W, dtype=np.float64)))
                     for W in self._layout.weight_views(self._stats_start)]
                ),
            )  # fmt: skip
        ws = self._workspace(name, backend, batch_size)
        ws_val = self._eval_workspace(name, backend, val[0].shape[0]) if val else None
        ws_prb = self._eval_workspace(name, backend, prb[0].shape[0]) if prb else None
        lay, params, velocity = self._layout, self._params, self._velocity
        nb = rec.n_batches
        sizer = _ChunkSizer(self._chunk, float(self._chunk_seconds), nb)
        sizer.overhead = self._call_overhead.get((name, batch_size))

        def finish() -> History:
            settings["n_updates_end"] = self._n_updates
            return rec.history(self.sizes, name, self.dtype.name, settings)

        def call_back() -> None:
            if cbs:
                history = finish()
                for cb in cbs:
                    cb(self, history)

        def stop_if_interrupted(e: int, done: int) -> None:
            if interrupt.pending:
                interrupt.pending = False
                raise TrainingInterrupted(e, done, history=finish())

        def measure_probe(row: int) -> None:
            Xp, Yp, _ = prb
            cost, fl, fp = backend.gradient(
                lay, ws_prb, params, Xp, Yp, rec.probe_grad, rec.probe_stats[row]
            )
            rec.probe_cost[row] = cost
            rec.probe_rows = row + 1
            if fl >= 0 and on_nonfinite == "raise":
                raise NonFiniteError(
                    row, None, int(fl), PHASE_NAMES[fp], "the probe statistics", history=finish()
                )

        for e in range(epochs):
            if prb is not None:
                measure_probe(e)
                stop_if_interrupted(e, 0)
            order = rng.permutation(n).astype(np.int64, copy=False)
            skipped = 0
            start = 0
            while start < nb:
                row0 = e * nb + start
                hyper.t = self._n_updates
                if diag is not None:
                    diag.epoch = rec.diag_epoch[e if rec_mode == RECORD_EPOCH else 0]
                    diag.hist = rec.hist[e if rec.hist.shape[0] > 1 else 0]
                if sizer.wants_overhead(start):
                    # a call of no mini-batch costs what every call costs besides its
                    # mini-batches (argument checks, per-call set-up of the kernel)
                    times = []
                    for _ in range(2):
                        t0 = time.perf_counter()
                        backend.train_epoch(
                            lay, ws, params, velocity, X, Y, order, batch_size, start, start,
                            hyper, rec.batch_block(row0, 0), rec.epoch_block(e),
                            rec.batch_cost[row0:row0], *rec.diag_block(diag, row0, 0),
                        )  # fmt: skip
                        times.append(time.perf_counter() - t0)
                    sizer.overhead = self._call_overhead[(name, batch_size)] = min(times)
                stop = min(start + sizer.size, nb)
                if callback_every is not None:  # a call ends where a callback is due
                    stop = min(stop, (start // callback_every + 1) * callback_every)
                t0 = time.perf_counter()
                t, n_sk, fault_batch, fault_layer, fault_phase = backend.train_epoch(
                    lay,
                    ws,
                    params,
                    velocity,
                    X,
                    Y,
                    order,
                    batch_size,
                    start,
                    stop,
                    hyper,
                    rec.batch_block(row0, stop - start),
                    rec.epoch_block(e),
                    rec.batch_cost[row0 : row0 + stop - start],
                    *rec.diag_block(diag, row0, stop - start),
                )
                elapsed = time.perf_counter() - t0
                self._n_updates = int(t)
                skipped += int(n_sk)
                if fault_batch >= 0:
                    rec.batch_rows = e * nb + int(fault_batch)
                    raise NonFiniteError(
                        e,
                        int(fault_batch),
                        int(fault_layer),
                        PHASE_NAMES[fault_phase],
                        history=finish(),
                    )
                rec.batch_rows = e * nb + stop
                sizer.update(elapsed, stop - start)
                start = stop
                if start < nb:
                    if callback_every is not None and start % callback_every == 0:
                        call_back()
                    stop_if_interrupted(e, start)
            rec.end_epoch(e, skipped, self._l2_term(lmbda, n))
            if val is not None:
                Xv, Yv, labels = val
                data, correct = self._forward_rows(
                    backend, ws_val, Xv, "validation[0]", None, Y=Yv, labels=labels
                )
                rec.val_cost[e] = data + self._l2_term(lmbda, Xv.shape[0])
                if labels is not None:
                    rec.val_accuracy[e] = correct / Xv.shape[0]
                rec.val_rows = e + 1
            call_back()
            if checkpoint is not None and ((e + 1) % checkpoint_every == 0 or e + 1 == epochs):
                self.save(checkpoint, history=finish(), optimizer=True)
            if e + 1 < epochs:
                stop_if_interrupted(e + 1, 0)
        if prb is not None:
            measure_probe(epochs)
        history = finish()
        if interrupt.pending:  # Ctrl-C during the last steps: the run is complete
            interrupt.pending = False
            raise TrainingInterrupted(epochs, 0, history=history)
        return history


class _ChunkSizer:
    """Mini-batches per compiled call of ``fit``.

    Fixed when ``Network._chunk`` is set.  Otherwise sized from measurements so that a
    call takes about ``target`` seconds (the Ctrl-C latency) -- but long enough that
    the fixed cost of a call (``overhead``, measured once per network and batch size
    by a call of no mini-batch) stays under ``MAX_OVERHEAD`` of it: throughput first.
    Starts at one mini-batch and grows at most 8x per call.
    """

    MAX_OVERHEAD = 0.05

    def __init__(self, fixed: int | None, target: float, n_batches: int) -> None:
        self.fixed = fixed
        self.target = target
        self.n_batches = n_batches
        self.size = min(fixed, n_batches) if fixed else 1
        self.overhead: float | None = None

    def wants_overhead(self, start: int) -> bool:
        return not self.fixed and self.overhead is None and 0 < start < self.n_batches

    def update(self, elapsed: float, batches: int) -> None:
        if self.fixed:
            return
        overhead = self.overhead or 0.0
        per_batch = max(elapsed - overhead, 0.1 * elapsed, 1e-9) / batches
        size = int(self.target / per_batch)
        if overhead > 0:
            size = max(size, math.ceil(overhead / (self.MAX_OVERHEAD * per_batch)))
        self.size = max(1, min(size, 8 * self.size, self.n_batches))


class _DeferredInterrupt:
    """Defer Ctrl-C (SIGINT) inside ``fit`` to the points where the state is consistent.

    In the main thread, while Python's default handler is installed, SIGINT only sets
    ``pending``; ``fit`` checks it between its compiled calls and raises
    :class:`fastbp.TrainingInterrupted`.  A second SIGINT before that raises
    ``KeyboardInterrupt`` at once (Python's usual behaviour, without the guarantee on
    the network's state): the way out of a long step that is not compiled code, such
    as a JIT compilation.  Elsewhere (another thread, a custom handler) nothing
    changes.  A SIGINT still pending on exit is re-raised as a ``KeyboardInterrupt``,
    never lost.
    """

    def __init__(self) -> None:
        self.pending = False
        self._previous: Any = None
        self._installed = False

    def _handler(self, signum, frame) -> None:
        if self.pending:  # the second Ctrl-C: give up waiting
            self._restore()
            self.pending = False
            raise KeyboardInterrupt
        self.pending = True

    def _restore(self) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
            self._installed = False

    def __enter__(self) -> _DeferredInterrupt:
        if threading.current_thread() is threading.main_thread():
            try:
                if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
                    self._previous = signal.signal(signal.SIGINT, self._handler)
                    self._installed = True
            except (ValueError, TypeError, OSError):  # e.g. not the main interpreter
                pass
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._restore()
        if self.pending and not (exc_type is not None and issubclass(exc_type, KeyboardInterrupt)):
            self.pending = False
            raise KeyboardInterrupt


class _Recorder:
    """Preallocated buffers of one ``fit`` call, and the History built from them."""

    def __init__(
        self,
        layout: Layout,
        epochs: int,
        n: int,
        batch_size: int,
        rec_mode: int,
        val,
        prb,
        diag: _DiagSetup | None = None,
    ):
        L = layout.L
        self.L = L
        self.rec_mode = rec_mode
        self.epochs = epochs
        self.n_batches = nb = -(-n // batch_size)
        sizes = np.full(nb, batch_size, dtype=np.int64)
        sizes[-1] = n - (nb - 1) * batch_size
        self.sizes = sizes
        rows = epochs * nb
        self.batch_cost = np.full(rows, np.nan)
        self.rec_batch = np.full((rows if rec_mode == RECORD_BATCH else 0, N_STATS, L), np.nan)
        self.rec_epoch = np.full((epochs if rec_mode == RECORD_EPOCH else 1, N_STATS, L), np.nan)
        self.train_cost = np.full(epochs, np.nan)
        self.n_skipped = np.zeros(epochs, dtype=np.int64)
        self.batch_rows = 0
        self.epoch_rows = 0
        self.has_val = val is not None
        self.has_prb = prb is not None
        if val is not None:
            self.val_out = np.empty(val[1].shape, dtype=layout.dtype)
        self.val_accuracy = np.full(epochs, np.nan)
        self.val_cost = np.full(epochs, np.nan)
        self.val_rows = 0
        self.probe_grad = np.zeros(layout.n_params, dtype=layout.dtype) if prb is not None else None
        self.probe_stats = np.full((epochs + 1, N_STATS, L), np.nan)
        self.probe_cost = np.full(epochs + 1, np.nan)
        self.probe_rows = 0
        # optional statistic groups: scalar rows, and histogram rows per epoch
        self.diag = diag
        groups = diag.groups if diag is not None else ()
        self.diag_columns = dx.columns_of(groups)
        xrows = rows if (groups and rec_mode == RECORD_BATCH) else 0
        self.diag_batch = np.full((xrows, dx.N_X, L), np.nan)
        self.diag_epoch = np.full(
            (epochs if (groups and rec_mode == RECORD_EPOCH) else 1, dx.N_X, L), np.nan
        )
        h = diag.hist_rows if (diag is not None and "histograms" in groups) else 0
        self.hist = np.zeros((max(epochs, 1) if h else 1, h, L, dx.N_HIST), dtype=np.int32)

    def batch_block(self, row0: int, count: int) -> np.ndarray:
        if self.rec_mode == RECORD_BATCH:
            return self.rec_batch[row0 : row0 + count]
        return self.rec_batch  # empty (0, N_STATS, L): ignored by the backend

    def epoch_block(self, e: int) -> np.ndarray:
        return self.rec_epoch[e if self.rec_mode == RECORD_EPOCH else 0]

    def diag_block(self, diag: Diag | None, row0: int, count: int) -> tuple[Diag, ...]:
        """The trailing ``diag`` argument of ``train_epoch`` (none without groups), its
        ``rec`` pointing at this call's rows."""
        if diag is None:
            return ()
        if self.rec_mode == RECORD_BATCH:
            diag.rec = self.diag_batch[row0 : row0 + count]
        return (diag,)

    def end_epoch(self, e: int, skipped: int, l2_term: float) -> None:
        nb = self.n_batches
        costs = self.batch_cost[e * nb : (e + 1) * nb]
        ok = ~np.isnan(costs)
        weights = self.sizes[ok]
        if weights.sum() > 0:
            self.train_cost[e] = float(np.dot(costs[ok], weights) / weights.sum()) + l2_term
        self.n_skipped[e] = skipped
        self.epoch_rows = e + 1
        self.batch_rows = (e + 1) * nb

    def _stat_columns(self, block: np.ndarray, rows: int) -> dict[str, np.ndarray]:
        return {name: block[:rows, i, :] for i, name in enumerate(STAT_NAMES)}

    def _diag_columns(self, block: np.ndarray, rows: int) -> dict[str, np.ndarray]:
        return {c: block[:rows, dx.XSTAT_NAMES.index(c), :] for c in self.diag_columns}

    def _histograms(self) -> Table:
        """The histogram rows recorded so far (complete epochs, and the current one's
        rows up to the last finished mini-batch)."""
        if self.hist.shape[1] == 0:
            return Table(
                name="histograms", hint="histograms are recorded with fit(stats='histograms')"
            )
        every, nb = self.diag.every, self.n_batches
        done = self.batch_rows  # mini-batches finished, over all epochs
        if self.rec_mode == RECORD_BATCH:
            per = self.hist.shape[1]
            k = np.arange(per, dtype=np.int64) * every
            epoch = np.repeat(np.arange(self.epochs, dtype=np.int64), per)
            batch = np.tile(k, self.epochs)
            # rows are in time order, so the finished ones are a prefix: a view, not
            # a copy of what may be tens of MB (5.4 KB per mini-batch on the
            # chapter's net); rows already written are never written again
            count = int(np.count_nonzero(epoch * nb + batch < done))
            flat = self.hist.reshape(-1, self.L, dx.N_HIST)[:count]
            first = {"epoch": epoch[:count], "batch": batch[:count]}
        else:
            r = self.epoch_rows
            flat = self.hist[:r, 0]
            first = {
                "epoch": np.arange(r, dtype=np.int64),
                "n_sampled": np.full(r, -(-nb // every), dtype=np.int64),
            }
        return Table(
            {
                **first,
                "delta": flat[:, :, dx.H_DELTA : dx.H_Z],
                "z": flat[:, :, dx.H_Z : dx.H_A],
                "a": flat[:, :, dx.H_A :],
            },
            name="histograms",
        )

    def history(self, sizes, backend: str, dtype: str, settings) -> History:
        nb = self.n_batches
        if self.rec_mode == RECORD_BATCH:
            r = self.batch_rows
            batch = Table(
                {
                    "epoch": np.repeat(np.arange(self.epochs, dtype=np.int64), nb)[:r],
                    "batch": np.tile(np.arange(nb, dtype=np.int64), self.epochs)[:r],
                    "size": np.tile(self.sizes, self.epochs)[:r],
                    "cost": self.batch_cost[:r],
                    **self._stat_columns(self.rec_batch, r),
                    **self._diag_columns(self.diag_batch, r),
                },
                name="batch",
            )
        else:
            batch = Table(
                name="batch", hint="per mini-batch rows are recorded with fit(record='batch')"
            )
        r = self.epoch_rows
        cols = {
            "epoch": np.arange(r, dtype=np.int64),
            "train_cost": self.train_cost[:r],
            "n_skipped": self.n_skipped[:r],
        }
        hint = ""
        if self.rec_mode == RECORD_EPOCH:
            cols.update(self._stat_columns(self.rec_epoch, r))
            cols.update(self._diag_columns(self.diag_epoch, r))
        else:
            hint = "per-epoch statistics are recorded with fit(record='epoch')"
        epoch = Table(cols, name="epoch", hint=hint)
        if self.has_prb:
            r = self.probe_rows
            probe = Table(
                {
                    "epoch": np.arange(r, dtype=np.int64),
                    "cost": self.probe_cost[:r],
                    **self._stat_columns(self.probe_stats, r),
                },
                name="probe",
            )
        else:
            probe = Table(name="probe", hint="pass probe=(X, y) to fit()")
        if self.has_val:
            r = self.val_rows
            validation = Table(
                {
                    "epoch": np.arange(r, dtype=np.int64),
                    "accuracy": self.val_accuracy[:r],
                    "cost": self.val_cost[:r],
                },
                name="validation",
            )
        else:
            validation = Table(name="validation", hint="pass validation=(X, y) to fit()")
        return History(
            batch,
            epoch,
            probe,
            validation,
            sizes=sizes,
            backend=backend,
            dtype=dtype,
            settings=settings,
            histograms=self._histograms(),
        )


@dataclass
class _DiagSetup:
    """The validated ``stats=`` settings of one ``fit``."""

    mask: int
    groups: tuple[str, ...]
    every: int
    beta: float
    hist_rows: int


def _hist_rows(n: int, batch_size: int, every: int, rec_mode: int) -> int:
    """Histogram rows per epoch: one per sampled mini-batch, or one per epoch."""
    nb = -(-n // batch_size)
    return -(-nb // every) if rec_mode == RECORD_BATCH else 1


def _diag_nbytes(layout, epochs, n, batch_size, rec_mode, groups, hist_rows) -> int:
    """Bytes ``fit`` allocates for the optional groups (records and start weights)."""
    if not groups:
        return 0
    L = layout.L
    rows = epochs * -(-n // batch_size) if rec_mode == RECORD_BATCH else epochs
    need = 8 * rows * dx.N_X * L + layout.n_params * layout.dtype.itemsize
    need += 4 * max(epochs, 1) * hist_rows * L * dx.N_HIST
    return need


def _check_callbacks(callbacks: Any) -> list[Any]:
    """``fit(callbacks=...)`` as a list of callables."""
    if callbacks is None:
        return []
    cbs = [callbacks] if callable(callbacks) else list(callbacks)
    for i, cb in enumerate(cbs):
        if not callable(cb):
            raise TypeError(
                f"callbacks[{i}] is {type(cb).__name__}, not callable; pass functions "
                "cb(net, history) or objects with __call__ (see fastbp.callbacks)"
            )
    return cbs
