"""Table endpoints over raw HTTP, for what PyIceberg does not exercise:
every requirement type, invalid updates, no-op commits, ETags, staged
creates, paging, HEAD/DELETE/metrics/credentials, multi-table transactions,
and the ids a raw create gets."""

from __future__ import annotations

import json
import uuid

import pytest
from pyiceberg.schema import Schema, assign_fresh_schema_ids

from harness import (
    SIMPLE_SCHEMA_JSON,
    assert_error,
    assert_metadata_file_matches,
    create_table_raw,
    local_path,
    table_url,
    unique,
)

# ------------------------------------------------------------------ helpers


def new_ns(http, server) -> str:
    ns = unique()
    r = http.post(server.api("namespaces"), json={"namespace": [ns]})
    assert r.status_code == 200, r.text
    return ns


def commit(http, server, ns, name, requirements=(), updates=(), raw: bytes | None = None):
    url = table_url(server, ns, name)
    if raw is not None:
        return http.post(url, data=raw, headers={"Content-Type": "application/json"})
    return http.post(url, json={"requirements": list(requirements), "updates": list(updates)})


def load(http, server, ns, name, **params) -> dict:
    r = http.get(table_url(server, ns, name), params=params)
    assert r.status_code == 200, r.text
    return r.json()


def metadata_files(location: str) -> set[str]:
    return {p.name for p in local_path(location).parent.glob("*.metadata.json")}


def snapshot(snapshot_id: int, parent: int | None, seq: int, schema_id: int = 0) -> dict:
    s = {
        "snapshot-id": snapshot_id,
        "sequence-number": seq,
        "timestamp-ms": 1_700_000_000_000 + seq,
        "manifest-list": f"/nonexistent/snap-{snapshot_id}.avro",
        "summary": {"operation": "append"},
        "schema-id": schema_id,
    }
    if parent is not None:
        s["parent-snapshot-id"] = parent
    return s


def add_and_set(snapshot_id, parent, seq, ref="main", ref_type="branch") -> list[dict]:
    return [
        {"action": "add-snapshot", "snapshot": snapshot(snapshot_id, parent, seq)},
        {"action": "set-snapshot-ref", "ref-name": ref, "type": ref_type, "snapshot-id": snapshot_id},
    ]


PARTITION_SPEC = {"spec-id": 0, "fields": [{"name": "id_bucket", "transform": "bucket[4]", "source-id": 11, "field-id": 5000}]}
WRITE_ORDER = {"order-id": 5, "fields": [{"transform": "identity", "source-id": 12, "direction": "desc", "null-order": "nulls-last"}]}


@pytest.fixture
def table(server, http):
    """A table with a partition spec, a sort order, snapshots 1 <- 2 on main
    and a branch `dev` at 1: (ns, name, load result)."""
    ns = new_ns(http, server)
    create_table_raw(http, server, ns, "t", partition_spec=PARTITION_SPEC, write_order=WRITE_ORDER)
    r = commit(http, server, ns, "t", updates=add_and_set(1, None, 1) + add_and_set(2, 1, 2)
               + [{"action": "set-snapshot-ref", "ref-name": "dev", "type": "branch", "snapshot-id": 1}])
    assert r.status_code == 200, r.text
    body = load(http, server, ns, "t")
    md = body["metadata"]
    assert (md["current-snapshot-id"], md["refs"]["dev"]["snapshot-id"]) == (2, 1)
    return ns, "t", body


# ------------------------------------------------------- ids of a raw create


