//! The `<octopus-settings>` XML of a `Tentacle.config`, read and written as
//! Tentacle's `XmlKeyValueStore` does.

use quick_xml::events::{BytesRef, BytesStart, Event};
use quick_xml::{Reader, XmlVersion};

use super::error::{ConfigError, Location, Structure};

const ROOT: &str = "octopus-settings";
const SET: &str = "set";

/// What XmlSerializer writes before the entries.
const HEADER: &str = concat!(
    r#"<?xml version="1.0" encoding="utf-8"?>"#,
    "\n",
    r#"<octopus-settings xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance""#,
);

/// One `<set>` as read, with the line it starts on.
#[derive(Debug)]
pub(super) struct ParsedEntry {
    pub key: String,
    /// `None` for an empty element, empty text or whitespace, as Tentacle reads them.
    pub value: Option<String>,
    pub line: usize,
}

/// The entries of a Tentacle.config, in file order.
///
/// Never panics: the text may be anything (it is fuzzed).
pub(super) fn parse(text: &str) -> Result<Vec<ParsedEntry>, ConfigError> {
    // .NET writes UTF-8 with a byte order mark.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut reader = Reader::from_str(text);
    let mut parser = Parser {
        entries: Vec::new(),
        state: State::Prolog,
        line: 1,
    };
    let mut lines = Lines::default();
    loop {
        let line = lines.at(text, reader.buffer_position());
        parser.line = line;
        let event = reader.read_event().map_err(|source| ConfigError::Xml {
            at: location(text, reader.error_position()),
            source: source.into(),
        })?;
        let done = parser.on_event(event).map_err(|problem| match problem {
            Failure::Structure(problem) => ConfigError::Structure {
                at: Location { path: None, line },
                problem,
            },
            Failure::Xml(source) => ConfigError::Xml {
                at: Location { path: None, line },
                source: source.into(),
            },
        })?;
        if done {
            return Ok(parser.entries);
        }
    }
}

/// The whole file for `entries`, already in the order to write them.
pub(super) fn write<'a>(entries: impl IntoIterator<Item = (&'a str, Option<&'a str>)>) -> String {
    let mut out = String::from(HEADER);
    let mut entries = entries.into_iter().peekable();
    if entries.peek().is_none() {
        out.push_str(" />");
        return out;
    }
    out.push('>');
    for (key, value) in entries {
        out.push_str("\n  <set key=\"");
        out.push_str(&escape_attribute(key));
        match value {
            None => out.push_str("\" />"),
            Some(value) => {
                out.push_str("\">");
                out.push_str(&quick_xml::escape::partial_escape(value));
                out.push_str("</set>");
            }
        }
    }
    out.push_str("\n</octopus-settings>");
    out
}

/// Escapes an attribute so that reading it back gives the same string: XML
/// turns a literal tab or newline in an attribute into a space.
fn escape_attribute(value: &str) -> String {
    quick_xml::escape::escape(value)
        .replace('\n', "&#10;")
        .replace('\t', "&#9;")
}

enum State {
    Prolog,
    Root,
    Set {
        key: String,
        value: String,
        line: usize,
    },
    Epilog,
}

enum Failure {
    Structure(Structure),
    Xml(quick_xml::Error),
}

impl From<Structure> for Failure {
    fn from(problem: Structure) -> Self {
        Self::Structure(problem)
    }
}

impl From<quick_xml::Error> for Failure {
    fn from(error: quick_xml::Error) -> Self {
        Self::Xml(error)
    }
}

struct Parser {
    entries: Vec<ParsedEntry>,
    state: State,
    /// The line the current event starts on.
    line: usize,
}

