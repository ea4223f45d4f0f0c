"""The ``fastbp`` command: chapter 5 of Nielsen's book in one line.

``fastbp speeds``  the main job: speed of learning of each hidden layer, at
                   initialisation and during training (experiments 2 and 3, plus the
                   per-neuron bars of experiment 1); a table, JSON results and figures
``fastbp train``   train a network given on the command line, with per-epoch accuracy
                   and per-layer speeds
``fastbp chain``   the unstable gradient in a chain of one neuron per layer, Problem 1
``fastbp info``    version, backends (and why), BLAS, data sets found

Every command has ``--help``; errors are one line on stderr (exit status 1; 2 for a
bad command line; 130 when interrupted); results are deterministic with ``--seed``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from . import datasets as ds
from . import experiments as ex
from ._progress import Progress

PROG = "fastbp"


class _Parser(argparse.ArgumentParser):
    """argparse, with a one-line error that points at --help."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


class CommandError(Exception):
    """An error reported as one line, without a traceback."""


# ------------------------------------------------------------------------ helpers


def _int_list(text: str) -> list[int]:
    try:
        out = [int(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of integers (e.g. 784,30,30,10)"
        ) from None
    if not out:
        raise argparse.ArgumentTypeError("the list is empty")
    return out


def _momentum(text: str) -> Any:
    """``0.9`` or ``sutskever`` / ``sutskever:0.99`` (the schedule, capped)."""
    from ._schedules import Sutskever

    t = text.strip().lower()
    if t.startswith("sutskever"):
        _, _, cap = t.partition(":")
        try:
            return Sutskever(mu_max=float(cap) if cap else 0.99)
        except (TypeError, ValueError) as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    try:
        return float(t)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a number in [0, 1) nor 'sutskever[:MU_MAX]'"
        ) from None


def _fmt(v: float, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "nan"
    return f"{v:.{digits}g}" if abs(v) >= 1e-3 else f"{v:.{digits - 1}e}"


def _sizes_label(sizes: list[int]) -> str:
    return "[" + ",".join(str(s) for s in sizes) + "]"


def _progress_enabled(args: argparse.Namespace) -> bool | None:
    if getattr(args, "progress", None) is False:
        return False
    if getattr(args, "progress", None) is True:
        return True
    return None  # only on a terminal


def _load_data(args: argparse.Namespace, min_train: int | None) -> ds.Dataset:
    data = ds.load(args.data, min_train=min_train, dtype=getattr(args, "dtype", "float64"),
                   download=args.download)
    return data


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, allow_nan=False))
    tmp.replace(path)


def _backend_line() -> str:
    import fastbp

    name = fastbp.current_backend_name()
    info = fastbp.backends()[name]
    detail = f", {info.detail}" if info.detail else ""
    return f"backend {name}{detail}"


def _plotting():
    """The plotting module, or None (with the reason) when matplotlib is missing."""
    try:
        from . import plotting

        plotting._figure  # noqa: B018 - the import of matplotlib happens on first use
        import matplotlib  # noqa: F401
    except ImportError:
        return None
    return plotting


_NO_PLOT = 'no figures: matplotlib is not installed (pip install "fastbp[plot]" to get them)'


# ------------------------------------------------------------------------- speeds


def _speeds_table_init(r: ex.InitSpeeds) -> list[str]:
    width = max(r.depths)
    head = f"{'network':<24}" + "".join(f"{'hidden ' + str(k + 1):>19}" for k in range(width))
    lines = [head + f"{'last/first':>22}"]
    for k, dep in enumerate(r.depths):
        cells = "".join(f"{_fmt(m, 3) + ' ± ' + _fmt(s, 2):>19}"
                        for m, s in zip(r.mean[k], r.std[k]))
        cells += " " * 19 * (width - dep)
        rat = r.ratio[k]
        lines.append(f"{_sizes_label(r.sizes[k]):<24}{cells}"
                     f"{f'{np.mean(rat):.1f} ({np.min(rat):.1f}-{np.max(rat):.1f})':>22}")
        book = r.book.get(dep) if isinstance(r.book, dict) else None
        if book is not None:
            bc = "".join(f"{_fmt(v, 3):>19}" for v in book) + " " * 19 * (width - dep)
            lines.append(f"{'  book (one run)':<24}{bc}{book[-1] / book[0]:>22.1f}")
    return lines


