"""Save, load and checkpoints (issue 6): the file format of ``fastbp/_io.py``.

* round trips are exact (every activation, pair and dtype; optimiser state; History);
* the format is open: plain ``numpy.load(..., allow_pickle=False)`` reads it;
* writes are atomic: a save that fails half way, or a process killed while saving,
  leaves the previous file intact;
* corrupted, truncated and foreign files raise ``fastbp.FileFormatError`` (never a
  crash, never unpickling);
* network2's JSON files load;
* checkpoints reproduce training bit for bit: k epochs, save, load, k more with
  ``seed="continue"`` equals 2k epochs at once (parameters, velocity, update count and
  the concatenated History).
"""

from __future__ import annotations

import copy
import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
import zipfile

import numpy as np
import pytest

import fastbp
from fastbp import _io

PAIRS = list(fastbp.VALID_PAIRS)


def _data(n=40, n_in=5, n_out=3, output="softmax", seed=0):
    g = np.random.default_rng(seed)
    X = g.standard_normal((n, n_in))
    if output == "linear":
        y = g.standard_normal((n, n_out))
    else:
        y = g.integers(0, n_out, n)
    return X, y


def _trained(dtype="float64", activation="tanh", output="softmax", cost="log_likelihood",
             momentum=0.5, seed=1):
    net = fastbp.Network([5, 6, 4, 3], activation=activation, output=output, cost=cost,
                         dtype=dtype, seed=seed, alpha=0.03)
    X, y = _data(output=output)
    h = net.fit(X, y, epochs=2, batch_size=7, eta=0.05, momentum=momentum, record="batch",
                probe=(X[:10], y[:10]), validation=(X[:9], y[:9]), seed=4)
    return net, h


def _same_network(a, b):
    assert a.sizes == b.sizes and a.activation == b.activation and a.output == b.output
    assert a.cost_name == b.cost_name and a.dtype == b.dtype and a.alpha == b.alpha
    assert a.params.dtype == b.params.dtype
    np.testing.assert_array_equal(a.params, b.params)


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("pair", PAIRS, ids=["-".join(p) for p in PAIRS])
@pytest.mark.parametrize("activation", ["sigmoid", "relu", "leaky_relu", "softsign"])
def test_round_trip_is_exact(tmp_path, dtype, pair, activation):
    output, cost = pair
    net, _ = _trained(dtype.name, activation, output, cost)
    path = tmp_path / "net.npz"
    net.save(path)
    back = fastbp.load(path)
    _same_network(back, net)
    np.testing.assert_array_equal(back.velocity, net.velocity)
    assert back.n_updates == net.n_updates
    X, _ = _data(output=output)
    np.testing.assert_array_equal(back.forward(X), net.forward(X))


def test_round_trip_mixed_activations_and_single_layer(tmp_path):
    net = fastbp.Network([3, 4, 5, 2], activation=["tanh", "relu"], output="linear",
                         cost="quadratic", seed=0)
    net.save(tmp_path / "a.npz")
    back = fastbp.load(tmp_path / "a.npz")
    assert back.activation == ("tanh", "relu")
    _same_network(back, net)
    one = fastbp.Network([3, 1], seed=2, dtype="float32")
    one.save(str(tmp_path / "b"))  # any name: written exactly as given
    assert os.path.exists(tmp_path / "b")
    _same_network(fastbp.load(tmp_path / "b"), one)


def test_without_optimizer_state(tmp_path):
    net, _ = _trained()
    net.save(tmp_path / "w.npz", optimizer=False)
    back = fastbp.load(tmp_path / "w.npz")
    _same_network(back, net)
    assert back.n_updates == 0 and not back.velocity.any()
    with pytest.raises(ValueError, match="continue"):
        back.fit(*_data(), epochs=1, batch_size=5, eta=0.1, seed="continue")


