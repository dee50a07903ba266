"""How long ``defer-orch preview --branch B`` takes at N models (issue 22: "how long
``preview`` takes at 1,000 models (benchmark, not a timed test)").

    python -m benchmarks.preview --models 1000 --repeats 3 --out benchmarks/results/preview.json \\
        --markdown benchmarks/results/preview.md [--work-dir DIR] [--keep] [--reuse-production]

Steps:

1. Production as :class:`benchmarks.big_branch.BigBranchBench` makes it (reused, not
   copied): a generated project of N models committed to ``main`` of a scratch git
   repository, built once by the raw dbt CLI and published as ``prod_manifest`` would,
   into a local Dagster instance at ``<root>/dagster_home`` with ``DEFER_ORCH_HOME`` at
   ``<root>/home``. (Its constructor also loads the definitions, makes the product's git
   mirror and runs ``branch_parse_template_job``; ``preview`` uses none of them except
   the mirror, see 3.)
2. Two branches pushed from the developer clone: ``leaf`` changes the generated
   project's leaf mart (few nodes selected), ``root`` changes the base model with the
   most descendants (a large selection).
3. Per branch, the real command line, as a user runs it, in a subprocess:
   ``defer-orch preview --branch B --json`` with ``DAGSTER_HOME``, ``DEFER_ORCH_HOME``,
   ``DEFER_ORCH_DBT_PROJECT_DIR``, ``DEFER_ORCH_GIT_REPO`` and
   ``DEFER_ORCH_PROJECT_SUBDIR`` set as the code location's are. Once "first" (a branch
   never previewed: fetch, merge-base, checkout, dbt parse + ls), then ``--repeats``
   times again. Before the leaf branch's first call the product's git mirror is deleted,
   so that call also pays the mirror's clone (a developer's very first preview); the root
   branch's first call finds the mirror and fetches. Each call's wall seconds (process
   start to exit, interpreter start-up and imports included), the JSON's own ``seconds``,
   and the selected nodes, which must be the changed model and its descendants (tests
   included) by the production manifest's ``child_map`` (otherwise :class:`BenchError`).
4. ``defer-orch state pull --to DIR --json`` once.

Writes JSON (every number) and a short markdown table. Benchmarks are not tests: no
timing is asserted. Nothing in the product is wrapped or patched.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if os.fspath(REPO_ROOT) not in sys.path:
    sys.path.insert(0, os.fspath(REPO_ROOT))

from benchmarks.big_branch import PRODUCTION_NOTE, BigBranchBench, Steps  # noqa: E402
from benchmarks.common import (  # noqa: E402
    BenchError, LoadSampler, fmt_stats, log, machine_info, product_info, publish_markdown, stats, uptime,
)

SCHEMA_VERSION = 1
CHANGES = ("leaf", "root")


class PreviewBench(BigBranchBench):
    """:class:`BigBranchBench` whose ``push_change`` also takes ``root``: the base model
    with the most descendants."""

    def model_for(self, change: str) -> str:
        if change == "root":
            return max(self.project.layers["base"], key=lambda m: (len(self.project.descendants(m)), m))
        return super().model_for(change)


def defer_orch_command() -> list[str]:
    """The console script next to this interpreter (as the tests run it)."""
    script = Path(sys.executable).with_name("defer-orch")
    return [os.fspath(script)] if script.is_file() else [sys.executable, "-m", "defer_orchestration.cli.main"]


def cli_env(bench: BigBranchBench) -> dict[str, str]:
    """The variables the code location of ``bench`` reads, for the command line."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DEFER_ORCH_", "DAGSTER_"))}
    env.update({
        "DAGSTER_HOME": os.fspath(bench.root / "dagster_home"),
        "DEFER_ORCH_HOME": bench.settings.home,
        "DEFER_ORCH_DBT_PROJECT_DIR": bench.settings.dbt_project_dir,
        "DEFER_ORCH_GIT_REPO": bench.branch_settings.git_repo,
        "DEFER_ORCH_PROJECT_SUBDIR": bench.branch_settings.project_subdir,
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    })
    return env


