"""The figures a finished `make demo` workspace measured, in one results file: the whole reviewer, and the
SKU, manipulation, prohibited, real-photo and detector figures its issues are judged by.

    .venv/bin/python benchmarks/demo_figures.py /tmp/demo benchmarks/results/reviewer_demo_<commit>_seed7.json \\
        --code <commit> --command "git clone ... && make demo > demo.log" [--note ...]

Reads ``metrics/{reviewer,sku,manipulation,prohibited,real_photos,detector}.json`` of the workspace (the detector's
test split only). benchmarks/demo_timings.py records the same demo's log (stage and task times).
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workspace", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--code", required=True, help="the commit the demo ran")
    ap.add_argument("--command", required=True, help="how the demo was run")
    ap.add_argument("--note", action="append", default=[])
    args = ap.parse_args()

    def metrics(name: str) -> dict:
        return json.loads((args.workspace / "metrics" / f"{name}.json").read_text())

    doc = {"command": args.command, "date": datetime.now(UTC).date().isoformat(), "code": args.code,
           "notes": args.note, "reviewer": metrics("reviewer"), "sku": metrics("sku"),
           "manipulation": metrics("manipulation"), "prohibited": metrics("prohibited"),
           "real_photos": metrics("real_photos"), "detector_test": metrics("detector").get("test")}
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
