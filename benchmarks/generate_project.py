"""Generate a synthetic dbt project of N models for slim-CI benchmarks.

The project needs no raw data: the base layer creates its own rows in DuckDB from
``range(bench_rows)`` with hash-derived (deterministic) values, so ``dbt build`` works
against any empty DuckDB file. Every model has the same six columns
(``id, fk, category, event_date, amount, score``) and ``id`` is ``0 .. rows-1`` in every
model, so joins on ``id`` are 1:1, ``unique``/``not_null`` on ``id`` always pass,
``relationships`` from ``fk`` to any model's ``id`` pass, and ``category`` is one of A-E.

Layers (share of N): base 10% (tables) -> staging 25% (views) -> intermediate 30%
(views, ~25% tables) -> core 20% (tables, including one or two hubs) -> marts 15%
(tables, never referenced). Fan-in is 1-4 parents, heavy-tailed towards 1, and parents
are drawn with Zipf-like popularity so that some upstream models are used widely. The
first core model(s) are hubs that a fixed share of later core models and marts depend
on. Output depends only on the arguments (``random.Random(seed)``): the same arguments
give byte-identical files.

Longer than the other benchmark modules on purpose: it does one job (plan the DAG, render
its SQL and YAML, write the project) whose parts share the plan's private types, and
nothing else imports them.

Usage::

    python -m benchmarks.generate_project --models 1000 --out /tmp/bench1000 \\
        [--seed 0] [--rows 2000]
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import random
import shutil
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

GENERATOR_VERSION = 1
METADATA_FILE = "bench_project.json"

LAYERS: tuple[str, ...] = ("base", "staging", "intermediate", "core", "marts")
LAYER_FRACTIONS: tuple[float, ...] = (0.10, 0.25, 0.30, 0.20, 0.15)
PREFIXES = {
    "base": "base", "staging": "stg", "intermediate": "int", "core": "core", "marts": "mart",
}
MIN_MODELS = len(LAYERS)
MAX_MODELS_PER_DIR = 200

# Fan-in (number of parents) 1, 2, 3, 4: heavy-tailed towards one parent.
FAN_IN_WEIGHTS = (0.50, 0.28, 0.14, 0.08)
STAGING_FAN_IN_WEIGHTS = (0.85, 0.15)
MAX_FAN_IN = 4
# Share of later core models + marts that reference hub 1 / hub 2 directly.
HUB_CHILD_SHARES = (0.35, 0.20)
HUB_MIN_CORE = 10  # a second hub only when core has at least this many models
INTERMEDIATE_TABLE_SHARE = 0.25
ZIPF_EXPONENT = 0.7
CATEGORIES = ("A", "B", "C", "D", "E")
CHANGE_MARKER = "-- bench change"


@dataclass(frozen=True)
class GeneratedProject:
    """A generated project on disk and what the benchmarks need to know about it."""

    path: Path
    models: tuple[str, ...]
    layers: dict[str, tuple[str, ...]]
    hubs: tuple[str, ...]
    leaf_model: str
    mid_model: str
    hub_model: str
    parents: dict[str, tuple[str, ...]] = field(default_factory=dict, repr=False)
    sql_paths: dict[str, Path] = field(default_factory=dict, repr=False)  # relative to path

    def sql_path(self, model: str) -> Path:
        """Absolute path of ``model``'s SQL file."""
        try:
            return self.path / self.sql_paths[model]
        except KeyError:
            raise KeyError(f"{model!r} is not a model of the project at {self.path}") from None

    def change_model(self, model: str) -> Path:
        """Edit ``model``'s SQL in place so its checksum changes; return the file.

        Appends a numbered SQL comment line (``-- bench change k``). dbt's model checksum
        is the sha256 of the raw file contents, so this makes the model
        ``state:modified`` while leaving the compiled query and its data unchanged. The
        line ends with a newline so it can never swallow SQL that an adapter wraps
        around the model. Calling it again appends another line (a new checksum again).
        """
        path = self.sql_path(model)
        text = path.read_text(encoding="utf-8")
        count = sum(1 for line in text.splitlines() if line.startswith(CHANGE_MARKER))
        if not text.endswith("\n"):
            text += "\n"
        path.write_text(f"{text}{CHANGE_MARKER} {count + 1}\n", encoding="utf-8")
        return path

    def children(self) -> dict[str, tuple[str, ...]]:
        """Model -> the models that ``ref`` it directly."""
        kids: dict[str, list[str]] = {m: [] for m in self.models}
        for model in self.models:
            for parent in self.parents.get(model, ()):
                kids[parent].append(model)
        return {m: tuple(v) for m, v in kids.items()}

    def descendants(self, model: str) -> frozenset[str]:
        """Every model downstream of ``model`` (not including it)."""
        kids = self.children()
        seen: set[str] = set()
        queue = deque(kids[model])
        while queue:
            node = queue.popleft()
            if node not in seen:
                seen.add(node)
                queue.extend(kids[node])
        return frozenset(seen)

    @classmethod
    def load(cls, path: Path | str) -> "GeneratedProject":
        """Re-read a project written by :func:`generate_project` from its metadata file."""
        path = Path(path)
        meta = json.loads((path / METADATA_FILE).read_text(encoding="utf-8"))
        return cls(
            path=path,
            models=tuple(meta["models"]),
            layers={k: tuple(v) for k, v in meta["layers"].items()},
            hubs=tuple(meta["hubs"]),
            leaf_model=meta["leaf_model"],
            mid_model=meta["mid_model"],
            hub_model=meta["hub_model"],
            parents={k: tuple(v) for k, v in meta["parents"].items()},
            sql_paths={k: Path(v) for k, v in meta["sql_paths"].items()},
        )


