//! The gzip load answer of a big table, made of chunks that the next
//! version reuses where its document copies this one's bytes.
//!
//! Each chunk of the document (at most [`CHUNK`] bytes) is deflated on its
//! own, ended by a full flush: its compressed bytes refer to nothing before
//! it and end on a byte boundary, so they can be copied into another gzip
//! member wherever the same bytes appear. A commit of a 10,000-snapshot
//! table copies almost all of its 5.9 MB document from the stored one
//! (`metadata::Copied`), and only the chunks its edits touch are
//! compressed again; the CRC of the whole is combined from the chunks'.
//!
//! The member: gzip header, the answer's head (`{"metadata-location":…,
//! "metadata":`), the document's chunks, the tail, an empty final block,
//! CRC32 and length. The record keeps a table beside it ([`Table`]): where
//! the document's chunks start, then each chunk's length, compressed length
//! and CRC32 (u32, little endian). A decoder sees one ordinary deflate
//! stream.

use std::cell::RefCell;
use std::ops::Range;

use crc32fast::Hasher;
use flate2::{Compress, Compression, FlushCompress, Status};

use crate::metadata::Copied;

/// The most document bytes in one chunk: a full flush every 64 KiB costs
/// the deflate window's history at each boundary (the answer grows by about
/// 1%), and a commit recompresses about a chunk per place it edits.
pub(crate) const CHUNK: usize = 64 * 1024;

const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

thread_local! {
    /// This thread's last deflate stream and its level, kept for the next
    /// member: a new one allocates and clears ~300 KiB of window and hash
    /// tables, more than deflating a typical table's answer costs
    /// (`docs/performance.md`); a reset clears only the hash heads.
    static DEFLATE: RefCell<Option<(u32, Compress)>> = const { RefCell::new(None) };
}

/// A chunked member and its table, from the stored record of the version
/// before, with the copies the new document made of that version's.
#[derive(Clone, Copy)]
pub(crate) struct Reuse<'a> {
    pub gzip: &'a [u8],
    pub table: &'a [u8],
    /// The length of that version's document.
    pub doc_len: usize,
    pub copies: &'a [Copied],
}

/// One chunk of a stored member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Chunk {
    len: u32,
    compressed: u32,
    crc: u32,
}

/// A stored table, checked against its member and document.
struct Table {
    /// Where the document's first chunk starts in the member.
    start: usize,
    chunks: Vec<Chunk>,
}

impl Table {
    fn decode(raw: &[u8], member: &[u8], doc_len: usize) -> Option<Table> {
        let word = |at: usize| Some(u32::from_le_bytes(raw.get(at..at + 4)?.try_into().ok()?));
        let start = word(0)? as usize;
        if (raw.len() - 4) % 12 != 0 {
            return None;
        }
        let chunks: Vec<Chunk> = (4..raw.len())
            .step_by(12)
            .map(|at| Some(Chunk { len: word(at)?, compressed: word(at + 4)?, crc: word(at + 8)? }))
            .collect::<Option<_>>()?;
        let len: usize = chunks.iter().map(|c| c.len as usize).sum();
        let compressed: usize = chunks.iter().map(|c| c.compressed as usize).sum();
        (len == doc_len && start + compressed + 8 <= member.len()).then_some(Table { start, chunks })
    }
}

/// Builds a member: deflates fresh pieces, copies reused chunks.
struct Member {
    out: Vec<u8>,
    deflate: Compress,
    level: u32,
    crc: Hasher,
    table: Vec<u8>,
}

impl Member {
    fn new(capacity: usize, level: u32) -> Member {
        let mut out = Vec::with_capacity(capacity);
        out.extend_from_slice(&HEADER);
        let deflate = match DEFLATE.with(|d| d.borrow_mut().take()) {
            Some((kept, mut deflate)) if kept == level => {
                deflate.reset();
                deflate
            }
            _ => Compress::new(Compression::new(level), false),
        };
        Member { out, deflate, level, crc: Hasher::new(), table: Vec::new() }
    }

    /// Deflates `bytes` and ends them with a full flush.
    fn fresh(&mut self, bytes: &[u8]) -> Chunk {
        self.deflate_with(bytes, FlushCompress::Full)
    }

    /// Deflates `bytes`, ended by `flush`.
    fn deflate_with(&mut self, bytes: &[u8], flush: FlushCompress) -> Chunk {
        let (at, fed) = (self.out.len(), self.deflate.total_in());
        loop {
            let done = (self.deflate.total_in() - fed) as usize;
            // A guess, not a bound: the loop runs until all is in.
            self.out.reserve((bytes.len() - done) / 4 + 64);
            self.deflate.compress_vec(&bytes[done..], &mut self.out, flush).expect("deflate into a Vec");
            // Done once all input is in and the flush left room to spare.
            if (self.deflate.total_in() - fed) as usize == bytes.len() && self.out.len() < self.out.capacity() {
                break;
            }
        }
        let crc = crc32fast::hash(bytes);
        self.crc.combine(&Hasher::new_with_initial_len(crc, bytes.len() as u64));
        Chunk { len: bytes.len() as u32, compressed: (self.out.len() - at) as u32, crc }
    }

