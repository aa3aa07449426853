"""`POST /v1/transactions/commit`: several tables move together or not at all.

Tables are created over raw HTTP (`harness.create_table_raw`); after a
transaction every table is loaded again and its metadata file compared with
what the server answers (`harness.assert_metadata_file_matches`). The crash
test kills the server with SIGKILL while transactions are in flight and
checks, after a restart, that every table shows the same generation.
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid

import pytest

from harness import (
    run_threads,
    MEASUREMENTS,
    assert_error,
    assert_metadata_file_matches,
    create_table_raw,
    local_path,
    table_url,
    unique,
)

# ------------------------------------------------------------------ helpers


def new_ns(server, http) -> tuple[str, ...]:
    ns = (unique(),)
    r = http.post(server.api("namespaces"), json={"namespace": list(ns)})
    assert r.status_code == 200, r.text
    return ns


def make_tables(server, http, n: int, ns=None) -> tuple[tuple[str, ...], list[str]]:
    ns = ns or new_ns(server, http)
    names = [f"t{i}" for i in range(n)]
    for name in names:
        create_table_raw(http, server, ns, name)
    return ns, names


def load(server, http, ns, name: str) -> dict:
    r = http.get(table_url(server, ns, name))
    assert r.status_code == 200, f"load {name}: {r.status_code} {r.text[:300]}"
    return r.json()


def snapshot_state(server, http, ns, names) -> dict[str, tuple[str, dict]]:
    """name -> (metadata-location, properties) of each table."""
    out = {}
    for n in names:
        t = load(server, http, ns, n)
        out[n] = (t["metadata-location"], t["metadata"].get("properties", {}))
    return out


def change(ns, name: str, updates: list, requirements: list | None = None) -> dict:
    return {"identifier": {"namespace": list(ns), "name": name}, "requirements": requirements or [], "updates": updates}


def set_props(**props) -> list:
    return [{"action": "set-properties", "updates": {k: str(v) for k, v in props.items()}}]


def commit(server, http, changes: list, **kw):
    return http.post(server.api("transactions/commit"), json={"table-changes": changes}, **kw)


def uuid_req(table: dict) -> list:
    return [{"type": "assert-table-uuid", "uuid": table["metadata"]["table-uuid"]}]


def metadata_files(location: str) -> set[str]:
    d = local_path(location).parent
    return {p.name for p in d.iterdir()}


# ------------------------------------------------------------------ all together


def test_all_tables_move_together(any_server, http):
    s = any_server
    ns, names = make_tables(s, http, 3)
    before = {n: load(s, http, ns, n) for n in names}
    changes = [change(ns, n, set_props(txn="1", owner=n), uuid_req(before[n])) for n in names]
    r = commit(s, http, changes)
    assert r.status_code == 204, r.text
    assert r.content == b""
    for n in names:
        after = load(s, http, ns, n)
        assert after["metadata-location"] != before[n]["metadata-location"], n
        assert after["metadata"]["properties"] == {**before[n]["metadata"].get("properties", {}), "txn": "1", "owner": n}
        assert after["metadata"]["table-uuid"] == before[n]["metadata"]["table-uuid"]
        assert_metadata_file_matches(after["metadata-location"], after["metadata"])
        # The previous file is in the new metadata log.
        log = [e["metadata-file"] for e in after["metadata"].get("metadata-log", [])]
        assert before[n]["metadata-location"] in log, n
    # Every shard sees the new state at once: fresh connections land on any shard.
    expected = {n: load(s, http, ns, n)["metadata-location"] for n in names}
    for _ in range(3 * s.shards):
        with s.raw() as c:
            for n in names:
                r = c.request("GET", table_url(s, ns, n)[len(s.base_url):])
                assert r.status == 200, r.body
                assert r.json()["metadata-location"] == expected[n], f"stale read of {n} on some shard"


def test_tables_in_different_namespaces(server, http):
    ns_a, [a] = make_tables(server, http, 1)
    ns_b, [b] = make_tables(server, http, 1)
    r = commit(server, http, [change(ns_a, a, set_props(x=1)), change(ns_b, b, set_props(x=2))])
    assert r.status_code == 204, r.text
    assert load(server, http, ns_a, a)["metadata"]["properties"]["x"] == "1"
    assert load(server, http, ns_b, b)["metadata"]["properties"]["x"] == "2"


def test_different_updates_per_table(server, http):
    ns, names = make_tables(server, http, 3)
    t0 = load(server, http, ns, names[0])
    schema = dict(t0["metadata"]["schemas"][0])
    wider = {**schema, "schema-id": schema["schema-id"] + 1,
             "fields": [*schema["fields"], {"id": 100, "name": "added", "type": "int", "required": False}]}
    changes = [
        change(ns, names[0], [{"action": "add-schema", "schema": wider}, {"action": "set-current-schema", "schema-id": -1}],
               [{"type": "assert-current-schema-id", "current-schema-id": t0["metadata"]["current-schema-id"]}]),
        change(ns, names[1], [{"action": "remove-properties", "removals": ["nothing"]}, *set_props(a=1)]),
        change(ns, names[2], [{"action": "set-location", "location": str(server.warehouse / unique("moved"))}]),
    ]
    assert commit(server, http, changes).status_code == 204
    md0 = load(server, http, ns, names[0])["metadata"]
    assert any(f["name"] == "added" for f in next(s for s in md0["schemas"] if s["schema-id"] == md0["current-schema-id"])["fields"])
    assert load(server, http, ns, names[1])["metadata"]["properties"]["a"] == "1"
    assert "moved" in load(server, http, ns, names[2])["metadata"]["location"]


def test_a_table_without_changes_keeps_its_file(server, http):
    ns, names = make_tables(server, http, 2)
    before = snapshot_state(server, http, ns, names)
    t0 = load(server, http, ns, names[0])
    r = commit(server, http, [change(ns, names[0], [], uuid_req(t0)), change(ns, names[1], set_props(k="v"))])
    assert r.status_code == 204, r.text
    after = snapshot_state(server, http, ns, names)
    assert after[names[0]] == before[names[0]]
    assert after[names[1]][0] != before[names[1]][0]


# ------------------------------------------------------------------ nothing changes


@pytest.mark.parametrize("failing", ["last", "first", "middle"])
def test_failed_requirement_changes_nothing(any_server, http, failing):
    s = any_server
    ns, names = make_tables(s, http, 3)
    before = snapshot_state(s, http, ns, names)
    bad = {"last": 2, "first": 0, "middle": 1}[failing]
    loaded = {n: load(s, http, ns, n) for n in names}
    changes = []
    for i, n in enumerate(names):
        req = [{"type": "assert-table-uuid", "uuid": str(uuid.uuid4())}] if i == bad else uuid_req(loaded[n])
        changes.append(change(ns, n, set_props(txn="fail"), req))
    assert_error(commit(s, http, changes), 409, "CommitFailedException")
    assert snapshot_state(s, http, ns, names) == before


def test_failed_ref_requirement_on_last_table_changes_nothing(server, http):
    ns, names = make_tables(server, http, 3)
    before = snapshot_state(server, http, ns, names)
    files = {n: metadata_files(before[n][0]) for n in names}
    changes = [change(ns, n, set_props(txn="fail")) for n in names[:-1]]
    # `main` has no snapshot: asserting one fails.
    changes.append(change(ns, names[-1], set_props(txn="fail"),
                          [{"type": "assert-ref-snapshot-id", "ref": "main", "snapshot-id": 123456789}]))
    assert_error(commit(server, http, changes), 409, "CommitFailedException")
    assert snapshot_state(server, http, ns, names) == before
    # The metadata files written for the other tables were removed again.
    assert {n: metadata_files(before[n][0]) for n in names} == files


def test_invalid_update_on_last_table_changes_nothing(server, http):
    ns, names = make_tables(server, http, 3)
    before = snapshot_state(server, http, ns, names)
    changes = [change(ns, n, set_props(txn="bad")) for n in names[:-1]]
    changes.append(change(ns, names[-1], [{"action": "set-current-schema", "schema-id": 999}]))
    assert_error(commit(server, http, changes), 400)
    assert snapshot_state(server, http, ns, names) == before


@pytest.mark.parametrize("position", [0, 1, 3])
def test_unknown_table_is_404_and_changes_nothing(server, http, position):
    ns, names = make_tables(server, http, 3)
    before = snapshot_state(server, http, ns, names)
    changes = [change(ns, n, set_props(txn="missing")) for n in names]
    changes.insert(position, change(ns, unique("nope"), set_props(txn="missing")))
    assert_error(commit(server, http, changes), 404, "NoSuchTableException")
    assert snapshot_state(server, http, ns, names) == before
    # And in a namespace that does not exist.
    changes[position] = change((unique("missing"),), "t0", set_props(txn="missing"))
    assert_error(commit(server, http, changes), 404)
    assert snapshot_state(server, http, ns, names) == before


def test_duplicate_table_is_400(server, http):
    ns, names = make_tables(server, http, 2)
    before = snapshot_state(server, http, ns, names)
    changes = [change(ns, names[0], set_props(a=1)), change(ns, names[1], set_props(b=1)),
               change(ns, names[0], set_props(c=1))]
    assert_error(commit(server, http, changes), 400)
    assert snapshot_state(server, http, ns, names) == before


def test_malformed_transactions_are_400(server, http):
    ns, names = make_tables(server, http, 2)
    before = snapshot_state(server, http, ns, names)
    no_ident = {"requirements": [], "updates": set_props(a=1)}
    for body in (
        {},
        {"table-changes": "nope"},
        {"table-changes": [change(ns, names[0], set_props(a=1)), no_ident]},
        {"table-changes": [change(ns, names[0], set_props(a=1)), change(ns, names[1], [{"action": "no-such-update"}])]},
        {"table-changes": [change(ns, names[0], set_props(a=1)), change(ns, names[1], [], [{"type": "no-such-requirement"}])]},
    ):
        assert_error(http.post(server.api("transactions/commit"), json=body), 400)
    assert_error(http.post(server.api("transactions/commit"), data=b"{\"table-changes\": ["), 400)
    assert snapshot_state(server, http, ns, names) == before


# ------------------------------------------------------------------ concurrency


def test_concurrent_transactions_on_the_same_tables(server):
    """Writers without requirements on the same tables: the server retries
    lost races, so each writer's last transaction is visible on every table."""
    import requests

    with requests.Session() as s0:
        ns, names = make_tables(server, s0, 3)
    writers, rounds = 8, 8
    errors: list[str] = []

    def writer(w: int) -> None:
        with requests.Session() as s:
            for i in range(rounds):
                r = commit(server, s, [change(ns, n, set_props(**{f"w{w}": i})) for n in names], timeout=30)
                if r.status_code != 204:
                    errors.append(f"writer {w} round {i}: {r.status_code} {r.text[:200]}")

    run_threads(writer, writers)
    assert not errors, errors
    with requests.Session() as s:
        for n in names:
            props = load(server, s, ns, n)["metadata"]["properties"]
            assert {f"w{w}": props.get(f"w{w}") for w in range(writers)} == {f"w{w}": str(rounds - 1) for w in range(writers)}


