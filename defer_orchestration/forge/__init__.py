"""Commit status and one pull-request comment (GitHub, GitLab), posted by a branch run.

Two calls from the run (:func:`report_pending` at start, :func:`report_final` at the end),
settings from the environment (:func:`forge_settings_from_env`), one small client per forge
behind :class:`~defer_orchestration.forge.base.ForgeClient`. No Dagster here, no HTTP
library but the standard one, and nothing that can fail or stall the build.
"""

from defer_orchestration.forge.report import (
    CommentPosted,
    ForgeLog,
    ForgeOutcome,
    Gate,
    StatusPosted,
    gate_verdict,
    report_final,
    report_pending,
)
from defer_orchestration.forge.settings import FailOn, ForgeKind, ForgeSettings, Secret, forge_settings_from_env

__all__ = [
    "CommentPosted",
    "FailOn",
    "ForgeKind",
    "ForgeLog",
    "ForgeOutcome",
    "ForgeSettings",
    "Gate",
    "Secret",
    "StatusPosted",
    "forge_settings_from_env",
    "gate_verdict",
    "report_final",
    "report_pending",
]
