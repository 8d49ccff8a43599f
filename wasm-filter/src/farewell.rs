//! Telling kubectl why kubegate ends its exec or attach, with no proxy-wasm dependency.
//!
//! Once a stream is upgraded, Envoy passes its bytes through the filter as body data,
//! in chunks that do not follow the protocol's frames. An exec or attach over the
//! `v4`/`v5.channel.k8s.io` protocols has an error channel on which the API server ends
//! a session with a Kubernetes `Status`; kubectl prints its message (`error: ...`) and
//! exits 1. So, for such a stream, the filter follows the frames in both directions from
//! the first byte ([`Farewell::observe_request`], [`Farewell::observe_response`]), and when
//! the stream must end:
//!
//! * towards the API server it passes only the rest of the frame in progress and control
//!   frames (websocket ping, pong, close; SPDY PING, WINDOW_UPDATE, ...): nothing the
//!   user types reaches the container any more, but kubectl's pings still draw the
//!   server's pongs ([`Farewell::request_while_ending`]);
//! * towards kubectl, at the first frame boundary of the next chunk (a pong comes at
//!   least every 5 s: kubectl pings that often on both transports), it ends the stream's
//!   data and adds the `Status` on the error channel, then (websocket) a normal close
//!   ([`Farewell::say`]). Envoy resets the stream a tick later.
//!
//! Websocket (RFC 6455): server frames are unmasked; the error channel is a binary
//! message whose first byte is 3. SPDY/3.1: the error channel is the first stream the
//! client opens (client-go creates it before stdin, stdout, stderr and resize, in every
//! protocol version), so the filter reads the stream id of the client's first
//! SYN_STREAM and sends a DATA frame with FIN on it.
//!
//! Port-forward has no such channel: its streams are reset at once, and kubectl says it
//! lost the connection. Everything here works on whatever bytes arrive and never
//! panics; a framing it cannot follow only costs the message, never the cut.

use crate::host_bytes::RawLine;

/// The framing of an upgraded stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    WebSocket,
    Spdy,
}

impl Framing {
    /// What the client's `Upgrade` header asks for.
    pub fn of_request(raw: &[RawLine]) -> Option<Self> {
        let upgrade =
            raw.iter().find(|(name, _)| name.eq_ignore_ascii_case(b"upgrade")).map(|(_, v)| v.trim_ascii())?;
        if upgrade.eq_ignore_ascii_case(b"websocket") {
            Some(Self::WebSocket)
        } else if upgrade.eq_ignore_ascii_case(b"spdy/3.1") {
            Some(Self::Spdy)
        } else {
            None
        }
    }

    /// Whether the upgrade the API server answered (`status`, response `headers`)
    /// agreed on a remotecommand protocol with a `Status` error channel: v4 or v5
    /// (`Sec-WebSocket-Protocol` over websocket, `X-Stream-Protocol-Version` over SPDY).
    /// Not port-forward, which has none.
    pub fn has_error_channel(self, status: &[u8], headers: &[RawLine]) -> bool {
        let header = match self {
            Self::WebSocket => &b"sec-websocket-protocol"[..],
            Self::Spdy => b"x-stream-protocol-version",
        };
        status == b"101"
            && headers.iter().any(|(name, value)| {
                name.eq_ignore_ascii_case(header)
                    && matches!(value.trim_ascii(), b"v5.channel.k8s.io" | b"v4.channel.k8s.io")
            })
    }
}

/// One frame's header, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FrameHead {
    /// A control frame that carries nothing to the container: websocket close, ping,
    /// pong (FIN, at most 125 bytes); SPDY RST_STREAM, PING, GOAWAY, WINDOW_UPDATE. The
    /// only frames that pass once the stream is ending (a reserved websocket opcode is
    /// read by the API server's websocket library as a message, so as stdin).
    control: bool,
    payload: u64,
    /// SPDY SYN_STREAM: the stream it opens.
    opens_stream: Option<u32>,
}

