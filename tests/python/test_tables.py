"""Tables through PyIceberg's RestCatalog: the whole lifecycle.

Every test runs against each shared server variant (`catalog` is
parametrized: no prefix, --prefix, --prefix with --namespace-separator) in
its own `harness.unique()` namespace. After each commit the metadata file the
server answered with is read back from the warehouse with PyIceberg's
`StaticTable` and compared (`check_file`).

Writes use identity partitions only: PyIceberg 0.12 needs the optional
`pyiceberg-core` package to compute bucket/truncate/time partition values
while writing, and the suite does not install it. Specs with those
transforms are still created, evolved and read back as metadata.
"""

from __future__ import annotations

import datetime as dt
import decimal
import os
import uuid

import pyarrow as pa
import pytest
from pyiceberg.exceptions import (
    CommitFailedException,
    NoSuchTableError,
    RESTError,
    TableAlreadyExistsError,
)
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema, assign_fresh_schema_ids
from pyiceberg.table.sorting import NullOrder, SortDirection, SortField, SortOrder
from pyiceberg.transforms import (
    BucketTransform,
    DayTransform,
    HourTransform,
    IdentityTransform,
    MonthTransform,
    TruncateTransform,
    YearTransform,
)
from pyiceberg.types import (
    BinaryType,
    BooleanType,
    DateType,
    DecimalType,
    DoubleType,
    FixedType,
    FloatType,
    IntegerType,
    ListType,
    LongType,
    MapType,
    NestedField,
    StringType,
    StructType,
    TimestampType,
    TimestamptzType,
    TimeType,
    UUIDType,
)

from harness import assert_metadata_file_matches, local_path, unique

# ------------------------------------------------------------------ helpers


def new_ns(catalog) -> str:
    ns = unique()
    catalog.create_namespace(ns)
    return ns


def check_file(table) -> None:
    """The current metadata file exists and holds what the server answered."""
    assert_metadata_file_matches(table.metadata_location, table.metadata)


def rows_of(table, **scan_args) -> list[dict]:
    """Every row of a scan, ordered by `id`."""
    return sorted(table.scan(**scan_args).to_arrow().to_pylist(), key=lambda r: r["id"])


SIMPLE = Schema(
    NestedField(1, "id", LongType(), required=True),
    NestedField(2, "name", StringType(), required=False),
)


def simple_rows(ids, tag: str = "r") -> pa.Table:
    return pa.Table.from_pylist(
        [{"id": i, "name": f"{tag}{i}"} for i in ids],
        schema=pa.schema([pa.field("id", pa.int64(), nullable=False), pa.field("name", pa.string())]),
    )


def data_files_exist(table) -> list[str]:
    """Paths of the data files of the current snapshot; asserts they exist."""
    files = [task.file.file_path for task in table.scan().plan_files()]
    assert files, "no data files"
    for f in files:
        assert local_path(f).is_file(), f
    return files


# One column of every type, with ids that are not 1..n: the client (and the
# server for raw requests) must give fresh ids.
ALL_TYPES = Schema(
    NestedField(10, "b", BooleanType()),
    NestedField(20, "i", IntegerType(), required=True),
    NestedField(30, "l", LongType()),
    NestedField(40, "f", FloatType()),
    NestedField(50, "dbl", DoubleType()),
    NestedField(60, "dec", DecimalType(10, 2)),
    NestedField(70, "d", DateType()),
    NestedField(80, "t", TimeType()),
    NestedField(90, "ts", TimestampType()),
    NestedField(100, "tstz", TimestamptzType()),
    NestedField(110, "s", StringType()),
    NestedField(120, "u", UUIDType()),
    NestedField(130, "fx", FixedType(16)),
    NestedField(140, "bin", BinaryType()),
    NestedField(150, "st", StructType(NestedField(151, "x", IntegerType()), NestedField(152, "y", StringType()))),
    NestedField(160, "lst", ListType(161, StringType(), element_required=False)),
    NestedField(170, "m", MapType(171, StringType(), 172, LongType(), value_required=False)),
    NestedField(180, "d2", DateType()),
    identifier_field_ids=[20],
)

