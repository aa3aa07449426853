"""`Idempotency-Key`: a retried mutation gets the first final answer again.

The spec (components/parameters/idempotency-key): the key is a UUIDv7 in
its 36-character form; a finalized request (2xx or a deterministic 4xx) is
answered again without running the operation again; 5xx answers are not
stored; a key must not be reused for a different operation; and
`/v1/config` advertises `idempotency-key-lifetime` when the server honours
keys. Keys here come from `harness.uuid7`.
"""

from __future__ import annotations

import re
import threading
import time

import pytest
import requests

from harness import (
    assert_error,
    create_table_raw,
    encode_namespace,
    table_url,
    unique,
    uuid7,
    view_url,
)

#: ISO-8601 duration as the spec uses it (PT30M, PT24H, P1D, ...).
DURATION = re.compile(r"^P(?!$)(\d+Y)?(\d+M)?(\d+W)?(\d+D)?(T(?=\d)(\d+H)?(\d+M)?(\d+(\.\d+)?S)?)?$")


def key_headers(key: str) -> dict:
    return {"Idempotency-Key": key}


def create_ns(server, http, ns, key: str | None = None, **props):
    return http.post(server.api("namespaces"), json={"namespace": list(ns), "properties": props},
                     headers=key_headers(key) if key else {})


def ns_url(server, ns) -> str:
    return server.api(f"namespaces/{encode_namespace(ns)}")


def list_children(server, http, parent) -> list:
    r = http.get(server.api("namespaces"), params={"parent": "\x1f".join(parent)})
    assert r.status_code == 200, r.text
    return r.json()["namespaces"]


def load(server, http, ns, name: str) -> dict:
    r = http.get(table_url(server, ns, name))
    assert r.status_code == 200, r.text
    return r.json()


def commit_table(server, http, ns, name: str, updates: list, requirements: list, key: str | None = None):
    return http.post(table_url(server, ns, name),
                     json={"identifier": {"namespace": list(ns), "name": name},
                           "requirements": requirements, "updates": updates},
                     headers=key_headers(key) if key else {})


def new_table(server, http) -> tuple[tuple[str, ...], str, dict]:
    ns = (unique(),)
    assert create_ns(server, http, ns).status_code == 200
    name = unique("t")
    return ns, name, create_table_raw(http, server, ns, name)


# ------------------------------------------------------------------ config


def test_config_advertises_the_key_lifetime(any_server, http):
    r = http.get(any_server.url("/v1/config"))
    assert r.status_code == 200, r.text
    lifetime = r.json().get("idempotency-key-lifetime")
    assert isinstance(lifetime, str) and DURATION.match(lifetime), f"idempotency-key-lifetime {lifetime!r}"


# ------------------------------------------------------------------ namespaces


def test_create_namespace_twice_with_one_key(any_server, http):
    s = any_server
    parent = (unique("parent"),)
    assert create_ns(s, http, parent).status_code == 200
    ns = (*parent, "child")
    key = uuid7()
    first = create_ns(s, http, ns, key, owner="alice")
    assert first.status_code == 200, first.text
    second = create_ns(s, http, ns, key, owner="alice")
    assert second.status_code == 200, second.text
    assert second.content == first.content
    assert second.headers.get("content-type", "").startswith("application/json")
    assert list_children(s, http, parent) == [list(ns)], "created once"

    # A new key is a new operation: it runs again and meets the namespace.
    assert_error(create_ns(s, http, ns, uuid7(), owner="alice"), 409, "AlreadyExistsException")
    # The first key still replays its 200.
    again = create_ns(s, http, ns, key, owner="alice")
    assert (again.status_code, again.content) == (200, first.content)


def test_a_final_4xx_is_replayed(server, http):
    ns = (unique(),)
    assert create_ns(server, http, ns).status_code == 200
    key = uuid7()
    assert_error(create_ns(server, http, ns, key), 409, "AlreadyExistsException")
    assert http.delete(ns_url(server, ns)).status_code == 204
    # The retry is answered from the record, not run: no namespace appears.
    assert_error(create_ns(server, http, ns, key), 409, "AlreadyExistsException")
    assert http.get(ns_url(server, ns)).status_code == 404


