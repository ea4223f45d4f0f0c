"""What the progress bar of ``fastbp train`` costs, as a fraction of the epoch time.

Three ways to train the chapter's net [784,30,30,30,30,10] (sigmoid, cross-entropy,
mini-batch 10, eta 0.1, lambda 5, validation after each epoch) for ``--epochs``
epochs of 50,000 images, timed side by side, interleaved, ``--repeats`` times:

A. one ``net.fit(X, y, epochs, ...)`` call (no callback possible);
B. ``fastbp.experiments.train`` with an empty per-epoch callback: one ``fit`` call
   per epoch (``seed="continue"``, so the same training bit for bit), no bar;
C. B plus the ``fastbp train`` per-epoch line and progress bar, drawn (to a
   throw-away stream, as on a terminal).

C - B is the cost of the bar and the per-epoch report; B - A the cost of returning
to Python between epochs (``fit`` re-validates its inputs on every call).  The
fastest of the repeats is taken (on a busy machine the spread is large), and the two
costs are also timed directly: the callback itself (formatting and drawing the line
and the bar), and a ``fit`` call of 0 epochs (only its input validation).

Usage::

    python docs/chapter5/bench_progress.py --data fashion-mnist --epochs 5 --repeats 3
"""

from __future__ import annotations

import argparse
import io
import time

import numpy as np

import fastbp
from fastbp import datasets
from fastbp import experiments as ex
from fastbp._progress import Progress


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="auto")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    data = datasets.load(args.data)
    X, y = data.train
    sizes = [784, 30, 30, 30, 30, 10]
    E = args.epochs
    times: dict[str, list[float]] = {"A": [], "B": [], "C": []}
    callback: list[float] = []
    validation_only: list[float] = []
    for _ in range(args.repeats):
        net = fastbp.Network(sizes, seed=0)
        t = time.perf_counter()
        net.fit(X, y, E, 10, 0.1, 5.0, validation=data.validation, seed=0)
        times["A"].append((time.perf_counter() - t) / E)

        net = fastbp.Network(sizes, seed=0)
        t = time.perf_counter()
        ex.train(net, data, E, 10, 0.1, 5.0, seed=0, on_epoch=lambda info: None)
        times["B"].append((time.perf_counter() - t) / E)

        net = fastbp.Network(sizes, seed=0)
        sink = io.StringIO()
        t = time.perf_counter()
        with Progress(E, "train", stream=sink, enabled=True, min_interval=0) as bar:
            def on_epoch(info, bar=bar, sink=sink):
                t0 = time.perf_counter()
                bar.write(f"{info.epoch + 1:>5} {info.accuracy * 100:>8.2f}% "
                          f"{info.cost:>9.4f} {info.seconds:>8.2f}  "
                          + " ".join(f"{v:.2e}" for v in info.speed), file=sink)
                bar.update(1, f"val {info.accuracy * 100:.2f}% | speeds "
                              + " ".join(f"{v:.1e}" for v in info.speed))
                callback.append(time.perf_counter() - t0)

            ex.train(net, data, E, 10, 0.1, 5.0, seed=0, on_epoch=on_epoch)
        times["C"].append((time.perf_counter() - t) / E)
        t = time.perf_counter()
        net.fit(X, y, 0, 10, 0.1, 5.0, validation=data.validation, seed="continue")
        validation_only.append(time.perf_counter() - t)

    med = {k: float(np.min(v)) for k, v in times.items()}
    print(f"{data.describe()}; {sizes}, {E} epochs x {args.repeats} repeats; "
          f"backend {fastbp.current_backend_name()}")
    for k, label in (("A", "one fit call"), ("B", "one fit call per epoch, no bar"),
                     ("C", "per epoch, with line and bar")):
        print(f"  {k}. {label:<34} {med[k]:.4f} s/epoch  (all: "
              + ", ".join(f"{v:.4f}" for v in times[k]) + ")")
    print(f"  bar and line (C - B): {100 * (med['C'] - med['B']) / med['B']:+.2f}% of the epoch;"
          f" timed directly: {1e6 * np.median(callback):.0f} us per epoch = "
          f"{100 * np.median(callback) / med['A']:.3f}%")
    print(f"  per-epoch calls (B - A): {100 * (med['B'] - med['A']) / med['A']:+.2f}% "
          f"of the epoch; timed directly (fit of 0 epochs): "
          f"{1e3 * np.min(validation_only):.1f} ms = "
          f"{100 * np.min(validation_only) / med['A']:.1f}%")


if __name__ == "__main__":
    main()