def _speeds_table_training(r: ex.TrainingSpeeds, marks: list[int]) -> list[str]:
    width = max(r.depths)
    head = (f"{'network':<24}{'epoch':>6}" + "".join(f"{'hidden ' + str(k + 1):>11}"
                                                     for k in range(width)))
    lines = [head + f"{'last/first':>12}" + (f"{'book':>8}" if r.mode == "full-batch" else "")]
    for k, dep in enumerate(r.depths):
        sp = r.speeds[k]
        book = (r.book or {}).get(dep, {}) if r.mode == "full-batch" else {}
        for i, e in enumerate(m for m in marks if m < sp.shape[0]):
            cells = "".join(f"{_fmt(v, 3):>11}" for v in sp[e]) + " " * 11 * (width - dep)
            b = book.get(e)
            btxt = f"{b[-1] / b[0]:.1f}" if b else ""
            label = _sizes_label(r.sizes[k]) if i == 0 else ""
            line = f"{label:<24}{e:>6}{cells}{sp[e, -1] / sp[e, 0]:>12.1f}{btxt:>8}"
            lines.append(line.rstrip())
    return lines


def cmd_speeds(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if args.quick:
        args.steps = min(args.steps, 100)
        args.seeds = min(args.seeds, 3)
        args.minibatch_epochs = min(args.minibatch_epochs, 10)
    data = _load_data(args, args.images)
    depths = args.depths
    print(f"fastbp {__version__}, {_backend_line()}")
    print(f"data: {data.describe()}")
    if data.note:
        print(f"      {data.note}")
    plotting = None if args.no_plots else _plotting()
    enabled = _progress_enabled(args)
    t0 = time.perf_counter()

    per_neuron = ex.per_neuron_gradients(data, n_images=args.images, seed=args.seed)
    init = ex.speeds_at_init(data, depths=depths, n_images=args.images,
                             seeds=range(args.seed, args.seed + args.seeds))
    runs = {}
    modes = [("full-batch", None, args.steps)]
    if args.minibatch_epochs > 0:
        modes.append(("mini-batch", args.batch_size, args.minibatch_epochs))
    total = sum(e for _, _, e in modes) * len(depths)
    with Progress(total, "training", enabled=enabled) as bar:
        base = 0
        for mode, m, epochs in modes:
            def on_progress(depth, done, speeds, _base=base, _mode=mode, _epochs=epochs):
                bar.n = _base + depths.index(depth) * _epochs + done
                bar.update(0, f"{_mode} {depth} hidden: "
                              + " ".join(f"{v:.1e}" for v in speeds))

            runs[mode] = ex.speeds_during_training(
                data, depths=depths, n_images=args.images, epochs=epochs, batch_size=m,
                seed=args.seed, on_progress=on_progress,
            )
            base += epochs * len(depths)
    elapsed = time.perf_counter() - t0

    print()
    print("Speed of learning ||dC/db|| of each hidden layer at initialisation")
    print(f"(first {args.images:,} training images; sigmoid, cross-entropy, network2's "
          f"initialisation; mean ± sd over {len(init.seeds)} seeds, ratio: mean (min-max))")
    for line in _speeds_table_init(init):
        print(line)
    full = runs["full-batch"]
    # rows 0 .. steps-1 are the book's 500 entries (before each step)
    marks = sorted({e for e in (0, 10, 50, 100, 200, args.steps - 1) if 0 <= e < args.steps})
    print()
    print(f"During training: the book's protocol, {args.steps} full-batch steps on the "
          f"{args.images:,} images (eta=0.1, lambda=5), speed before each step")
    for line in _speeds_table_training(full, marks):
        print(line)
    if "mini-batch" in runs:
        mb = runs["mini-batch"]
        E = args.minibatch_epochs
        print()
        print(f"The same with mini-batch SGD (mini-batch {args.batch_size}, {E} epochs): "
              "speed on all the images before each epoch")
        for line in _speeds_table_training(mb, sorted({0, 1, min(10, E), E})):
            print(line)
    deepest = len(depths) - 1
    rat = init.ratio[deepest]
    print()
    print(f"At initialisation the first hidden layer of {_sizes_label(init.sizes[deepest])} "
          f"learns {np.mean(rat):.0f}x more slowly than the last (range {np.min(rat):.0f}-"
          f"{np.max(rat):.0f} over {len(init.seeds)} seeds); after {args.steps} steps, "
          f"{full.speeds[deepest][-1, -1] / full.speeds[deepest][-1, 0]:.0f}x.")
    print(f"Finished in {elapsed:.1f} s.")

    results = {
        "fastbp": __version__,
        "command": "speeds",
        "seconds": elapsed,
        "data": data.summary(),
        "per_neuron": per_neuron.to_dict(),
        "speeds_at_init": init.to_dict(),
        "training_full_batch": full.to_dict(),
    }
    if "mini-batch" in runs:
        results["training_mini_batch"] = runs["mini-batch"].to_dict()
    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / "speeds.json", results)
    written = [out / "speeds.json"]
    if plotting is not None:
        written.append(out / "speed_at_init.png")
        plotting.speeds_at_init(init, path=written[-1])
        written.append(out / "initial_gradient.png")
        plotting.per_neuron(per_neuron, path=written[-1])
        for dep in depths:
            written.append(out / f"training_speed_{dep}_layers.png")
            plotting.training_speed(full, depth=dep, path=written[-1])
        if "mini-batch" in runs:
            written.append(out / "training_speed_minibatch.png")
            plotting.training_speed(runs["mini-batch"], path=written[-1])
    print(f"Wrote {', '.join(str(p) for p in written)}")
    if plotting is None and not args.no_plots:
        print(_NO_PLOT)
    return 0