def test_history_round_trip(tmp_path):
    net, h = _trained()
    net.save(tmp_path / "h.npz", history=h)
    back = fastbp.load_history(tmp_path / "h.npz")
    assert back == h
    for t in fastbp.History.TABLES:
        for col in getattr(h, t):
            assert getattr(back, t)[col].dtype == getattr(h, t)[col].dtype
    assert fastbp.load_history(_saved(tmp_path, net)) is None


def _saved(tmp_path, net, name="plain.npz", **kw):
    path = tmp_path / name
    net.save(path, **kw)
    return path


def test_format_is_open_numpy_npz(tmp_path):
    """Plain NumPy reads it with allow_pickle=False: per-layer arrays in the book's shapes
    and a JSON header with the documented fields."""
    net, h = _trained(dtype="float32")
    path = _saved(tmp_path, net, history=h)
    with np.load(path, allow_pickle=False) as f:
        header = json.loads(f["header.json"])
        for l in range(net.n_layers):
            np.testing.assert_array_equal(f[f"weights_{l}"], net.weights[l])
            np.testing.assert_array_equal(f[f"biases_{l}"], net.biases[l])
            assert f[f"weights_{l}"].shape == (net.sizes[l + 1], net.sizes[l])
        np.testing.assert_array_equal(f["velocity_weights_0"], net.layout.weight_views(
            net.velocity)[0])
    assert header["format"] == "fastbp.Network" and header["format_version"] == 1
    assert header["fastbp_version"] == fastbp.__version__
    assert header["sizes"] == [5, 6, 4, 3] and header["dtype"] == "float32"
    assert header["activations"] == ["tanh", "tanh", "softmax"]
    assert header["cost"] == "log_likelihood" and header["alpha"] == 0.03
    assert header["optimizer"]["n_updates"] == net.n_updates
    assert header["optimizer"]["rng"]["bit_generator"] == "PCG64"
    with zipfile.ZipFile(path) as zf:
        assert all(i.compress_type == zipfile.ZIP_STORED for i in zf.infolist())


def test_copies_keep_the_shuffling_generator():
    net, _ = _trained()
    for dup in (copy.deepcopy(net), pickle.loads(pickle.dumps(net)), copy.copy(net)):
        X, y = _data()
        a = dup.fit(X, y, epochs=1, batch_size=7, eta=0.05, seed="continue", record="batch")
        b = copy.deepcopy(net).fit(X, y, epochs=1, batch_size=7, eta=0.05, seed="continue",
                                   record="batch")
        assert a.batch == b.batch


# --------------------------------------------------------------------------- checkpoints


@pytest.mark.parametrize("momentum", [0.0, 0.9, "sutskever"], ids=["sgd", "mu0.9", "sutskever"])
def test_checkpoint_resume_is_bit_for_bit(backend, tmp_path, dtype, momentum):
    """k epochs with a checkpoint, load, k more with seed='continue' == 2k epochs at once:
    parameters, velocity, update count and the History, bit for bit."""
    mom = fastbp.Sutskever(mu_max=0.95, period=5) if momentum == "sutskever" else momentum
    X, y = _data(n=50)
    kw = dict(batch_size=6, eta=0.1, lmbda=0.3, momentum=mom, nesterov=momentum != 0.0,
              record="batch", validation=(X[:11], y[:11]), probe=(X[:13], y[:13]))

    def make():
        return fastbp.Network([5, 7, 6, 3], activation="relu", output="softmax",
                              cost="log_likelihood", init="he_normal", dtype=dtype, seed=3)

    full = make()
    h_full = full.fit(X, y, epochs=6, seed=11, **kw)
    part = make()
    path = tmp_path / "run.ckpt"
    part.fit(X, y, epochs=3, seed=11, checkpoint=path, **kw)
    resumed = fastbp.load(path)
    done = fastbp.load_history(path)
    assert len(done.epoch) == 3 and len(done.probe) == 3
    h_more = resumed.fit(X, y, epochs=3, seed="continue", **kw)
    np.testing.assert_array_equal(resumed.params, full.params)
    np.testing.assert_array_equal(resumed.velocity, full.velocity)
    assert resumed.n_updates == full.n_updates == 6 * 9
    assert fastbp.History.concatenate([done, h_more]) == h_full