/// How many header bytes the frame starting with `head` has, as far as `head` tells.
fn header_len(framing: Framing, head: &[u8]) -> usize {
    match framing {
        Framing::WebSocket => match (head.get(1), head.len() >= 2) {
            (Some(second), true) => {
                let extended = match second & 0x7f {
                    126 => 2,
                    127 => 8,
                    _ => 0,
                };
                let mask = if second & 0x80 != 0 { 4 } else { 0 };
                2 + extended + mask
            }
            _ => 2,
        },
        // A control frame of type 1 (SYN_STREAM): its stream id is read as header too.
        Framing::Spdy => match head.get(..4) {
            Some([first, _, 0, 1]) if first & 0x80 != 0 && head.len() >= 8 => 12,
            _ => 8,
        },
    }
}

fn be(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0u64, |n, b| (n << 8) | u64::from(*b))
}

/// Parses a complete header (`header_len(head) == head.len()`).
fn parse(framing: Framing, head: &[u8]) -> Option<FrameHead> {
    match framing {
        Framing::WebSocket => {
            let first = *head.first()?;
            let len7 = head.get(1)? & 0x7f;
            let payload = match len7 {
                126 => be(head.get(2..4)?),
                127 => be(head.get(2..10)?),
                n => u64::from(n),
            };
            // RFC 6455: the most significant bit of a 64-bit length is 0.
            let harmless = first & 0x80 != 0 && matches!(first & 0x0f, 0x8..=0xa) && payload <= 125;
            (payload >> 63 == 0).then_some(FrameHead { control: harmless, payload, opens_stream: None })
        }
        Framing::Spdy => {
            let kind = be(head.get(2..4)?);
            let control = head.first()? & 0x80 != 0 && matches!(kind, 3 | 6 | 7 | 9);
            let length = be(head.get(5..8)?);
            if head.len() == 12 {
                let stream = u32::try_from(be(head.get(8..12)?) & 0x7fff_ffff).ok()?;
                Some(FrameHead { control, payload: length.checked_sub(4)?, opens_stream: Some(stream) })
            } else {
                Some(FrameHead { control, payload: length, opens_stream: None })
            }
        }
    }
}

/// Where one direction of a stream is in its frames.
#[derive(Debug, Clone)]
struct Cursor {
    framing: Framing,
    /// The current frame's header as far as read; empty between frames.
    header: Vec<u8>,
    /// How many of `header`'s bytes were already passed on (all of them, while
    /// observing; none of a header begun while ending, until its kind is known).
    header_passed: usize,
    /// Payload bytes of the current frame still to come.
    remaining: u64,
    /// Whether the current frame's bytes are passed on.
    pass: bool,
    /// Whether the current frame is a harmless control frame ([`FrameHead::control`]).
    control: bool,
    /// The bytes could not be followed: no message can be placed.
    broken: bool,
    /// SPDY: the stream the first SYN_STREAM opened.
    first_stream: Option<u32>,
}

/// How [`Cursor::walk`] treats the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Everything passes.
    Observe,
    /// Frames begun before pass; then only control frames.
    Filter,
    /// Everything passes, up to the first frame boundary, where the walk stops.
    ToBoundary,
}

impl Cursor {
    fn new(framing: Framing) -> Self {
        Self {
            framing,
            header: Vec::new(),
            header_passed: 0,
            remaining: 0,
            pass: true,
            control: false,
            broken: false,
            first_stream: None,
        }
    }

    fn at_boundary(&self) -> bool {
        self.remaining == 0 && self.header.is_empty()
    }

