#!/usr/bin/env python3
"""The disk's own sync rate, to set catalog write figures beside.

Every operation writes a new 20 KB file (a metadata file's size) into a
directory on the disk under test and makes it durable. Prints operations per
second for: one writer (`fdatasync` after each file), 8 parallel writers,
and batches of N files made durable together, once by N concurrent
`fdatasync`s plus one directory `fsync`, once by one `syncfs(2)`.

    scripts/disk_sync_rate.py DIR [--seconds 5] [--batch 32]
"""

import argparse
import ctypes
import os
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

SIZE = 20 * 1024
LIBC = ctypes.CDLL("libc.so.6", use_errno=True)


def write_file(dirname, name, payload, sync):
    fd = os.open(os.path.join(dirname, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, payload)
        if sync:
            os.fdatasync(fd)
    finally:
        os.close(fd)


def sync_dir(dirname):
    fd = os.open(dirname, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def writers(dirname, threads, seconds, payload):
    """Files per second with `threads` writers, each file fdatasynced."""
    stop = time.monotonic() + seconds
    counts = [0] * threads

    def run(i):
        n = 0
        while time.monotonic() < stop:
            write_file(dirname, f"w{i}-{n}", payload, sync=True)
            n += 1
        counts[i] = n

    ts = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    start = time.monotonic()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sum(counts) / (time.monotonic() - start)


def batches(dirname, batch, seconds, payload, how):
    """Files per second when each batch of `batch` files is made durable together."""
    fd = os.open(dirname, os.O_RDONLY | os.O_DIRECTORY)
    pool = ThreadPoolExecutor(batch)
    done, n, start = 0, 0, time.monotonic()
    try:
        while time.monotonic() - start < seconds:
            names = [f"{how}-{n + i}" for i in range(batch)]
            n += batch
            if how == "syncfs":
                for name in names:
                    write_file(dirname, name, payload, sync=False)
                if LIBC.syncfs(fd) != 0:
                    raise OSError(ctypes.get_errno(), "syncfs")
            else:
                list(pool.map(lambda name: write_file(dirname, name, payload, sync=True), names))
                sync_dir(dirname)
            done += batch
    finally:
        os.close(fd)
        pool.shutdown()
    return done / (time.monotonic() - start)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dir", help="a directory on the disk under test")
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--batch", type=int, default=32)
    args = p.parse_args()
    payload = os.urandom(SIZE)
    runs = [
        ("1 writer, fdatasync each", lambda d: writers(d, 1, args.seconds, payload)),
        ("8 writers, fdatasync each", lambda d: writers(d, 8, args.seconds, payload)),
        (f"batches of {args.batch}: concurrent fdatasyncs + dir fsync",
         lambda d: batches(d, args.batch, args.seconds, payload, "fdatasync")),
        (f"batches of {args.batch}: one syncfs", lambda d: batches(d, args.batch, args.seconds, payload, "syncfs")),
    ]
    for label, run in runs:
        with tempfile.TemporaryDirectory(dir=args.dir) as d:
            print(f"{label:<50} {run(d):8.0f} files/s", flush=True)


if __name__ == "__main__":
    main()
