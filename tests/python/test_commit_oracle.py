"""An oracle for the commit engine: PyIceberg's own, independent
implementation of table updates.

For each seeded random case: create a fresh table on the server, then run 1-3
commits of random update sequences. Every commit is applied twice, to the
same base:

- through the server's commit endpoint (`POST .../tables/{t}`), and
- through `pyiceberg.table.update.update_table_metadata(base, updates)` on
  the base metadata the server last answered with,

and the outcomes must agree: both reject, or both accept with the same
schemas, specs, sort orders, default ids, last column/partition ids,
properties, refs, snapshots, current snapshot, location, format version,
statistics, snapshot log and metadata log (timestamps and last-updated-ms
ignored). A disagreement fails the test with the case printed so it can be
replayed (`ORACLE_CASE=<seed> pytest ... -k oracle`).

Deliberate divergences
----------------------
PyIceberg's function is a client-side helper, not a catalog; where the
Iceberg REST/Java semantics the server follows (`TableMetadata.Builder`)
and it differ, the generator stays out of the difference, or the
comparison skips it. Each entry names where that happens:

D1 remove-properties of an absent key: Java ignores it; PyIceberg raises
   KeyError. -> `_remove_properties` only removes present keys.
D2 remove-statistics for a snapshot without statistics: Java ignores it;
   PyIceberg raises. -> `_remove_statistics` only removes existing ones.
D3 remove-snapshots of unknown ids: Java ignores them; PyIceberg raises.
   -> `_remove_snapshots` only removes existing snapshots.
D4 add-schema / add-spec / add-sort-order: a catalog assigns the new id
   (max + 1, orders from 1) and reuses the id of an identical existing
   schema/spec/order; PyIceberg keeps the client's ids and appends
   duplicates. -> the generator sends the ids the table would assign and
   never re-adds an existing schema, spec or order (`_add_*`).
D5 upgrade-format-version 3: PyIceberg 0.12 supports tables up to v2
   (SUPPORTED_TABLE_FORMAT_VERSION = 2). -> upgrades go to 2 at most.
D6 snapshot log: Java drops entries of snapshots that were current only
   in the middle of a commit, and after remove-snapshots drops history
   older than a removed snapshot; PyIceberg keeps intermediate entries and
   only filters removed ids. -> `compare` drops PyIceberg's intermediate
   entries and skips the snapshot log in commits that remove snapshots.
D7 remove-snapshots: PyIceberg clears parent-snapshot-id of the removed
   snapshots' children; Java keeps it. -> parents are not compared.
D8 the metadata log of a commit that changes nothing: the server writes
   no new version (so no log entry); PyIceberg's function records one for
   any update it applied (set a property to its value). -> `compare` skips
   the metadata log when the server answered with the unchanged location.
D9 set-properties with "format-version": the server (like Java clients)
   turns it into an upgrade; PyIceberg stores a property. -> never sent.
D10 checks the server makes and PyIceberg's function does not (all Java
   `TableMetadata.Builder` checks): `main` as a tag, retention settings on
   tags or <= 0, a branch set to a new snapshot whose parent is not the
   branch head, a snapshot whose parent no longer exists. -> these are
   generated as SERVER_STRICTER cases: the server must reject them (400 or
   409) while PyIceberg accepts; nothing else is compared for them.
D11 v1 sequence numbers: a v1 table has none; PyIceberg copies the
   snapshot's (default 0) into last-sequence-number. -> compared for v2.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import traceback
from dataclasses import dataclass, field

import pytest
from pydantic import TypeAdapter
from pyiceberg.schema import Schema
from pyiceberg.table.metadata import TableMetadataUtil
from pyiceberg.table.update import (
    AddSchemaUpdate,
    TableUpdate,
    _apply_table_update,
    _TableMetadataUpdateContext,
    update_table_metadata,
)
from pyiceberg.types import (
    BooleanType,
    DateType,
    DecimalType,
    DoubleType,
    FloatType,
    IntegerType,
    LongType,
    StringType,
    TimestampType,
)

from harness import assert_metadata_file_matches, table_url, unique

CASES = 200
CHUNKS = 10
SEED = int(os.environ.get("ORACLE_SEED", "20240917"))

UPDATES = TypeAdapter(TableUpdate)

BASE_SCHEMA = {
    "type": "struct",
    "schema-id": 0,
    "fields": [
        {"id": 1, "name": "id", "type": "long", "required": True},
        {"id": 2, "name": "name", "type": "string", "required": False},
        {"id": 3, "name": "d", "type": "date", "required": False},
        {"id": 4, "name": "ts", "type": "timestamp", "required": False},
        {"id": 5, "name": "flag", "type": "boolean", "required": False},
        {"id": 6, "name": "amount", "type": "double", "required": False},
        {"id": 7, "name": "n", "type": "int", "required": False},
    ],
}

#: Partition and sort transforms valid for each primitive type.
TRANSFORMS = [
    (LongType, ["identity", "bucket[4]", "bucket[16]", "truncate[10]"]),
    (IntegerType, ["identity", "bucket[8]", "truncate[5]"]),
    (StringType, ["identity", "bucket[4]", "truncate[3]"]),
    (DateType, ["identity", "year", "month", "day"]),
    (TimestampType, ["year", "month", "day", "hour"]),
    (BooleanType, ["identity"]),
    (DoubleType, ["identity"]),
    (FloatType, ["identity"]),
    (DecimalType, ["identity", "bucket[4]"]),
]
NEW_COLUMN_TYPES = ["int", "long", "string", "date", "timestamp", "boolean", "double", "float", "decimal(9,2)"]

MAIN_AND_BRANCHES = ["main", "main", "b1", "b2"]
TAGS = ["t1", "t2"]
PROPERTY_KEYS = ["a", "b", "c", "d", "e"]


def transforms_for(field_type) -> list[str]:
    for cls, ts in TRANSFORMS:
        if isinstance(field_type, cls):
            return ts
    return []


# ------------------------------------------------------------- the generator


@dataclass
class Commit:
    updates: list[dict]
    #: D10: the server must reject this commit; PyIceberg's function accepts it.
    server_stricter: str | None = None


@dataclass
class Generator:
    rng: random.Random
    warehouse: str
    counter: itertools.count = field(default_factory=lambda: itertools.count(1))

    def commit(self, base) -> Commit:
        """1-6 updates valid for `base` (most of the time), tracking the
        state through PyIceberg's per-update function as it goes."""
        rng = self.rng
        ctx = _TableMetadataUpdateContext()
        md = base
        out: list[dict] = []
        stricter = None
        want = rng.randint(1, 6)
        for _ in range(40):
            if len(out) >= want:
                break
            group, note = self.pick(md, ctx)
            if not group:
                continue
            stricter = stricter or note
            for u in group:
                out.append(u)
                try:
                    md = _apply_table_update(UPDATES.validate_python(u), md, ctx)
                except Exception:
                    # An invalid update on purpose (or one PyIceberg refuses):
                    # the commit ends here; both sides must reject it.
                    return Commit(out, stricter)
        return Commit(out, stricter)

    def pick(self, md, ctx) -> tuple[list[dict], str | None]:
        rng = self.rng
        kinds = [
            (self._set_properties, 10),
            (self._remove_properties, 6),
            (self._add_schema, 8),
            (self._set_current_schema, 3),
            (self._add_spec, 6),
            (self._add_sort_order, 6),
            (self._add_snapshot, 16),
            (self._set_ref_existing, 6),
            (self._remove_ref, 4),
            (self._remove_snapshots, 4),
            (self._set_location, 2),
            (self._upgrade, 3),
            (self._set_statistics, 8),
            (self._remove_statistics, 6),
            (self._invalid, 3),
            (self._server_stricter, 2),
        ]
        fn = rng.choices([k for k, _ in kinds], weights=[w for _, w in kinds])[0]
        result = fn(md, ctx)
        if result and isinstance(result, tuple):
            return result
        return (result or []), None

    # -- properties
    def _set_properties(self, md, ctx):
        keys = self.rng.sample(PROPERTY_KEYS, self.rng.randint(1, 3))  # D9: never format-version
        return [{"action": "set-properties", "updates": {k: f"v{self.rng.randint(0, 3)}" for k in keys}}]

    def _remove_properties(self, md, ctx):
        present = [k for k in PROPERTY_KEYS if k in md.properties]
        if not present:  # D1: only present keys
            return None
        return [{"action": "remove-properties", "removals": self.rng.sample(present, self.rng.randint(1, len(present)))}]

    # -- schemas
    def _add_schema(self, md, ctx):
        rng = self.rng
        current = md.schema()
        fields = [json.loads(f.model_dump_json(by_alias=True, exclude_none=True)) for f in current.fields]
        next_id = md.last_column_id + 1
        if rng.random() < 0.85:
            if rng.random() < 0.2:
                fields.append({"id": next_id, "name": f"s{next_id}", "required": False, "type": {
                    "type": "struct",
                    "fields": [{"id": next_id + 1, "name": "x", "type": "int", "required": False}]}})
            else:
                fields.append({"id": next_id, "name": f"c{next_id}", "required": False,
                               "type": rng.choice(NEW_COLUMN_TYPES)})
        droppable = [f for f in fields if f["name"] != "id"]
        if droppable and rng.random() < 0.25:
            fields.remove(rng.choice(droppable))
        schema_id = max(s.schema_id for s in md.schemas) + 1  # D4: the id the table assigns
        schema = {"type": "struct", "schema-id": schema_id, "identifier-field-ids": [], "fields": fields}
        candidate = Schema.model_validate(schema)
        if any(s == candidate for s in md.schemas):  # D4: never an identical schema
            return None
        out = [{"action": "add-schema", "schema": schema, "last-column-id": max(md.last_column_id, candidate.highest_field_id)}]
        r = rng.random()
        if r < 0.7:
            out.append({"action": "set-current-schema", "schema-id": -1})
        elif r < 0.85:
            out.append({"action": "set-current-schema", "schema-id": schema_id})
        return out

    def _set_current_schema(self, md, ctx):
        return [{"action": "set-current-schema", "schema-id": self.rng.choice([s.schema_id for s in md.schemas])}]

    # -- partition specs
    def _primitive_columns(self, md):
        return [f for f in md.schema().fields if f.field_type.is_primitive and transforms_for(f.field_type)]

    def _add_spec(self, md, ctx):
        rng = self.rng
        cols = self._primitive_columns(md)
        if not cols:
            return None
        chosen, names = [], set()
        for col in rng.sample(cols, min(len(cols), rng.randint(1, 3))):
            transform = rng.choice(transforms_for(col.field_type))
            name = f"p_{col.name}_{transform.split('[')[0]}"
            if name in names:
                continue
            names.add(name)
            chosen.append((col.field_id, transform, name))
        signature = [(s, t, n) for s, t, n in chosen]
        for spec in md.partition_specs:  # D4: never a spec the table has
            if [(f.source_id, str(f.transform), f.name) for f in spec.fields] == signature:
                return None
        last = md.last_partition_id if md.last_partition_id is not None else 999
        if md.format_version == 1:
            ids = [1000 + i for i in range(len(chosen))]  # v1 requires sequential ids
        else:
            ids = [last + 1 + i for i in range(len(chosen))]
        spec_id = max(s.spec_id for s in md.partition_specs) + 1
        spec = {"spec-id": spec_id, "fields": [
            {"source-id": s, "field-id": i, "transform": t, "name": n} for (s, t, n), i in zip(chosen, ids)]}
        out = [{"action": "add-spec", "spec": spec}]
        r = rng.random()
        if r < 0.7:
            out.append({"action": "set-default-spec", "spec-id": -1})
        elif r < 0.85:
            out.append({"action": "set-default-spec", "spec-id": spec_id})
        return out

    # -- sort orders
    def _add_sort_order(self, md, ctx):
        rng = self.rng
        cols = self._primitive_columns(md)
        if not cols:
            return None
        fields = []
        for col in rng.sample(cols, min(len(cols), rng.randint(1, 2))):
            fields.append({
                "transform": rng.choice(transforms_for(col.field_type)),
                "source-id": col.field_id,
                "direction": rng.choice(["asc", "desc"]),
                "null-order": rng.choice(["nulls-first", "nulls-last"]),
            })
        for order in md.sort_orders:  # D4: never an order the table has
            existing = [
                {"transform": str(f.transform), "source-id": f.source_id,
                 "direction": f.direction.value, "null-order": f.null_order.value}
                for f in order.fields
            ]
            if existing == fields:
                return None
        order_id = max([o.order_id for o in md.sort_orders] + [0]) + 1
        out = [{"action": "add-sort-order", "sort-order": {"order-id": order_id, "fields": fields}}]
        r = rng.random()
        if r < 0.6:
            out.append({"action": "set-default-sort-order", "sort-order-id": -1})
        elif r < 0.75:
            out.append({"action": "set-default-sort-order", "sort-order-id": order_id})
        elif r < 0.85:
            out.append({"action": "set-default-sort-order", "sort-order-id": 0})
        return out

    # -- snapshots and refs
    def _new_snapshot(self, md, parent):
        sid = self.rng.randrange(1, 2**62)
        snap = {
            "snapshot-id": sid,
            "timestamp-ms": 1_700_000_000_000 + next(self.counter) * 1000,
            "manifest-list": f"/nonexistent/snap-{sid}.avro",
            "summary": {"operation": self.rng.choice(["append", "overwrite", "delete"])},
            "schema-id": md.current_schema_id,
        }
        if md.format_version >= 2:
            snap["sequence-number"] = md.last_sequence_number + 1
        if parent is not None:
            snap["parent-snapshot-id"] = parent
        return snap

    def _ref_update(self, name, sid, kind):
        u = {"action": "set-snapshot-ref", "ref-name": name, "type": kind, "snapshot-id": sid}
        if self.rng.random() < 0.25:
            u["max-ref-age-ms"] = self.rng.randint(1, 10**9)
            if kind == "branch":
                u["min-snapshots-to-keep"] = self.rng.randint(1, 10)
                u["max-snapshot-age-ms"] = self.rng.randint(1, 10**9)
        return u

    def _add_snapshot(self, md, ctx):
        rng = self.rng
        r = rng.random()
        if r < 0.8:
            branch = rng.choice(MAIN_AND_BRANCHES)
            head = md.refs.get(branch)
            parent = head.snapshot_id if head is not None else md.current_snapshot_id
            snap = self._new_snapshot(md, parent)
            out = [{"action": "add-snapshot", "snapshot": snap}, self._ref_update(branch, snap["snapshot-id"], "branch")]
            if rng.random() < 0.2:
                out.append(self._ref_update(rng.choice(TAGS), snap["snapshot-id"], "tag"))
            return out
        if r < 0.9:
            # Added without any ref pointing at it.
            return [{"action": "add-snapshot", "snapshot": self._new_snapshot(md, md.current_snapshot_id)}]
        # Tagged only.
        snap = self._new_snapshot(md, md.current_snapshot_id)
        return [{"action": "add-snapshot", "snapshot": snap}, self._ref_update(rng.choice(TAGS), snap["snapshot-id"], "tag")]

    def _set_ref_existing(self, md, ctx):
        if not md.snapshots:
            return None
        sid = self.rng.choice(md.snapshots).snapshot_id
        # D10: a branch moved to a snapshot added in this commit must have
        # that snapshot's parent as its head; only old snapshots here.
        if ctx.is_added_snapshot(sid):
            return None
        if self.rng.random() < 0.6:
            return [self._ref_update(self.rng.choice(MAIN_AND_BRANCHES), sid, "branch")]
        return [self._ref_update(self.rng.choice(TAGS), sid, "tag")]

    def _remove_ref(self, md, ctx):
        names = list(md.refs) + ["missing-ref"]
        return [{"action": "remove-snapshot-ref", "ref-name": self.rng.choice(names)}]

    def _remove_snapshots(self, md, ctx):
        if not md.snapshots:
            return None
        ids = [s.snapshot_id for s in md.snapshots]  # D3: only existing ids
        return [{"action": "remove-snapshots", "snapshot-ids": self.rng.sample(ids, self.rng.randint(1, min(2, len(ids))))}]

    # -- location, format version, statistics
    def _set_location(self, md, ctx):
        return [{"action": "set-location", "location": f"{self.warehouse}/relocated/{unique('loc')}"}]

    def _upgrade(self, md, ctx):
        return [{"action": "upgrade-format-version", "format-version": 2}]  # D5: never 3

    def _set_statistics(self, md, ctx):
        if not md.snapshots:
            return None
        snap = self.rng.choice(md.snapshots)
        sid = snap.snapshot_id
        k = next(self.counter)
        stats = {
            "snapshot-id": sid,
            "statistics-path": f"/nonexistent/stats-{sid}-{k}.puffin",
            "file-size-in-bytes": 100 + k,
            "file-footer-size-in-bytes": 10 + k,
            "blob-metadata": [{
                "type": "apache-datasketches-theta-v1",
                "snapshot-id": sid,
                "sequence-number": snap.sequence_number or 0,
                "fields": [1],
                "properties": {"ndv": str(k)},
            }],
        }
        return [{"action": "set-statistics", "snapshot-id": sid, "statistics": stats}]

    def _remove_statistics(self, md, ctx):
        if not md.statistics:  # D2: only existing statistics
            return None
        return [{"action": "remove-statistics", "snapshot-id": self.rng.choice(md.statistics).snapshot_id}]

    # -- updates both sides must refuse
    def _invalid(self, md, ctx):
        rng = self.rng
        options = [
            [{"action": "set-current-schema", "schema-id": 999}],
            [{"action": "set-default-spec", "spec-id": 999}],
            [{"action": "set-default-sort-order", "sort-order-id": 999}],
            [{"action": "set-snapshot-ref", "ref-name": rng.choice(["main", "b1", "t1"]),
              "type": "branch", "snapshot-id": 424242}],
        ]
        if md.format_version == 2:
            options.append([{"action": "upgrade-format-version", "format-version": 1}])
        if md.snapshots:
            dup = dict(self._new_snapshot(md, None), **{"snapshot-id": md.snapshots[0].snapshot_id})
            options.append([{"action": "add-snapshot", "snapshot": dup}])
        if not any(isinstance(u, AddSchemaUpdate) for u in ctx._updates):
            options.append([{"action": "set-current-schema", "schema-id": -1}])
        return rng.choice(options)

    # -- D10: the server is stricter than PyIceberg's function
    def _server_stricter(self, md, ctx):
        rng = self.rng
        options = []
        if md.snapshots:
            sid = md.snapshots[-1].snapshot_id
            options += [
                ("main as a tag", [{"action": "set-snapshot-ref", "ref-name": "main", "type": "tag", "snapshot-id": sid}]),
                ("tag with min-snapshots-to-keep", [{"action": "set-snapshot-ref", "ref-name": "t1", "type": "tag",
                                                     "snapshot-id": sid, "min-snapshots-to-keep": 2}]),
                ("retention <= 0", [{"action": "set-snapshot-ref", "ref-name": "b1", "type": "branch",
                                     "snapshot-id": sid, "max-ref-age-ms": 0}]),
            ]
        if md.format_version >= 2:
            orphan = self._new_snapshot(md, 777)  # parent 777 does not exist
            options.append(("parent does not exist", [{"action": "add-snapshot", "snapshot": orphan}]))
        main = md.refs.get("main")
        if main is not None:
            older = [s.snapshot_id for s in md.snapshots if s.snapshot_id != main.snapshot_id]
            if older:
                stale = self._new_snapshot(md, rng.choice(older))
                options.append(("branch head moved past the new snapshot's parent", [
                    {"action": "add-snapshot", "snapshot": stale},
                    {"action": "set-snapshot-ref", "ref-name": "main", "type": "branch",
                     "snapshot-id": stale["snapshot-id"]}]))
        if not options:
            return None
        note, ups = rng.choice(options)
        return ups, note