def test_drop_namespace_replays_204(server, http):
    ns = (unique(),)
    assert create_ns(server, http, ns).status_code == 200
    key = uuid7()
    for _ in range(2):
        r = http.delete(ns_url(server, ns), headers=key_headers(key))
        assert r.status_code == 204, r.text
    # Without the key the drop runs and finds nothing.
    assert_error(http.delete(ns_url(server, ns), headers=key_headers(uuid7())), 404, "NoSuchNamespaceException")


def test_namespace_properties_replayed(server, http):
    ns = (unique(),)
    assert create_ns(server, http, ns, a="1").status_code == 200
    key = uuid7()
    url = ns_url(server, ns) + "/properties"
    first = http.post(url, json={"removals": ["a"], "updates": {"b": "2"}}, headers=key_headers(key))
    assert first.status_code == 200, first.text
    # Someone sets a again; the retry must not remove it a second time.
    assert http.post(url, json={"updates": {"a": "3"}}).status_code == 200
    second = http.post(url, json={"removals": ["a"], "updates": {"b": "2"}}, headers=key_headers(key))
    assert (second.status_code, second.content) == (200, first.content)
    assert http.get(ns_url(server, ns)).json()["properties"] == {"a": "3", "b": "2"}


# ------------------------------------------------------------------ tables


def test_table_commit_replayed(any_server, http):
    s = any_server
    ns, name, created = new_table(s, http)
    table_uuid = created["metadata"]["table-uuid"]
    req = [{"type": "assert-table-uuid", "uuid": table_uuid}]
    key = uuid7()
    first = commit_table(s, http, ns, name, [{"action": "set-properties", "updates": {"state": "first"}}], req, key)
    assert first.status_code == 200, first.text
    loc1 = first.json()["metadata-location"]
    assert loc1 != created["metadata-location"]
    assert load(s, http, ns, name)["metadata-location"] == loc1

    # Immediate retry: the same answer, no new metadata file.
    second = commit_table(s, http, ns, name, [{"action": "set-properties", "updates": {"state": "first"}}], req, key)
    assert second.status_code == 200, second.text
    assert second.json() == first.json()
    assert load(s, http, ns, name)["metadata-location"] == loc1

    # Another writer moves the table on; a late retry of the first commit
    # must not set `state` back.
    other = commit_table(s, http, ns, name, [{"action": "set-properties", "updates": {"state": "other"}}], req, uuid7())
    assert other.status_code == 200, other.text
    loc2 = other.json()["metadata-location"]
    late = commit_table(s, http, ns, name, [{"action": "set-properties", "updates": {"state": "first"}}], req, key)
    assert late.status_code == 200, late.text
    assert late.json()["metadata-location"] == loc1
    now = load(s, http, ns, name)
    assert now["metadata-location"] == loc2
    assert now["metadata"]["properties"]["state"] == "other"


def test_failed_table_commit_is_replayed(server, http):
    """A 409 is final: after the requirement would pass, the retry still 409s."""
    ns, name, created = new_table(server, http)
    schema_id = created["metadata"]["current-schema-id"]
    key = uuid7()
    req = [{"type": "assert-current-schema-id", "current-schema-id": schema_id + 1}]
    upd = [{"action": "set-properties", "updates": {"x": "1"}}]
    first = commit_table(server, http, ns, name, upd, req, key)
    assert_error(first, 409, "CommitFailedException")
    # Make the requirement true now.
    schema = dict(created["metadata"]["schemas"][0])
    wider = {**schema, "schema-id": schema_id + 1,
             "fields": [*schema["fields"], {"id": 99, "name": "y", "type": "int", "required": False}]}
    r = commit_table(server, http, ns, name, [{"action": "add-schema", "schema": wider},
                                              {"action": "set-current-schema", "schema-id": -1}], [])
    assert r.status_code == 200, r.text
    assert r.json()["metadata"]["current-schema-id"] == schema_id + 1
    second = commit_table(server, http, ns, name, upd, req, key)
    assert (second.status_code, second.content) == (409, first.content)
    assert "x" not in load(server, http, ns, name)["metadata"].get("properties", {})


