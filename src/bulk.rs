//! Copies of megabytes on a shard in bounded slices, with a reactor turn
//! between them, so the shard's other connections (reads beside a commit
//! of a 10,000-snapshot table) wait at most one slice, not the whole copy.
//!
//! The blocking thread and the group-commit thread, which share a shard's
//! core, sync big files with [`sync_data`], whose system calls each do at
//! most a slice of work: a kernel without preemption gives the core back to
//! a woken shard only between system calls.
//!
//! A glommio task that only yields is run again before the reactor is
//! polled (the queue stays busy until its preemption timer), so a slice ends
//! with a 1 µs timer: the executor runs what is ready, polls for I/O, then
//! resumes the copy.

use std::time::Duration;

/// The most a shard copies without a pause: 256 KiB (~20–40 µs of `memcpy`).
pub const SLICE: usize = 256 * 1024;

/// `fdatasync` of `file`, `len` bytes long, with its writeback first started
/// a slice per system call (`sync_file_range(SYNC_FILE_RANGE_WRITE)`, which
/// neither waits nor flushes the disk's cache): the `fdatasync`, which makes
/// the data durable, is then left mostly waiting, where alone it would start
/// the writeback of megabytes in one system call.
pub fn sync_data(file: &std::fs::File, len: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let mut at = 0;
    while at < len {
        let n = (len - at).min(SLICE as u64);
        // SAFETY: a plain system call on a descriptor `file` owns.
        if unsafe { libc::sync_file_range(file.as_raw_fd(), at as i64, n as i64, libc::SYNC_FILE_RANGE_WRITE) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        at += n;
    }
    file.sync_data()
}

/// From this many bytes a new file is written with `O_DIRECT` ([`write_synced`]).
const DIRECT_MIN: usize = SLICE;

/// The bounce buffer of a direct write: the unit of one `write`.
const DIRECT_CHUNK: usize = 1 << 20;

/// What `O_DIRECT` needs of a write's memory, file offset and length (the
/// page size, a multiple of any disk's logical block size).
const DIRECT_ALIGN: usize = 4096;

thread_local! {
    /// One bounce buffer per thread that writes big files (a shard's
    /// background thread), reused for every file: 1 MiB for the life of
    /// the thread.
    static BOUNCE: std::cell::RefCell<Option<Bounce>> = const { std::cell::RefCell::new(None) };
}

/// [`DIRECT_CHUNK`] bytes aligned to [`DIRECT_ALIGN`].
struct Bounce(std::ptr::NonNull<u8>);

impl Bounce {
    const LAYOUT: std::alloc::Layout = match std::alloc::Layout::from_size_align(DIRECT_CHUNK, DIRECT_ALIGN) {
        Ok(layout) => layout,
        Err(_) => panic!("a valid layout"),
    };

    fn new() -> Bounce {
        // SAFETY: the layout's size is not zero.
        let ptr = unsafe { std::alloc::alloc(Self::LAYOUT) };
        Bounce(std::ptr::NonNull::new(ptr).unwrap_or_else(|| std::alloc::handle_alloc_error(Self::LAYOUT)))
    }

    fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: the allocation is DIRECT_CHUNK bytes, owned by self; u8 has no invalid values
        // once written, and callers write before they read.
        unsafe { std::slice::from_raw_parts_mut(self.0.as_ptr(), DIRECT_CHUNK) }
    }
}

impl Drop for Bounce {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.0.as_ptr(), Self::LAYOUT) }
    }
}

/// Turns `O_DIRECT` on or off for `file`; false if its file system refuses.
fn set_direct(file: &std::fs::File, on: bool) -> bool {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: plain fcntl calls on a descriptor `file` owns.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        let flags = if on { flags | libc::O_DIRECT } else { flags & !libc::O_DIRECT };
        flags >= 0 && libc::fcntl(fd, libc::F_SETFL, flags) == 0
    }
}