def test_raw_create_assigns_fresh_ids(server, http):
    ns = new_ns(http, server)
    body = create_table_raw(http, server, ns, "ids", partition_spec=PARTITION_SPEC, write_order=WRITE_ORDER)
    md = body["metadata"]
    assert_metadata_file_matches(body["metadata-location"], md)
    expected = assign_fresh_schema_ids(Schema.model_validate(SIMPLE_SCHEMA_JSON))
    got = Schema.model_validate(md["schemas"][0])
    assert got == expected and got.schema_id == 0
    assert md["current-schema-id"] == 0 and md["last-column-id"] == 3
    assert md["partition-specs"] == [{"spec-id": 0, "fields": [
        {"name": "id_bucket", "transform": "bucket[4]", "source-id": 1, "field-id": 1000}]}]
    assert md["default-spec-id"] == 0 and md["last-partition-id"] == 1000
    assert md["sort-orders"] == [{"order-id": 1, "fields": [
        {"transform": "identity", "source-id": 2, "direction": "desc", "null-order": "nulls-last"}]}]
    assert md["default-sort-order-id"] == 1
    assert md["format-version"] == 2
    assert md["location"] == f"file://{server.warehouse.resolve() / ns}/ids-{md['table-uuid']}"


def test_raw_create_nested_types_ids_match_pyiceberg(server, http):
    from test_tables import ALL_TYPES

    ns = new_ns(http, server)
    schema_json = json.loads(ALL_TYPES.model_dump_json(by_alias=True))
    body = create_table_raw(http, server, ns, "nested", schema=schema_json)
    got = Schema.model_validate(body["metadata"]["schemas"][0])
    assert got == assign_fresh_schema_ids(ALL_TYPES)
    assert body["metadata"]["last-column-id"] == 23


# --------------------------------------------------------------- requirements


def failing_requirements(md: dict) -> list[tuple[str, dict]]:
    return [
        ("assert-create", {"type": "assert-create"}),
        ("assert-table-uuid", {"type": "assert-table-uuid", "uuid": str(uuid.uuid4())}),
        ("assert-ref-snapshot-id wrong id", {"type": "assert-ref-snapshot-id", "ref": "main", "snapshot-id": 1}),
        ("assert-ref-snapshot-id null but exists", {"type": "assert-ref-snapshot-id", "ref": "dev", "snapshot-id": None}),
        ("assert-ref-snapshot-id missing ref", {"type": "assert-ref-snapshot-id", "ref": "nope", "snapshot-id": 2}),
        ("assert-last-assigned-field-id", {"type": "assert-last-assigned-field-id", "last-assigned-field-id": md["last-column-id"] - 1}),
        ("assert-current-schema-id", {"type": "assert-current-schema-id", "current-schema-id": md["current-schema-id"] + 1}),
        ("assert-last-assigned-partition-id", {"type": "assert-last-assigned-partition-id", "last-assigned-partition-id": 999}),
        ("assert-default-spec-id", {"type": "assert-default-spec-id", "default-spec-id": md["default-spec-id"] + 1}),
        ("assert-default-sort-order-id", {"type": "assert-default-sort-order-id", "default-sort-order-id": 0}),
    ]


def passing_requirements(md: dict) -> list[tuple[str, dict]]:
    return [
        ("assert-table-uuid", {"type": "assert-table-uuid", "uuid": md["table-uuid"].upper()}),
        ("assert-ref-snapshot-id main", {"type": "assert-ref-snapshot-id", "ref": "main", "snapshot-id": 2}),
        ("assert-ref-snapshot-id dev", {"type": "assert-ref-snapshot-id", "ref": "dev", "snapshot-id": 1}),
        ("assert-ref-snapshot-id null, absent", {"type": "assert-ref-snapshot-id", "ref": "nope", "snapshot-id": None}),
        ("assert-last-assigned-field-id", {"type": "assert-last-assigned-field-id", "last-assigned-field-id": 3}),
        ("assert-current-schema-id", {"type": "assert-current-schema-id", "current-schema-id": 0}),
        ("assert-last-assigned-partition-id", {"type": "assert-last-assigned-partition-id", "last-assigned-partition-id": 1000}),
        ("assert-default-spec-id", {"type": "assert-default-spec-id", "default-spec-id": 0}),
        ("assert-default-sort-order-id", {"type": "assert-default-sort-order-id", "default-sort-order-id": 1}),
    ]


FAILING = [name for name, _ in failing_requirements({"last-column-id": 3, "current-schema-id": 0, "default-spec-id": 0})]
PASSING = [name for name, _ in passing_requirements({"table-uuid": ""})]