# -------------------------------------------------------------------------- train


def _speed_cells(speed: np.ndarray, max_cells: int = 6) -> str:
    L = len(speed)
    idx = list(range(L)) if L <= max_cells else [0, 1, None, L - 2, L - 1]
    return " ".join("..." if i is None else f"{speed[i]:.2e}" for i in idx)


def cmd_train(args: argparse.Namespace) -> int:
    import fastbp

    data = _load_data(args, None)
    n_in = data.train[0].shape[1]
    n_out = max(len(data.classes), int(data.train[1].max()) + 1)
    if args.sizes is not None:
        sizes = args.sizes
        if sizes[0] != n_in or sizes[-1] != n_out:
            raise CommandError(
                f"--sizes {','.join(map(str, sizes))} does not fit the data: the first size "
                f"must be {n_in} (pixels) and the last {n_out} (classes)"
            )
    else:
        sizes = [n_in, *args.hidden, n_out]
    net = fastbp.Network(sizes, activation=args.activation, output=args.output,
                         cost=args.cost, init=args.init, dtype=args.dtype, seed=args.seed)
    print(f"fastbp {__version__}, {_backend_line()}")
    print(f"data: {data.describe()}")
    if data.note:
        print(f"      {data.note}")
    mom = args.momentum
    mom_txt = (f"Sutskever schedule (mu_max={mom.mu_max:g})" if not isinstance(mom, float)
               else f"{mom:g}")
    print(f"network {_sizes_label(sizes)}, {args.activation}, {args.output} output, "
          f"{args.cost}, init {args.init}, {args.dtype}; {args.epochs} epochs, mini-batch "
          f"{args.batch_size}, eta={args.eta:g}, lambda={args.lmbda:g}, momentum {mom_txt}"
          f"{' (Nesterov)' if args.nesterov else ''}, seed {args.seed}")
    L = net.n_layers
    print(f"{'epoch':>5} {'val. acc.':>9} {'val. cost':>9} {'seconds':>8}  "
          f"speed ||dC/db|| of layers 1..{L} (layer {L} = output)")

    with Progress(args.epochs, "train", enabled=_progress_enabled(args)) as bar:
        def on_epoch(info: ex.EpochInfo) -> None:
            line = (f"{info.epoch + 1:>5} {info.accuracy * 100:>8.2f}% {info.cost:>9.4f} "
                    f"{info.seconds:>8.2f}  {_speed_cells(info.speed)}")
            bar.write(line)
            bar.update(1, f"val {info.accuracy * 100:.2f}% | speeds "
                          + " ".join(f"{v:.1e}" for v in info.speed))

        run = ex.train(net, data, args.epochs, args.batch_size, args.eta, args.lmbda,
                       momentum=mom, nesterov=args.nesterov, seed=args.seed,
                       n_train=args.n_train, on_epoch=on_epoch)
    if run.diverged is not None:
        print(f"training stopped at epoch {run.diverged + 1}: a NaN or Inf appeared "
              "(try a smaller --eta)")
    total = float(np.nansum(run.seconds))
    print(f"final validation accuracy {run.final_accuracy * 100:.2f}% (best "
          f"{run.best_accuracy * 100:.2f}%), {total:.1f} s")
    if args.out is not None:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        _write_json(out / "train.json", {"fastbp": __version__, "command": "train",
                                         "run": run.to_dict()})
        print(f"Wrote {out / 'train.json'}")
    return 0 if run.diverged is None else 1