ALL_TRANSFORMS_SPEC = PartitionSpec(
    PartitionField(110, 1000, IdentityTransform(), "s_identity"),
    PartitionField(30, 1001, BucketTransform(16), "l_bucket"),
    PartitionField(110, 1002, TruncateTransform(4), "s_trunc"),
    PartitionField(90, 1003, DayTransform(), "ts_day"),
    PartitionField(100, 1004, HourTransform(), "tstz_hour"),
    PartitionField(70, 1005, MonthTransform(), "d_month"),
    PartitionField(180, 1006, YearTransform(), "d2_year"),
)

ALL_TYPES_ORDER = SortOrder(
    SortField(30, IdentityTransform(), SortDirection.DESC, NullOrder.NULLS_LAST),
    SortField(110, BucketTransform(4), SortDirection.ASC, NullOrder.NULLS_FIRST),
)


def all_types_rows(schema: Schema, keys) -> pa.Table:
    rows = []
    for k in keys:
        rows.append({
            "b": k % 2 == 0,
            "i": k,
            "l": k * 1_000_000_007,
            "f": k / 4,
            "dbl": k / 3,
            "dec": decimal.Decimal(f"{k}.{k % 100:02d}"),
            "d": dt.date(2024, 1, 1) + dt.timedelta(days=k),
            "t": dt.time(k % 24, 2, 3, 456789),
            "ts": dt.datetime(2024, 1, 1, 12) + dt.timedelta(hours=k),
            "tstz": dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(minutes=k),
            "s": f"str-{k}" if k % 5 else None,
            "u": uuid.UUID(int=k * 7919),
            "fx": bytes([k % 256]) * 16,
            "bin": b"\x00\xff" * k,
            "st": {"x": k, "y": f"y{k}"},
            "lst": [str(k), None, "z"],
            "m": [("a", k), ("b", None)],
            "d2": dt.date(2000 + k, 6, 30),
        })
    return pa.Table.from_pylist(rows, schema=schema.as_arrow())


def by_name(schema: Schema):
    return {schema.find_column_name(f.field_id): f.field_id for f in schema.fields}


# --------------------------------------------------------- create and load


def test_create_all_types_with_spec_and_order_and_load_back(catalog):
    ns = new_ns(catalog)
    created = catalog.create_table(
        (ns, "all_types"),
        schema=ALL_TYPES,
        partition_spec=ALL_TRANSFORMS_SPEC,
        sort_order=ALL_TYPES_ORDER,
        properties={"owner": "tests", "comment": "every type"},
    )
    check_file(created)
    t = catalog.load_table((ns, "all_types"))
    assert t.metadata_location == created.metadata_location

    # Fresh ids, as the spec requires: what PyIceberg's own assignment gives.
    expected = assign_fresh_schema_ids(ALL_TYPES)
    assert t.schema() == expected, f"\n{t.schema()}\n!=\n{expected}"
    assert t.schema().schema_id == 0
    assert t.schema().identifier_field_ids == [2]
    assert t.metadata.last_column_id == expected.highest_field_id == 23
    assert [s.schema_id for s in t.schemas().values()] == [0]

    # Spec and order refer to the new ids of the same columns.
    old_to_new = {old: by_name(expected)[ALL_TYPES.find_column_name(old)] for old in (30, 70, 90, 100, 110, 180)}
    spec = t.spec()
    assert spec.spec_id == 0
    assert [(f.source_id, f.field_id, f.transform, f.name) for f in spec.fields] == [
        (old_to_new[f.source_id], 1000 + i, f.transform, f.name) for i, f in enumerate(ALL_TRANSFORMS_SPEC.fields)
    ]
    assert t.metadata.last_partition_id == 1006
    order = t.sort_order()
    assert order.order_id == 1
    assert [(f.source_id, f.transform, f.direction, f.null_order) for f in order.fields] == [
        (old_to_new[30], IdentityTransform(), SortDirection.DESC, NullOrder.NULLS_LAST),
        (old_to_new[110], BucketTransform(4), SortDirection.ASC, NullOrder.NULLS_FIRST),
    ]
    assert t.properties["owner"] == "tests" and t.properties["comment"] == "every type"
    assert t.format_version == 2
    assert t.metadata.current_snapshot_id is None and t.metadata.snapshots == []
    assert catalog.table_exists((ns, "all_types"))
    assert (ns, "all_types") in catalog.list_tables(ns)

    with pytest.raises(TableAlreadyExistsError):
        catalog.create_table((ns, "all_types"), schema=SIMPLE)


