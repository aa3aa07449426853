"""Views: every view endpoint of the REST spec, over raw HTTP and PyIceberg.

PyIceberg 0.12 has create/load/list/exists/drop/register for views but no
replace (commit) and no rename, so those go over raw HTTP (`http` fixture).
After every answer that carries a `metadata-location`, the file is read back
from the warehouse and compared with the metadata the server answered with
(`check_view_file`).

Expectations beyond the spec's wording follow Java's `ViewMetadata.Builder`,
which the spec's view updates come from: a version identical to an existing
one (ignoring id and timestamp) is reused, a new version's id is moved past
the existing ones, `-1` means "the one added last in this commit", and a
current version may not drop a SQL dialect unless
`replace.drop-dialect.allowed` is true.
"""

from __future__ import annotations

import copy
import json
import threading
import time
import uuid
from pathlib import Path

import pytest
from pyiceberg.exceptions import NoSuchViewError, ViewAlreadyExistsError
from pyiceberg.schema import Schema
from pyiceberg.types import LongType, NestedField, StringType
from pyiceberg.view.metadata import SQLViewRepresentation, ViewMetadata, ViewRepresentation, ViewVersion

from test_config import SPEC_ENDPOINTS
from harness import (
    collect_pages,
    run_threads,
    SIMPLE_SCHEMA_JSON,
    assert_error,
    create_table_raw,
    encode_namespace,
    table_url,
    unique,
    view_url,
)

#: The endpoints a server with views advertises in /v1/config.
VIEW_ENDPOINTS = {e for e in SPEC_ENDPOINTS if "/views" in e or e.endswith("/register-view")}

#: A second schema for add-schema: the first plus one column.
WIDER_SCHEMA_JSON = {
    "type": "struct",
    "schema-id": 1,
    "fields": [*SIMPLE_SCHEMA_JSON["fields"], {"id": 14, "name": "extra", "type": "int", "required": False}],
}

SUMMARY = {"engine-name": "spark", "engine-version": "3.5.4"}


# ------------------------------------------------------------------ helpers


def sql_version(sql: str, *, dialect: str = "spark", default_ns=("default",), schema_id: int = 0,
                version_id: int = 1, more: tuple[tuple[str, str], ...] = ()) -> dict:
    """A ViewVersion in REST JSON form with one SQL representation (plus
    `more` as (sql, dialect) pairs)."""
    reps = [{"type": "sql", "sql": sql, "dialect": dialect}]
    reps += [{"type": "sql", "sql": s, "dialect": d} for s, d in more]
    return {
        "version-id": version_id,
        "timestamp-ms": int(time.time() * 1000),
        "schema-id": schema_id,
        "summary": dict(SUMMARY),
        "representations": reps,
        "default-namespace": list(default_ns),
    }


def new_ns(server, http, *parts: str) -> tuple[str, ...]:
    ns = parts or (unique(),)
    r = http.post(server.api("namespaces"), json={"namespace": list(ns)})
    assert r.status_code == 200, r.text
    return tuple(ns)


def create_view(server, http, ns, name: str, *, sql: str = "SELECT 1 AS one", properties: dict | None = None,
                schema: dict | None = None, location: str | None = None, version: dict | None = None) -> dict:
    """POST a CreateViewRequest; asserts 200, checks the file; returns the LoadViewResult."""
    body = {
        "name": name,
        "schema": schema or SIMPLE_SCHEMA_JSON,
        "view-version": version or sql_version(sql, default_ns=ns if isinstance(ns, tuple) else (ns,)),
        "properties": properties if properties is not None else {},
    }
    if location is not None:
        body["location"] = location
    r = http.post(view_url(server, ns), json=body)
    assert r.status_code == 200, f"create view {name}: {r.status_code} {r.text[:500]}"
    result = r.json()
    check_view_file(result)
    return result


def load_view(server, http, ns, name: str) -> dict:
    r = http.get(view_url(server, ns, name))
    assert r.status_code == 200, f"load view {name}: {r.status_code} {r.text[:500]}"
    result = r.json()
    check_view_file(result)
    return result


def commit_view(server, http, ns, name: str, updates: list, requirements: list | None = None):
    """POST a CommitViewRequest (with identifier); returns the response."""
    body = {
        "identifier": {"namespace": list(ns), "name": name},
        "requirements": requirements or [],
        "updates": updates,
    }
    return http.post(view_url(server, ns, name), json=body)


def commit_ok(server, http, ns, name: str, updates: list, requirements: list | None = None) -> dict:
    r = commit_view(server, http, ns, name, updates, requirements)
    assert r.status_code == 200, f"commit view {name}: {r.status_code} {r.text[:500]}"
    result = r.json()
    check_view_file(result)
    # What the commit answered is what a load sees.
    loaded = load_view(server, http, ns, name)
    assert loaded["metadata-location"] == result["metadata-location"]
    assert loaded["metadata"] == result["metadata"]
    return result


def local_path(location: str) -> Path:
    return Path(location[len("file://"):] if location.startswith("file://") else location)


def check_view_file(result: dict) -> dict:
    """The LoadViewResult's metadata file exists, parses as view metadata,
    and holds exactly the metadata the server answered with."""
    assert set(result) >= {"metadata-location", "metadata"}, result
    location = result["metadata-location"]
    assert isinstance(location, str) and location, result
    path = local_path(location)
    assert path.is_file(), f"view metadata file {location} does not exist"
    on_disk = json.loads(path.read_text())
    ViewMetadata.model_validate(on_disk)  # parses as a view
    assert on_disk == result["metadata"], f"{location} differs from the answer"
    md = result["metadata"]
    ViewMetadata.model_validate(md)
    assert md["format-version"] == 1
    uuid.UUID(md["view-uuid"])
    assert any(v["version-id"] == md["current-version-id"] for v in md["versions"]), md
    assert md["version-log"] and md["version-log"][-1]["version-id"] == md["current-version-id"], md
    schema_ids = {s["schema-id"] for s in md["schemas"]}
    assert len(schema_ids) == len(md["schemas"]), "schema ids are unique"
    assert all(v["schema-id"] in schema_ids for v in md["versions"]), md
    assert len({v["version-id"] for v in md["versions"]}) == len(md["versions"]), "version ids are unique"
    return on_disk


