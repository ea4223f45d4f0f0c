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
