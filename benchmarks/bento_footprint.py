"""Footprint of one built reviewer Bento: size on disk, serving requirements, cold start, memory per process.

    python benchmarks/bento_footprint.py --bentoml .venv/bin/bentoml --bentoml-home DIR/.bentoml \\
        --tag reviewops-reviewer:VERSION --label before --out benchmarks/results/bento_footprint_before.json \\
        [--photos 50] [--images DIR_OR_GLOB] [--append] [--source-tree DIR]

Standalone (standard library and httpx; psutil is not needed: memory and the process tree are read from
/proc, so it runs on Linux only). It does not import the project, so the same script measures a Bento of
any revision. For the Bento ``TAG`` in the store ``BENTOML_HOME`` it records:

- ``bento_size_mb``: ``du`` of ``bentos/<name>/<version>``; ``models``: each model the Bento's bento.yaml
  references, with the ``du`` of ``models/<name>/<version>`` (``models_size_mb`` their sum); the files and
  sizes of the Bento's biggest parts;
- ``python_requirements``: the lines of the Bento's ``env/python/requirements.txt`` and whether torch,
  torchvision, timm and ultralytics are among them;
- ``cold_start_s``: from starting ``bentoml serve TAG --host 127.0.0.1 --port P`` (a free loopback port, in
  the Bento's directory, its own process group, ``BENTOML_HOME`` and ``BENTOML_DO_NOT_TRACK=true``,
  ``REVIEWOPS_ROOT`` and ``REVIEWOPS_PREDICTION_LOG`` pointing into a fresh temp dir) until ``GET /readyz``
  answers 200, polled every 0.1 s, 300 s at most;
- ``processes``: every process (``serve_main`` shows as ``circusd``: BentoML retitles it) of the serve tree with its role (``model_worker``: the service running the
  models, ``--service-name`` containing "check"; ``http_worker``: the API server, the one given
  ``--backlog``; ``serve_main``: ``bentoml serve`` itself, BentoML's process manager; ``other``), its command
  line, RSS / PSS / USS in MB and which heavy native libraries it has mapped (torch, onnxruntime, opencv),
  read once after readiness and once after ``--photos`` ``POST /review`` requests sent one at a time
  (multipart field ``photo``, real photos cycled);
- then stops the server (SIGTERM to the process group, SIGKILL after 20 s, then any survivor by pid) and
  writes the JSON with the command line that produced it. ``--append`` adds this run to an existing file
  of the same tag so that repeated invocations land in one file with their spread.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx

HEAVY = {"torch": ("libtorch_cpu", "libtorch.so", "libc10.so"), "onnxruntime": ("onnxruntime_pybind11_state", "libonnxruntime"),
         "opencv": ("cv2.abi3.so", "cv2.cpython", "libopencv"), "torchvision": ("torchvision/_C",),
         "scipy": ("scipy/",)}                                 # native libraries only: pure-Python imports leave no mapping
WATCHED_REQS = ("torch", "torchvision", "timm", "ultralytics", "onnxruntime", "onnx", "opencv-python",
                "opencv-python-headless", "bentoml")
IMAGE_EXT = (".jpg", ".jpeg", ".png")


# ---------------------------------------------------------------- the Bento on disk

def du_bytes(path: Path) -> int:
    """Allocated bytes of everything under ``path`` (like ``du -s``; hard links counted once)."""
    seen, total = set(), 0
    for root, dirs, files in os.walk(path, followlinks=False):
        for name in files + dirs:
            p = os.path.join(root, name)
            try:
                st = os.lstat(p)
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
    return total + os.lstat(path).st_blocks * 512


def apparent_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file() and not f.is_symlink())


def mb(n: float) -> float:
    return round(n / 1e6, 2)


def resolve_tag(home: Path, tag: str) -> tuple[str, str, Path]:
    """(name, version, directory) of ``name:version`` (``latest`` or no version: the store's ``latest`` file)."""
    name, _, version = tag.partition(":")
    base = home / "bentos" / name.lower()
    if not version or version == "latest":
        latest = base / "latest"
        if not latest.is_file():
            sys.exit(f"no {latest}: give the full tag")
        version = latest.read_text().strip()
    path = base / version
    if not (path / "bento.yaml").is_file():
        sys.exit(f"Bento {name}:{version} not found: no {path / 'bento.yaml'}")
    return name, version, path


def _bento_models(bento_yaml: str) -> list[str]:
    """Model tags from bento.yaml (``models:`` entries ``tag: name:version``); yaml if importable, else a scan."""
    try:
        import yaml  # noqa: PLC0415

        doc = yaml.safe_load(bento_yaml) or {}
        out = []
        for m in doc.get("models") or []:
            out.append(m.get("tag") if isinstance(m, dict) else str(m))
        return [t for t in out if t]
    except ImportError:
        block = re.search(r"^models:\n((?:[ -].*\n)*)", bento_yaml, re.M)
        return re.findall(r"tag:\s*['\"]?([\w.\-]+:[\w.\-]+)", block.group(1)) if block else []


def requirements_of(bento: Path) -> dict:
    candidates = [bento / "env" / "python" / "requirements.txt", *sorted((bento / "env" / "python").rglob("requirements*.txt"))]
    path = next((p for p in candidates if p.is_file()), None)
    lines = [ln.strip() for ln in path.read_text().splitlines()] if path else []
    reqs = [ln for ln in lines if ln and not ln.startswith(("#", "-"))]

    def name(line: str) -> str:
        return re.split(r"[\s<>=!~;\[@]", line, maxsplit=1)[0].lower().replace("_", "-")

    names = {name(r) for r in reqs}
    return {"file": str(path.relative_to(bento)) if path else None, "python_requirements": reqs,
            "options": [ln for ln in lines if ln.startswith("-")],
            "has": {pkg: pkg in names for pkg in WATCHED_REQS}}


def disk_footprint(home: Path, tag: str) -> dict:
    name, version, bento = resolve_tag(home, tag)
    bento_yaml = (bento / "bento.yaml").read_text()
    models = []
    for mtag in _bento_models(bento_yaml):
        mname, _, mver = mtag.partition(":")
        mpath = home / "models" / mname.lower() / mver
        models.append({"tag": mtag, "path": str(mpath), "exists": mpath.is_dir(),
                       "size_mb": mb(du_bytes(mpath)) if mpath.is_dir() else None,
                       "files": sorted(f"{f.name} {mb(f.stat().st_size)}" for f in mpath.iterdir() if f.is_file())
                       if mpath.is_dir() else []})
    parts = {}
    for child in sorted(bento.iterdir()):
        parts[child.name] = mb(du_bytes(child) if child.is_dir() else child.stat().st_blocks * 512)
    src = bento / "src"
    src_parts = {c.name: mb(du_bytes(c) if c.is_dir() else c.stat().st_blocks * 512) for c in sorted(src.iterdir())} \
        if src.is_dir() else {}
    biggest = sorted(((f.stat().st_size, str(f.relative_to(bento))) for f in bento.rglob("*") if f.is_file()),
                     reverse=True)[:10]
    models_mb = sum(m["size_mb"] or 0 for m in models)
    bento_mb = mb(du_bytes(bento))
    return {"tag": f"{name}:{version}", "bento_path": str(bento), "bento_size_mb": bento_mb,
            "bento_apparent_mb": mb(apparent_bytes(bento)), "bento_files": sum(1 for f in bento.rglob("*") if f.is_file()),
            "bento_parts_mb": parts, "bento_src_parts_mb": src_parts,
            "bento_biggest_files": [{"path": p, "mb": mb(s)} for s, p in biggest],
            "models": models, "models_size_mb": round(models_mb, 2), "bento_plus_models_mb": round(bento_mb + models_mb, 2),
            **requirements_of(bento)}


# ---------------------------------------------------------------- processes from /proc

def _stat(pid: int) -> tuple[int, int] | None:
    """(ppid, pgid) of ``pid``."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()
    return int(fields[1]), int(fields[2])


def tree(root: int) -> list[int]:
    """``root`` and every descendant, plus any process left in its process group."""
    parents: dict[int, int] = {}
    group: list[int] = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (st := _stat(int(entry))):
            parents[int(entry)] = st[0]
            if st[1] == root:
                group.append(int(entry))
    out, frontier = [root] if root in parents else [], [root]
    while frontier:
        kids = [p for p, pp in parents.items() if pp in frontier and p not in out]
        out += kids
        frontier = kids
    return sorted(set(out) | set(group))


def cmdline(pid: int) -> list[str]:
    try:
        return [a for a in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0") if a]
    except OSError:
        return []


def environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return {}
    return dict(kv.split("=", 1) for kv in raw if "=" in kv)


def memory(pid: int) -> dict:
    """RSS (VmRSS), PSS and USS (Private_Clean + Private_Dirty of smaps_rollup) and peak RSS, in MB."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, val = line.partition(":")
            if key in ("VmRSS", "VmHWM", "VmSwap", "Threads"):
                v = int(val.split()[0])
                out[{"VmRSS": "rss_mb", "VmHWM": "peak_rss_mb", "VmSwap": "swap_mb", "Threads": "threads"}[key]] = \
                    v if key == "Threads" else round(v / 1024, 1)
    except OSError:
        return out
    try:
        roll = {}
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
            key, _, val = line.partition(":")
            roll[key] = int(val.split()[0])
        out["pss_mb"] = round(roll.get("Pss", 0) / 1024, 1)
        out["uss_mb"] = round((roll.get("Private_Clean", 0) + roll.get("Private_Dirty", 0)) / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    return out


def mapped_libs(pid: int) -> dict[str, bool]:
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return {}
    return {lib: any(m in maps for m in marks) for lib, marks in HEAVY.items()}


def _arg(args: list[str], flag: str) -> str | None:
    return args[args.index(flag) + 1] if flag in args and args.index(flag) + 1 < len(args) else None


def role(pid: int, root: int, args: list[str], model_hint: str) -> tuple[str, str | None]:
    service = _arg(args, "--service-name") or environ(pid).get("BENTOML_SERVICE_NAME")
    if pid == root:
        return "serve_main", service
    if service is not None and "--backlog" in args:          # BentoML gives the API server (the entry service) a backlog
        return "http_worker", service
    if service is not None and re.search(model_hint, service, re.I):
        return "model_worker", service
    if service is not None:
        return "service_worker", service
    return "other", service


def summarise_cmd(args: list[str]) -> str:
    short = [a for a in args]
    if "--args" in short:                                    # the JSON of bento arguments: long and always "{}"
        i = short.index("--args")
        short[i + 1] = short[i + 1] if len(short[i + 1]) < 40 else short[i + 1][:37] + "..."
    text = shlex.join(short)
    return text if len(text) < 400 else text[:397] + "..."


def snapshot(root: int, model_hint: str) -> list[dict]:
    procs = []
    for pid in tree(root):
        args = cmdline(pid)
        r, service = role(pid, root, args, model_hint)
        procs.append({"pid": pid, "role": r, "service": service, "cmd": summarise_cmd(args),
                      **memory(pid), "libs": mapped_libs(pid)})
    return procs


def per_role(procs: list[dict]) -> dict:
    out: dict[str, dict] = {}
    for p in procs:
        d = out.setdefault(p["role"], {"n": 0, "rss_mb": 0.0, "pss_mb": 0.0, "uss_mb": 0.0})
        d["n"] += 1
        for k in ("rss_mb", "pss_mb", "uss_mb"):
            d[k] = round(d[k] + (p.get(k) or 0), 1)
    out["total"] = {"n": len(procs), **{k: round(sum(p.get(k) or 0 for p in procs), 1)
                                        for k in ("rss_mb", "pss_mb", "uss_mb")}}
    return out


# ---------------------------------------------------------------- serving

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def photos_from(spec: str | None, bento: Path, n: int) -> list[Path]:
    if spec:
        p = Path(spec)
        found = sorted(str(f) for f in p.rglob("*")) if p.is_dir() else sorted(glob.glob(spec, recursive=True))
    else:                                                        # the Bento's own golden photos (real test photos)
        found = sorted(str(f) for f in (bento / "src" / "golden").rglob("*"))
    found = [f for f in found if f.lower().endswith(IMAGE_EXT)]
    if not found:
        sys.exit(f"no photos found ({spec or bento / 'src' / 'golden'})")
    return [Path(f) for f in found[:max(1, n)]]


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of a PNG or baseline/progressive JPEG, without PIL."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data[:2] == b"\xff\xd8":
        i = 2
        while i + 9 < len(data):
            if data[i] != 0xFF:
                i += 1
                continue
            marker, length = data[i + 1], int.from_bytes(data[i + 2:i + 4], "big")
            if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
                return int.from_bytes(data[i + 7:i + 9], "big"), int.from_bytes(data[i + 5:i + 7], "big")
            i += 2 + length
    return None


def stop(proc: subprocess.Popen, grace: float = 20.0) -> dict:
    """SIGTERM to the process group, SIGKILL after ``grace`` s; then any tree member still alive, by pid."""
    members = tree(proc.pid)                     # BentoML's workers each get their own process group: by pid too
    started = time.monotonic()
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)
    deadline = time.monotonic() + 10
    left = [p for p in members if Path(f"/proc/{p}").exists() and _stat(p) is not None]
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = [p for p in left if Path(f"/proc/{p}").exists()]
    killed = []
    for p in left:
        try:
            os.kill(p, signal.SIGKILL)
            killed.append(p)
        except ProcessLookupError:
            pass
    time.sleep(0.5)
    return {"stop_s": round(time.monotonic() - started, 2), "exit_code": proc.returncode, "members": members,
            "killed_after_grace": killed, "left": [p for p in members if Path(f"/proc/{p}").exists()]}


def tail(path: Path, n: int = 40) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()[-n:]
    except OSError:
        return []


def serve_and_measure(args: argparse.Namespace, home: Path, tag: str, bento: Path) -> dict:
    port = free_port()
    tmp = Path(tempfile.mkdtemp(prefix="bento-footprint-"))
    log_path = tmp / "serve.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REVIEWOPS_", "BENTOML_"))}
    env.update({"BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true", "REVIEWOPS_ROOT": str(tmp / "root"),
                "REVIEWOPS_PREDICTION_LOG": f"sqlite:///{tmp / 'root' / 'predictions.sqlite'}", "PYTHONUNBUFFERED": "1"})
    (tmp / "root").mkdir()
    for kv in args.env:
        k, _, v = kv.partition("=")
        env[k] = v
    cmd = [args.bentoml, "serve", tag, "--host", "127.0.0.1", "--port", str(port)]
    photos = photos_from(args.images, bento, args.distinct_photos)
    blobs = [(p.name, p.read_bytes()) for p in photos]
    run: dict = {"serve_command": shlex.join(cmd), "serve_cwd": str(bento), "port": port,
                 "serve_env": {k: env[k] for k in sorted(env) if k.startswith(("REVIEWOPS_", "BENTOML_"))},
                 "serve_log": str(log_path),
                 "photos": {"n_requests": args.photos, "distinct": len(blobs), "files": [str(p) for p in photos],
                            "sizes": sorted({f"{w}x{h}" for w, h in filter(None, (image_size(b) for _, b in blobs))}),
                            "mean_bytes": round(statistics.fmean(len(b) for _, b in blobs))}}
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as logf:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=bento, env=env, stdin=subprocess.DEVNULL, stdout=logf,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        last, status_seen = "no answer", {}
        with httpx.Client(base_url=url, timeout=2.0, trust_env=False) as client:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"bentoml serve exited with {proc.returncode} before /readyz answered 200")
                try:
                    resp = client.get("/readyz")
                    status_seen[resp.status_code] = status_seen.get(resp.status_code, 0) + 1
                    if resp.status_code == 200:
                        run["cold_start_s"] = round(time.perf_counter() - t0, 2)
                        break
                    last = f"HTTP {resp.status_code}"
                except httpx.HTTPError as exc:
                    last = type(exc).__name__
                    status_seen[last] = status_seen.get(last, 0) + 1
                if time.perf_counter() - t0 > args.ready_timeout:
                    raise RuntimeError(f"/readyz did not answer 200 within {args.ready_timeout} s (last: {last})")
                time.sleep(0.1)
        run["readyz_answers_before_200"] = {str(k): v for k, v in status_seen.items()}
        time.sleep(args.settle)
        ready = snapshot(proc.pid, args.model_service)
        run["after_ready"] = {"processes": ready, "by_role": per_role(ready)}

        latencies, statuses, decisions, first = [], {}, {}, None
        with httpx.Client(base_url=url, timeout=120, trust_env=False) as client:
            for i in range(args.photos):
                name, data = blobs[i % len(blobs)]
                ctype = "image/png" if name.lower().endswith(".png") else "image/jpeg"
                s = time.perf_counter()
                resp = client.post("/review", files={"photo": (name, data, ctype)},
                                   data={"listing_id": f"footprint-{i}"})
                latencies.append(time.perf_counter() - s)
                statuses[resp.status_code] = statuses.get(resp.status_code, 0) + 1
                if resp.status_code == 200:
                    decisions[resp.json().get("decision")] = decisions.get(resp.json().get("decision"), 0) + 1
                elif first is None:
                    first = resp.text[:300]
        ms = sorted(x * 1000 for x in latencies)
        run["requests"] = {"statuses": {str(k): v for k, v in statuses.items()}, "decisions": decisions,
                           "first_error": first, "first_ms": round(latencies[0] * 1000, 1) if latencies else None,
                           "p50_ms": round(ms[len(ms) // 2], 1) if ms else None,
                           "p95_ms": round(ms[int(0.95 * (len(ms) - 1))], 1) if ms else None,
                           "mean_ms": round(statistics.fmean(ms), 1) if ms else None}
        time.sleep(args.settle)
        after = snapshot(proc.pid, args.model_service)
        run["after_requests"] = {"processes": after, "by_role": per_role(after)}
    except Exception as exc:  # noqa: BLE001 - recorded, then the server is stopped and the script fails
        run["error"] = f"{type(exc).__name__}: {exc}"
        run["serve_log_tail"] = tail(log_path)
    finally:
        run["stop"] = stop(proc)
    run["processes_left"] = run["stop"]["left"]
    if not args.keep_tmp and "error" not in run:
        shutil.rmtree(tmp, ignore_errors=True)
        run["serve_log"] = None
    return run


def headline(run: dict) -> dict:
    """The figures of one run: cold start, RSS of the model and HTTP workers, their sum over the tree."""
    out = {"cold_start_s": run.get("cold_start_s")}
    for phase in ("after_ready", "after_requests"):
        roles = (run.get(phase) or {}).get("by_role", {})
        for r in ("model_worker", "http_worker", "serve_main", "total"):
            if r in roles:
                out[f"{r}_rss_mb_{phase}"] = roles[r]["rss_mb"]
                out[f"{r}_pss_mb_{phase}"] = roles[r]["pss_mb"]
    out["review_p50_ms"] = (run.get("requests") or {}).get("p50_ms")
    return out


def spread(runs: list[dict]) -> dict:
    keys = sorted({k for r in runs for k, v in r["headline"].items() if isinstance(v, (int, float))})
    out = {}
    for k in keys:
        vals = [r["headline"][k] for r in runs if isinstance(r["headline"].get(k), (int, float))]
        out[k] = {"values": vals, "min": min(vals), "max": max(vals), "mean": round(statistics.fmean(vals), 2)}
    return out


def git_rev(tree_dir: str | None) -> dict | None:
    if not tree_dir:
        return None
    def git(*a: str) -> str:
        done = subprocess.run(["git", "-C", tree_dir, *a], capture_output=True, text=True)
        return done.stdout.strip()
    return {"dir": tree_dir, "revision": git("rev-parse", "--short", "HEAD"), "subject": git("log", "-1", "--format=%s")[:200],
            "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def bentoml_version(exe: str) -> str | None:
    try:
        return subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=120).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bentoml-home", required=True, help="the BentoML store (BENTOML_HOME)")
    ap.add_argument("--tag", required=True, help="Bento tag name:version (name or name:latest: the store's latest)")
    ap.add_argument("--label", required=True, help="what this Bento is (before, after, ...)")
    ap.add_argument("--out", required=True, help="JSON file to write")
    ap.add_argument("--bentoml", default=str(Path(sys.executable).parent / "bentoml"),
                    help="the bentoml executable that serves (default: beside this Python)")
    ap.add_argument("--photos", type=int, default=50, help="POST /review requests, one at a time (default 50)")
    ap.add_argument("--images", help="directory or glob of real photos (default: the Bento's src/golden photos)")
    ap.add_argument("--distinct-photos", type=int, default=8, help="distinct photos cycled through (default 8)")
    ap.add_argument("--model-service", default="check", help="regex of the model worker's service name (default: check)")
    ap.add_argument("--ready-timeout", type=float, default=300.0)
    ap.add_argument("--settle", type=float, default=1.0, help="seconds before each memory reading (default 1)")
    ap.add_argument("--repeat", type=int, default=1, help="serve and measure this many times (default 1)")
    ap.add_argument("--append", action="store_true", help="add the runs to --out if it holds the same tag")
    ap.add_argument("--source-tree", help="git work tree the Bento was built from: its revision is recorded")
    ap.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="extra env for bentoml serve")
    ap.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (serve log, prediction log)")
    args = ap.parse_args()
    if not Path(args.bentoml).exists() and not shutil.which(args.bentoml):
        sys.exit(f"no bentoml executable {args.bentoml}")
    home = Path(args.bentoml_home).resolve()
    command = shlex.join([sys.executable, *sys.argv])
    disk = disk_footprint(home, args.tag)
    bento = Path(disk["bento_path"])
    out = Path(args.out)
    doc = json.loads(out.read_text()) if args.append and out.exists() else None
    if doc is not None and doc.get("bento", {}).get("tag") != disk["tag"]:
        sys.exit(f"{out} holds {doc.get('bento', {}).get('tag')}, not {disk['tag']}: no --append")
    if doc is None:
        doc = {"benchmark": "bento_footprint", "label": args.label, "bento": disk, "runs": []}
    doc["bento"] = disk
    if args.source_tree:
        doc["source_tree"] = git_rev(args.source_tree)
    doc.setdefault("commands", []).append(command)
    ok = True
    for i in range(args.repeat):
        print(f">> {args.label} run {len(doc['runs']) + 1}: serving {disk['tag']} ...", flush=True)
        run = {"run": len(doc["runs"]) + 1, "command": command, "repeat_index": i,
               "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                           "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
                           "mem_available_mb": _meminfo("MemAvailable")},
               "bentoml": args.bentoml, "bentoml_version": bentoml_version(args.bentoml),
               "source_tree": git_rev(args.source_tree)}
        run.update(serve_and_measure(args, home, disk["tag"], bento))
        run["headline"] = headline(run)
        ok = ok and "error" not in run
        doc["runs"].append(run)
        print(json.dumps({"run": run["run"], **run["headline"], **({"error": run["error"]} if "error" in run else {})}),
              flush=True)
    good = [r for r in doc["runs"] if "error" not in r]
    doc["summary"] = {"bento_size_mb": disk["bento_size_mb"], "models_size_mb": disk["models_size_mb"],
                      "bento_plus_models_mb": disk["bento_plus_models_mb"], "requirements_have": disk["has"],
                      "runs": len(doc["runs"]), "runs_ok": len(good), "spread": spread(good) if good else {}}
    doc["written"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f">> wrote {out}")
    return 0 if ok else 1


def _meminfo(key: str) -> float | None:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(key + ":"):
            return round(int(line.split()[1]) / 1024)
    return None


if __name__ == "__main__":
    sys.exit(main())