def test_continue_in_memory_equals_one_call(backend):
    X, y = _data()
    a = fastbp.Network([5, 4, 3], seed=0)
    b = fastbp.Network([5, 4, 3], seed=0)
    ha = a.fit(X, y, epochs=4, batch_size=5, eta=0.5, momentum=0.5, seed=2, record="batch")
    hb1 = b.fit(X, y, epochs=1, batch_size=5, eta=0.5, momentum=0.5, seed=2, record="batch")
    hb2 = b.fit(X, y, epochs=3, batch_size=5, eta=0.5, momentum=0.5, seed="continue",
                record="batch")
    np.testing.assert_array_equal(a.params, b.params)
    assert fastbp.History.concatenate([hb1, hb2]) == ha
    assert hb2.settings["seed"] == 2  # the lineage of the generator


def test_checkpoint_every(tmp_path, monkeypatch):
    """A checkpoint after every N epochs and after the last one, each written atomically."""
    written = []
    real = _io.atomic_write

    def spy(path, write):
        real(path, write)
        written.append(len(fastbp.load_history(path).epoch))

    monkeypatch.setattr(_io, "atomic_write", spy)
    net = fastbp.Network([5, 4, 3], seed=0)
    X, y = _data()
    net.fit(X, y, epochs=7, batch_size=10, eta=0.1, seed=0, checkpoint=tmp_path / "c.npz",
            checkpoint_every=3)
    assert written == [3, 6, 7]
    assert sorted(os.listdir(tmp_path)) == ["c.npz"]  # no temporary file left


@pytest.mark.parametrize("kwargs,exc,text", [
    (dict(checkpoint="/nonexistent-dir/x.npz"), ValueError, "does not exist"),
    (dict(checkpoint=3), TypeError, "checkpoint"),
    (dict(checkpoint="DIR"), ValueError, "directory"),
    (dict(checkpoint="c.npz", checkpoint_every=0), ValueError, "checkpoint_every"),
    (dict(checkpoint_every=1.5), TypeError, "checkpoint_every"),
    (dict(seed="again"), ValueError, "seed"),
    (dict(seed="continue"), ValueError, "continue"),
], ids=["no-dir", "not-a-path", "a-directory", "every-zero", "every-float", "seed-str",
        "continue-without-generator"])
def test_checkpoint_arguments_checked_before_training(tmp_path, kwargs, exc, text):
    kwargs = dict(kwargs)
    if kwargs.get("checkpoint") == "DIR":
        kwargs["checkpoint"] = tmp_path
    elif kwargs.get("checkpoint") == "c.npz":
        kwargs["checkpoint"] = tmp_path / "c.npz"
    net = fastbp.Network([5, 4, 3], seed=0)
    before = net.params.copy()
    with pytest.raises(exc, match=text):
        net.fit(*_data(), epochs=2, batch_size=5, eta=0.1, **kwargs)
    np.testing.assert_array_equal(net.params, before)
    assert net.n_updates == 0


def test_concatenate_rejects_other_networks():
    _, h1 = _trained()
    net = fastbp.Network([5, 3], seed=0)
    h2 = net.fit(*_data(), epochs=1, batch_size=5, eta=0.1, seed=0)
    with pytest.raises(ValueError, match="different networks"):
        fastbp.History.concatenate([h1, h2])
    with pytest.raises(ValueError):
        fastbp.History.concatenate([])


# --------------------------------------------------------------------------- atomicity


