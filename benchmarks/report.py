"""Tables and the scaling plot from a saved benchmark run.

    python benchmarks/report.py .benchmarks/full.json [--plot docs/benchmarks/scaling.png]

Several JSON files may be given (for example the workloads and the sweeps run
separately); their rows are merged, later files winning.  Prints markdown.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _report import Results, Row, plot, render  # noqa: E402


def compact(paths: list[str]) -> list[dict]:
    """The rows of the runs without per-round data (small enough to keep in docs/)."""
    out = []
    for path in paths:
        with open(path) as fh:
            data = json.load(fh)
        for b in data["benchmarks"]:
            st = b["stats"]
            out.append(
                {
                    "file": os.path.basename(path),
                    "group": b.get("group"),
                    "name": b["name"],
                    **{k: st[k] for k in ("median", "min", "iqr", "rounds")},
                    "extra_info": b.get("extra_info", {}),
                }
            )
    return out


def load(paths: list[str]) -> tuple[list[Row], list[dict]]:
    rows: dict = {}
    machines = []
    for path in paths:
        with open(path) as fh:
            data = json.load(fh)
        machines.append(
            {
                "file": path,
                "datetime": data.get("datetime"),
                "cpu": data.get("machine_info", {}).get("cpu", {}).get("brand_raw"),
            }
        )
        for b in data["benchmarks"]:
            rows[(b.get("group"), b["name"])] = Row(
                b.get("group") or "", b["name"], b["stats"]["median"], b.get("extra_info", {})
            )
    return list(rows.values()), machines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("json", nargs="+", help="pytest-benchmark --benchmark-json file(s)")
    ap.add_argument("--plot", help="write the scaling log-log plot (PNG) here")
    ap.add_argument(
        "--rows", help="write the rows (group, name, median, min, iqr, rounds, extra_info) as JSON"
    )
    args = ap.parse_args(argv)
    rows, machines = load(args.json)
    res = Results(rows)
    for m in machines:
        print(f"<!-- {m['file']}: {m['datetime']}, {m['cpu']} -->")
    print(render(res))
    if args.rows:
        with open(args.rows, "w") as fh:
            json.dump({"machines": machines, "rows": compact(args.json)}, fh, indent=0)
    if args.plot:
        os.makedirs(os.path.dirname(args.plot) or ".", exist_ok=True)
        if plot(res, args.plot):
            print(f"scaling plot written to {args.plot}", file=sys.stderr)
        else:
            print("no scaling rows: no plot", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