# -------------------------------------------------------------------------- chain


def cmd_chain(args: argparse.Namespace) -> int:
    r = ex.unstable_chain(n=args.n, seed=args.seed)
    print(f"A chain of {args.n} neurons, one per layer: x -> neuron 1 -> ... -> neuron "
          f"{args.n} -> C (sigmoid, cross-entropy), x = {r.vanishing.x:g}, y = {r.vanishing.y:g}")
    print("dC/db_1 = sigma'(z_1) * w_2 sigma'(z_2) * ... * w_n sigma'(z_n) * dC/da_n  (eq. 122)")
    for case, what in ((r.vanishing, "weights and biases ~ N(0, 1)"),
                       (r.exploding, "w = 100, biases making every z = 0")):
        print()
        print(f"{case.name}: {what}")
        factor = "w sigma'(z)"
        print(f"{'neuron':>8} {'w':>10} {'z':>10} {factor:>12} {'dC/db formula':>15} "
              f"{'dC/db network':>15}")
        for j in range(len(case.w)):
            f = f"{case.factors[j - 1]:.4g}" if j > 0 else ""
            print(f"{j + 1:>8} {case.w[j]:>10.4g} {case.z[j]:>10.4g} {f:>12} "
                  f"{case.dC_db[j]:>15.6e} {case.dC_db_network[j]:>15.6e}")
        print(f"formula vs fastbp.Network gradient: max relative difference {case.rel_error:.1e}")
    print()
    typical = r.typical_factor
    print(f"Random N(0,1) chains: the typical factor |w sigma'(z)| is {typical:.3f}; "
          f"|dC/db_1| is 10^{-r.log10_ratio_median[-1]:.1f} times smaller than |dC/db_n| "
          f"for n = {r.lengths[-1]} (median of 2,000 chains).")
    print(f"Problem 1: the width of the inputs with |w sigma'(wa+b)| >= 1 peaks at "
          f"{r.problem1_max:.4f} for |w| = {r.problem1_argmax:.3f} (the book: 0.45 near 6.9); "
          "eq. (123) and root-finding agree to "
          f"{np.max(np.abs(r.problem1_width_formula - r.problem1_width_numeric)):.0e}.")
    if args.out is not None:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        _write_json(out / "chain.json", {"fastbp": __version__, "command": "chain",
                                         "chain": r.to_dict()})
        written = [out / "chain.json"]
        plotting = _plotting()
        if plotting is not None:
            written.append(out / "chain.png")
            plotting.chain(r, path=written[-1])
            written.append(out / "problem1.png")
            plotting.problem1(r, path=written[-1])
        print(f"Wrote {', '.join(str(p) for p in written)}")
        if plotting is None:
            print(_NO_PLOT)
    return 0


# --------------------------------------------------------------------------- info


def _blas_lines() -> list[str]:
    lines = []
    try:
        import scipy

        cfg = scipy.show_config(mode="dicts")["Build Dependencies"]["blas"]
        lines.append(f"BLAS (SciPy's, used by the compiled kernels): {cfg.get('name')} "
                     f"{cfg.get('version')}")
    except Exception as exc:  # noqa: BLE001 - informational only
        lines.append(f"BLAS: unknown ({exc})")
    from fastbp import blas_info

    chosen = blas_info()
    if chosen["name"] == "mkl":
        lines.append(f"  large products (>= {chosen['min_size']:,} multiply-adds): "
                     f"{chosen['version']} ({chosen['library']})")
    try:
        from threadpoolctl import threadpool_info

        for p in threadpool_info():
            if p.get("user_api") == "blas":
                lines.append(f"  loaded: {p.get('internal_api')} {p.get('version')}, "
                             f"{p.get('num_threads')} threads, {p.get('architecture')}, "
                             f"{os.path.basename(p.get('filepath', ''))}")
    except ImportError:
        lines.append("  (install threadpoolctl to see the loaded BLAS libraries and threads)")
    return lines


