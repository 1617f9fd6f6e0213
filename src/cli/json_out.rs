//! The formatter of every `--json` output (`print_json`): serde_json's pretty printing, with the
//! control characters it leaves raw escaped too.
//!
//! serde_json escapes C0 controls only; DEL and the C1 controls (U+0080–U+009F; U+009B is a
//! one-character CSI that terminals act on) pass through as they are, so a name from a server or
//! a file could drive the terminal that shows the JSON. They are written as `\u007f`, `\u009b`:
//! the same string to any JSON reader.

use serde_json::ser::{Formatter, PrettyFormatter};
use std::io::{self, Write};

pub struct Escaping(PrettyFormatter<'static>);

impl Escaping {
    pub fn pretty() -> Escaping {
        Escaping(PrettyFormatter::new())
    }
}

impl Formatter for Escaping {
    /// A run of a string that serde_json needs not escape: DEL and C1 are escaped here.
    fn write_string_fragment<W: ?Sized + Write>(&mut self, w: &mut W, s: &str) -> io::Result<()> {
        let mut start = 0;
        let b = s.as_bytes();
        for i in 0..b.len() {
            // DEL is 0x7f; C1 is 0xc2 0x80–0x9f in UTF-8 (0xc2 starts no other control).
            let c = match (b[i], b.get(i + 1)) {
                (0x7f, _) => 0x7f,
                (0xc2, Some(&n)) if (0x80..=0x9f).contains(&n) => n,
                _ => continue,
            };
            w.write_all(&b[start..i])?;
            write!(w, "\\u{c:04x}")?;
            start = i + if c == 0x7f { 1 } else { 2 };
        }
        w.write_all(&b[start..])
    }

    // The rest is PrettyFormatter's.
    fn begin_array<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_array(w)
    }
    fn end_array<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_array(w)
    }
    fn begin_array_value<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        self.0.begin_array_value(w, first)
    }
    fn end_array_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_array_value(w)
    }
    fn begin_object<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_object(w)
    }
    fn end_object<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_object(w)
    }
    fn begin_object_key<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        self.0.begin_object_key(w, first)
    }
    fn begin_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_object_value(w)
    }
    fn end_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_object_value(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;

    fn to_string(v: &impl Serialize) -> String {
        let mut out = Vec::new();
        v.serialize(&mut serde_json::Serializer::with_formatter(
            &mut out,
            Escaping::pretty(),
        ))
        .unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn c1_and_del_are_escaped_and_read_back_the_same() {
        let v = serde_json::json!({"id\u{85}": ["a\u{9b}31m\u{7f}\u{1b}é\u{a0}\u{80}", 1.5]});
        let s = to_string(&v);
        assert!(
            !s.contains(['\u{9b}', '\u{7f}', '\u{85}', '\u{80}', '\u{1b}']),
            "{s}"
        );
        assert!(
            s.contains(r"a\u009b31m\u007f\u001bé") && s.contains(r"id\u0085"),
            "{s}"
        );
        assert!(s.contains('\u{a0}'), "not a control: kept");
        let back: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(back, v);
        // Pretty as before.
        assert_eq!(
            s,
            serde_json::to_string_pretty(&back)
                .unwrap()
                .replace('\u{9b}', r"\u009b")
                .replace('\u{7f}', r"\u007f")
                .replace('\u{85}', r"\u0085")
                .replace('\u{80}', r"\u0080")
        );
    }
}
