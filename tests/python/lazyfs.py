"""A FUSE filesystem that behaves like a disk with a volatile write cache.

    python lazyfs.py BACKING MOUNTPOINT

File data written through MOUNTPOINT is held in this process's memory
("dirty pages") until the file is fsynced or fdatasynced; then it is written
to the same file under BACKING. Everything else (create, mkdir, rename,
unlink, truncate, chmod, utimens) passes straight through to BACKING. Reads
see the dirty data. SIGKILL of this process is a power cut: BACKING keeps
exactly what was synced, and a fresh daemon mounted on it sees that.

BACKING plays the disk, so an fsync here writes the dirty pages to the
backing file but does not fsync the backing file: the host's page cache
outlives the simulated cut. Namespace operations are durable at once, as on
a filesystem that journals metadata in order; a test on this filesystem
therefore catches missing file syncs, not missing directory syncs.

Every file is opened with FUSE's direct_io, so each read and write reaches
this process (no kernel page cache in between) and O_DIRECT opens work.

Faults, switched on and off while mounted by marker files in BACKING (also
visible through the mount; keep the server's directories beside them):
- a failing sync: while `.lazyfs-fail-fsync` exists, every fsync and
  fdatasync fails with EIO and keeps the data dirty;
- a slow disk: while `.lazyfs-fsync-delay-ms` holds a number N, every fsync
  and fdatasync first sleeps N ms (holding no lock: other operations and
  other files' syncs go on, as on a disk busy flushing);
- failing writes: while `.lazyfs-fail-write` exists, every write(2) to a
  file whose mount path starts with the marker's content (e.g.
  `/warehouse/`; empty: every file) fails with EIO and writes nothing;
- a power cut at a chosen moment: while `.lazyfs-cut-on-unlink` exists,
  the first unlink of a file whose mount path starts with the marker's
  content is done and then this process SIGKILLs itself, before any other
  operation (a sync included) can run.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
import threading
import time

import mfusepy as fuse

PAGE = 4096
#: While this file exists in BACKING, fsync fails with EIO.
FAIL_FSYNC = ".lazyfs-fail-fsync"
#: While this file in BACKING holds N, every fsync first sleeps N ms.
FSYNC_DELAY_MS = ".lazyfs-fsync-delay-ms"
#: While this file exists in BACKING, writes under the path prefix it holds fail with EIO.
FAIL_WRITE = ".lazyfs-fail-write"
#: While this file exists in BACKING, an unlink under the path prefix it holds is followed by a power cut.
CUT_ON_UNLINK = ".lazyfs-cut-on-unlink"


class Dirty:
    """A file's unsynced pages (page number -> PAGE bytes) and its size."""

    __slots__ = ("size", "pages")

    def __init__(self, size: int) -> None:
        self.size = size
        self.pages: dict[int, bytearray] = {}


