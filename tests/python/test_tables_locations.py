"""Where table files go and what the server may delete or read.

Locations are `file://` URIs inside the warehouse (after `..`, symbolic
links and `file://` are normalised); default locations carry the table's
UUID so two names never share one; no two live tables or views overlap;
purges delete only what their table owns; register reads only regular files
inside the warehouse and never quotes them.

Tests that make the server delete files run on their own server
(`fresh_server`), and every file they could touch lives in that test's
temporary directory.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from urllib.parse import quote

import pyarrow as pa
import pytest
from pyiceberg.schema import Schema
from pyiceberg.types import LongType, NestedField

from harness import (
    SIMPLE_SCHEMA_JSON,
    BingsanServer,
    assert_error,
    assert_metadata_file_matches,
    create_table_raw,
    local_path,
    table_url,
    unique,
    view_url,
)

SCHEMA = Schema(NestedField(1, "id", LongType(), required=True))
ARROW = pa.schema([pa.field("id", pa.int64(), nullable=False)])


def new_ns(http, server, *parts: str) -> str | tuple:
    ns = parts or (unique(),)
    assert http.post(server.api("namespaces"), json={"namespace": list(ns)}).status_code == 200
    return ns if parts else ns[0]


def root_uri(server) -> str:
    return "file://" + str(server.warehouse.resolve())


def dotted(part: str) -> str:
    """A path segment that survives any client's dot-segment handling."""
    return quote(part, safe="").replace(".", "%2E")


def object_url(server, ns: str, name: str | None = None) -> str:
    url = server.api(f"namespaces/{dotted(ns)}/tables")
    return url if name is None else f"{url}/{dotted(name)}"


def create(http, server, ns, name: str, location: str | None = None):
    body = {"name": name, "schema": SIMPLE_SCHEMA_JSON}
    if location is not None:
        body["location"] = location
    return http.post(table_url(server, ns), json=body)


def set_location(http, server, ns, name: str, location: str):
    return http.post(table_url(server, ns, name), json={"updates": [{"action": "set-location", "location": location}]})


def assert_location_refused(resp, *needles: str) -> str:
    message = assert_error(resp, 400, "BadRequestException")["message"]
    for needle in needles:
        assert needle in message, message
    return message


# ----------------------------------------------------------------- locations are URIs


class FileUriServer(BingsanServer):
    """A server whose warehouse is given as a file:// URI."""

    def command(self) -> list[str]:
        cmd = super().command()
        cmd[cmd.index("--warehouse") + 1] = self.warehouse.as_uri()
        return cmd


def test_file_uri_warehouse(tmp_path, binary):
    server = FileUriServer(tmp_path / "srv", binary=binary, name="file-uri").start()
    try:
        cat = server.catalog()
        ns = unique()
        cat.create_namespace(ns)
        t = cat.create_table((ns, "t"), schema=SCHEMA)
        assert t.location() == f"{root_uri(server)}/{ns}/t-{t.metadata.table_uuid}"
        assert t.metadata_location.startswith(t.location() + "/metadata/00000-")
        t.append(pa.Table.from_pylist([{"id": 1}, {"id": 2}], schema=ARROW))
        assert_metadata_file_matches(t.metadata_location, t.metadata)
        assert sorted(r["id"] for r in cat.load_table((ns, "t")).scan().to_arrow().to_pylist()) == [1, 2]
        cat.purge_table((ns, "t"))
        assert not local_path(t.location()).exists()
    finally:
        server.stop()


def test_a_path_warehouse_answers_only_uris(server, http):
    """`--warehouse PATH`: every location answered carries `file://`."""
    ns = new_ns(http, server)
    created = create_table_raw(http, server, ns, "t")
    md = created["metadata"]
    assert md["location"] == f"{root_uri(server)}/{ns}/t-{md['table-uuid']}"
    assert created["metadata-location"].startswith(md["location"] + "/metadata/00000-")
    r = http.post(table_url(server, ns, "t"), json={"updates": [{"action": "set-properties", "updates": {"a": "1"}}]})
    assert r.status_code == 200, r.text
    assert [e["metadata-file"] for e in r.json()["metadata"]["metadata-log"]] == [created["metadata-location"]]
    assert r.json()["metadata-location"].startswith(md["location"] + "/metadata/00001-")
    view = http.post(view_url(server, ns), json={
        "name": "v", "schema": SIMPLE_SCHEMA_JSON,
        "view-version": {"version-id": 1, "timestamp-ms": 1, "schema-id": 7, "summary": {},
                         "representations": [{"type": "sql", "sql": "SELECT 1", "dialect": "spark"}],
                         "default-namespace": [ns]}})
    assert view.status_code == 200, view.text
    vmd = view.json()["metadata"]
    assert vmd["location"] == f"{root_uri(server)}/{ns}/v-{vmd['view-uuid']}"
    assert view.json()["metadata-location"].startswith(vmd["location"] + "/metadata/")