@pytest.mark.parametrize("case", FAILING)
def test_failed_requirement_is_409_and_changes_nothing(server, http, table, case):
    ns, name, before = table
    req = dict(failing_requirements(before["metadata"]))[case]
    files = metadata_files(before["metadata-location"])
    r = commit(http, server, ns, name, [req], [{"action": "set-properties", "updates": {"touched": "yes"}}])
    err = assert_error(r, 409, "CommitFailedException")
    # assert-create fails because the table exists; every other requirement names itself.
    assert ("already exists" if case == "assert-create" else "Requirement failed") in err["message"], err
    after = load(http, server, ns, name)
    assert after["metadata-location"] == before["metadata-location"]
    assert "touched" not in after["metadata"]["properties"]
    assert metadata_files(before["metadata-location"]) == files


@pytest.mark.parametrize("case", PASSING)
def test_holding_requirement_lets_the_commit_through(server, http, table, case):
    ns, name, before = table
    req = dict(passing_requirements(before["metadata"]))[case]
    r = commit(http, server, ns, name, [req], [{"action": "set-properties", "updates": {"touched": case}}])
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"metadata-location", "metadata"}
    assert body["metadata-location"] != before["metadata-location"]
    assert body["metadata"]["properties"]["touched"] == case
    assert_metadata_file_matches(body["metadata-location"], body["metadata"])
    assert load(http, server, ns, name)["metadata-location"] == body["metadata-location"]


def test_all_requirements_together(server, http, table):
    ns, name, before = table
    reqs = [r for _, r in passing_requirements(before["metadata"])]
    r = commit(http, server, ns, name, reqs, [{"action": "set-properties", "updates": {"all": "1"}}])
    assert r.status_code == 200, r.text
    # One failing among many holding ones still fails the commit.
    reqs = [r for _, r in passing_requirements(before["metadata"])]
    reqs.insert(3, {"type": "assert-current-schema-id", "current-schema-id": 9})
    r = commit(http, server, ns, name, reqs, [{"action": "set-properties", "updates": {"all": "2"}}])
    assert_error(r, 409, "CommitFailedException")
    assert load(http, server, ns, name)["metadata"]["properties"]["all"] == "1"


# ------------------------------------------------------------ invalid commits

INVALID = {
    "unknown action": b'{"requirements":[],"updates":[{"action":"frobnicate","x":1}]}',
    "set-current-schema unknown id": b'{"requirements":[],"updates":[{"action":"set-current-schema","schema-id":42}]}',
    "set-default-spec unknown id": b'{"requirements":[],"updates":[{"action":"set-default-spec","spec-id":42}]}',
    "set-default-sort-order unknown id": b'{"requirements":[],"updates":[{"action":"set-default-sort-order","sort-order-id":42}]}',
    "set-snapshot-ref unknown snapshot": b'{"requirements":[],"updates":[{"action":"set-snapshot-ref","ref-name":"x","type":"tag","snapshot-id":999}]}',
    "downgrade format version": b'{"requirements":[],"updates":[{"action":"upgrade-format-version","format-version":1}]}',
    "unsupported format version": b'{"requirements":[],"updates":[{"action":"upgrade-format-version","format-version":99}]}',
    "set-current-schema -1 without add": b'{"requirements":[],"updates":[{"action":"set-current-schema","schema-id":-1}]}',
    "malformed JSON": b'{"requirements":[],"updates":[{"action":"set-properties",',
    "unknown requirement type": b'{"requirements":[{"type":"assert-nothing"}],"updates":[]}',
    "update missing a field": b'{"requirements":[],"updates":[{"action":"set-properties"}]}',
    "valid update before an invalid one": (
        b'{"requirements":[],"updates":[{"action":"set-properties","updates":{"touched":"yes"}},'
        b'{"action":"set-current-schema","schema-id":42}]}'
    ),
}


