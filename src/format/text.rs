//! How borg turns the bytes of a path into text: Python decodes them as UTF-8 with
//! `surrogateescape`, so every byte that is not part of valid UTF-8 becomes one lone surrogate
//! (U+DC80–U+DCFF). What borg then does with those — `?` in listings, `\udcXX` in JSON, one
//! character each when patterns match — all follows from this one decoding.

/// One unit of decoded text: a character, or a byte that was not UTF-8.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Char(char),
    Byte(u8),
}

impl Unit {
    /// The code point Python holds for this unit (a lone surrogate for a stray byte).
    pub fn code_point(self) -> u32 {
        match self {
            Unit::Char(c) => c.into(),
            Unit::Byte(b) => 0xdc00 + u32::from(b),
        }
    }
}

/// The units of `bytes`, as `bytes.decode('utf-8', 'surrogateescape')` yields them.
pub fn decode(bytes: &[u8]) -> Vec<Unit> {
    let mut units = Vec::with_capacity(bytes.len());
    let mut rest = bytes;
    while !rest.is_empty() {
        let (valid, bad) = match std::str::from_utf8(rest) {
            Ok(text) => (text, 0),
            Err(e) => {
                let valid = std::str::from_utf8(&rest[..e.valid_up_to()]).expect("valid prefix");
                let after = &rest[e.valid_up_to()..];
                (valid, e.error_len().unwrap_or(after.len()))
            }
        };
        units.extend(valid.chars().map(Unit::Char));
        let after = &rest[valid.len()..];
        units.extend(after[..bad].iter().map(|b| Unit::Byte(*b)));
        rest = &after[bad..];
    }
    units
}

/// borg's `remove_surrogates`: the text with each stray byte shown as `?`.
pub fn with_question_marks(bytes: &[u8]) -> String {
    decode(bytes)
        .into_iter()
        .map(|unit| match unit {
            Unit::Char(c) => c,
            Unit::Byte(_) => '?',
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stray_bytes_are_units_of_their_own() {
        assert_eq!(
            decode(b"a\xc3\xa9\xff\xe9b"),
            vec![
                Unit::Char('a'),
                Unit::Char('\u{e9}'),
                Unit::Byte(0xff),
                Unit::Byte(0xe9),
                Unit::Char('b')
            ]
        );
        assert_eq!(with_question_marks(b"caf\xe9 \xf0\x9f"), "caf? ??");
        assert_eq!(Unit::Byte(0xe9).code_point(), 0xdce9);
    }
}
