"""How long the reviewer stage's INT8 choice takes: a full review of the test split per attempt (the stage up to
this change) against :class:`pipelines.release.reviewer.GraphMemo` (each graph run once per precision).

Usage, on a workspace the reviewer stage has run in (its ``models/reviewer/bundles`` hold the candidates with
their INT8 twins):

    .venv/bin/python benchmarks/int8_choice_memo.py /tmp/demo47 [--attempts-from metrics/reviewer.json]

The attempts are those a reviewer stage made: the FP32 reviewer, then every entry of ``int8.tried`` of
``--attempts-from`` (a ``metrics/reviewer.json``; default the workspace's). Both ways review the same attempts
one after the other in this process, on the same decoded photos' files; the script checks that every attempt's
answers are the same both ways and writes benchmarks/results/int8_choice_memo.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from results_header import header

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workspace", type=Path)
    ap.add_argument("--attempts-from", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=RESULTS / "int8_choice_memo.json")
    args = ap.parse_args()

    root = args.workspace.resolve()
    os.chdir(root)
    from pipelines.data.dataset import split_frame, versioned_manifest
    from pipelines.params import load_params
    from pipelines.release.reviewer import OUT_DIR, GraphMemo
    from pipelines.serve.models import ReviewerModels
    from pipelines.train.review import review

    params = load_params(root / "params.yaml")
    record = json.loads((args.attempts_from or root / "metrics" / "reviewer.json").read_text())["int8"]
    attempts = [[], *[t["int8"] for t in record["tried"]]]
    bundles = {p.name: p for p in sorted((root / OUT_DIR / "bundles").iterdir())}
    test = split_frame(versioned_manifest(root), "test")

    full_s, full_answers = [], []
    for units in attempts:
        start = time.perf_counter()
        models = ReviewerModels.as_served({f: str(p) for f, p in bundles.items()}, params, int8=units)
        full_answers.append(review(models, test, params))
        full_s.append(round(time.perf_counter() - start, 1))
        print(f"full review, {len(units)} INT8 units: {full_s[-1]} s", flush=True)

    start = time.perf_counter()
    memo = GraphMemo(params, bundles, test)
    decode_s = round(time.perf_counter() - start, 1)
    memo_s, same = [], []
    for units, answers in zip(attempts, full_answers):
        start, before = time.perf_counter(), len(memo.runs)
        got = memo.answers(units)
        memo_s.append(round(time.perf_counter() - start, 1))
        same.append(got == answers)
        ran = memo.runs[-1] if len(memo.runs) > before else "none (every output known)"
        print(f"memo, {len(units)} INT8 units: {memo_s[-1]} s, families run {ran}, same answers {same[-1]}", flush=True)

    out = {**header(" ".join(["python benchmarks/int8_choice_memo.py", *sys.argv[1:]])),
           "workspace": str(root), "test_photos": len(test), "threads": params.train.threads,
           "attempts": [{"int8": units, "full_review_s": f, "memo_s": m, "same_answers": s}
                        for units, f, m, s in zip(attempts, full_s, memo_s, same)],
           "families_run_by_memo": memo.runs,
           "full_review_total_s": round(sum(full_s), 1),
           "memo_total_s": round(decode_s + sum(memo_s), 1), "memo_decode_s": decode_s,
           "every_answer_same": all(same)}
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({k: out[k] for k in ("full_review_total_s", "memo_total_s", "every_answer_same")}))


if __name__ == "__main__":
    main()