@pytest.mark.parametrize("case", list(INVALID))
def test_invalid_commit_is_400_and_changes_nothing(server, http, table, case):
    ns, name, before = table
    files = metadata_files(before["metadata-location"])
    r = commit(http, server, ns, name, raw=INVALID[case])
    assert_error(r, 400, "BadRequestException")
    after = load(http, server, ns, name)
    assert after["metadata-location"] == before["metadata-location"]
    assert after["metadata"] == before["metadata"]
    assert metadata_files(before["metadata-location"]) == files


def test_commit_to_missing_table_or_namespace_is_404(server, http, table):
    ns, _, _ = table
    upd = [{"action": "set-properties", "updates": {"a": "b"}}]
    assert_error(commit(http, server, ns, "missing", [], upd), 404, "NoSuchTableException")
    assert_error(commit(http, server, unique("nons"), "t", [], upd), 404, "NoSuchNamespaceException")


def test_noop_commit_writes_nothing(server, http, table):
    ns, name, before = table
    files = metadata_files(before["metadata-location"])
    md = before["metadata"]
    for body in (
        {"requirements": [], "updates": []},
        {},
        {"requirements": [{"type": "assert-table-uuid", "uuid": md["table-uuid"]}], "updates": []},
    ):
        r = http.post(table_url(server, ns, name), json=body)
        assert r.status_code == 200, r.text
        assert r.json()["metadata-location"] == before["metadata-location"]
        assert r.json()["metadata"] == md
    assert metadata_files(before["metadata-location"]) == files
    assert load(http, server, ns, name)["metadata-location"] == before["metadata-location"]


def test_noop_commit_on_registered_v1_table_without_uuid_writes_nothing(server, http):
    # Format v1 makes `table-uuid` optional; parsing such a file invents one
    # each time, and two parses must still compare equal.
    ns = new_ns(http, server)
    created = create_table_raw(http, server, ns, "v1", properties={"format-version": "1"})
    md = dict(created["metadata"])
    assert md["format-version"] == 1
    del md["table-uuid"]
    # Its own location: register refuses one that overlaps the table it was copied from.
    md["location"] = created["metadata"]["location"] + "-legacy"
    legacy_path = local_path(md["location"]) / "metadata" / "legacy-no-uuid.metadata.json"
    legacy_path.parent.mkdir(parents=True)
    legacy_path.write_text(json.dumps(md))
    legacy = "file://" + str(legacy_path)
    r = http.post(server.api(f"namespaces/{ns}/register"), json={"name": "legacy", "metadata-location": legacy})
    assert r.status_code == 200, r.text
    files = metadata_files(legacy)
    for body in ({"requirements": [], "updates": []}, {},
                 {"updates": [{"action": "set-properties", "updates": {"format-version": "1"}}]}):
        r = http.post(table_url(server, ns, "legacy"), json=body)
        assert r.status_code == 200, r.text
        assert r.json()["metadata-location"] == legacy
        assert r.json()["metadata"] == md
    assert metadata_files(legacy) == files
    assert load(http, server, ns, "legacy")["metadata-location"] == legacy
    # A real change writes a version, which keeps the uuid it was given.
    r = commit(http, server, ns, "legacy", updates=[{"action": "set-properties", "updates": {"k": "v"}}])
    assert r.status_code == 200, r.text
    changed = r.json()
    assert changed["metadata-location"] != legacy
    assert uuid.UUID(changed["metadata"]["table-uuid"])
    assert load(http, server, ns, "legacy")["metadata"]["table-uuid"] == changed["metadata"]["table-uuid"]


# ---------------------------------------------------------------------- ETags


