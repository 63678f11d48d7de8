//! Path patterns match exactly as borg 1.4.5's `patterns.parse_pattern(...).match(path)` does, for
//! every style we support, on paths with odd characters, deep nesting and non-UTF-8 bytes.

use crate::common;

use mailcow_borg::ops::patterns::{Pattern, Style};

const PATTERNS: &[&str] = &[
    "*.o",
    "home/*/junk",
    "home/user/.cache/",
    "fm:home/user",
    "fm:*/sub/*",
    "fm:/home/a?c",
    "fm:home/[a-c]*",
    "fm:home/[!a-c]*",
    "fm:home/[]x]*",
    "fm:home/[",
    "fm:**",
    "sh:home/*/junk",
    "sh:home/**/junk",
    "sh:**/junk",
    "sh:**/*.txt",
    "sh:home/*",
    "sh:home/user/",
    "sh:home/???/x",
    "sh:home/[ab]bc/*",
    "pp:home/user",
    "pp:/home/user/",
    "pp:home/./user/../user",
    "pf:home/user/file",
    "pf:/home/user",
    "home/caf\u{e9}*",
    "sh:home/*\u{e9}*",
    "xx:unknown",
];

const PATHS: &[&[u8]] = &[
    b"home",
    b"home/user",
    b"home/username",
    b"home/user/file",
    b"home/user/junk",
    b"home/user/junk/deep/file",
    b"home/user/sub/junk",
    b"home/user/.cache",
    b"home/user/.cache/x",
    b"home/abc",
    b"home/abc/x",
    b"home/abcd/x",
    b"home/bbc/y",
    b"home/]x",
    b"home/[",
    b"a/b.o",
    b"b.o",
    b"c.odt",
    b"x/sub/y",
    b"notes.txt",
    b"deep/a/b/c/notes.txt",
    b"home/caf\xc3\xa9.txt",
    b"home/caf\xe9.txt",
    b"home/\xff\xfe",
    b"home/with space/junk",
    b"home/new\nline",
];

fn check(default: Style, name: &str) {
    let request = serde_json::json!({
        "patterns": PATTERNS,
        "default": name,
        "paths_hex": PATHS.iter().map(|p| common::hex(p)).collect::<Vec<_>>(),
    });
    let answer = common::oracle(&["match-patterns", "-"], request.to_string().as_bytes());
    let theirs: Vec<serde_json::Value> = serde_json::from_slice(&answer).unwrap();
    for (text, theirs) in PATTERNS.iter().zip(theirs) {
        let ours = Pattern::parse(text, default);
        let Some(matches) = theirs.get("matches") else {
            assert!(
                ours.is_err(),
                "{text}: borg refused it ({theirs}), we did not"
            );
            continue;
        };
        let ours = ours.unwrap_or_else(|e| panic!("{text}: borg accepted it, we say {e}"));
        for (path, expected) in PATHS.iter().zip(matches.as_array().unwrap()) {
            assert_eq!(
                ours.matches(path),
                expected.as_bool().unwrap(),
                "default {name}: pattern {text:?} on path {:?}",
                String::from_utf8_lossy(path)
            );
        }
    }
}

#[test]
fn patterns_match_like_borgs() {
    require!(Borg14);
    check(Style::Fnmatch, "fm");
    check(Style::Shell, "sh");
    check(Style::PathPrefix, "pp");
}
