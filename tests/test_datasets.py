"""fastbp.datasets: the IDX reader, the search path, the embedded sample, downloads.

Downloads are tested against an HTTP server on 127.0.0.1 only; nothing here uses a
network.  Every test that touches the search path points ``FASTBP_CACHE`` and
``FASTBP_DATA`` at temporary folders (and the Debian location at a missing one), so
what is installed on the machine does not matter.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import http.server
import threading
from pathlib import Path

import numpy as np
import pytest

from fastbp import datasets as ds

# ----------------------------------------------------------------------- helpers


def idx_bytes(arr: np.ndarray) -> bytes:
    codes = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(np.int16): 0x0B,
             np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D, np.dtype(np.float64): 0x0E}
    header = bytes([0, 0, codes[arr.dtype], arr.ndim])
    header += np.array(arr.shape, dtype=">u4").tobytes()
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def write_fake_set(folder: Path, n_train: int = 60, n_test: int = 20, shape=(4, 4),
                   gz: bool = True, seed: int = 0) -> dict[str, np.ndarray]:
    """Four MNIST-format files with random pixels; returns the arrays."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, *shape), dtype=np.uint8),
        "train_labels": (np.arange(n_train) % 10).astype(np.uint8),
        "test_images": rng.integers(0, 256, (n_test, *shape), dtype=np.uint8),
        "test_labels": (np.arange(n_test) % 10).astype(np.uint8),
    }
    for role, base in ds.FILES.items():
        raw = idx_bytes(arrays[role])
        if gz:
            (folder / (base + ".gz")).write_bytes(gzip.compress(raw))
        else:
            (folder / base).write_bytes(raw)
    return arrays


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """Empty cache and FASTBP_DATA folders; no Debian location."""
    cache = tmp_path / "cache"
    data = tmp_path / "data"
    monkeypatch.setenv("FASTBP_CACHE", str(cache))
    monkeypatch.setenv("FASTBP_DATA", str(data))
    spec = ds.DATASETS["fashion-mnist"]
    monkeypatch.setitem(ds.DATASETS, "fashion-mnist",
                        dataclasses.replace(spec, system_dirs=(str(tmp_path / "debian"),)))
    return {"cache": cache, "data": data, "debian": tmp_path / "debian"}


# --------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32,
                                   np.float64])
@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trip(tmp_path, dtype, gz):
    arr = (np.arange(2 * 3 * 5) - 7).reshape(2, 3, 5).astype(dtype)
    raw = idx_bytes(arr)
    p = tmp_path / "a.idx"
    p.write_bytes(gzip.compress(raw) if gz else raw)
    got = ds.read_idx(p)
    assert got.dtype == np.dtype(dtype) and got.dtype.isnative
    np.testing.assert_array_equal(got, arr)


def test_read_idx_gzip_is_recognised_by_content_not_name(tmp_path):
    arr = np.arange(12, dtype=np.uint8).reshape(3, 4)
    p = tmp_path / "no-suffix"
    p.write_bytes(gzip.compress(idx_bytes(arr)))
    np.testing.assert_array_equal(ds.read_idx(p), arr)


def test_read_idx_foreign_file(tmp_path):
    p = tmp_path / "x.png"
    p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    with pytest.raises(ds.IDXError, match="not an IDX file"):
        ds.read_idx(p)


def test_read_idx_truncated_data(tmp_path):
    raw = idx_bytes(np.zeros((10, 28, 28), dtype=np.uint8))
    p = tmp_path / "t.idx"
    p.write_bytes(raw[:-100])
    with pytest.raises(ds.IDXError, match=r"truncated.*10 x 28 x 28"):
        ds.read_idx(p)


def test_read_idx_truncated_gzip(tmp_path):
    raw = gzip.compress(idx_bytes(np.arange(5000, dtype=np.int32)))
    p = tmp_path / "t.gz"
    p.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ds.IDXError, match="gzip stream is truncated or corrupt"):
        ds.read_idx(p)


def test_read_idx_truncated_header_and_extra_bytes(tmp_path):
    p = tmp_path / "h.idx"
    p.write_bytes(bytes([0, 0, 8, 3]) + b"\0\0\0\1")
    with pytest.raises(ds.IDXError, match="truncated header"):
        ds.read_idx(p)
    p.write_bytes(b"\0\0")
    with pytest.raises(ds.IDXError, match="too short"):
        ds.read_idx(p)
    p.write_bytes(idx_bytes(np.zeros(4, dtype=np.uint8)) + b"junk")
    with pytest.raises(ds.IDXError, match="4 bytes more"):
        ds.read_idx(p)


# ------------------------------------------------------------------ search path