@dataclass
class _Model:
    name: str
    layer: str
    directory: str  # relative to the project root, posix
    materialized: str
    parents: list[str] = field(default_factory=list)
    params: dict = field(default_factory=dict)
    tests: list[tuple[str, str, dict]] = field(default_factory=list)  # (column, test, args)


class _Pool:
    """Candidates drawn with Zipf-like popularity over a seeded random ranking."""

    def __init__(self, names: list[str], rng: random.Random, exponent: float = ZIPF_EXPONENT):
        self.names = list(names)
        rng.shuffle(self.names)
        total = 0.0
        self.cum: list[float] = []
        for rank in range(len(self.names)):
            total += 1.0 / (rank + 1) ** exponent
            self.cum.append(total)

    def __bool__(self) -> bool:
        return bool(self.names)

    def draw(self, rng: random.Random) -> str:
        x = rng.random() * self.cum[-1]
        return self.names[min(bisect.bisect_right(self.cum, x), len(self.names) - 1)]


def _layer_counts(n_models: int) -> dict[str, int]:
    """Split N over the layers (largest remainder), at least one model per layer."""
    raw = [n_models * f for f in LAYER_FRACTIONS]
    counts = [max(1, math.floor(r)) for r in raw]
    order = sorted(range(len(LAYERS)), key=lambda i: (-(raw[i] - math.floor(raw[i])), i))
    i = 0
    while sum(counts) < n_models:
        counts[order[i % len(order)]] += 1
        i += 1
    while sum(counts) > n_models:  # only possible for tiny N after the max(1, ...)
        j = max(range(len(LAYERS)), key=lambda k: (counts[k], -k))
        counts[j] -= 1
    return dict(zip(LAYERS, counts))


def _fan_in(rng: random.Random, weights: tuple[float, ...] = FAN_IN_WEIGHTS) -> int:
    return rng.choices(range(1, len(weights) + 1), weights=weights)[0]


def _add(parents: list[str], name: str) -> None:
    if name not in parents:
        parents.append(name)