def cmd_info(args: argparse.Namespace) -> int:
    import numpy
    import scipy

    import fastbp

    print(f"fastbp {__version__} (Python {sys.version.split()[0]}, NumPy {numpy.__version__}, "
          f"SciPy {scipy.__version__})")
    print("backends:")
    for name, info in fastbp.backends().items():
        state = "available" if info.available else f"unavailable: {info.reason}"
        sel = "  <- selected" if info.selected else ""
        detail = f" ({info.detail})" if info.detail else ""
        print(f"  {name:<8} {state}{detail}{sel}")
    env = os.environ.get("FASTBP_BACKEND")
    if env:
        print(f"  (FASTBP_BACKEND={env})")
    # the compiled kernels call SciPy's BLAS: load it so that threadpoolctl sees it
    try:
        import scipy.linalg  # noqa: F401
    except ImportError:
        pass
    for line in _blas_lines():
        print(line)
    print("data:")
    sample = ds.load_sample().source
    print(f"  sample         embedded: 5,000 MNIST digits, {sample}")
    for name, spec in ds.DATASETS.items():
        folder = ds.find(name)
        if folder is not None:
            print(f"  {name:<14} found in {folder}")
        else:
            places = ", ".join(str(p) for p, _ in ds.search_path(name))
            hint = f"; {spec.install_hint}" if spec.install_hint else ""
            print(f"  {name:<14} not found (looked in {places}; `--download` fetches it"
                  f"{hint})")
    print(f"  cache folder   {ds.cache_dir()} (FASTBP_CACHE; FASTBP_DATA adds a folder)")
    plot = "yes" if _plotting() is not None else 'no (pip install "fastbp[plot]")'
    print(f"figures (matplotlib): {plot}")
    return 0


# ------------------------------------------------------------------------- parser


def _add_data(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="auto", metavar="NAME",
                   help="auto (default: the best found), sample (embedded MNIST digits), "
                        "mnist, fashion-mnist, or a folder of IDX files")
    p.add_argument("--download", action="store_true",
                   help="download MNIST / Fashion-MNIST if missing (checksums verified)")