impl Parser {
    /// Takes one event; `Ok(true)` once the document is complete.
    fn on_event(&mut self, event: Event<'_>) -> Result<bool, Failure> {
        match event {
            Event::Start(start) => self.on_element(&start, false)?,
            Event::Empty(start) => self.on_element(&start, true)?,
            Event::End(_) => self.on_end(),
            Event::Text(text) => self.on_text(&text.xml10_content())?,
            Event::CData(data) => self.on_text(&data.xml10_content())?,
            Event::GeneralRef(reference) => self.on_text(&resolve(&reference)?)?,
            Event::Eof => return self.on_eof().map(|()| true),
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) | Event::DocType(_) => {}
        }
        Ok(false)
    }

    fn on_element(&mut self, start: &BytesStart<'_>, empty: bool) -> Result<(), Failure> {
        let name = start.name().as_ref().to_owned();
        match &self.state {
            State::Prolog if name == ROOT => {
                // The xmlns attributes mean nothing here, but must be well-formed.
                for attribute in start.attributes() {
                    attribute.map_err(quick_xml::Error::from)?;
                }
                self.state = if empty { State::Epilog } else { State::Root };
            }
            State::Prolog => return Err(Structure::WrongRoot { name }.into()),
            State::Root if name == SET => {
                let key = key_of(start)?;
                let line = self.line;
                if empty {
                    self.push(key, None, line);
                } else {
                    let value = String::new();
                    self.state = State::Set { key, value, line };
                }
            }
            State::Root => return Err(Structure::NotSet { name }.into()),
            State::Set { key, .. } => {
                let key = key.clone();
                return Err(Structure::NestedElement { key, name }.into());
            }
            State::Epilog => return Err(Structure::TrailingElement.into()),
        }
        Ok(())
    }

    /// quick-xml has already checked that the end tag matches.
    fn on_end(&mut self) {
        match std::mem::replace(&mut self.state, State::Epilog) {
            State::Set { key, value, line } => {
                self.state = State::Root;
                self.push(key, Some(value), line);
            }
            State::Root | State::Prolog | State::Epilog => {}
        }
    }

    fn on_text(&mut self, text: &str) -> Result<(), Failure> {
        match &mut self.state {
            State::Set { value, .. } => value.push_str(text),
            _ if is_xml_whitespace(text) => {}
            _ => return Err(Structure::StrayText.into()),
        }
        Ok(())
    }

    fn on_eof(&self) -> Result<(), Failure> {
        match self.state {
            State::Epilog => Ok(()),
            State::Prolog => Err(Structure::NoRoot.into()),
            State::Root | State::Set { .. } => Err(Structure::Unclosed.into()),
        }
    }

    fn push(&mut self, key: String, value: Option<String>, line: usize) {
        let value = value.filter(|v| !v.trim().is_empty());
        self.entries.push(ParsedEntry { key, value, line });
    }
}

/// The `key` attribute of a `<set>`.
fn key_of(start: &BytesStart<'_>) -> Result<String, Failure> {
    let mut key = None;
    for attribute in start.attributes() {
        let attribute = attribute.map_err(quick_xml::Error::from)?;
        if attribute.key.as_ref() == "key" {
            key = Some(
                attribute
                    .normalized_value(XmlVersion::Implicit1_0)?
                    .into_owned(),
            );
        }
    }
    key.ok_or(Failure::Structure(Structure::MissingKey))
}

/// The text of a character reference or one of XML's five entities.
fn resolve(reference: &BytesRef<'_>) -> Result<String, Failure> {
    if let Some(c) = reference.resolve_char_ref()? {
        return Ok(c.to_string());
    }
    match quick_xml::escape::resolve_xml_entity(reference) {
        Some(text) => Ok(text.to_owned()),
        None => Err(Structure::UnknownEntity {
            name: reference.to_string(),
        }
        .into()),
    }
}

fn is_xml_whitespace(text: &str) -> bool {
    text.bytes()
        .all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
}

fn location(text: &str, position: u64) -> Location {
    Location {
        path: None,
        line: line_at(text, position),
    }
}

/// The line (from 1) of a byte offset, clamped to the text.
fn line_at(text: &str, position: u64) -> usize {
    Lines::default().at(text, position)
}

/// Counts lines as the reader moves forward, so finding each event's line
/// costs only the bytes since the last one (a linear parse, however long the file).
#[derive(Default)]
struct Lines {
    /// Bytes counted so far.
    end: usize,
    /// Newlines in them.
    newlines: usize,
}