# ------------------------------------------------------------ the comparison


def compare(py, server, base, updates: list[dict], location_changed: bool) -> list[str]:
    """Differences between PyIceberg's result and the server's (both
    PyIceberg TableMetadata)."""
    diffs = []

    def same(what, a, b):
        if a != b:
            diffs.append(f"{what}:\n    pyiceberg: {a!r}\n    server:    {b!r}")

    same("format-version", py.format_version, server.format_version)
    same("table-uuid", str(py.table_uuid), str(server.table_uuid))
    same("location", py.location, server.location)
    same("last-column-id", py.last_column_id, server.last_column_id)
    same("schemas", py.schemas, server.schemas)
    same("schema ids", [s.schema_id for s in py.schemas], [s.schema_id for s in server.schemas])
    same("current-schema-id", py.current_schema_id, server.current_schema_id)
    same("partition-specs", py.partition_specs, server.partition_specs)
    same("default-spec-id", py.default_spec_id, server.default_spec_id)
    same("last-partition-id", py.last_partition_id, server.last_partition_id)
    same("sort-orders", py.sort_orders, server.sort_orders)
    same("default-sort-order-id", py.default_sort_order_id, server.default_sort_order_id)
    same("properties", py.properties, server.properties)
    same("refs", py.refs, server.refs)
    same("snapshot ids", [s.snapshot_id for s in py.snapshots], [s.snapshot_id for s in server.snapshots])
    same("current-snapshot-id", py.current_snapshot_id, server.current_snapshot_id)
    same("statistics", py.statistics, server.statistics)
    if server.format_version >= 2 and base.format_version >= 2:  # D11
        same("last-sequence-number", py.last_sequence_number, server.last_sequence_number)
    removed = any(u["action"] == "remove-snapshots" for u in updates)
    if not removed:  # D6
        added = {u["snapshot"]["snapshot-id"] for u in updates if u["action"] == "add-snapshot"}
        py_log = [e.snapshot_id for e in py.snapshot_log
                  if not (e.snapshot_id in added and e.snapshot_id != py.current_snapshot_id)]
        same("snapshot-log ids", py_log, [e.snapshot_id for e in server.snapshot_log])
    if location_changed:  # D8
        same("metadata-log files", [e.metadata_file for e in py.metadata_log],
             [e.metadata_file for e in server.metadata_log])
    return diffs