def test_failed_save_leaves_previous_file(tmp_path, monkeypatch):
    net, _ = _trained()
    path = _saved(tmp_path, net, name="m.npz")
    before = path.read_bytes()
    other = fastbp.Network([5, 6, 4, 3], seed=99)
    calls = {"n": 0}
    real = np.lib.format.write_array

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # Ctrl-C half way through the archive
        return real(*args, **kwargs)

    monkeypatch.setattr(np.lib.format, "write_array", failing)
    with pytest.raises(KeyboardInterrupt):
        other.save(path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.npz"]  # the temporary file was removed
    monkeypatch.undo()
    _same_network(fastbp.load(path), net)


def test_file_mode_follows_umask_and_replaced_file(tmp_path):
    net = fastbp.Network([2, 2], seed=0)
    old = os.umask(0o027)
    try:
        net.save(tmp_path / "a.npz")
    finally:
        os.umask(old)
    assert (tmp_path / "a.npz").stat().st_mode & 0o777 == 0o640
    os.chmod(tmp_path / "a.npz", 0o604)
    net.save(tmp_path / "a.npz")
    assert (tmp_path / "a.npz").stat().st_mode & 0o777 == 0o604


_KILL_CHILD = textwrap.dedent("""
    import sys
    import numpy as np
    import fastbp
    path = sys.argv[1]
    nets = [fastbp.Network([300, 300, 300, 10], seed=s) for s in (1, 2)]
    nets[0].save(path)
    print("ready", flush=True)
    i = 0
    while True:
        nets[i % 2].save(path)
        i += 1
""")


def test_killed_while_saving_never_truncates(tmp_path):
    """SIGKILL at random moments of repeated saves: the file always loads completely,
    as one of the two networks written."""
    script = tmp_path / "child.py"
    script.write_text(_KILL_CHILD)
    path = tmp_path / "model.npz"
    expected = [fastbp.Network([300, 300, 300, 10], seed=s).params for s in (1, 2)]
    g = np.random.default_rng(0)
    for _ in range(2):
        proc = subprocess.Popen([sys.executable, str(script), str(path)],
                                stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline().strip() == "ready"
            proc.stdout.close()
            time.sleep(float(g.uniform(0.05, 0.3)))
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        loaded = fastbp.load(path).params
        assert any(np.array_equal(loaded, e) for e in expected)


# --------------------------------------------------------------------------- bad files


def _good_file(tmp_path):
    net, h = _trained(dtype="float32")
    return net, h, _saved(tmp_path, net, name="good.npz", history=h)


def test_truncated_files(tmp_path):
    net, h, path = _good_file(tmp_path)
    data = path.read_bytes()
    bad = tmp_path / "bad.npz"
    lengths = sorted(set(np.linspace(0, len(data) - 1, 60).astype(int)) | {1, 3, 4, 22, 100})
    for n in lengths:
        bad.write_bytes(data[:n])
        with pytest.raises(fastbp.FileFormatError):
            fastbp.load(bad)
        with pytest.raises(fastbp.FileFormatError):
            fastbp.load_history(bad)


def test_corrupted_bytes(tmp_path):
    """A flipped byte anywhere: a FileFormatError, or (a byte nothing depends on) the same
    network -- never another exception, never other values (the ZIP CRCs are checked)."""
    net, h, path = _good_file(tmp_path)
    data = bytearray(path.read_bytes())
    g = np.random.default_rng(0)
    bad = tmp_path / "bad.npz"
    positions = sorted(set(g.integers(0, len(data), 120).tolist()))
    loaded = 0
    for pos in positions:
        flipped = bytearray(data)
        flipped[pos] ^= 1 << int(g.integers(0, 8))
        bad.write_bytes(bytes(flipped))
        try:
            back = fastbp.load(bad)
            hist = fastbp.load_history(bad)
        except fastbp.FileFormatError:
            continue
        loaded += 1
        _same_network(back, net)
        np.testing.assert_array_equal(back.velocity, net.velocity)
        assert hist == h
    assert loaded < len(positions) // 2


def test_foreign_files(tmp_path):
    cases = {
        "empty": b"",
        "text": b"hello, world\n",
        "random": np.random.default_rng(0).bytes(500),
        "json-list": b"[1, 2, 3]",
        "json-other": b'{"a": 1}',
        "deep-json": b"[" * 100000 + b"]" * 100000,
        "zip-magic-only": b"PK\x03\x04",
    }
    for name, content in cases.items():
        p = tmp_path / name
        p.write_bytes(content)
        with pytest.raises(fastbp.FileFormatError):
            fastbp.load(p)
    # a plain np.savez archive, and one holding a pickled object array
    np.savez(tmp_path / "plain.npz", a=np.arange(3))
    with pytest.raises(fastbp.FileFormatError, match="header.json"):
        fastbp.load(tmp_path / "plain.npz")
    with pytest.raises(FileNotFoundError):
        fastbp.load(tmp_path / "missing.npz")


def _rewrite(path, out, header=None, members=None):
    """Copy a fastbp archive with the header edited and/or members replaced."""
    with zipfile.ZipFile(path) as zin, zipfile.ZipFile(out, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename == "header.json" and header is not None:
                doc = json.loads(data)
                header(doc)
                data = json.dumps(doc).encode()
            if members and info.filename in members:
                data = members[info.filename]
            zout.writestr(info.filename, data)


def _npy(arr):
    import io

    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, allow_pickle=True)
    return buf.getvalue()


@pytest.mark.parametrize("edit,text", [
    (lambda d: d.update(format_version=2, fastbp_version="9.0"), "upgrade fastbp"),
    (lambda d: d.update(format="something.else"), "foreign"),
    (lambda d: d.update(sizes=[5, 6, 4]), "header"),
    (lambda d: d.update(sizes=[5, -6, 4, 3]), "header"),
    (lambda d: d.update(activations=["tanh", "softmax", "softmax"]), "header"),
    (lambda d: d.update(cost="hinge"), "header"),
    (lambda d: d.update(dtype="float16"), "header"),
    (lambda d: d.update(alpha="x"), "alpha"),
    (lambda d: d["arrays"].pop("weights_1"), "weights_1"),
    (lambda d: d["optimizer"].update(n_updates=-1), "n_updates"),
    (lambda d: d["optimizer"]["rng"].update(bit_generator="MT19937"), "rng"),
    (lambda d: d["optimizer"]["rng"]["state"]["state"].update(state="x"), "rng"),
], ids=["newer-version", "foreign-format", "sizes-mismatch", "negative-size",
        "bad-activation", "bad-cost", "bad-dtype", "bad-alpha", "undeclared-array",
        "negative-updates", "other-generator", "garbage-generator-state"])
def test_invalid_headers(tmp_path, edit, text):
    _, _, path = _good_file(tmp_path)
    out = tmp_path / "edited.npz"
    _rewrite(path, out, header=edit)
    with pytest.raises(fastbp.FileFormatError, match=text):
        fastbp.load(out)


def test_object_arrays_are_never_unpickled(tmp_path, monkeypatch):
    """A member replaced by a pickled object array (which could run code) is refused
    before NumPy would unpickle it."""
    _, _, path = _good_file(tmp_path)
    evil = np.empty(3, dtype=object)
    out = tmp_path / "evil.npz"
    _rewrite(path, out, members={"weights_0.npy": _npy(evil)})
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("unpickled"))
    with pytest.raises(fastbp.FileFormatError):
        fastbp.load(out)
    # declared as such in the header too: still refused (dtype must be the network's)
    _rewrite(path, out, header=lambda d: d["arrays"]["weights_0"].update(dtype="|O"),
             members={"weights_0.npy": _npy(evil)})
    with pytest.raises(fastbp.FileFormatError):
        fastbp.load(out)


def test_wrong_shapes_and_values_in_members(tmp_path):
    net, _, path = _good_file(tmp_path)
    out = tmp_path / "edited.npz"
    w0 = net.weights[0]
    for arr in (w0.T.copy(), w0.astype(np.float64), w0[:2].copy()):
        _rewrite(path, out, members={"weights_0.npy": _npy(np.ascontiguousarray(arr))})
        with pytest.raises(fastbp.FileFormatError, match="weights_0"):
            fastbp.load(out)
    nan = w0.copy()
    nan[0, 0] = np.nan
    _rewrite(path, out, members={"weights_0.npy": _npy(nan)})
    with pytest.raises(fastbp.FileFormatError, match="NaN"):
        fastbp.load(out)


def test_absurd_sizes_in_a_header_are_refused_before_allocating(tmp_path, monkeypatch):
    _, _, path = _good_file(tmp_path)
    out = tmp_path / "huge.npz"
    _rewrite(path, out, header=lambda d: d.update(sizes=[10**6, 10**6, 10**6, 3]))
    with pytest.raises((fastbp.FileFormatError, fastbp.TooLargeError)):
        fastbp.load(out)


# --------------------------------------------------------------------------- network2


def _network2_file(path, sizes, cost, g):
    weights = [g.standard_normal((y, x)) for x, y in zip(sizes[:-1], sizes[1:])]
    biases = [g.standard_normal((y, 1)) for y in sizes[1:]]
    doc = {"sizes": sizes, "weights": [w.tolist() for w in weights],
           "biases": [b.tolist() for b in biases], "cost": cost}
    path.write_text(json.dumps(doc))  # what network2.Network.save writes
    return weights, biases


@pytest.mark.parametrize("cost,name", [("CrossEntropyCost", "cross_entropy"),
                                       ("QuadraticCost", "quadratic")])
def test_network2_json_loads(tmp_path, cost, name):
    g = np.random.default_rng(0)
    path = tmp_path / "net2.json"
    weights, biases = _network2_file(path, [4, 5, 3], cost, g)
    net = fastbp.load(path)
    assert net.sizes == (4, 5, 3) and net.cost_name == name and net.dtype == np.float64
    assert net.activation == "sigmoid" and net.output == "sigmoid"
    for got, w in zip(net.weights, weights):
        np.testing.assert_array_equal(got, w)
    for got, b in zip(net.biases, biases):
        np.testing.assert_array_equal(got, b[:, 0])
    # network2's feedforward
    x = g.standard_normal(4)
    a = x[:, None]
    for w, b in zip(weights, biases):
        a = 1 / (1 + np.exp(-(w @ a + b)))
    np.testing.assert_allclose(net.forward(x[None])[0], a[:, 0], rtol=1e-14)
    # and it saves as a fastbp file
    net.save(tmp_path / "n.npz")
    _same_network(fastbp.load(tmp_path / "n.npz"), net)
    with pytest.raises(fastbp.FileFormatError, match="History"):
        fastbp.load_history(path)


@pytest.mark.parametrize("edit,text", [
    (lambda d: d.update(cost="LogLikelihoodCost"), "cost"),
    (lambda d: d.pop("weights"), "network2"),
    (lambda d: d["weights"][0].pop(), "weights"),
    (lambda d: d["biases"][1][0].append(1.0), "biases"),
    (lambda d: d.update(sizes=[4, 5]), "network2"),
    (lambda d: d["weights"][0][0].__setitem__(0, "x"), "network2"),
    (lambda d: d["weights"][0][0].__setitem__(0, float("nan")), "non-finite"),
], ids=["unknown-cost", "no-weights", "ragged", "bias-shape", "sizes-mismatch",
        "string-value", "nan-value"])
def test_invalid_network2_files(tmp_path, edit, text):
    path = tmp_path / "net2.json"
    _network2_file(path, [4, 5, 3], "CrossEntropyCost", np.random.default_rng(0))
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))
    with pytest.raises(fastbp.FileFormatError, match=text):
        fastbp.load(path)


def test_save_argument_errors(tmp_path):
    net = fastbp.Network([2, 2], seed=0)
    with pytest.raises(TypeError, match="path"):
        net.save(None)
    with pytest.raises(TypeError, match="history"):
        net.save(tmp_path / "x.npz", history={"a": 1})
    with pytest.raises(TypeError, match="optimizer"):
        net.save(tmp_path / "x.npz", optimizer="yes")
    assert os.listdir(tmp_path) == []
