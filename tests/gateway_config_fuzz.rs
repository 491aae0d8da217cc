//! The gateway's configuration check, fuzzed: `gateway --config FILE
//! --check` (the real binary, a child process per case) on files that are
//! the shipped `gateway.toml` with a few random edits, or built from random
//! sections, keys and values of any TOML type (proptest). Every file gets
//! exit 0 and `configuration ok`, or exit 2 and an error that names the
//! file and the field (or says the file is not UTF-8); never a panic, a
//! signal or a hang.

use std::cell::Cell;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config as PropConfig, TestCaseError, TestRunner};

mod common;
use common::{gateway_binary, temp_path, TempFile};

const SHIPPED: &str = include_str!("../examples/gateway/gateway.toml");

/// Every key of the configuration, and a few that are not.
const KEYS: &[&str] = &[
    "address",
    "workers",
    "balance",
    "dlb_backend",
    "header_timeout_ms",
    "max_header_bytes",
    "max_body_bytes",
    "drain_timeout_ms",
    "access_log",
    "host",
    "prefix",
    "rewrite",
    "cluster",
    "name",
    "endpoints",
    "demo_backends",
    "policy",
    "hash_key",
    "maglev_table_size",
    "connect_timeout_ms",
    "request_timeout_ms",
    "max_idle_per_endpoint",
    "max_response_head_bytes",
    "max_retries",
    "retry_budget_percent",
    "retry_min_concurrency",
    "path",
    "interval_ms",
    "timeout_ms",
    "upgrades",
    "healthy_threshold",
    "unhealthy_threshold",
    "tls_cert",
    "tls_key",
    "tls",
    "tls_ca",
    "tls_server_name",
    "bogus",
    "Address",
    "listener",
];

const SECTIONS: &[&str] = &[
    "[listener]",
    "[admin]",
    "[[routes]]",
    "[[clusters]]",
    "[clusters.health_check]",
    "[bogus]",
    "[[listener]]",
    "[routes]",
];

/// A TOML basic string holding `s`, control characters escaped.
fn quoted(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A TOML value of any type, valid or not for the key it lands on.
fn toml_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|v| v.to_string()),
        prop::sample::select(vec![
            "0",
            "-1",
            "1",
            "2",
            "16",
            "17",
            "1024",
            "1025",
            "8191",
            "8192",
            "65536",
            "65537",
            "5000011",
            "5000012",
            "4294967311",
            "9223372036854775807",
            "9223372036854775783",
            "-9223372036854775808",
            "99999999999999999999",
            "0x10",
            "0o17",
            "0b101",
            "1_000",
            "1e400",
            "-0.0",
            "inf",
            "nan",
            "01",
        ])
        .prop_map(str::to_owned),
        any::<f64>().prop_map(|v| format!("{v:?}")),
        any::<bool>().prop_map(|v| v.to_string()),
        // Arbitrary Unicode, escaped where TOML requires.
        any::<String>().prop_map(|s| quoted(&s)),
        "[a-z0-9:.*/_-]{0,16}".prop_map(|s| quoted(&s)),
        prop::sample::select(vec![
            "",
            "*",
            "*.example.com",
            "a*b",
            "/",
            "x",
            "127.0.0.1:0",
            "localhost:0",
            "[::1]:0",
            "127.0.0.1:99999",
            "127.0.0.1",
            ":80",
            "header:x-user",
            "header:",
            "header:bad header",
            "client_ip",
            "round_robin",
            "least_request",
            "maglev",
            "dlb",
            "exact",
            "reuseport",
            "race",
            "soft",
            "hw",
            "hw:7",
            "hw:99999999999",
            "httpbin",
        ])
        .prop_map(quoted),
        prop::sample::select(vec![
            "[]",
            "[\"127.0.0.1:1\"]",
            "[\"127.0.0.1:1\", 2]",
            "[1, \"a\"]",
            "{ a = 1 }",
            "{}",
            "1979-05-27T07:32:00Z",
            "'literal'",
            "\"\"\"multi\nline\"\"\"",
            "\"unterminated",
            "",
        ])
        .prop_map(str::to_owned),
    ]
}

