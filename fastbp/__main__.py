"""``python -m fastbp``: a short demonstration on seeded synthetic data.

Trains the chapter's deep net [784, 30, 30, 30, 30, 10] (sigmoid, cross-entropy,
network2's initialisation) for a few epochs on a synthetic ten-class problem of
MNIST's shape and prints, per hidden layer, the speed of learning ||dC/db|| on a
probe set at initialisation and after every epoch: the early layers learn much
more slowly than the late ones (Nielsen, *Neural Networks and Deep Learning*,
chapter 5).  It takes a few seconds; ``--epochs`` and ``--seed`` change it.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import fastbp


def synthetic_digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Ten noisy prototypes in [0, 1]^784, one per class: a stand-in for MNIST."""
    rng = np.random.Generator(np.random.PCG64(seed))
    prototypes = rng.random((10, 784)) < 0.3
    labels = rng.integers(0, 10, n)
    X = np.clip(prototypes[labels] * 0.9 + rng.normal(0.0, 0.3, (n, 784)), 0.0, 1.0)
    return X, labels


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastbp", description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8, help="epochs of training (default 8)")
    parser.add_argument("--seed", type=int, default=12345678, help="seed of data, init and order")
    args = parser.parse_args(argv)

    X, y = synthetic_digits(11_000, args.seed)
    X_train, y_train, X_val, y_val = X[:10_000], y[:10_000], X[10_000:], y[10_000:]
    sizes = [784, 30, 30, 30, 30, 10]
    net = fastbp.Network(sizes, seed=args.seed)
    info = fastbp.backends()[fastbp.current_backend_name()]
    print(f"fastbp {fastbp.__version__}, backend {info.name} {info.detail}".rstrip())
    print(f"network {sizes}, 10,000 synthetic examples, mini-batch 10, eta=0.1, lambda=5")

    start = time.perf_counter()
    history = net.fit(
        X_train,
        y_train,
        epochs=args.epochs,
        batch_size=10,
        eta=0.1,
        lmbda=5.0,
        validation=(X_val, y_val),
        probe=(X_train[:1000], y_train[:1000]),
        seed=args.seed,
    )
    elapsed = time.perf_counter() - start

    speeds = history.probe["speed"][:, :-1]  # hidden layers only, as in the book
    header = "epoch  " + "  ".join(f"hidden {k + 1:<4}" for k in range(speeds.shape[1]))
    print("\nspeed of learning ||dC/db|| per hidden layer (probe: 1,000 training examples)")
    print(header + "  last/first  val. accuracy")
    for epoch, row in zip(history.probe["epoch"], speeds):
        acc = ""
        if epoch >= 1:
            acc = f"{history.validation['accuracy'][epoch - 1]:.2%}"
        cells = "  ".join(f"{v:11.3e}" for v in row)
        print(f"{epoch:5d}  {cells}  {row[-1] / row[0]:10.1f}  {acc:>13}")
    print(
        f"\n{args.epochs} epochs in {elapsed:.2f} s; the first hidden layer learns "
        f"{speeds[0, -1] / speeds[0, 0]:.0f}x slower than the last at initialisation."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
