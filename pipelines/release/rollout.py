"""Serve a new version of one family's registered bundle without retraining: register + promote, build, blue/green.

The one sequence behind ``reviewops gallery deploy`` (:mod:`pipelines.release.gallery`) and ``reviewops policy set``
(:mod:`pipelines.release.policy`): under the work tree's lock, the caller's ``register`` stores the new bundle and
promotes it; the reviewer Bento is built from the production models (its golden smoke set recomputed with the new
bundle), unless the last build already holds exactly them; then it is deployed blue/green, which switches only if
the smoke set matches. With ``restore=True`` a failed build or deploy moves the family's production pointer back
to the model it had before, so the registry says what is served. No torch on this path.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from pipelines.params import Params

DEPLOY_STATE = Path(".reviewops") / "deploy"
BUILD_RECORD = Path("reports") / "build.json"
BENTOML_OWN = ("model.yaml",)          # BentoML's own file in a model directory, not part of the bundle


def copy_bundle(base: Path, out: Path) -> Path:
    """``out``: a copy of the registered bundle directory ``base`` without BentoML's own files."""
    shutil.copytree(base, out, ignore=shutil.ignore_patterns(*BENTOML_OWN))
    return Path(out)


def timed(timings: dict, name: str, started: float) -> None:
    timings[name] = round(time.perf_counter() - started, 2)
    print(f"  {timings[name]:6.2f} s  {name}", flush=True)


def built(root: Path, production: dict, env: dict) -> str | None:
    """The Bento of the last build when it holds exactly the production models and is still in the store."""
    from pipelines.deploy.bluegreen import DeployError, resolve_bento

    try:
        last = json.loads((root / BUILD_RECORD).read_text())
    except (OSError, ValueError):
        return None
    if last.get("models") != production or not last.get("bento"):
        return None
    try:
        resolve_bento(last["bento"], env)
    except DeployError:
        return None
    return last["bento"]


def rollout(root: Path, params: Params, family: str, register: Callable[[dict], dict], *, port: int | None = None,
            ready_timeout: float = 300.0, restore: bool = False) -> dict:
    """``register(timings)`` (returns a dict with ``tag`` and ``registered``), then build and deploy blue/green.

    Returns ``{"registered": register's dict, "bento", "deploy": the deploy's scalar fields, "timings", "seconds"}``.
    Raises what the build or the deploy raised; with ``restore``, after moving ``family``'s production pointer back
    to its model before ``register`` (when ``register`` promoted one and the pointer still names it).
    """
    from pipelines.data.version import repo_lock
    from pipelines.deploy.bluegreen import DeployError, deploy as blue_green
    from pipelines.release import registry
    from pipelines.release.build import BuildError, build

    root = Path(root).resolve()
    home = registry.use_store(root)
    env = {"BENTOML_HOME": str(home), "REVIEWOPS_ROOT": str(root)}
    timings: dict[str, float] = {}
    began = time.perf_counter()
    with repo_lock(root):                       # the gate, builds and DVC/git changes wait for this one
        before = registry.production().get(family)
        registered = register(timings)
        try:
            production = registry.production()
            started = time.perf_counter()
            bento = built(root, production, env)
            if bento is None:
                bento = build(root, params)["bento"]
                timed(timings, f"build {bento}", started)
            else:
                print(f"{bento} already holds every production model: nothing to build", flush=True)
            if restore:                         # the pointer moves back under the same lock: nothing promotes between
                deployed = _deploy(blue_green, bento, root, params, port, ready_timeout, env, timings)
        except BaseException as exc:
            if restore and registered.get("registered") and before and registry.production().get(family) == registered["tag"]:
                registry.rollback(family, to=before)
                print(f"production {family} moved back to {before}", flush=True)
                if isinstance(exc, (BuildError, DeployError)):
                    raise type(exc)(f"{exc} (production {family} moved back to {before})") from exc
            raise
    if not restore:
        deployed = _deploy(blue_green, bento, root, params, port, ready_timeout, env, timings)
    timings["total"] = round(time.perf_counter() - began, 2)
    return {"registered": registered, "bento": bento,
            "deploy": {k: v for k, v in deployed.items() if isinstance(v, (str, int, float, bool))},
            "timings": timings, "seconds": timings["total"]}


def _deploy(blue_green, bento: str, root: Path, params: Params, port, ready_timeout: float, env: dict,
            timings: dict) -> dict:
    started = time.perf_counter()
    deployed = blue_green(bento, state_dir=root / DEPLOY_STATE, port=int(port or params.serving.port),
                          ready_timeout=ready_timeout, env=env)
    timed(timings, f"deploy ({deployed['outcome']})", started)
    return deployed
