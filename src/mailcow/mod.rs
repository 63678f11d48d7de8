//! Layer 5, the mailcow profile: which parts a mailcow installation has, where each lives, how
//! each is captured (volumes read by the helper, Redis saved first, the database dumped and
//! streamed), and one backup run from the host.

pub mod access;
pub mod backup;
pub mod components;
pub mod conf;
pub mod crypt_keys;
pub mod discover;
pub mod drill;
pub mod export;
pub mod frames;
pub mod helper_command;
pub mod journal;
pub mod mail_filter;
pub mod mail_merge;
pub mod maildir_names;
pub mod mbox;
pub mod metrics;
pub mod mysql;
pub mod origin;
pub mod redis;
pub mod restore;
pub mod restore_plan;
pub mod retention;
pub mod run_record;
pub mod schedule;
pub mod scheduled;
pub mod staged_import;
pub mod stopped;
pub mod summary;
pub mod throwaway;
pub mod timer_units;

/// `text` in double quotes, with `"`, `\\`, newline and carriage return escaped by a backslash:
/// the quoting that both `redis-cli` (its commands on stdin) and MySQL option files read.
fn double_quoted(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            _ => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn secrets_are_double_quoted_with_backslash_escapes() {
        assert_eq!(super::double_quoted(r#"p"a\ss #x y"#), r#""p\"a\\ss #x y""#);
        assert_eq!(super::double_quoted("a\nb\rc"), r#""a\nb\rc""#);
    }
}