    /// Walks `chunk`, appending what passes to `out` (in `Filter` mode). Returns where
    /// the walk stopped: `chunk.len()`, or in `ToBoundary` mode the first boundary.
    fn walk(&mut self, chunk: &[u8], mode: Mode, out: &mut Vec<u8>) -> usize {
        let mut at = 0;
        while !self.broken {
            if mode == Mode::ToBoundary && self.at_boundary() {
                return at;
            }
            let Some(rest) = chunk.get(at..).filter(|r| !r.is_empty()) else { break };
            if self.remaining > 0 {
                // A data frame begun before the stream started ending would carry what
                // the client sends now: the API server delivers only whole frames, so
                // holding its rest back delivers nothing of it (and nothing more passes).
                if mode == Mode::Filter && self.pass && !self.control {
                    self.broken = true;
                    break;
                }
                let n = usize::try_from(self.remaining).unwrap_or(usize::MAX).min(rest.len());
                if mode == Mode::Filter && self.pass {
                    out.extend_from_slice(rest.get(..n).unwrap_or_default());
                }
                self.remaining -= n as u64;
                at += n;
                continue;
            }
            // Inside a header: take what it still needs (which may grow as it is read).
            let need = header_len(self.framing, &self.header).saturating_sub(self.header.len());
            let n = need.min(rest.len());
            self.header.extend_from_slice(rest.get(..n).unwrap_or_default());
            at += n;
            if mode != Mode::Filter {
                self.header_passed = self.header.len();
            }
            if self.header.len() == header_len(self.framing, &self.header) {
                let Some(head) = parse(self.framing, &self.header) else {
                    self.broken = true;
                    break;
                };
                if self.first_stream.is_none() {
                    self.first_stream = head.opens_stream;
                }
                // A header partly passed before the cut is completed only for a harmless
                // frame; any other would let the client decide now what it carries.
                if mode == Mode::Filter && self.header_passed > 0 && !head.control {
                    self.broken = true;
                    break;
                }
                self.pass = mode != Mode::Filter || head.control;
                self.control = head.control;
                if mode == Mode::Filter && self.pass {
                    out.extend_from_slice(self.header.get(self.header_passed..).unwrap_or_default());
                }
                self.header.clear();
                self.header_passed = 0;
                self.remaining = head.payload;
            }
        }
        if self.broken {
            chunk.len()
        } else {
            at
        }
    }
}

/// What [`Farewell::say`] made of a chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Said {
    /// Send these bytes instead of the chunk: its data up to a frame boundary, then the
    /// message. Nothing more may follow.
    Now(Vec<u8>),
    /// No frame boundary in this chunk: pass it on and try the next.
    NotYet,
    /// The message cannot be placed (frames not followed, no error channel known).
    Cannot,
}

/// One exec or attach stream's frames in both directions, and its farewell.
#[derive(Debug, Clone)]
pub struct Farewell {
    framing: Framing,
    up: Cursor,
    down: Cursor,
    said: bool,
}

impl Farewell {
    pub fn new(framing: Framing) -> Self {
        Self { framing, up: Cursor::new(framing), down: Cursor::new(framing), said: false }
    }

    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// Client-to-server bytes passed on unchanged.
    pub fn observe_request(&mut self, chunk: &[u8]) {
        self.up.walk(chunk, Mode::Observe, &mut Vec::new());
    }

    /// Server-to-client bytes passed on unchanged.
    pub fn observe_response(&mut self, chunk: &[u8]) {
        self.down.walk(chunk, Mode::Observe, &mut Vec::new());
    }

    /// While the stream ends: what of `chunk` still goes to the API server (the rest of a
    /// frame in progress, then control frames only). Bytes that cannot be followed go
    /// nowhere.
    pub fn request_while_ending(&mut self, chunk: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        if !self.up.broken {
            self.up.walk(chunk, Mode::Filter, &mut out);
        }
        if self.up.broken {
            out.clear();
        }
        out
    }

    /// Whether the message was placed (everything after it must be dropped).
    pub fn said(&self) -> bool {
        self.said
    }

    /// Places the message (`status_json`, a Kubernetes `Status`) at the first frame
    /// boundary of this server-to-client `chunk`.
    pub fn say(&mut self, chunk: &[u8], status_json: &str) -> Said {
        if self.said {
            return Said::Now(Vec::new());
        }
        let frames = match self.framing {
            Framing::WebSocket => websocket_farewell(status_json),
            Framing::Spdy => match self.up.first_stream {
                Some(stream) => match spdy_data_fin(stream, status_json.as_bytes()) {
                    Some(frame) => frame,
                    None => return Said::Cannot,
                },
                None => return Said::Cannot,
            },
        };
        if self.down.broken {
            return Said::Cannot;
        }
        let boundary = self.down.walk(chunk, Mode::ToBoundary, &mut Vec::new());
        if self.down.broken || !self.down.at_boundary() {
            return if self.down.broken { Said::Cannot } else { Said::NotYet };
        }
        let mut out = chunk.get(..boundary).unwrap_or_default().to_vec();
        out.extend_from_slice(&frames);
        self.said = true;
        Said::Now(out)
    }
}