def test_append_every_type_and_read_back_exactly(catalog):
    ns = new_ns(catalog)
    t = catalog.create_table(
        (ns, "typed"),
        schema=ALL_TYPES,
        partition_spec=PartitionSpec(PartitionField(10, 1000, IdentityTransform(), "b")),
    )
    df = all_types_rows(t.schema(), range(1, 13))
    t.append(df)
    check_file(t)
    got = t.scan().to_arrow()
    assert got.num_rows == 12
    assert sorted(got.to_pylist(), key=lambda r: r["i"]) == df.to_pylist()
    # Column types as the Iceberg schema maps them.
    assert got.schema.names == df.schema.names
    # A fresh client sees the same table.
    again = catalog.load_table((ns, "typed"))
    assert again.metadata_location == t.metadata_location
    assert sorted(again.scan().to_arrow().to_pylist(), key=lambda r: r["i"]) == df.to_pylist()


# ------------------------------------------------- snapshots and time travel


def test_several_appends_make_snapshots_and_time_travel(catalog):
    ns = new_ns(catalog)
    t = catalog.create_table((ns, "tt"), schema=SIMPLE)
    batches = [simple_rows(range(0, 3)), simple_rows(range(3, 5)), simple_rows(range(5, 9))]
    snapshot_ids = []
    for b in batches:
        t.append(b)
        check_file(t)
        snapshot_ids.append(t.current_snapshot().snapshot_id)
    assert len(set(snapshot_ids)) == 3
    assert [s.snapshot_id for s in t.snapshots()] == snapshot_ids
    # A chain: each parent is the previous one; sequence numbers grow.
    assert [s.parent_snapshot_id for s in t.snapshots()] == [None] + snapshot_ids[:-1]
    assert [s.sequence_number for s in t.snapshots()] == [1, 2, 3]
    assert [s.summary["added-records"] for s in t.snapshots()] == ["3", "2", "4"]
    assert [e.snapshot_id for e in t.metadata.snapshot_log] == snapshot_ids

    for n, sid in enumerate(snapshot_ids):
        expected = sorted(sum((b.to_pylist() for b in batches[: n + 1]), []), key=lambda r: r["id"])
        assert rows_of(t, snapshot_id=sid) == expected, f"snapshot {n}"
    assert len(rows_of(t)) == 9


def test_overwrite_replaces_rows(catalog):
    ns = new_ns(catalog)
    t = catalog.create_table((ns, "ow"), schema=SIMPLE)
    t.append(simple_rows(range(5)))
    before = t.current_snapshot().snapshot_id
    t.overwrite(simple_rows([100, 101], "new"))
    check_file(t)
    assert rows_of(t) == simple_rows([100, 101], "new").to_pylist()
    # PyIceberg writes an overwrite as a delete snapshot then an append one.
    ops = [s.summary.operation.value for s in t.snapshots()]
    assert ops == ["append", "delete", "append"], ops
    chain = [s.snapshot_id for s in t.snapshots()]
    assert chain[0] == before
    assert [s.parent_snapshot_id for s in t.snapshots()] == [None, chain[0], chain[1]]
    assert t.current_snapshot().snapshot_id == chain[2]
    # The old data is still there by snapshot id.
    assert rows_of(t, snapshot_id=before) == simple_rows(range(5)).to_pylist()


