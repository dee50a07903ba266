"""A cache of the production asset graph's specs, so a code-location load with a cached
manifest never imports dagster-dbt (nor, through it, dbt-core).

dagster-dbt turns a manifest into one ``multi_asset``: an ``AssetSpec`` per model, seed and
snapshot, an ``AssetCheckSpec`` per test, and a few op-level arguments. At 1,000 models
that costs ~2.5 s of a load (importing dagster-dbt and dbt-core, dbt's graph selector,
the translator), every load, for a manifest that does not change: main's head is cached
by commit. So the first time a manifest is turned into assets (the production step that
stores it, or else the first load), the resulting specs are written next to it, and a
later load rebuilds the same ``multi_asset`` with plain Dagster.

The cache is keyed by the manifest's sha256, the installed dagster, dagster-dbt and
dbt-core versions, our translator's version and source, and this file's format: anything
that could change the specs makes a new key. Values are written with Dagster's serdes
(metadata, table schemas, automation conditions) in one file, atomically. A value
dagster-dbt attaches that cannot be serialised (its manifest wrapper and the translator
object) is cached as the text Dagster's own snapshot shows for it, so the repository a
code server sends is the same either way. A spec the cache cannot represent exactly
(partitions, partition mappings, freshness policies, a value that does not survive the
round trip) writes no cache: those loads keep using dagster-dbt. Reading never fails a
load: a missing, stale, partial or unreadable file means dagster-dbt builds the graph.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
import uuid
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg

from defer_orchestration import constants as c

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
# Bump when ProdDbtTranslator (dbt_translator.py) changes what it returns. Its source and
# that of the helper it calls are part of the key as well, so a forgotten bump costs a
# cache miss, never a stale graph.
TRANSLATOR_VERSION = 1
_TRANSLATOR_SOURCES = (
    Path(__file__).with_name("dbt_translator.py"),
    Path(__file__).resolve().parents[2] / "dbt" / "artifacts.py",  # relation_address
)
_SUFFIX = ".dagster-specs"  # <manifest name>.dagster-specs-<key>.json, next to the manifest
_PACKAGES = ("dagster", "dagster-dbt", "dbt-core")
# Metadata value types serdes writes as they are (what dagster-dbt's specs carry besides primitives).
_SERDES_TYPES = (dg.MetadataValue, dg.TableSchema, dg.AssetKey, dg.TableColumnLineage)


class NotCacheable(Exception):
    """The definition holds something the cache cannot reproduce exactly."""


@dataclass(frozen=True)
class CachedAssets:
    """What ``multi_asset`` needs to rebuild dagster-dbt's definition, besides the compute
    function and the pool (the caller's)."""

    specs: list[dg.AssetSpec]
    check_specs: list[dg.AssetCheckSpec]
    op_name: str
    op_tags: dict[str, Any]
    can_subset: bool
    output_keys: dict[str, dg.AssetKey]  # output name -> asset key, checked after the rebuild


# Key and location ----------------------------------------------------------------------------


def _version(package: str) -> str:
    """An installed distribution's version from its metadata (no import of the package)."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def cache_key(manifest_path: Path) -> str:
    """sha256 over everything that decides the specs: the manifest's bytes, the versions
    of the libraries that turn it into specs, our translator and this format."""
    digest = hashlib.sha256()
    with open(manifest_path, "rb") as manifest:
        digest.update(hashlib.file_digest(manifest, "sha256").digest())
    parts = [f"format={CACHE_FORMAT}", f"translator={TRANSLATOR_VERSION}", f"group={c.PROD_DBT_GROUP}"]
    parts += [f"{package}={_version(package)}" for package in _PACKAGES]
    parts += [f"{source.name}={hashlib.sha256(source.read_bytes()).hexdigest()}" for source in _TRANSLATOR_SOURCES]
    digest.update("\n".join(parts).encode())
    return digest.hexdigest()


def cache_path(manifest_path: Path, key: str) -> Path:
    """The cache file of ``manifest_path`` under ``key``: next to the manifest, so it lives
    and goes with it (the state cache keeps one manifest per commit)."""
    return manifest_path.with_name(f"{manifest_path.name}{_SUFFIX}-{key[:32]}.json")


# Encoding ---------------------------------------------------------------------------------------


def _placeholder(value: Any) -> dg.MetadataValue:
    """What Dagster's snapshot shows for a metadata value it cannot serialise."""
    return dg.MetadataValue.text(f"[{value.__class__.__name__}] (unserializable)")


def _encodable(value: Any) -> Any:
    """``value`` itself when serdes writes it (primitives, JSON-like lists and dicts, table
    schemas, metadata values: the write checks the round trip), a path as Dagster
    normalises it, anything else as Dagster's placeholder text.

    Decided by type: handing an unknown object to serdes to see whether it fails costs
    time in proportion to the object, and dagster-dbt's manifest wrapper on every spec is
    the whole manifest (minutes at 1,000 models)."""
    if value is None or isinstance(value, (str, int, float, bool, list, dict, *_SERDES_TYPES)):
        return value
    if isinstance(value, os.PathLike):
        return dg.MetadataValue.path(value)
    return _placeholder(value)


def _metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    return {str(key): _encodable(value) for key, value in metadata.items()}


def _pairs(mapping: Mapping[str, Any]) -> list[list[Any]]:
    """A mapping as ``[key, value]`` pairs: serdes writes a dict's keys sorted, and the
    rebuilt definition keeps dagster-dbt's order."""
    return [[key, value] for key, value in mapping.items()]


def _deps(deps: Iterable[dg.AssetDep]) -> list[dict[str, Any]]:
    out = []
    for dep in deps:
        if dep.partition_mapping is not None:
            raise NotCacheable(f"a partition mapping on the dependency on {dep.asset_key.to_user_string()}")
        out.append({"key": dep.asset_key, "metadata": _pairs(_metadata(dep.metadata or {}))})
    return out


def _encode_spec(spec: dg.AssetSpec) -> dict[str, Any]:
    for field in ("partitions_def", "freshness_policy", "legacy_freshness_policy"):
        if getattr(spec, field, None) is not None:
            raise NotCacheable(f"{field} on {spec.key.to_user_string()}")
    return {
        "key": spec.key, "deps": _deps(spec.deps), "description": spec.description,
        "metadata": _pairs(_metadata(spec.metadata)), "group_name": spec.group_name, "skippable": spec.skippable,
        "code_version": spec.code_version, "automation_condition": spec.automation_condition,
        "owners": list(spec.owners), "tags": _pairs(spec.tags), "is_virtual": spec.is_virtual,
    }


def _encode_check(spec: dg.AssetCheckSpec) -> dict[str, Any]:
    if spec.partitions_def is not None:
        raise NotCacheable(f"partitions_def on check {spec.name}")
    return {
        "name": spec.name, "asset_key": spec.asset_key, "description": spec.description,
        "additional_deps": _deps(spec.additional_deps), "blocking": spec.blocking,
        "metadata": _pairs(_metadata(spec.metadata or {})), "automation_condition": spec.automation_condition,
    }


def encode(assets_def: dg.AssetsDefinition, key: str) -> str:
    """The cache file's text for dagster-dbt's ``assets_def``; :class:`NotCacheable` when it
    holds what a plain ``multi_asset`` call from the cache would not reproduce."""
    op = assets_def.op
    if assets_def.partitions_def is not None or assets_def.backfill_policy is not None or op.retry_policy is not None:
        raise NotCacheable("partitions, a backfill policy or a retry policy on the op")
    payload: Any = {
        "format": CACHE_FORMAT, "key": key,
        "op": {"name": op.name, "tags": _pairs(op.tags), "can_subset": assets_def.can_subset},
        "specs": [_encode_spec(spec) for spec in assets_def.specs],
        "checks": [_encode_check(spec) for spec in assets_def.check_specs],
        "outputs": _pairs(assets_def.keys_by_output_name),
    }
    return dg.serialize_value(payload)


# Decoding ---------------------------------------------------------------------------------------


def _decode_deps(deps: list[dict[str, Any]]) -> list[dg.AssetDep]:
    return [dg.AssetDep(dep["key"], metadata=dict(dep["metadata"])) for dep in deps]


def _decode_spec(raw: Mapping[str, Any]) -> dg.AssetSpec:
    # `tags` already carries the kinds (dagster/kind/...): passing them again as kinds would
    # add nothing.
    return dg.AssetSpec(
        key=raw["key"], deps=_decode_deps(raw["deps"]), description=raw["description"],
        metadata=dict(raw["metadata"]), group_name=raw["group_name"], skippable=raw["skippable"],
        code_version=raw["code_version"], automation_condition=raw["automation_condition"],
        owners=raw["owners"], tags=dict(raw["tags"]), is_virtual=raw["is_virtual"],
    )


def _decode_check(raw: Mapping[str, Any]) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        name=raw["name"], asset=raw["asset_key"], description=raw["description"],
        additional_deps=_decode_deps(raw["additional_deps"]), blocking=raw["blocking"],
        metadata=dict(raw["metadata"]), automation_condition=raw["automation_condition"],
    )