impl Lines {
    /// The line of `position`, which must not be before the previous one asked.
    fn at(&mut self, text: &str, position: u64) -> usize {
        let end = usize::try_from(position)
            .unwrap_or(usize::MAX)
            .min(text.len());
        if let Some(more) = text.as_bytes().get(self.end..end) {
            self.newlines += more.iter().filter(|&&b| b == b'\n').count();
            self.end = end;
        }
        self.newlines + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(text: &str) -> Vec<(String, Option<String>)> {
        parse(text)
            .unwrap()
            .into_iter()
            .map(|e| (e.key, e.value))
            .collect()
    }

    fn structure(text: &str) -> (usize, Structure) {
        match parse(text) {
            Err(ConfigError::Structure { at, problem }) => (at.line, problem),
            other => panic!("{text:?}: {other:?}"),
        }
    }

    #[test]
    fn writes_xmlserializers_shape() {
        let text = write([("group1.setting1", Some("true")), ("group1.setting2", None)]);
        assert_eq!(
            text,
            "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n\
             <octopus-settings xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\" \
             xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\">\n  \
             <set key=\"group1.setting1\">true</set>\n  \
             <set key=\"group1.setting2\" />\n\
             </octopus-settings>"
        );
        assert!(write([]).ends_with("XMLSchema-instance\" />"));
        assert!(parse(&write([])).unwrap().is_empty());
    }

    #[test]
    fn awkward_text_round_trips() {
        let key = "odd \"key\" <&>\t'\n\r";
        let value = " <a & b> ]]> \"q\" 'a'\r\n\ttab\r ";
        let back = entries(&write([(key, Some(value))]));
        assert_eq!(back, [(key.to_owned(), Some(value.to_owned()))]);
    }

    #[test]
    fn reads_entities_character_references_and_cdata() {
        let text = r#"<octopus-settings><set key="k">a&amp;b&#x41;&#66;<![CDATA[<c>]]>&lt;</set></octopus-settings>"#;
        assert_eq!(entries(text), [("k".into(), Some("a&bAB<c><".into()))]);
    }

    #[test]
    fn blank_values_are_null_but_others_keep_their_spaces() {
        let text = "<octopus-settings><set key=\"a\"> \n </set><set key=\"b\"></set>\
                    <set key=\"c\"> x </set></octopus-settings>";
        assert_eq!(
            entries(text),
            [
                ("a".into(), None),
                ("b".into(), None),
                ("c".into(), Some(" x ".into()))
            ]
        );
    }

    #[test]
    fn comments_and_processing_instructions_are_skipped() {
        let text = "<?xml version=\"1.0\"?>\n<!-- made by hand -->\n<octopus-settings>\n\
                    <!-- a comment --><set key=\"k\">v<!-- inside --></set>\n</octopus-settings>\n\
                    <!-- after -->\n";
        assert_eq!(entries(text), [("k".into(), Some("v".into()))]);
    }

    #[test]
    fn structure_errors_name_the_line() {
        let cases = [
            ("", 1, Structure::NoRoot),
            ("<?xml version=\"1.0\"?>\n", 2, Structure::NoRoot),
            (
                "\n<settings/>",
                2,
                Structure::WrongRoot {
                    name: "settings".into(),
                },
            ),
            (
                "<octopus-settings>\n\n<add key=\"k\"/></octopus-settings>",
                3,
                Structure::NotSet { name: "add".into() },
            ),
            (
                "<octopus-settings>\n<set>v</set></octopus-settings>",
                2,
                Structure::MissingKey,
            ),
            (
                "<octopus-settings><set key=\"k\">\n<b/></set></octopus-settings>",
                2,
                Structure::NestedElement {
                    key: "k".into(),
                    name: "b".into(),
                },
            ),
            (
                "<octopus-settings>\nhello</octopus-settings>",
                1,
                Structure::StrayText,
            ),
            (
                "<octopus-settings><set key=\"k\">&nbsp;</set></octopus-settings>",
                1,
                Structure::UnknownEntity {
                    name: "nbsp".into(),
                },
            ),
            (
                "<octopus-settings/>\n<octopus-settings/>",
                2,
                Structure::TrailingElement,
            ),
        ];
        for (text, line, problem) in cases {
            assert_eq!(structure(text), (line, problem), "{text:?}");
        }
    }

    #[test]
    fn malformed_xml_is_an_xml_error_with_a_line() {
        for text in [
            "<octopus-settings>\n<set key=\"k\">v</sett>\n</octopus-settings>",
            "<octopus-settings>\n<set key=\"k\" key=\"j\"/></octopus-settings>",
            "<octopus-settings>\n<set key=k/></octopus-settings>",
            "<octopus-settings>\n<set key=\"k\">a & b</set></octopus-settings>",
            "<octopus-settings>\n<set key=\"k\">&#0;</set></octopus-settings>",
            "<octopus-settings>\n<set key=\"k\"",
        ] {
            match parse(text) {
                Err(ConfigError::Xml { at, .. }) => assert_eq!(at.line, 2, "{text:?}"),
                other => panic!("{text:?}: {other:?}"),
            }
        }
        let (line, problem) = structure("<octopus-settings>\n<set key=\"k\">v</set>");
        assert_eq!((line, problem), (2, Structure::Unclosed));
    }

    /// A little deterministic fuzzing: prefixes and byte flips of a real file
    /// give errors, never panics.
    #[test]
    fn never_panics_on_damaged_files() {
        let good = write([
            ("Octopus.Home", Some("/etc/octopus")),
            ("Tentacle.Services.NoListen", None),
            ("x", Some("<&>\r\n\"")),
        ]);
        for end in (0..good.len()).filter(|&i| good.is_char_boundary(i)) {
            let _ = parse(&good[..end]);
        }
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let specials = b"<>&;\"'/=!?[]#x \n\r";
        for _ in 0..2000 {
            let mut bytes = good.clone().into_bytes();
            for _ in 0..3 {
                seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                let at = (seed >> 33) as usize % bytes.len();
                bytes[at] = specials[(seed >> 17) as usize % specials.len()];
            }
            if let Ok(text) = String::from_utf8(bytes) {
                let _ = parse(&text);
            }
        }
    }

    #[test]
    fn a_large_file_parses_in_linear_time() {
        let entries: Vec<String> = (0..50_000).map(|i| format!("key{i}")).collect();
        let text = write(entries.iter().map(|k| (k.as_str(), Some("v"))));
        assert_eq!(parse(&text).unwrap().len(), 50_000);
        assert_eq!(parse(&text).unwrap()[49_999].line, 50_002);
    }

    #[test]
    fn line_at_clamps() {
        assert_eq!(line_at("a\nb", 0), 1);
        assert_eq!(line_at("a\nb", 2), 2);
        assert_eq!(line_at("a\nb", u64::MAX), 2);
    }
}
