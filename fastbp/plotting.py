"""Figures of the chapter-5 experiments (matplotlib, the optional ``plot`` extra).

Every function takes the result of the matching function of :mod:`fastbp.experiments`,
returns a :class:`matplotlib.figure.Figure` and, given ``path``, saves it (the format
follows the suffix: ``.png``, ``.svg``, ``.pdf``).  Figures are made without pyplot,
so no window opens and no global state changes; close nothing, just drop them.

Install matplotlib with ``pip install "fastbp[plot]"``.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

__all__ = [
    "accuracy_by_depth",
    "chain",
    "momentum",
    "obstacles",
    "per_neuron",
    "plot_gradient_flow",
    "plot_gsnr",
    "plot_noise_scale",
    "problem1",
    "saturation",
    "save",
    "speeds_at_init",
    "training_speed",
]

_INSTALL = 'fastbp.plotting needs matplotlib: pip install "fastbp[plot]" (or matplotlib)'


def _figure(width: float = 6.4, height: float = 4.4):
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - exercised only without matplotlib
        raise ImportError(_INSTALL) from exc
    return Figure(figsize=(width, height), layout="constrained")


def available() -> bool:
    """Whether matplotlib can be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def save(fig: Any, path: str | os.PathLike, dpi: int = 120) -> None:
    """Save ``fig``; the format follows the suffix of ``path`` (png, svg, pdf)."""
    fig.savefig(os.fspath(path), dpi=dpi)


def _finish(fig: Any, path: str | os.PathLike | None) -> Any:
    if path is not None:
        save(fig, path)
    return fig


def _data_label(result: Any) -> str:
    d = getattr(result, "data", None) or {}
    return d.get("title", "")


# ---------------------------------------------------------------- 3. training speed


def training_speed(result: Any, depth: int | None = None,
                   path: str | os.PathLike | None = None) -> Any:
    """Speed of learning vs epoch, one curve per hidden layer, log scale (the book's figures).

    Parameters
    ----------
    result : fastbp.experiments.TrainingSpeeds
    depth : int, optional
        Number of hidden layers to draw (one panel, as the book's figure); default all
        depths side by side.  In mini-batch mode the band shows the 10th-90th
        percentiles of the individual mini-batches' speeds and the dashed line their
        mean.
    """
    depths = result.depths if depth is None else [depth]
    if depth is not None and depth not in result.depths:
        raise ValueError(f"depth={depth} was not run; depths: {result.depths}")
    fig = _figure(6.4 * len(depths) if len(depths) > 1 else 6.4, 4.4)
    axes = fig.subplots(1, len(depths), squeeze=False)[0]
    colors = ["C0", "C1", "C2", "C3", "C4", "C5", "C6", "C7", "C8", "C9"]
    for ax, dep in zip(axes, depths):
        k = result.depths.index(dep)
        sp = result.speeds[k]
        x = np.arange(sp.shape[0])
        for l in range(sp.shape[1]):
            c = colors[l % len(colors)]
            ax.plot(x, sp[:, l], color=c, label=f"Hidden layer {l + 1}")
            if result.batch_mean is not None:
                xe = np.arange(result.batch_mean[k].shape[0]) + 0.5
                ax.fill_between(xe, result.batch_p10[k][:, l], result.batch_p90[k][:, l],
                                color=c, alpha=0.15, linewidth=0)
                ax.plot(xe, result.batch_mean[k][:, l], color=c, linestyle="--", linewidth=0.8)
        ax.set_yscale("log")
        ax.set_xlabel("Number of epochs of training")
        ax.set_ylabel(r"speed of learning $\|\partial C/\partial b^l\|$")
        mode = ("full batch" if result.mode == "full-batch"
                else f"mini-batch {result.batch_size}; dashed: mean of mini-batches")
        ax.set_title(f"Speed of learning: {dep} hidden layers\n({mode})", fontsize=10)
        ax.legend(fontsize=8, loc="best")
        ax.grid(True, which="major", alpha=0.3)
    src = _data_label(result)
    if src:
        fig.suptitle(f"{src}, {result.n_images:,} images, eta={result.eta:g}, "
                     f"lambda={result.lmbda:g}", fontsize=9)
    return _finish(fig, path)


# ------------------------------------------------------------- 1. per-neuron bars


def per_neuron(result: Any, path: str | os.PathLike | None = None, book: bool = True) -> Any:
    """The chapter's bar diagram: signed ∂C/∂b of the first neurons of each hidden layer.

    Parameters
    ----------
    result : fastbp.experiments.PerNeuron
    book : bool, default True
        Also draw the book's values (``fig/initial_gradient.json``) as hollow bars.
    """
    layers = result.gradients
    fig = _figure(3.2 * len(layers) + 1.0, 4.0)
    axes = fig.subplots(1, len(layers), sharey=True, squeeze=False)[0]
    for l, (ax, g) in enumerate(zip(axes, layers)):
        x = np.arange(1, len(g) + 1)
        width = 0.38 if book and result.book is not None else 0.7
        ax.bar(x - (width / 2 if width < 0.5 else 0), g, width, color="C0",
               label="fastbp" if l == 0 else None)
        if book and result.book is not None and l < len(result.book):
            bv = np.asarray(result.book[l][: len(g)])
            ax.bar(x[: len(bv)] + width / 2, bv, width, facecolor="none", edgecolor="C3",
                   label="book (one unseeded run)" if l == 0 else None)
        ax.axhline(0, color="k", linewidth=0.8)
        ax.set_xticks(x)
        ax.set_xlabel("neuron")
        ax.set_title(f"hidden layer {l + 1}  (speed {result.speeds[l]:.3g})", fontsize=10)
    axes[0].set_ylabel(r"$\partial C/\partial b_j$ at initialisation")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{result.sizes}: gradient of the first neurons, average over "
                 f"{result.n_images:,} images", fontsize=10)
    return _finish(fig, path)