# ------------------------------------------------------------------ running


def parse(md_json: dict):
    return TableMetadataUtil.parse_raw(json.dumps(md_json))


def grow(http, url: str, current: dict, count: int) -> dict:
    """Appends `count` snapshots to main in one commit; the new answer."""
    md = current["metadata"]
    parent, seq = md.get("current-snapshot-id"), md.get("last-sequence-number", 0)
    updates = []
    for i in range(count):
        sid = 10**15 + i
        snap = {"snapshot-id": sid, "timestamp-ms": 1_600_000_000_000 + i, "sequence-number": seq + 1 + i,
                "manifest-list": f"/nonexistent/bulk-{sid}.avro",
                "summary": {"operation": "append", "added-data-files": str(i % 7), "total-records": str(i * 100)},
                "schema-id": md["current-schema-id"]}
        if parent is not None and parent != -1:
            snap["parent-snapshot-id"] = parent
        updates.append({"action": "add-snapshot", "snapshot": snap})
        parent = sid
    updates.append({"action": "set-snapshot-ref", "ref-name": "main", "type": "branch", "snapshot-id": parent})
    r = http.post(url, json={"requirements": [], "updates": updates})
    assert r.status_code == 200, r.text[:300]
    return r.json()


def run_case(server, http, ns: str, case: int, snapshots: int = 0) -> list[str]:
    """Runs one case, on a table grown to `snapshots` first (v2 then);
    returns its failures (empty when sides agree)."""
    rng = random.Random(SEED * 100_003 + case)
    gen = Generator(rng, server.warehouse.resolve().as_uri())
    name = f"c{case}"
    create = {"name": name, "schema": BASE_SCHEMA}
    fv = rng.choice([1, 2, 2, 2]) if not snapshots else 2
    create["properties"] = {"format-version": str(fv)}
    if rng.random() < 0.4:
        create["partition-spec"] = {"fields": [{"name": "p_name", "transform": "identity", "source-id": 2}]}
    if rng.random() < 0.3:
        create["write-order"] = {"order-id": 1, "fields": [
            {"transform": "identity", "source-id": 1, "direction": "asc", "null-order": "nulls-first"}]}
    r = http.post(table_url(server, ns), json=create)
    assert r.status_code == 200, r.text
    current = r.json()
    if snapshots:
        current = grow(http, table_url(server, ns, name), current, snapshots)
    failures = []
    log = [f"case {case} (seed {SEED}, {snapshots} snapshots): create {json.dumps(create)}"]
    for n in range(rng.randint(1, 3)):
        base = parse(current["metadata"])
        c = gen.commit(base)
        log.append(f"commit {n}: {json.dumps(c.updates)}" + (f"  [server stricter: {c.server_stricter}]" if c.server_stricter else ""))
        try:
            py = update_table_metadata(base, tuple(UPDATES.validate_python(u) for u in c.updates),
                                       metadata_location=current["metadata-location"])
            py_error = None
        except Exception as e:  # noqa: BLE001 - any refusal counts
            py, py_error = None, f"{type(e).__name__}: {e}"
        resp = http.post(table_url(server, ns, name), json={"requirements": [], "updates": c.updates})
        if resp.status_code >= 500 or resp.status_code not in (200, 400, 409):
            failures.append(f"server answered {resp.status_code}: {resp.text[:300]}")
            break
        accepted = resp.status_code == 200
        if c.server_stricter:
            # D10: only the server's refusal is checked (PyIceberg may refuse
            # too, for another update of the same commit).
            if accepted:
                failures.append(f"server accepted a commit Java refuses ({c.server_stricter})")
                break
            check_unchanged(http, server, ns, name, current, failures)
            if failures:
                break
            continue
        if py_error is not None and accepted:
            failures.append(f"PyIceberg refused ({py_error}) but the server accepted")
            break
        if py_error is None and not accepted:
            failures.append(f"server refused ({resp.status_code} {resp.text[:300]}) but PyIceberg accepted")
            break
        if not accepted:
            check_unchanged(http, server, ns, name, current, failures)
            if failures:
                break
            continue
        new = resp.json()
        location_changed = new["metadata-location"] != current["metadata-location"]
        server_md = parse(new["metadata"])
        diffs = compare(py, server_md, base, c.updates, location_changed)
        if diffs:
            failures.append("results differ:\n  " + "\n  ".join(diffs))
            break
        if location_changed:
            try:
                assert_metadata_file_matches(new["metadata-location"], new["metadata"])
            except AssertionError as e:
                failures.append(f"metadata file does not match the answer: {e}")
                break
        else:
            if new["metadata"] != current["metadata"]:
                failures.append("same metadata-location but different metadata")
                break
        current = new
    if failures:
        return ["\n".join(log + failures)]
    # What the server answered last is what it serves.
    loaded = http.get(table_url(server, ns, name)).json()
    if loaded["metadata-location"] != current["metadata-location"] or loaded["metadata"] != current["metadata"]:
        return ["\n".join(log + ["load after the last commit differs from the commit's answer"])]
    return []