def _add_progress(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--no-progress", dest="progress", action="store_false", default=None,
                   help="no progress bar (default: shown on a terminal)")
    g.add_argument("--progress", dest="progress", action="store_true",
                   help="show the progress bar even when stderr is not a terminal")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="fastbp: the vanishing and exploding gradient problems of deep networks, "
                    "measured (Nielsen, Neural Networks and Deep Learning, chapter 5).",
        epilog="Run `fastbp COMMAND --help` for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"fastbp {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser(
        "speeds", help="speed of learning of each hidden layer (the main job)",
        description="Experiments 2 and 3 of chapter 5 (and the bar diagram): the speed of "
                    "learning ||dC/db|| of each hidden layer of [784,30,...,30,10] sigmoid "
                    "nets, at initialisation (over several seeds) and during training (the "
                    "book's 500 full-batch steps on 1,000 images, and mini-batch SGD). "
                    "Prints a table; writes speeds.json and PNG figures to --out.",
    )
    _add_data(p)
    p.add_argument("--out", default="fastbp-results", metavar="DIR",
                   help="output folder (default: fastbp-results)")
    p.add_argument("--depths", type=_int_list, default=[2, 3, 4], metavar="LIST",
                   help="numbers of hidden layers (default 2,3,4)")
    p.add_argument("--images", type=int, default=1000, metavar="N",
                   help="training images measured and trained on (default 1000, the book)")
    p.add_argument("--steps", type=int, default=500, metavar="N",
                   help="full-batch steps (default 500, the book)")
    p.add_argument("--minibatch-epochs", type=int, default=50, metavar="N",
                   help="epochs of the mini-batch variant (default 50; 0 skips it)")
    p.add_argument("--batch-size", type=int, default=10, metavar="M",
                   help="mini-batch size of the mini-batch variant (default 10)")
    p.add_argument("--seeds", type=int, default=10, metavar="K",
                   help="seeds for the speeds at initialisation (default 10)")
    p.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    p.add_argument("--quick", action="store_true",
                   help="a few seconds: 100 steps, 3 seeds, 10 mini-batch epochs")
    p.add_argument("--no-plots", action="store_true", help="write no figures")
    _add_progress(p)
    p.set_defaults(func=cmd_speeds)

    p = sub.add_parser(
        "train", help="train a network given on the command line",
        description="Train a network by mini-batch SGD and print, after every epoch, the "
                    "validation accuracy and cost and the speed of learning of every layer. "
                    "Defaults are the book's: [784,30,10], sigmoid, cross-entropy, 30 epochs, "
                    "mini-batch 10, eta 0.1, lambda 5.",
    )
    _add_data(p)
    arch = p.add_mutually_exclusive_group()
    arch.add_argument("--sizes", type=_int_list, default=None, metavar="LIST",
                      help="all layer sizes, e.g. 784,30,30,10")
    arch.add_argument("--hidden", type=_int_list, default=[30], metavar="LIST",
                      help="hidden layer sizes only (default 30); input and output follow "
                           "the data")
    p.add_argument("--activation", default="sigmoid",
                   help="hidden activation: sigmoid, tanh, relu, leaky_relu, softsign, linear")
    p.add_argument("--output", default="sigmoid", help="output: sigmoid, softmax, linear")
    p.add_argument("--cost", default="cross_entropy",
                   help="cross_entropy, quadratic or log_likelihood (with softmax)")
    p.add_argument("--init", default="normal_scaled",
                   help="normal_scaled (network2), normal, uniform_fan_in, glorot_uniform, "
                        "glorot_normal, he_normal, sparse")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=10)
    p.add_argument("--eta", type=float, default=0.1, help="learning rate (default 0.1)")
    p.add_argument("--lmbda", "--lambda", dest="lmbda", type=float, default=5.0,
                   help="L2 regularisation (default 5.0)")
    p.add_argument("--momentum", type=_momentum, default=0.0, metavar="MU",
                   help="a constant in [0, 1) or sutskever[:MU_MAX] (default 0)")
    p.add_argument("--nesterov", action="store_true", help="Nesterov's accelerated gradient")
    p.add_argument("--n-train", type=int, default=None, metavar="N",
                   help="use only the first N training examples")
    p.add_argument("--dtype", default="float64", choices=("float64", "float32"))
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the initialisation and the shuffling (default 0)")
    p.add_argument("--out", default=None, metavar="DIR", help="write train.json there")
    _add_progress(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "chain", help="the unstable gradient in a chain of one neuron per layer",
        description="Experiment 5: dC/db_1 as a product of w_j sigma'(z_j) factors in a chain "
                    "of one sigmoid neuron per layer: N(0,1) weights (vanishing) and the "
                    "exploding construction (w = 100, factor 25 per layer), checked against "
                    "the gradient of the same chain built as a fastbp.Network; and Problem 1.",
    )
    p.add_argument("--n", type=int, default=4, help="neurons in the chain (default 4)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, metavar="DIR",
                   help="write chain.json and figures there")
    p.set_defaults(func=cmd_chain)

    p = sub.add_parser("info", help="version, backends and why, BLAS, data sets found",
                       description="Version, backends (available or not, and why), the BLAS "
                                   "in use, and where data sets were found.")
    p.set_defaults(func=cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``fastbp`` console script."""
    from ._errors import BackendUnavailableError, NonFiniteError

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    prog = f"{PROG} {args.command}"
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"\n{prog}: interrupted", file=sys.stderr)
        return 130
    except (CommandError, ds.DataNotFoundError, ds.IDXError, ds.DownloadError,
            NonFiniteError, BackendUnavailableError, ImportError, ValueError, TypeError,
            OSError) as exc:
        msg = " ".join(str(exc).split())
        print(f"{prog}: error: {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