def test_etag_and_if_none_match(any_server, http):
    server = any_server
    ns = new_ns(http, server)
    create_table_raw(http, server, ns, "e")
    url = table_url(server, ns, "e")
    r = http.get(url)
    assert r.status_code == 200
    etag = r.headers.get("ETag")
    assert etag and etag.startswith('"') and etag.endswith('"'), etag
    assert http.get(url).headers["ETag"] == etag  # stable

    r = http.get(url, headers={"If-None-Match": etag})
    assert r.status_code == 304 and r.content == b""
    assert r.headers.get("ETag") == etag
    assert http.get(url, headers={"If-None-Match": f'"x", {etag}'}).status_code == 304
    assert http.get(url, headers={"If-None-Match": "*"}).status_code == 304
    r = http.get(url, headers={"If-None-Match": '"something-else"'})
    assert r.status_code == 200 and r.json()["metadata"]

    # On the wire: 304 has no body at all, and the connection stays usable.
    with server.raw() as c:
        resp = c.request("GET", url[len(server.base_url):], headers={"If-None-Match": etag})
        assert resp.status == 304 and resp.body == b""
        assert resp.headers.get("content-length", "0") == "0"
        again = c.request("GET", url[len(server.base_url):])
        assert again.status == 200 and again.json()["metadata-location"]

    # A commit makes the old ETag stale.
    assert commit(http, server, ns, "e", [], [{"action": "set-properties", "updates": {"k": "v"}}]).status_code == 200
    r = http.get(url, headers={"If-None-Match": etag})
    assert r.status_code == 200 and r.headers["ETag"] != etag
    assert r.json()["metadata"]["properties"]["k"] == "v"


def test_snapshots_refs_returns_only_referenced_snapshots(any_server, http):
    server = any_server
    ns = new_ns(http, server)
    create_table_raw(http, server, ns, "s")
    # 1 <- 2 <- 3 on main; a tag on 1; 2 is referenced by nothing.
    r = commit(http, server, ns, "s", updates=add_and_set(1, None, 1) + add_and_set(2, 1, 2) + add_and_set(3, 2, 3)
               + [{"action": "set-snapshot-ref", "ref-name": "old", "type": "tag", "snapshot-id": 1}])
    assert r.status_code == 200, r.text
    url = table_url(server, ns, "s")
    full = http.get(url)
    refs = http.get(url, params={"snapshots": "refs"})
    explicit_all = http.get(url, params={"snapshots": "all"})
    assert full.status_code == refs.status_code == explicit_all.status_code == 200
    assert [s["snapshot-id"] for s in full.json()["metadata"]["snapshots"]] == [1, 2, 3]
    assert [s["snapshot-id"] for s in refs.json()["metadata"]["snapshots"]] == [1, 3]
    assert explicit_all.json() == full.json()
    assert refs.json()["metadata-location"] == full.json()["metadata-location"]
    # Everything else is the same table.
    a, b = dict(full.json()["metadata"]), dict(refs.json()["metadata"])
    a.pop("snapshots"), b.pop("snapshots")
    assert a == b
    assert refs.headers["ETag"] != full.headers["ETag"]
    assert explicit_all.headers["ETag"] == full.headers["ETag"]
    # Each representation's ETag matches only itself.
    assert http.get(url, params={"snapshots": "refs"}, headers={"If-None-Match": refs.headers["ETag"]}).status_code == 304
    assert http.get(url, params={"snapshots": "refs"}, headers={"If-None-Match": full.headers["ETag"]}).status_code == 200
    assert http.get(url, headers={"If-None-Match": refs.headers["ETag"]}).status_code == 200
    assert_error(http.get(url, params={"snapshots": "some"}), 400, "BadRequestException")


# ------------------------------------------------------------- staged create