def _plan(n_models: int, seed: int) -> tuple[dict[str, list[_Model]], tuple[str, ...]]:
    """Decide names, directories, materializations, parents and tests."""
    rng = random.Random(seed)
    counts = _layer_counts(n_models)
    width = max(4, len(str(n_models)))
    n_hubs = 2 if counts["core"] >= HUB_MIN_CORE else 1

    layers: dict[str, list[_Model]] = {}
    for layer in LAYERS:
        names = []
        prefix = PREFIXES[layer]
        if layer == "core":
            names = [f"core_hub_{h + 1}" for h in range(n_hubs)]
        names += [f"{prefix}_{i + 1:0{width}d}" for i in range(counts[layer] - len(names))]
        models = []
        for idx, name in enumerate(names):
            chunk = idx // MAX_MODELS_PER_DIR
            directory = f"models/{layer}/{layer}_{chunk:03d}"
            materialized = "view" if layer == "staging" else "table"
            if layer == "intermediate":
                materialized = "table" if rng.random() < INTERMEDIATE_TABLE_SHARE else "view"
            models.append(_Model(name, layer, directory, materialized))
        layers[layer] = models
    hubs = tuple(m.name for m in layers["core"][:n_hubs])
    core_rest = layers["core"][n_hubs:]

    base_pool = _Pool([m.name for m in layers["base"]], rng, exponent=0.0)
    stg_pool = _Pool([m.name for m in layers["staging"]], rng)
    int_pool = _Pool([m.name for m in layers["intermediate"]], rng)
    core_pool = _Pool([m.name for m in core_rest], rng)

    for model in layers["staging"]:
        for _ in range(_fan_in(rng, STAGING_FAN_IN_WEIGHTS)):
            _add(model.parents, base_pool.draw(rng))

    int_tables: list[str] = []
    for model in layers["intermediate"]:
        for slot in range(_fan_in(rng)):
            if slot > 0 and int_tables and rng.random() < 0.25:
                _add(model.parents, rng.choice(int_tables))
            else:
                _add(model.parents, stg_pool.draw(rng))
        if model.materialized == "table":
            int_tables.append(model.name)

    # Hubs: several intermediate parents; a fixed share of later models reference them.
    for hub in layers["core"][:n_hubs]:
        for _ in range(rng.choice((3, 4))):
            _add(hub.parents, int_pool.draw(rng))
    eligible = [m.name for m in core_rest] + [m.name for m in layers["marts"]]
    hub_children: dict[str, set[str]] = {}
    for h, hub in enumerate(hubs):
        k = min(len(eligible), max(3, round(HUB_CHILD_SHARES[h] * len(eligible))))
        hub_children[hub] = set(rng.sample(eligible, k))

    def hub_parents(name: str) -> list[str]:
        return [hub for hub in hubs if name in hub_children[hub]]

    earlier_core: list[str] = []
    for model in core_rest:
        hp = hub_parents(model.name)
        for slot in range(max(1, _fan_in(rng) - len(hp))):
            r = rng.random()
            if slot > 0 and earlier_core and r < 0.2:
                _add(model.parents, rng.choice(earlier_core))
            elif slot > 0 and r < 0.3:
                _add(model.parents, stg_pool.draw(rng))
            else:
                _add(model.parents, int_pool.draw(rng))
        for hub in hp:
            _add(model.parents, hub)
        earlier_core.append(model.name)

    for model in layers["marts"]:
        hp = hub_parents(model.name)
        for slot in range(max(1, _fan_in(rng) - len(hp))):
            if core_pool and (slot == 0 or rng.random() >= 0.25):
                _add(model.parents, core_pool.draw(rng))
            else:
                _add(model.parents, int_pool.draw(rng))
        for hub in hp:
            _add(model.parents, hub)

    # Every base/staging/intermediate model is used by something in the next layer.
    used = {p for ms in layers.values() for m in ms for p in m.parents}
    for layer, consumer_layer in (("base", "staging"), ("staging", "intermediate"),
                                  ("intermediate", "core")):
        consumers = layers[consumer_layer]
        for model in layers[layer]:
            if model.name in used:
                continue
            roomy = [c for c in consumers if len(c.parents) < MAX_FAN_IN]
            target = rng.choice(roomy or consumers)
            target.parents.insert(len(target.parents) - len(hub_parents(target.name)), model.name)
            used.add(model.name)

    # Per-model SQL parameters and tests.
    for layer in LAYERS:
        for model in layers[layer]:
            if layer == "base":
                model.params = {"salts": [rng.randrange(1, 10**9) for _ in range(5)]}
            else:
                model.params = {
                    "factor": round(rng.uniform(0.9, 1.1), 3),
                    "delta": round(rng.uniform(-1.0, 1.0), 3),
                    "window": rng.randrange(1, 8),
                }
            model.tests.append(("id", "unique", {}))
            if rng.random() < 0.6:
                model.tests.append(("id", "not_null", {}))
            r = rng.random()
            if r < 0.12:
                model.tests.append(("category", "accepted_values", {"values": list(CATEGORIES)}))
            elif r < 0.22 and model.parents:
                model.tests.append(("fk", "relationships", {"to": model.parents[0], "field": "id"}))
    return layers, hubs