def current_version(md: dict) -> dict:
    return next(v for v in md["versions"] if v["version-id"] == md["current-version-id"])


def schema_by_id(md: dict, schema_id: int) -> dict:
    return next(s for s in md["schemas"] if s["schema-id"] == schema_id)


def ident(ns, name: str) -> dict:
    return {"namespace": list(ns), "name": name}


def rename(server, http, kind: str, src: dict, dst: dict):
    return http.post(server.api(f"{kind}/rename"), json={"source": src, "destination": dst})


def register_view(server, http, ns, name: str, location: str):
    return http.post(server.api(f"namespaces/{encode_namespace(ns)}/register-view"),
                     json={"name": name, "metadata-location": location})


@pytest.fixture
def ns(server, http):
    """A fresh namespace on the shared plain server."""
    return new_ns(server, http)


# ------------------------------------------------------------------ config


def test_config_lists_view_endpoints(any_server, http):
    r = http.get(any_server.url("/v1/config"))
    assert r.status_code == 200, r.text
    missing = VIEW_ENDPOINTS - set(r.json().get("endpoints", []))
    assert not missing, f"view endpoints missing from /v1/config: {sorted(missing)}"


# ------------------------------------------------------------------ create and load


def test_create_and_load_view(any_server, http):
    s = any_server
    ns = new_ns(s, http)
    name = unique("v")
    props = {"comment": "daily revenue", "owner": "alice"}
    version = sql_version("SELECT id, name, ts FROM db.events", dialect="spark", default_ns=("db",),
                          more=(("SELECT id, name, ts FROM db.events", "trino"),))
    version["default-catalog"] = "prod"
    created = create_view(s, http, ns, name, properties=props, version=version)
    md = created["metadata"]

    assert md["properties"] == props
    assert md["location"], md
    # The metadata file lives under the view's location.
    assert str(local_path(created["metadata-location"])).startswith(str(local_path(md["location"])).rstrip("/") + "/")
    assert len(md["schemas"]) == 1
    schema = md["schemas"][0]
    assert schema["type"] == "struct"
    assert schema["fields"] == SIMPLE_SCHEMA_JSON["fields"]
    assert len(md["versions"]) == 1 and len(md["version-log"]) == 1
    cur = current_version(md)
    # The server sets the version's schema-id to the id it gave the schema.
    assert cur["schema-id"] == schema["schema-id"]
    assert cur["representations"] == version["representations"]
    assert cur["default-namespace"] == ["db"]
    assert cur["default-catalog"] == "prod"
    assert cur["summary"] == SUMMARY
    assert md["version-log"][0]["version-id"] == cur["version-id"]

    loaded = load_view(s, http, ns, name)
    assert loaded["metadata-location"] == created["metadata-location"]
    assert loaded["metadata"] == md


def test_create_view_with_explicit_location(server, http, ns):
    loc = str(server.warehouse / "custom-views" / unique("loc"))
    created = create_view(server, http, ns, unique("v"), location=loc)
    # Normalised to its `file://` URI.
    assert created["metadata"]["location"] == "file://" + loc


def test_view_uuids_differ(server, http, ns):
    a = create_view(server, http, ns, unique("v"))["metadata"]["view-uuid"]
    b = create_view(server, http, ns, unique("v"))["metadata"]["view-uuid"]
    assert a != b


def test_create_view_errors(server, http, ns):
    name = unique("v")
    good = {"name": name, "schema": SIMPLE_SCHEMA_JSON, "view-version": sql_version("SELECT 1"), "properties": {}}

    r = http.post(view_url(server, (unique("missing"),)), json=good)
    assert_error(r, 404, "NoSuchNamespaceException")

    for field in ("name", "schema", "view-version"):
        bad = {k: v for k, v in good.items() if k != field}
        assert_error(http.post(view_url(server, ns), json=bad), 400)

    no_reps = copy.deepcopy(good)
    no_reps["view-version"]["representations"] = []
    assert_error(http.post(view_url(server, ns), json=no_reps), 400)

    same_dialect = copy.deepcopy(good)
    same_dialect["view-version"] = sql_version("SELECT 1", more=(("SELECT 2", "spark"),))
    assert_error(http.post(view_url(server, ns), json=same_dialect), 400)

    assert_error(http.post(view_url(server, ns), data=b"{not json"), 400)
    # None of these created anything.
    assert http.head(view_url(server, ns, name)).status_code == 404

    create_view(server, http, ns, name)
    assert_error(http.post(view_url(server, ns), json=good), 409, "AlreadyExistsException")


def test_load_missing_view(server, http, ns):
    assert_error(http.get(view_url(server, ns, unique("nope"))), 404, "NoSuchViewException")
    assert_error(http.get(view_url(server, (unique("missing"),), "v")), 404)


# ------------------------------------------------------------------ list and exists


