"""Tables, goal ratios and the scaling plot, from one benchmark run.

Used by ``conftest.py`` (terminal summary at the end of a timed run) and by
``report.py`` (from a ``--benchmark-json`` file).  Every figure is a median
(seconds) times the row's ``extra_info["scale"]`` -- 1 for a whole epoch, more
for rows timed over the first part of an epoch (network2, the scaling sweeps) --
so all cells are seconds per epoch.  Ratios are of rows measured in the same run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

PEER_COLUMNS = ("network2", "numpy-loop", "sklearn", "torch", "jax-loop", "jax-scan")
PEER_TITLES = {
    "network2": "network2-style NumPy (per example)*",
    "numpy-loop": "NumPy mini-batch",
    "sklearn": "scikit-learn MLPClassifier",
    "torch": "PyTorch eager",
    "jax-loop": "JAX jit step loop",
    "jax-scan": "JAX jit lax.scan epoch",
}
TABLE_ROWS = (
    ("A", "float64"),
    ("A", "float32"),
    ("B", "float32"),
    ("C", "float32"),
    ("C", "float64"),
)


@dataclass
class Row:
    group: str
    name: str
    median: float
    extra: dict

    @property
    def epoch(self) -> float:
        """Seconds per epoch (extrapolated when a fraction was timed)."""
        return self.median * float(self.extra.get("scale", 1.0))

    def key(self):
        e = self.extra
        return (e.get("workload"), e.get("dtype"), e.get("threads"), e.get("impl"), e.get("record"))


@dataclass
class Goal:
    name: str
    value: float | None
    op: str
    target: float
    detail: str = ""

    @property
    def met(self) -> bool | None:
        if self.value is None or not math.isfinite(self.value):
            return None
        return self.value <= self.target if self.op == "<=" else self.value >= self.target

    @property
    def status(self) -> str:
        m = self.met
        if m is None:
            return "not measured"
        if m:
            return "met"
        if self.op == "<=":
            return f"missed by {self.value / self.target:.2f}x"
        return f"missed ({self.value / self.target:.0%} of the target)"


class Results:
    """Index of the rows of one run."""

    def __init__(self, rows: list[Row]):
        self.rows = [r for r in rows if r.median > 0]
        self.by_key: dict = {}
        for r in self.rows:
            self.by_key.setdefault(r.key(), r)
        self.peak: dict = {}  # (dtype, threads) -> flop/s
        for r in self.rows:
            if r.extra.get("impl") == "gemm":
                self.peak[(r.extra["dtype"], r.extra["threads"])] = r.extra["flops"] / r.median

    def t(self, workload, dtype, threads, impl, record) -> float | None:
        r = self.by_key.get((workload, dtype, threads, impl, record))
        return None if r is None else r.epoch

    def flops(self, workload, dtype) -> float | None:
        for r in self.rows:
            e = r.extra
            if e.get("workload") == workload and e.get("dtype") == dtype and "flops" in e:
                if e.get("impl") != "gemm" and "sweep" not in e:
                    return float(e["flops"])
        return None

    def limit(self, workload, dtype, threads) -> float | None:
        f, peak = self.flops(workload, dtype), self.peak.get((dtype, threads))
        return None if f is None or peak is None else f / peak

    def fastbp(self, workload, dtype, threads, record="batch") -> float | None:
        return self.t(workload, dtype, threads, "fastbp-cython", record)

    def peer(self, workload, dtype, threads, peer, record="none") -> float | None:
        return self.t(workload, dtype, threads, peer, record)


def _fmt(x: float | None, digits: int = 3) -> str:
    if x is None:
        return "–"
    if x >= 100:
        return f"{x:.0f}"
    return f"{x:.{digits}g}"


def _ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def peer_table(res: Results) -> str:
    head = ["workload"] + [PEER_TITLES[p] for p in PEER_COLUMNS]
    head += [
        "FLOP-bound limit",
        "**fastbp** record=batch",
        "fastbp record=None",
        "fastbp `Network.fit`",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for w, d in TABLE_ROWS:
        threads = (1, 2) if w == "B" else (1,)
        if all(
            res.fastbp(w, d, t) is None and res.peer(w, d, t, "numpy-loop") is None for t in threads
        ):
            continue
        label = f"{w} {d[-2:] == '64' and 'f64' or 'f32'}" + (", 1 / 2 threads" if w == "B" else "")
        cells = [label]
        for p in PEER_COLUMNS:
            cells.append(" / ".join(_fmt(res.peer(w, d, t, p)) for t in threads))
        cells.append(" / ".join(_fmt(res.limit(w, d, t)) for t in threads))
        cells.append("**" + " / ".join(_fmt(res.fastbp(w, d, t)) for t in threads) + "**")
        cells.append(" / ".join(_fmt(res.fastbp(w, d, t, "none")) for t in threads))
        cells.append(_fmt(res.t(w, d, 1, "fastbp-fit", "batch")))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def backend_table(res: Results) -> str:
    """Every fastbp row: backend x record x threads, per workload and dtype."""
    head = [
        "workload",
        "backend",
        "threads",
        "record=batch",
        "record=epoch",
        "record=None",
        "batch / None",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for w, d in TABLE_ROWS:
        for backend in ("cython", "numba", "numpy"):
            for t in (1, 2):
                vals = [res.t(w, d, t, f"fastbp-{backend}", r) for r in ("batch", "epoch", "none")]
                if all(v is None for v in vals):
                    continue
                cells = [f"{w} {d}", backend, str(t)] + [_fmt(v) for v in vals]
                cells.append(_fmt(_ratio(vals[0], vals[2])))
                lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def recording_table(res: Results) -> str:
    """What recording ||g_b|| of every layer after every mini-batch costs each peer."""
    head = (
        ["workload"]
        + [PEER_TITLES[p].rstrip("*") for p in PEER_COLUMNS]
        + ["fastbp (all statistics)"]
    )
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for w, d in TABLE_ROWS:
        cells = [f"{w} {d}"]
        for p in PEER_COLUMNS:
            cells.append(_fmt(_ratio(res.peer(w, d, 1, p, "speed"), res.peer(w, d, 1, p, "none"))))
        cells.append(_fmt(_ratio(res.fastbp(w, d, 1), res.fastbp(w, d, 1, "none"))))
        if any(c != "–" for c in cells[1:]):
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def peak_table(res: Results) -> str:
    lines = ["| GEMM | 1 thread | 2 threads |", "|---|---|---|"]
    for d in ("float64", "float32"):
        cells = [f"{'d' if d == 'float64' else 's'}gemm"]
        for t in (1, 2):
            v = res.peak.get((d, t))
            cells.append("–" if v is None else f"{v / 1e9:.0f} GFLOP/s")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def goals(rows_or_res) -> list[Goal]:
    res = rows_or_res if isinstance(rows_or_res, Results) else Results(rows_or_res)
    out: list[Goal] = []

    def add(name, value, op, target, detail=""):
        out.append(Goal(name, value, op, target, detail))

    for d in ("float64", "float32"):
        f = res.fastbp("A", d, 1)
        add(f"A {d}: fastbp / JAX lax.scan", _ratio(f, res.peer("A", d, 1, "jax-scan")), "<=", 0.4)
        add(f"A {d}: fastbp / PyTorch eager", _ratio(f, res.peer("A", d, 1, "torch")), "<=", 0.1)
        add(f"A {d}: fastbp / FLOP-bound limit", _ratio(f, res.limit("A", d, 1)), "<=", 2.5)
    for d in ("float32", "float64"):
        f = res.fastbp("C", d, 1)
        add(f"C {d}: fastbp / JAX lax.scan", _ratio(f, res.peer("C", d, 1, "jax-scan")), "<=", 0.6)
        add(f"C {d}: fastbp / PyTorch eager", _ratio(f, res.peer("C", d, 1, "torch")), "<=", 0.15)
    for t in (1, 2):
        f = res.fastbp("B", "float32", t)
        peers = {p: res.peer("B", "float32", t, p) for p in PEER_COLUMNS}
        peers = {p: v for p, v in peers.items() if v is not None}
        best = min(peers, key=peers.get) if peers else None
        add(
            f"B float32 {t}t: fastbp / fastest peer",
            _ratio(f, peers.get(best)) if best else None, "<=", 1.0, f"fastest peer: {best}",
        )  # fmt: skip
        g = res.t("B", "float32", t, "gemm-only", "none")
        add(
            f"B float32 {t}t: GEMM-alone time / fastbp time (throughput fraction)",
            _ratio(g, f), ">=", 0.75,
        )  # fmt: skip
    for w, dtypes, target in (("A", ("float64", "float32"), 1.10), ("B", ("float32",), 1.05),
                              ("C", ("float32", "float64"), 1.05)):  # fmt: skip
        for d in dtypes:
            for t in (1, 2) if w == "B" else (1,):
                add(
                    f"{w} {d} {t}t: record=batch / record=None",
                    _ratio(res.fastbp(w, d, t), res.fastbp(w, d, t, "none")), "<=", target,
                )  # fmt: skip
    # issue 2: cython >= 4x faster than the numpy backend and the NumPy loop on A
    f = res.fastbp("A", "float64", 1)
    add(
        "A float64 (issue 2): numpy backend / fastbp",
        _ratio(res.t("A", "float64", 1, "fastbp-numpy", "batch"), f),
        ">=",
        4.0,
    )
    add(
        "A float64 (issue 2): NumPy loop / fastbp",
        _ratio(res.peer("A", "float64", 1, "numpy-loop", "speed"), f),
        ">=",
        4.0,
    )
    return out


def goal_table(res: Results) -> str:
    lines = ["| goal | measured | target | status |", "|---|---|---|---|"]
    for g in goals(res):
        if g.value is None:
            continue
        detail = f" ({g.detail})" if g.detail else ""
        lines.append(f"| {g.name}{detail} | {g.value:.3g} | {g.op} {g.target:g} | {g.status} |")
    return "\n".join(lines)


SCALING_IMPLS = (
    ("fastbp-cython", "batch", "fastbp record=batch"),
    ("fastbp-cython", "none", "fastbp record=None"),
    ("fastbp-numpy", "batch", "fastbp numpy backend"),
    ("network2", "none", "network2 (per example)"),
    ("numpy-loop", "none", "NumPy mini-batch"),
    ("sklearn", "none", "scikit-learn"),
    ("torch", "none", "PyTorch eager"),
    ("jax-loop", "none", "JAX step loop"),
    ("jax-scan", "none", "JAX lax.scan"),
)


def scaling_data(res: Results) -> dict:
    """sweep -> impl label -> {x: seconds per epoch}."""
    out: dict = {}
    for r in res.rows:
        e = r.extra
        if "sweep" not in e:
            continue
        for impl, record, label in SCALING_IMPLS:
            if e.get("impl") == impl and e.get("record") == record:
                out.setdefault(e["sweep"], {}).setdefault(label, {})[int(e["x"])] = r.epoch
    return out


def scaling_tables(res: Results) -> str:
    data = scaling_data(res)
    parts = []
    for sweep in ("depth", "width", "batch"):
        if sweep not in data:
            continue
        labels = [lab for _, _, lab in SCALING_IMPLS if lab in data[sweep]]
        xs = sorted({x for lab in labels for x in data[sweep][lab]})
        title = {"depth": "weight layers L", "width": "hidden width", "batch": "mini-batch size"}[
            sweep
        ]
        lines = ["| " + " | ".join([title] + labels) + " |", "|" + "---|" * (len(labels) + 1)]
        for x in xs:
            lines.append(
                "| "
                + " | ".join([str(x)] + [_fmt(data[sweep][lab].get(x)) for lab in labels])
                + " |"
            )
        parts.append(
            f"Scaling, {sweep} (seconds per 10,000-example epoch, float64, 1 thread):\n\n"
            + "\n".join(lines)
        )
    return "\n\n".join(parts)


def plot(res: Results, path: str) -> bool:
    """Log-log plot of the three sweeps into ``path``; False when nothing to plot."""
    data = scaling_data(res)
    if not data:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweeps = [s for s in ("depth", "width", "batch") if s in data]
    fig, axes = plt.subplots(1, len(sweeps), figsize=(5.2 * len(sweeps), 4.6), squeeze=False)
    styles = {
        "fastbp record=batch": dict(color="k", lw=2.4, marker="o"),
        "fastbp record=None": dict(color="0.45", lw=1.6, marker="o", ls="--"),
        "fastbp numpy backend": dict(color="tab:gray", marker=".", ls=":"),
    }
    for ax, sweep in zip(axes[0], sweeps):
        for _, _, label in SCALING_IMPLS:
            pts = data[sweep].get(label)
            if not pts:
                continue
            xs = sorted(pts)
            ax.loglog(xs, [pts[x] for x in xs], label=label, **styles.get(label, dict(marker=".")))
        ax.set_xlabel({"depth": "weight layers L  ([784, 30×(L−1), 10])",
                       "width": "hidden width w  ([784, w×4, 10])",
                       "batch": "mini-batch size"}[sweep])  # fmt: skip
        ax.set_ylabel("seconds per epoch (10,000 examples)")
        ax.grid(True, which="both", alpha=0.3)
        ax.set_title(f"{sweep} sweep, float64, 1 thread")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def render(rows, header: bool = True) -> str:
    res = rows if isinstance(rows, Results) else Results(rows)
    parts = []
    if header:
        parts.append("# fastbp benchmark results (seconds per epoch, medians)")
    if res.peak:
        parts.append("Large-GEMM throughput (SciPy's OpenBLAS, same run):\n\n" + peak_table(res))
    parts.append(
        "Workloads (seconds per epoch; * = extrapolated from part of the epoch):\n\n"
        + peer_table(res)
    )
    parts.append("fastbp backends and record modes:\n\n" + backend_table(res))
    parts.append("Cost of recording (record / no record, same run):\n\n" + recording_table(res))
    parts.append("Goals of issue 4 (and issue 2's):\n\n" + goal_table(res))
    sc = scaling_tables(res)
    if sc:
        parts.append(sc)
    return "\n\n".join(parts) + "\n"
