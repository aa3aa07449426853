"""Where table files go and what the server may delete: a `file://`
warehouse, table locations the warehouse cannot hold, and purges and
metadata expiry that must stay inside the warehouse.

Tests that make the server delete files run on their own server
(`fresh_server`), and every file they could touch lives in that test's
temporary directory.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest
from pyiceberg.schema import Schema
from pyiceberg.types import LongType, NestedField

from harness import (
    SIMPLE_SCHEMA_JSON,
    BingsanServer,
    assert_metadata_file_matches,
    create_table_raw,
    table_url,
    unique,
)

SCHEMA = Schema(NestedField(1, "id", LongType(), required=True))
ARROW = pa.schema([pa.field("id", pa.int64(), nullable=False)])


def new_ns(http, server) -> str:
    ns = unique()
    assert http.post(server.api("namespaces"), json={"namespace": [ns]}).status_code == 200
    return ns


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
        root = server.warehouse.resolve()
        assert t.location() == (root / ns / "t").as_uri()
        assert t.metadata_location.startswith((root / ns / "t" / "metadata").as_uri() + "/")
        t.append(pa.Table.from_pylist([{"id": 1}, {"id": 2}], schema=ARROW))
        assert_metadata_file_matches(t.metadata_location, t.metadata)
        assert sorted(r["id"] for r in cat.load_table((ns, "t")).scan().to_arrow().to_pylist()) == [1, 2]
        cat.purge_table((ns, "t"))
        assert not (root / ns / "t").exists()
    finally:
        server.stop()


def test_purge_of_a_table_outside_the_warehouse_deletes_nothing(fresh_server, http):
    server = fresh_server
    ns = new_ns(http, server)
    outside = server.workdir / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("not the catalog's")
    created = create_table_raw(http, server, ns, "t", location=str(outside))
    assert created["metadata"]["location"] == str(outside)
    assert Path(created["metadata-location"]).is_file()
    assert http.delete(table_url(server, ns, "t"), params={"purgeRequested": "true"}).status_code == 204
    assert http.head(table_url(server, ns, "t")).status_code == 404
    assert (outside / "keep.txt").is_file()
    assert Path(created["metadata-location"]).is_file()


def test_purge_with_dot_dot_location_stays_inside_the_warehouse(fresh_server, http):
    server = fresh_server
    ns = new_ns(http, server)
    victim = server.workdir / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("not the catalog's")
    create_table_raw(http, server, ns, "t", location=f"{server.warehouse}/../victim")
    assert http.delete(table_url(server, ns, "t"), params={"purgeRequested": "true"}).status_code == 204
    assert (victim / "keep.txt").is_file(), "purge deleted a directory outside the warehouse"


def test_metadata_expiry_never_deletes_outside_the_warehouse(fresh_server, http):
    server = fresh_server
    ns = new_ns(http, server)
    victim = server.workdir / "victim.txt"
    victim.write_text("not the catalog's")
    md = create_table_raw(http, server, ns, "src")["metadata"]
    md["metadata-log"] = [{"timestamp-ms": 1, "metadata-file": str(victim)}]
    md["properties"] = {"write.metadata.previous-versions-max": "1",
                        "write.metadata.delete-after-commit.enabled": "true"}
    crafted = server.warehouse / "crafted.metadata.json"
    crafted.write_text(json.dumps(md))
    r = http.post(server.api(f"namespaces/{ns}/register"), json={"name": "reg", "metadata-location": str(crafted)})
    assert r.status_code == 200, r.text
    r = http.post(table_url(server, ns, "reg"), json={"updates": [{"action": "set-properties", "updates": {"x": "1"}}]})
    assert r.status_code == 200, r.text
    assert [e["metadata-file"] for e in r.json()["metadata"]["metadata-log"]] == [str(crafted)]
    assert victim.is_file(), "a commit deleted a file outside the warehouse"


@pytest.mark.parametrize("location", ["relative/path", "s3://bucket/table"])
def test_unusable_location_is_a_client_error(server, http, location):
    ns = new_ns(http, server)
    r = http.post(table_url(server, ns), json={"name": "t", "schema": SIMPLE_SCHEMA_JSON, "location": location})
    statuses = {"create": r.status_code}
    create_table_raw(http, server, ns, "ok")
    before = http.get(table_url(server, ns, "ok")).json()["metadata-location"]
    r = http.post(table_url(server, ns, "ok"), json={"updates": [{"action": "set-location", "location": location}]})
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