def test_stage_create_then_commit_with_assert_create(any_server, http):
    server = any_server
    ns = new_ns(http, server)
    r = http.post(table_url(server, ns), json={
        "name": "staged", "schema": SIMPLE_SCHEMA_JSON, "stage-create": True,
        "partition-spec": PARTITION_SPEC, "write-order": WRITE_ORDER, "properties": {"p": "1"},
    })
    assert r.status_code == 200, r.text
    staged = r.json()
    assert staged["metadata-location"] is None
    md = staged["metadata"]
    assert http.head(table_url(server, ns, "staged")).status_code == 404
    assert http.get(table_url(server, ns)).json()["identifiers"] == []
    assert not (server.warehouse / ns).exists(), "a staged create wrote files"

    # What PyIceberg's and Java's create transactions send.
    updates = [
        {"action": "assign-uuid", "uuid": md["table-uuid"]},
        {"action": "upgrade-format-version", "format-version": md["format-version"]},
        {"action": "add-schema", "schema": md["schemas"][0], "last-column-id": md["last-column-id"]},
        {"action": "set-current-schema", "schema-id": -1},
        {"action": "add-spec", "spec": md["partition-specs"][0]},
        {"action": "set-default-spec", "spec-id": -1},
        {"action": "add-sort-order", "sort-order": md["sort-orders"][-1]},
        {"action": "set-default-sort-order", "sort-order-id": -1},
        {"action": "set-location", "location": md["location"]},
        {"action": "set-properties", "updates": md["properties"]},
        {"action": "set-properties", "updates": {"added-in-tx": "yes"}},
    ]
    body = {"identifier": {"namespace": [ns], "name": "staged"},
            "requirements": [{"type": "assert-create"}], "updates": updates}
    r = http.post(table_url(server, ns, "staged"), json=body)
    assert r.status_code == 200, r.text
    created = r.json()
    assert created["metadata-location"]
    assert_metadata_file_matches(created["metadata-location"], created["metadata"])
    cmd = created["metadata"]
    assert cmd["table-uuid"] == md["table-uuid"]
    for key in ("schemas", "current-schema-id", "last-column-id", "partition-specs", "default-spec-id",
                "last-partition-id", "sort-orders", "default-sort-order-id", "location", "format-version"):
        assert cmd[key] == md[key], key
    assert cmd["properties"] == {**md["properties"], "added-in-tx": "yes"}
    assert http.head(table_url(server, ns, "staged")).status_code == 204
    assert load(http, server, ns, "staged")["metadata-location"] == created["metadata-location"]

    # The same create again fails its requirement.
    assert_error(http.post(table_url(server, ns, "staged"), json=body), 409, "CommitFailedException")
    # assert-create with other requirements on a missing table is invalid (as in Java's CatalogHandlers).
    body2 = dict(body, requirements=[{"type": "assert-create"}, {"type": "assert-current-schema-id", "current-schema-id": 0}])
    err = assert_error(http.post(table_url(server, ns, "staged2"), json=body2), 400, "BadRequestException")
    assert "Invalid create requirements" in err["message"], err
    assert http.head(table_url(server, ns, "staged2")).status_code == 404


def test_stage_create_of_existing_name_is_409(server, http):
    ns = new_ns(http, server)
    create_table_raw(http, server, ns, "x")
    r = http.post(table_url(server, ns), json={"name": "x", "schema": SIMPLE_SCHEMA_JSON, "stage-create": True})
    assert_error(r, 409, "AlreadyExistsException")


# ------------------------------------------------------------------- listing


def test_list_tables_paging(any_server, http):
    server = any_server
    ns = new_ns(http, server)
    names = [f"t{i:02d}" for i in range(7)]
    for n in names:
        create_table_raw(http, server, ns, n)
    url = table_url(server, ns)

    unpaged = http.get(url).json()
    assert sorted(i["name"] for i in unpaged["identifiers"]) == names
    assert all(i["namespace"] == [ns] for i in unpaged["identifiers"])
    assert unpaged.get("next-page-token") is None

    seen, token, pages = [], "", []
    for _ in range(10):
        r = http.get(url, params={"pageToken": token, "pageSize": 3})
        assert r.status_code == 200, r.text
        page = r.json()
        assert "next-page-token" in page
        pages.append(len(page["identifiers"]))
        seen += [i["name"] for i in page["identifiers"]]
        token = page["next-page-token"]
        if token is None:
            break
    assert token is None, "paging did not end"
    assert pages == [3, 3, 1]
    assert sorted(seen) == names and len(seen) == len(set(seen))

    # pageSize alone starts paging too.
    first = http.get(url, params={"pageSize": 5}).json()
    assert len(first["identifiers"]) == 5 and first["next-page-token"]
    rest = http.get(url, params={"pageSize": 5, "pageToken": first["next-page-token"]}).json()
    assert len(rest["identifiers"]) == 2 and rest["next-page-token"] is None
    assert_error(http.get(url, params={"pageSize": 0}), 400, "BadRequestException")
    assert_error(http.get(url, params={"pageToken": "zz"}), 400, "BadRequestException")
    assert_error(http.get(table_url(server, unique("nons"))), 404, "NoSuchNamespaceException")