# ------------------------------------------------------------------ crash


class TxnWriter(threading.Thread):
    """Sends transactions `gen=1, 2, ...` over all tables on one keep-alive
    connection until the connection breaks or `stop` is set."""

    def __init__(self, server, ns, names, uuids, first_gen: int) -> None:
        super().__init__(daemon=True)
        self.server, self.ns, self.names, self.uuids = server, ns, names, uuids
        self.gen = first_gen - 1
        self.acked = first_gen - 1
        self.sent = first_gen - 1
        self.stop = threading.Event()
        self.error: str | None = None
        self.unexpected: list[str] = []

    def run(self) -> None:
        path = self.server.api_path("transactions/commit")
        try:
            with self.server.raw(timeout=10) as c:
                while not self.stop.is_set():
                    gen = self.sent + 1
                    body = {"table-changes": [
                        change(self.ns, n, set_props(gen=gen), [{"type": "assert-table-uuid", "uuid": self.uuids[n]}])
                        for n in self.names
                    ]}
                    self.sent = gen
                    r = c.request("POST", path, json.dumps(body).encode())
                    if r.status == 204:
                        self.acked = gen
                    else:
                        self.unexpected.append(f"gen {gen}: {r.status} {r.body[:200]!r}")
                        return
        except (OSError, ConnectionError) as e:
            self.error = repr(e)