/// Writes `parts`, one after the other, to the new empty `file` and makes
/// them durable (`fdatasync`). Blocking: for the background thread.
///
/// A big file goes around the page cache (`O_DIRECT`, a 1 MiB aligned
/// bounce buffer per `write`, the last partial page through the cache):
/// copying megabytes into fresh page cache pages cost the kernel 1–2 ms a
/// MB on the machine of `docs/performance.md`, where the copy into the
/// bounce buffer costs a tenth of that and the disk reads the buffer
/// itself. On a file system without `O_DIRECT` (FUSE, some tmpfs), or once
/// a direct write is refused or short, the rest goes through the cache a
/// slice per `write`, its writeback started a slice at a time (`sync_data`).
pub fn write_synced(file: &std::fs::File, parts: &[&[u8]]) -> std::io::Result<()> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut out = Writer { file, direct: len >= DIRECT_MIN && set_direct(file, true) };
    if out.direct {
        BOUNCE.with_borrow_mut(|bounce| {
            let bounce = bounce.get_or_insert_with(Bounce::new).bytes();
            let mut filled = 0;
            for mut part in parts.iter().copied() {
                while !part.is_empty() {
                    let n = part.len().min(DIRECT_CHUNK - filled);
                    bounce[filled..filled + n].copy_from_slice(&part[..n]);
                    (filled, part) = (filled + n, &part[n..]);
                    if filled == DIRECT_CHUNK {
                        out.write(&bounce[..filled])?;
                        filled = 0;
                    }
                }
            }
            let aligned = filled / DIRECT_ALIGN * DIRECT_ALIGN;
            out.write(&bounce[..aligned])?;
            out.stop_direct()?;
            out.buffered(&bounce[aligned..filled])
        })?;
    } else {
        for part in parts {
            out.buffered(part)?;
        }
    }
    // Direct writes left no dirty pages: starting their writeback is a no-op.
    sync_data(file, len as u64)
}

/// The writer of [`write_synced`]: around the page cache while `direct`.
struct Writer<'f> {
    file: &'f std::fs::File,
    direct: bool,
}

impl Writer<'_> {
    /// Writes aligned `bytes` directly, or through the cache once direct
    /// writes stopped (a refusal or a short write stops them for good).
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if !self.direct {
            return self.buffered(bytes);
        }
        let written = loop {
            match std::io::Write::write(&mut &*self.file, bytes) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        let rest = match written {
            Ok(n) if n == bytes.len() => return Ok(()),
            Ok(n) => &bytes[n..],
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => bytes,
            Err(e) => return Err(e),
        };
        self.stop_direct()?;
        self.buffered(rest)
    }

    /// Sends what follows through the page cache.
    fn stop_direct(&mut self) -> std::io::Result<()> {
        if self.direct {
            self.direct = false;
            if !set_direct(self.file, false) {
                return Err(std::io::Error::other("cannot turn O_DIRECT off"));
            }
        }
        Ok(())
    }

    /// Writes `bytes` through the page cache, a slice per `write`.
    fn buffered(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        for slice in bytes.chunks(SLICE) {
            std::io::Write::write_all(&mut &*self.file, slice)?;
        }
        Ok(())
    }
}

/// Lets the shard poll for I/O and run what became ready.
pub async fn pause() {
    glommio::timer::sleep(Duration::from_micros(1)).await;
}

/// Hands `src` to `each` a slice at a time, pausing between slices; a
/// source of one slice or less goes at once. Stops at `each`'s first error.
pub async fn for_each_slice<E>(src: &[u8], mut each: impl AsyncFnMut(&[u8]) -> Result<(), E>) -> Result<(), E> {
    for (i, chunk) in src.chunks(SLICE).enumerate() {
        if i > 0 {
            pause().await;
        }
        each(chunk).await?;
    }
    Ok(())
}