    /// Deflates a piece of the document, in chunks of about equal length.
    fn fresh_doc(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let n = bytes.len().div_ceil(CHUNK);
        let each = bytes.len().div_ceil(n);
        for piece in bytes.chunks(each) {
            let chunk = self.fresh(piece);
            self.record(chunk);
        }
    }

    /// Copies a stored chunk's compressed bytes.
    fn reused(&mut self, chunk: Chunk, compressed: &[u8]) {
        self.out.extend_from_slice(compressed);
        self.crc.combine(&Hasher::new_with_initial_len(chunk.crc, chunk.len as u64));
        self.record(chunk);
    }

    fn record(&mut self, c: Chunk) {
        for word in [c.len, c.compressed, c.crc] {
            self.table.extend_from_slice(&word.to_le_bytes());
        }
    }

    fn finish(mut self, len: usize) -> (Vec<u8>, Vec<u8>) {
        loop {
            self.out.reserve(64);
            if self.deflate.compress_vec(&[], &mut self.out, FlushCompress::Finish).expect("deflate into a Vec")
                == Status::StreamEnd
            {
                break;
            }
        }
        let crc = self.crc.finalize();
        self.out.extend_from_slice(&crc.to_le_bytes());
        self.out.extend_from_slice(&(len as u32).to_le_bytes());
        let level = self.level;
        DEFLATE.with(|d| *d.borrow_mut() = Some((level, self.deflate)));
        (self.out, self.table)
    }
}

/// The stored chunks of `reuse` that the new document holds whole: where
/// in the new document, which chunk, its compressed bytes.
fn placements<'a>(reuse: &Reuse<'a>) -> Vec<(usize, Chunk, &'a [u8])> {
    let Some(table) = Table::decode(reuse.table, reuse.gzip, reuse.doc_len) else {
        return Vec::new();
    };
    // Each chunk's range in the old document and in the member.
    let mut spans = Vec::with_capacity(table.chunks.len());
    let (mut at, mut comp) = (0, table.start);
    for c in &table.chunks {
        spans.push((at..at + c.len as usize, *c, &reuse.gzip[comp..comp + c.compressed as usize]));
        (at, comp) = (at + c.len as usize, comp + c.compressed as usize);
    }
    let mut out = Vec::new();
    for copy in reuse.copies {
        let from: &Range<usize> = &copy.from;
        let first = spans.partition_point(|(r, _, _)| r.start < from.start);
        for (r, c, bytes) in spans[first..].iter().take_while(|(r, _, _)| r.end <= from.end) {
            out.push((copy.at + (r.start - from.start), *c, *bytes));
        }
    }
    out.sort_unstable_by_key(|p| p.0);
    out
}

/// The gzip member of `head`, `doc`, `tail` (a load answer) and its table;
/// the chunks of `reuse` whose bytes the document copied are not
/// compressed again. A document shorter than a chunk is one deflate
/// stream with no table: a commit changes its document, so no chunk of it
/// could be reused, and every full flush clears the 128 KiB hash heads.
pub(crate) fn gzip_load(
    head: &[u8],
    doc: &[u8],
    tail: &[u8],
    level: u32,
    reuse: Option<Reuse<'_>>,
) -> (Vec<u8>, Vec<u8>) {
    if doc.len() < CHUNK {
        return (gzip_whole(&[head, doc, tail], level), Vec::new());
    }
    let mut m = Member::new(doc.len() / 8 + 256, level);
    m.fresh(head);
    m.table.extend_from_slice(&(m.out.len() as u32).to_le_bytes());
    let mut at = 0;
    for (to, chunk, compressed) in reuse.map(|r| placements(&r)).unwrap_or_default() {
        if to < at || to + chunk.len as usize > doc.len() {
            continue;
        }
        m.fresh_doc(&doc[at..to]);
        m.reused(chunk, compressed);
        at = to + chunk.len as usize;
    }
    m.fresh_doc(&doc[at..]);
    m.fresh(tail);
    m.finish(head.len() + doc.len() + tail.len())
}