def test_delete_with_filter_and_scan_with_row_filter(catalog):
    ns = new_ns(catalog)
    t = catalog.create_table(
        (ns, "del"), schema=SIMPLE, partition_spec=PartitionSpec(PartitionField(2, 1000, IdentityTransform(), "name"))
    )
    t.append(simple_rows(range(10)))
    t.delete("id >= 6")
    check_file(t)
    assert [r["id"] for r in rows_of(t)] == [0, 1, 2, 3, 4, 5]
    t.delete("name == 'r2'")
    check_file(t)
    assert [r["id"] for r in rows_of(t)] == [0, 1, 3, 4, 5]

    assert [r["id"] for r in rows_of(t, row_filter="id > 1 and id < 5")] == [3, 4]
    assert rows_of(t, row_filter="name == 'r4'") == [{"id": 4, "name": "r4"}]
    assert rows_of(t, row_filter="id > 100") == []
    only_ids = t.scan(row_filter="id <= 1", selected_fields=("id",)).to_arrow()
    assert only_ids.column_names == ["id"] and sorted(only_ids["id"].to_pylist()) == [0, 1]


def test_branches_and_tags(catalog):
    ns = new_ns(catalog)
    t = catalog.create_table((ns, "refs"), schema=SIMPLE)
    t.append(simple_rows([1, 2]))
    s1 = t.current_snapshot().snapshot_id
    t.append(simple_rows([3]))
    s2 = t.current_snapshot().snapshot_id

    t.manage_snapshots().create_branch(s1, "dev").create_tag(s2, "v1").commit()
    check_file(t)
    t = catalog.load_table((ns, "refs"))
    refs = t.refs()
    assert set(refs) == {"main", "dev", "v1"}
    assert (refs["main"].snapshot_id, refs["main"].snapshot_ref_type.value) == (s2, "branch")
    assert (refs["dev"].snapshot_id, refs["dev"].snapshot_ref_type.value) == (s1, "branch")
    assert (refs["v1"].snapshot_id, refs["v1"].snapshot_ref_type.value) == (s2, "tag")

    assert [r["id"] for r in rows_of(t, snapshot_id=t.snapshot_by_name("dev").snapshot_id)] == [1, 2]
    assert [r["id"] for r in rows_of(t, snapshot_id=t.snapshot_by_name("v1").snapshot_id)] == [1, 2, 3]

    # Writing to the branch moves only the branch.
    t.append(simple_rows([10]), branch="dev")
    check_file(t)
    t = catalog.load_table((ns, "refs"))
    dev = t.refs()["dev"].snapshot_id
    assert dev not in (s1, s2)
    assert t.snapshot_by_id(dev).parent_snapshot_id == s1
    assert t.current_snapshot().snapshot_id == s2
    assert [r["id"] for r in rows_of(t, snapshot_id=dev)] == [1, 2, 10]
    assert sorted(r["id"] for r in t.scan().use_ref("dev").to_arrow().to_pylist()) == [1, 2, 10]
    assert sorted(r["id"] for r in t.scan().use_ref("v1").to_arrow().to_pylist()) == [1, 2, 3]
    assert [r["id"] for r in rows_of(t)] == [1, 2, 3]

    # A tag can be moved; a stale client creating a ref that now exists
    # fails its assert-ref-snapshot-id (null) requirement.
    stale = catalog.load_table((ns, "refs"))
    t.manage_snapshots().create_tag(s1, "v1").create_branch(s2, "x").commit()
    assert catalog.load_table((ns, "refs")).refs()["v1"].snapshot_id == s1
    with pytest.raises(CommitFailedException):
        stale.manage_snapshots().create_branch(s1, "x").commit()
    assert catalog.load_table((ns, "refs")).refs()["x"].snapshot_id == s2
    t = catalog.load_table((ns, "refs"))
    t.manage_snapshots().remove_branch("x").commit()
    t.manage_snapshots().remove_tag("v1").remove_branch("dev").commit()
    check_file(t)
    assert set(catalog.load_table((ns, "refs")).refs()) == {"main"}


