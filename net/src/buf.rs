//! The buffer that a blocking-pool call reads into or writes out of, for
//! [`fs::File`](crate::fs::File) and the standard streams.

use std::io::{self, Read, Write};

use tokio::io::ReadBuf;

/// Bytes read ahead (`data[pos..]`), or about to be written (`data`).
#[derive(Debug, Default)]
pub(crate) struct Buf {
    data: Vec<u8>,
    pos: usize,
}

impl Buf {
    pub(crate) fn is_empty(&self) -> bool {
        self.pos >= self.data.len()
    }

    pub(crate) fn clear(&mut self) {
        self.data.clear();
        self.pos = 0;
    }

    /// Hands read-ahead bytes to `dst`.
    pub(crate) fn copy_to(&mut self, dst: &mut ReadBuf<'_>) {
        let n = (self.data.len() - self.pos).min(dst.remaining());
        dst.put_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        if self.is_empty() {
            self.clear();
        }
    }

    /// Takes up to `max` bytes of `src` to write; returns how many.
    pub(crate) fn copy_from(&mut self, src: &[u8], max: usize) -> usize {
        debug_assert!(self.is_empty());
        self.clear();
        let n = src.len().min(max);
        self.data.extend_from_slice(&src[..n]);
        n
    }

    /// Forgets the bytes read ahead; returns the (negative) offset that
    /// takes the OS position back to where the reader is.
    pub(crate) fn discard_read(&mut self) -> i64 {
        let ahead = (self.data.len() - self.pos) as i64;
        self.clear();
        -ahead
    }

    /// Reads up to `want` bytes from `src` (on the pool).
    pub(crate) fn read_from(&mut self, src: &mut impl Read, want: usize) -> io::Result<usize> {
        self.clear();
        self.data.resize(want, 0);
        let res = loop {
            match src.read(&mut self.data) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                res => break res,
            }
        };
        self.data.truncate(*res.as_ref().unwrap_or(&0));
        res
    }

    /// Writes all of the buffer to `dst` (on the pool).
    pub(crate) fn write_to(&mut self, dst: &mut impl Write) -> io::Result<()> {
        let res = dst.write_all(&self.data);
        self.clear();
        res
    }
}