# ----------------------------------------------------------------- default locations never collide


@pytest.mark.parametrize("first,second", [("a/b", "a%2Fb"), ("..", "%2E%2E"), (".", "%2E")])
def test_names_an_encoding_would_merge_keep_their_own_files(fresh_server, http, first, second):
    server = fresh_server
    ns = new_ns(http, server)
    one = create_table_raw(http, server, ns, first)
    two = create_table_raw(http, server, ns, second)
    assert one["metadata"]["location"] != two["metadata"]["location"]
    for t in (one, two):
        assert local_path(t["metadata"]["location"]).parent == server.warehouse.resolve() / ns
    assert http.delete(object_url(server, ns, second), params={"purgeRequested": "true"}).status_code == 204
    assert not local_path(two["metadata"]["location"]).exists()
    loaded = http.get(object_url(server, ns, first))
    assert loaded.status_code == 200
    assert local_path(loaded.json()["metadata-location"]).is_file(), "purging one table deleted the other's files"


def test_namespaces_named_dot_dot_stay_inside_the_warehouse(fresh_server, http):
    server = fresh_server
    wh = server.warehouse.resolve()
    r = http.post(server.api("namespaces"), json={"namespace": [".."]})
    assert r.status_code == 200, r.text
    r = http.post(object_url(server, ".."), json={"name": "t", "schema": SIMPLE_SCHEMA_JSON})
    assert r.status_code == 200, r.text
    assert local_path(r.json()["metadata"]["location"]).parent == wh / "_."
    for parts in (("..", ".."), ("a/../..",), ("a/../..", "..")):
        ns = new_ns(http, server, *parts)
        path = local_path(create_table_raw(http, server, ns, "t")["metadata"]["location"])
        assert path.parent == wh.joinpath(*("_." if p == ".." else "a_.._.." for p in parts))
        assert path.is_dir()
    assert sorted(p.name for p in wh.iterdir()) == ["_.", "a_.._.."]


# ----------------------------------------------------------------- no overlapping locations


def test_locations_equal_to_inside_or_enclosing_another_are_refused(server, http):
    ns_a, ns_b = new_ns(http, server), new_ns(http, server)
    taken = create_table_raw(http, server, ns_a, "t")["metadata"]["location"]
    ns_dir = taken.rsplit("/", 1)[0]
    for location in (taken, taken + "/", taken + "/data/x", ns_dir, root_uri(server) + "/" + ns_a + "/../" + ns_a,
                     local_path(taken).as_posix()):
        assert_location_refused(create(http, server, ns_b, "c", location), "overlaps")
    assert_location_refused(create(http, server, ns_b, "c", root_uri(server)), "warehouse root")
    assert_location_refused(create(http, server, ns_b, "c", root_uri(server) + "/"), "warehouse root")
    # Views share the rule, both ways.
    view = {"name": "v", "schema": SIMPLE_SCHEMA_JSON, "location": taken + "/v",
            "view-version": {"version-id": 1, "timestamp-ms": 1, "schema-id": 7, "summary": {},
                             "representations": [{"type": "sql", "sql": "SELECT 1", "dialect": "spark"}],
                             "default-namespace": [ns_b]}}
    assert_location_refused(http.post(view_url(server, ns_b), json=view), "overlaps")
    assert http.get(table_url(server, ns_b, "c")).status_code == 404
    # A sibling is fine, and so is a location next to the default ones.
    assert create(http, server, ns_b, "c", taken + "-sibling").status_code == 200


def test_commits_cannot_move_a_table_over_another(server, http):
    ns = new_ns(http, server)
    a = create_table_raw(http, server, ns, "a")["metadata"]["location"]
    b = create_table_raw(http, server, ns, "b")
    for location in (a, a + "/inside", a.rsplit("/", 1)[0], root_uri(server)):
        assert_location_refused(set_location(http, server, ns, "b", location))
    assert http.get(table_url(server, ns, "b")).json()["metadata-location"] == b["metadata-location"]
    # Moving into its own subtree, or back, is its own business.
    own = b["metadata"]["location"]
    assert set_location(http, server, ns, "b", own + "/moved").status_code == 200
    assert set_location(http, server, ns, "b", own).status_code == 200
    # The location it left is free again; the one it holds is not.
    assert set_location(http, server, ns, "b", own + "-2").status_code == 200
    assert create(http, server, ns, "c", own).status_code == 200
    assert_location_refused(create(http, server, ns, "d", own + "-2"), "overlaps")