def _descendant_counts(order: list[str], parents: dict[str, list[str]]) -> dict[str, int]:
    """Number of descendants per model, via bitsets in reverse topological order."""
    index = {name: i for i, name in enumerate(order)}
    kids: dict[str, list[str]] = {name: [] for name in order}
    for name in order:
        for parent in parents[name]:
            kids[parent].append(name)
    below: dict[str, int] = {}
    for name in reversed(order):
        bits = 0
        for kid in kids[name]:
            bits |= (1 << index[kid]) | below[kid]
        below[name] = bits
    return {name: bits.bit_count() for name, bits in below.items()}


def _pick_mid(layers: dict[str, list[_Model]], hubs: tuple[str, ...],
              counts: dict[str, int], hub_desc: int) -> str:
    """A non-hub intermediate (else core) model with a moderate number of descendants."""
    target = max(3, hub_desc // 10)
    for layer in ("intermediate", "core", "staging", "base"):
        candidates = [m.name for m in layers[layer]
                      if m.name not in hubs and 1 <= counts[m.name] < hub_desc]
        if candidates:
            return min(candidates, key=lambda n: (abs(counts[n] - target), n))
    return min((m.name for m in layers["intermediate"]), key=lambda n: (counts[n], n))


# ---------------------------------------------------------------------------- rendering

def _render_base(model: _Model) -> str:
    s = model.params["salts"]
    return (
        f"-- {model.name}: base model (rows generated in DuckDB, no raw data needed)\n"
        "select\n"
        "    i as id,\n"
        f"    cast(hash(i + {s[0]}) % {{{{ var('bench_rows') }}}} as bigint) as fk,\n"
        f"    chr(65 + cast(hash(i + {s[1]}) % 5 as integer)) as category,\n"
        f"    date '2020-01-01' + cast(hash(i + {s[2]}) % 1461 as integer) as event_date,\n"
        f"    cast(hash(i + {s[3]}) % 100000 as double) / 100.0 as amount,\n"
        f"    cast(hash(i + {s[4]}) % 1000 as double) / 1000.0 as score\n"
        "from range({{ var('bench_rows') }}) as t(i)\n"
    )


def _render_derived(model: _Model) -> str:
    p = model.params
    n = len(model.parents)
    lines = [f"-- {model.name}: {model.layer} model ({model.materialized}, {n} parent"
             f"{'s' if n != 1 else ''})"]
    if model.layer == "intermediate" and model.materialized == "table":
        lines.append("{{ config(materialized='table') }}")
    ctes = []
    for i, parent in enumerate(model.parents):
        cols = "id, fk, category, event_date, amount, score" if i == 0 else "id, amount, score"
        ctes.append(f"p{i} as (\n    select {cols}\n    from {{{{ ref('{parent}') }}}}\n)")
    amount_terms = " + ".join(["p0.amount"] + [f"coalesce(p{i}.amount, 0)" for i in range(1, n)])
    amount_expr = (f"p0.amount * {p['factor']}" if n == 1
                   else f"({amount_terms}) * {p['factor']} / {n}")
    score_terms = ", ".join(["p0.score"] + [f"coalesce(p{i}.score, 0)" for i in range(1, n)])
    score_expr = f"greatest({score_terms})" if n > 1 else "p0.score"
    joins = "".join(f"\n    left join p{i} on p{i}.id = p0.id" for i in range(1, n))
    ctes.append(
        "joined as (\n"
        "    select\n"
        "        p0.id,\n"
        "        p0.fk,\n"
        "        p0.category,\n"
        "        p0.event_date,\n"
        f"        {amount_expr} as amount,\n"
        f"        {score_expr} as score\n"
        f"    from p0{joins}\n"
        ")"
    )
    if model.layer == "staging":
        body = (
            "select\n"
            "    id,\n"
            "    fk,\n"
            "    category,\n"
            "    event_date,\n"
            "    round(amount, 4) as amount,\n"
            "    score\n"
            "from joined\n"
        )
    else:
        ctes.append(
            "category_stats as (\n"
            "    select category, avg(amount) as avg_amount, count(*) as n_rows\n"
            "    from joined\n"
            "    group by category\n"
            ")"
        )
        body = (
            "select\n"
            "    j.id,\n"
            "    j.fk,\n"
            "    j.category,\n"
            "    j.event_date,\n"
            f"    round(0.9 * j.amount + 0.1 * s.avg_amount {'-' if p['delta'] < 0 else '+'} "
            f"{abs(p['delta'])}, 4) as amount,\n"
            "    round(avg(j.score) over (\n"
            "        partition by j.category order by j.id\n"
            f"        rows between {p['window']} preceding and current row\n"
            "    ), 6) as score\n"
            "from joined as j\n"
            "inner join category_stats as s on s.category = j.category\n"
        )
    lines.append("with " + ",\n".join(ctes))
    lines.append(body)
    return "\n".join(lines)


def _render_test(test: str, args: dict) -> list[str]:
    if not args:
        return [f"          - {test}"]
    out = [f"          - {test}:", "              arguments:"]
    for key, value in args.items():
        if key == "values":
            out.append(f"                values: [{', '.join(json.dumps(v) for v in value)}]")
        elif key == "to":
            out.append(f"                to: ref('{value}')")
        else:
            out.append(f"                {key}: {value}")
    return out


def _render_yaml(models: list[_Model]) -> str:
    lines = ["version: 2", "", "models:"]
    for model in models:
        lines.append(f"  - name: {model.name}")
        lines.append(f'    description: "{model.layer} {model.materialized}, '
                     f'{len(model.parents)} parent(s)"')
        lines.append("    columns:")
        by_column: dict[str, list[tuple[str, dict]]] = {}
        for column, test, args in model.tests:
            by_column.setdefault(column, []).append((test, args))
        for column, tests in by_column.items():
            lines.append(f"      - name: {column}")
            lines.append("        data_tests:")
            for test, args in tests:
                lines.extend(_render_test(test, args))
    return "\n".join(lines) + "\n"


def _dbt_project_yml(rows: int) -> str:
    return (
        "# Generated by benchmarks.generate_project; regenerate rather than edit.\n"
        "name: bench\n"
        'version: "1.0.0"\n'
        "config-version: 2\n"
        "profile: bench\n"
        "\n"
        'model-paths: ["models"]\n'
        "\n"
        "flags:\n"
        "  send_anonymous_usage_stats: false\n"
        "\n"
        "vars:\n"
        f"  bench_rows: {rows}\n"
        "\n"
        "models:\n"
        "  bench:\n"
        "    base:\n"
        "      +materialized: table\n"
        "    staging:\n"
        "      +materialized: view\n"
        "    intermediate:\n"
        "      +materialized: view\n"
        "    core:\n"
        "      +materialized: table\n"
        "    marts:\n"
        "      +materialized: table\n"
    )


PROFILES_YML = """\
# Generated by benchmarks.generate_project.
bench:
  target: prod
  outputs:
    prod:
      type: duckdb
      path: "{{ env_var('DBT_DUCKDB_PATH', 'bench.duckdb') }}"
      schema: prod
      threads: 2
    branch:
      type: duckdb
      path: "{{ env_var('DBT_DUCKDB_PATH', 'bench.duckdb') }}"
      schema: "{{ env_var('DBT_BENCH_BRANCH_SCHEMA', 'branch') }}"
      threads: 2
"""


def _prepare_out(out: Path) -> None:
    """Create ``out``; clear the models of an earlier generation; refuse foreign dirs."""
    if out.exists():
        if not out.is_dir():
            raise NotADirectoryError(f"{out} exists and is not a directory")
        if (out / METADATA_FILE).is_file():
            shutil.rmtree(out / "models", ignore_errors=True)
        elif any(out.iterdir()):
            raise FileExistsError(
                f"{out} is not empty and was not written by this generator "
                f"(no {METADATA_FILE}); pick an empty or new directory"
            )
    out.mkdir(parents=True, exist_ok=True)


def generate_project(
    out: Path, n_models: int, *, seed: int = 0, rows: int = 2000
) -> GeneratedProject:
    """Write a dbt project with ``n_models`` models into ``out`` and describe it.

    ``out`` must be new, empty, or a directory this function wrote before (its
    ``models/`` is then replaced; ``target/``, logs and DuckDB files are left alone).
    """
    if n_models < MIN_MODELS:
        raise ValueError(f"n_models must be at least {MIN_MODELS} (one per layer), got {n_models}")
    if rows < 1:
        raise ValueError(f"rows must be positive, got {rows}")
    out = Path(out)
    layers, hubs = _plan(n_models, seed)
    ordered = [m for layer in LAYERS for m in layers[layer]]
    parents = {m.name: m.parents for m in ordered}
    order = [m.name for m in ordered]
    counts = _descendant_counts(order, parents)
    hub_model = max(hubs, key=lambda h: (counts[h], h))
    leaf_model = layers["marts"][-1].name
    mid_model = _pick_mid(layers, hubs, counts, counts[hub_model])

    _prepare_out(out)
    (out / "dbt_project.yml").write_text(_dbt_project_yml(rows), encoding="utf-8")
    (out / "profiles.yml").write_text(PROFILES_YML, encoding="utf-8")
    sql_paths: dict[str, str] = {}
    for layer in LAYERS:
        by_dir: dict[str, list[_Model]] = {}
        for model in layers[layer]:
            by_dir.setdefault(model.directory, []).append(model)
        for directory, models in by_dir.items():
            d = out / directory
            d.mkdir(parents=True, exist_ok=True)
            for model in models:
                sql = _render_base(model) if layer == "base" else _render_derived(model)
                (d / f"{model.name}.sql").write_text(sql, encoding="utf-8")
                sql_paths[model.name] = f"{directory}/{model.name}.sql"
            yml_name = f"_{Path(directory).name}__models.yml"
            (d / yml_name).write_text(_render_yaml(models), encoding="utf-8")

    meta = {
        "generator_version": GENERATOR_VERSION,
        "n_models": n_models,
        "seed": seed,
        "rows": rows,
        "models": order,
        "layers": {layer: [m.name for m in layers[layer]] for layer in LAYERS},
        "hubs": list(hubs),
        "leaf_model": leaf_model,
        "mid_model": mid_model,
        "hub_model": hub_model,
        "descendant_counts": {
            "leaf_model": counts[leaf_model],
            "mid_model": counts[mid_model],
            "hub_model": counts[hub_model],
        },
        "parents": parents,
        "sql_paths": sql_paths,
    }
    (out / METADATA_FILE).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")

    return GeneratedProject(
        path=out,
        models=tuple(order),
        layers={layer: tuple(m.name for m in layers[layer]) for layer in LAYERS},
        hubs=hubs,
        leaf_model=leaf_model,
        mid_model=mid_model,
        hub_model=hub_model,
        parents={k: tuple(v) for k, v in parents.items()},
        sql_paths={k: Path(v) for k, v in sql_paths.items()},
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.generate_project",
        description="Generate a synthetic dbt-duckdb project for slim-CI benchmarks.",
    )
    parser.add_argument("--models", type=int, required=True, help="number of models (>= 5)")
    parser.add_argument("--out", type=Path, required=True, help="project directory to write")
    parser.add_argument("--seed", type=int, default=0, help="RNG seed (default 0)")
    parser.add_argument("--rows", type=int, default=2000,
                        help="rows per model, the dbt var bench_rows (default 2000)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        project = generate_project(args.out, args.models, seed=args.seed, rows=args.rows)
    except (ValueError, FileExistsError, NotADirectoryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - start
    meta = json.loads((project.path / METADATA_FILE).read_text(encoding="utf-8"))
    desc = meta["descendant_counts"]
    print(f"wrote {len(project.models)} models to {project.path} in {seconds:.2f}s")
    print("layers: " + ", ".join(f"{k}={len(v)}" for k, v in project.layers.items()))
    print(f"hubs: {', '.join(project.hubs)}")
    print(f"leaf_model: {project.leaf_model} ({desc['leaf_model']} descendants)")
    print(f"mid_model:  {project.mid_model} ({desc['mid_model']} descendants)")
    print(f"hub_model:  {project.hub_model} ({desc['hub_model']} descendants)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
