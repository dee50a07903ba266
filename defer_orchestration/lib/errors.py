"""Typed errors. Every message says what happened and what to do next.

    DeferOrchestrationError
    ├── ConfigurationError            bad settings, paths or launch config
    ├── BranchNameError               a branch name we cannot map to a schema
    ├── BranchPlanCursorError         a sensor cursor cannot be read (also a ValueError)
    ├── ProtectedSchemaError          a branch/teardown target resolved to a protected schema
    │   └── BranchIsolationError      a branch's node would write outside the branch's schemas
    ├── PreflightError                a relation a branch build would defer to does not exist
    ├── GitError                      a git command failed
    ├── DbtInvocationError            dbt could not be run or failed
    ├── WarehouseError                the warehouse could not be opened or queried
    │   └── WarehouseLockedError      another process holds the warehouse file
    └── ManifestError                 anything about published production manifests
        ├── NoManifestPublishedError  no successful production build has published one
        ├── StaleStateError           older than allowed, and the launch says fail
        ├── ManifestArtifactMissingError
        ├── ManifestChecksumError     the stored artifact does not match its recorded sha256
        └── ArtifactStoreError        the store could not be written (disk full, permissions)
            └── ArtifactStoreUnavailableError  an object store unreachable or refusing (URL named)
"""

from __future__ import annotations


class DeferOrchestrationError(Exception):
    """Base class of every error this project raises on purpose."""


class ConfigurationError(DeferOrchestrationError):
    """A setting, path or launch config value is invalid."""


class BranchNameError(DeferOrchestrationError):
    """A branch name cannot be turned into a branch schema."""


class BranchPlanCursorError(DeferOrchestrationError, ValueError):
    """A sensor cursor could not be read; it must be reset by hand."""


class ProtectedSchemaError(DeferOrchestrationError):
    """A branch or teardown operation would have touched a protected schema."""


class BranchIsolationError(ProtectedSchemaError):
    """A selected node of a branch would write a relation outside the branch's schemas."""


class PreflightError(DeferOrchestrationError):
    """A relation the branch build would read through deferral does not exist."""


class GitError(DeferOrchestrationError):
    """A git command failed."""


class DbtInvocationError(DeferOrchestrationError):
    """dbt could not be started or exited with an error."""


class WarehouseError(DeferOrchestrationError):
    """The warehouse could not be opened or queried."""


class WarehouseLockedError(WarehouseError):
    """Another process holds the warehouse file."""


class ManifestError(DeferOrchestrationError):
    """Base class for errors about published production manifests."""


class NoManifestPublishedError(ManifestError):
    """No successful production build has published a manifest yet."""


class StaleStateError(ManifestError):
    """The production manifest is older than allowed and ``on_stale_state`` is ``fail``."""


class ManifestArtifactMissingError(ManifestError):
    """A published manifest version's files are gone from the artifact store."""


class ManifestChecksumError(ManifestError):
    """A stored artifact's bytes no longer match the sha256 recorded when it was published."""


class ArtifactStoreError(ManifestError):
    """The artifact store could not be written."""


class ArtifactStoreUnavailableError(ArtifactStoreError):
    """An object store could not be reached or refused the request (credentials, endpoint, bucket)."""