/// One edit of a configuration file.
#[derive(Clone, Debug)]
enum Mutation {
    /// The value of the n-th `key = value` line.
    Set {
        line: usize,
        value: String,
    },
    /// The key of the n-th `key = value` line.
    Rename {
        line: usize,
        key: &'static str,
    },
    Delete {
        line: usize,
    },
    Duplicate {
        line: usize,
    },
    /// Raw bytes, possibly not UTF-8, spliced into a line.
    Splice {
        line: usize,
        at: usize,
        bytes: Vec<u8>,
    },
    /// A line appended after the n-th line.
    Insert {
        line: usize,
        text: String,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), toml_value()).prop_map(|(line, value)| Mutation::Set { line, value }),
        1 => (any::<usize>(), prop::sample::select(KEYS)).prop_map(|(line, key)| Mutation::Rename { line, key }),
        1 => any::<usize>().prop_map(|line| Mutation::Delete { line }),
        1 => any::<usize>().prop_map(|line| Mutation::Duplicate { line }),
        1 => (any::<usize>(), any::<usize>(), prop::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(line, at, bytes)| Mutation::Splice { line, at, bytes }),
        1 => (any::<usize>(), prop_oneof![
                prop::sample::select(SECTIONS).prop_map(str::to_owned),
                (prop::sample::select(KEYS), toml_value()).prop_map(|(k, v)| format!("{k} = {v}")),
            ])
            .prop_map(|(line, text)| Mutation::Insert { line, text }),
    ]
}

fn apply(text: &str, mutations: &[Mutation]) -> Vec<u8> {
    let mut lines: Vec<Vec<u8>> = text.lines().map(|l| l.as_bytes().to_vec()).collect();
    let is_kv = |l: &Vec<u8>| !l.starts_with(b"#") && l.contains(&b'=');
    for m in mutations {
        let kv: Vec<usize> = (0..lines.len()).filter(|&i| is_kv(&lines[i])).collect();
        let n = lines.len().max(1);
        match m {
            Mutation::Set { line, value } if !kv.is_empty() => {
                let i = kv[line % kv.len()];
                let eq = lines[i].iter().position(|&b| b == b'=').unwrap();
                let mut l = lines[i][..=eq].to_vec();
                l.push(b' ');
                l.extend_from_slice(value.as_bytes());
                lines[i] = l;
            }
            Mutation::Rename { line, key } if !kv.is_empty() => {
                let i = kv[line % kv.len()];
                let eq = lines[i].iter().position(|&b| b == b'=').unwrap();
                let mut l = format!("{key} ").into_bytes();
                l.extend_from_slice(&lines[i][eq..]);
                lines[i] = l;
            }
            Mutation::Delete { line } if !lines.is_empty() => {
                lines.remove(line % n);
            }
            Mutation::Duplicate { line } if !lines.is_empty() => {
                let l = lines[line % n].clone();
                lines.insert(line % n, l);
            }
            Mutation::Splice { line, at, bytes } if !lines.is_empty() => {
                let l = &mut lines[line % n];
                let at = at % (l.len() + 1);
                l.splice(at..at, bytes.iter().copied());
            }
            Mutation::Insert { line, text } => {
                let at = if lines.is_empty() { 0 } else { line % n + 1 };
                lines.insert(at, text.as_bytes().to_vec());
            }
            _ => {}
        }
    }
    let mut out = lines.join(&b'\n');
    out.push(b'\n');
    out
}

/// A configuration: the shipped file with 1–4 edits, or one built from
/// random sections and keys.
fn config_file() -> impl Strategy<Value = File> {
    let mutated = prop::collection::vec(mutation(), 1..=4).prop_map(|m| apply(SHIPPED, &m));
    let built = (
        any::<bool>(),
        prop::collection::vec(
            (
                prop::sample::select(SECTIONS),
                prop::collection::vec((prop::sample::select(KEYS), toml_value()), 0..5),
            ),
            0..6,
        ),
    )
        .prop_map(|(with_listener, sections)| {
            let mut text = String::new();
            if with_listener {
                text.push_str("[listener]\naddress = \"127.0.0.1:0\"\n");
            }
            for (header, kvs) in sections {
                text.push_str(header);
                text.push('\n');
                for (k, v) in kvs {
                    text.push_str(&format!("{k} = {v}\n"));
                }
            }
            text.into_bytes()
        });
    prop_oneof![3 => mutated, 1 => built].prop_map(File)
}

