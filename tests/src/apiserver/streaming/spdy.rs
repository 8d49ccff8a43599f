//! SPDY/3.1 as kubectl and the kubelet speak it (`moby/spdystream`): the server side of
//! a session, enough for exec, attach and port-forward.
//!
//! What spdystream uses, and so what is here: SYN_STREAM from the client (odd stream
//! ids) answered at once by SYN_REPLY, DATA with FIN for half-close, RST_STREAM, PING
//! echoed, GOAWAY. SETTINGS and WINDOW_UPDATE are read and ignored: spdystream does no
//! flow control, and TCP back-pressure does the job. Header blocks are zlib streams,
//! one per direction for the whole session, primed with the SPDY/3 dictionary.

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

const VERSION: u16 = 3;
const FLAG_FIN: u8 = 0x01;
/// DATA frames we write carry at most this much (the protocol allows 16 MiB).
const MAX_DATA_CHUNK: usize = 64 * 1024;
/// A header block larger than this is refused (a protocol error, not an allocation).
const MAX_HEADER_BLOCK: usize = 1 << 20;

/// Header name/value pairs, names lower-case as SPDY requires.
pub type Headers = Vec<(String, String)>;

/// A SPDY protocol violation or a broken connection.
#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("unsupported SPDY version {0}")]
    Version(u16),
    #[error("header block: {0}")]
    HeaderBlock(String),
}

/// One frame, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream_id: u32,
        headers: Headers,
        fin: bool,
    },
    SynReply {
        stream_id: u32,
        headers: Headers,
        fin: bool,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good_stream_id: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        headers: Headers,
    },
    Data {
        stream_id: u32,
        fin: bool,
        data: Bytes,
    },
    /// SETTINGS, WINDOW_UPDATE and unknown control frames: read past.
    Ignored {
        frame_type: u16,
    },
}

/// The SPDY/3 header dictionary (draft-mbelshe-httpbis-spdy-00, 2.6.10.1): these
/// header names, each with a 32-bit length, then common values back to back.
pub fn dictionary() -> Vec<u8> {
    const WORDS: &[&str] = &[
        "options",
        "head",
        "post",
        "put",
        "delete",
        "trace",
        "accept",
        "accept-charset",
        "accept-encoding",
        "accept-language",
        "accept-ranges",
        "age",
        "allow",
        "authorization",
        "cache-control",
        "connection",
        "content-base",
        "content-encoding",
        "content-language",
        "content-length",
        "content-location",
        "content-md5",
        "content-range",
        "content-type",
        "date",
        "etag",
        "expect",
        "expires",
        "from",
        "host",
        "if-match",
        "if-modified-since",
        "if-none-match",
        "if-range",
        "if-unmodified-since",
        "last-modified",
        "location",
        "max-forwards",
        "pragma",
        "proxy-authenticate",
        "proxy-authorization",
        "range",
        "referer",
        "retry-after",
        "server",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "vary",
        "via",
        "warning",
        "www-authenticate",
        "method",
        "get",
        "status",
        "200 OK",
        "version",
        "HTTP/1.1",
        "url",
        "public",
        "set-cookie",
        "keep-alive",
        "origin",
    ];
    const TAIL: &str = "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505\
        203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized\
        403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service Unavailable\
        Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT\
        chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,\
        text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.";
    let mut dict = Vec::with_capacity(1423);
    for word in WORDS {
        dict.extend_from_slice(&(word.len() as u32).to_be_bytes());
        dict.extend_from_slice(word.as_bytes());
    }
    dict.extend_from_slice(TAIL.as_bytes());
    dict
}

/// The two zlib streams of a session: one inflating the peer's header blocks, one
/// deflating ours.
pub struct HeaderCodec {
    inflate: Decompress,
    deflate: Compress,
    dictionary: Vec<u8>,
}

impl Default for HeaderCodec {
    fn default() -> Self {
        let dictionary = dictionary();
        let mut deflate = Compress::new(Compression::best(), true);
        // Cannot fail on a fresh stream; a failure would only cost compression ratio.
        let _ = deflate.set_dictionary(&dictionary);
        Self { inflate: Decompress::new(true), deflate, dictionary }
    }
}

impl HeaderCodec {
    pub fn decode(&mut self, block: &[u8]) -> Result<Headers, SpdyError> {
        let raw = self.inflate_block(block)?;
        parse_header_block(&raw)
    }

