"""A branch run's report to its pull request (``forge/``), wired into the branch job.

``pending`` goes out in a background thread as soon as the run knows its commit, so a
slow or retrying forge never delays the build; ``final`` waits for it (bounded by the
forge budget, so the final status can never be overtaken by the pending one) and posts
the final status and the report comment. Both return what they did as run metadata;
neither raises.
"""

from __future__ import annotations

import threading
from typing import Any

import dagster as dg

from defer_orchestration.forge import ForgeOutcome, ForgeSettings, report_final, report_pending


class PullRequestReporter:
    """One branch run's two calls to the forge."""

    def __init__(self, settings: ForgeSettings, *, branch: str, run_id: str, log: Any) -> None:
        self._settings = settings
        self._branch = branch
        self._run_id = run_id
        self._log = log
        self._sha = ""
        self._thread: threading.Thread | None = None
        self._pending: ForgeOutcome | None = None

    def start(self, sha: str) -> None:
        """Post ``pending`` on ``sha`` in the background (called once the commit is known)."""
        if self._thread is not None or not sha:
            return
        self._sha = sha

        def post() -> None:
            self._pending = report_pending(
                self._settings, branch=self._branch, sha=sha, run_id=self._run_id, log=self._log
            )

        self._thread = threading.Thread(target=post, name="defer-orch-forge-pending", daemon=True)
        self._thread.start()

    def finish(
        self, *, ok: bool, body_markdown: str, impact: list[dict[str, Any]] | None, sha: str = ""
    ) -> dict[str, dg.MetadataValue]:
        """Post the final status and the report comment; the outcome as run metadata."""
        sha = self._sha or sha
        if self._thread is not None:
            self._thread.join(timeout=self._settings.budget_s + 5)
        if not sha:
            warning = (
                f"nothing was reported to {self._settings.kind.value}: the run failed before it "
                f"knew the commit of branch {self._branch!r}"
            )
            self._log.warning(warning)
            return {"forge_warnings": dg.MetadataValue.json([warning])}
        final = report_final(
            self._settings, branch=self._branch, sha=sha, run_id=self._run_id, ok=ok,
            body_markdown=body_markdown, impact=impact, log=self._log,
        )
        warnings = [*(self._pending.warnings if self._pending else []), *final.warnings]
        metadata: dict[str, dg.MetadataValue] = {
            "forge": dg.MetadataValue.json(final.to_json()),
            "forge_warnings": dg.MetadataValue.json(warnings),
        }
        if self._pending is not None:
            metadata["forge_pending"] = dg.MetadataValue.json(self._pending.to_json())
        if final.gate is not None and final.gate.verdict == "failure" and ok:
            metadata["forge_gate"] = dg.MetadataValue.text(
                f"the commit status is failure although the build succeeded: {final.gate.reason}"
            )
        return metadata
