//! JSON exactly as borg prints it, which is Python's `json.dumps`: ASCII only (`\u00e9`), file
//! names that are not UTF-8 as lone surrogates (`\udce9`, Python's `surrogateescape`), `", "`
//! and `": "` separators on one line, `","` and indentation when indented, keys sorted for
//! `--json` documents and in insertion order for `--json-lines`. Scripts that parse borg's
//! output byte-for-byte keep working with ours.

use std::fmt::Write;

use crate::format::msgpack::Value;
use crate::format::text::{self, Unit};

/// A JSON value whose strings are bytes, so file names survive whatever their encoding.
#[derive(Clone, Debug, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(Vec<u8>),
    List(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    pub fn str(text: impl AsRef<[u8]>) -> Json {
        Json::Str(text.as_ref().to_vec())
    }

    pub fn object<const N: usize>(entries: [(&str, Json); N]) -> Json {
        Json::Object(
            entries
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        )
    }

    /// A msgpack value as JSON, keeping map order; `raw` decides how byte strings are shown
    /// (the one thing borg's outputs differ in). Map keys are text.
    pub fn from_msgpack(value: &Value, raw: &dyn Fn(&[u8]) -> Json) -> Json {
        match value {
            Value::Nil => Json::Null,
            Value::Bool(b) => Json::Bool(*b),
            Value::Int(i) => Json::Int(*i),
            Value::Float(f) => Json::Float(*f),
            Value::Raw(bytes) => raw(bytes),
            Value::Array(items) => {
                Json::List(items.iter().map(|v| Json::from_msgpack(v, raw)).collect())
            }
            Value::Map(entries) => Json::Object(
                entries
                    .iter()
                    .map(|(k, v)| {
                        let key = match k {
                            Value::Raw(b) => String::from_utf8_lossy(b).into_owned(),
                            other => other.to_string(),
                        };
                        (key, Json::from_msgpack(v, raw))
                    })
                    .collect(),
            ),
        }
    }

    /// One line, as `--json-lines` and `--log-json` print.
    pub fn to_line(&self) -> String {
        let mut out = String::new();
        self.write(&mut out, None, 0, false);
        out
    }

    /// A `--json` document: keys sorted, indented by `indent` (borg's default 4; `None` for one
    /// line, `BORG_JSON_INDENT=none`).
    pub fn to_document(&self, indent: Option<usize>) -> String {
        let mut out = String::new();
        self.write(&mut out, indent, 0, true);
        out
    }

    /// Indented with keys in their stored order, as borg's `debug dump-*` print.
    pub fn to_dump(&self) -> String {
        let mut out = String::new();
        self.write(&mut out, Some(4), 0, false);
        out
    }

    fn write(&self, out: &mut String, indent: Option<usize>, depth: usize, sort: bool) {
        let newline = |out: &mut String, depth: usize| {
            if let Some(width) = indent {
                out.push('\n');
                out.push_str(&" ".repeat(width * depth));
            }
        };
        let item_separator = if indent.is_some() { "," } else { ", " };
        match self {
            Json::Null => out.push_str("null"),
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::Int(i) => write!(out, "{i}").expect("write to String"),
            Json::Float(f) => out.push_str(&python_float(*f)),
            Json::Str(bytes) => write_string(out, bytes),
            Json::List(items) if items.is_empty() => out.push_str("[]"),
            Json::List(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(item_separator);
                    }
                    newline(out, depth + 1);
                    item.write(out, indent, depth + 1, sort);
                }
                newline(out, depth);
                out.push(']');
            }
            Json::Object(entries) if entries.is_empty() => out.push_str("{}"),
            Json::Object(entries) => {
                let mut entries: Vec<&(String, Json)> = entries.iter().collect();
                if sort {
                    entries.sort_by(|a, b| a.0.cmp(&b.0));
                }
                out.push('{');
                for (i, (key, value)) in entries.into_iter().enumerate() {
                    if i > 0 {
                        out.push_str(item_separator);
                    }
                    newline(out, depth + 1);
                    write_string(out, key.as_bytes());
                    out.push_str(": ");
                    value.write(out, indent, depth + 1, sort);
                }
                newline(out, depth);
                out.push('}');
            }
        }
    }
}

/// Python's `repr(float)`: the shortest round-tripping digits, always with a `.` or exponent.
fn python_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    // Python switches to exponent notation below 1e-4 and from 1e16 on, with at least two
    // exponent digits; Rust's shortest digits are the same, only laid out differently.
    let scientific = format!("{f:e}");
    let (mantissa, exponent) = scientific.split_once('e').expect("{:e} has an exponent");
    let exponent: i32 = exponent.parse().expect("numeric exponent");
    if f != 0.0 && !(-4..16).contains(&exponent) {
        let sign = if exponent < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exponent.abs());
    }
    let text = format!("{f}");
    if text.contains('.') {
        text
    } else {
        format!("{text}.0")
    }
}

fn write_string(out: &mut String, bytes: &[u8]) {
    out.push('"');
    for unit in text::decode(bytes) {
        match unit {
            Unit::Char(c) => escape_char(out, c),
            // Each undecodable byte is the lone surrogate Python made of it.
            Unit::Byte(_) => write!(out, "\\u{:04x}", unit.code_point()).expect("write to String"),
        }
    }
    out.push('"');
}

fn escape_char(out: &mut String, c: char) {
    match c {
        '"' => out.push_str("\\\""),
        '\\' => out.push_str("\\\\"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\u{8}' => out.push_str("\\b"),
        '\u{c}' => out.push_str("\\f"),
        ' '..='~' => out.push(c),
        _ => {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                write!(out, "\\u{unit:04x}").expect("write to String");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected strings are Python 3.11's json.dumps of the same values.
    #[test]
    fn matches_pythons_json_dumps() {
        let value = Json::object([
            ("b", Json::str(b"caf\xc3\xa9 \xe9\n\"\\\x01")),
            (
                "a",
                Json::List(vec![Json::Int(1), Json::Float(0.5), Json::Float(2.0)]),
            ),
            ("c", Json::object([])),
            ("d", Json::str("\u{1F600}")),
            (
                "e",
                Json::List(vec![
                    Json::Float(2.5987675928817417e-05),
                    Json::Float(1e16),
                    Json::Float(0.0001),
                ]),
            ),
        ]);
        assert_eq!(
            value.to_line(),
            r#"{"b": "caf\u00e9 \udce9\n\"\\\u0001", "a": [1, 0.5, 2.0], "c": {}, "d": "\ud83d\ude00", "e": [2.5987675928817417e-05, 1e+16, 0.0001]}"#
        );
        assert_eq!(
            value.to_document(Some(4)),
            "{\n    \"a\": [\n        1,\n        0.5,\n        2.0\n    ],\n    \"b\": \"caf\\u00e9 \\udce9\\n\\\"\\\\\\u0001\",\n    \"c\": {},\n    \"d\": \"\\ud83d\\ude00\",\n    \"e\": [\n        2.5987675928817417e-05,\n        1e+16,\n        0.0001\n    ]\n}"
        );
    }
}