def test_create_drop_rename_table_replayed(server, http):
    ns = (unique(),)
    assert create_ns(server, http, ns).status_code == 200
    name = unique("t")
    body = {"name": name, "schema": {"type": "struct", "schema-id": 0,
                                     "fields": [{"id": 1, "name": "a", "type": "long", "required": False}]}}
    key = uuid7()
    first = http.post(table_url(server, ns), json=body, headers=key_headers(key))
    assert first.status_code == 200, first.text
    second = http.post(table_url(server, ns), json=body, headers=key_headers(key))
    assert (second.status_code, second.content) == (200, first.content)
    assert load(server, http, ns, name)["metadata-location"] == first.json()["metadata-location"]

    key = uuid7()
    rename_body = {"source": {"namespace": list(ns), "name": name}, "destination": {"namespace": list(ns), "name": "renamed"}}
    for _ in range(2):
        r = http.post(server.api("tables/rename"), json=rename_body, headers=key_headers(key))
        assert r.status_code == 204, r.text
    assert http.head(table_url(server, ns, "renamed")).status_code == 204

    key = uuid7()
    for _ in range(2):
        r = http.delete(table_url(server, ns, "renamed"), headers=key_headers(key))
        assert r.status_code == 204, r.text
    assert http.head(table_url(server, ns, "renamed")).status_code == 404


def test_transaction_replayed(server, http):
    ns, name, created = new_table(server, http)
    other = unique("t")
    create_table_raw(http, server, ns, other)
    key = uuid7()
    body = {"table-changes": [
        {"identifier": {"namespace": list(ns), "name": n}, "requirements": [],
         "updates": [{"action": "set-properties", "updates": {"txn": "1"}}]} for n in (name, other)]}
    first = http.post(server.api("transactions/commit"), json=body, headers=key_headers(key))
    assert first.status_code == 204, first.text
    locs = {n: load(server, http, ns, n)["metadata-location"] for n in (name, other)}
    # Someone changes txn; the retry must not set it back.
    for n in (name, other):
        assert commit_table(server, http, ns, n, [{"action": "set-properties", "updates": {"txn": "2"}}], []).status_code == 200
    locs2 = {n: load(server, http, ns, n)["metadata-location"] for n in (name, other)}
    assert locs2 != locs
    second = http.post(server.api("transactions/commit"), json=body, headers=key_headers(key))
    assert second.status_code == 204, second.text
    for n in (name, other):
        t = load(server, http, ns, n)
        assert t["metadata-location"] == locs2[n]
        assert t["metadata"]["properties"]["txn"] == "2"


# ------------------------------------------------------------------ views


def view_body(name: str, ns) -> dict:
    return {
        "name": name,
        "schema": {"type": "struct", "schema-id": 0, "fields": [{"id": 1, "name": "a", "type": "long", "required": False}]},
        "view-version": {"version-id": 1, "timestamp-ms": int(time.time() * 1000), "schema-id": 0, "summary": {},
                         "representations": [{"type": "sql", "sql": "SELECT 1 AS a", "dialect": "spark"}],
                         "default-namespace": list(ns)},
        "properties": {},
    }


