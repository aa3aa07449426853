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
