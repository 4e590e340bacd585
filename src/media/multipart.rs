//! The `multipart/mixed` bodies of federation media (server-server API
//! "Content Repository", RFC 2046 §5.1): two parts, a JSON metadata object
//! and the media (its bytes, or a `Location` to fetch them from).
//!
//! [`framing`] makes the bytes around a stored file, so the file itself is
//! still streamed from disk. [`MultipartReader`] reads such a body as it
//! arrives, in chunks of any size, and hands out the parts' headers and
//! data without ever holding a whole part: a remote file goes straight to
//! a spool. Headers and the metadata part are bounded.

use crate::crypto::tokens::random_alphanumeric;

/// The metadata part of the answers made here (the spec: an empty object today).
const METADATA: &str = "{}";

/// The most header bytes one part may have.
const MAX_HEADER_BYTES: usize = 16 * 1024;

/// The bytes before and after a file sent as the second part of a
/// federation media answer, and the answer's `Content-Type`.
pub struct Framing {
    pub content_type: String,
    pub before: Vec<u8>,
    pub after: Vec<u8>,
}

/// Frames a file of `content_type` (with its `Content-Disposition`) after an
/// empty metadata object.
pub fn framing(content_type: &str, disposition: &str) -> Framing {
    let boundary = random_alphanumeric(32);
    let mut before = format!("--{boundary}\r\nContent-Type: application/json\r\n\r\n");
    before.push_str(METADATA);
    before.push_str(&format!(
        "\r\n--{boundary}\r\nContent-Type: {content_type}\r\nContent-Disposition: {disposition}\r\n\r\n"
    ));
    Framing {
        content_type: format!("multipart/mixed; boundary={boundary}"),
        before: before.into_bytes(),
        after: format!("\r\n--{boundary}--\r\n").into_bytes(),
    }
}

/// The boundary of a `multipart/…; boundary=…` content type.
pub fn boundary_of(content_type: &str) -> Option<String> {
    let mut parameters = content_type.split(';');
    let essence = parameters.next()?.trim();
    if !essence.to_ascii_lowercase().starts_with("multipart/") {
        return None;
    }
    parameters.find_map(|parameter| {
        let (name, value) = parameter.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("boundary") {
            return None;
        }
        let value = value.trim().trim_matches('"');
        // RFC 2046: 1 to 70 characters.
        (!value.is_empty() && value.len() <= 70).then(|| value.to_owned())
    })
}

/// What the reader found next.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// The headers of a new part (names lower-cased).
    Headers(Vec<(String, String)>),
    /// Some bytes of the current part.
    Data(Vec<u8>),
    /// The current part ended.
    PartEnd,
    /// The closing delimiter: nothing follows.
    End,
}

/// Why a body is not a valid multipart body.
#[derive(Debug, PartialEq, Eq)]
pub enum MultipartError {
    HeadersTooLarge,
    BadHeader,
    BadDelimiter,
    /// The body ended before the closing delimiter.
    Truncated,
}

impl std::fmt::Display for MultipartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::HeadersTooLarge => "a part's headers are too large",
            Self::BadHeader => "a part has a malformed header",
            Self::BadDelimiter => "a boundary delimiter is malformed",
            Self::Truncated => "the body ended before its closing delimiter",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the first delimiter.
    Preamble,
    /// Just after a delimiter: `--` (the end) or a line break (a part).
    AfterDelimiter,
    Headers,
    Body,
    Done,
}

/// Reads a multipart body fed in chunks.
pub struct MultipartReader {
    /// `\r\n--boundary`: what ends a part (the body is read as if it
    /// started with a line break, so the first delimiter has one too).
    delimiter: Vec<u8>,
    buffer: Vec<u8>,
    state: State,
}

impl MultipartReader {
    pub fn new(boundary: &str) -> Self {
        Self { delimiter: format!("\r\n--{boundary}").into_bytes(), buffer: b"\r\n".to_vec(), state: State::Preamble }
    }

    /// Adds the next bytes of the body.
    pub fn feed(&mut self, chunk: &[u8]) {
        if self.state != State::Done {
            self.buffer.extend_from_slice(chunk);
        }
    }