@pytest.mark.parametrize("page_size", [1, 2, 3, 7, 8, 100])
def test_list_views_paging(server, http, page_size):
    ns = new_ns(server, http)
    names = sorted(unique(f"v{i}") for i in range(7))
    for n in names:
        create_view(server, http, ns, n)
    # A table in the same namespace is no view.
    create_table_raw(http, server, ns, unique("t"))

    def fetch(token):
        r = http.get(view_url(server, ns), params={"pageToken": token, "pageSize": page_size})
        assert r.status_code == 200, r.text
        return r.json()

    seen, pages = collect_pages(fetch, "identifiers", page_size, len(names) + 1)
    assert sorted(i["name"] for i in seen) == names, "every view exactly once"
    assert all(i["namespace"] == list(ns) for i in seen)
    assert pages >= -(-len(names) // page_size)


def test_list_views_unpaged_and_empty(server, http, ns):
    r = http.get(view_url(server, ns))
    assert r.status_code == 200, r.text
    assert r.json()["identifiers"] == []
    assert r.json().get("next-page-token") is None
    names = sorted(unique("v") for _ in range(3))
    for n in names:
        create_view(server, http, ns, n)
    body = http.get(view_url(server, ns)).json()
    assert sorted(i["name"] for i in body["identifiers"]) == names
    assert body.get("next-page-token") is None
    assert_error(http.get(view_url(server, (unique("missing"),))), 404, "NoSuchNamespaceException")


def test_tables_and_views_are_listed_apart(server, http, ns):
    v, t = unique("v"), unique("t")
    create_view(server, http, ns, v)
    create_table_raw(http, server, ns, t)
    views = http.get(view_url(server, ns)).json()["identifiers"]
    tables = http.get(table_url(server, ns)).json()["identifiers"]
    assert views == [ident(ns, v)]
    assert tables == [ident(ns, t)]


def test_nested_namespace_views(any_server, http):
    s = any_server
    top = new_ns(s, http)
    child = new_ns(s, http, *top, "child")
    name = unique("v")
    create_view(s, http, child, name)
    assert http.head(view_url(s, child, name)).status_code == 204
    assert http.head(view_url(s, top, name)).status_code == 404
    assert http.get(view_url(s, child)).json()["identifiers"] == [ident(child, name)]
    assert http.get(view_url(s, top)).json()["identifiers"] == []


def test_view_exists(server, http, ns):
    name, table = unique("v"), unique("t")
    create_view(server, http, ns, name)
    create_table_raw(http, server, ns, table)
    r = http.head(view_url(server, ns, name))
    assert r.status_code == 204, r.status_code
    assert r.content == b""
    assert http.head(view_url(server, ns, unique("nope"))).status_code == 404
    assert http.head(view_url(server, (unique("missing"),), name)).status_code == 404
    # A table is no view and a view is no table.
    assert http.head(view_url(server, ns, table)).status_code == 404
    assert http.head(table_url(server, ns, name)).status_code == 404
    assert_error(http.get(view_url(server, ns, table)), 404, "NoSuchViewException")
    assert_error(http.get(table_url(server, ns, name)), 404, "NoSuchTableException")


# ------------------------------------------------------------------ replace: requirements


def test_assert_view_uuid_passes(server, http, ns):
    name = unique("v")
    created = create_view(server, http, ns, name)
    view_uuid = created["metadata"]["view-uuid"]
    after = commit_ok(server, http, ns, name, [{"action": "set-properties", "updates": {"k": "v"}}],
                      [{"type": "assert-view-uuid", "uuid": view_uuid}])
    assert after["metadata"]["properties"] == {"k": "v"}
    assert after["metadata"]["view-uuid"] == view_uuid
    assert after["metadata-location"] != created["metadata-location"]


def test_assert_view_uuid_fails_with_409_and_changes_nothing(server, http, ns):
    name = unique("v")
    created = create_view(server, http, ns, name)
    r = commit_view(server, http, ns, name, [{"action": "set-properties", "updates": {"k": "v"}}],
                    [{"type": "assert-view-uuid", "uuid": str(uuid.uuid4())}])
    assert_error(r, 409, "CommitFailedException")
    loaded = load_view(server, http, ns, name)
    assert loaded["metadata-location"] == created["metadata-location"]
    assert loaded["metadata"] == created["metadata"]


def test_unknown_requirement_and_updates_are_400(server, http, ns):
    name = unique("v")
    created = create_view(server, http, ns, name)
    for updates, requirements in (
        ([{"action": "no-such-update"}], []),
        ([{"action": "set-current-schema", "schema-id": 0}], []),  # a table update
        ([{"action": "set-properties", "updates": {"k": "v"}}], [{"type": "assert-table-uuid", "uuid": str(uuid.uuid4())}]),
        ([{"action": "set-properties", "updates": {"k": "v"}}], [{"type": "no-such-requirement"}]),
        ([{"action": "set-properties"}], []),  # missing field
    ):
        r = commit_view(server, http, ns, name, updates, requirements)
        assert_error(r, 400)
    assert load_view(server, http, ns, name)["metadata-location"] == created["metadata-location"]


def test_commit_to_missing_view_is_404(server, http, ns):
    table = unique("t")
    create_table_raw(http, server, ns, table)
    upd = [{"action": "set-properties", "updates": {"k": "v"}}]
    assert_error(commit_view(server, http, ns, unique("nope"), upd), 404, "NoSuchViewException")
    # A table of that name is no view to commit to.
    assert_error(commit_view(server, http, ns, table, upd), 404, "NoSuchViewException")


# ------------------------------------------------------------------ replace: each update


def test_update_assign_uuid(server, http, ns):
    name = unique("v")
    created = create_view(server, http, ns, name)
    view_uuid = created["metadata"]["view-uuid"]
    # Re-assigning the same uuid is accepted and changes nothing.
    r = commit_view(server, http, ns, name, [{"action": "assign-uuid", "uuid": view_uuid}])
    assert r.status_code == 200, r.text
    assert r.json()["metadata"]["view-uuid"] == view_uuid
    # Another uuid: a view's uuid never changes.
    r = commit_view(server, http, ns, name, [{"action": "assign-uuid", "uuid": str(uuid.uuid4())}])
    assert_error(r, 400)
    assert load_view(server, http, ns, name)["metadata"]["view-uuid"] == view_uuid


def test_update_upgrade_format_version(server, http, ns):
    name = unique("v")
    created = create_view(server, http, ns, name)
    r = commit_view(server, http, ns, name, [{"action": "upgrade-format-version", "format-version": 1}])
    assert r.status_code == 200, r.text
    assert r.json()["metadata"]["format-version"] == 1
    for bad in (0, 2):  # a downgrade, and a view format that does not exist
        assert_error(commit_view(server, http, ns, name, [{"action": "upgrade-format-version", "format-version": bad}]), 400)
    assert load_view(server, http, ns, name)["metadata"] == created["metadata"]


def test_update_add_schema_alone(server, http, ns):
    name = unique("v")
    created = create_view(server, http, ns, name)
    before = created["metadata"]
    after = commit_ok(server, http, ns, name, [{"action": "add-schema", "schema": WIDER_SCHEMA_JSON}])
    md = after["metadata"]
    assert len(md["schemas"]) == 2
    new = [s for s in md["schemas"] if s["schema-id"] != before["schemas"][0]["schema-id"]]
    assert len(new) == 1 and new[0]["fields"] == WIDER_SCHEMA_JSON["fields"]
    # Adding a schema does not change which version (and schema) is current.
    assert md["current-version-id"] == before["current-version-id"]
    assert current_version(md) == current_version(before)
    # Adding the same schema again adds nothing.
    again = commit_view(server, http, ns, name, [{"action": "add-schema", "schema": WIDER_SCHEMA_JSON}])
    assert again.status_code == 200, again.text
    assert len(again.json()["metadata"]["schemas"]) == 2


def test_update_add_view_version_with_last_added_schema(server, http, ns):
    """The Java client's replace: add-schema, add-view-version with
    schema-id -1, set-current-view-version -1."""
    name = unique("v")
    created = create_view(server, http, ns, name, sql="SELECT id, name, ts FROM t")
    before = created["metadata"]
    version = sql_version("SELECT id, name, ts, 1 AS extra FROM t", schema_id=-1, version_id=2, default_ns=ns)
    after = commit_ok(
        server, http, ns, name,
        [
            {"action": "add-schema", "schema": WIDER_SCHEMA_JSON},
            {"action": "add-view-version", "view-version": version},
            {"action": "set-current-view-version", "view-version-id": -1},
        ],
        [{"type": "assert-view-uuid", "uuid": before["view-uuid"]}],
    )
    md = after["metadata"]
    assert after["metadata-location"] != created["metadata-location"]
    assert len(md["versions"]) == 2 and len(md["schemas"]) == 2
    cur = current_version(md)
    assert cur["version-id"] != before["current-version-id"]
    assert cur["representations"] == version["representations"]
    # -1 became the id of the schema added in this commit.
    assert schema_by_id(md, cur["schema-id"])["fields"] == WIDER_SCHEMA_JSON["fields"]
    assert cur["schema-id"] != before["schemas"][0]["schema-id"]
    assert [e["version-id"] for e in md["version-log"]] == [before["current-version-id"], cur["version-id"]]
    # The old version is kept.
    assert current_version(before) in md["versions"]


def test_update_add_view_version_moves_a_clashing_id(server, http, ns):
    name = unique("v")
    created = create_view(server, http, ns, name)
    before = created["metadata"]
    old_id = before["current-version-id"]
    schema_id = before["schemas"][0]["schema-id"]
    # The client sends the id the view already has for another query.
    version = sql_version("SELECT 2 AS two", schema_id=schema_id, version_id=old_id, default_ns=ns)
    md = commit_ok(server, http, ns, name, [
        {"action": "add-view-version", "view-version": version},
        {"action": "set-current-view-version", "view-version-id": -1},
    ])["metadata"]
    ids = sorted(v["version-id"] for v in md["versions"])
    assert len(ids) == 2
    new_id = md["current-version-id"]
    assert new_id != old_id and new_id > old_id
    assert current_version(md)["representations"][0]["sql"] == "SELECT 2 AS two"
    assert next(v for v in md["versions"] if v["version-id"] == old_id) == current_version(before)


def test_update_add_identical_version_reuses_it(server, http, ns):
    name = unique("v")
    created = create_view(server, http, ns, name)
    before = created["metadata"]
    same = copy.deepcopy(current_version(before))
    same["version-id"] = 42
    same["timestamp-ms"] += 1000
    r = commit_view(server, http, ns, name, [
        {"action": "add-view-version", "view-version": same},
        {"action": "set-current-view-version", "view-version-id": -1},
    ])
    assert r.status_code == 200, r.text
    md = r.json()["metadata"]
    assert [v["version-id"] for v in md["versions"]] == [before["current-version-id"]]
    assert md["current-version-id"] == before["current-version-id"]


def test_update_add_view_version_without_making_it_current(server, http, ns):
    name = unique("v")
    created = create_view(server, http, ns, name)
    before = created["metadata"]
    schema_id = before["schemas"][0]["schema-id"]
    md = commit_ok(server, http, ns, name, [
        {"action": "add-view-version", "view-version": sql_version("SELECT 3", schema_id=schema_id, version_id=7, default_ns=ns)},
    ])["metadata"]
    assert len(md["versions"]) == 2
    assert md["current-version-id"] == before["current-version-id"]
    assert md["version-log"] == before["version-log"]


def test_update_set_current_view_version(server, http, ns):
    name = unique("v")
    created = create_view(server, http, ns, name, sql="SELECT 'first'")
    first = created["metadata"]["current-version-id"]
    schema_id = created["metadata"]["schemas"][0]["schema-id"]
    md = commit_ok(server, http, ns, name, [
        {"action": "add-view-version", "view-version": sql_version("SELECT 'second'", schema_id=schema_id, version_id=2, default_ns=ns)},
        {"action": "set-current-view-version", "view-version-id": -1},
    ])["metadata"]
    second = md["current-version-id"]
    assert second != first

    # Back to the first version by its id.
    md = commit_ok(server, http, ns, name, [{"action": "set-current-view-version", "view-version-id": first}])["metadata"]
    assert md["current-version-id"] == first
    assert current_version(md)["representations"][0]["sql"] == "SELECT 'first'"
    assert [e["version-id"] for e in md["version-log"]] == [first, second, first]
    assert len(md["versions"]) == 2

    # -1 with no version added in this commit, and an unknown id: rejected.
    for bad in (-1, 9999):
        r = commit_view(server, http, ns, name, [{"action": "set-current-view-version", "view-version-id": bad}])
        assert_error(r, 400)
    assert load_view(server, http, ns, name)["metadata"] == md


def test_update_add_view_version_bad_schema(server, http, ns):
    name = unique("v")
    created = create_view(server, http, ns, name)
    # -1 without add-schema in the same commit, and a schema that does not exist.
    for schema_id in (-1, 999):
        r = commit_view(server, http, ns, name, [
            {"action": "add-view-version", "view-version": sql_version("SELECT 4", schema_id=schema_id, version_id=2, default_ns=ns)},
            {"action": "set-current-view-version", "view-version-id": -1},
        ])
        assert_error(r, 400)
    assert load_view(server, http, ns, name)["metadata-location"] == created["metadata-location"]


def test_update_set_location(server, http, ns):
    name = unique("v")
    created = create_view(server, http, ns, name)
    new_loc = str(server.warehouse / "moved" / unique("loc"))
    md = commit_ok(server, http, ns, name, [{"action": "set-location", "location": new_loc}])["metadata"]
    assert md["location"] == "file://" + new_loc
    assert md["versions"] == created["metadata"]["versions"]


def test_update_set_and_remove_properties(server, http, ns):
    name = unique("v")
    create_view(server, http, ns, name, properties={"keep": "1", "drop": "2"})
    md = commit_ok(server, http, ns, name, [{"action": "set-properties", "updates": {"new": "3", "keep": "one"}}])["metadata"]
    assert md["properties"] == {"keep": "one", "drop": "2", "new": "3"}
    md = commit_ok(server, http, ns, name, [{"action": "remove-properties", "removals": ["drop", "not-there"]}])["metadata"]
    assert md["properties"] == {"keep": "one", "new": "3"}
    # Both in one commit, applied in order.
    md = commit_ok(server, http, ns, name, [
        {"action": "set-properties", "updates": {"a": "1", "b": "2"}},
        {"action": "remove-properties", "removals": ["a", "keep"]},
    ])["metadata"]
    assert md["properties"] == {"new": "3", "b": "2"}


def test_replace_may_not_drop_a_dialect_unless_allowed(server, http, ns):
    name = unique("v")
    created = create_view(server, http, ns, name,
                          version=sql_version("SELECT 1", dialect="spark", default_ns=ns, more=(("SELECT 1", "trino"),)))
    schema_id = created["metadata"]["schemas"][0]["schema-id"]
    only_spark = [
        {"action": "add-view-version", "view-version": sql_version("SELECT 2", dialect="spark", schema_id=schema_id, version_id=2, default_ns=ns)},
        {"action": "set-current-view-version", "view-version-id": -1},
    ]
    assert_error(commit_view(server, http, ns, name, only_spark), 400)
    assert load_view(server, http, ns, name)["metadata-location"] == created["metadata-location"]
    commit_ok(server, http, ns, name, [{"action": "set-properties", "updates": {"replace.drop-dialect.allowed": "true"}}])
    md = commit_ok(server, http, ns, name, only_spark)["metadata"]
    assert [r["dialect"] for r in current_version(md)["representations"]] == ["spark"]


def test_old_versions_expire(server, http, ns):
    name = unique("v")
    created = create_view(server, http, ns, name, properties={"version.history.num-entries": "2"})
    schema_id = created["metadata"]["schemas"][0]["schema-id"]
    for i in range(4):
        md = commit_ok(server, http, ns, name, [
            {"action": "add-view-version", "view-version": sql_version(f"SELECT {i + 10}", schema_id=schema_id, version_id=i + 2, default_ns=ns)},
            {"action": "set-current-view-version", "view-version-id": -1},
        ])["metadata"]
    assert len(md["versions"]) == 2
    assert current_version(md)["representations"][0]["sql"] == "SELECT 13"
    kept = {v["version-id"] for v in md["versions"]}
    assert all(e["version-id"] in kept for e in md["version-log"])


# ------------------------------------------------------------------ drop


def test_drop_view(server, http, ns):
    name = unique("v")
    created = create_view(server, http, ns, name)
    r = http.delete(view_url(server, ns, name))
    assert r.status_code == 204, r.text
    assert r.content == b""
    assert_error(http.get(view_url(server, ns, name)), 404, "NoSuchViewException")
    assert http.head(view_url(server, ns, name)).status_code == 404
    assert_error(http.delete(view_url(server, ns, name)), 404, "NoSuchViewException")
    assert http.get(view_url(server, ns)).json()["identifiers"] == []
    # The name is free again; the new view is another view.
    again = create_view(server, http, ns, name)
    assert again["metadata"]["view-uuid"] != created["metadata"]["view-uuid"]


def test_drop_view_and_table_endpoints_do_not_mix(server, http, ns):
    v, t = unique("v"), unique("t")
    create_view(server, http, ns, v)
    create_table_raw(http, server, ns, t)
    assert_error(http.delete(table_url(server, ns, v)), 404, "NoSuchTableException")
    assert_error(http.delete(view_url(server, ns, t)), 404, "NoSuchViewException")
    assert http.head(view_url(server, ns, v)).status_code == 204
    assert http.head(table_url(server, ns, t)).status_code == 204


def test_namespace_with_a_view_is_not_empty(server, http, ns):
    name = unique("v")
    create_view(server, http, ns, name)
    assert_error(http.delete(server.api(f"namespaces/{encode_namespace(ns)}")), 409, "NamespaceNotEmptyException")
    assert http.delete(view_url(server, ns, name)).status_code == 204
    assert http.delete(server.api(f"namespaces/{encode_namespace(ns)}")).status_code == 204


# ------------------------------------------------------------------ rename


def test_rename_view_same_namespace(server, http, ns):
    old, new = unique("v"), unique("v")
    created = create_view(server, http, ns, old)
    r = rename(server, http, "views", ident(ns, old), ident(ns, new))
    assert r.status_code == 204, r.text
    assert http.head(view_url(server, ns, old)).status_code == 404
    loaded = load_view(server, http, ns, new)
    assert loaded["metadata"]["view-uuid"] == created["metadata"]["view-uuid"]
    assert loaded["metadata-location"] == created["metadata-location"]
    names = [i["name"] for i in http.get(view_url(server, ns)).json()["identifiers"]]
    assert names == [new]
    # The renamed view still commits.
    commit_ok(server, http, ns, new, [{"action": "set-properties", "updates": {"renamed": "yes"}}])


def test_rename_view_across_namespaces(any_server, http):
    s = any_server
    src_ns = new_ns(s, http)
    top = new_ns(s, http)
    dst_ns = new_ns(s, http, *top, "nested")
    name = unique("v")
    created = create_view(s, http, src_ns, name)
    r = rename(s, http, "views", ident(src_ns, name), ident(dst_ns, "moved"))
    assert r.status_code == 204, r.text
    assert http.head(view_url(s, src_ns, name)).status_code == 404
    loaded = load_view(s, http, dst_ns, "moved")
    assert loaded["metadata"]["view-uuid"] == created["metadata"]["view-uuid"]
    assert http.get(view_url(s, src_ns)).json()["identifiers"] == []
    assert http.get(view_url(s, dst_ns)).json()["identifiers"] == [ident(dst_ns, "moved")]


def test_rename_view_errors(server, http, ns):
    a, b, t = unique("v"), unique("v"), unique("t")
    ca = create_view(server, http, ns, a)
    create_view(server, http, ns, b)
    create_table_raw(http, server, ns, t)

    assert_error(rename(server, http, "views", ident(ns, unique("nope")), ident(ns, unique("x"))), 404, "NoSuchViewException")
    assert_error(rename(server, http, "views", ident((unique("missing"),), a), ident(ns, unique("x"))), 404)
    assert_error(rename(server, http, "views", ident(ns, a), ident((unique("missing"),), a)), 404, "NoSuchNamespaceException")
    # A table is no view to rename.
    assert_error(rename(server, http, "views", ident(ns, t), ident(ns, unique("x"))), 404, "NoSuchViewException")
    # Onto an existing view or table.
    assert_error(rename(server, http, "views", ident(ns, a), ident(ns, b)), 409, "AlreadyExistsException")
    assert_error(rename(server, http, "views", ident(ns, a), ident(ns, t)), 409, "AlreadyExistsException")
    assert_error(http.post(server.api("views/rename"), json={"source": ident(ns, a)}), 400)
    # Nothing moved.
    assert load_view(server, http, ns, a)["metadata-location"] == ca["metadata-location"]
    assert http.head(view_url(server, ns, b)).status_code == 204
    assert http.head(table_url(server, ns, t)).status_code == 204


def test_rename_view_onto_itself_keeps_it(server, http, ns):
    name = unique("v")
    created = create_view(server, http, ns, name)
    # Renaming onto itself changes nothing, so there is nothing to refuse.
    r = rename(server, http, "views", ident(ns, name), ident(ns, name))
    assert r.status_code == 204, r.text
    loaded = load_view(server, http, ns, name)
    assert loaded["metadata-location"] == created["metadata-location"]
    assert http.get(view_url(server, ns)).json()["identifiers"] == [ident(ns, name)]


# ------------------------------------------------------------------ register


def test_register_view_from_a_dropped_views_file(server, http, ns):
    name = unique("v")
    create_view(server, http, ns, name, properties={"p": "1"})
    last = commit_ok(server, http, ns, name, [{"action": "set-properties", "updates": {"p": "2"}}])
    assert http.delete(view_url(server, ns, name)).status_code == 204
    location = last["metadata-location"]
    assert local_path(location).is_file(), "dropping a view keeps its metadata files"

    other_ns = new_ns(server, http)
    r = register_view(server, http, other_ns, "registered", location)
    assert r.status_code == 200, r.text
    reg = r.json()
    assert reg["metadata-location"] == location
    assert reg["metadata"] == last["metadata"]
    loaded = load_view(server, http, other_ns, "registered")
    assert loaded["metadata"]["view-uuid"] == last["metadata"]["view-uuid"]
    assert loaded["metadata"]["properties"] == {"p": "2"}
    assert http.get(view_url(server, other_ns)).json()["identifiers"] == [ident(other_ns, "registered")]
    # The registered view commits on top of that file.
    after = commit_ok(server, http, other_ns, "registered", [{"action": "set-properties", "updates": {"p": "3"}}],
                      [{"type": "assert-view-uuid", "uuid": last["metadata"]["view-uuid"]}])
    assert after["metadata-location"] != location
    assert after["metadata"]["properties"] == {"p": "3"}


def test_register_view_errors(server, http, ns):
    name, table = unique("v"), unique("t")
    created = create_view(server, http, ns, name)
    t = create_table_raw(http, server, ns, table)
    loc = created["metadata-location"]
    # Onto an existing view or table.
    assert_error(register_view(server, http, ns, name, loc), 409, "AlreadyExistsException")
    assert_error(register_view(server, http, ns, table, loc), 409, "AlreadyExistsException")
    assert_error(register_view(server, http, (unique("missing"),), "x", loc), 404, "NoSuchNamespaceException")
    assert_error(http.post(server.api(f"namespaces/{encode_namespace(ns)}/register-view"), json={"name": "x"}), 400)
    # A file that does not exist, and a table's metadata file: no view there.
    for bad in (str(server.warehouse / "nowhere" / "00000-x.metadata.json"), t["metadata-location"]):
        assert_error(register_view(server, http, ns, unique("x"), bad), 400, "BadRequestException")
    assert [i["name"] for i in http.get(view_url(server, ns)).json()["identifiers"]] == [name]


# ------------------------------------------------------------------ tables and views share names


def test_create_view_where_a_table_exists(server, http, ns):
    name = unique("x")
    create_table_raw(http, server, ns, name)
    r = http.post(view_url(server, ns), json={
        "name": name, "schema": SIMPLE_SCHEMA_JSON, "view-version": sql_version("SELECT 1"), "properties": {}})
    assert_error(r, 409, "AlreadyExistsException")
    assert http.head(view_url(server, ns, name)).status_code == 404


def test_create_table_where_a_view_exists(server, http, ns):
    name = unique("x")
    create_view(server, http, ns, name)
    r = http.post(table_url(server, ns), json={"name": name, "schema": SIMPLE_SCHEMA_JSON})
    assert_error(r, 409, "AlreadyExistsException")
    assert http.head(table_url(server, ns, name)).status_code == 404


def test_register_table_where_a_view_exists(server, http, ns):
    name, table = unique("x"), unique("t")
    create_view(server, http, ns, name)
    t = create_table_raw(http, server, ns, table)
    r = http.post(server.api(f"namespaces/{encode_namespace(ns)}/register"),
                  json={"name": name, "metadata-location": t["metadata-location"]})
    assert_error(r, 409, "AlreadyExistsException")


def test_rename_table_onto_a_view_and_view_onto_a_table(server, http, ns):
    v, t = unique("v"), unique("t")
    create_view(server, http, ns, v)
    create_table_raw(http, server, ns, t)
    assert_error(rename(server, http, "tables", ident(ns, t), ident(ns, v)), 409, "AlreadyExistsException")
    assert_error(rename(server, http, "views", ident(ns, v), ident(ns, t)), 409, "AlreadyExistsException")
    # Each endpoint renames only its own kind.
    assert_error(rename(server, http, "tables", ident(ns, v), ident(ns, unique("x"))), 404, "NoSuchTableException")
    assert http.head(view_url(server, ns, v)).status_code == 204
    assert http.head(table_url(server, ns, t)).status_code == 204
    assert http.head(table_url(server, ns, v)).status_code == 404
    assert http.head(view_url(server, ns, t)).status_code == 404


# ------------------------------------------------------------------ PyIceberg


def test_pyiceberg_view_lifecycle(catalog):
    ns = unique()
    catalog.create_namespace(ns)
    ident_ = (ns, "revenue")
    schema = Schema(
        NestedField(1, "id", LongType(), required=True),
        NestedField(2, "region", StringType(), required=False),
    )
    version = ViewVersion(
        version_id=1,
        schema_id=0,
        summary={"engine-name": "pyiceberg"},
        representations=[ViewRepresentation(SQLViewRepresentation(type="sql", sql="SELECT id, region FROM sales", dialect="spark"))],
        default_namespace=(ns,),
    )
    view = catalog.create_view(ident_, schema, version, properties={"owner": "bob"})
    assert view.properties == {"owner": "bob"}
    assert view.current_version().representations[0].root.sql == "SELECT id, region FROM sales"
    assert [f.name for f in view.schema().fields] == ["id", "region"]

    loaded = catalog.load_view(ident_)
    assert loaded.metadata == view.metadata
    assert catalog.view_exists(ident_)
    assert not catalog.view_exists((ns, "other"))
    assert catalog.list_views(ns) == [ident_]
    # A view is no table.
    assert catalog.list_tables(ns) == []
    assert not catalog.table_exists(ident_)

    with pytest.raises(ViewAlreadyExistsError):
        catalog.create_view(ident_, schema, version)

    catalog.drop_view(ident_)
    assert not catalog.view_exists(ident_)
    assert catalog.list_views(ns) == []
    with pytest.raises(NoSuchViewError):
        catalog.load_view(ident_)
    with pytest.raises(NoSuchViewError):
        catalog.drop_view(ident_)


def test_pyiceberg_register_view_and_paged_list(any_server, http):
    s = any_server
    catalog = s.catalog(**{"rest-page-size": "2"})
    ns = unique()
    catalog.create_namespace(ns)
    names = sorted(unique("v") for _ in range(5))
    for n in names:
        create_view(s, http, (ns,), n)
    assert sorted(catalog.list_views(ns)) == [(ns, n) for n in names]

    location = load_view(s, http, (ns,), names[0])["metadata-location"]
    catalog.drop_view((ns, names[0]))
    view = catalog.register_view((ns, "back"), location)
    assert view.metadata == ViewMetadata.model_validate_json(local_path(location).read_text())
    assert catalog.load_view((ns, "back")).metadata == view.metadata


# ------------------------------------------------------------------ names, shards, concurrency


def test_view_names_with_odd_characters(any_server, http):
    s = any_server
    ns = new_ns(s, http, unique("ünï cødé"))
    name = "日本 語 +&?#/%1F."
    created = create_view(s, http, ns, name)
    assert http.head(view_url(s, ns, name)).status_code == 204
    assert http.get(view_url(s, ns)).json()["identifiers"] == [ident(ns, name)]
    assert rename(s, http, "views", ident(ns, name), ident(ns, name + "2")).status_code == 204
    loaded = load_view(s, http, ns, name + "2")
    assert loaded["metadata"]["view-uuid"] == created["metadata"]["view-uuid"]
    assert http.delete(view_url(s, ns, name + "2")).status_code == 204


def test_every_shard_sees_view_changes_at_once(server, http, ns):
    """Fresh connections land on any shard; none may answer from a stale cache."""
    name, renamed = unique("v"), unique("v")
    create_view(server, http, ns, name)

    def each_shard(check) -> None:
        for _ in range(3 * server.shards):
            with server.raw() as c:
                check(c)

    def path(n: str) -> str:
        return view_url(server, ns, n)[len(server.base_url):]

    each_shard(lambda c: c.request("GET", path(name)).status)  # warm every shard's cache
    after = commit_ok(server, http, ns, name, [{"action": "set-properties", "updates": {"k": "v"}}])

    def sees_commit(c):
        r = c.request("GET", path(name))
        assert r.status == 200 and r.json()["metadata-location"] == after["metadata-location"], "stale view"
    each_shard(sees_commit)

    assert rename(server, http, "views", ident(ns, name), ident(ns, renamed)).status_code == 204

    def sees_rename(c):
        assert c.request("GET", path(name)).status == 404, "renamed view still served under its old name"
        assert c.request("HEAD", path(renamed)).status == 204
    each_shard(sees_rename)

    assert http.delete(view_url(server, ns, renamed)).status_code == 204

    def sees_drop(c):
        assert c.request("GET", path(renamed)).status == 404, "dropped view still served"
    each_shard(sees_drop)


def test_concurrent_replaces_lose_no_update(server, http, ns):
    """Writers each set their own property; every commit answered 200 is in
    the final view (a 409 CommitFailedException is allowed: the client retries)."""
    import requests

    name = unique("v")
    view_uuid = create_view(server, http, ns, name)["metadata"]["view-uuid"]
    writers, rounds = 4, 6
    last_ok: dict[int, int] = {}
    errors: list[str] = []

    def writer(w: int) -> None:
        with requests.Session() as s:
            for i in range(rounds):
                r = commit_view(server, s, ns, name, [{"action": "set-properties", "updates": {f"w{w}": str(i)}}],
                                [{"type": "assert-view-uuid", "uuid": view_uuid}])
                if r.status_code == 200:
                    last_ok[w] = i
                elif r.status_code != 409 or r.json()["error"]["type"] != "CommitFailedException":
                    errors.append(f"writer {w}: {r.status_code} {r.text[:200]}")

    run_threads(writer, writers)
    assert not errors, errors
    props = load_view(server, http, ns, name)["metadata"]["properties"]
    for w, i in last_ok.items():
        assert props.get(f"w{w}") == str(i), f"writer {w}'s acknowledged commit {i} was lost: {props}"


def test_create_view_racing_drop_namespace(server):
    """A view is never left in a dropped namespace."""
    import requests

    for _ in range(15):
        with requests.Session() as s0:
            ns = new_ns(server, s0)
        results: dict[str, int] = {}
        barrier = threading.Barrier(2)

        def drop() -> None:
            with requests.Session() as s:
                barrier.wait(10)
                results["drop"] = s.delete(server.api(f"namespaces/{encode_namespace(ns)}"), timeout=10).status_code

        def create() -> None:
            with requests.Session() as s:
                barrier.wait(10)
                body = {"name": "v", "schema": SIMPLE_SCHEMA_JSON, "view-version": sql_version("SELECT 1"), "properties": {}}
                results["create"] = s.post(view_url(server, ns), json=body, timeout=10).status_code

        threads = [threading.Thread(target=f, daemon=True) for f in (drop, create)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert set(results) == {"drop", "create"}, "requests hung"
        assert (results["drop"], results["create"]) in ((204, 404), (409, 200)), results
        with requests.Session() as s:
            ns_exists = s.get(server.api(f"namespaces/{encode_namespace(ns)}"), timeout=10).status_code == 200
            view_exists = s.head(view_url(server, ns, "v"), timeout=10).status_code == 204
        assert ns_exists == view_exists == (results["create"] == 200), results


# ------------------------------------------------------------------ durability


@pytest.mark.single_node(reason="kills and restarts its server")
def test_views_survive_kill9(fresh_server, http):
    s = fresh_server
    ns = new_ns(s, http)
    name, gone, renamed = unique("v"), unique("v"), unique("v")
    create_view(s, http, ns, name)
    md = commit_ok(s, http, ns, name, [{"action": "set-properties", "updates": {"k": "v"}}])
    create_view(s, http, ns, gone)
    assert http.delete(view_url(s, ns, gone)).status_code == 204
    create_view(s, http, ns, "before-rename")
    assert rename(s, http, "views", ident(ns, "before-rename"), ident(ns, renamed)).status_code == 204
    s.kill9()
    s.start()
    after = load_view(s, http, ns, name)
    assert after["metadata-location"] == md["metadata-location"]
    assert after["metadata"] == md["metadata"]
    assert http.head(view_url(s, ns, gone)).status_code == 404
    assert http.head(view_url(s, ns, "before-rename")).status_code == 404
    assert http.head(view_url(s, ns, renamed)).status_code == 204