def run_cli(args: Sequence[str], env: dict[str, str], cwd: Path) -> tuple[float, dict[str, Any], str]:
    """``defer-orch ARGS`` in a subprocess: wall seconds, its JSON document, its stderr."""
    started = time.perf_counter()
    done = subprocess.run([*defer_orch_command(), *args], env=env, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise BenchError(
            f"defer-orch {' '.join(args)} exited {done.returncode}:\n{(done.stdout + done.stderr)[-3000:]}"
        )
    try:
        document = json.loads(done.stdout)
    except json.JSONDecodeError as exc:
        raise BenchError(f"defer-orch {' '.join(args)} printed no JSON ({exc}):\n{done.stdout[-2000:]}") from exc
    return wall, document, done.stderr


def expected_selection(manifest: dict[str, Any], model: str) -> set[str]:
    """``model`` and everything downstream of it (tests included) by the ``child_map``."""
    [start] = [
        uid for uid, node in manifest["nodes"].items() if node["resource_type"] == "model" and node["name"] == model
    ]
    seen, todo = {start}, [start]
    while todo:
        for child in manifest["child_map"].get(todo.pop(), ()):
            if child not in seen:
                seen.add(child)
                todo.append(child)
    return seen


def bench_preview(
    n_models: int, root: Path, *, repeats: int, progress: dict[str, Any], reuse_production: bool = False,
) -> dict[str, Any]:
    """Everything of one invocation (see the module docstring)."""
    from defer_orchestration.branch.checkout import mirror_dir

    with LoadSampler(interval=5.0) as sampler:
        steps = Steps(sampler)
        calls: list[dict[str, Any]] = []
        progress.update(n_models=n_models, steps=steps.records, calls=calls)
        echoed = io.StringIO()  # anything echoed on stdout by in-process runs; stdout is for the table
        with contextlib.redirect_stdout(echoed):
            bench = PreviewBench(n_models, root, steps, progress=progress, reuse_production=reuse_production)
        env = cli_env(bench)
        cwd = root / "cwd"  # the user's shell: somewhere outside the project
        cwd.mkdir(exist_ok=True)
        manifest = json.loads((Path(bench.published.path) / "manifest.json").read_text(encoding="utf-8"))
        mirror = mirror_dir(bench.core, bench.branch_settings.repo(bench.settings))
        tag = f"{int(time.time()) % 10**6:06d}"  # a reused work dir keeps earlier branches
        branches: dict[str, dict[str, Any]] = {}
        for change in CHANGES:
            model = bench.model_for(change)
            expected = expected_selection(manifest, model)
            branch = f"bench/preview-{tag}-{change}"
            with steps.step(f"{change}/push"):
                sha = bench.push_change(branch, change)
            branches[change] = {
                "branch": branch, "sha": sha, "changed_model": model, "expected_nodes": len(expected),
                "expected_models": sum(uid.startswith("model.") for uid in expected),
            }
            for call in range(repeats + 1):
                kind = "first" if call == 0 else "repeat"
                mirror_state = "fetched"
                if call == 0 and change == CHANGES[0]:
                    shutil.rmtree(mirror, ignore_errors=True)
                    mirror_state = "cloned"
                log(f"N={n_models}: defer-orch preview --branch {branch} ({change}, {kind} {call})")
                with steps.step(f"{change}/preview_{call}"):
                    wall, doc, stderr = run_cli(["preview", "--branch", branch, "--json"], env, cwd)
                if doc.get("sha") != sha:
                    raise BenchError(f"preview of {branch} reports commit {doc.get('sha')}, pushed {sha}")
                selected = {e["unique_id"] for e in doc["selected"]}
                if selected != expected:
                    raise BenchError(
                        f"preview of {branch} ({change} change of {model}) selected {len(selected)} nodes, expected "
                        f"{len(expected)}: missing {sorted(expected - selected)[:10]}, extra {sorted(selected - expected)[:10]}"
                    )
                reasons = Counter(r["kind"] for e in doc["selected"] for r in e["reasons"])
                calls.append({
                    "change": change, "branch": branch, "call": call, "kind": kind,
                    "mirror": mirror_state if call == 0 else "fetched",
                    "wall_seconds": round(wall, 3),
                    "json_seconds": doc.get("seconds"),
                    "selected": len(selected),
                    "selected_models": sum(uid.startswith("model.") for uid in selected),
                    "selected_tests": sum(uid.startswith(("test.", "unit_test.")) for uid in selected),
                    "deferred": len(doc.get("deferred") or []),
                    "reasons": dict(sorted(reasons.items())),
                    "preflight": doc.get("preflight", {}).get("message"),
                    "preflight_ok": doc.get("preflight", {}).get("ok"),
                    "state": doc.get("state"),
                    "warnings": doc.get("warnings"),
                    "stderr": stderr.strip()[-500:],
                })
                log(f"  {wall:.1f}s wall (its own seconds {doc.get('seconds')}); {len(selected)} selected, "
                    f"as expected")

        log(f"N={n_models}: defer-orch state pull")
        with steps.step("state_pull"):
            pull_wall, pull_doc, _ = run_cli(["state", "pull", "--to", os.fspath(root / "pulled_state"), "--json"],
                                             env, cwd)
        if pull_doc.get("version") != bench.publication["version"]:
            raise BenchError(f"state pull wrote version {pull_doc.get('version')}, published {bench.publication['version']}")
        log(f"  {pull_wall:.1f}s wall")
        load = sampler.summary()

    summary: dict[str, Any] = {}
    for change in CHANGES:
        mine = [c for c in calls if c["change"] == change]
        first, again = mine[0], mine[1:]
        summary[change] = {
            **branches[change],
            "selected": first["selected"],
            "selected_models": first["selected_models"],
            "selected_tests": first["selected_tests"],
            "deferred": first["deferred"],
            "first_mirror": first["mirror"],
            "first_wall_seconds": first["wall_seconds"],
            "first_json_seconds": first["json_seconds"],
            "repeat_wall_seconds": stats([c["wall_seconds"] for c in again]),
            "repeat_json_seconds": stats([c["json_seconds"] for c in again if c["json_seconds"] is not None]),
        }
    return {
        "n_models": n_models,
        "production": {**bench.production, "note": PRODUCTION_NOTE},
        "publication": bench.publication,
        "production_build_seconds": bench.prod_seconds,
        "command": [*defer_orch_command(), "preview", "--branch", "B", "--json"],
        "environment": {k: v for k, v in env.items() if k.startswith(("DEFER_ORCH_", "DAGSTER_"))},
        "summary": summary,
        "state_pull": {"wall_seconds": round(pull_wall, 3), "document": pull_doc},
        "calls": calls,
        "steps": steps.records,
        "load": load,
    }


def render_markdown(results: dict[str, Any]) -> str:
    r = results["result"]
    meta = results["meta"]
    reps = r["summary"][CHANGES[0]]["repeat_wall_seconds"]["n"]
    lines = [
        f"### `defer-orch preview --branch B` at {r['n_models']:,} models",
        "",
        f"Product at `{(meta['product']['git_sha'] or '?')[:7]}`, {meta['started_at']}, "
        f"{meta['machine']['cpus']} CPUs. The command line in a subprocess, as a user runs it (wall seconds: "
        f"process start to exit); its JSON's own `seconds` in brackets. First = a branch never previewed; "
        f"repeated = the same branch {reps} more time{'s' if reps != 1 else ''} (median, min–max). "
        "Selections checked against the production manifest's child_map.",
        "",
        "| branch changes | selected nodes (models + tests) | deferred parents | first s | repeated s |",
        "|---|---:|---:|---:|---:|",
    ]
    for change in CHANGES:
        s = r["summary"][change]
        mirror = "mirror cloned" if s["first_mirror"] == "cloned" else "mirror fetched"
        lines.append(
            f"| {change} model `{s['changed_model']}` | {s['selected']:,} ({s['selected_models']:,} + "
            f"{s['selected_tests']:,}) | {s['deferred']:,} | {s['first_wall_seconds']:.1f} "
            f"[{s['first_json_seconds']:.1f}] ({mirror}) | {fmt_stats(s['repeat_wall_seconds'])} "
            f"[{fmt_stats(s['repeat_json_seconds'])}] |"
        )
    lines += [
        "",
        f"`defer-orch state pull --json`: {r['state_pull']['wall_seconds']:.1f} s wall. "
        f"Production ({r['production']['results']:,} nodes) was built once with the raw dbt CLI in "
        f"{r['production_build_seconds']:.1f} s and published as `prod_manifest` would "
        f"(`benchmarks.big_branch.BigBranchBench`).",
    ]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.preview",
        description="How long `defer-orch preview --branch B` takes at N models (leaf and root changes).",
    )
    parser.add_argument("--models", type=int, default=1000, help="project size (default 1000)")
    parser.add_argument("--repeats", type=int, default=3, help="previews of each branch after its first (default 3)")
    parser.add_argument("--out", type=Path, required=True, help="JSON results file")
    parser.add_argument("--markdown", type=Path, help="also write the markdown table here")
    parser.add_argument("--render-only", action="store_true", help="print (and --markdown) the table of an existing --out")
    parser.add_argument("--work-dir", type=Path, help="scratch directory (default: a new temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    parser.add_argument(
        "--reuse-production", action="store_true",
        help="with --work-dir: reuse the project, production build and publication an earlier invocation of "
        "this benchmark or benchmarks.big_branch left there. Implies --keep.",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.render_only:
        publish_markdown(render_markdown(json.loads(args.out.read_text(encoding="utf-8"))), args.markdown)
        return 0
    if args.repeats < 1:
        raise SystemExit("--repeats must be at least 1")
    os.environ.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="defer-orch-preview-"))
    work.mkdir(parents=True, exist_ok=True)
    root = work / f"big-n{args.models}"
    started = time.monotonic()
    meta: dict[str, Any] = {
        "command": "python -m benchmarks.preview " + " ".join(argv),
        "started_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "product": product_info(),
        "product_dir": os.fspath(REPO_ROOT),
        "args": {k: (os.fspath(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "uptime_at_start": uptime(),
    }
    progress: dict[str, Any] = {}
    try:
        result = bench_preview(
            args.models, root, repeats=args.repeats, progress=progress, reuse_production=args.reuse_production,
        )
    except BaseException as exc:
        meta["total_seconds"] = round(time.monotonic() - started, 1)
        meta["uptime_at_end"] = uptime()
        partial = {
            "schema_version": SCHEMA_VERSION, "meta": meta, "error": f"{type(exc).__name__}: {exc}"[-5000:],
            "partial": progress,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(partial, indent=1, default=str) + "\n", encoding="utf-8")
        log(f"failed; what was measured is in {args.out} (work dir {work} kept)")
        raise
    meta["total_seconds"] = round(time.monotonic() - started, 1)
    meta["uptime_at_end"] = uptime()
    if not (args.keep or args.reuse_production):
        shutil.rmtree(work if args.work_dir is None else root, ignore_errors=True)
    results = {"schema_version": SCHEMA_VERSION, "meta": meta, "result": result}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    publish_markdown(render_markdown(results), args.markdown, f"(total {meta['total_seconds']} s; JSON: {args.out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