def test_view_operations_replayed(server, http):
    ns = (unique(),)
    assert create_ns(server, http, ns).status_code == 200
    name = unique("v")
    key = uuid7()
    first = http.post(view_url(server, ns), json=view_body(name, ns), headers=key_headers(key))
    assert first.status_code == 200, first.text
    second = http.post(view_url(server, ns), json=view_body(name, ns), headers=key_headers(key))
    assert (second.status_code, second.content) == (200, first.content)
    view_uuid = first.json()["metadata"]["view-uuid"]

    # Replace: a late retry must not undo a newer change.
    key = uuid7()
    commit = {"requirements": [{"type": "assert-view-uuid", "uuid": view_uuid}],
              "updates": [{"action": "set-properties", "updates": {"state": "first"}}]}
    r1 = http.post(view_url(server, ns, name), json=commit, headers=key_headers(key))
    assert r1.status_code == 200, r1.text
    r = http.post(view_url(server, ns, name), json={"updates": [{"action": "set-properties", "updates": {"state": "other"}}]})
    assert r.status_code == 200, r.text
    loc_other = r.json()["metadata-location"]
    r2 = http.post(view_url(server, ns, name), json=commit, headers=key_headers(key))
    assert (r2.status_code, r2.json()) == (200, r1.json())
    now = http.get(view_url(server, ns, name)).json()
    assert now["metadata-location"] == loc_other
    assert now["metadata"]["properties"]["state"] == "other"

    key = uuid7()
    body = {"source": {"namespace": list(ns), "name": name}, "destination": {"namespace": list(ns), "name": "renamed"}}
    for _ in range(2):
        r = http.post(server.api("views/rename"), json=body, headers=key_headers(key))
        assert r.status_code == 204, r.text
    key = uuid7()
    for _ in range(2):
        r = http.delete(view_url(server, ns, "renamed"), headers=key_headers(key))
        assert r.status_code == 204, r.text
    assert http.head(view_url(server, ns, "renamed")).status_code == 404


# ------------------------------------------------------------------ misuse


def test_key_reused_for_another_operation_is_422(server, http):
    ns = (unique(),)
    key = uuid7()
    assert create_ns(server, http, ns, key).status_code == 200
    name = unique("t")
    body = {"name": name, "schema": {"type": "struct", "schema-id": 0,
                                     "fields": [{"id": 1, "name": "a", "type": "long", "required": False}]}}
    assert_error(http.post(table_url(server, ns), json=body, headers=key_headers(key)), 422)
    assert http.head(table_url(server, ns, name)).status_code == 404, "the other operation did not run"
    assert_error(http.delete(ns_url(server, ns), headers=key_headers(key)), 422)
    assert http.get(ns_url(server, ns)).status_code == 200, "the other operation did not run"


@pytest.mark.parametrize("bad", [
    "not-a-uuid",
    "",
    "0190b8d2e7a07c3f8e1a2b3c4d5e6f70",                 # 32 hex digits, no hyphens
    "{0190b8d2-e7a0-7c3f-8e1a-2b3c4d5e6f70}",           # braces
    "0190b8d2-e7a0-7c3f-8e1a-2b3c4d5e6f7",              # 35 characters
    "0190b8d2-e7a0-7c3f-8e1a-2b3c4d5e6f700",            # 37 characters
    "zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz",             # 36 characters, no hex
])
def test_invalid_key_is_400(server, http, bad):
    ns = (unique(),)
    assert_error(create_ns(server, http, ns, bad) if bad else
                 http.post(server.api("namespaces"), json={"namespace": list(ns)}, headers={"Idempotency-Key": ""}), 400)
    assert http.get(ns_url(server, ns)).status_code == 404, "a request with a bad key does not run"


def test_key_is_case_insensitive(server, http):
    """UUIDs compare case-insensitively (RFC 9562); the spec's own example
    key is upper case."""
    ns = (unique(),)
    key = uuid7()
    first = create_ns(server, http, ns, key.upper())
    assert first.status_code == 200, first.text
    second = create_ns(server, http, ns, key.lower())
    assert (second.status_code, second.content) == (200, first.content)


# ------------------------------------------------------------------ concurrent retries