def decode(text: str, key: str) -> CachedAssets:
    """The cached parts from a cache file's text; ValueError when it is not a whole cache
    of this format and key."""
    payload = dg.deserialize_value(text)
    if not isinstance(payload, dict) or payload.get("format") != CACHE_FORMAT or payload.get("key") != key:
        raise ValueError("not a spec cache of this format and key")
    op = payload["op"]
    return CachedAssets(
        specs=[_decode_spec(raw) for raw in payload["specs"]],
        check_specs=[_decode_check(raw) for raw in payload["checks"]],
        op_name=op["name"], op_tags=dict(op["tags"]), can_subset=op["can_subset"], output_keys=dict(payload["outputs"]),
    )


# Comparison (the write's own check; tests use it too) ------------------------------------------


def spec_signature(spec: dg.AssetSpec | dg.AssetCheckSpec) -> tuple[Any, ...]:
    """Every field of a spec, metadata as the cache keeps it (unserialisable values as
    Dagster's placeholder text): equal for dagster-dbt's spec and its cached copy. Deps
    are compared as a set: dagster-dbt lists them in the iteration order of a set of
    strings, which differs between processes (hash randomisation), so a cache written by
    another process lists the same deps in another order."""
    def deps(items: Iterable[dg.AssetDep]) -> tuple[Any, ...]:
        return tuple(sorted(
            ((d.asset_key, d.partition_mapping, tuple(sorted(_metadata(d.metadata or {}).items()))) for d in items),
            key=repr,
        ))

    if isinstance(spec, dg.AssetCheckSpec):
        return (
            spec.name, spec.asset_key, spec.description, deps(spec.additional_deps), spec.blocking,
            tuple(sorted(_metadata(spec.metadata or {}).items())), spec.automation_condition, spec.partitions_def,
        )
    return (
        spec.key, deps(spec.deps), spec.description, tuple(sorted(_metadata(spec.metadata).items())),
        spec.group_name, spec.skippable, spec.code_version, spec.automation_condition, tuple(spec.owners),
        tuple(sorted(spec.tags.items())), spec.partitions_def, spec.is_virtual,
        getattr(spec, "freshness_policy", None), getattr(spec, "legacy_freshness_policy", None),
    )