/// Appends `src` to `dst` a slice at a time (see [`for_each_slice`]).
pub async fn extend(dst: &mut Vec<u8>, src: &[u8]) {
    dst.reserve(src.len());
    let copied: Result<(), std::convert::Infallible> = for_each_slice(src, async |chunk: &[u8]| {
        dst.extend_from_slice(chunk);
        Ok(())
    })
    .await;
    let Ok(()) = copied;
}

/// `src` copied into a new `Vec` a slice at a time (see [`extend`]).
pub async fn to_vec(src: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    extend(&mut out, src).await;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pages of `path` in the page cache.
    fn resident_pages(path: &std::path::Path) -> usize {
        use std::os::fd::AsRawFd;
        let file = std::fs::File::open(path).unwrap();
        let len = file.metadata().unwrap().len() as usize;
        let pages = len.div_ceil(DIRECT_ALIGN);
        let mut vec = vec![0u8; pages];
        // SAFETY: a read-only shared mapping of the whole file, unmapped below;
        // mincore writes one byte per page into `vec`, which has that many.
        unsafe {
            let map = libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_SHARED, file.as_raw_fd(), 0);
            assert_ne!(map, libc::MAP_FAILED);
            assert_eq!(libc::mincore(map, len, vec.as_mut_ptr()), 0);
            libc::munmap(map, len);
        }
        vec.iter().filter(|&&b| b & 1 == 1).count()
    }

    #[test]
    fn writes_every_part_in_order_direct_or_not() {
        let dir = std::env::temp_dir().join(format!("bingsan-bulk-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let bytes: Vec<u8> = (0..3 * DIRECT_CHUNK + 3 * DIRECT_ALIGN + 17).map(|i| (i % 251) as u8).collect();
        let cases: [&[&[u8]]; 6] = [
            &[],
            &[&bytes[..100]],
            &[&bytes[..DIRECT_MIN]],
            &[&bytes[..37], &bytes[37..]],
            &[&bytes[..DIRECT_CHUNK], &bytes[DIRECT_CHUNK..2 * DIRECT_CHUNK + 1], &bytes[2 * DIRECT_CHUNK + 1..]],
            &[&bytes[..5 * DIRECT_ALIGN]],
        ];
        // Where the file system takes O_DIRECT (not tmpfs, which keeps
        // every page), a big file's pages other than its last partial one
        // never enter the page cache (until it is read back, below).
        let probe = std::fs::File::create(dir.join("probe")).unwrap();
        let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
        let path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid C string and a statfs to write into.
        assert_eq!(unsafe { libc::statfs(path.as_ptr(), &mut stat) }, 0);
        let direct = set_direct(&probe, true) && stat.f_type != libc::TMPFS_MAGIC;
        for (i, parts) in cases.iter().enumerate() {
            let path = dir.join(i.to_string());
            let file = std::fs::OpenOptions::new().write(true).create_new(true).open(&path).unwrap();
            write_synced(&file, parts).unwrap();
            drop(file);
            let len = parts.concat().len();
            if direct && len >= DIRECT_MIN {
                assert!(resident_pages(&path) <= 1, "case {i}: {} pages cached", resident_pages(&path));
            } else if len > 0 {
                assert_eq!(resident_pages(&path), len.div_ceil(DIRECT_ALIGN), "case {i}");
            }
            assert_eq!(std::fs::read(&path).unwrap(), parts.concat(), "case {i}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn copies_every_byte_across_slices() {
        glommio::LocalExecutorBuilder::default()
            .spawn(|| async {
                let src: Vec<u8> = (0..3 * SLICE + 17).map(|i| (i % 251) as u8).collect();
                let mut dst = b"head".to_vec();
                extend(&mut dst, &src).await;
                assert_eq!(&dst[..4], b"head");
                assert_eq!(&dst[4..], &src[..]);
                assert_eq!(to_vec(&src[..10]).await, &src[..10]);
                assert!(to_vec(&[]).await.is_empty());
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