/// A server-to-client (unmasked) websocket frame.
fn websocket_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => frame.push(n as u8),
        n if n <= usize::from(u16::MAX) => {
            frame.push(126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(payload);
    frame
}

/// The error channel's `Status`, then a normal close (1000), which kubectl's websocket
/// client reads as the end of every stream rather than as an error.
fn websocket_farewell(status_json: &str) -> Vec<u8> {
    let mut message = vec![3u8];
    message.extend_from_slice(status_json.as_bytes());
    let mut frames = websocket_frame(0x2, &message);
    frames.extend(websocket_frame(0x8, &1000u16.to_be_bytes()));
    frames
}

/// A SPDY/3.1 DATA frame on `stream` with FIN (the stream's last data).
fn spdy_data_fin(stream: u32, payload: &[u8]) -> Option<Vec<u8>> {
    let length = u32::try_from(payload.len()).ok().filter(|n| *n < (1 << 24))?;
    let mut frame = (stream & 0x7fff_ffff).to_be_bytes().to_vec();
    frame.push(0x01);
    frame.extend_from_slice(length.to_be_bytes().get(1..).unwrap_or_default());
    frame.extend_from_slice(payload);
    Some(frame)
}

// The tests index into fixtures they built themselves.
#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;

    fn raw(pairs: &[(&str, &str)]) -> Vec<RawLine> {
        pairs.iter().map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec())).collect()
    }

    /// A client-to-server (masked) websocket frame.
    fn masked(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let key = [1u8, 2, 3, 4];
        let mut frame = websocket_frame(opcode, &[]);
        frame.truncate(1);
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
        }
        frame.extend_from_slice(&key);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        frame
    }

    fn spdy_control(kind: u16, payload: &[u8]) -> Vec<u8> {
        let mut frame = vec![0x80, 3];
        frame.extend_from_slice(&kind.to_be_bytes());
        frame.push(0);
        frame.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
        frame.extend_from_slice(payload);
        frame
    }

    fn spdy_data(stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut frame = spdy_data_fin(stream, payload).unwrap_or_default();
        frame[4] = 0;
        frame
    }

    fn syn_stream(stream: u32) -> Vec<u8> {
        let mut payload = stream.to_be_bytes().to_vec();
        payload.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0x78, 0x9c]);
        spdy_control(1, &payload)
    }

    /// Every way of cutting `bytes` into three chunks.
    fn splits(bytes: &[u8]) -> Vec<Vec<&[u8]>> {
        let mut all = Vec::new();
        for a in 0..=bytes.len() {
            for b in a..=bytes.len() {
                all.push(vec![&bytes[..a], &bytes[a..b], &bytes[b..]]);
            }
        }
        all
    }

    /// Reads the server-to-client websocket frames of `bytes`: (opcode, payload).
    fn read_frames(bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut frames = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            let head = &bytes[at..];
            let len = header_len(Framing::WebSocket, head);
            let parsed = parse(Framing::WebSocket, &head[..len]).unwrap_or(FrameHead {
                control: false,
                payload: 0,
                opens_stream: None,
            });
            let end = at + len + parsed.payload as usize;
            frames.push((head[0] & 0x0f, bytes[at + len..end].to_vec()));
            at = end;
        }
        frames
    }

    #[test]
    fn knows_the_framing_and_whether_there_is_an_error_channel() {
        assert_eq!(Framing::of_request(&raw(&[("Upgrade", "websocket")])), Some(Framing::WebSocket));
        assert_eq!(Framing::of_request(&raw(&[("upgrade", "SPDY/3.1")])), Some(Framing::Spdy));
        assert_eq!(Framing::of_request(&raw(&[("upgrade", "h2c")])), None);
        assert_eq!(Framing::of_request(&raw(&[])), None);
        let ws = Framing::WebSocket;
        assert!(ws.has_error_channel(b"101", &raw(&[("Sec-WebSocket-Protocol", "v5.channel.k8s.io")])));
        assert!(ws.has_error_channel(b"101", &raw(&[("sec-websocket-protocol", "v4.channel.k8s.io")])));
        assert!(!ws.has_error_channel(b"101", &raw(&[("sec-websocket-protocol", "SPDY/3.1+portforward.k8s.io")])));
        assert!(!ws.has_error_channel(b"101", &raw(&[("sec-websocket-protocol", "v1.channel.k8s.io")])));
        assert!(!ws.has_error_channel(b"403", &raw(&[("sec-websocket-protocol", "v5.channel.k8s.io")])));
        let spdy = Framing::Spdy;
        assert!(spdy.has_error_channel(b"101", &raw(&[("X-Stream-Protocol-Version", "v4.channel.k8s.io")])));
        assert!(!spdy.has_error_channel(b"101", &raw(&[("x-stream-protocol-version", "portforward.k8s.io")])));
    }

    /// The message lands at the first frame boundary of the next server chunk, however
    /// the frames before it were cut into chunks, and kubectl reads the Status on the
    /// error channel followed by a normal close.
    #[test]
    fn websocket_farewell_lands_on_a_frame_boundary() {
        let stdout = websocket_frame(0x2, &[&[1u8][..], &[b'x'; 300]].concat());
        let pong = websocket_frame(0xa, b"");
        let stream: Vec<u8> = [stdout.clone(), websocket_frame(0x2, b"\x01hello"), stdout.clone()].concat();
        let carrier = [&stdout[..10], &pong[..]].concat();
        for parts in splits(&stream) {
            let mut farewell = Farewell::new(Framing::WebSocket);
            for part in &parts {
                farewell.observe_response(part);
            }
            // The next chunk begins a stdout frame and has a pong: the message goes first.
            let said = farewell.say(&carrier, r#"{"status":"Failure"}"#);
            let Said::Now(out) = said else { panic!("{said:?}") };
            let frames = read_frames(&out);
            assert_eq!(frames, vec![(2, b"\x03{\"status\":\"Failure\"}".to_vec()), (8, vec![0x03, 0xe8])]);
            assert_eq!(farewell.say(b"more", "{}"), Said::Now(Vec::new()), "nothing after it");
        }
    }

    #[test]
    fn websocket_farewell_waits_for_the_end_of_a_frame_in_progress() {
        let big = websocket_frame(0x2, &vec![7u8; 70_000]);
        let mut farewell = Farewell::new(Framing::WebSocket);
        farewell.observe_response(&big[..1000]);
        assert_eq!(farewell.say(&big[1000..40_000], "{}"), Said::NotYet);
        let Said::Now(out) = farewell.say(&big[40_000..], "{}") else { panic!("no boundary found") };
        assert_eq!(&out[..big.len() - 40_000], &big[40_000..], "the frame is finished first");
        assert_eq!(read_frames(&out[big.len() - 40_000..]).len(), 2);
    }

    /// Attack: stdin typed after the grant ended reaching the container while the
    /// stream waits to say why: in a data frame, in the rest of a frame (or header) begun
    /// before the cut whose length the client chooses after it, or under a reserved
    /// websocket opcode (which the API server's websocket library reads as a message).
    /// Only close, ping and pong frames pass, and only between frames: a cut inside a
    /// frame passes nothing more at all.
    #[test]
    fn while_ending_only_control_frames_reach_the_server() {
        let stdin = masked(0x2, b"\x00rm -rf /\n");
        let reserved = masked(0xb, b"\x00rm -rf /\n");
        let ping = masked(0x9, b"");
        let close = masked(0x8, &1000u16.to_be_bytes());
        let later: Vec<u8> = [stdin.clone(), ping.clone(), reserved.clone(), stdin.clone(), close.clone()].concat();
        for cut in 0..stdin.len() {
            let mut farewell = Farewell::new(Framing::WebSocket);
            farewell.observe_request(&stdin[..cut]);
            let mut out = farewell.request_while_ending(&stdin[cut..]);
            for part in splits(&later).swap_remove(later.len() / 2) {
                out.extend(farewell.request_while_ending(part));
            }
            let expected = if cut == 0 { [ping.clone(), close.clone()].concat() } else { Vec::new() };
            assert_eq!(out, expected, "cut at {cut}");
        }
    }

    #[test]
    fn spdy_farewell_is_data_with_fin_on_the_first_stream_the_client_opened() {
        let client: Vec<u8> = [syn_stream(1), syn_stream(3), spdy_data(3, b"typed")].concat();
        let server: Vec<u8> = [spdy_control(2, &[0, 0, 0, 1, 0, 0]), spdy_data(5, b"output")].concat();
        for parts in splits(&client) {
            let mut farewell = Farewell::new(Framing::Spdy);
            for part in &parts {
                farewell.observe_request(part);
            }
            farewell.observe_response(&server);
            let ping = spdy_control(6, &[0, 0, 0, 1]);
            let Said::Now(out) = farewell.say(&ping, "{}") else { panic!("not said") };
            assert_eq!(out, [0, 0, 0, 1, 0x01, 0, 0, 2, b'{', b'}'], "{parts:?}");
        }
        let mut unopened = Farewell::new(Framing::Spdy);
        assert_eq!(unopened.say(b"", "{}"), Said::Cannot, "no stream opened yet");
        let mut farewell = Farewell::new(Framing::Spdy);
        farewell.observe_request(&syn_stream(1));
        let stdin = spdy_data(3, b"typed after the end");
        let ping = spdy_control(6, &[0, 0, 0, 1]);
        let out = farewell.request_while_ending(&[stdin.clone(), ping.clone(), stdin].concat());
        assert_eq!(out, ping, "only control frames pass while ending");
    }

    /// Bytes that are not the protocol (a client sending garbage, a 64-bit length with
    /// its top bit set, a SYN_STREAM too short for its stream id) cost the message, never
    /// a panic, and pass nothing while ending.
    #[test]
    fn garbage_never_panics_and_costs_only_the_message() {
        let mut broken = Farewell::new(Framing::WebSocket);
        broken.observe_response(&[0x82, 127, 0xff, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(broken.say(&[0x8a, 0], "{}"), Said::Cannot);
        let mut short = Farewell::new(Framing::Spdy);
        short.observe_request(&spdy_control(1, &[0, 0]));
        assert_eq!(short.request_while_ending(&spdy_control(6, &[0, 0, 0, 1])), Vec::<u8>::new());
        let noise: Vec<u8> = (0..20_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        for framing in [Framing::WebSocket, Framing::Spdy] {
            for step in [1, 2, 3, 7, 13, 64, 1000] {
                let mut farewell = Farewell::new(framing);
                for chunk in noise.chunks(step) {
                    farewell.observe_request(chunk);
                    farewell.observe_response(chunk);
                }
                for chunk in noise.chunks(step) {
                    let _ = farewell.request_while_ending(chunk);
                    let _ = farewell.say(chunk, "{}");
                }
            }
        }
    }

    #[test]
    fn frames_are_encoded_as_their_protocols_say() {
        assert_eq!(websocket_frame(0x8, &[3, 0xe8]), [0x88, 2, 3, 0xe8]);
        let long = websocket_frame(0x2, &[0; 300]);
        assert_eq!(&long[..4], [0x82, 126, 1, 44]);
        let longer = websocket_frame(0x2, &[0; 70_000]);
        assert_eq!(&longer[..10], [0x82, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]);
        assert_eq!(spdy_data_fin(0x8000_0005, b"x"), Some(vec![0, 0, 0, 5, 1, 0, 0, 1, b'x']));
        assert_eq!(spdy_data_fin(1, &vec![0; 1 << 24]), None);
    }
}
