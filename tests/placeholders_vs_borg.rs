//! Archive-name placeholders expand exactly as borg 1.4.5's `replace_placeholders` expands them,
//! for the same values, in UTC and in a zone with an offset and daylight saving time.

#[macro_use]
mod common;

use mailcow_borg::ops::placeholders::{PlaceholderValues, expand};

const TEMPLATES: [&str; 14] = [
    "{hostname}-{now}",
    "{hostname}-{now:%Y-%m-%dT%H:%M:%S}",
    "{utcnow}",
    "{now:%Y-%m-%d_%H-%M-%S.%f}",
    "{now:%s}|{unixtime}",
    "{utcnow:%a %b %d %j %U %w %y %Z %z}",
    "{now:%Z %z}",
    "{fqdn}|{reverse-fqdn}|{pid}|{user}|{uuid4}",
    "{borgversion}|{borgmajor}|{borgminor}|{borgpatch}",
    "{{literal}} {hostname:>12}|{user:_<8}|{pid:^9}",
    "plain name, no placeholders",
    "{nope}",
    "{user!r}",
    "broken}",
];

unsafe extern "C" {
    /// POSIX: re-reads `TZ` for the C library's local time functions.
    fn tzset();
}

#[test]
fn placeholders_expand_like_borgs() {
    require!(Borg14);
    let values = PlaceholderValues {
        hostname: "mail".into(),
        fqdn: "mail.example.org".into(),
        user: "root".into(),
        pid: 4242,
        uuid4: "9412f359-1c2d-4e5f-8a9b-0c1d2e3f4a5b".into(),
        // Summer, for the daylight saving offset.
        now_micros: 1_783_941_147_123_456,
    };
    for tz in ["UTC", "Europe/Berlin", "America/New_York"] {
        // SAFETY: set_var is only unsound with other threads reading the environment; this test
        // binary has no other test and the harness reads nothing meanwhile.
        unsafe { std::env::set_var("TZ", tz) };
        // SAFETY: tzset re-reads TZ; nothing else uses the C time zone state concurrently here.
        unsafe { tzset() };
        let request = serde_json::json!({
            "values": {
                "hostname": values.hostname, "fqdn": values.fqdn, "user": values.user,
                "pid": values.pid, "uuid4": values.uuid4, "now_micros": values.now_micros,
            },
            "templates": TEMPLATES,
        });
        let answer = common::oracle(&["placeholders", "-"], request.to_string().as_bytes());
        let theirs: Vec<serde_json::Value> = serde_json::from_slice(&answer).unwrap();
        for (template, theirs) in TEMPLATES.iter().zip(theirs) {
            let ours = expand(template, &values);
            match (theirs.get("ok").and_then(|v| v.as_str()), &ours) {
                (Some(expected), Ok(got)) => assert_eq!(got, expected, "TZ={tz} {template}"),
                (None, Err(_)) => {}
                _ => panic!("TZ={tz} {template}: borg {theirs}, ours {ours:?}"),
            }
        }
    }
}