def test_a_transaction_cannot_move_two_tables_into_each_other(server, http):
    ns = new_ns(http, server)
    a = create_table_raw(http, server, ns, "a")
    b = create_table_raw(http, server, ns, "b")
    target = a["metadata"]["location"] + "-moved"
    for inner in (target, target + "/inner"):
        changes = [
            {"identifier": {"namespace": [ns], "name": name},
             "requirements": [], "updates": [{"action": "set-location", "location": where}]}
            for name, where in (("a", target), ("b", inner))
        ]
        r = http.post(server.api("transactions/commit"), json={"table-changes": changes})
        assert_location_refused(r, "overlaps")
    # Nothing moved, and no metadata file of a refused attempt is left.
    for t in (a, b):
        name = "a" if t is a else "b"
        assert http.get(table_url(server, ns, name)).json()["metadata-location"] == t["metadata-location"]
        assert sorted(p.name for p in local_path(t["metadata-location"]).parent.iterdir()) == [
            local_path(t["metadata-location"]).name
        ]


def test_staged_creates_and_registers_are_checked_too(server, http):
    ns = new_ns(http, server)
    taken = create_table_raw(http, server, ns, "t")
    staged = http.post(table_url(server, ns), json={"name": "s", "schema": SIMPLE_SCHEMA_JSON, "stage-create": True,
                                                    "location": taken["metadata"]["location"] + "/x"})
    assert_location_refused(staged, "overlaps")
    r = http.post(table_url(server, ns, "s"), json={
        "requirements": [{"type": "assert-create"}],
        "updates": [{"action": "add-schema", "schema": SIMPLE_SCHEMA_JSON}, {"action": "set-current-schema", "schema-id": -1},
                    {"action": "add-spec", "spec": {"spec-id": 0, "fields": []}}, {"action": "set-default-spec", "spec-id": -1},
                    {"action": "add-sort-order", "sort-order": {"order-id": 0, "fields": []}},
                    {"action": "set-default-sort-order", "sort-order-id": -1},
                    {"action": "set-location", "location": taken["metadata"]["location"]}]})
    assert_location_refused(r, "overlaps")
    r = http.post(server.api(f"namespaces/{ns}/register"),
                  json={"name": "r", "metadata-location": taken["metadata-location"]})
    assert_location_refused(r, "overlaps")
    assert http.head(table_url(server, ns, "s")).status_code == 404
    assert http.head(table_url(server, ns, "r")).status_code == 404


def test_a_renamed_table_keeps_its_location_and_its_claim(server, http):
    ns = new_ns(http, server)
    loc = create_table_raw(http, server, ns, "old")["metadata"]["location"]
    r = http.post(server.api("tables/rename"), json={"source": {"namespace": [ns], "name": "old"},
                                                      "destination": {"namespace": [ns], "name": "new"}})
    assert r.status_code == 204, r.text
    assert http.get(table_url(server, ns, "new")).json()["metadata"]["location"] == loc
    assert_location_refused(create(http, server, ns, "other", loc), "overlaps")
    # Dropping the renamed table frees the location.
    assert http.delete(table_url(server, ns, "new")).status_code == 204
    assert create(http, server, ns, "other", loc).status_code == 200