    fn inflate_block(&mut self, block: &[u8]) -> Result<Vec<u8>, SpdyError> {
        let bad = |e: &dyn std::fmt::Display| SpdyError::HeaderBlock(e.to_string());
        let mut out = Vec::with_capacity(block.len() * 4 + 64);
        let start = self.inflate.total_in();
        loop {
            let consumed = (self.inflate.total_in() - start) as usize;
            if out.len() == out.capacity() {
                out.reserve(out.capacity());
            }
            let before = (consumed, out.len());
            match self.inflate.decompress_vec(&block[consumed..], &mut out, FlushDecompress::Sync) {
                Ok(_) => {}
                // The client's stream starts by naming the SPDY dictionary.
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate.set_dictionary(&self.dictionary).map_err(|e| bad(&e))?;
                    continue;
                }
                Err(e) => return Err(bad(&e)),
            }
            if out.len() > MAX_HEADER_BLOCK {
                return Err(bad(&"header block too large"));
            }
            let consumed = (self.inflate.total_in() - start) as usize;
            if consumed == block.len() && out.len() < out.capacity() {
                return Ok(out);
            }
            if (consumed, out.len()) == before {
                return Err(bad(&"truncated header block"));
            }
        }
    }

    pub fn encode(&mut self, headers: &[(String, String)]) -> Vec<u8> {
        let raw = serialize_header_block(headers);
        let mut out = Vec::with_capacity(raw.len() + 64);
        let start = self.deflate.total_in();
        loop {
            let consumed = (self.deflate.total_in() - start) as usize;
            out.reserve(256);
            let status = self.deflate.compress_vec(&raw[consumed..], &mut out, FlushCompress::Sync);
            let consumed = (self.deflate.total_in() - start) as usize;
            // A sync flush is complete once all input is in and output had room to spare.
            if matches!(status, Ok(Status::Ok | Status::BufError))
                && consumed >= raw.len()
                && out.len() < out.capacity()
            {
                return out;
            }
            if status.is_err() {
                return out;
            }
        }
    }
}

fn serialize_header_block(headers: &[(String, String)]) -> Vec<u8> {
    let mut raw = Vec::new();
    raw.extend_from_slice(&(headers.len() as u32).to_be_bytes());
    for (name, value) in headers {
        for part in [name.as_bytes(), value.as_bytes()] {
            raw.extend_from_slice(&(part.len() as u32).to_be_bytes());
            raw.extend_from_slice(part);
        }
    }
    raw
}

fn parse_header_block(raw: &[u8]) -> Result<Headers, SpdyError> {
    let mut cursor = BlockCursor(raw);
    let count = cursor.length()?;
    let mut headers = Vec::new();
    for _ in 0..count {
        let len = cursor.length()?;
        let name = String::from_utf8_lossy(cursor.take(len)?).into_owned();
        let len = cursor.length()?;
        let value = String::from_utf8_lossy(cursor.take(len)?).into_owned();
        // Several values of one header travel NUL-separated.
        headers.extend(value.split('\0').map(|v| (name.clone(), v.to_owned())));
    }
    Ok(headers)
}

/// Reads a decompressed header block: 32-bit lengths, then that many bytes.
struct BlockCursor<'a>(&'a [u8]);

impl<'a> BlockCursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], SpdyError> {
        if self.0.len() < n {
            return Err(SpdyError::HeaderBlock("truncated header block".into()));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn length(&mut self) -> Result<usize, SpdyError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }
}

/// Reads one frame.
pub async fn read_frame<R: AsyncRead + Unpin>(reader: &mut R, codec: &mut HeaderCodec) -> Result<Frame, SpdyError> {
    let mut head = [0u8; 8];
    reader.read_exact(&mut head).await?;
    let flags = head[4];
    let length = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
    let mut payload = vec![0u8; length];
    reader.read_exact(&mut payload).await?;
    let word = |at: usize| payload.get(at..at + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    let fin = flags & FLAG_FIN != 0;
    if head[0] & 0x80 == 0 {
        let stream_id = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) & 0x7fff_ffff;
        return Ok(Frame::Data { stream_id, fin, data: Bytes::from(payload) });
    }
    let version = u16::from_be_bytes([head[0] & 0x7f, head[1]]);
    if version != VERSION {
        return Err(SpdyError::Version(version));
    }
    let short = || SpdyError::HeaderBlock("control frame too short".into());
    let stream_id = || word(0).map(|w| w & 0x7fff_ffff).ok_or_else(short);
    let frame = match u16::from_be_bytes([head[2], head[3]]) {
        1 => {
            let block = payload.get(10..).ok_or_else(short)?;
            Frame::SynStream { stream_id: stream_id()?, headers: codec.decode(block)?, fin }
        }
        2 => Frame::SynReply {
            stream_id: stream_id()?,
            headers: codec.decode(payload.get(4..).ok_or_else(short)?)?,
            fin,
        },
        3 => Frame::RstStream { stream_id: stream_id()?, status: word(4).ok_or_else(short)? },
        6 => Frame::Ping { id: word(0).ok_or_else(short)? },
        7 => Frame::GoAway { last_good_stream_id: stream_id()?, status: word(4).unwrap_or(0) },
        8 => Frame::Headers { stream_id: stream_id()?, headers: codec.decode(payload.get(4..).ok_or_else(short)?)? },
        frame_type => Frame::Ignored { frame_type },
    };
    Ok(frame)
}

