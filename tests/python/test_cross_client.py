"""PyIceberg and iceberg-rust on the same tables: each reads, row for row,
what the other wrote, and both append to one table.

iceberg-rust is the `iceberg-rust-xclient` binary of tests/iceberg-rust
(`$BINGSAN_ICEBERG_RUST_XCLIENT`; scripts/test-all builds it and sets it).
Both sides use that crate's table shape (`src/rows.rs`): rows travel as JSON
with dates as days and timestamps as microseconds since the epoch.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
from pathlib import Path

import pyarrow as pa
import pytest
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.transforms import IdentityTransform
from pyiceberg.types import (
    BooleanType,
    DateType,
    DoubleType,
    LongType,
    NestedField,
    StringType,
    TimestampType,
)

from cluster import catalog_server
from harness import BingsanServer, unique

EPOCH_DAY = dt.date(1970, 1, 1)
EPOCH = dt.datetime(1970, 1, 1)
#: Bound on one run of the iceberg-rust binary.
XCLIENT_TIMEOUT = 60

SCHEMA = Schema(
    NestedField(1, "id", LongType(), required=True),
    NestedField(2, "name", StringType(), required=False),
    NestedField(3, "category", StringType(), required=True),
    NestedField(4, "price", DoubleType(), required=False),
    NestedField(5, "flag", BooleanType(), required=False),
    NestedField(6, "day", DateType(), required=False),
    NestedField(7, "ts", TimestampType(), required=False),
)
ARROW_SCHEMA = pa.schema([
    pa.field("id", pa.int64(), nullable=False),
    pa.field("name", pa.string()),
    pa.field("category", pa.string(), nullable=False),
    pa.field("price", pa.float64()),
    pa.field("flag", pa.bool_()),
    pa.field("day", pa.date32()),
    pa.field("ts", pa.timestamp("us")),
])
BY_CATEGORY = PartitionSpec(PartitionField(source_id=3, field_id=1000, transform=IdentityTransform(), name="category"))


@pytest.fixture(scope="module")
def xclient() -> Path:
    path = os.environ.get("BINGSAN_ICEBERG_RUST_XCLIENT")
    if not path:
        pytest.skip("BINGSAN_ICEBERG_RUST_XCLIENT is not set: scripts/test-all builds tests/iceberg-rust and sets it")
    binary = Path(path)
    assert binary.is_file(), f"iceberg-rust client {binary} not found"
    return binary


def run(xclient: Path, *args: str) -> str:
    """The binary's stdout; fails the test with its stderr when it fails."""
    out = subprocess.run(
        [str(xclient), *args], capture_output=True, text=True, timeout=XCLIENT_TIMEOUT, stdin=subprocess.DEVNULL
    )
    assert out.returncode == 0, f"iceberg-rust-xclient {' '.join(args)} exited {out.returncode}:\n{out.stderr[-3000:]}"
    return out.stdout


def rust_rows(xclient: Path, *args: str) -> list[dict]:
    """The rows iceberg-rust wrote or read."""
    return json.loads(run(xclient, *args))


@pytest.fixture
def cross_server(tmp_path, binary):
    """A server on the default `--warehouse PATH` form: both clients must
    get `file://` locations from it."""
    s = catalog_server(tmp_path / "srv", binary=binary, name="cross").start()
    yield s
    code = s.stop()
    assert code == 0, f"server exit code {code}\n{s.log_tail()}"


def from_arrow(table: pa.Table) -> list[dict]:
    """PyIceberg's scan as the JSON rows iceberg-rust prints, sorted by id."""
    rows = table.to_pylist()
    for r in rows:
        if r["day"] is not None:
            r["day"] = (r["day"] - EPOCH_DAY).days
        if r["ts"] is not None:
            r["ts"] = (r["ts"] - EPOCH) // dt.timedelta(microseconds=1)
    return sorted(rows, key=lambda r: r["id"])


def to_arrow(rows: list[dict]) -> pa.Table:
    cols = {f.name: [r[f.name] for r in rows] for f in ARROW_SCHEMA}
    cols["day"] = [None if d is None else EPOCH_DAY + dt.timedelta(days=d) for d in cols["day"]]
    cols["ts"] = [None if t is None else EPOCH + dt.timedelta(microseconds=t) for t in cols["ts"]]
    return pa.table(cols, schema=ARROW_SCHEMA)


def python_rows(first: int, count: int) -> list[dict]:
    """Rows unlike the Rust sample: other names, negative numbers, nulls
    in other places."""
    return [
        {
            "id": i,
            "name": None if i % 4 == 1 else f"py-{i}-ü",
            "category": ["x", "y"][i % 2],
            "price": None if i % 3 == 0 else -i / 8,
            "flag": None if i % 4 == 2 else i % 3 == 1,
            "day": None if i % 5 == 3 else -400 + i * 37,
            "ts": None if i % 6 == 4 else -86_400_000_000 + i * 123_456_789,
        }
        for i in range(first, first + count)
    ]


def test_table_written_by_iceberg_rust_is_read_by_pyiceberg(cross_server, xclient):
    ns, name = unique(), "from_rust"
    written = rust_rows(xclient, "write", cross_server.base_url, ns, name, "0", "40")
    assert len(written) == 40 and written[0]["id"] == 0  # what the binary says it appended

    table = cross_server.catalog().load_table((ns, name))
    assert [f.name for f in table.spec().fields] == ["category"]
    assert from_arrow(table.scan().to_arrow()) == written
    # PyIceberg sees the partitions iceberg-rust wrote: a filter on the
    # partition column reads only that partition's rows.
    assert from_arrow(table.scan(row_filter="category == 'b'").to_arrow()) == [
        r for r in written if r["category"] == "b"
    ]


def test_table_written_by_pyiceberg_is_read_by_iceberg_rust(cross_server, xclient):
    ns, name = unique(), "from_python"
    catalog = cross_server.catalog()
    catalog.create_namespace(ns)
    table = catalog.create_table((ns, name), schema=SCHEMA)
    rows = python_rows(0, 30)
    table.append(to_arrow(rows[:10]))
    table.append(to_arrow(rows[10:]))

    assert rust_rows(xclient, "read", cross_server.base_url, ns, name) == rows


def test_both_clients_append_to_one_table(cross_server, xclient):
    ns, name = unique(), "shared"
    catalog = cross_server.catalog()
    catalog.create_namespace(ns)
    table = catalog.create_table((ns, name), schema=SCHEMA, partition_spec=BY_CATEGORY)
    py_rows = python_rows(1000, 12)
    table.append(to_arrow(py_rows))
    from_rust = rust_rows(xclient, "write", cross_server.base_url, ns, name, "0", "15")
    table = catalog.load_table((ns, name))
    table.append(to_arrow(python_rows(2000, 5)))
    expected = sorted(py_rows + from_rust + python_rows(2000, 5), key=lambda r: r["id"])

    assert from_arrow(catalog.load_table((ns, name)).scan().to_arrow()) == expected
    assert rust_rows(xclient, "read", cross_server.base_url, ns, name) == expected
    assert len(catalog.load_table((ns, name)).snapshots()) == 3