# ----------------------------------------------------------- evolution


def test_schema_evolution_with_data_before_and_after(catalog):
    ns = new_ns(catalog)
    schema = Schema(
        NestedField(1, "id", LongType(), required=True),
        NestedField(2, "count", IntegerType()),
        NestedField(3, "name", StringType()),
        NestedField(4, "obsolete", StringType()),
        NestedField(5, "st", StructType(NestedField(6, "x", IntegerType()))),
    )
    t = catalog.create_table((ns, "evo"), schema=schema)
    old_rows = [
        {"id": 1, "count": 10, "name": "a", "obsolete": "o1", "st": {"x": 100}},
        {"id": 2, "count": -20, "name": "b", "obsolete": "o2", "st": {"x": 200}},
    ]
    t.append(pa.Table.from_pylist(old_rows, schema=t.schema().as_arrow()))

    with t.update_schema() as u:
        u.add_column("extra", StringType())
        u.rename_column("name", "full_name")
        u.update_column("count", LongType())
        u.delete_column("obsolete")
        u.add_column(("st", "z"), IntegerType())
    check_file(t)
    t = catalog.load_table((ns, "evo"))
    s = t.schema()
    assert s.schema_id == 1 and t.metadata.current_schema_id == 1
    assert [sch.schema_id for sch in t.schemas().values()] == [0, 1]
    assert [f.name for f in s.fields] == ["id", "count", "full_name", "st", "extra"]
    assert s.find_field("count").field_type == LongType()
    assert s.find_field("full_name").field_id == 3  # a rename keeps the id
    assert s.find_field("count").field_id == 2
    assert s.find_field("extra").field_id == 7
    assert s.find_field("st.z").field_id == 8
    assert t.metadata.last_column_id == 8
    # The old schema is kept unchanged.
    assert t.schemas()[0] == schema

    new_rows = [{"id": 3, "count": 2**40, "full_name": "c", "st": {"x": 300, "z": 3}, "extra": "e"}]
    t.append(pa.Table.from_pylist(new_rows, schema=s.as_arrow()))
    check_file(t)
    assert rows_of(t) == [
        {"id": 1, "count": 10, "full_name": "a", "st": {"x": 100, "z": None}, "extra": None},
        {"id": 2, "count": -20, "full_name": "b", "st": {"x": 200, "z": None}, "extra": None},
        new_rows[0],
    ]


def test_partition_evolution(catalog):
    ns = new_ns(catalog)
    t = catalog.create_table((ns, "pe"), schema=SIMPLE)
    t.append(simple_rows([1, 2]))
    with t.update_spec() as u:
        u.add_field("name", IdentityTransform(), "name_part")
    check_file(t)
    t = catalog.load_table((ns, "pe"))
    assert t.spec().spec_id == 1 and t.metadata.default_spec_id == 1
    assert sorted(t.specs()) == [0, 1]
    assert [(f.source_id, f.field_id, f.transform, f.name) for f in t.spec().fields] == [
        (2, 1000, IdentityTransform(), "name_part")
    ]
    assert t.metadata.last_partition_id == 1000
    t.append(simple_rows([3, 4]))
    check_file(t)
    assert [r["id"] for r in rows_of(t)] == [1, 2, 3, 4]
    assert sorted({task.file.spec_id for task in t.scan().plan_files()}) == [0, 1]
    assert [r["id"] for r in rows_of(t, row_filter="name == 'r3'")] == [3]

    # Further evolution with transforms PyIceberg cannot write (metadata only).
    with t.update_spec() as u:
        u.add_field("id", BucketTransform(8), "id_bucket")
        u.add_field("name", TruncateTransform(2), "name_trunc")
    t = catalog.load_table((ns, "pe"))
    assert t.spec().spec_id == 2
    assert [(f.field_id, f.name) for f in t.spec().fields] == [(1000, "name_part"), (1001, "id_bucket"), (1002, "name_trunc")]
    assert t.metadata.last_partition_id == 1002
    check_file(t)
    assert [r["id"] for r in rows_of(t)] == [1, 2, 3, 4]


