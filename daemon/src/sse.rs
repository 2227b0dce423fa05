//! Incremental parser for `text/event-stream` bodies.
//!
//! The proxy forwards stream bytes untouched and feeds a copy here to read the usage
//! events. Bytes may arrive split anywhere, inside a line or a UTF-8 character, so lines
//! are decoded only once complete. Memory is bounded: a line longer than
//! [`MAX_LINE_BYTES`] stops the parser for the rest of the stream, and the proxy then
//! records the stream without the usage it could not read.

/// Maximum length of a line the parser buffers. Anthropic events are a few kilobytes; tool-use
/// deltas stay far below this.
pub const MAX_LINE_BYTES: usize = 4 * 1024 * 1024;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The `event:` field; empty when the event had none.
    pub name: String,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

/// Event-stream parser that is fed bytes as they arrive.
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    name: String,
    data: String,
    has_data: bool,
    /// A `\r` ended the last line; a `\n` right after it belongs to the same line break.
    after_cr: bool,
    overflowed: bool,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// True once a line passed [`MAX_LINE_BYTES`]; no events are produced after that.
    pub fn overflowed(&self) -> bool {
        self.overflowed
    }

    /// Feeds `bytes` and calls `on_event` for each event they complete.
    pub fn feed(&mut self, bytes: &[u8], mut on_event: impl FnMut(Event)) {
        if self.overflowed {
            return;
        }
        let mut rest = bytes;
        while !rest.is_empty() {
            if self.after_cr {
                self.after_cr = false;
                if rest[0] == b'\n' {
                    rest = &rest[1..];
                    continue;
                }
            }
            match rest.iter().position(|&b| b == b'\n' || b == b'\r') {
                Some(end) => {
                    self.line.extend_from_slice(&rest[..end]);
                    self.after_cr = rest[end] == b'\r';
                    rest = &rest[end + 1..];
                    if let Some(event) = self.end_line() {
                        on_event(event);
                    }
                }
                None => {
                    self.line.extend_from_slice(rest);
                    rest = &[];
                }
            }
            if self.line.len() > MAX_LINE_BYTES {
                self.overflowed = true;
                self.line = Vec::new();
                return;
            }
        }
    }

    /// Handles one complete line; returns an event when the line was blank.
    fn end_line(&mut self) -> Option<Event> {
        let line = std::mem::take(&mut self.line);
        if line.is_empty() {
            return self.dispatch();
        }
        let text = String::from_utf8_lossy(&line);
        if text.starts_with(':') {
            return None;
        }
        let (field, value) = match text.find(':') {
            Some(colon) => {
                let value = &text[colon + 1..];
                (&text[..colon], value.strip_prefix(' ').unwrap_or(value))
            }
            None => (&text[..], ""),
        };
        match field {
            "event" => self.name = value.to_owned(),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            _ => {}
        }
        None
    }

    fn dispatch(&mut self) -> Option<Event> {
        let name = std::mem::take(&mut self.name);
        if !self.has_data {
            return None;
        }
        self.has_data = false;
        Some(Event {
            name,
            data: std::mem::take(&mut self.data),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_in_pieces(body: &[u8], piece: usize) -> Vec<Event> {
        let mut parser = SseParser::new();
        let mut events = Vec::new();
        for chunk in body.chunks(piece) {
            parser.feed(chunk, |event| events.push(event));
        }
        events
    }

    const BODY: &str = "event: message_start\ndata: {\"a\":\"é\"}\n\n\
                        : comment\n\
                        event: ping\ndata: {}\n\n\
                        data: line one\ndata: line two\n\n";

    #[test]
    fn parses_whatever_the_split() {
        let whole = parse_in_pieces(BODY.as_bytes(), BODY.len());
        assert_eq!(whole.len(), 3);
        assert_eq!(whole[0].name, "message_start");
        assert_eq!(whole[0].data, "{\"a\":\"é\"}");
        assert_eq!(whole[2].name, "");
        assert_eq!(whole[2].data, "line one\nline two");
        for piece in 1..8 {
            assert_eq!(
                parse_in_pieces(BODY.as_bytes(), piece),
                whole,
                "piece {piece}"
            );
        }
    }

    #[test]
    fn accepts_crlf_and_cr_line_breaks() {
        let lf = parse_in_pieces(BODY.as_bytes(), 1000);
        let crlf = BODY.replace('\n', "\r\n");
        let cr = BODY.replace('\n', "\r");
        for piece in [1, 2, 3, 1000] {
            assert_eq!(parse_in_pieces(crlf.as_bytes(), piece), lf);
            assert_eq!(parse_in_pieces(cr.as_bytes(), piece), lf);
        }
    }

    #[test]
    fn event_without_data_is_skipped() {
        let events = parse_in_pieces(b"event: lonely\n\nevent: x\ndata: 1\n\n", 3);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].name, "x");
    }

    #[test]
    fn overlong_line_stops_parser() {
        let mut parser = SseParser::new();
        let big = vec![b'a'; MAX_LINE_BYTES + 1];
        let mut count = 0;
        parser.feed(b"data: ", |_| count += 1);
        parser.feed(&big, |_| count += 1);
        parser.feed(b"\n\ndata: 1\n\n", |_| count += 1);
        assert!(parser.overflowed());
        assert_eq!(count, 0);
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn events_of(body: &[u8], cuts: &[usize]) -> (Vec<Event>, bool) {
        let mut parser = SseParser::new();
        let mut events = Vec::new();
        let mut start = 0;
        for &cut in cuts {
            let cut = cut.min(body.len()).max(start);
            parser.feed(&body[start..cut], |event| events.push(event));
            start = cut;
        }
        parser.feed(&body[start..], |event| events.push(event));
        (events, parser.overflowed())
    }

    proptest! {
        /// Arbitrary bytes never panic the parser, and where they are cut does not change
        /// the events.
        #[test]
        fn any_split_gives_same_events(
            body in proptest::collection::vec(any::<u8>(), 0..2048),
            mut cuts in proptest::collection::vec(0usize..2048, 0..16),
        ) {
            cuts.sort_unstable();
            let (whole, _) = events_of(&body, &[]);
            let (split, _) = events_of(&body, &cuts);
            prop_assert_eq!(whole, split);
        }

        /// Well-formed streams parse back to the events they were made from.
        #[test]
        fn generated_events_round_trip(
            events in proptest::collection::vec(("[a-z_]{1,12}", "[ -~é日]{0,40}"), 1..20),
            mut cuts in proptest::collection::vec(0usize..4096, 0..16),
        ) {
            let mut body = String::new();
            for (name, data) in &events {
                body.push_str(&format!("event: {name}\ndata: {data}\n\n"));
            }
            cuts.sort_unstable();
            let (parsed, overflowed) = events_of(body.as_bytes(), &cuts);
            prop_assert!(!overflowed);
            prop_assert_eq!(parsed.len(), events.len());
            for (event, (name, data)) in parsed.iter().zip(&events) {
                prop_assert_eq!(&event.name, name);
                prop_assert_eq!(&event.data, data);
            }
        }
    }
}