@pytest.mark.parametrize("snapshots", [2000, 5000])
def test_commit_engine_agrees_with_pyiceberg_on_thousands_of_snapshots(server, http, snapshots):
    """The same oracle on tables of thousands of snapshots: their commits
    take the slice path on the shard's blocking thread (metadata above
    128 KiB), copying the stored snapshots instead of re-serializing them;
    every written metadata file is compared with the answer."""
    ns = unique("oracle_big")
    assert http.post(server.api("namespaces"), json={"namespace": [ns]}).status_code == 200
    failures = []
    for case in range(4):
        failures += run_case(server, http, ns, 1000 + case, snapshots)
        # The stored forms of the last version: refs only, and gzip.
        url = table_url(server, ns, f"c{1000 + case}")
        full = http.get(url, headers={"Accept-Encoding": "identity"})
        assert len(full.json()["metadata"]["snapshots"]) >= snapshots
        refs = http.get(url, params={"snapshots": "refs"}).json()["metadata"]
        referenced = {r["snapshot-id"] for r in refs["refs"].values()}
        assert {s["snapshot-id"] for s in refs["snapshots"]} == referenced
        assert {k: v for k, v in refs.items() if k != "snapshots"} == {
            k: v for k, v in full.json()["metadata"].items() if k != "snapshots"}
        gz = http.get(url, headers={"Accept-Encoding": "gzip"})
        assert gz.headers.get("Content-Encoding") == "gzip" and gz.json() == full.json()
    assert not failures, f"{len(failures)} case(s) disagree:\n\n" + "\n\n".join(failures[:2])