# --------------------------------------------------------- 2. speeds at init


def speeds_at_init(result: Any, path: str | os.PathLike | None = None) -> Any:
    """Speed of learning by hidden layer at initialisation, one line per depth (log scale).

    Points: mean over the seeds; bars: min to max over the seeds; crosses: the book.
    """
    fig = _figure(6.4, 4.4)
    ax = fig.subplots()
    for k, dep in enumerate(result.depths):
        sp = result.speeds[k]
        x = np.arange(1, dep + 1)
        mean = sp.mean(axis=0)
        lo, hi = sp.min(axis=0), sp.max(axis=0)
        ax.errorbar(x + 0.05 * (k - 1), mean, yerr=[mean - lo, hi - mean], marker="o",
                    capsize=3, color=f"C{k}", label=f"{dep} hidden layers")
        book = (result.book or {}).get(dep) or (result.book or {}).get(str(dep))
        if book is not None:
            ax.plot(np.arange(1, len(book) + 1), book, "x", color=f"C{k}", markersize=8)
    ax.set_yscale("log")
    ax.set_xlabel("hidden layer")
    ax.set_xticks(np.arange(1, max(result.depths) + 1))
    ax.set_ylabel(r"speed of learning $\|\partial C/\partial b^l\|$")
    ax.set_title(f"At initialisation: mean and range over {len(result.seeds)} seeds "
                 "(x: the book)", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(True, which="major", alpha=0.3)
    return _finish(fig, path)


# ----------------------------------------------------------------- saturation


def saturation(result: Any, depth: int | None = None, activation: str | None = None,
               init: str | None = None, path: str | os.PathLike | None = None) -> Any:
    """Saturation of each hidden layer over training.

    For a :class:`~fastbp.experiments.TrainingSpeeds` (``depth`` selects the net): the
    fraction of saturated units (low and high) and the mean activation per hidden layer
    on the training images, per epoch.  For an :class:`~fastbp.experiments.Obstacles`
    (``activation``, ``init``, ``depth`` select the row): the training mini-batches'
    own low saturation and mean activation, over time (Glorot and Bengio's view).
    """
    fig = _figure(11.0, 4.0)
    ax1, ax2 = fig.subplots(1, 2)
    if hasattr(result, "rows"):
        rows = [r for r in result.rows
                if (activation is None or r["activation"] == activation)
                and (init is None or r["init"] == init)
                and (depth is None or r["depth"] == depth)]
        if not rows:
            raise ValueError("no configuration matches activation/init/depth")
        r = rows[0]
        low = np.asarray(r["batch_sat_low"])
        mean = np.asarray(r["batch_act_mean"])
        x = (np.arange(low.shape[0]) + 1) * result.window
        xlabel = "mini-batches of training"
        title = f"{r['activation']}, init {r['init']}, {r['depth']} hidden layers"
        high = None
    else:
        dep = depth if depth is not None else result.depths[-1]
        k = result.depths.index(dep)
        low, high, mean = result.sat_low[k], result.sat_high[k], result.act_mean[k]
        x = np.arange(low.shape[0])
        xlabel = "Number of epochs of training"
        title = f"{dep} hidden layers"
    for l in range(low.shape[1]):
        ax1.plot(x, low[:, l], color=f"C{l % 10}", label=f"layer {l + 1} low")
        if high is not None:
            ax1.plot(x, high[:, l], color=f"C{l % 10}", linestyle=":",
                     label=f"layer {l + 1} high")
        ax2.plot(x, mean[:, l], color=f"C{l % 10}", label=f"Hidden layer {l + 1}")
    ax1.set_ylabel("fraction of saturated units")
    ax1.set_ylim(-0.02, 1.02)
    ax2.set_ylabel("mean activation")
    for ax in (ax1, ax2):
        ax.set_xlabel(xlabel)
        ax.grid(True, alpha=0.3)
    ax1.legend(fontsize=7, ncol=2)
    ax2.legend(fontsize=7)
    fig.suptitle(f"Saturation per layer: {title}", fontsize=10)
    return _finish(fig, path)


# ---------------------------------------------------------- 4. accuracy by depth


def accuracy_by_depth(result: Any, path: str | os.PathLike | None = None) -> Any:
    """Validation accuracy per epoch, one curve per depth (mean over seeds), book marks."""
    fig = _figure(6.4, 4.4)
    ax = fig.subplots()
    for k, dep in enumerate(result.depths):
        acc = np.asarray(result.accuracy[k]) * 100
        x = np.arange(1, acc.shape[1] + 1)
        ax.plot(x, np.nanmean(acc, axis=0), color=f"C{k}",
                label=f"{dep} hidden layer{'s' if dep > 1 else ''}")
        if acc.shape[0] > 1:
            ax.fill_between(x, np.nanmin(acc, axis=0), np.nanmax(acc, axis=0), color=f"C{k}",
                            alpha=0.15, linewidth=0)
        book = (result.book or {}).get(dep) or (result.book or {}).get(str(dep))
        if book is not None and result.data.get("name") == "mnist":
            ax.plot([x[-1]], [book * 100], "x", color=f"C{k}", markersize=9)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy (%)")
    lo = np.nanmin([np.nanmin(np.asarray(a)[:, -1]) for a in result.accuracy]) * 100
    ax.set_ylim(max(0.0, lo - 5), 100)
    ax.set_title(f"Accuracy by depth: {_data_label(result)}, mini-batch {result.batch_size}, "
                 f"eta={result.eta:g}, lambda={result.lmbda:g}", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)
    return _finish(fig, path)


# ------------------------------------------------------------------- 5. chain


def problem1(result: Any, path: str | os.PathLike | None = None) -> Any:
    """Problem 1: width of the interval of inputs with |w σ'(wa+b)| >= 1, against |w|."""
    fig = _figure(6.4, 4.2)
    ax = fig.subplots()
    ax.plot(result.problem1_w, result.problem1_width_formula, label="eq. (123)")
    ax.plot(result.problem1_w[::20], result.problem1_width_numeric[::20], "o", markersize=3,
            label="root-finding on σ'(z) = 1/|w|")
    ax.plot([result.problem1_argmax], [result.problem1_max], "*", markersize=12, color="C3",
            label=f"max {result.problem1_max:.4f} at |w| = {result.problem1_argmax:.3f}")
    ax.set_xlabel("|w|")
    ax.set_ylabel("width of the interval of a")
    ax.set_title("Problem 1: the region where |w σ'(wa+b)| ≥ 1 is narrow", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)
    return _finish(fig, path)


def chain(result: Any, path: str | os.PathLike | None = None) -> Any:
    """The one-neuron chain: |∂C/∂b_j| per neuron (vanishing and exploding), and by length."""
    fig = _figure(11.0, 4.0)
    ax1, ax2 = fig.subplots(1, 2)
    for case, c in ((result.vanishing, "C0"), (result.exploding, "C3")):
        j = np.arange(1, len(case.dC_db) + 1)
        ax1.semilogy(j, np.abs(case.dC_db), "o-", color=c, label=f"{case.name} (formula)")
        ax1.semilogy(j, np.abs(case.dC_db_network), "x", color="k", markersize=8)
    ax1.set_xlabel("neuron j")
    ax1.set_xticks(np.arange(1, result.n + 1))
    ax1.set_ylabel(r"$|\partial C/\partial b_j|$")
    ax1.set_title("chain of one neuron per layer (x: fastbp.Network)", fontsize=10)
    ax1.legend(fontsize=8)
    ax2.plot(result.lengths, result.log10_ratio_median, "o-", label="median")
    ax2.fill_between(result.lengths, result.log10_ratio_p10, result.log10_ratio_p90, alpha=0.2,
                     label="10th-90th percentile")
    ax2.set_xlabel("neurons in the chain n")
    ax2.set_ylabel(r"$\log_{10} |\partial C/\partial b_1 \,/\, \partial C/\partial b_n|$")
    ax2.set_title(f"N(0,1) weights: typical factor |w σ'(z)| = {result.typical_factor:.3f}",
                  fontsize=10)
    ax2.legend(fontsize=8)
    for ax in (ax1, ax2):
        ax.grid(True, alpha=0.3)
    return _finish(fig, path)


# ----------------------------------------------------------------- 6. obstacles


def obstacles(result: Any, path: str | os.PathLike | None = None) -> Any:
    """log10 of last/first hidden-layer speed at initialisation, per configuration and depth."""
    labels = [f"{a} / {i}" for a in result.activations for i in result.inits]
    M = np.full((len(labels), len(result.depths)), np.nan)
    for r in result.rows:
        i = labels.index(f"{r['activation']} / {r['init']}")
        j = result.depths.index(r["depth"])
        with np.errstate(divide="ignore", invalid="ignore"):
            M[i, j] = np.log10(r["ratio_init"])
    fig = _figure(2.0 + 1.2 * len(result.depths), 1.2 + 0.28 * len(labels))
    ax = fig.subplots()
    lim = np.nanmax(np.abs(M[np.isfinite(M)])) if np.isfinite(M).any() else 1.0
    im = ax.imshow(np.where(np.isfinite(M), M, np.nan), aspect="auto", cmap="RdBu_r",
                   vmin=-lim, vmax=lim)
    for i in range(M.shape[0]):
        for j in range(M.shape[1]):
            if np.isfinite(M[i, j]):
                ax.text(j, i, f"{M[i, j]:.1f}", ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(result.depths)), [str(d) for d in result.depths])
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set_xlabel("hidden layers")
    ax.set_title("log10(speed of last / first hidden layer) at initialisation", fontsize=9)
    fig.colorbar(im, ax=ax, shrink=0.6)
    return _finish(fig, path)


