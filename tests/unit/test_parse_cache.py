"""A branch's cached dbt parse: seeded only into a checkout at the path it was made for."""

from __future__ import annotations

from pathlib import Path

from defer_orchestration.dbt import parse_cache


def _parsed(target: Path, content: bytes) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    (target / parse_cache.PARSE_FILE).write_bytes(content)
    return target


def test_a_kept_parse_seeds_the_next_run_at_the_same_path(tmp_path: Path) -> None:
    cache = parse_cache.cache_dir(tmp_path / "home", "br_feature")
    project = tmp_path / "worktrees" / "br_feature--checkout" / "dbt_project"
    assert parse_cache.keep(_parsed(tmp_path / "run1", b"parse-1"), cache, project)
    target = tmp_path / "run2" / "target"
    assert parse_cache.seed(cache, target, project)
    assert (target / parse_cache.PARSE_FILE).read_bytes() == b"parse-1"
    # A later run replaces it; no staging files stay behind.
    assert parse_cache.keep(_parsed(tmp_path / "run3", b"parse-3"), cache, project)
    assert sorted(p.name for p in cache.iterdir()) == [parse_cache.PARSE_FILE, parse_cache.PROJECT_FILE]
    assert (cache / parse_cache.PARSE_FILE).read_bytes() == b"parse-3"


def test_a_parse_made_elsewhere_is_not_seeded(tmp_path: Path) -> None:
    # dbt keeps unchanged nodes' absolute root_path: a parse from another checkout would
    # make a seed read its CSV from a directory that no longer exists.
    cache = parse_cache.cache_dir(tmp_path / "home", "br_feature")
    parse_cache.keep(_parsed(tmp_path / "run1", b"p"), cache, tmp_path / "old-checkout")
    target = tmp_path / "run2"
    assert not parse_cache.seed(cache, target, tmp_path / "new-checkout")
    assert not (target / parse_cache.PARSE_FILE).exists()


def test_nothing_to_keep_or_seed(tmp_path: Path) -> None:
    cache = parse_cache.cache_dir(tmp_path / "home", "br_x")
    assert not parse_cache.seed(cache, tmp_path / "t", tmp_path / "p")
    assert not parse_cache.keep(tmp_path / "empty-target", cache, tmp_path / "p")
    assert not cache.exists()


def test_an_unwritable_cache_fails_nothing(tmp_path: Path) -> None:
    blocker = tmp_path / "home"
    blocker.write_text("a file where the cache directory would go")
    cache = parse_cache.cache_dir(blocker, "br_x")
    assert not parse_cache.keep(_parsed(tmp_path / "run", b"p"), cache, tmp_path / "p")


def test_drop_removes_a_branch_cache(tmp_path: Path) -> None:
    cache = parse_cache.cache_dir(tmp_path / "home", "br_x")
    parse_cache.keep(_parsed(tmp_path / "run", b"p"), cache, tmp_path / "p")
    assert parse_cache.drop(cache)
    assert not cache.exists()
    assert not parse_cache.drop(cache)


def test_outcome_reads_dbts_verdict() -> None:
    assert parse_cache.outcome(False, "") == "none"
    assert parse_cache.outcome(True, "12:00:00  Found 20 models") == "reused"
    output = "12:00:00  Unable to do partial parsing because profile has changed\n12:00:01  Found"
    assert parse_cache.outcome(True, output) == "rejected: profile has changed"


# --- the parse template ---------------------------------------------------------------


def test_substitute_replaces_in_every_string_and_key_and_keeps_shapes() -> None:
    token = parse_cache.template_token()
    value = {
        "nodes": {f"x.{token}": {"schema": token, "relation_name": f'"db_{token}"."{token}_marts"."t"'}},
        "list": [token, 3, None, (f"/w/{token}--checkout", 1.5)],
        "untouched": "prod",
    }
    got = parse_cache.substitute(value, token, "br_feature_abc")
    assert got == {
        "nodes": {"x.br_feature_abc": {"schema": "br_feature_abc", "relation_name": '"db_br_feature_abc"."br_feature_abc_marts"."t"'}},
        "list": ["br_feature_abc", 3, None, ("/w/br_feature_abc--checkout", 1.5)],
        "untouched": "prod",
    }


def test_a_transformed_placeholder_is_seen_in_the_raw_parse() -> None:
    import msgpack

    token, marker = parse_cache.template_token(), parse_cache.template_marker()
    assert marker in token
    embedded = msgpack.packb({"schema": token, "alias": f"{token}_named", "files": [f"/w/{token}--checkout"]})
    assert not parse_cache.transformed(embedded, token)
    assert parse_cache.transformed(msgpack.packb({"alias": token.upper()}), token)
    assert parse_cache.transformed(msgpack.packb({"schema": token, "hash_only": marker}), token)


def test_substituting_while_decoding_equals_substituting_after() -> None:
    import msgpack

    token = parse_cache.template_token()
    value = {"a": [token, {f"k_{token}": [1, f"x{token}y", None]}], "b": {"c": "prod"}, token: 2.5}
    data = msgpack.packb(value)
    got = parse_cache.unpack_substituted(data, token, "br_new_0123456789", None)
    assert got == parse_cache.substitute(msgpack.unpackb(data, raw=False), token, "br_new_0123456789")
    assert got[token.replace(token, "br_new_0123456789")] == 2.5


def test_a_template_serves_a_run_checked_out_at_its_own_stable_path(tmp_path: Path) -> None:
    token = parse_cache.template_token()
    made_at = tmp_path / "worktrees" / f"{token}--checkout" / "dbt_project"
    assert parse_cache.keep_template(_parsed(tmp_path / "run", b"t"), tmp_path, project_dir=made_at, token=token, sha="a" * 40)
    assert parse_cache.template_meta(tmp_path) == {"token": token, "sha": "a" * 40}
    schema = "br_feature_abc_0123456789"
    mine = tmp_path / "worktrees" / f"{schema}--checkout" / "dbt_project"
    template = parse_cache.template_for(tmp_path, schema, mine)
    assert template == {
        "path": str(parse_cache.template_dir(tmp_path) / parse_cache.PARSE_FILE), "token": token,
        "schema": schema, "sha": "a" * 40,
    }
    # A run at another path (a concurrent run of the same branch) gets none.
    assert parse_cache.template_for(tmp_path, schema, tmp_path / "elsewhere" / "dbt_project") is None
    # Nor without a template.
    parse_cache.drop(parse_cache.template_dir(tmp_path))
    assert parse_cache.template_for(tmp_path, schema, mine) is None
    assert parse_cache.template_meta(tmp_path) == {}


def test_outcome_reads_the_templates_verdict() -> None:
    line = parse_cache.TEMPLATE_LINE
    assert parse_cache.outcome(False, f"{line}template abc: used\n  Found 20 models") == "template abc: reused"
    rejected = f"{line}template abc: rejected: vars changed\n"
    assert parse_cache.outcome(False, rejected) == "template abc: rejected: vars changed"
    # dbt accepted it, then chose a full parse on its own (a changed schema macro).
    later = f"{line}template abc: used\nUnable to do partial parsing because change detected to override macro. Starting"
    assert parse_cache.outcome(False, later) == "template abc: rejected: change detected to override macro. Starting"
