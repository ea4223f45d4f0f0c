"""Accuracy by depth: ``fastbp train`` vs a network2-style NumPy reference, same split and seeds.

For each depth (1 to 4 hidden layers of 30 sigmoid units) and each seed, this script

1. runs ``fastbp train --data DATA --hidden 30,...,30 --seed S`` with the book's
   settings (30 epochs, mini-batch 10, eta 0.1, lambda 5; the book's split: 50,000
   training / 10,000 validation images), in-process through ``fastbp.cli.main``;
2. runs ``tests/network2_minibatch.py`` (network2's algorithm in plain NumPy) from the
   same initial weights (``fastbp.Network(sizes, seed=S)``) with the same shuffles
   (``Generator(PCG64(S)).permutation(n)`` per epoch), on the same split;

and writes every epoch's validation accuracy and the wall-clock times to
``--out/accuracy_<data>.json``, and a Markdown table to stdout.

Usage (about 1 minute per depth and seed for fastbp, a few for the reference)::

    python docs/chapter5/compare_accuracy.py --data fashion-mnist --seeds 0
    python docs/chapter5/compare_accuracy.py --data mnist --seeds 0 1 2   # needs MNIST
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "tests"))

import network2_minibatch as n2  # noqa: E402

import fastbp  # noqa: E402
from fastbp import cli, datasets  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--depths", type=int, nargs="+", default=[1, 2, 3, 4])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--no-reference", action="store_true")
    args = ap.parse_args()

    data = datasets.load(args.data)
    (X, y), (Xv, yv), _ = data
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for depth in args.depths:
        hidden = [30] * depth
        sizes = [784, *hidden, 10]
        for seed in args.seeds:
            run_dir = out / f"train_{args.data}_{depth}_{seed}"
            argv = ["train", "--data", args.data, "--hidden", ",".join(map(str, hidden)),
                    "--epochs", str(args.epochs), "--batch-size", "10", "--eta", "0.1",
                    "--lmbda", "5", "--seed", str(seed), "--out", str(run_dir),
                    "--no-progress"]
            buf = io.StringIO()
            start = time.perf_counter()
            with contextlib.redirect_stdout(buf):
                status = cli.main(argv)
            t_fastbp = time.perf_counter() - start
            if status != 0:
                raise SystemExit(f"fastbp {' '.join(argv)} failed:\n{buf.getvalue()}")
            run = json.loads((run_dir / "train.json").read_text())["run"]
            acc_f = np.array(run["accuracy"], dtype=float)
            row = {
                "depth": depth, "seed": seed, "sizes": sizes,
                "command": "fastbp " + " ".join(argv),
                "fastbp_accuracy": acc_f.tolist(),
                "fastbp_seconds_total": t_fastbp,
                "fastbp_seconds_epochs": float(np.nansum(run["seconds"])),
            }
            if not args.no_reference:
                net = fastbp.Network(sizes, seed=seed)
                start = time.perf_counter()
                ref = n2.sgd(net.weights, net.biases, X, y, args.epochs, 10, 0.1, 5.0,
                             seed=seed, validation=(Xv, yv))
                row["reference_accuracy"] = ref["accuracy"].tolist()
                row["reference_seconds"] = time.perf_counter() - start
            rows.append(row)
            (out / f"accuracy_{args.data}.json").write_text(json.dumps(
                {"data": data.summary(), "epochs": args.epochs, "rows": rows}, indent=1))
            print(f"depth {depth} seed {seed}: fastbp final {acc_f[-1]:.4f} best "
                  f"{np.nanmax(acc_f):.4f} ({t_fastbp:.1f} s)"
                  + ("" if args.no_reference else
                     f"; reference final {row['reference_accuracy'][-1]:.4f} best "
                     f"{max(row['reference_accuracy']):.4f} ({row['reference_seconds']:.1f} s)"),
                  flush=True)

    print()
    print(f"| network | seed | fastbp final (best) | reference final (best) | fastbp s | "
          f"reference s |  ({data.describe()}, {args.epochs} epochs)")
    print("|---|---|---|---|---|---|")
    for r in rows:
        f = np.array(r["fastbp_accuracy"])
        ref = np.array(r.get("reference_accuracy", [np.nan]))
        print(f"| {r['sizes']} | {r['seed']} | {f[-1] * 100:.2f} ({np.nanmax(f) * 100:.2f}) | "
              f"{ref[-1] * 100:.2f} ({np.nanmax(ref) * 100:.2f}) | "
              f"{r['fastbp_seconds_total']:.1f} | {r.get('reference_seconds', float('nan')):.1f} |")


if __name__ == "__main__":
    main()