# ------------------------------------------------------------------ 7. momentum


def momentum(result: Any, path: str | os.PathLike | None = None) -> Any:
    """Validation accuracy per epoch and first-hidden-layer speed, per method (best η)."""
    fig = _figure(11.0, 4.0)
    ax1, ax2 = fig.subplots(1, 2)
    for k, (name, m) in enumerate(result.methods.items()):
        acc = np.asarray(m["accuracy"], dtype=float) * 100
        x = np.arange(1, len(acc) + 1)
        ax1.plot(x, acc, "o-", color=f"C{k}", markersize=3,
                 label=f"{name} (eta={m['best_eta']:g})")
        sp = np.asarray(m["speed"], dtype=float)
        ax2.semilogy(x, sp[:, 0], color=f"C{k}", label=f"{name}: layer 1")
        ax2.semilogy(x, sp[:, -1], color=f"C{k}", linestyle="--")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("validation accuracy (%)")
    ax1.legend(fontsize=7)
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("speed (solid: hidden layer 1, dashed: last)")
    for ax in (ax1, ax2):
        ax.grid(True, alpha=0.3)
    fig.suptitle(f"Momentum on {result.sizes}, {_data_label(result)}", fontsize=10)
    return _finish(fig, path)


# ------------------------------------------------- 8. optional statistic groups (History)
#
# These take a fastbp.History recorded with fit(stats=...) (fastbp/_diagnostics.py
# defines the groups) instead of an experiment result.  Layers are numbered from 1 as
# in the README's tables ("layer l" is net.weights[l - 1]); ``layers=`` takes those
# numbers.