    /// The next event the bytes fed so far make, or `None` when more are needed.
    pub fn next_event(&mut self) -> Result<Option<Event>, MultipartError> {
        loop {
            match self.state {
                State::Preamble => {
                    let Some(at) = find(&self.buffer, &self.delimiter) else {
                        // Keep only what could be the start of a delimiter.
                        let keep = self.delimiter.len() - 1;
                        let cut = self.buffer.len().saturating_sub(keep);
                        self.buffer.drain(..cut);
                        return Ok(None);
                    };
                    self.buffer.drain(..at + self.delimiter.len());
                    self.state = State::AfterDelimiter;
                }
                State::AfterDelimiter => return self.after_delimiter(),
                State::Headers => return self.headers(),
                State::Body => return Ok(self.body()),
                State::Done => return Ok(None),
            }
        }
    }

    /// Once the body has ended: was it whole?
    pub fn finish(&self) -> Result<(), MultipartError> {
        if self.state == State::Done {
            Ok(())
        } else {
            Err(MultipartError::Truncated)
        }
    }

    fn after_delimiter(&mut self) -> Result<Option<Event>, MultipartError> {
        if self.buffer.starts_with(b"--") {
            self.state = State::Done;
            self.buffer = Vec::new();
            return Ok(Some(Event::End));
        }
        // Transport padding (spaces, tabs) may precede the line break.
        let padding = self.buffer.iter().take_while(|b| matches!(b, b' ' | b'\t')).count();
        let rest = &self.buffer[padding..];
        if rest.len() < 2 {
            return if padding > 64 { Err(MultipartError::BadDelimiter) } else { Ok(None) };
        }
        if !rest.starts_with(b"\r\n") {
            return Err(MultipartError::BadDelimiter);
        }
        self.buffer.drain(..padding + 2);
        self.state = State::Headers;
        self.headers()
    }