# ----------------------------------------------------- HEAD, DELETE, and more


def test_head_and_drop(server, http):
    ns = new_ns(http, server)
    created = create_table_raw(http, server, ns, "h")
    url = table_url(server, ns, "h")
    r = http.head(url)
    assert r.status_code == 204 and r.content == b""
    assert http.head(table_url(server, ns, "other")).status_code == 404
    assert http.head(table_url(server, unique("nons"), "h")).status_code == 404

    r = http.delete(url)
    assert r.status_code == 204 and r.content == b""
    assert http.head(url).status_code == 404
    assert_error(http.delete(url), 404, "NoSuchTableException")
    assert_error(http.get(url), 404, "NoSuchTableException")
    # Plain drop keeps the metadata file.
    assert local_path(created["metadata-location"]).is_file()

    purged = create_table_raw(http, server, ns, "p")
    assert http.delete(table_url(server, ns, "p"), params={"purgeRequested": "true"}).status_code == 204
    assert not local_path(purged["metadata-location"]).exists()
    assert not local_path(purged["metadata"]["location"]).exists()


def test_report_metrics(server, http):
    ns = new_ns(http, server)
    create_table_raw(http, server, ns, "m")
    url = table_url(server, ns, "m") + "/metrics"
    report = {
        "report-type": "scan-report", "table-name": f"{ns}.m", "snapshot-id": 1,
        "filter": True, "schema-id": 0, "projected-field-ids": [1], "projected-field-names": ["id"],
        "metrics": {"total-planning-duration": {"count": 1, "time-unit": "nanoseconds", "total-duration": 10}},
    }
    r = http.post(url, json=report)
    assert r.status_code == 204 and r.content == b""
    assert_error(http.post(table_url(server, ns, "missing") + "/metrics", json=report), 404, "NoSuchTableException")
    assert_error(http.post(url, data=b'{"report-type":', headers={"Content-Type": "application/json"}),
                 400, "BadRequestException")


def test_load_credentials(server, http):
    ns = new_ns(http, server)
    create_table_raw(http, server, ns, "c")
    r = http.get(table_url(server, ns, "c") + "/credentials")
    assert r.status_code == 200
    assert r.json() == {"storage-credentials": []}
    assert_error(http.get(table_url(server, ns, "nope") + "/credentials"), 404, "NoSuchTableException")


def test_register_returns_a_metadata_location_that_exists(server, http):
    ns = new_ns(http, server)
    created = create_table_raw(http, server, ns, "r")
    assert http.delete(table_url(server, ns, "r")).status_code == 204
    r = http.post(server.api(f"namespaces/{ns}/register"),
                  json={"name": "r2", "metadata-location": created["metadata-location"]})
    assert r.status_code == 200, r.text
    assert r.json()["metadata-location"] == created["metadata-location"]
    assert_metadata_file_matches(r.json()["metadata-location"], r.json()["metadata"])
    assert r.json()["metadata"]["table-uuid"] == created["metadata"]["table-uuid"]
    r = http.post(server.api(f"namespaces/{ns}/register"),
                  json={"name": "r3", "metadata-location": str(server.warehouse / "nope.metadata.json")})
    assert_error(r, 400, "BadRequestException")
    assert http.head(table_url(server, ns, "r3")).status_code == 404


# ---------------------------------------------------------- transactions