/// A generated file; shown as text when a case fails.
#[derive(Clone)]
struct File(Vec<u8>);

impl std::fmt::Debug for File {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "\n{}", String::from_utf8_lossy(&self.0))
    }
}

/// Whether the text after `gateway: bad configuration: FILE: ` names a
/// field: a validation error's path (`listener.workers`, `clusters[0]
/// (name).policy`), or a parse error's line and key, or its reason's
/// ``field `name` ``.
fn names_a_field(rest: &str) -> bool {
    if ["listener.", "admin.", "routes[", "clusters["]
        .iter()
        .any(|p| rest.starts_with(p))
    {
        return true;
    }
    let Some(after) = rest.strip_prefix("line ") else {
        return false;
    };
    let digits = after.bytes().take_while(u8::is_ascii_digit).count();
    let Some(key_and_reason) = after[digits..].strip_prefix(", `") else {
        return false;
    };
    let Some((key, reason)) = key_and_reason.split_once("`: ") else {
        return false;
    };
    // An empty key: the line has none (`= 1`), or the error is about a
    // missing field, which the reason names.
    digits > 0 && (!key.trim().is_empty() || reason.contains("field `") || reason.contains("key"))
}

fn run_check(path: &std::path::Path) -> Result<std::process::Output, String> {
    let mut child = Command::new(gateway_binary())
        .args(["--config".as_ref(), path.as_os_str(), "--check".as_ref()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if child.try_wait().map_err(|e| e.to_string())?.is_some() {
            return child.wait_with_output().map_err(|e| e.to_string());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().map_err(|e| e.to_string())?;
            return Err(format!(
                "--check still running after 20 s; stderr {:?}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn config_check_answers_ok_or_names_the_field_never_panics() {
    use std::os::unix::process::ExitStatusExt;
    let _ = gateway_binary();
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    // Each case is a process spawn: ~100 cases, no regression file (a
    // failure prints the minimal file).
    let mut runner = TestRunner::new(PropConfig {
        cases,
        failure_persistence: None,
        max_shrink_iters: 200,
        ..PropConfig::default()
    });
    let (valid, invalid) = (Cell::new(0u32), Cell::new(0u32));
    let started = Instant::now();
    let result = runner.run(&config_file(), |File(bytes)| {
        let path = temp_path("fuzz");
        std::fs::write(&path, &bytes).unwrap();
        let _cleanup = TempFile(path.clone());
        let out = run_check(&path).map_err(TestCaseError::fail)?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let shown = String::from_utf8_lossy(&bytes);
        prop_assert!(
            out.status.signal().is_none(),
            "killed by signal {:?}; stderr {stderr:?}; file:\n{shown}",
            out.status.signal()
        );
        match out.status.code() {
            Some(0) => {
                valid.set(valid.get() + 1);
                prop_assert!(std::str::from_utf8(&bytes).is_ok(), "non-UTF-8 accepted");
                prop_assert!(stdout.contains("configuration ok"), "{stdout:?}");
            }
            Some(2) => {
                invalid.set(invalid.get() + 1);
                let prefix = format!("gateway: bad configuration: {}: ", path.display());
                let rest = stderr.strip_prefix(&prefix);
                prop_assert!(rest.is_some(), "stderr {stderr:?}; file:\n{shown}");
                let rest = rest.unwrap();
                if std::str::from_utf8(&bytes).is_err() {
                    prop_assert!(rest.contains("valid UTF-8"), "{stderr:?}");
                } else {
                    prop_assert!(
                        names_a_field(rest),
                        "the error names no field: {stderr:?}; file:\n{shown}"
                    );
                }
            }
            code => {
                return Err(TestCaseError::fail(format!(
                    "exit code {code:?} (101 is a panic); stderr {stderr:?}; file:\n{shown}"
                )))
            }
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    println!(
        "config fuzz: {cases} files: {} valid, {} rejected with a field; {:?}",
        valid.get(),
        invalid.get(),
        started.elapsed()
    );
    assert!(invalid.get() > 0);
}