def check_unchanged(http, server, ns, name, current, failures):
    loaded = http.get(table_url(server, ns, name)).json()
    if loaded["metadata-location"] != current["metadata-location"]:
        failures.append("a refused commit changed the table's metadata-location")


@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_commit_engine_agrees_with_pyiceberg(server, http, chunk):
    only = os.environ.get("ORACLE_CASE")
    cases = [int(only)] if only else range(chunk * CASES // CHUNKS, (chunk + 1) * CASES // CHUNKS)
    if only and int(only) * CHUNKS // CASES != chunk:
        pytest.skip("ORACLE_CASE runs in another chunk")
    ns = unique("oracle")
    assert http.post(server.api("namespaces"), json={"namespace": [ns]}).status_code == 200
    failures = []
    for case in cases:
        try:
            failures += run_case(server, http, ns, case)
        except Exception:  # noqa: BLE001 - report the case, keep going
            failures.append(f"case {case} (seed {SEED}) raised:\n{traceback.format_exc()}")
    assert not failures, f"{len(failures)} case(s) disagree:\n\n" + "\n\n".join(failures[:5])


def empty_base(fv: int):
    """Metadata like a fresh table's, for simulating the generator."""
    schema = dict(BASE_SCHEMA)
    return parse({
        "format-version": fv, "table-uuid": "9c12d441-03fe-4693-9a96-a0705ddf69c1", "location": "/x",
        "last-sequence-number": 0, "last-updated-ms": 1, "last-column-id": 7, "schemas": [schema],
        "current-schema-id": 0, "partition-specs": [{"spec-id": 0, "fields": []}], "default-spec-id": 0,
        "last-partition-id": 999, "sort-orders": [{"order-id": 0, "fields": []}], "default-sort-order-id": 0,
        "properties": {}, "snapshots": [], "snapshot-log": [], "metadata-log": [], "refs": {},
        **({"schema": schema, "partition-spec": []} if fv == 1 else {}),
    })


def test_generator_covers_every_update_kind():
    """The oracle is only as good as what it generates: across the seeded
    cases every update kind appears in commits that are accepted (and so
    compared field by field), refusals and D10 cases appear too."""
    accepted, refused, stricter = {}, 0, set()
    for case in range(CASES):
        rng = random.Random(SEED * 100_003 + case)
        gen = Generator(rng, "/warehouse")
        md = empty_base(rng.choice([1, 2, 2, 2]))
        for _ in range(rng.randint(1, 3)):
            c = gen.commit(md)
            if c.server_stricter:
                stricter.add(c.server_stricter)
                continue
            try:
                md = update_table_metadata(md, tuple(UPDATES.validate_python(u) for u in c.updates))
            except Exception:  # noqa: BLE001
                refused += 1
                continue
            for u in c.updates:
                accepted[u["action"]] = accepted.get(u["action"], 0) + 1
    kinds = {
        "set-properties", "remove-properties", "add-schema", "set-current-schema", "add-spec", "set-default-spec",
        "add-sort-order", "set-default-sort-order", "add-snapshot", "set-snapshot-ref", "remove-snapshot-ref",
        "remove-snapshots", "set-location", "upgrade-format-version", "set-statistics", "remove-statistics",
    }
    assert {k for k in kinds if accepted.get(k, 0) >= 5} == kinds, accepted
    assert refused >= 20, refused
    assert len(stricter) >= 4, stricter