class LazyFS(fuse.Operations):
    use_ns = True

    def __init__(self, backing: str) -> None:
        self.root = os.path.realpath(backing)
        self.mutex = threading.Lock()
        #: Mount path -> unsynced data; moved along on rename.
        self.dirty: dict[str, Dirty] = {}

    def _real(self, path: str) -> str:
        return os.path.join(self.root, path.lstrip("/"))

    def _marker(self, name: str) -> str | None:
        """The content of fault marker `name`, or None while it is absent."""
        try:
            with open(os.path.join(self.root, name)) as f:
                return f.read().strip()
        except FileNotFoundError:
            return None

    # ------------------------------------------------------------ metadata
    def getattr(self, path, fh=None):
        st = os.lstat(self._real(path))
        attrs = {k: getattr(st, k) for k in (
            "st_mode", "st_nlink", "st_uid", "st_gid", "st_size",
            "st_atime_ns", "st_mtime_ns", "st_ctime_ns", "st_blocks")}
        for k in ("st_atime", "st_mtime", "st_ctime"):
            attrs[k] = attrs.pop(k + "_ns")
        with self.mutex:
            d = self.dirty.get(path)
            if d is not None:
                attrs["st_size"] = d.size
        return attrs

    def readdir(self, path, fh):
        return [".", "..", *os.listdir(self._real(path))]

    def access(self, path, amode):
        if not os.access(self._real(path), amode):
            raise fuse.FuseOSError(errno.EACCES)
        return 0

    def statfs(self, path):
        sv = os.statvfs(self._real(path))
        return {k: getattr(sv, k) for k in (
            "f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail",
            "f_ffree", "f_files", "f_flag", "f_frsize", "f_namemax")}

    def chmod(self, path, mode):
        os.chmod(self._real(path), mode)
        return 0

    def chown(self, path, uid, gid):
        os.chown(self._real(path), uid, gid)
        return 0

    def utimens(self, path, times=None):
        os.utime(self._real(path), ns=times) if times else os.utime(self._real(path))
        return 0

    def mkdir(self, path, mode):
        os.mkdir(self._real(path), mode)
        return 0

    def rmdir(self, path):
        os.rmdir(self._real(path))
        return 0

    def unlink(self, path):
        cut = self._marker(CUT_ON_UNLINK)
        with self.mutex:
            os.unlink(self._real(path))
            self.dirty.pop(path, None)
            if cut is not None and path.startswith(cut):
                # Dies holding the lock: no sync of any file gets in after the unlink.
                os.kill(os.getpid(), signal.SIGKILL)
        return 0

    def rename(self, old, new):
        with self.mutex:
            os.rename(self._real(old), self._real(new))
            self.dirty.pop(new, None)
            # A renamed file or directory keeps its unsynced data.
            for p in [p for p in self.dirty if p == old or p.startswith(old + "/")]:
                self.dirty[new + p[len(old):]] = self.dirty.pop(p)
        return 0

    def truncate(self, path, length, fh=None):
        with self.mutex:
            os.truncate(self._real(path), length)
            d = self.dirty.get(path)
            if d is not None:
                d.size = length
                for pno in [p for p in d.pages if p * PAGE >= length]:
                    del d.pages[pno]
                tail = d.pages.get(length // PAGE)
                if tail is not None:
                    cut = length % PAGE
                    tail[cut:] = bytes(PAGE - cut)
        return 0

    # ------------------------------------------------------------ files
    def _open(self, path, fi, flags):
        fi.fh = os.open(self._real(path), flags)
        fi.direct_io = 1
        if fi.flags & os.O_TRUNC:
            self.truncate(path, 0)
        return 0

    def create(self, path, mode, fi):
        fi_flags = os.O_CREAT | os.O_RDWR | (fi.flags & os.O_EXCL)
        fd = os.open(self._real(path), fi_flags, mode)
        os.close(fd)
        return self._open(path, fi, os.O_RDWR)

    def open(self, path, fi):
        return self._open(path, fi, os.O_RDWR)

    def release(self, path, fi):
        os.close(fi.fh)
        return 0

    def flush(self, path, fi):
        return 0

    def fsyncdir(self, path, datasync, fi):
        return 0

    def _page(self, d: Dirty, fd: int, pno: int) -> bytearray:
        page = d.pages.get(pno)
        if page is None:
            page = bytearray(os.pread(fd, PAGE, pno * PAGE).ljust(PAGE, b"\0"))
            d.pages[pno] = page
        return page

    def write(self, path, data, offset, fi):
        prefix = self._marker(FAIL_WRITE)
        if prefix is not None and path.startswith(prefix):
            raise fuse.FuseOSError(errno.EIO)
        with self.mutex:
            d = self.dirty.get(path)
            if d is None:
                d = self.dirty[path] = Dirty(os.fstat(fi.fh).st_size)
            pos, view = offset, memoryview(data)
            while view:
                pno, off = divmod(pos, PAGE)
                take = min(PAGE - off, len(view))
                if take == PAGE:
                    d.pages[pno] = bytearray(view[:PAGE])
                else:
                    self._page(d, fi.fh, pno)[off:off + take] = view[:take]
                pos += take
                view = view[take:]
            d.size = max(d.size, pos)
        return len(data)

    def read(self, path, size, offset, fi):
        with self.mutex:
            d = self.dirty.get(path)
            if d is None:
                return os.pread(fi.fh, size, offset)
            end = min(offset + size, d.size)
            out = bytearray()
            pos = offset
            while pos < end:
                pno, off = divmod(pos, PAGE)
                page = d.pages.get(pno)
                if page is None:
                    page = os.pread(fi.fh, PAGE, pno * PAGE).ljust(PAGE, b"\0")
                take = min(PAGE - off, end - pos)
                out += page[off:off + take]
                pos += take
            return bytes(out)

    def fsync(self, path, datasync, fi):
        delay = self._marker(FSYNC_DELAY_MS)
        if delay:
            time.sleep(int(delay) / 1000)
        if os.path.exists(os.path.join(self.root, FAIL_FSYNC)):
            raise fuse.FuseOSError(errno.EIO)
        with self.mutex:
            d = self.dirty.pop(path, None)
            if d is None:
                return 0
            for pno in sorted(d.pages):
                start = pno * PAGE
                if start < d.size:
                    os.pwrite(fi.fh, d.pages[pno][:d.size - start], start)
        return 0


def main() -> None:
    backing, mountpoint = sys.argv[1:3]
    fuse.FUSE(LazyFS(backing), mountpoint, raw_fi=True, foreground=True, fsname="lazyfs")


if __name__ == "__main__":
    main()