/// One gzip member of `parts` in a row, with this thread's deflate stream.
pub(crate) fn gzip_whole(parts: &[&[u8]], level: u32) -> Vec<u8> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut m = Member::new(len / 8 + 64, level);
    for part in parts {
        m.deflate_with(part, FlushCompress::None);
    }
    m.finish(len).0
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn gunzip(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes).read_to_end(&mut out).unwrap();
        out
    }

    fn doc(n: usize, salt: u64) -> Vec<u8> {
        let mut d = b"{\"snapshots\":[".to_vec();
        for i in 0..n as u64 {
            let x = (i ^ salt).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            d.extend_from_slice(format!("{{\"snapshot-id\":{x},\"sequence-number\":{i}}},").as_bytes());
        }
        d.extend_from_slice(b"{}]}");
        d
    }

    /// Edits `old` as a commit does (cut a run, insert new bytes, elsewhere
    /// too): the new document and what it copied.
    fn edit(old: &[u8], cuts: &[(usize, usize, &[u8])]) -> (Vec<u8>, Vec<Copied>) {
        let (mut new, mut copies, mut at) = (Vec::new(), Vec::new(), 0);
        for &(from, to, insert) in cuts {
            copies.push(Copied { at: new.len(), from: at..from });
            new.extend_from_slice(&old[at..from]);
            new.extend_from_slice(insert);
            at = to;
        }
        copies.push(Copied { at: new.len(), from: at..old.len() });
        new.extend_from_slice(&old[at..]);
        (new, copies)
    }

    #[test]
    fn a_member_decodes_to_the_answer_and_reuses_untouched_chunks() {
        let old = doc(40_000, 1);
        let (head, tail) = (&b"{\"metadata-location\":\"a\",\"metadata\":"[..], &b",\"config\":{}}"[..]);
        let (gz, table) = gzip_load(head, &old, tail, 2, None);
        assert_eq!(gunzip(&gz), [head, &old, tail].concat());
        assert_eq!(table.len(), 4 + 12 * old.len().div_ceil(CHUNK));

        let cuts: [(usize, usize, &[u8]); 3] =
            [(20, 60, b"changed"), (400_000, 400_100, b""), (old.len() - 3, old.len() - 3, b",{\"new\":1}")];
        let (new, copies) = edit(&old, &cuts);
        let reuse = Reuse { gzip: &gz, table: &table, doc_len: old.len(), copies: &copies };
        let head2 = &b"{\"metadata-location\":\"bb\",\"metadata\":"[..];
        let (gz2, table2) = gzip_load(head2, &new, tail, 2, Some(reuse));
        assert_eq!(gunzip(&gz2), [head2, &new, tail].concat());
        // At most the chunks around the three edits were compressed again.
        let kept = table2[4..].chunks(12).filter(|c| table[4..].chunks(12).any(|o| o == *c)).count();
        assert!(kept + 6 >= table.len() / 12, "kept {kept} of {}", table.len() / 12);
        // A later version reuses this one's chunks in turn.
        let (newer, copies) = edit(&new, &[(30, 31, b"x")]);
        let reuse = Reuse { gzip: &gz2, table: &table2, doc_len: new.len(), copies: &copies };
        let (gz3, _) = gzip_load(head, &newer, tail, 2, Some(reuse));
        assert_eq!(gunzip(&gz3), [head, &newer, tail].concat());
        // The chunks cost about 1% of the size.
        let whole = crate::catalog::compressed::gzip(&[head, &old, tail].concat());
        assert!(gz.len() < whole.len() * 102 / 100, "{} vs {}", gz.len(), whole.len());
    }

    #[test]
    fn a_document_shorter_than_a_chunk_is_one_stream_without_a_table() {
        let (head, tail) = (&b"{\"metadata\":"[..], &b"}"[..]);
        // One thread's deflate stream, reused across members and levels.
        for (n, level) in [(200, 2), (300, 2), (100, 6), (200, 2)] {
            let small = doc(n, n as u64);
            assert!(small.len() < CHUNK);
            let (gz, table) = gzip_load(head, &small, tail, level, None);
            assert_eq!(gunzip(&gz), [head, &small, tail].concat(), "{n} at level {level}");
            assert!(table.is_empty() && gz.len() * 3 < small.len(), "{} of {}", gz.len(), small.len());
        }
        // The next version of a table grown past a chunk starts its chunks
        // afresh: no table to reuse.
        let (small_gz, _) = gzip_load(head, &doc(200, 0), tail, 2, None);
        let big = doc(5_000, 0);
        let copies = [Copied { at: 0, from: 0..big.len() }];
        let reuse = Reuse { gzip: &small_gz, table: &[], doc_len: big.len(), copies: &copies };
        let (gz, table) = gzip_load(head, &big, tail, 2, Some(reuse));
        assert_eq!(gunzip(&gz), [head, &big, tail].concat());
        assert_eq!(table.len(), 4 + 12 * big.len().div_ceil(CHUNK));
    }

    #[test]
    fn a_table_that_does_not_fit_its_member_is_ignored() {
        let old = doc(5_000, 2);
        let (gz, table) = gzip_load(b"[", &old, b"]", 2, None);
        let copies = [Copied { at: 0, from: 0..old.len() }];
        for bad in [&table[..table.len() - 1], &table[..4], b"", &[0xff; 16][..]] {
            let reuse = Reuse { gzip: &gz, table: bad, doc_len: old.len(), copies: &copies };
            let (gz2, _) = gzip_load(b"[", &old, b"]", 2, Some(reuse));
            assert_eq!(gunzip(&gz2), [&b"["[..], &old, b"]"].concat());
        }
        // A table of another document length is not used.
        let reuse = Reuse { gzip: &gz, table: &table, doc_len: old.len() - 1, copies: &copies };
        let (gz2, _) = gzip_load(b"[", &old[1..], b"]", 2, Some(reuse));
        assert_eq!(gunzip(&gz2), [&b"["[..], &old[1..], b"]"].concat());
    }
}
