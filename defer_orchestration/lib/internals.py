"""The switch for every private dbt or Dagster internal the product uses.

Some speed-ups reach into a library where no public API does the job (a batched event
log write, a partial parse that starts from a template, ...). Each lives in one guarded
module named for it, which lists at its top what it touches and declares an
:class:`Internal` naming the library versions it was tested with. Before using the
internal, the module asks :func:`enabled`; when that says no, the module takes the
library's own path (stock storage, a plain parse), which is slower but always correct.

:func:`enabled` says no, and logs once per process naming the version and what was
switched off, when

- ``DEFER_ORCH_INTERNALS=off`` is set: the escape hatch for an upgrade that misbehaves
  (read when asked, never at import, so a process started with it is entirely stock), or
- the installed version of the library is not in the internal's tested list: a library
  we did not test may have moved what we touch, so we do not touch it.

This module imports neither dbt nor Dagster: the dbt child processes and the command
line use it as the code location does.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from importlib import metadata

from defer_orchestration.lib.errors import ConfigurationError

ENV_SWITCH = "DEFER_ORCH_INTERNALS"
_OFF = frozenset({"off", "0", "false", "no"})
_ON = frozenset({"", "on", "1", "true", "yes", "auto"})

log = logging.getLogger("defer_orchestration.internals")
_reported: set[str] = set()
_lock = threading.Lock()


@dataclass(frozen=True)
class Internal:
    """One guarded use of a library's private code.

    ``distribution`` is the package whose version decides (``"dagster"``, ``"dbt-core"``);
    ``tested`` the exact versions the product's tests ran it on (the oldest and newest
    constraints files, ``constraints/``); ``touches`` what private names it uses, for the
    log line and the README.
    """

    name: str
    distribution: str
    tested: tuple[str, ...]
    touches: tuple[str, ...]


def installed_version(distribution: str) -> str | None:
    """The installed version of ``distribution``, None when it is not installed."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def switched_off_by_user() -> bool:
    """``DEFER_ORCH_INTERNALS=off`` (or 0/false/no) is set. Any other unknown value is
    a configuration error the user must fix, not a silent guess."""
    value = os.environ.get(ENV_SWITCH, "").strip().lower()
    if value in _OFF:
        return True
    if value in _ON:
        return False
    raise ConfigurationError(
        f"{ENV_SWITCH}={os.environ.get(ENV_SWITCH)!r} is not understood; set it to `off` to use only "
        "the libraries' own code paths, or unset it."
    )


def why_off(internal: Internal) -> str | None:
    """Why ``internal`` must not be used in this process, None when it may."""
    if switched_off_by_user():
        return f"{ENV_SWITCH}=off is set"
    version = installed_version(internal.distribution)
    if version not in internal.tested:
        return (
            f"{internal.distribution} {version or '(not installed)'} is not among the versions it was tested "
            f"with ({', '.join(internal.tested)})"
        )
    return None


def enabled(internal: Internal) -> bool:
    """Whether ``internal`` may be used; logs once per process when it may not."""
    reason = why_off(internal)
    if reason is None:
        return True
    with _lock:
        first = internal.name not in _reported
        _reported.add(internal.name)
    if first:
        log.warning(
            "defer-orchestration: %s switched off (%s); using %s's own behaviour instead. It touches: %s.",
            internal.name, reason, internal.distribution, ", ".join(internal.touches),
        )
    return False


def reset_reports() -> None:
    """Forget which internals were reported (tests)."""
    with _lock:
        _reported.clear()
