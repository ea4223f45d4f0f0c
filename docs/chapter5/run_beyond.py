"""Experiments 6 (obstacles: activations x initialisers x depths) and 7 (momentum), full size.

Writes ``--out/obstacles.json``, ``--out/momentum.json`` and their figures, and prints
Markdown tables.  Experiments 1-3 are ``fastbp speeds``, 4 is ``compare_accuracy.py``
and 5 is ``fastbp chain``.

Usage::

    python docs/chapter5/run_beyond.py --data fashion-mnist --out docs/chapter5/results
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from fastbp import datasets
from fastbp import experiments as ex


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="auto")
    ap.add_argument("--out", default="fastbp-results/beyond")
    ap.add_argument("--obstacles-train", type=int, default=10_000)
    ap.add_argument("--obstacles-epochs", type=int, default=3)
    ap.add_argument("--depths", type=int, nargs="+", default=[2, 5, 10, 20])
    ap.add_argument("--momentum-epochs", type=int, default=10)
    ap.add_argument("--skip", nargs="*", default=[], choices=["obstacles", "momentum"])
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = datasets.load(args.data)
    print(f"data: {data.describe()}")
    try:
        from fastbp import plotting
    except ImportError:
        plotting = None

    if "obstacles" not in args.skip:
        t = time.perf_counter()
        r = ex.obstacles(data, depths=args.depths, epochs=args.obstacles_epochs,
                         n_train=args.obstacles_train)
        secs = time.perf_counter() - t
        (out / "obstacles.json").write_text(r.to_json())
        print(f"\nExperiment 6: {len(r.rows)} configurations, {r.n_train:,} training images, "
              f"{r.epochs} epochs, mini-batch {r.batch_size}, eta {r.eta}, softmax output; "
              f"{secs:.0f} s")
        print("| activation | init | depth | last/first speed at init | after training | "
              "top layer sat. low (init -> end) | val. acc. |")
        print("|---|---|---|---|---|---|---|")
        for row in r.table():
            acc = "diverged" if row["diverged"] is not None else f"{row['accuracy'] * 100:.1f}%"
            print(f"| {row['activation']} | {row['init']} | {row['depth']} | "
                  f"{row['ratio_init']:.3g} | {row['ratio_end']:.3g} | "
                  f"{row['top_sat_low_init']:.2f} -> {row['top_sat_low_end']:.2f} | {acc} |")
        if plotting is not None:
            plotting.obstacles(r, path=out / "obstacles.png")
            plotting.saturation(r, activation="sigmoid", init="uniform_fan_in",
                                depth=min(args.depths, key=lambda d: abs(d - 5)),
                                path=out / "saturation_sigmoid.png")
            plotting.saturation(r, activation="tanh", init="uniform_fan_in",
                                depth=min(args.depths, key=lambda d: abs(d - 5)),
                                path=out / "saturation_tanh.png")

    if "momentum" not in args.skip:
        t = time.perf_counter()
        m = ex.momentum_comparison(data, epochs=args.momentum_epochs)
        secs = time.perf_counter() - t
        (out / "momentum.json").write_text(m.to_json())
        print(f"\nExperiment 7: {m.sizes}, {m.epochs} epochs, mini-batch {m.batch_size}, "
              f"lambda {m.lmbda}; eta from {m.etas}; {secs:.0f} s")
        print("| method | best eta | final acc. per eta | accuracy by epoch (best eta) | "
              "speed layer 1 / layer 4 at the end |")
        print("|---|---|---|---|---|")
        for name, v in m.methods.items():
            finals = ", ".join(f"{a * 100:.1f}" for a in np.asarray(v["final"]))
            accs = " ".join(f"{a * 100:.1f}" for a in np.asarray(v["accuracy"]))
            sp = np.asarray(v["speed"])
            print(f"| {name} | {v['best_eta']:g} | {finals} | {accs} | "
                  f"{sp[-1, 0]:.2e} / {sp[-1, -1]:.2e} |")
        if plotting is not None:
            plotting.momentum(m, path=out / "momentum.png")
    print(json.dumps({"written": sorted(p.name for p in out.iterdir())}))


if __name__ == "__main__":
    main()