def definition_signature(assets_def: dg.AssetsDefinition) -> dict[str, Any]:
    """What the cache promises to reproduce of a definition, comparable with ``==``."""
    op = assets_def.op
    return {
        "specs": sorted((spec_signature(s) for s in assets_def.specs), key=repr),
        "checks": sorted((spec_signature(s) for s in assets_def.check_specs), key=repr),
        "op": (op.name, dict(op.tags), op.pool, assets_def.can_subset, op.retry_policy, op.description),
        "outputs": dict(assets_def.keys_by_output_name),
        "check_outputs": {name: spec.key for name, spec in assets_def.check_specs_by_output_name.items()},
        "deps": {key: frozenset(deps) for key, deps in assets_def.asset_deps.items()},
        "resources": frozenset(assets_def.required_resource_keys),
        "partitions": (assets_def.partitions_def, assets_def.backfill_policy),
    }


def _same_specs(cached: CachedAssets, assets_def: dg.AssetsDefinition) -> bool:
    return (
        sorted(map(spec_signature, cached.specs), key=repr) == sorted(map(spec_signature, assets_def.specs), key=repr)
        and sorted(map(spec_signature, cached.check_specs), key=repr)
        == sorted(map(spec_signature, assets_def.check_specs), key=repr)
        and cached.output_keys == dict(assets_def.keys_by_output_name)
    )


