//! Length-delimited JSON frames over the worker's socket, with a hard cap on
//! frame size so that nothing the jail sends can make the server read without
//! bound.

use std::io;
use std::marker::PhantomData;

use bytes::{Bytes, BytesMut};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec};

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer closed the connection before a whole frame arrived.
    #[error("the connection closed")]
    Closed,
    /// The frame announced a length over the cap.
    #[error("a frame was larger than {limit} bytes")]
    TooLarge { limit: usize },
    /// The frame was not the JSON message expected (the decoder's words).
    #[error("a frame was malformed: {0}")]
    Malformed(String),
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// JSON messages of type `T`, framed by a 4-byte big-endian length.
pub struct JsonCodec<T> {
    frames: LengthDelimitedCodec,
    max_frame: usize,
    _message: PhantomData<fn() -> T>,
}

impl<T> JsonCodec<T> {
    pub fn new(max_frame: usize) -> Self {
        JsonCodec {
            frames: LengthDelimitedCodec::builder()
                .big_endian()
                .length_field_length(4)
                .max_frame_length(max_frame)
                .new_codec(),
            max_frame,
            _message: PhantomData,
        }
    }
}

impl<T: DeserializeOwned> Decoder for JsonCodec<T> {
    type Item = T;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<T>, FrameError> {
        let frame = match self.frames.decode(src) {
            Ok(Some(frame)) => frame,
            Ok(None) => return Ok(None),
            // LengthDelimitedCodec reports an oversized length as InvalidData
            // before it buffers the body.
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                return Err(FrameError::TooLarge {
                    limit: self.max_frame,
                })
            }
            Err(e) => return Err(FrameError::Io(e)),
        };
        serde_json::from_slice(&frame)
            .map(Some)
            .map_err(|e| FrameError::Malformed(e.to_string()))
    }
}

impl<T: Serialize> Encoder<&T> for JsonCodec<T> {
    type Error = FrameError;

    fn encode(&mut self, message: &T, dst: &mut BytesMut) -> Result<(), FrameError> {
        let body = serde_json::to_vec(message).map_err(|e| FrameError::Malformed(e.to_string()))?;
        self.frames
            .encode(Bytes::from(body), dst)
            .map_err(|_| FrameError::TooLarge {
                limit: self.max_frame,
            })
    }
}

/// Reads one whole message. Bytes that arrive after it stay in `buffer`.
///
/// Cancel safety: safe to drop; what was read so far stays in `buffer`.
pub async fn read_message<T, R>(
    reader: &mut R,
    codec: &mut JsonCodec<T>,
    buffer: &mut BytesMut,
) -> Result<T, FrameError>
where
    T: DeserializeOwned,
    R: AsyncRead + Unpin,
{
    loop {
        if let Some(message) = codec.decode(buffer)? {
            return Ok(message);
        }
        if reader.read_buf(buffer).await.map_err(FrameError::Io)? == 0 {
            return Err(FrameError::Closed);
        }
    }
}

/// Writes one message as a single frame.
pub async fn write_message<T, W>(
    writer: &mut W,
    codec: &mut JsonCodec<T>,
    message: &T,
) -> Result<(), FrameError>
where
    T: Serialize,
    W: AsyncWrite + Unpin,
{
    let mut frame = BytesMut::new();
    codec.encode(message, &mut frame)?;
    writer.write_all(&frame).await.map_err(FrameError::Io)?;
    writer.flush().await.map_err(FrameError::Io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::protocol::{FromRunner, ToRunner};

    fn frame(body: &[u8]) -> BytesMut {
        let mut out = BytesMut::new();
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn a_job_round_trips() {
        let mut codec = JsonCodec::<ToRunner>::new(1 << 20);
        let job = ToRunner::Job {
            script: "def main():\n    return {}\n".into(),
            input: Some(
                serde_json::value::RawValue::from_string("[1, {\"a\": null}]".into()).unwrap(),
            ),
            max_result_bytes: 10,
            max_files: 3,
            max_files_bytes: 100,
        };
        let mut buf = BytesMut::new();
        codec.encode(&job, &mut buf).unwrap();
        assert_eq!(&buf[..4], &((buf.len() - 4) as u32).to_be_bytes());
        let decoded = codec.decode(&mut buf).unwrap().unwrap();
        assert_eq!(
            serde_json::to_string(&decoded).unwrap(),
            serde_json::to_string(&job).unwrap()
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn a_partial_frame_waits_for_more() {
        let mut codec = JsonCodec::<FromRunner>::new(1 << 20);
        let whole = frame(br#"{"type":"result","result":{"a":1}}"#);
        let mut buf = BytesMut::from(&whole[..10]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        buf.extend_from_slice(&whole[10..]);
        assert!(matches!(
            codec.decode(&mut buf).unwrap(),
            Some(FromRunner::Result { .. })
        ));
    }

    #[test]
    fn an_oversized_length_is_refused_before_the_body_arrives() {
        let mut codec = JsonCodec::<FromRunner>::new(1024);
        let mut buf = BytesMut::from(&(4096u32).to_be_bytes()[..]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(FrameError::TooLarge { limit: 1024 })
        ));
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        let mut codec = JsonCodec::<FromRunner>::new(1024);
        for body in [
            &b"not json"[..],
            b"{\"type\":\"result\"}",
            b"\xff\xfe",
            b"[]",
        ] {
            let mut buf = frame(body);
            assert!(
                matches!(codec.decode(&mut buf), Err(FrameError::Malformed(_))),
                "{body:?}"
            );
        }
    }

    #[tokio::test]
    async fn read_message_reports_a_closed_peer() {
        let (mut a, b) = tokio::io::duplex(64);
        drop(b);
        let mut codec = JsonCodec::<FromRunner>::new(1024);
        let mut buf = BytesMut::new();
        assert!(matches!(
            read_message(&mut a, &mut codec, &mut buf).await,
            Err(FrameError::Closed)
        ));
    }

    #[tokio::test]
    async fn write_then_read_over_a_pipe() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let mut out = JsonCodec::<ToRunner>::new(1 << 20);
        let job = ToRunner::Job {
            script: "x = 1".into(),
            input: None,
            max_result_bytes: 5,
            max_files: 0,
            max_files_bytes: 0,
        };
        write_message(&mut a, &mut out, &job).await.unwrap();
        let mut input = JsonCodec::<ToRunner>::new(1 << 20);
        let mut buf = BytesMut::new();
        let read = read_message(&mut b, &mut input, &mut buf).await.unwrap();
        assert_eq!(
            serde_json::to_string(&read).unwrap(),
            serde_json::to_string(&job).unwrap()
        );
    }
}
