//! The reading side of hypercore 10's framing: each frame is a 3-byte little-endian length
//! and that many bytes. A large frame is read from the socket straight into a buffer of
//! its own, which goes on to the cipher as it is: no copy out of a shared read buffer.

use std::io;

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Bytes of a frame's length prefix.
const PREFIX: usize = 3;
/// Room the shared read buffer keeps for lengths and small frames. An idle connection holds
/// it, so it stays small; large frames do not pass through it.
const READ_CHUNK: usize = 8 << 10;
/// Frames at least this long are read into their own buffer as soon as their length is
/// known; shorter ones are copied out of the read buffer.
const OWN_BUFFER: usize = 4 << 10;

/// Frames from `R`, each returned as a `Vec` it owns.
pub struct FrameReader<R> {
    inner: R,
    max: usize,
    /// Bytes read and not yet part of a returned frame.
    buf: BytesMut,
    /// A large frame being read into its own buffer, and its length.
    partial: Option<(Vec<u8>, usize)>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Reads frames of at most `max` bytes from `inner`.
    pub fn new(inner: R, max: usize) -> Self {
        FrameReader {
            inner,
            max,
            buf: BytesMut::new(),
            partial: None,
        }
    }

    /// The reader underneath.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// The next frame, or `None` at a clean end of the stream. Cancel-safe: what was read
    /// stays here for the next call.
    pub async fn next(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            if let Some((frame, len)) = &mut self.partial {
                if frame.len() == *len {
                    return Ok(self.partial.take().map(|(f, _)| f));
                }
                let want = *len - frame.len();
                let n = self.inner.read_buf(&mut (&mut *frame).limit(want)).await?;
                if n == 0 {
                    return Err(cut_short());
                }
                continue;
            }
            if self.buf.len() >= PREFIX {
                let len = usize::from(self.buf[0])
                    | usize::from(self.buf[1]) << 8
                    | usize::from(self.buf[2]) << 16;
                if len > self.max {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("a frame of {len} bytes is over the {}-byte limit", self.max),
                    ));
                }
                if self.buf.len() >= PREFIX + len {
                    self.buf.advance(PREFIX);
                    let frame = self.buf.split_to(len).to_vec();
                    return Ok(Some(frame));
                }
                if len >= OWN_BUFFER {
                    self.buf.advance(PREFIX);
                    // Room for what the cipher adds back in place is not needed: it only
                    // takes away (the MAC and tag).
                    let mut frame = Vec::with_capacity(len);
                    frame.extend_from_slice(&self.buf);
                    self.buf.clear();
                    self.partial = Some((frame, len));
                    continue;
                }
            }
            self.buf.reserve(READ_CHUNK);
            if self.inner.read_buf(&mut self.buf).await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(cut_short())
                };
            }
        }
    }
}

fn cut_short() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the stream ended inside a frame",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(frames: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        for f in frames {
            out.extend_from_slice(&(f.len() as u32).to_le_bytes()[..3]);
            out.extend_from_slice(f);
        }
        out
    }

    /// Frames of every size, delivered in pieces of every size, come out whole and in order.
    #[tokio::test]
    async fn frames_come_out_whole_whatever_the_pieces() {
        let frames: Vec<Vec<u8>> = [0usize, 1, 2, 3, 100, 4095, 4096, 4097, 70_000, 5, 200_000]
            .iter()
            .enumerate()
            .map(|(i, &n)| (0..n).map(|j| (i * 7 + j) as u8).collect())
            .collect();
        let bytes = framed(&frames);
        for piece in [1usize, 2, 3, 7, 1000, 4099, 65_536, 1 << 20] {
            let (mut tx, rx) = tokio::io::duplex(1 << 16);
            let data = bytes.clone();
            let writer = tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                for chunk in data.chunks(piece) {
                    tx.write_all(chunk).await.unwrap();
                }
            });
            let mut r = FrameReader::new(rx, 1 << 20);
            for f in &frames {
                assert_eq!(
                    r.next().await.unwrap().as_ref(),
                    Some(f),
                    "pieces of {piece}"
                );
            }
            writer.await.unwrap();
            assert!(r.next().await.unwrap().is_none());
        }
    }

    #[tokio::test]
    async fn an_oversized_frame_and_a_cut_frame_are_errors() {
        let big = framed(&[vec![0; 5000]]);
        let mut r = FrameReader::new(&big[..], 4999);
        let e = r.next().await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("5000 bytes"), "{e}");

        for cut in [2, 10, 4000, 5001] {
            let whole = framed(&[vec![1; 5000]]);
            let mut r = FrameReader::new(&whole[..cut], 1 << 20);
            let e = r.next().await.unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "cut at {cut}");
        }
    }
}