def test_not_found_says_where_to_put_the_files(isolated):
    with pytest.raises(ds.DataNotFoundError) as err:
        ds.load_mnist()
    msg = str(err.value)
    assert str(isolated["data"] / "mnist") in msg and str(isolated["cache"] / "mnist") in msg
    assert "train-images-idx3-ubyte.gz" in msg and "download=True" in msg
    with pytest.raises(ds.DataNotFoundError, match="apt-get install dataset-fashion-mnist"):
        ds.load_fashion_mnist()


def test_partial_folder_names_the_missing_files(isolated):
    write_fake_set(isolated["cache"] / "mnist")
    (isolated["cache"] / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(ds.DataNotFoundError, match="missing t10k-labels-idx1-ubyte.gz"):
        ds.load_mnist()


@pytest.mark.parametrize("where", ["path", "data", "cache", "debian"])
def test_search_order(isolated, tmp_path, where):
    folders = {"path": tmp_path / "given", "data": isolated["data"] / "fashion-mnist",
               "cache": isolated["cache"] / "fashion-mnist", "debian": isolated["debian"]}
    arrays = write_fake_set(folders[where], gz=where != "cache")
    path = folders["path"] if where == "path" else None
    data = ds.load_fashion_mnist(path, split="standard")
    assert data.source == str(folders[where])
    assert data.name == "fashion-mnist" and data.classes[0] == "T-shirt/top"
    X, y = data.train
    assert X.shape == (60, 16) and X.dtype == np.float64
    np.testing.assert_array_equal(X, arrays["train_images"].reshape(60, 16) / 255.0)
    np.testing.assert_array_equal(y, arrays["train_labels"])
    assert data.validation is None and data.test[0].shape == (20, 16)


def test_first_folder_wins(isolated):
    write_fake_set(isolated["data"] / "mnist", seed=1)
    write_fake_set(isolated["cache"] / "mnist", seed=2)
    assert ds.find("mnist") == isolated["data"] / "mnist"


def test_book_split_and_float32(isolated):
    arrays = write_fake_set(isolated["cache"] / "mnist", n_train=10_050, shape=(2, 2))
    train, val, test = ds.load_mnist(dtype="float32")
    assert train[0].shape == (50, 4) and val[0].shape == (10_000, 4) and test[0].shape == (20, 4)
    assert train[0].dtype == np.float32 and 0.0 <= train[0].min() and train[0].max() <= 1.0
    np.testing.assert_array_equal(val[1], arrays["train_labels"][50:])
    with pytest.raises(ValueError, match="split="):
        ds.load_mnist(split="random")
    with pytest.raises(ValueError, match="dtype"):
        ds.load_mnist(dtype="int8")


def test_book_split_needs_more_than_10000(isolated):
    write_fake_set(isolated["cache"] / "mnist", n_train=100)
    with pytest.raises(ds.IDXError, match="book's split"):
        ds.load_mnist()


def test_inconsistent_files(isolated):
    folder = isolated["cache"] / "mnist"
    write_fake_set(folder)
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(idx_bytes(np.zeros(7, dtype=np.uint8))))
    with pytest.raises(ds.IDXError, match="60 train images but 7 labels"):
        ds.load_mnist(split="standard")
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(idx_bytes(np.full(60, 12, dtype=np.uint8))))
    with pytest.raises(ds.IDXError, match="label 12 is out of range"):
        ds.load_mnist(split="standard")