    fn headers(&mut self) -> Result<Option<Event>, MultipartError> {
        let (text_end, consumed) = if self.buffer.starts_with(b"\r\n") {
            (0, 2)
        } else {
            match find(&self.buffer, b"\r\n\r\n") {
                Some(at) => (at, at + 4),
                None if self.buffer.len() > MAX_HEADER_BYTES => return Err(MultipartError::HeadersTooLarge),
                None => return Ok(None),
            }
        };
        if text_end > MAX_HEADER_BYTES {
            return Err(MultipartError::HeadersTooLarge);
        }
        let text = std::str::from_utf8(&self.buffer[..text_end]).map_err(|_| MultipartError::BadHeader)?;
        let mut headers = Vec::new();
        for line in text.split("\r\n").filter(|line| !line.is_empty()) {
            let (name, value) = line.split_once(':').ok_or(MultipartError::BadHeader)?;
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
        self.buffer.drain(..consumed);
        self.state = State::Body;
        Ok(Some(Event::Headers(headers)))
    }

    fn body(&mut self) -> Option<Event> {
        match find(&self.buffer, &self.delimiter) {
            Some(0) => {
                self.buffer.drain(..self.delimiter.len());
                self.state = State::AfterDelimiter;
                Some(Event::PartEnd)
            }
            Some(at) => Some(Event::Data(self.buffer.drain(..at).collect())),
            None => {
                // The tail could be the start of a delimiter: kept until more comes.
                let safe = self.buffer.len().saturating_sub(self.delimiter.len() - 1);
                (safe > 0).then(|| Event::Data(self.buffer.drain(..safe).collect()))
            }
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(haystack, needle)
}

/// A header's value (names as the reader gives them: lower case).
pub fn header<'h>(headers: &'h [(String, String)], name: &str) -> Option<&'h str> {
    headers.iter().find(|(n, _)| n == name).map(|(_, value)| value.as_str())
}

/// The file name a `Content-Disposition` gives: `filename*=utf-8''…`
/// (RFC 6266, percent-encoded) preferred over `filename="…"`.
pub fn disposition_filename(disposition: &str) -> Option<String> {
    let mut plain = None;
    for parameter in disposition.split(';').skip(1) {
        let Some((name, value)) = parameter.split_once('=') else { continue };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "filename*" => {
                // A malformed one leaves `filename` to say it.
                let Some((charset, rest)) = value.split_once('\'') else { continue };
                let encoded = rest.split_once('\'').map_or(rest, |(_, encoded)| encoded);
                let decoded = crate::http::request::percent_decode(encoded, false);
                if charset.eq_ignore_ascii_case("utf-8") && !decoded.is_empty() {
                    return Some(decoded);
                }
            }
            "filename" => plain = Some(value.trim_matches('"').to_owned()),
            _ => {}
        }
    }
    plain.filter(|name| !name.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `body` in chunks of `size` bytes; the events, data merged per part.
    fn read_all(boundary: &str, body: &[u8], size: usize) -> Result<Vec<Event>, MultipartError> {
        let mut reader = MultipartReader::new(boundary);
        let mut events: Vec<Event> = Vec::new();
        for chunk in body.chunks(size.max(1)) {
            reader.feed(chunk);
            while let Some(event) = reader.next_event()? {
                match (events.last_mut(), event) {
                    (Some(Event::Data(data)), Event::Data(more)) => data.extend(more),
                    (_, event) => events.push(event),
                }
            }
        }
        reader.finish()?;
        Ok(events)
    }

    #[test]
    fn a_framed_file_reads_back_at_every_chunk_size() {
        let content = b"\r\n--not the boundary\r\n\x00\xffbinary\r\n-".to_vec();
        let framing = framing("image/png", "inline; filename=\"a.png\"");
        let boundary = boundary_of(&framing.content_type).expect("boundary");
        let body = [framing.before.clone(), content.clone(), framing.after.clone()].concat();
        for size in [1, 2, 3, 7, 64, body.len()] {
            let events = read_all(&boundary, &body, size).expect("valid");
            assert_eq!(
                events,
                vec![
                    Event::Headers(vec![("content-type".into(), "application/json".into())]),
                    Event::Data(b"{}".to_vec()),
                    Event::PartEnd,
                    Event::Headers(vec![
                        ("content-type".into(), "image/png".into()),
                        ("content-disposition".into(), "inline; filename=\"a.png\"".into()),
                    ]),
                    Event::Data(content.clone()),
                    Event::PartEnd,
                    Event::End,
                ],
                "chunks of {size}"
            );
        }
    }

    #[test]
    fn preamble_padding_empty_parts_and_epilogue() {
        let body =
            b"ignored preamble\r\n--xyz  \r\n\r\n\r\n--xyz\r\nLocation: https://x/y\r\n\r\n\r\n--xyz--\r\nepilogue";
        let events = read_all("xyz", body, 5).expect("valid");
        assert_eq!(
            events,
            vec![
                Event::Headers(vec![]),
                Event::PartEnd,
                Event::Headers(vec![("location".into(), "https://x/y".into())]),
                Event::PartEnd,
                Event::End,
            ]
        );
    }

    #[test]
    fn malformed_bodies_are_errors() {
        assert_eq!(read_all("b", b"--b\r\nContent-Type: a\r\n\r\ndata", 4), Err(MultipartError::Truncated));
        assert_eq!(read_all("b", b"--bX\r\n\r\n", 4), Err(MultipartError::BadDelimiter));
        assert_eq!(read_all("b", b"--b\r\nno colon\r\n\r\n\r\n--b--", 4), Err(MultipartError::BadHeader));
        let huge = [b"--b\r\nX: ".to_vec(), vec![b'a'; MAX_HEADER_BYTES + 10]].concat();
        assert_eq!(read_all("b", &huge, 1000), Err(MultipartError::HeadersTooLarge));
        assert_eq!(read_all("b", b"", 1), Err(MultipartError::Truncated));
    }

    #[test]
    fn boundaries_and_file_names_are_read_from_headers() {
        assert_eq!(boundary_of("multipart/mixed; boundary=abc").as_deref(), Some("abc"));
        assert_eq!(boundary_of("Multipart/Mixed;charset=x; Boundary=\"a b\"").as_deref(), Some("a b"));
        assert_eq!(boundary_of("application/json; boundary=abc"), None);
        assert_eq!(boundary_of("multipart/mixed"), None);
        assert_eq!(disposition_filename("inline; filename=\"a.png\"").as_deref(), Some("a.png"));
        assert_eq!(
            disposition_filename("attachment; filename=\"_t_.txt\"; filename*=utf-8''%C3%A9t%C3%A9.txt").as_deref(),
            Some("été.txt")
        );
        assert_eq!(disposition_filename("inline"), None);
        assert_eq!(disposition_filename("inline; filename*=broken; filename=\"a.txt\"").as_deref(), Some("a.txt"));
    }
}