def test_concurrent_requests_with_one_key_get_one_answer(server):
    """A client that times out and retries while its first request is still
    running must see the same final answer on every attempt."""
    problems = []
    for trial in range(20):
        ns = (unique("race"),)
        key = uuid7()
        answers: list[tuple[int, bytes]] = []
        barrier = threading.Barrier(8)

        def attempt() -> None:
            with requests.Session() as s:
                barrier.wait(10)
                r = create_ns(server, s, ns, key)
                answers.append((r.status_code, r.content))

        threads = [threading.Thread(target=attempt, daemon=True) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert len(answers) == 8, "attempts hung"
        with requests.Session() as s:
            later = create_ns(server, s, ns, key)
        codes = sorted(c for c, _ in answers)
        if len(set(answers)) != 1 or later.status_code != 200:
            problems.append(f"trial {trial}: concurrent answers {codes}, later retry {later.status_code}")
            break
    assert not problems, problems


# ------------------------------------------------------------------ restarts


@pytest.mark.single_node(reason="kills and restarts its server")
@pytest.mark.parametrize("graceful", [True, False], ids=["sigterm", "kill9"])
def test_key_survives_restart(fresh_server, http, graceful):
    s = fresh_server
    ns = (unique(),)
    key = uuid7()
    first = create_ns(s, http, ns, key, p="1")
    assert first.status_code == 200, first.text
    ns2, name, created = new_table(s, http)
    tkey = uuid7()
    upd = [{"action": "set-properties", "updates": {"v": "1"}}]
    req = [{"type": "assert-table-uuid", "uuid": created["metadata"]["table-uuid"]}]
    tfirst = commit_table(s, http, ns2, name, upd, req, tkey)
    assert tfirst.status_code == 200, tfirst.text

    s.restart(graceful=graceful)

    again = create_ns(s, http, ns, key, p="1")
    assert (again.status_code, again.content) == (200, first.content)
    tagain = commit_table(s, http, ns2, name, upd, req, tkey)
    assert (tagain.status_code, tagain.json()) == (200, tfirst.json())
    assert load(s, http, ns2, name)["metadata-location"] == tfirst.json()["metadata-location"]
    assert_error(create_ns(s, http, ns, uuid7()), 409, "AlreadyExistsException")


def crash_case(s, http, case: str):
    """Sets up `case`: (send(key) -> response, check(retry's response) -> bool
    that the state shows one execution and the answer belongs to it)."""
    ns, name, created = new_table(s, http)
    post = lambda url, body, key: http.post(url, json=body, headers=key_headers(key))  # noqa: E731
    one = lambda r: r.json()["metadata-location"].rsplit("/", 1)[1].startswith("00001-")  # noqa: E731
    fresh = (unique(),)
    renamed = {"source": {"namespace": list(ns), "name": name}, "destination": {"namespace": list(ns), "name": "moved"}}
    props = [{"action": "set-properties", "updates": {"v": "1"}}]
    if case == "register-table":
        assert http.delete(table_url(s, ns, name)).status_code == 204
    cases = {
        "create-namespace": (lambda key: create_ns(s, http, fresh, key, p="1"),
                             lambda r: r.json() == {"namespace": list(fresh), "properties": {"p": "1"}}
                             and http.get(ns_url(s, fresh)).json()["properties"] == {"p": "1"}),
        "drop-namespace": (lambda key: http.delete(ns_url(s, fresh), headers=key_headers(key)),
                           lambda r: http.get(ns_url(s, fresh)).status_code == 404),
        "update-properties": (lambda key: post(ns_url(s, ns) + "/properties", {"updates": {"q": "2"}}, key),
                              lambda r: r.json()["updated"] == ["q"]
                              and http.get(ns_url(s, ns)).json()["properties"] == {"q": "2"}),
        "create-table": (lambda key: post(table_url(s, ns), {"name": "t2", "schema": SCHEMA}, key),
                         lambda r: load(s, http, ns, "t2")["metadata-location"] == r.json()["metadata-location"]),
        "commit": (lambda key: commit_table(s, http, ns, name, props, [], key),
                   lambda r: load(s, http, ns, name)["metadata-location"] == r.json()["metadata-location"] and one(r)),
        "drop-table": (lambda key: http.delete(table_url(s, ns, name), headers=key_headers(key)),
                       lambda r: http.head(table_url(s, ns, name)).status_code == 404),
        "register-table": (lambda key: post(s.api(f"namespaces/{encode_namespace(ns)}/register"),
                                            {"name": "back", "metadata-location": created["metadata-location"]}, key),
                           lambda r: load(s, http, ns, "back")["metadata-location"] == created["metadata-location"]),
        "rename-table": (lambda key: post(s.api("tables/rename"), renamed, key),
                         lambda r: http.head(table_url(s, ns, "moved")).status_code == 204),
        "transaction": (lambda key: post(s.api("transactions/commit"), {"table-changes": [
                            {"identifier": {"namespace": list(ns), "name": name}, "requirements": [], "updates": props}]}, key),
                        lambda r: load(s, http, ns, name)["metadata"]["properties"]["v"] == "1"
                        and one(http.get(table_url(s, ns, name)))),
    }
    if case == "drop-namespace":
        assert create_ns(s, http, fresh).status_code == 200
    return cases[case]


#: One per way a mutation stores its answer; views share the table paths
#: (insert, commit loop, delete, rename).
CRASH_CASES = ["create-namespace", "drop-namespace", "update-properties", "create-table", "commit", "drop-table",
               "register-table", "rename-table", "transaction"]
SCHEMA = {"type": "struct", "schema-id": 0, "fields": [{"id": 1, "name": "a", "type": "long", "required": False}]}


@pytest.mark.single_node(reason="kills and restarts its server")
@pytest.mark.parametrize("case", CRASH_CASES)
def test_answer_is_durable_with_its_mutation(server_factory, http, monkeypatch, case):
    """The server dies (SIGKILL, from a debug-build hook) right after a keyed
    mutation succeeded and before its answer is settled or sent. The retry
    after a restart must get the answer of that one execution: the
    answer was stored in the mutation's own store batch. (With the answer
    written after the mutation, the retry found a claim still in progress
    and got a 503, or after a minute ran the operation again.)"""
    monkeypatch.setenv("BINGSAN_TEST_CRASH_AFTER_MUTATION", "1")
    s = server_factory(name="crash")
    if "/release/" in str(s.binary):
        pytest.skip("the crash hook exists in debug builds only")
    send, one_execution = crash_case(s, http, case)
    key = uuid7()
    with pytest.raises(requests.ConnectionError):
        send(key)
    s.proc.wait(10)
    assert s.proc.returncode == -9, s.log_tail()
    s.kill9()  # closes the log of the dead process
    monkeypatch.delenv("BINGSAN_TEST_CRASH_AFTER_MUTATION")
    s.start()
    again = send(key)
    assert again.status_code in (200, 204), f"{again.status_code} {again.text[:300]}"
    assert one_execution(again), again.text[:300]
    assert (send(key).status_code, send(key).content) == (again.status_code, again.content)


# ------------------------------------------------------------------ 5xx


def test_5xx_is_not_stored(server, http):
    """A create whose metadata file cannot be written fails with 5xx; once
    the obstacle is gone the same key runs the create for real."""
    ns = (unique(),)
    assert create_ns(server, http, ns).status_code == 200
    name = unique("t")
    location = server.warehouse / unique("blocked")
    location.mkdir(parents=True)
    blocker = location / "metadata"
    blocker.write_text("a file where the metadata directory should be")
    body = {"name": name, "location": str(location),
            "schema": {"type": "struct", "schema-id": 0, "fields": [{"id": 1, "name": "a", "type": "long", "required": False}]}}
    key = uuid7()
    first = http.post(table_url(server, ns), json=body, headers=key_headers(key))
    assert_error(first, 503, "ServiceUnavailableException")
    assert http.head(table_url(server, ns, name)).status_code == 404
    blocker.unlink()
    second = http.post(table_url(server, ns), json=body, headers=key_headers(key))
    assert second.status_code == 200, f"the 5xx was replayed: {second.status_code} {second.text[:300]}"
    assert load(server, http, ns, name)["metadata-location"] == second.json()["metadata-location"]