def test_load_by_name_and_folder(isolated, tmp_path):
    assert ds.load("sample").name == "mnist-sample"
    write_fake_set(tmp_path / "my-fashion-files", n_train=10_010, shape=(2, 2))
    d = ds.load(tmp_path / "my-fashion-files")
    assert d.name == "fashion-mnist" and d.n_train == 10 and d.n_validation == 10_000
    with pytest.raises(ValueError, match="neither"):
        ds.load("no-such-thing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ds.DataNotFoundError, match="missing"):
        ds.load(tmp_path / "empty")


# ----------------------------------------------------------------------- sample


def test_sample_is_real_balanced_and_stratified():
    data = ds.load_sample()
    (X, y), (Xv, yv), test = data
    assert test is None and data.name == "mnist-sample"
    assert X.shape == (4000, 784) and Xv.shape == (1000, 784) and X.dtype == np.float64
    assert X.min() == 0.0 and X.max() == 1.0
    assert np.all(np.bincount(y) == 400) and np.all(np.bincount(yv) == 100)
    assert np.all(np.bincount(y[:1000]) == 100)  # the book's "first 1,000 images"
    # every block of ten holds one digit of each class
    assert np.all(np.sort(y[:100].reshape(10, 10), axis=1) == np.arange(10))
    # real digits: grey levels are multiples of 1/255, with mostly-black backgrounds
    assert np.allclose(X * 255, np.round(X * 255))
    assert 0.7 < np.mean(X == 0) < 0.9
    assert "embedded MNIST sample (4,000 train / 1,000 validation)" == data.describe()


def test_sample_options():
    d = ds.load_sample(dtype="float32", n_validation=0)
    assert d.validation is None and d.train[0].shape == (5000, 784)
    assert d.train[0].dtype == np.float32
    with pytest.raises(ValueError, match="n_validation"):
        ds.load_sample(n_validation=5000)


def test_sample_file_is_shipped_with_its_license():
    folder = Path(ds.__file__).parent / "data"
    npz = folder / "mnist_sample.npz"
    assert npz.stat().st_size <= 2 * 1024 * 1024
    text = (folder / "LICENSE-MNIST-SAMPLE.txt").read_text()
    assert "CC BY-SA 3.0" in text and "LeCun" in text and "Cortes" in text


def test_load_best_says_what_it_chose(isolated):
    d = ds.load_best(min_train=1000)
    assert d.name == "mnist-sample" and "MNIST not found" in d.note
    d = ds.load_best()
    assert d.name == "mnist-sample" and "MNIST and Fashion-MNIST not found" in d.note
    # Fashion-MNIST beats the sample when many examples are wanted ...
    write_fake_set(isolated["debian"], n_train=10_020, shape=(2, 2))
    assert ds.load_best().name == "fashion-mnist"
    # ... but not when the sample is enough: it holds the book's digits
    assert ds.load_best(min_train=1000).name == "mnist-sample"
    # full MNIST beats everything
    write_fake_set(isolated["data"] / "mnist", n_train=10_020, shape=(2, 2))
    d = ds.load_best(min_train=1000)
    assert d.name == "mnist" and d.note.startswith("using MNIST")


# --------------------------------------------------------------------- download


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    """An HTTP server on 127.0.0.1 (loopback only) serving tmp_path/www."""
    root = tmp_path / "www"
    root.mkdir()
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def _md5s(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.md5(p.read_bytes(), usedforsecurity=False).hexdigest()
            for p in folder.glob("*.gz")}


def test_download_verifies_checksums(server, tmp_path):
    root, url = server
    write_fake_set(root)
    dest = tmp_path / "dest"
    got = ds.download("mnist", dest, base_url=url, checksums=_md5s(root), progress=False)
    assert got == dest and ds.find("mnist", dest) == dest
    assert not list(dest.glob("*.part"))
    # a second call keeps the verified files (no request needed: stop serving them)
    for p in root.glob("*.gz"):
        p.unlink()
    ds.download("mnist", dest, base_url=url, checksums=_md5s(dest), progress=False)


def test_download_checksum_mismatch_deletes_the_file(server, tmp_path):
    root, url = server
    write_fake_set(root)
    bad = dict.fromkeys(_md5s(root), "0" * 32)
    dest = tmp_path / "dest"
    with pytest.raises(ds.DownloadError, match="does not match the published"):
        ds.download("mnist", dest, base_url=url, checksums=bad, progress=False)
    assert not list(dest.iterdir())


def test_download_tries_the_next_mirror(server, tmp_path):
    root, url = server
    write_fake_set(root)
    dest = tmp_path / "dest"
    ds.download("fashion-mnist", dest, base_url=[url + "missing/", url],
                checksums=_md5s(root), progress=False)
    assert ds.find("fashion-mnist", dest) == dest


def test_download_failure_says_what_to_do(server, tmp_path):
    _, url = server
    with pytest.raises(ds.DownloadError, match="put the four files in .* by hand"):
        ds.download("mnist", tmp_path / "d", base_url=url, progress=False, timeout=5)


def test_load_with_download(server, isolated, monkeypatch):
    root, url = server
    arrays = write_fake_set(root, n_train=10_010, shape=(2, 2))
    spec = ds.DATASETS["mnist"]
    monkeypatch.setitem(ds.DATASETS, "mnist", dataclasses.replace(spec, md5=_md5s(root)))
    data = ds.load_mnist(download=True, base_url=url)
    assert data.source == str(isolated["cache"] / "mnist")
    np.testing.assert_array_equal(data.test[1], arrays["test_labels"])


def test_download_progress_bar(server, tmp_path, capsys, monkeypatch):
    root, url = server
    write_fake_set(root)
    monkeypatch.setattr("sys.stderr.isatty", lambda: True, raising=False)
    ds.download("mnist", tmp_path / "d", base_url=url, checksums=_md5s(root))
    err = capsys.readouterr().err
    assert "train-images-idx3-ubyte.gz" in err and "B" in err
