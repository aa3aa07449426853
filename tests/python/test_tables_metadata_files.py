"""Metadata files in the warehouse: the log, its limit, and deleting what
falls off it (`write.metadata.previous-versions-max`,
`write.metadata.delete-after-commit.enabled`)."""

from __future__ import annotations


import pyarrow as pa
from pyiceberg.schema import Schema
from pyiceberg.types import LongType, NestedField

from harness import assert_metadata_file_matches, local_path, unique

SCHEMA = Schema(NestedField(1, "id", LongType(), required=True))
ARROW = pa.schema([pa.field("id", pa.int64(), nullable=False)])

MAX = "write.metadata.previous-versions-max"
DELETE = "write.metadata.delete-after-commit.enabled"


def metadata_files(table) -> set[str]:
    d = local_path(table.metadata_location).parent
    return {str(p) for p in d.glob("*.metadata.json")}


def five_appends(table) -> list[str]:
    """The metadata location after create and after each of 5 appends."""
    seen = [table.metadata_location]
    for i in range(5):
        table.append(pa.Table.from_pylist([{"id": i}], schema=ARROW))
        seen.append(table.metadata_location)
        assert_metadata_file_matches(table.metadata_location, table.metadata)
    assert len(set(seen)) == 6
    return seen


def test_log_limit_with_delete_after_commit(catalog):
    ns = unique()
    catalog.create_namespace(ns)
    t = catalog.create_table((ns, "trimmed"), schema=SCHEMA, properties={MAX: "2", DELETE: "true"})
    seen = five_appends(t)
    t = catalog.load_table((ns, "trimmed"))
    assert t.metadata_location == seen[-1]
    assert [e.metadata_file for e in t.metadata.metadata_log] == seen[3:5]
    for loc in seen[:3]:
        assert not local_path(loc).exists(), f"{loc} fell off the log but is still on disk"
    for loc in seen[3:]:
        assert local_path(loc).is_file(), loc
    assert metadata_files(t) == {str(local_path(x)) for x in seen[3:]}
    assert sorted(r["id"] for r in t.scan().to_arrow().to_pylist()) == [0, 1, 2, 3, 4]


def test_log_limit_without_delete_after_commit_keeps_files(catalog):
    ns = unique()
    catalog.create_namespace(ns)
    t = catalog.create_table((ns, "kept"), schema=SCHEMA, properties={MAX: "2"})
    seen = five_appends(t)
    t = catalog.load_table((ns, "kept"))
    assert [e.metadata_file for e in t.metadata.metadata_log] == seen[3:5]
    for loc in seen:
        assert local_path(loc).is_file(), f"{loc} was deleted without delete-after-commit"
    assert metadata_files(t) == {str(local_path(x)) for x in seen}


def test_default_log_keeps_every_version(catalog):
    ns = unique()
    catalog.create_namespace(ns)
    t = catalog.create_table((ns, "default"), schema=SCHEMA, properties={DELETE: "true"})
    seen = five_appends(t)
    t = catalog.load_table((ns, "default"))
    assert [e.metadata_file for e in t.metadata.metadata_log] == seen[:-1]
    # Timestamps are the previous versions' last-updated-ms, in order.
    stamps = [e.timestamp_ms for e in t.metadata.metadata_log]
    assert stamps == sorted(stamps)
    assert metadata_files(t) == {str(local_path(x)) for x in seen}


def test_lowering_the_limit_later_deletes_what_falls_off(catalog):
    ns = unique()
    catalog.create_namespace(ns)
    t = catalog.create_table((ns, "later"), schema=SCHEMA)
    seen = five_appends(t)
    with t.transaction() as tx:
        tx.set_properties(**{MAX: "1", DELETE: "true"})
    seen.append(t.metadata_location)
    t = catalog.load_table((ns, "later"))
    assert [e.metadata_file for e in t.metadata.metadata_log] == [seen[-2]]
    assert metadata_files(t) == {str(local_path(seen[-2])), str(local_path(seen[-1]))}
    assert_metadata_file_matches(t.metadata_location, t.metadata)
