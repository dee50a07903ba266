"""What one dbt invocation spent its time on, read from its ``dbt.log``.

dbt writes a header line per invocation and timestamped lines for the steps we split
on (adapter registered, manifest written, nodes found, run started and finished, the
command's end). Together with the times the process was started and ended (or the
session command sent and answered) they split an invocation's wall time into
:data:`DBT_SEGMENTS`.
"""

from __future__ import annotations

import datetime as _dt
import statistics
from collections.abc import Sequence
from pathlib import Path

# Markers: the first matching line of an invocation ends the segment before it; the first
# segment starts at the process spawn.
_DBT_MARKERS = {
    "adapter": "[info ] [MainThread]: Registered adapter:",
    "manifest_written": "[MainThread]: Wrote artifact WritableManifest",
    "found": "[info ] [MainThread]: Found ",
    "concurrency": "[info ] [MainThread]: Concurrency:",
    "finished": "[info ] [MainThread]: Finished running ",
    "end": "[MainThread]: Command `dbt ",
}
DBT_SEGMENTS = ("startup", "parse", "select", "execute", "write_artifacts", "exit")


def _seconds_of_day(text: str) -> float | None:
    try:
        h, m, rest = text.split(":")
        return int(h) * 3600 + int(m) * 60 + float(rest)
    except ValueError:
        return None


def dbt_log_invocations(log_file: Path) -> list[dict[str, float]]:
    """Per invocation in ``dbt.log`` (in order): seconds-of-day of each marker's first line."""
    if not log_file.is_file():
        return []
    return _sections(log_file.read_text(encoding="utf-8", errors="replace").splitlines())


def log_files(log_dir: Path) -> list[Path]:
    """``log_dir``'s ``dbt.log`` after its rotated backups, oldest first: dbt rotates the
    file at 10 MB (``dbt.log.1`` the newest backup), and at 10,000 models one parse writes
    more than that."""
    backups = sorted(
        (p for p in log_dir.glob("dbt.log.[0-9]*") if p.name.rsplit(".", 1)[-1].isdigit()),
        key=lambda p: -int(p.name.rsplit(".", 1)[-1]),
    )
    return [p for p in [*backups, log_dir / "dbt.log"] if p.is_file()]


def log_sections(log_dir: Path) -> list[dict[str, float]]:
    """:func:`dbt_log_invocations` over ``dbt.log`` and its rotated backups, in the order
    dbt wrote them (backups dbt has already deleted are lost)."""
    lines: list[str] = []
    for part in log_files(log_dir):
        lines += part.read_text(encoding="utf-8", errors="replace").splitlines()
    return _sections(lines)


def _sections(lines: Sequence[str]) -> list[dict[str, float]]:
    sections: list[dict[str, float]] = []
    for line in lines:
        if line.startswith("====") and " | " in line:
            sections.append({})
            continue
        if not sections or len(line) < 16 or line[2] != ":":
            continue
        for marker, needle in _DBT_MARKERS.items():
            if marker not in sections[-1] and needle in line:
                stamp = _seconds_of_day(line[:15])
                if stamp is not None:
                    sections[-1][marker] = stamp
    return sections


def _wall_to_seconds_of_day(wall: float) -> float:
    moment = _dt.datetime.fromtimestamp(wall)
    return moment.hour * 3600 + moment.minute * 60 + moment.second + moment.microsecond / 1e6


def dbt_split(markers: dict[str, float], spawned: float, exited: float) -> dict[str, float | None]:
    """An invocation's wall time split into segments (seconds; None where a marker is missing).

    startup: process spawn to "Registered adapter" (interpreter, imports, flags, project
    and profile); parse: to the first "Wrote artifact WritableManifest" (full parse, or
    loading and checking ``partial_parse.msgpack``, then writing manifest.json and
    partial_parse.msgpack); select: to "Concurrency" for a build (reading --state,
    state:modified selection, deferral, graph), for ``ls`` everything up to the end;
    execute: the nodes; write_artifacts: manifest and run_results after the run; exit:
    the end line to the process exit (usage-event flush, interpreter shutdown).
    ``spawned`` and ``exited`` are unix seconds.
    """
    start = _wall_to_seconds_of_day(spawned)
    stop = _wall_to_seconds_of_day(exited)
    if stop < start:  # past midnight
        stop += 86400
    points = {k: (v + 86400 if v < start - 3600 else v) for k, v in markers.items()}
    chain = [("startup", "adapter"), ("parse", "manifest_written")]
    if "concurrency" in points:
        chain += [("select", "concurrency"), ("execute", "finished"), ("write_artifacts", "end")]
    else:
        chain += [("select", "end")]
    out: dict[str, float | None] = {k: None for k in DBT_SEGMENTS}
    previous = start
    for segment, marker in chain:
        if marker not in points:
            return out | {"total": exited - spawned}
        if segment == "parse" and "concurrency" in points and points[marker] > points["concurrency"]:
            # A build in the product's dbt session reuses the session's parse: the only
            # manifest it writes is the one after the run.
            out[segment] = 0.0
            continue
        out[segment] = max(points[marker] - previous, 0.0)
        previous = points[marker]
    out["exit"] = max(stop - previous, 0.0)
    out["total"] = exited - spawned
    return out


def median_split(splits: Sequence[dict[str, float | None] | None]) -> dict[str, float | None] | None:
    """Median of each segment over runs (None when no run had it)."""
    present = [x for x in splits if x]
    if not present:
        return None
    out: dict[str, float | None] = {}
    for key in (*DBT_SEGMENTS, "total"):
        values = [x[key] for x in present if x.get(key) is not None]
        out[key] = round(statistics.median(values), 3) if values else None
    return out
