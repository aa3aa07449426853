"""Power cuts: every acknowledged write is on stable storage.

The server's data directory and warehouse live on `lazyfs.py`, a FUSE
filesystem that keeps file data in memory until it is fsynced. Writers of
every kind (namespaces and their properties, tables, table commits (one on a table whose record is so large that sled keeps
it as a blob file, one on a table whose record is kept out of sled in a
file of its own), views,
view replacements, multi-table transactions, `Idempotency-Key` retries) run
concurrently; then the filesystem daemon and the server are SIGKILLed at
once (a power cut: unsynced data is gone), the mount is lazily detached, a
fresh daemon mounts what was synced, and the server starts on it. After
each cut every write that was answered 2xx, in every round so far, must be
there; a write whose answer never came may or may not be.

Needs /dev/fuse, fusermount3 (Debian's fuse3) and mfusepy; skipped with a
loud reason where FUSE cannot be mounted. BINGSAN_POWER_CUTS,
BINGSAN_POWER_CUT_SECONDS and BINGSAN_POWER_CUT_WRITERS change the number
of cuts, the writing time before each and the number of writers.

A second test cuts the power at the moment sled unlinks a file in its
`blobs/` (a blob whose record was replaced, or one of an abandoned write):
sled decides when on its own idea of what is stable (`sync_file_range`),
not on our syncs, and sled's recovery skips a record whose blob is missing.
Every acknowledged write must survive that cut as well. A third test cuts
the power the moment the server removes the file of an out-of-line value
(`values/`) that a commit replaced.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from harness import (
    HTTP_TIMEOUT,
    MEASUREMENTS,
    SIMPLE_SCHEMA_JSON,
    BingsanServer,
    assert_error,
    encode_namespace,
    table_url,
    view_url,
)

CUTS = int(os.environ.get("BINGSAN_POWER_CUTS", "5"))
ROUND_SECONDS = float(os.environ.get("BINGSAN_POWER_CUT_SECONDS", "8"))
#: Concurrent writers: 16 keeps the flusher's rounds full and sled's log moving (more segments, blobs replaced).
WRITERS = int(os.environ.get("BINGSAN_POWER_CUT_WRITERS", "16"))
#: Cuts at a blob removal, and the longest wait for one.
BLOB_CUTS = int(os.environ.get("BINGSAN_BLOB_CUTS", "3"))
BLOB_CUT_WAIT = 60
#: Fewest acknowledged writes for the run to mean something, by kind of cut.
MIN_ACKED = {"timed_cut": 1000, "cut_on_unlink_in_blobs": 50, "cut_on_unlink_in_values": 50}
#: A table property this large makes the table's store record a sled blob.
BLOB_BYTES = 200 * 1024
#: One this large keeps the record out of sled, in a file of its own (over 256 KiB).
OUT_OF_LINE_BYTES = 320 * 1024


# ---------------------------------------------------------------- the model


@dataclass
class Model:
    """What the clients were told. Objects are ("ns", ns), ("table", ns, name)
    or ("view", ns, name); a property may hold any value of its set (the
    acknowledged one plus those of writes whose answer never came)."""

    present: set = field(default_factory=set)
    maybe: set = field(default_factory=set)
    props: dict = field(default_factory=lambda: defaultdict(dict))
    #: Tables committed to together: their "tx" property moves as one.
    pairs: list = field(default_factory=list)
    #: (url, Idempotency-Key, body, first answer) of acknowledged retries.
    replays: list = field(default_factory=list)
    acked: int = 0

    def merge(self, other: "Model") -> None:
        self.present |= other.present
        self.maybe |= other.maybe
        for obj, p in other.props.items():
            self.props[obj].update(p)
        self.pairs += other.pairs
        self.replays += other.replays
        self.acked += other.acked


class Unknown(Exception):
    """No answer: the write may or may not have happened."""


class Writer:
    """One client writing objects of its own, so its model is exact."""

    def __init__(self, server: BingsanServer, tag: str, cut: threading.Event, done: threading.Event | None = None) -> None:
        # `cut`: failures are expected from now on; `done`: stop writing (the cut itself by default).
        self.s, self.tag, self.cut, self.done = server, tag, cut, done or cut
        self.http = requests.Session()
        self.model = Model()
        self.errors: list[str] = []
        self.ns = (tag,)

    def send(self, method: str, url: str, body: dict, headers: dict | None = None) -> requests.Response:
        try:
            r = self.http.request(method, url, json=body, headers=headers, timeout=HTTP_TIMEOUT)
        except requests.RequestException as e:
            if self.cut.is_set():
                raise Unknown() from e
            raise AssertionError(f"{self.tag}: {method} {url} failed before any cut: {e!r}") from e
        if r.status_code >= 500 and self.cut.is_set():
            raise Unknown()
        if not 200 <= r.status_code < 300:
            raise AssertionError(f"{self.tag}: {method} {url}: {r.status_code} {r.text[:300]}")
        self.model.acked += 1
        return r

    def create(self, obj: tuple, method: str, url: str, body: dict, headers: dict | None = None):
        try:
            r = self.send(method, url, body, headers)
        except Unknown:
            self.model.maybe.add(obj)
            raise
        self.model.present.add(obj)
        return r

    def set_props(self, objs: list, key: str, value: str, url: str, body: dict) -> None:
        for obj in objs:
            # Before its first acknowledged write the property may be absent.
            self.model.props[obj].setdefault(key, {None}).add(value)
        self.send("POST", url, body)
        for obj in objs:
            self.model.props[obj][key] = {value}

    def table_change(self, name: str, value: str, key: str) -> dict:
        return {"identifier": {"namespace": list(self.ns), "name": name}, "requirements": [],
                "updates": [{"action": "set-properties", "updates": {key: value}}]}

    def setup(self) -> None:
        s, ns = self.s, self.ns
        self.create(("ns", ns), "POST", s.api("namespaces"), {"namespace": list(ns)})
        for t in ("c0", "tx_a", "tx_b", "big", "huge"):
            self.create(("table", ns, t), "POST", table_url(s, ns), {"name": t, "schema": SIMPLE_SCHEMA_JSON})
        self.create(("view", ns, "v0"), "POST", view_url(s, ns), view_body("v0", ns))
        self.model.pairs.append((("table", ns, "tx_a"), ("table", ns, "tx_b")))

    def step(self, i: int) -> None:
        s, ns, v = self.s, self.ns, str(i)
        kind = i % 10
        if kind == 0:
            child = (*ns, f"n{i}")
            self.create(("ns", child), "POST", s.api("namespaces"), {"namespace": list(child), "properties": {"i": v}})
        elif kind == 1:
            self.create(("table", ns, f"t{i}"), "POST", table_url(s, ns), {"name": f"t{i}", "schema": SIMPLE_SCHEMA_JSON})
        elif kind == 2:
            self.set_props([("table", ns, "c0")], "v", v, table_url(s, ns, "c0"), self.table_change("c0", v, "v"))
        elif kind == 3:
            self.create(("view", ns, f"v{i}"), "POST", view_url(s, ns), view_body(f"v{i}", ns))
        elif kind == 4:
            body = {"identifier": {"namespace": list(ns), "name": "v0"}, "requirements": [],
                    "updates": [{"action": "set-properties", "updates": {"v": v}}]}
            self.set_props([("view", ns, "v0")], "v", v, view_url(s, ns, "v0"), body)
        elif kind == 5:
            body = {"table-changes": [self.table_change("tx_a", v, "tx"), self.table_change("tx_b", v, "tx")]}
            self.set_props([("table", ns, "tx_a"), ("table", ns, "tx_b")], "tx", v, s.api("transactions/commit"), body)
        elif kind == 6:
            url = s.api(f"namespaces/{encode_namespace(ns)}/properties")
            self.set_props([("ns", ns)], "p", v, url, {"updates": {"p": v}})
        elif kind == 7:
            # A record larger than a quarter of sled's segment: stored as a blob file.
            change = self.table_change("big", v, "v")
            change["updates"][0]["updates"]["pad"] = v * (BLOB_BYTES // len(v))
            self.set_props([("table", ns, "big")], "v", v, table_url(s, ns, "big"), change)
        elif kind == 9:
            # A record over a slice: kept out of sled, in a file of its own.
            change = self.table_change("huge", v, "v")
            change["updates"][0]["updates"]["pad"] = v * (OUT_OF_LINE_BYTES // len(v))
            self.set_props([("table", ns, "huge")], "v", v, table_url(s, ns, "huge"), change)
        else:
            # An idempotent create, retried as a client that lost the answer would.
            child = (*ns, f"k{i}")
            key = str(uuid.uuid4())
            body = {"namespace": list(child)}
            first = self.create(("ns", child), "POST", s.api("namespaces"), body, {"Idempotency-Key": key})
            again = self.send("POST", s.api("namespaces"), body, {"Idempotency-Key": key})
            if again.json() != first.json():
                raise AssertionError(f"{self.tag}: retry of {key} answered {again.text[:200]}")
            self.model.replays.append((s.api("namespaces"), key, body, first.json()))

    def run(self) -> None:
        try:
            self.setup()
            i = 0
            while not self.done.is_set():
                self.step(i)
                i += 1
        except Unknown:
            pass
        except AssertionError as e:
            self.errors.append(str(e))
        finally:
            self.http.close()


def view_body(name: str, ns: tuple) -> dict:
    version = {"version-id": 1, "timestamp-ms": int(time.time() * 1000), "schema-id": 0,
               "summary": {"engine-name": "test"}, "default-namespace": list(ns),
               "representations": [{"type": "sql", "sql": "SELECT 1", "dialect": "spark"}]}
    return {"name": name, "schema": {**SIMPLE_SCHEMA_JSON, "schema-id": 0}, "view-version": version, "properties": {}}


# ---------------------------------------------------------------- checking


def listing(http: requests.Session, url: str, key: str) -> set:
    """Every identifier of a paged list call."""
    out, token = set(), None
    while True:
        r = http.get(url, params={"pageToken": token} if token else None, timeout=HTTP_TIMEOUT)
        assert r.status_code == 200, f"GET {url}: {r.status_code} {r.text[:300]}"
        j = r.json()
        for ident in j[key]:
            out.add(tuple(ident) if key == "namespaces" else (tuple(ident["namespace"]), ident["name"]))
        token = j.get("next-page-token")
        if not token:
            return out


def lost_writes(s: BingsanServer, model: Model, mnt: Path) -> dict:
    """Every acknowledged write the restarted server does not show, by object."""
    http = requests.Session()
    lost = {}
    parents = {obj[1] for obj in model.present if obj[0] != "ns"} | {
        obj[1][:-1] for obj in model.present if obj[0] == "ns" and len(obj[1]) > 1}
    seen_ns = listing(http, s.api("namespaces"), "namespaces")
    seen = set()
    for p in parents:
        if p not in seen_ns:
            continue
        enc = encode_namespace(p)
        seen_ns |= listing(http, s.api(f"namespaces?parent={enc}"), "namespaces")
        seen |= {("table", *t) for t in listing(http, table_url(s, p), "identifiers")}
        seen |= {("view", *v) for v in listing(http, view_url(s, p), "identifiers")}
    seen |= {("ns", n) for n in seen_ns}
    lost.update({obj: f"{obj} is gone" for obj in model.present - seen})
    values = {}
    for obj, want in model.props.items():
        if obj in model.maybe and obj not in seen:
            continue
        kind, ns, *name = obj
        url = {"ns": lambda: s.api(f"namespaces/{encode_namespace(ns)}"),
               "table": lambda: table_url(s, ns, name[0]),
               "view": lambda: view_url(s, ns, name[0])}[kind]()
        r = http.get(url, timeout=HTTP_TIMEOUT)
        if r.status_code != 200:
            if obj in seen:  # listed, yet its record cannot be read
                lost[obj] = f"{obj} is listed but loads as {r.status_code} {r.text[:200]}"
            continue  # otherwise already counted as gone
        j = r.json()
        props = j["properties"] if kind == "ns" else j["metadata"].get("properties", {})
        values[obj] = props
        for k, allowed in want.items():
            if props.get(k) not in allowed:
                lost[obj] = f"{obj} has {k}={props.get(k)!r}, allowed {sorted(allowed, key=str)}"
        if kind != "ns":
            problem = metadata_file_problem(j, mnt)
            if problem:
                lost[(obj, "file")] = f"{obj}: {problem}"
    for a, b in model.pairs:
        if a in values and b in values and values[a].get("tx") != values[b].get("tx"):
            lost[(a, b)] = f"transaction split: {a} tx={values[a].get('tx')} but {b} tx={values[b].get('tx')}"
    for url, key, body, first in model.replays:
        r = http.post(url, json=body, headers={"Idempotency-Key": key}, timeout=HTTP_TIMEOUT)
        if r.status_code != 200 or r.json() != first:
            lost[key] = f"Idempotency-Key {key} now answers {r.status_code} {r.text[:120]}"
    http.close()
    return lost


def metadata_file_problem(loaded: dict, mnt: Path) -> str | None:
    """Why the current metadata file is not on the mount with the loaded content."""
    path = Path(loaded["metadata-location"].removeprefix("file://"))
    if mnt not in path.parents:
        return f"metadata file {path} is not on the power-cut filesystem"
    try:
        on_disk = json.loads(path.read_bytes())
    except (OSError, ValueError) as e:
        return f"metadata file unreadable after the cut: {e!r}"
    if on_disk.get("properties", {}) != loaded["metadata"].get("properties", {}):
        return "metadata file differs from the loaded metadata"
    return None


def assert_runs_on(s: BingsanServer, mnt: Path) -> None:
    """The server really holds its store files on the FUSE mount."""
    fds = Path(f"/proc/{s.pid}/fd")
    targets = {os.readlink(fds / fd) for fd in os.listdir(fds) if (fds / fd).is_symlink()}
    assert any(t.startswith(str(mnt / "data") + "/") for t in targets), f"no store file of the server on {mnt}"


# ---------------------------------------------------------------- the test


SLED_ONLY = pytest.mark.sled_only(reason="power cuts of the data directory's disk (FUSE); PostgreSQL makes its own commits durable")


@SLED_ONLY
@pytest.mark.timeout(600)
def test_acknowledged_writes_survive_power_cuts(lazy_mount, tmp_path, binary):
    cut_while_writing(lazy_mount, tmp_path, WRITERS, CUTS, timed_cut)


@SLED_ONLY
@pytest.mark.timeout(300)
def test_power_cuts_as_sled_removes_a_replaced_blob(lazy_mount, tmp_path, binary):
    """The cut comes the moment sled unlinks a blob whose record was
    replaced: sled does so once it deems the replacing log record stable,
    and the old record (an acknowledged commit) needs that blob until the
    replacing one is on disk. The cut comes within a second of each round's
    start, so writes in flight are mostly first writes."""
    cut_while_writing(lazy_mount, tmp_path, WRITERS, BLOB_CUTS, cut_on_unlink_in("blobs"))


@SLED_ONLY
@pytest.mark.timeout(300)
def test_power_cuts_as_a_replaced_value_file_is_removed(lazy_mount, tmp_path, binary):
    """The cut comes the moment the server removes the file of an
    out-of-line value a commit replaced: it does so only once the batch
    holding the new pointer is durable, so the acknowledged commit before
    it is never left pointing at a missing file."""
    cut_while_writing(lazy_mount, tmp_path, WRITERS, BLOB_CUTS, cut_on_unlink_in("values"))


def timed_cut(lazy_mount, cut: threading.Event) -> bool:
    """Cuts after ROUND_SECONDS of writing."""
    time.sleep(ROUND_SECONDS)
    cut.set()
    lazy_mount.kill()
    return True


def cut_on_unlink_in(directory: str):
    """A cut at the first unlink in the store's `directory` (lazyfs kills
    itself right after it); it tells whether that came within BLOB_CUT_WAIT
    seconds."""

    def cut_on_unlink(lazy_mount, cut: threading.Event) -> bool:
        from lazyfs import CUT_ON_UNLINK

        lazy_mount.fault(CUT_ON_UNLINK, f"/data/{directory}/")
        cut.set()  # from here on any write may fail: the cut can come at any moment
        deadline = time.monotonic() + BLOB_CUT_WAIT
        while lazy_mount.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        removed = lazy_mount.proc.poll() is not None
        lazy_mount.kill()
        lazy_mount.fault(CUT_ON_UNLINK, None)
        return removed

    cut_on_unlink.__name__ = f"cut_on_unlink_in_{directory}"
    return cut_on_unlink


def cut_while_writing(lazy_mount, tmp_path, writer_count: int, cuts: int, power_cut) -> None:
    mnt = lazy_mount.mountpoint
    s = BingsanServer(tmp_path / "logs" / "server", name="power-cut")
    s.data_dir, s.warehouse = mnt / "data", mnt / "warehouse"
    s.warehouse.mkdir()
    model, lost, restarts, on_time = Model(), {}, 0, 0
    try:
        s.start()
        for cut_no in range(cuts):
            assert_runs_on(s, mnt)
            cut, done = threading.Event(), threading.Event()
            writers = [Writer(s, f"pc{cut_no}_{w}", cut, done) for w in range(writer_count)]
            threads = [threading.Thread(target=w.run, daemon=True) for w in writers]
            for t in threads:
                t.start()
            # The power cut: the cache (daemon) and the server die together.
            on_time += power_cut(lazy_mount, cut)
            s.kill9()
            done.set()
            for t in threads:
                t.join(30)
            assert not any(t.is_alive() for t in threads), "writers hung after the cut"
            errors = [e for w in writers for e in w.errors]
            assert not errors, f"writes failed before the cut: {errors[:5]}"
            for w in writers:
                model.merge(w.model)
            lazy_mount.mount()
            s.start(ready_timeout=60)
            restarts += 1
            for obj, problem in lost_writes(s, model, mnt).items():
                lost.setdefault(obj, problem)
    finally:
        s.kill9()
    summary = (f"power cuts ({power_cut.__name__}): {writer_count} writers, {cuts} cuts ({on_time} at their moment), "
               f"{restarts} restarts, {model.acked} acknowledged writes, {len(lost)} lost or changed")
    MEASUREMENTS.append(summary)
    print(summary)
    assert not lost, f"{summary}:\n" + "\n".join(list(lost.values())[:20])
    assert on_time == cuts, f"not every cut came at its moment: {summary}"
    assert model.acked >= MIN_ACKED.get(power_cut.__name__, 1000), f"too few writes to mean much: {summary}"


@pytest.mark.sled_only(reason="a failed fsync of sled's files")
@pytest.mark.timeout(120)
def test_a_failed_sync_stops_acknowledgements(lazy_mount, tmp_path, binary):
    """After an fsync fails the outcome of that write is unknown (503), and
    every later write is refused before it touches a file, until a restart."""
    from lazyfs import FAIL_FSYNC  # here: importing it loads libfuse3, which the fixture checked

    mnt = lazy_mount.mountpoint
    s = BingsanServer(tmp_path / "logs" / "server", name="failed-sync")
    s.data_dir, s.warehouse = mnt / "data", mnt / "warehouse"
    s.warehouse.mkdir()
    http = requests.Session()
    create = lambda name: http.post(s.api("namespaces"), json={"namespace": [name]}, timeout=HTTP_TIMEOUT)  # noqa: E731
    try:
        s.start()
        assert create("a").status_code == 200
        fail = lazy_mount.backing / FAIL_FSYNC
        fail.touch()
        body = assert_error(create("b"), 503, "ServiceUnavailableException")
        assert str(mnt) not in body["message"]
        body = assert_error(create("c"), 503)
        assert "writes are refused" in body["message"]
        r = http.post(table_url(s, ("a",)), json={"name": "t", "schema": SIMPLE_SCHEMA_JSON}, timeout=HTTP_TIMEOUT)
        assert "writes are refused" in assert_error(r, 503)["message"]
        assert not (s.warehouse / "a").exists(), "a refused create wrote files"
        ready = http.get(s.url("/health/ready"), timeout=HTTP_TIMEOUT)
        assert "writes are refused" in assert_error(ready, 503)["message"]
        assert http.get(s.api("namespaces/a"), timeout=HTTP_TIMEOUT).status_code == 200, "reads go on"
        fail.unlink()
        assert_error(create("d"), 503)  # sticky: the store's state is unknown until a restart
        s.kill9()
        s.start()
        assert http.get(s.api("namespaces/a"), timeout=HTTP_TIMEOUT).status_code == 200
        assert create("e").status_code == 200
    finally:
        http.close()
        s.kill9()


@pytest.mark.sled_only(reason="a failed fsync of the warehouse's metadata files (FUSE)")
@pytest.mark.timeout(120)
def test_failed_syncs_fail_every_concurrent_commit(lazy_mount, tmp_path, binary):
    """Concurrent commits whose metadata files' fdatasync fails: none of
    them is acknowledged (503 without a path), none moves its table, and no
    file of theirs is left behind."""
    from lazyfs import FAIL_FSYNC

    mnt = lazy_mount.mountpoint
    s = BingsanServer(tmp_path / "logs" / "server", name="failed-syncs")
    s.data_dir, s.warehouse = mnt / "data", mnt / "warehouse"
    s.warehouse.mkdir()
    http = requests.Session()
    tables = [f"t{i:02d}" for i in range(16)]
    try:
        s.start()
        assert http.post(s.api("namespaces"), json={"namespace": ["b"]}, timeout=HTTP_TIMEOUT).status_code == 200
        for t in tables:
            r = http.post(table_url(s, ("b",)), json={"name": t, "schema": SIMPLE_SCHEMA_JSON}, timeout=HTTP_TIMEOUT)
            assert r.status_code == 200, r.text
        files = sorted(s.warehouse.rglob("*.json"))
        (lazy_mount.backing / FAIL_FSYNC).touch()
        answers: dict[str, requests.Response] = {}

        def commit(table):
            change = {"requirements": [], "updates": [{"action": "set-properties", "updates": {"lost": "yes"}}]}
            answers[table] = requests.post(table_url(s, ("b",), table), json=change, timeout=HTTP_TIMEOUT)

        threads = [threading.Thread(target=commit, args=(t,)) for t in tables]
        for t in threads:
            t.start()
        for t in threads:
            t.join(HTTP_TIMEOUT)
        (lazy_mount.backing / FAIL_FSYNC).unlink()
        for t in tables:
            body = assert_error(answers[t], 503, "ServiceUnavailableException")
            assert str(mnt) not in body["message"]
        assert sorted(s.warehouse.rglob("*.json")) == files, "a commit whose file was not durable left it behind"
        for restarted in (False, True):
            if restarted:
                s.kill9()
                s.start()
            for t in tables:
                loaded = http.get(table_url(s, ("b",), t), timeout=HTTP_TIMEOUT).json()
                assert "lost" not in loaded["metadata"]["properties"], f"{t} moved (restarted: {restarted})"
    finally:
        http.close()
        s.kill9()