def test_sort_order_replacement(catalog):
    ns = new_ns(catalog)
    t = catalog.create_table((ns, "so"), schema=SIMPLE)
    assert t.sort_order().order_id == 0 and t.sort_order().fields == []
    with t.update_sort_order() as u:
        u.desc("id", IdentityTransform(), NullOrder.NULLS_LAST)
    check_file(t)
    t = catalog.load_table((ns, "so"))
    assert t.sort_order().order_id == 1 and t.metadata.default_sort_order_id == 1
    assert [(f.source_id, f.direction) for f in t.sort_order().fields] == [(1, SortDirection.DESC)]


# ---------------------------------------------------------- properties


def test_properties_set_and_remove_in_transactions(catalog):
    ns = new_ns(catalog)
    t = catalog.create_table((ns, "props"), schema=SIMPLE, properties={"keep": "k", "gone": "g"})
    with t.transaction() as tx:
        tx.set_properties(a="1", b="2")
    check_file(t)
    t = catalog.load_table((ns, "props"))
    assert {k: t.properties.get(k) for k in ("keep", "gone", "a", "b")} == {"keep": "k", "gone": "g", "a": "1", "b": "2"}

    with t.transaction() as tx:
        tx.remove_properties("gone", "a")
        tx.set_properties(b="20", c="3")
    check_file(t)
    t = catalog.load_table((ns, "props"))
    assert "gone" not in t.properties and "a" not in t.properties
    assert {k: t.properties[k] for k in ("keep", "b", "c")} == {"keep": "k", "b": "20", "c": "3"}


# ------------------------------------------------------ rename, drop, register


def test_rename_within_and_across_namespaces(catalog):
    ns1, ns2 = new_ns(catalog), new_ns(catalog)
    t = catalog.create_table((ns1, "a"), schema=SIMPLE)
    t.append(simple_rows([1, 2]))
    location, md_location = t.location(), t.metadata_location

    renamed = catalog.rename_table((ns1, "a"), (ns1, "b"))
    assert not catalog.table_exists((ns1, "a"))
    assert catalog.table_exists((ns1, "b"))
    assert renamed.metadata_location == md_location and renamed.location() == location
    assert [r["id"] for r in rows_of(renamed)] == [1, 2]
    assert catalog.list_tables(ns1) == [(ns1, "b")]

    moved = catalog.rename_table((ns1, "b"), (ns2, "c"))
    assert catalog.list_tables(ns1) == []
    assert catalog.list_tables(ns2) == [(ns2, "c")]
    assert [r["id"] for r in rows_of(moved)] == [1, 2]
    # The moved table still commits.
    moved.append(simple_rows([3]))
    check_file(moved)
    assert [r["id"] for r in rows_of(catalog.load_table((ns2, "c")))] == [1, 2, 3]

    catalog.create_table((ns2, "d"), schema=SIMPLE)
    with pytest.raises(TableAlreadyExistsError):
        catalog.rename_table((ns2, "c"), (ns2, "d"))
    assert catalog.table_exists((ns2, "c")) and catalog.table_exists((ns2, "d"))
    assert [r["id"] for r in rows_of(catalog.load_table((ns2, "c")))] == [1, 2, 3]

    with pytest.raises(NoSuchTableError):
        catalog.rename_table((ns1, "missing"), (ns1, "x"))
    assert not catalog.table_exists((ns1, "x"))


