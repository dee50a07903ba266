"""``prod_manifest``: the artifacts of a successful production build, published as a version.

It runs in the same run as the dbt build, downstream of every dbt asset, so Dagster
skips it whenever the build failed: a failed build never becomes the deferral state.

A state-aware build that keeps nodes yields no output for them (a kept node gets no new
materialization), so Dagster skips this step for want of those outputs; that build
publishes from its own step with :func:`publish_run_artifacts`, after its publication
policy passed, and records the same materialization.
"""

# No `from __future__ import annotations` here: Dagster inspects the `context` and
# config annotations of ops and assets at definition time and needs real types.


import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg

from defer_orchestration import constants as c
from defer_orchestration.dbt import artifacts as dbt_artifacts
from defer_orchestration.production.build import prod_build_target_path, read_build_record
from defer_orchestration.production.state_aware import STATE_METADATA_KEY, read_record
from defer_orchestration.lib import git
from defer_orchestration.lib.manifest_store import StoredVersion
from defer_orchestration.resources import DeferOrchSettings


def manifest_metadata(
    stored: StoredVersion, *, project_dir: Path, run_id: str, build: Mapping[str, Any] | None = None
) -> dict[str, dg.MetadataValue]:
    """Everything a branch build (or a person) needs to trust a published version.

    ``build`` is what the production build recorded: the exact commit of main it built
    (then never "dirty"); without it, the project directory's own commit and dirty flag.
    """
    manifest = dbt_artifacts.load_json(stored.path / "manifest.json", what="manifest")
    run_results = dbt_artifacts.load_json(stored.path / "run_results.json", what="run_results")
    built = dict(build or {})
    commit = git.CommitInfo(sha=built["sha"], dirty=False, repo_root=None) if built.get("sha") else git.commit_info(project_dir)
    statuses = dbt_artifacts.status_summary(run_results)
    counts = dbt_artifacts.node_counts(manifest)
    not_ok = {
        uid: status
        for uid, status in dbt_artifacts.result_statuses(run_results).items()
        if status not in dbt_artifacts.OK_STATUSES
    }
    status_rows = "\n".join(f"| {status} | {n} |" for status, n in statuses.items())
    _, failing_tests = dbt_artifacts.publication_blockers(run_results, manifest, models_built_suffices=True)
    return {
        "version": dg.MetadataValue.text(stored.version),
        "sha256": dg.MetadataValue.text(stored.files["manifest.json"]),
        "run_results_sha256": dg.MetadataValue.text(stored.files["run_results.json"]),
        # Where readers find the version: its directory, or its URL in an object store.
        "store_path": dg.MetadataValue.path(stored.location or str(stored.path)),
        "dbt_version": dg.MetadataValue.text(str(dbt_artifacts.dbt_version(manifest))),
        "git_sha": dg.MetadataValue.text(commit.sha or "unknown (not a git repository)"),
        "git_dirty": dg.MetadataValue.bool(bool(commit.dirty)),
        "created_at": dg.MetadataValue.timestamp(time.time()),
        "producing_run_id": dg.MetadataValue.text(run_id),
        "node_counts": dg.MetadataValue.json(counts),
        "status_summary": dg.MetadataValue.json(statuses),
        "not_successful_nodes": dg.MetadataValue.json(not_ok),
        # Non-empty only when DEFER_ORCH_PUBLISH_ON=models_built let a build with failing
        # tests publish; every branch run deferring to this version warns about them.
        "failing_tests": dg.MetadataValue.json(failing_tests),
        "build_mode": dg.MetadataValue.text(str(built.get("mode") or "full")),
        "nodes_not_rebuilt": dg.MetadataValue.int(int(built.get("not_rebuilt") or 0)),
        "prod_seconds_saved": dg.MetadataValue.float(float(built.get("seconds_saved") or 0.0)),
        "status_table": dg.MetadataValue.md(f"| status | nodes |\n|---|---|\n{status_rows}"),
        **{f"nodes/{kind}": dg.MetadataValue.int(n) for kind, n in counts.items()},
        **_state_aware_metadata(built),
    }


def _state_aware_metadata(built: Mapping[str, Any]) -> dict[str, dg.MetadataValue]:
    """What a state-aware build decided: kept count and the node-seconds not spent, the
    rebuilt nodes by reason, the kept nodes with the run that last built them."""
    if built.get("mode") != "state_aware":
        return {}
    return {
        "headline": dg.MetadataValue.text(str(built.get("headline") or "")),
        "nodes_rebuilt": dg.MetadataValue.int(int(built.get("nodes_rebuilt") or 0)),
        "nodes_kept": dg.MetadataValue.int(int(built.get("nodes_kept") or 0)),
        "prod_node_seconds_not_spent": dg.MetadataValue.float(float(built.get("seconds_saved") or 0.0)),
        "rebuilt_by_reason": dg.MetadataValue.json(built.get("rebuilt_by_reason") or {}),
        "why_rebuilt": dg.MetadataValue.json(built.get("why_rebuilt") or {}),
        "kept_nodes": dg.MetadataValue.json(built.get("kept_nodes") or {}),
        "sources_observed": dg.MetadataValue.int(int(built.get("sources_observed") or 0)),
        "sources_changed": dg.MetadataValue.json(built.get("sources_changed") or []),
        "possibly_spurious_source_changes": dg.MetadataValue.json(built.get("possibly_spurious_source_changes") or []),
        "observation_seconds": dg.MetadataValue.float(float(built.get("observation_seconds") or 0.0)),
        "why": dg.MetadataValue.md(str(built.get("why") or "")),
    }


def publish_run_artifacts(core: Any, run_id: str, *, log: Any) -> dict[str, dg.MetadataValue]:
    """Publish the production artifacts the dbt build of run ``run_id`` left into the
    store; the ``prod_manifest`` metadata recording it (with the record the next
    state-aware build starts from, ``state_aware_state``)."""
    source = prod_build_target_path(core, run_id)
    if not (source / "manifest.json").is_file():
        raise dg.Failure(
            description=(
                f"no production dbt build ran in this run (nothing at {source}). "
                "prod_manifest publishes the artifacts of the dbt build of the same run: "
                "launch prod_build_job, or materialize the dbt assets together with it."
            )
        )
    store = core.store()
    stored = store.publish(source)  # a failure here publishes nothing: the previous version stays
    log.info(f"published production artifacts version {stored.version} to {stored.location or stored.path}")
    metadata = manifest_metadata(stored, project_dir=core.project_dir, run_id=run_id, build=read_build_record(source))
    record = read_record(source.parent)
    if record:
        metadata[STATE_METADATA_KEY] = dg.MetadataValue.json(record)
    return metadata


def build_prod_manifest_asset(dbt_assets_def: dg.AssetsDefinition) -> dg.AssetsDefinition:
    """``prod_manifest``, downstream of every production dbt asset."""

    @dg.asset(
        name=c.PROD_MANIFEST_ASSET,
        deps=list(dbt_assets_def.keys),
        group_name=c.PROD_DBT_GROUP,
        kinds={"dbt"},
        description="manifest.json and run_results.json of the latest successful production "
        "build, in the content-addressed artifact store. Branch builds defer to it.",
    )
    def prod_manifest(
        context: dg.AssetExecutionContext, settings: DeferOrchSettings
    ) -> dg.MaterializeResult:
        """Publish this run's production artifacts into the store."""
        return dg.MaterializeResult(
            metadata=publish_run_artifacts(settings.core(), context.run.run_id, log=context.log)
        )

    return prod_manifest