def test_concurrent_creates_of_nested_locations_never_both_succeed(server, http):
    ns = new_ns(http, server)
    rounds, outcomes = 25, []
    for i in range(rounds):
        outer = f"{root_uri(server)}/{ns}/race{i}"
        statuses = [0, 0]
        barrier = threading.Barrier(2)

        def go(slot: int, name: str, location: str) -> None:
            barrier.wait(timeout=10)
            statuses[slot] = create(http, server, ns, name, location).status_code

        threads = [threading.Thread(target=go, args=(0, f"o{i}", outer)),
                   threading.Thread(target=go, args=(1, f"i{i}", outer + "/inner"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        outcomes.append(tuple(statuses))
    assert all(sorted(o) == [200, 400] for o in outcomes), outcomes


def test_purge_skips_files_another_live_table_owns(fresh_server, http):
    server = fresh_server
    ns = new_ns(http, server)
    victim = create_table_raw(http, server, ns, "victim")
    md = create_table_raw(http, server, ns, "src")["metadata"]
    md["location"] = root_uri(server) + "/crafted"
    md["metadata-log"] = [{"timestamp-ms": 1, "metadata-file": victim["metadata-location"]}]
    crafted = server.warehouse / "crafted.metadata.json"
    crafted.write_text(json.dumps(md))
    r = http.post(server.api(f"namespaces/{ns}/register"), json={"name": "reg", "metadata-location": str(crafted)})
    assert r.status_code == 200, r.text
    assert http.delete(table_url(server, ns, "reg"), params={"purgeRequested": "true"}).status_code == 204
    assert not crafted.exists()
    assert local_path(victim["metadata-location"]).is_file(), "a purge deleted another table's metadata file"
    assert http.get(table_url(server, ns, "victim")).status_code == 200


# ----------------------------------------------------------------- locations outside the warehouse


def outside_locations(server) -> list[str]:
    wh = server.warehouse.resolve()
    return ["file:///etc", "/etc", "file:/etc/x", "file://otherhost/" + str(wh).lstrip("/") + "/x",
            f"{wh}/../victim", f"file://{wh}/../../victim", f"file://{wh}/link-out/t", "relative/path",
            "s3://bucket/table", "file:///"]


def test_locations_outside_the_warehouse_are_refused_and_untouched(fresh_server, http):
    server = fresh_server
    ns = new_ns(http, server)
    victim = server.workdir / "victim"
    victim.mkdir()
    (server.warehouse / "link-out").symlink_to(victim)
    ok = create_table_raw(http, server, ns, "ok")
    etc_before = sorted(Path("/etc").iterdir())
    for location in outside_locations(server):
        assert_location_refused(create(http, server, ns, "t", location))
        assert_location_refused(set_location(http, server, ns, "ok", location))
    assert list(victim.iterdir()) == [], "a refused location was written to"
    assert sorted(Path("/etc").iterdir()) == etc_before, "a refused location was written to"
    assert http.get(table_url(server, ns, "ok")).json()["metadata-location"] == ok["metadata-location"]
    assert http.head(table_url(server, ns, "t")).status_code == 404


@pytest.mark.parametrize("location", ["relative/path", "s3://bucket/table", "file:///etc"])
def test_unusable_location_is_a_client_error(server, http, location):
    ns = new_ns(http, server)
    r = http.post(table_url(server, ns), json={"name": "t", "schema": SIMPLE_SCHEMA_JSON, "location": location})
    statuses = {"create": r.status_code}
    create_table_raw(http, server, ns, "ok")
    before = http.get(table_url(server, ns, "ok")).json()["metadata-location"]
    r = set_location(http, server, ns, "ok", location)
    statuses["commit set-location"] = r.status_code
    assert http.get(table_url(server, ns, "ok")).json()["metadata-location"] == before
    r = http.post(table_url(server, ns, "staged"), json={
        "requirements": [{"type": "assert-create"}],
        "updates": [{"action": "add-schema", "schema": SIMPLE_SCHEMA_JSON}, {"action": "set-current-schema", "schema-id": -1},
                    {"action": "add-spec", "spec": {"spec-id": 0, "fields": []}}, {"action": "set-default-spec", "spec-id": -1},
                    {"action": "add-sort-order", "sort-order": {"order-id": 0, "fields": []}},
                    {"action": "set-default-sort-order", "sort-order-id": -1},
                    {"action": "set-location", "location": location}]})
    statuses["commit assert-create"] = r.status_code
    assert statuses == {"create": 400, "commit set-location": 400, "commit assert-create": 400}


def test_metadata_expiry_never_deletes_outside_the_warehouse(fresh_server, http):
    server = fresh_server
    ns = new_ns(http, server)
    victim = server.workdir / "victim.txt"
    victim.write_text("not the catalog's")
    md = create_table_raw(http, server, ns, "src")["metadata"]
    md["location"] = root_uri(server) + "/crafted"
    md["metadata-log"] = [{"timestamp-ms": 1, "metadata-file": str(victim)}]
    md["properties"] = {"write.metadata.previous-versions-max": "1",
                        "write.metadata.delete-after-commit.enabled": "true"}
    crafted = server.warehouse / "crafted.metadata.json"
    crafted.write_text(json.dumps(md))
    r = http.post(server.api(f"namespaces/{ns}/register"), json={"name": "reg", "metadata-location": str(crafted)})
    assert r.status_code == 200, r.text
    assert r.json()["metadata-location"] == "file://" + str(crafted.resolve())
    r = http.post(table_url(server, ns, "reg"), json={"updates": [{"action": "set-properties", "updates": {"x": "1"}}]})
    assert r.status_code == 200, r.text
    assert [e["metadata-file"] for e in r.json()["metadata"]["metadata-log"]] == ["file://" + str(crafted.resolve())]
    assert victim.is_file(), "a commit deleted a file outside the warehouse"


# ----------------------------------------------------------------- register reads only the warehouse


SECRET = "root:x:0:0:SECRET-MARKER"


@pytest.mark.parametrize("kind", ["register", "register-view"])
def test_register_reads_only_metadata_files_inside_the_warehouse(fresh_server, http, kind):
    server = fresh_server
    ns = new_ns(http, server)
    outside = server.workdir / "secret.txt"
    outside.write_text(SECRET)
    (server.warehouse / "dir.metadata.json").mkdir()
    (server.warehouse / "text.metadata.json").write_text(SECRET + "\n")
    (server.warehouse / "shape.metadata.json").write_text(json.dumps({"format-version": SECRET, "x": [SECRET]}))
    (server.warehouse / "link.metadata.json").symlink_to(outside)
    wh = server.warehouse.resolve()
    cases = {
        "/etc/passwd": "outside the warehouse",
        str(outside): "outside the warehouse",
        f"file://{wh}/../secret.txt": "outside the warehouse",
        str(wh / "link.metadata.json"): "outside the warehouse",
        str(wh / "missing.metadata.json"): "no such file",
        str(wh / "dir.metadata.json"): "not a regular file",
        str(wh / "text.metadata.json"): "not valid",
        str(wh / "shape.metadata.json"): "not valid",
        "s3://bucket/x.metadata.json": "only file://",
    }
    for location, why in cases.items():
        r = http.post(server.api(f"namespaces/{ns}/{kind}"), json={"name": "r", "metadata-location": location})
        message = assert_location_refused(r, why)
        ours = message.replace(location, "")
        for leak in ("root:x", "SECRET", "fd", "os error", "No such file", "Is a directory", "\n", str(wh)):
            assert leak not in ours, (location, message)


def test_parse_errors_do_not_quote_the_body(server, http):
    ns = new_ns(http, server)
    r = http.post(table_url(server, ns), data=b'{"name": "t", "schema": {"type": "struct", SECRETBODY', headers={
        "Content-Type": "application/json"})
    message = assert_error(r, 400)["message"]
    assert "SECRET" not in message and "\n" not in message and "line 1 column 44" in message, message


# ----------------------------------------------------------------- tables stored with bare paths


def test_a_table_stored_with_bare_paths_loads_commits_and_purges(fresh_server, http):
    """The form stored before locations carried a scheme: bare paths in the
    metadata and its log. It loads as stored, takes `file://` with its next
    version, takes appends, and purges."""
    server = fresh_server
    ns = new_ns(http, server)
    wh = server.warehouse.resolve()
    md = create_table_raw(http, server, ns, "src")["metadata"]
    bare = f"{wh}/legacy/t"
    md.update({"table-uuid": "8c12d441-03fe-4693-9a96-a0705ddf69c1", "location": bare,
               "metadata-log": [{"timestamp-ms": 1, "metadata-file": f"{bare}/metadata/old.metadata.json"}]})
    (wh / "legacy" / "t" / "metadata").mkdir(parents=True)
    file = wh / "legacy" / "t" / "metadata" / "00003-old.metadata.json"
    file.write_text(json.dumps(md))
    r = http.post(server.api(f"namespaces/{ns}/register"), json={"name": "t", "metadata-location": str(file)})
    assert r.status_code == 200, r.text
    loaded = http.get(table_url(server, ns, "t")).json()
    assert loaded["metadata"]["location"] == bare and loaded["metadata-location"] == f"file://{file}"
    # The same place in either form is one location.
    assert_location_refused(create(http, server, ns, "other", f"file://{bare}"), "overlaps")

    cat = server.catalog()
    t = cat.load_table((ns, "t"))
    t.append(pa.Table.from_pylist([{"id": 1}, {"id": 2}], schema=ARROW))
    after = http.get(table_url(server, ns, "t")).json()
    assert after["metadata"]["location"] == f"file://{bare}"
    assert after["metadata-location"].startswith(f"file://{bare}/metadata/00004-")
    assert [e["metadata-file"] for e in after["metadata"]["metadata-log"]] == [
        f"file://{bare}/metadata/old.metadata.json", f"file://{file}"]
    assert sorted(r["id"] for r in cat.load_table((ns, "t")).scan().to_arrow().to_pylist()) == [1, 2]
    assert http.delete(table_url(server, ns, "t"), params={"purgeRequested": "true"}).status_code == 204
    assert not (wh / "legacy" / "t").exists()
    assert create(http, server, ns, "other", f"file://{bare}").status_code == 200