# Reading and writing ------------------------------------------------------------------------------


def read(manifest_path: Path) -> CachedAssets | None:
    """The cached parts for ``manifest_path``, or None (no cache for this manifest and these
    versions, or an unreadable one: the caller builds with dagster-dbt)."""
    try:
        key = cache_key(manifest_path)
        path = cache_path(manifest_path, key)
        if not path.is_file():
            log.debug("no spec cache for %s", manifest_path)
            return None
        return decode(path.read_text(encoding="utf-8"), key)
    except Exception as exc:  # a cache never fails a load: dagster-dbt builds the graph instead
        log.debug("spec cache of %s unusable (%r): building with dagster-dbt", manifest_path, exc)
        return None


def existing(manifest_path: Path) -> Path | None:
    """The cache file of ``manifest_path`` when there is one for the current key."""
    try:
        path = cache_path(manifest_path, cache_key(manifest_path))
    except OSError:
        return None
    return path if path.is_file() else None


def write(manifest_path: Path, assets_def: dg.AssetsDefinition) -> Path | None:
    """Cache dagster-dbt's ``assets_def`` of ``manifest_path`` next to it; the file, or None
    when the definition is not cacheable or the file could not be written (logged; the
    next load then uses dagster-dbt again). Written only when reading it back gives the
    same specs, and atomically (a temporary file renamed into place)."""
    try:
        key = cache_key(manifest_path)
        text = encode(assets_def, key)
        if not _same_specs(decode(text, key), assets_def):
            raise NotCacheable("a spec does not survive the round trip through the cache")
        path = cache_path(manifest_path, key)
        temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            temporary.write_text(text, encoding="utf-8")
            os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)
    except NotCacheable as exc:
        log.info("production asset graph of %s not cached: %s", manifest_path, exc)
        return None
    except Exception as exc:  # a read-only directory, a full disk: the load stands regardless
        log.warning("could not write the spec cache of %s: %r", manifest_path, exc)
        return None
    _remove_stale(manifest_path, keep=path)
    return path


def _remove_stale(manifest_path: Path, keep: Path) -> None:
    """Other keys' caches of the same manifest file (a project parsed in place, a new
    dagster-dbt): never read again."""
    for stale in manifest_path.parent.glob(f"{manifest_path.name}{_SUFFIX}-*.json"):
        if stale != keep:
            stale.unlink(missing_ok=True)


# Dagster's public warning classes, silenced around the rebuild as dagster-dbt silences
# them around its own multi_asset call (beta arguments such as pool, superseded ones).
_DAGSTER_WARNINGS: tuple[type[Warning], ...] = (
    dg.BetaWarning, dg.PreviewWarning, dg.SupersessionWarning, DeprecationWarning,
)


def build(cached: CachedAssets, compute: Callable[..., Any], *, pool: str) -> dg.AssetsDefinition | None:
    """The ``multi_asset`` dagster-dbt's ``@dbt_assets`` makes, from the cache: the same
    specs, check specs and op arguments (``dagster_dbt/asset_decorator.py``). None when
    Dagster names the outputs differently from the cached definition (a graph is never
    served wrong: the caller builds with dagster-dbt)."""
    try:
        with warnings.catch_warnings():
            for category in _DAGSTER_WARNINGS:
                warnings.simplefilter("ignore", category=category)
            assets_def = dg.multi_asset(
                name=cached.op_name, specs=cached.specs, check_specs=cached.check_specs,
                can_subset=cached.can_subset, op_tags=cached.op_tags, pool=pool, allow_arbitrary_check_specs=True,
            )(compute)
    except Exception as exc:  # a cache Dagster refuses (edited by hand, say): dagster-dbt decides
        log.debug("spec cache refused by multi_asset (%r): building with dagster-dbt", exc)
        return None
    if dict(assets_def.keys_by_output_name) != cached.output_keys:
        log.debug("spec cache's outputs differ from the rebuilt definition's: building with dagster-dbt")
        return None
    return assets_def