def test_transaction_across_two_tables(any_server, http):
    server = any_server
    ns = new_ns(http, server)
    a = create_table_raw(http, server, ns, "a")
    b = create_table_raw(http, server, ns, "b")
    url = server.api("transactions/commit")

    def change(name, md, extra_req=None, key="k", value="v"):
        reqs = [{"type": "assert-table-uuid", "uuid": md["table-uuid"]}] + ([extra_req] if extra_req else [])
        return {"identifier": {"namespace": [ns], "name": name}, "requirements": reqs,
                "updates": [{"action": "set-properties", "updates": {key: value}}]}

    files_a = metadata_files(a["metadata-location"])
    files_b = metadata_files(b["metadata-location"])
    # The second table's requirement fails: neither table changes.
    bad = {"table-changes": [
        change("a", a["metadata"], value="1"),
        change("b", b["metadata"], {"type": "assert-current-schema-id", "current-schema-id": 5}, value="1"),
    ]}
    assert_error(http.post(url, json=bad), 409, "CommitFailedException")
    for name, created, files in (("a", a, files_a), ("b", b, files_b)):
        now = load(http, server, ns, name)
        assert now["metadata-location"] == created["metadata-location"], name
        assert "k" not in now["metadata"]["properties"]
        assert metadata_files(created["metadata-location"]) == files, f"{name}: a prepared file was left behind"

    # Both hold: both change, each gets a new metadata version.
    good = {"table-changes": [change("a", a["metadata"], value="2"), change("b", b["metadata"], value="3")]}
    r = http.post(url, json=good)
    assert r.status_code == 204, r.text
    la, lb = load(http, server, ns, "a"), load(http, server, ns, "b")
    assert la["metadata"]["properties"]["k"] == "2" and lb["metadata"]["properties"]["k"] == "3"
    assert la["metadata-location"] != a["metadata-location"] and lb["metadata-location"] != b["metadata-location"]
    for body in (la, lb):
        assert_metadata_file_matches(body["metadata-location"], body["metadata"])

    # A missing table in the transaction: 404, nothing changes.
    missing = {"table-changes": [change("a", a["metadata"], value="4"),
                                 {"identifier": {"namespace": [ns], "name": "zz"}, "requirements": [], "updates": []}]}
    assert http.post(url, json=missing).status_code == 404
    assert load(http, server, ns, "a")["metadata-location"] == la["metadata-location"]
    # An invalid update in the second table: 400, nothing changes.
    invalid = {"table-changes": [change("a", a["metadata"], value="5"),
                                 {"identifier": {"namespace": [ns], "name": "b"}, "requirements": [],
                                  "updates": [{"action": "set-current-schema", "schema-id": 77}]}]}
    assert_error(http.post(url, json=invalid), 400, "BadRequestException")
    assert load(http, server, ns, "a")["metadata"]["properties"]["k"] == "2"
    # The same table twice and a change without identifier are refused.
    twice = {"table-changes": [change("a", a["metadata"]), change("a", a["metadata"])]}
    assert_error(http.post(url, json=twice), 400)
    no_ident = {"table-changes": [{"requirements": [], "updates": []}]}
    assert_error(http.post(url, json=no_ident), 400)


# --------------------------------------------------------------- rename


def test_rename_errors(server, http):
    ns = new_ns(http, server)
    create_table_raw(http, server, ns, "a")
    create_table_raw(http, server, ns, "b")
    url = server.api("tables/rename")

    def ident(n, name):
        return {"namespace": [n], "name": name}

    assert_error(http.post(url, json={"source": ident(ns, "a"), "destination": ident(ns, "b")}), 409, "AlreadyExistsException")
    assert_error(http.post(url, json={"source": ident(ns, "zz"), "destination": ident(ns, "c")}), 404, "NoSuchTableException")
    assert_error(http.post(url, json={"source": ident(ns, "a"), "destination": ident(unique("nons"), "c")}), 404,
                 "NoSuchNamespaceException")
    assert_error(http.post(url, data=b"{", headers={"Content-Type": "application/json"}), 400, "BadRequestException")
    r = http.post(url, json={"source": ident(ns, "a"), "destination": ident(ns, "c")})
    assert r.status_code == 204
    assert http.head(table_url(server, ns, "a")).status_code == 404
    assert http.head(table_url(server, ns, "c")).status_code == 204