/// Encodes one frame.
pub fn encode_frame(frame: &Frame, codec: &mut HeaderCodec) -> Vec<u8> {
    let control = |frame_type: u16, flags: u8, body: Vec<u8>| {
        let mut out = Vec::with_capacity(8 + body.len());
        out.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
        out.extend_from_slice(&frame_type.to_be_bytes());
        out.push(flags);
        out.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        out.extend_from_slice(&body);
        out
    };
    let fin_flag = |fin: bool| if fin { FLAG_FIN } else { 0 };
    let with_id = |id: u32, rest: &[u8]| [&id.to_be_bytes()[..], rest].concat();
    match frame {
        Frame::SynStream { stream_id, headers, fin } => {
            let block = codec.encode(headers);
            control(1, fin_flag(*fin), [&stream_id.to_be_bytes()[..], &[0; 6], &block].concat())
        }
        Frame::SynReply { stream_id, headers, fin } => {
            control(2, fin_flag(*fin), with_id(*stream_id, &codec.encode(headers)))
        }
        Frame::RstStream { stream_id, status } => control(3, 0, with_id(*stream_id, &status.to_be_bytes())),
        Frame::Ping { id } => control(6, 0, id.to_be_bytes().to_vec()),
        Frame::GoAway { last_good_stream_id, status } => {
            control(7, 0, with_id(*last_good_stream_id, &status.to_be_bytes()))
        }
        Frame::Headers { stream_id, headers } => control(8, 0, with_id(*stream_id, &codec.encode(headers))),
        Frame::Data { stream_id, fin, data } => {
            let mut out = Vec::with_capacity(8 + data.len());
            out.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
            out.push(fin_flag(*fin));
            out.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
            out.extend_from_slice(data);
            out
        }
        Frame::Ignored { .. } => Vec::new(),
    }
}

/// A stream the client opened: its headers, what it sends, and a writer for replies.
pub struct IncomingStream {
    pub headers: Headers,
    /// The client's DATA; closed at its FIN or RST_STREAM.
    pub data: mpsc::Receiver<Bytes>,
    pub writer: StreamWriter,
}

impl IncomingStream {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

enum Outgoing {
    Frame(Frame),
    /// GOAWAY, then close our half of the connection.
    Close,
}

/// Writes DATA on one stream; cheap to clone.
#[derive(Clone)]
pub struct StreamWriter {
    stream_id: u32,
    out: mpsc::Sender<Outgoing>,
}

/// The session is gone: nothing more can be written.
#[derive(Debug, thiserror::Error)]
#[error("the SPDY session is closed")]
pub struct SessionClosed;

impl StreamWriter {
    pub async fn write(&self, data: Bytes) -> Result<(), SessionClosed> {
        for chunk in data.chunks(MAX_DATA_CHUNK) {
            let frame = Frame::Data { stream_id: self.stream_id, fin: false, data: data.slice_ref(chunk) };
            self.out.send(Outgoing::Frame(frame)).await.map_err(|_| SessionClosed)?;
        }
        Ok(())
    }

    /// Half-closes the stream (DATA with FIN).
    pub async fn finish(&self) {
        let frame = Frame::Data { stream_id: self.stream_id, fin: true, data: Bytes::new() };
        let _ = self.out.send(Outgoing::Frame(frame)).await;
    }
}

/// The server side of one SPDY session.
pub struct SpdySession {
    pub streams: mpsc::Receiver<IncomingStream>,
    out: mpsc::Sender<Outgoing>,
}

impl SpdySession {
    /// Starts reading and writing frames on `io`; new streams arrive on `streams`,
    /// already replied to.
    pub fn start<IO: AsyncRead + AsyncWrite + Send + 'static>(io: IO) -> Self {
        let (reader, writer) = tokio::io::split(io);
        let (out, out_rx) = mpsc::channel(64);
        let (streams_tx, streams) = mpsc::channel(16);
        tokio::spawn(write_loop(writer, out_rx));
        tokio::spawn(read_loop(reader, out.clone(), streams_tx));
        Self { streams, out }
    }