def test_drop_keeps_files_and_purge_deletes_them(catalog):
    ns = new_ns(catalog)
    kept = catalog.create_table((ns, "kept"), schema=SIMPLE)
    kept.append(simple_rows([1]))
    kept_files = data_files_exist(kept) + [kept.metadata_location]
    catalog.drop_table((ns, "kept"))
    assert not catalog.table_exists((ns, "kept"))
    with pytest.raises(NoSuchTableError):
        catalog.load_table((ns, "kept"))
    with pytest.raises(NoSuchTableError):
        catalog.drop_table((ns, "kept"))
    for f in kept_files:
        assert local_path(f).is_file(), f"plain drop removed {f}"

    purged = catalog.create_table((ns, "purged"), schema=SIMPLE)
    purged.append(simple_rows([1]))
    purged.append(simple_rows([2]))
    root = local_path(purged.location())
    purged_files = data_files_exist(purged) + [purged.metadata_location]
    assert root.is_dir()
    catalog.purge_table((ns, "purged"))
    assert not catalog.table_exists((ns, "purged"))
    for f in purged_files:
        assert not local_path(f).exists(), f"purge left {f}"
    assert not root.exists(), f"purge left {root}: {list(root.rglob('*'))[:10]}"
    # The other table's files are untouched.
    for f in kept_files:
        assert local_path(f).is_file()


def test_register_metadata_of_a_dropped_table(catalog):
    ns = new_ns(catalog)
    t = catalog.create_table((ns, "orig"), schema=SIMPLE, properties={"p": "v"})
    t.append(simple_rows([1, 2, 3]))
    location, uuid_ = t.metadata_location, t.metadata.table_uuid
    catalog.drop_table((ns, "orig"))

    reg = catalog.register_table((ns, "again"), location)
    assert reg.metadata_location == location
    assert reg.metadata.table_uuid == uuid_
    assert reg.properties["p"] == "v"
    assert [r["id"] for r in rows_of(reg)] == [1, 2, 3]
    loaded = catalog.load_table((ns, "again"))
    assert loaded.metadata_location == location

    # It is a normal table afterwards.
    loaded.append(simple_rows([4]))
    check_file(loaded)
    assert loaded.metadata_location != location
    assert [r["id"] for r in rows_of(catalog.load_table((ns, "again")))] == [1, 2, 3, 4]

    with pytest.raises(TableAlreadyExistsError):
        catalog.register_table((ns, "again"), location)


def test_create_table_transaction(catalog):
    ns = new_ns(catalog)
    ident = (ns, "staged")
    df = simple_rows([7, 8])
    with catalog.create_table_transaction(ident, schema=SIMPLE, properties={"stage": "yes"}) as tx:
        # Staged, not created: nobody sees it until the commit.
        assert not catalog.table_exists(ident)
        tx.set_properties(extra="1")
        tx.append(df)
    t = catalog.load_table(ident)
    check_file(t)
    assert t.properties["stage"] == "yes" and t.properties["extra"] == "1"
    assert rows_of(t) == df.to_pylist()
    assert len(t.snapshots()) == 1
    assert t.schema() == SIMPLE

    # Staging a name that exists is refused at once.
    with pytest.raises(TableAlreadyExistsError):
        catalog.create_table_transaction(ident, schema=SIMPLE)
    # A staged create whose name is taken before it commits fails its
    # assert-create requirement; the table that won is untouched.
    other = (ns, "raced")
    tx = catalog.create_table_transaction(other, schema=SIMPLE)
    winner = catalog.create_table(other, schema=SIMPLE, properties={"winner": "yes"})
    tx.set_properties(loser="yes")
    with pytest.raises(CommitFailedException):
        tx.commit_transaction()
    after = catalog.load_table(other)
    assert after.metadata_location == winner.metadata_location
    assert after.properties.get("winner") == "yes" and "loser" not in after.properties


