"""``defer-orch state pull``: production's latest good manifest, for plain ``dbt --defer``."""

from __future__ import annotations

import os
import shutil
import time
import uuid
from pathlib import Path

import click

from defer_orchestration.cli.common import age, dagster_instance, emit, translated_errors, usage
from defer_orchestration.lib.manifest_store import ARTIFACT_FILES, sha256_file


@click.group()
def state() -> None:
    """Production's published dbt state (manifest.json, run_results.json)."""


@state.command()
@click.option(
    "--to", "to", type=click.Path(file_okay=False, path_type=Path), default=Path("prod_state"), show_default=True,
    help="Directory to write manifest.json and run_results.json into (created; files replaced).",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object: version, sha, path, created_at, dbt_version.")
def pull(to: Path, as_json: bool) -> None:
    """Write the latest good production manifest (checksum verified) to a directory.

    The directory works with plain dbt:

    \b
      defer-orch state pull --to prod_state
      dbt build --select state:modified+ --defer --state prod_state
    """
    from defer_orchestration.defs.manifest_resolution import latest_published_manifest

    with dagster_instance() as instance, translated_errors():
        published = latest_published_manifest(instance)  # verified against the recorded sha256s
        recorded = {"manifest.json": published.manifest_sha256, "run_results.json": published.run_results_sha256}
        written = _copy_verified(published.path, to, recorded)
    document = {
        "version": published.version,
        "sha": published.git_sha,
        "path": os.fspath(written),
        "created_at": published.created_at,
        "dbt_version": published.dbt_version,
        "run_id": published.producing_run_id,
    }

    def text() -> str:
        return "\n".join([
            f"production state {published.version[:12]} written to {written}",
            f"  commit       {published.git_sha or '(built outside git)'}",
            f"  published    {age(published.created_at)} by run {published.producing_run_id}",
            f"  dbt version  {published.dbt_version or 'unknown'}",
            f"use it: dbt build --select state:modified+ --defer --state {written}",
        ])

    emit(as_json, document, text)


def _copy_verified(source: Path, dest: Path, recorded: dict[str, str]) -> Path:
    """Copy the artifacts next to ``dest`` then rename each into place, checking the
    copies against the recorded checksums: a half-written file is never left as the state."""
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        usage(f"cannot create {dest} ({exc.strerror}); choose another directory with --to.")
    for name in ARTIFACT_FILES:
        partial = dest / f".{name}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            shutil.copyfile(source / name, partial)
            if name in recorded and sha256_file(partial) != recorded[name]:
                from defer_orchestration.lib.errors import ManifestChecksumError

                raise ManifestChecksumError(
                    f"{source / name} changed while it was copied (sha256 differs from the published one); "
                    "run `defer-orch state pull` again."
                )
            os.replace(partial, dest / name)
        except OSError as exc:
            usage(f"cannot write {dest / name} ({exc.strerror}); check the directory's permissions and free space.")
        finally:
            if partial.exists():
                partial.unlink()
    os.utime(dest, (time.time(), time.time()))
    return dest.resolve()