_QUANTITY_SYMBOL = {"delta": r"$\delta$", "z": "$z$", "a": "$a$"}


def _root_figure(obj: Any) -> Any:
    """The top-level Figure of an Axes, a SubFigure or a Figure."""
    f = getattr(obj, "figure", obj)
    for _ in range(16):
        parent = getattr(f, "figure", None)
        if parent is None or parent is f:
            break
        f = parent
    return f


def _panels(
    n: int,
    ax: Any,
    fig: Any,
    ncols: int = 1,
    width: float = 6.4,
    height: float = 4.4,
    sharex: bool = True,
) -> tuple[Any, list[Any]]:
    """``n`` Axes: the caller's ``ax`` (one per panel), or new ones in ``fig`` or a new Figure."""
    if ax is not None and fig is not None:
        raise ValueError("pass ax= or fig=, not both")
    if ax is not None:
        axes = list(np.ravel(np.asarray(ax, dtype=object)))
        if len(axes) != n:
            raise ValueError(f"ax= needs {n} Axes (one per panel), got {len(axes)}")
        return _root_figure(axes[0]), axes
    if fig is None:
        fig = _figure(width, height)
    nrows = -(-n // ncols)
    grid = fig.subplots(nrows, ncols, squeeze=False, sharex=sharex)
    axes = list(grid.ravel())
    for extra in axes[n:]:
        extra.remove()
    return _root_figure(fig), axes[:n]


def _layer_numbers(layers: Any, n_layers: int) -> list[int]:
    """Column indices (0-based) of the layers selected by 1-based numbers (or -1 = last)."""
    if layers is None:
        return list(range(n_layers))
    if isinstance(layers, (int, np.integer)):
        layers = [layers]
    out: list[int] = []
    for l in layers:
        if isinstance(l, bool) or not isinstance(l, (int, np.integer)):
            raise TypeError(f"layers: {l!r} is not an int (layers are numbered 1 .. {n_layers})")
        l = int(l)
        if 1 <= l <= n_layers:
            col = l - 1
        elif -n_layers <= l <= -1:
            col = n_layers + l
        else:
            raise ValueError(
                f"layers: there is no layer {l}; layers are numbered 1 .. {n_layers} "
                "(layer l is net.weights[l - 1]; -1 is the last)"
            )
        if col not in out:
            out.append(col)
    if not out:
        raise ValueError("layers= selects no layer")
    return out


def _group_of(column: str) -> str:
    from ._diagnostics import GROUP_COLUMNS

    for group, columns in GROUP_COLUMNS.items():
        if column in columns:
            return group
    return column


def _stat_column(history: Any, column: str, table: str | None) -> tuple[str, np.ndarray]:
    """``(table name, (rows, L) float64 column)``, or a ValueError that says how to get it."""
    group = _group_of(column)
    if table is None:
        for name in ("batch", "epoch"):
            t = getattr(history, name, None)
            if t is not None and column in t:
                values = np.asarray(t[column], dtype=np.float64)
                break
        else:
            raise ValueError(
                f"history has no {column!r} column: fit with stats=({group!r},) or stats='all'"
            )
    elif table in ("batch", "epoch"):
        t = getattr(history, table, None)
        if t is None or column not in t:
            raise ValueError(
                f"history.{table} has no {column!r} column: fit with record={table!r} and "
                f"stats=({group!r},) or stats='all'"
            )
        name, values = table, np.asarray(t[column], dtype=np.float64)
    else:
        raise ValueError(f"table={table!r}: choose 'batch', 'epoch' or None (whichever has it)")
    if values.ndim != 2:
        raise ValueError(f"history.{name}[{column!r}] has shape {values.shape}, expected (rows, L)")
    return name, values


def _time(history: Any, name: str) -> tuple[np.ndarray, str]:
    """x of the rows of table ``name``: the mini-batch counted over the fit, or the epoch."""
    t = getattr(history, name)
    if name == "batch":
        return np.arange(len(t), dtype=np.float64), "mini-batch"
    if "epoch" in t:
        return np.asarray(t["epoch"], dtype=np.float64), "epoch"
    return np.arange(len(t), dtype=np.float64), "epoch"


def _layer_lines(
    ax: Any, x: np.ndarray, values: np.ndarray, cols: list[int], positive: bool = True
) -> None:
    """One line per layer through its finite (and, for a log y, positive) points."""
    for l in cols:
        y = values[:, l]
        keep = np.isfinite(y) & (y > 0) if positive else np.isfinite(y)
        n = int(keep.sum())
        ax.plot(
            x[keep],
            y[keep],
            color=f"C{l % 10}",
            marker="o" if n <= 100 else None,
            markersize=3,
            linewidth=1.2,
            label=f"layer {l + 1}" if n else f"layer {l + 1} (no data)",
        )


def _sampling_note(history: Any) -> str:
    every = history.settings.get("stats_every")
    if every not in (None, 1):
        return f"; mini-batches sampled every {every}"
    return ""


def _integer_x(ax: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def plot_noise_scale(
    history: Any,
    table: str | None = None,
    layers: Any = None,
    *,
    show_batch_size: bool = True,
    ax: Any = None,
    fig: Any = None,
    path: str | os.PathLike | None = None,
) -> Any:
    """Gradient noise scale B_simple of each layer over training, log scale.

    ``noise_scale`` is McCandlish et al.'s (2018) simple noise scale
    ``B_simple = tr(Sigma) / |G|^2`` (both exponentially averaged over the sampled
    mini-batches; see ``fastbp/_diagnostics.py``): roughly the batch size above
    which larger mini-batches stop paying off.

    Parameters
    ----------
    history : fastbp.History
        Recorded with ``fit(stats=("noise_scale",))`` or ``stats="all"``.
    table : {"batch", "epoch"}, optional
        Table to plot; default ``"batch"`` if it has the column, else ``"epoch"``.
        With ``"batch"`` x is the mini-batch counted from 0 over the ``fit`` call (the
        row of ``history.batch``); with ``"epoch"`` it is the epoch.
    layers : int or sequence of int, optional
        Layers to draw, numbered from 1 (layer ``l`` is ``net.weights[l - 1]``, as in
        the legend); ``-1`` is the last.  Default all.
    show_batch_size : bool, default True
        Also draw ``history.settings["batch_size"]`` as a dotted horizontal line.
    ax : matplotlib Axes, optional
        Draw into this Axes instead of a new Figure.
    fig : matplotlib Figure or SubFigure, optional
        Add the Axes to this (empty) figure instead of a new one.
    path : str or os.PathLike, optional
        Save the figure there (format from the suffix).

    Returns
    -------
    matplotlib.figure.Figure
        One Axes; one line per layer (legend ``"layer 1"`` ...), then the batch size
        line.  Only sampled points are drawn: NaN rows (mini-batches not sampled,
        ``m = 1``) and non-positive values (a negative ``|G|^2`` estimate early in
        training), which a log scale cannot show, are left out.

    Raises
    ------
    ValueError
        If the history has no ``noise_scale`` column (fit without that group), or
        ``layers`` names no layer of the network.
    """
    name, values = _stat_column(history, "noise_scale", table)
    cols = _layer_numbers(layers, values.shape[1])
    x, xlabel = _time(history, name)
    figure, (a,) = _panels(1, ax, fig)
    _layer_lines(a, x, values, cols)
    batch_size = history.settings.get("batch_size")
    if show_batch_size and batch_size is not None:
        a.axhline(
            batch_size, color="0.35", linestyle=":", linewidth=1, label=f"batch size {batch_size}"
        )
    a.set_yscale("log")
    a.set_xlabel(xlabel)
    _integer_x(a)
    a.set_ylabel(r"noise scale $B_\mathrm{simple} = \mathrm{tr}\,\Sigma\,/\,|G|^2$")
    ema = history.settings.get("noise_ema")
    note = f"EMA coefficient {ema:g}" if isinstance(ema, (int, float)) else "moving averages"
    a.set_title(f"Gradient noise scale per layer\n({note}{_sampling_note(history)})", fontsize=10)
    a.legend(fontsize=8)
    a.grid(True, which="major", alpha=0.3)
    return _finish(figure, path)


def plot_gsnr(
    history: Any,
    table: str | None = None,
    layers: Any = None,
    *,
    show_zero: bool = False,
    ax: Any = None,
    fig: Any = None,
    path: str | os.PathLike | None = None,
) -> Any:
    """Mean gradient signal-to-noise ratio of each layer over training, log scale.

    ``gsnr`` is the mean over a layer's parameters of ``g^2 / v`` (mean gradient
    squared over its variance across the mini-batch's examples; Liu et al. 2020),
    over the parameters with ``v > 0``; ``gsnr_zero`` counts those left out.

    Parameters
    ----------
    history : fastbp.History
        Recorded with ``fit(stats=("moments",))`` or ``stats="all"``.
    table : {"batch", "epoch"}, optional
        Table to plot; default ``"batch"`` if it has the column, else ``"epoch"``
        (x: the mini-batch counted from 0 over the ``fit`` call, or the epoch).
    layers : int or sequence of int, optional
        Layers to draw, numbered from 1 (layer ``l`` is ``net.weights[l - 1]``);
        ``-1`` is the last.  Default all.
    show_zero : bool, default False
        Add a second panel below with ``gsnr_zero``, the number of parameters with
        zero gradient variance (linear scale).
    ax : matplotlib Axes or sequence of 2 Axes, optional
        Draw into these (two with ``show_zero=True``) instead of a new Figure.
    fig : matplotlib Figure or SubFigure, optional
        Add the Axes to this (empty) figure instead of a new one.
    path : str or os.PathLike, optional
        Save the figure there (format from the suffix).

    Returns
    -------
    matplotlib.figure.Figure
        One Axes (two with ``show_zero``), one line per layer in each (legend
        ``"layer 1"`` ...).  Only sampled points are drawn: NaN rows are left out, and
        on the log-scale panel so are zeros.

    Raises
    ------
    ValueError
        If the history has no ``gsnr`` (or, with ``show_zero``, ``gsnr_zero``) column,
        or ``layers`` names no layer of the network.
    """
    name, values = _stat_column(history, "gsnr", table)
    zero = _stat_column(history, "gsnr_zero", name)[1] if show_zero else None
    cols = _layer_numbers(layers, values.shape[1])
    x, xlabel = _time(history, name)
    n = 1 if zero is None else 2
    figure, axes = _panels(n, ax, fig, height=4.4 if n == 1 else 6.4)
    a = axes[0]
    _layer_lines(a, x, values, cols)
    a.set_yscale("log")
    a.set_ylabel(r"mean GSNR $g^2 / \sigma^2$")
    a.set_title(
        "Mean gradient signal-to-noise ratio per layer\n(parameters with variance > 0"
        f"{_sampling_note(history)})",
        fontsize=10,
    )
    a.legend(fontsize=8)
    if zero is not None:
        b = axes[1]
        _layer_lines(b, x, zero, cols, positive=False)
        b.set_ylabel("parameters with zero variance")
        b.set_xlabel(xlabel)
    else:
        a.set_xlabel(xlabel)
    for p in axes:
        p.grid(True, which="major", alpha=0.3)
        _integer_x(p)
    return _finish(figure, path)


def _histogram_time(history: Any, t: Any) -> tuple[np.ndarray, str]:
    """x of the rows of ``history.histograms``: mini-batch counted over the fit, or epoch."""
    n = len(t)
    if "batch" in t:
        ep = np.asarray(t["epoch"], dtype=np.int64)
        bt = np.asarray(t["batch"], dtype=np.int64)
        b = getattr(history, "batch", None)
        if n and b is not None and "epoch" in b and "batch" in b and len(b):
            be = np.asarray(b["epoch"], dtype=np.int64)
            bb = np.asarray(b["batch"], dtype=np.int64)
            width = int(max(bt.max(), bb.max())) + 1
            keys = be * width + bb
            order = np.argsort(keys, kind="stable")
            pos = np.searchsorted(keys[order], ep * width + bt)
            pos = np.minimum(pos, len(keys) - 1)
            if np.array_equal(keys[order][pos], ep * width + bt):
                return order[pos].astype(np.float64), "mini-batch"
        s = history.settings
        bs, n_train = s.get("batch_size"), s.get("n_train")
        if isinstance(bs, (int, np.integer)) and isinstance(n_train, (int, np.integer)) and bs > 0:
            per_epoch = -(-n_train // bs)
            return (ep * per_epoch + bt).astype(np.float64), "mini-batch"
        return np.arange(n, dtype=np.float64), "sampled mini-batch (row of history.histograms)"
    if "epoch" in t:
        return np.asarray(t["epoch"], dtype=np.float64), "epoch"
    return np.arange(n, dtype=np.float64), "record"


def _a_ranges(history: Any, n_layers: int) -> np.ndarray | None:
    """``(L, 2)`` linear ranges of the ``a`` histograms: settings["a_range"], else from
    the activations in the settings, else None."""
    from ._contract import ACTIVATION_CODES
    from ._diagnostics import activation_range

    s = history.settings
    r = s.get("a_range")
    if r is not None:
        arr = np.asarray(r, dtype=np.float64)
        if arr.shape == (n_layers, 2):
            return arr
    hidden, output = s.get("activation"), s.get("output")
    if hidden is None or output is None:
        return None
    names = [hidden] * (n_layers - 1) if isinstance(hidden, str) else list(hidden)
    names.append(output)
    if len(names) != n_layers or not all(nm in ACTIVATION_CODES for nm in names):
        return None
    return np.array([activation_range(ACTIVATION_CODES[nm]) for nm in names], dtype=np.float64)


def _bin_layout(
    occupied: np.ndarray, n_bins: int, compress: bool, crop: bool
) -> tuple[np.ndarray, list[tuple[int, int]], tuple[float, float]]:
    """y edges of the bins (runs of empty bins between occupied ones squeezed into
    ``_RUN_HEIGHT`` bin heights with ``compress``), the squeezed runs ``(first, stop)``
    and the y limits."""
    heights = np.ones(n_bins)
    runs: list[tuple[int, int]] = []
    occ = np.flatnonzero(occupied)
    if compress and occ.size > 1:
        for a, b in zip(occ[:-1], occ[1:]):
            if b - a - 1 >= _MIN_RUN:
                runs.append((int(a) + 1, int(b)))
                heights[a + 1 : b] = _RUN_HEIGHT / (b - a - 1)
    edges = np.concatenate(([0.0], np.cumsum(heights)))
    if crop and occ.size:
        lims = (edges[max(0, occ[0] - 1)], edges[min(n_bins, occ[-1] + 2)])
    else:
        lims = (edges[0], edges[-1])
    return edges, runs, (float(lims[0]), float(lims[1]))


_MIN_RUN = 4  # squeeze runs of at least this many empty bins
_RUN_HEIGHT = 2.0  # into this many bin heights


def _decade_ticks(
    edges: np.ndarray, runs: list[tuple[int, int]], lims: tuple[float, float]
) -> tuple[list[float], list[str]]:
    """Ticks at the decade boundaries ``±10^k`` (bin edges) and at the zero bin.

    In order of preference: 0 (unless its bin is empty, inside a squeezed run), the
    boundaries where a squeezed run of empty bins ends, 0 (if inside a run), then every
    ``stride``-th decade; a tick closer than 1/15 of the visible range to a kept one is
    dropped.
    """
    from ._diagnostics import decade_edges

    lo, labels = decade_edges()
    zero = labels.index("0")
    y_lo, y_hi = lims
    inside = np.zeros(len(lo) + 1, dtype=bool)  # boundary i strictly inside a squeezed run
    for a, b in runs:
        inside[a + 1 : b] = True

    def label(i: int) -> str | None:
        v = lo[i] if i < len(lo) else np.inf
        if not np.isfinite(v) or v == 0:
            return None
        k = int(round(np.log10(abs(v))))
        return f"-1e{k}" if v < 0 else f"1e{k}"

    def visible(y: float) -> bool:
        return y_lo - 1e-9 <= y <= y_hi + 1e-9

    first: list[tuple[float, str]] = []
    y_zero = 0.5 * (edges[zero] + edges[zero + 1])
    zero_squeezed = any(a <= zero < b for a, b in runs)
    if visible(y_zero) and not zero_squeezed:
        first.append((float(y_zero), "0"))
    for a, b in runs:
        for i in (a, b):
            name = label(i)
            if name is not None and visible(edges[i]):
                first.append((float(edges[i]), name))
    if visible(y_zero) and zero_squeezed:
        first.append((float(y_zero), "0"))
    rest = [(i, label(i)) for i in range(1, len(lo)) if not inside[i] and visible(edges[i])]
    rest = [(i, name) for i, name in rest if name is not None]
    stride = 1
    for stride in (1, 2, 3, 5, 10, 15, 20, 30, 60):
        n = sum(1 for i, name in rest if int(name.split("e")[1]) % stride == 0)
        if n <= 8:
            break
    first += [(float(edges[i]), name) for i, name in rest if int(name.split("e")[1]) % stride == 0]
    gap = (y_hi - y_lo) / 15.0
    kept: list[tuple[float, str]] = []
    for y, name in first:
        if all(abs(y - yk) >= gap and name != nk for yk, nk in kept):
            kept.append((y, name))
    kept.sort()
    return [y for y, _ in kept], [name for _, name in kept]


def plot_gradient_flow(
    history: Any,
    quantity: str = "delta",
    layers: Any = None,
    *,
    log: bool = False,
    vmin: float | None = None,
    skip_empty: bool = True,
    crop: bool = True,
    compress: bool = True,
    cmap: str = "viridis",
    colorbar: bool = True,
    ax: Any = None,
    fig: Any = None,
    path: str | os.PathLike | None = None,
) -> Any:
    """Gradient flow: the distribution of delta (or z, a) of every layer over training.

    One panel per layer, layer 1 on top.  x is the record (mini-batch or epoch), y
    the histogram bins of ``history.histograms`` and the colour the fraction of that
    layer's values of the record that fall in the bin.  For ``delta`` and ``z`` the
    bins are signed decades, ``10^k <= |x| < 10^(k+1)`` for each sign, so vanishing
    gradients show as the mass of the early layers' deltas moving down to tiny
    decades (towards the ``0`` tick in the middle) and exploding ones as it moving
    out.

    Parameters
    ----------
    history : fastbp.History
        Recorded with ``fit(stats=("histograms",))`` or ``stats="all"``.
    quantity : {"delta", "z", "a"}, default "delta"
        ``delta`` (the backpropagated error, ``dC/dz`` of each example), ``z``
        (pre-activations) in signed decades; ``a`` (activations) in equal bins over
        ``history.settings["a_range"]`` (else the activation's ``activation_range``),
        plus a bin below and a bin above.
    layers : int or sequence of int, optional
        Layers to draw, numbered from 1 (layer ``l`` is ``net.weights[l - 1]``);
        ``-1`` is the last.  Default all.
    log : bool, default False
        Logarithmic colour scale (shows the sparse tails of the distribution).
    vmin : float, optional
        Smallest fraction of the colour scale with ``log=True``; default the smallest
        nonzero fraction drawn.
    skip_empty : bool, default True
        Leave out records without any count: mini-batches not sampled (if the table
        holds rows for them), dropped by ``on_nonfinite="skip"``, or epochs with
        ``n_sampled == 0``.  Each drawn record is a column from its own x to the
        next drawn record's x (the last one as wide as the most common spacing), so with
        ``stats_every=k`` a sampled mini-batch covers the ``k`` mini-batches it
        stands for and left-out records do not leave holes.  With ``False`` they
        are drawn as blank columns.
    crop : bool, default True
        Limit the y axis to the bins with any count (in the drawn layers and records)
        and one bin around them, instead of all ``N_DECADE_BINS``; for ``a``, leave out
        the bins below and above the range when both are empty.  The data of the
        panels is all the bins either way.
    compress : bool, default True
        For ``delta`` and ``z``, draw each run of four or more empty bins between
        occupied ones two bins high (hatched, its ends labelled): the two signs'
        decades are otherwise far apart, the tiny decades between them usually empty.
        The y axis is then not linear in the bin index (ticks stay on the bin edges).
    cmap : str, default "viridis"
        Colour map; empty bins are not coloured (the background shows).
    colorbar : bool, default True
        Add one colour bar for all panels (all panels share the colour scale).
    ax : matplotlib Axes or sequence of Axes, optional
        Draw into these, one per drawn layer, instead of a new Figure.
    fig : matplotlib Figure or SubFigure, optional
        Add the panels to this (empty) figure instead of a new one.
    path : str or os.PathLike, optional
        Save the figure there (format from the suffix).

    Returns
    -------
    matplotlib.figure.Figure
        The panels (one ``QuadMesh`` each, its array ``(bins, records)`` the fraction
        ``counts / counts.sum()`` of the record and layer, masked where the count is
        0), then the colour bar's Axes.

    Raises
    ------
    ValueError
        If the history has no histograms (fit without that group), ``quantity`` is not
        one of the three, the table holds no count, or ``layers`` names no layer.

    Notes
    -----
    Panels are stacked in one column up to 6 layers, in two columns up to 12, in three
    beyond.  x is the mini-batch counted from 0 over the ``fit`` call (the row of
    ``history.batch``, as in :func:`plot_noise_scale`) with ``record="batch"``, the
    epoch with ``record="epoch"``.
    """
    from matplotlib.colors import LogNorm, Normalize

    from ._diagnostics import N_DECADE_BINS, N_LINEAR_BINS, linear_edges

    if quantity not in _QUANTITY_SYMBOL:
        raise ValueError(f"quantity={quantity!r}: choose 'delta', 'z' or 'a'")
    t = getattr(history, "histograms", None)
    if t is None or quantity not in t:
        raise ValueError("history has no histograms: fit with stats=('histograms',) or stats='all'")
    counts = np.asarray(t[quantity])
    n_bins = N_LINEAR_BINS if quantity == "a" else N_DECADE_BINS
    if counts.ndim != 3 or counts.shape[2] != n_bins:
        raise ValueError(
            f"history.histograms[{quantity!r}] has shape {counts.shape}, "
            f"expected (rows, L, {n_bins})"
        )
    n_layers = counts.shape[1]
    cols = _layer_numbers(layers, n_layers)
    x, xlabel = _histogram_time(history, t)
    if skip_empty:
        keep = counts.sum(axis=(1, 2)) > 0
        counts, x = counts[keep], x[keep]
    if counts.shape[0] == 0:
        raise ValueError(
            f"history.histograms[{quantity!r}] holds no count (no mini-batch was sampled)"
        )
    if x.size > 1 and not np.all(np.diff(x) > 0):
        x, xlabel = np.arange(x.size, dtype=np.float64), "record (row of history.histograms)"
    step = 1.0  # width of the last column: the most common spacing (the smaller on a tie)
    if x.size > 1:
        spacings, times = np.unique(np.diff(x), return_counts=True)
        step = float(spacings[np.argmax(times)])
    x_edges = np.append(x, x[-1] + step)

    totals = counts.sum(axis=2, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = counts / totals  # NaN where a layer has no count in the record
    sel = frac[:, cols, :]
    positive = sel[sel > 0]
    vmax = float(positive.max()) if positive.size else 1.0
    if log:
        lo = vmin if vmin is not None else (float(positive.min()) if positive.size else 1e-6)
        norm = LogNorm(vmin=min(lo, vmax), vmax=vmax)
    else:
        norm = Normalize(vmin=0.0, vmax=vmax)

    occupied = counts[:, cols, :].sum(axis=(0, 1)) > 0
    if quantity == "a":
        # the range [lo, hi] is always drawn; the bins below and above it only if used
        y_edges = np.arange(n_bins + 1, dtype=np.float64)
        runs: list[tuple[int, int]] = []
        outer = occupied[0] or occupied[-1]
        lims = (0.0, float(n_bins)) if (outer or not crop) else (1.0, float(n_bins - 1))
    else:
        y_edges, runs, lims = _bin_layout(occupied, n_bins, compress, crop)
    ranges = _a_ranges(history, n_layers) if quantity == "a" else None

    n = len(cols)
    ncols = 1 if n <= 6 else (2 if n <= 12 else 3)
    nrows = -(-n // ncols)
    figure, axes = _panels(
        n, ax, fig, ncols=ncols, width=6.4 * ncols + 1.0, height=1.0 + 1.7 * nrows
    )
    symbol = _QUANTITY_SYMBOL[quantity]
    mesh = None
    for i, (p, l) in enumerate(zip(axes, cols)):
        data = frac[:, l, :].T
        mesh = p.pcolormesh(
            x_edges,
            y_edges,
            np.ma.masked_where(~(data > 0), data),
            cmap=cmap,
            norm=norm,
            shading="flat",
            rasterized=True,
        )
        p.set_ylim(*lims)
        if quantity != "a":
            for a, b in runs:  # squeezed runs of empty bins: hatched
                p.axhspan(
                    y_edges[a],
                    y_edges[b],
                    facecolor="none",
                    edgecolor="0.7",
                    hatch="///",
                    linewidth=0,
                )
            ticks, names = _decade_ticks(y_edges, runs, lims)
            p.set_yticks(ticks, names, fontsize=7)
            p.set_ylabel(symbol)
        elif ranges is not None:
            lo_a, hi_a = ranges[l]
            edges = linear_edges(lo_a, hi_a)
            n_lin = len(edges) - 1
            marks = sorted({0, n_lin // 4, n_lin // 2, (3 * n_lin) // 4, n_lin})
            p.set_yticks([1.0 + j for j in marks], [f"{edges[j]:g}" for j in marks], fontsize=7)
            for y in (1.0, n_lin + 1.0):  # the range; beyond: the bins below and above it
                p.axhline(y, color="0.5", linewidth=0.6)
            p.set_ylabel(symbol)
        else:
            p.set_ylabel(f"{symbol} (bin; range unknown)")
        p.set_title(f"layer {l + 1}", fontsize=9, loc="left")
        _integer_x(p)
        if i >= n - ncols:  # the last panel of its column
            p.set_xlabel(xlabel)
            p.tick_params(labelbottom=True)
    if colorbar and mesh is not None:
        scale = " (log scale)" if log else ""
        axes[0].figure.colorbar(
            mesh, ax=axes, shrink=0.9, label=f"fraction of the layer's values{scale}"
        )
    if ax is None:
        what = {"delta": "deltas", "z": "pre-activations z", "a": "activations a"}[quantity]
        kind = "signed decades" if quantity != "a" else "linear bins"
        (fig if fig is not None else figure).suptitle(
            f"Distribution of the {what} per layer ({kind}{_sampling_note(history)})",
            fontsize=10,
        )
    return _finish(figure, path)