@pytest.mark.single_node(reason="kills and restarts its server")
def test_kill9_during_transactions_is_all_or_nothing(fresh_server, http):
    s = fresh_server
    ns, names = make_tables(s, http, 4)
    uuids = {n: load(s, http, ns, n)["metadata"]["table-uuid"] for n in names}
    rng = random.Random()
    next_gen, report = 1, []
    for cycle in range(3):
        w = TxnWriter(s, ns, names, uuids, next_gen)
        target = next_gen - 1 + rng.randint(20, 30)
        started = time.monotonic()
        w.start()
        deadline = started + 60
        while w.acked < target and w.is_alive() and time.monotonic() < deadline:
            time.sleep(0.001)
        assert w.is_alive() and not w.unexpected, f"writer stopped early: {w.unexpected} {w.error}"
        assert w.acked >= target, f"only {w.acked - next_gen + 1} transactions acknowledged in 60 s"
        # Somewhere inside the next transaction or two.
        per_txn = (time.monotonic() - started) / (w.acked - next_gen + 1)
        time.sleep(rng.uniform(0, 2 * per_txn))
        s.kill9()
        w.join(15)
        assert not w.is_alive(), "writer did not notice the kill"
        assert not w.unexpected, w.unexpected
        acked, sent = w.acked, w.sent

        s.start()
        gens = {}
        for n in names:
            t = load(s, http, ns, n)
            assert_metadata_file_matches(t["metadata-location"], t["metadata"])
            gens[n] = int(t["metadata"]["properties"]["gen"])
        assert len(set(gens.values())) == 1, f"cycle {cycle}: tables disagree after kill -9: {gens} (acked {acked}, sent {sent})"
        gen = gens[names[0]]
        assert acked <= gen <= sent, f"cycle {cycle}: gen {gen} outside [acked {acked}, sent {sent}]"
        report.append(f"acked {acked - next_gen + 1}, sent {sent - next_gen + 1}, recovered {gen - next_gen + 1}"
                      f" ({per_txn * 1000:.1f} ms/txn)")
        next_gen = sent + 1
    MEASUREMENTS.append("transactions kill -9: " + "; ".join(report))