    /// Sends GOAWAY and closes our side once everything queued before it is written.
    pub async fn close(self) {
        let _ = self.out.send(Outgoing::Close).await;
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(mut writer: W, mut out: mpsc::Receiver<Outgoing>) {
    let mut codec = HeaderCodec::default();
    while let Some(item) = out.recv().await {
        let frame = match item {
            Outgoing::Frame(frame) => frame,
            Outgoing::Close => {
                let goaway = encode_frame(&Frame::GoAway { last_good_stream_id: 0, status: 0 }, &mut codec);
                let _ = writer.write_all(&goaway).await;
                let _ = writer.shutdown().await;
                return;
            }
        };
        if writer.write_all(&encode_frame(&frame, &mut codec)).await.is_err() {
            return;
        }
        // Flush when nothing else is queued: batches bursts, never strands a frame.
        if out.is_empty() && writer.flush().await.is_err() {
            return;
        }
    }
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut reader: R,
    out: mpsc::Sender<Outgoing>,
    streams: mpsc::Sender<IncomingStream>,
) {
    let mut codec = HeaderCodec::default();
    let mut open: std::collections::HashMap<u32, mpsc::Sender<Bytes>> = Default::default();
    while let Ok(frame) = read_frame(&mut reader, &mut codec).await {
        match frame {
            Frame::SynStream { stream_id, headers, fin } => {
                let reply = Frame::SynReply { stream_id, headers: Vec::new(), fin: false };
                if out.send(Outgoing::Frame(reply)).await.is_err() {
                    return;
                }
                let (data_tx, data) = mpsc::channel(16);
                if !fin {
                    open.insert(stream_id, data_tx);
                }
                let writer = StreamWriter { stream_id, out: out.clone() };
                if streams.send(IncomingStream { headers, data, writer }).await.is_err() {
                    return;
                }
            }
            Frame::Data { stream_id, fin, data } => {
                if let Some(tx) = open.get(&stream_id) {
                    if !data.is_empty() && tx.send(data).await.is_err() {
                        open.remove(&stream_id);
                    }
                }
                if fin {
                    open.remove(&stream_id);
                }
            }
            Frame::RstStream { stream_id, .. } => {
                open.remove(&stream_id);
            }
            // Client pings carry odd ids: answer with the same frame.
            Frame::Ping { id } if id % 2 == 1 => {
                let _ = out.send(Outgoing::Frame(Frame::Ping { id })).await;
            }
            Frame::GoAway { .. } => return,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dictionary_is_the_specified_1423_bytes() {
        let dict = dictionary();
        assert_eq!(dict.len(), 1423);
        assert_eq!(&dict[..11], b"\0\0\0\x07options");
        assert!(dict.ends_with(b",*,enq=0."));
    }

    #[test]
    fn header_blocks_survive_a_round_trip_across_several_frames() {
        let (mut client, mut server) = (HeaderCodec::default(), HeaderCodec::default());
        let first: Headers = vec![("streamtype".into(), "error".into()), ("port".into(), "8080".into())];
        let second: Headers = vec![("streamtype".into(), "data".into()), ("requestid".into(), "0".into())];
        // One zlib stream per direction: the second block depends on the first.
        let (a, b) = (client.encode(&first), client.encode(&second));
        assert_eq!(server.decode(&a).ok(), Some(first));
        assert_eq!(server.decode(&b).ok(), Some(second));
    }

    #[tokio::test]
    async fn frames_encode_and_decode() -> anyhow::Result<()> {
        let (mut enc, mut dec) = (HeaderCodec::default(), HeaderCodec::default());
        let frames = [
            Frame::SynStream { stream_id: 1, headers: vec![("streamtype".into(), "stdin".into())], fin: false },
            Frame::Data { stream_id: 1, fin: true, data: Bytes::from_static(b"hello") },
            Frame::Ping { id: 3 },
            Frame::RstStream { stream_id: 5, status: 5 },
        ];
        let wire: Vec<u8> = frames.iter().flat_map(|f| encode_frame(f, &mut enc)).collect();
        let mut reader = wire.as_slice();
        for expected in frames {
            assert_eq!(read_frame(&mut reader, &mut dec).await?, expected);
        }
        Ok(())
    }

    #[tokio::test]
    async fn a_truncated_header_block_is_an_error_not_a_panic() {
        let mut codec = HeaderCodec::default();
        let mut client = HeaderCodec::default();
        let block = client.encode(&[("a".into(), "b".into())]);
        let frame = [&[0x80, 3, 0, 2, 0, 0, 0, 6][..], &[0, 0, 0, 1], &block[..2]].concat();
        assert!(read_frame(&mut frame.as_slice(), &mut codec).await.is_err());
    }
}