@pytest.mark.parametrize("format_version", [1, 2])
def test_format_versions_append_and_read(catalog, format_version):
    ns = new_ns(catalog)
    t = catalog.create_table(
        (ns, f"v{format_version}"),
        schema=SIMPLE,
        partition_spec=PartitionSpec(PartitionField(2, 1000, IdentityTransform(), "name")),
        properties={"format-version": str(format_version)},
    )
    assert t.format_version == format_version
    assert "format-version" not in t.properties
    check_file(t)
    t.append(simple_rows([1, 2]))
    t.append(simple_rows([3]))
    check_file(t)
    t = catalog.load_table((ns, f"v{format_version}"))
    assert t.format_version == format_version
    assert [r["id"] for r in rows_of(t)] == [1, 2, 3]
    assert len(t.snapshots()) == 2
    if format_version == 2:
        assert t.metadata.last_sequence_number == 2
    raw = local_path(t.metadata_location).read_text()
    assert f'"format-version":{format_version}' in raw.replace(" ", "")


def test_upgrade_format_version_1_to_2(catalog):
    ns = new_ns(catalog)
    t = catalog.create_table((ns, "up"), schema=SIMPLE, properties={"format-version": "1"})
    t.append(simple_rows([1]))
    with t.transaction() as tx:
        tx.upgrade_table_version(2)
    check_file(t)
    t = catalog.load_table((ns, "up"))
    assert t.format_version == 2
    t.append(simple_rows([2]))
    assert [r["id"] for r in rows_of(t)] == [1, 2]
    check_file(t)


def test_every_commit_writes_a_new_metadata_file(catalog):
    ns = new_ns(catalog)
    t = catalog.create_table((ns, "files"), schema=SIMPLE)
    seen = [t.metadata_location]
    t.append(simple_rows([1]))
    seen.append(t.metadata_location)
    with t.transaction() as tx:
        tx.set_properties(x="y")
    seen.append(t.metadata_location)
    with t.update_schema() as u:
        u.add_column("more", IntegerType())
    seen.append(t.metadata_location)
    assert len(set(seen)) == 4
    for loc in seen:
        assert local_path(loc).is_file(), loc
        assert os.path.dirname(loc) == os.path.dirname(seen[0])
    # File names carry an increasing version number.
    assert [os.path.basename(loc)[:5] for loc in seen] == ["00000", "00001", "00002", "00003"]
    assert [e.metadata_file for e in t.metadata.metadata_log] == seen[:-1]
    check_file(t)


def test_stale_clients_after_drop_recreate_and_rename(catalog):
    ns = new_ns(catalog)
    old = catalog.create_table((ns, "t"), schema=SIMPLE)
    old.append(simple_rows([1]))
    catalog.drop_table((ns, "t"))
    new = catalog.create_table((ns, "t"), schema=SIMPLE)
    assert new.metadata.table_uuid != old.metadata.table_uuid
    # The stale client's commit asserts the old table's main (and uuid): 409.
    # PyIceberg 0.12 retries a CommitFailedException after a refresh, and the
    # refresh notices the table is another one (a new uuid).
    with pytest.raises((CommitFailedException, ValueError), match="UUID|Requirement failed"):
        old.append(simple_rows([2]))
    t = catalog.load_table((ns, "t"))
    assert t.metadata_location == new.metadata_location and t.snapshots() == []

    catalog.rename_table((ns, "t"), (ns, "moved"))
    # PyIceberg 0.12 surfaces a 404 on commit as RESTError with the type.
    with pytest.raises((NoSuchTableError, RESTError), match="NoSuchTableException|does not exist"):
        new.append(simple_rows([3]))
    assert catalog.load_table((ns, "moved")).metadata_location == new.metadata_location
