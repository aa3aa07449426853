"""Online backup and restore of the embedded store: `bingsan backup` while
writers commit, `bingsan restore` into a fresh data directory, and every
commit acknowledged before the backup started is in the restored catalog,
with each table's metadata file matching its pointer."""

from __future__ import annotations

import re
import subprocess
import threading
import time

import pytest
import requests

from harness import HTTP_TIMEOUT, BingsanServer, assert_metadata_file_matches, create_table_raw, local_path, table_url

# PostgreSQL is backed up with its own tools (docs/postgres.md); the server
# there opens no admin socket.
pytestmark = pytest.mark.sled_only(reason="bingsan backup snapshots the embedded store")

TABLES = 4
NS = "bk"


def commit_counter(session, server, name: str, n: int) -> int:
    body = {"requirements": [], "updates": [{"action": "set-properties", "updates": {"n": str(n)}}]}
    return session.post(table_url(server, NS, name), json=body, timeout=HTTP_TIMEOUT).status_code


def test_backup_under_write_load_restores_every_acknowledged_commit(server_factory, binary, tmp_path):
    src = server_factory(name="backed-up")
    with requests.Session() as s:
        assert s.post(src.api("namespaces"), json={"namespace": [NS]}, timeout=HTTP_TIMEOUT).status_code == 200
        for i in range(TABLES):
            create_table_raw(s, src, NS, f"t{i}")

    # One writer per table: counter n goes 1, 2, 3...; acked[i] is the
    # last value answered 200, with the time of that answer.
    acked: list[list[tuple[float, int]]] = [[] for _ in range(TABLES)]
    stop = threading.Event()
    failures: list[str] = []

    def writer(i: int) -> None:
        with requests.Session() as s:
            n = 0
            while not stop.is_set():
                n += 1
                code = commit_counter(s, src, f"t{i}", n)
                if code != 200:
                    failures.append(f"t{i} n={n}: {code}")
                    return
                acked[i].append((time.monotonic(), n))

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(TABLES)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.0)  # commits under way before the backup starts
        started = time.monotonic()
        out = subprocess.run(
            [str(binary), "backup", "--data-dir", str(src.data_dir), "--to", str(tmp_path / "backup")],
            capture_output=True, text=True, timeout=60,
        )
        finished = time.monotonic()
        time.sleep(0.5)  # and they go on after it
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert out.returncode == 0, out.stderr
    assert "backup written to" in out.stdout and "keys" in out.stdout, out.stdout
    # Writers waited only while the keys were collected: far below a second.
    paused_us = int(re.search(r"writes paused (\d+) us", out.stdout).group(1))
    assert paused_us < 1_000_000, out.stdout
    print(f"backup under load: {out.stdout.strip()}")
    assert not failures, failures
    # Writes were not stopped for long: commits were acknowledged during the
    # backup or right after it on every table.
    assert all(any(t > started for t, _ in a) for a in acked), "writers stalled"
    before = [max((n for t, n in a if t < started), default=0) for a in acked]
    ceiling = [a[-1][1] for a in acked]
    assert all(b > 0 for b in before), before
    src.stop()

    # A second backup of a stopped server fails and says why.
    again = subprocess.run(
        [str(binary), "backup", "--data-dir", str(src.data_dir), "--to", str(tmp_path / "again")],
        capture_output=True, text=True, timeout=30,
    )
    assert again.returncode == 1 and "is it running" in again.stderr, again.stderr

    # Restore into a fresh data directory over the same warehouse.
    restored_dir = tmp_path / "restored"
    restored = BingsanServer(restored_dir, binary=binary, name="restored")
    restored.warehouse = src.warehouse
    out = subprocess.run(
        [str(binary), "restore", "--from", str(tmp_path / "backup"), "--data-dir", str(restored.data_dir),
         "--warehouse", str(src.warehouse)],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr + out.stdout
    assert "restored" in out.stdout and "checked" in out.stdout, out.stdout

    # Restoring over a data directory that has a store is refused.
    twice = subprocess.run(
        [str(binary), "restore", "--from", str(tmp_path / "backup"), "--data-dir", str(restored.data_dir),
         "--warehouse", str(src.warehouse)],
        capture_output=True, text=True, timeout=60,
    )
    assert twice.returncode == 1 and "not empty" in twice.stderr, twice.stderr

    restored.start()
    try:
        with requests.Session() as s:
            for i in range(TABLES):
                r = s.get(table_url(restored, NS, f"t{i}"), timeout=HTTP_TIMEOUT)
                assert r.status_code == 200, r.text
                body = r.json()
                n = int(body["metadata"]["properties"]["n"])
                assert before[i] <= n <= ceiling[i], (i, before[i], n, ceiling[i])
                assert_metadata_file_matches(body["metadata-location"], body["metadata"])
            # The restored catalog takes writes.
            assert commit_counter(s, restored, "t0", 10**6) == 200
    finally:
        restored.stop()
    assert finished - started < 60


def test_restore_rewrites_missing_metadata_files(server_factory, binary, tmp_path):
    """The backup holds every current metadata file's bytes: a warehouse
    that lost them gets them back at restore."""
    src = server_factory(name="lost-files")
    with requests.Session() as s:
        assert s.post(src.api("namespaces"), json={"namespace": [NS]}, timeout=HTTP_TIMEOUT).status_code == 200
        location = create_table_raw(s, src, NS, "t")["metadata-location"]
    out = subprocess.run(
        [str(binary), "backup", "--data-dir", str(src.data_dir), "--to", str(tmp_path / "b")],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    src.stop()
    local_path(location).unlink()
    out = subprocess.run(
        [str(binary), "restore", "--from", str(tmp_path / "b"), "--data-dir", str(tmp_path / "data2"),
         "--warehouse", str(src.warehouse)],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr + out.stdout
    assert "1 repaired" in out.stdout, out.stdout
    assert local_path(location).is_file()


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_damaged_backup_is_refused(server_factory, binary, tmp_path, damage):
    src = server_factory(name="damaged")
    with requests.Session() as s:
        assert s.post(src.api("namespaces"), json={"namespace": [NS]}, timeout=HTTP_TIMEOUT).status_code == 200
    out = subprocess.run(
        [str(binary), "backup", "--data-dir", str(src.data_dir), "--to", str(tmp_path / "b")],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    f = tmp_path / "b" / "catalog.backup"
    data = bytearray(f.read_bytes())
    if damage == "truncate":
        data = data[:-3]
    else:
        data[len(data) // 2] ^= 0x40
    f.write_bytes(bytes(data))
    out = subprocess.run(
        [str(binary), "restore", "--from", str(tmp_path / "b"), "--data-dir", str(tmp_path / "data2"),
         "--warehouse", str(src.warehouse)],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 1 and "not complete or damaged" in out.stderr, out.stderr
    assert not (tmp_path / "data2").exists(), "a refused restore must not create the data directory"


def test_admin_socket_is_private_and_refuses_other_requests(server_factory, tmp_path):
    import socket
    import stat

    src = server_factory(name="admin")
    path = src.data_dir / "admin.sock"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    def ask(line: bytes) -> str:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(str(path))
            s.sendall(line)
            return s.makefile().read()

    assert ask(b"delete everything\n").startswith("error unknown request")
    assert ask(b"backup relative/dir\n").startswith("error unknown request")
    assert not (src.workdir / "relative").exists()
    # A directory that already holds files is left alone.
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep").write_text("x")
    assert ask(f"backup {tmp_path / 'full'}\n".encode()).startswith("error the backup directory is not empty")
    assert (tmp_path / "full" / "keep").read_text() == "x"
    src.stop()
    assert not path.exists(), "the socket file outlived the server"
