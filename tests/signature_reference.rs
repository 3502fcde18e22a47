//! Cross-checks `recordhook::signature` against the official SignalWire SDK.
//!
//! An implementation that only agrees with its own tests can be consistently wrong, so
//! this test signs and validates a few hundred random requests with the official
//! `signalwire` PyPI package (through `tests/support/sign.py`) and requires both sides to
//! agree, in both directions: our signatures validate in the SDK, the SDK's verify in ours,
//! and tampered requests fail in both.
//!
//! Python is `$TEST_PYTHON` (default `python3`). Without the SDK the test is
//! skipped locally and fails when `CI=true`; install it with
//! `pip install -r tests/support/requirements.txt`.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use recordhook::signature::{SignedBody, SigningKey, Verifier, sign_fields, sign_raw};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const SEED: u64 = 0x5153_4e41_4c57_4952;
const FORM_CASES: usize = 240;
const RAW_CASES: usize = 120;
const JSON_FIELD_CASES: usize = 60;
const BODY_SHA_CASES: usize = 60;

#[path = "support/rng.rs"]
mod rng;
/// The generator of the cases (seeded: the same cases on every run and machine).
use rng::SplitMix64 as Rng;

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// A string mixing the characters that trip up form and URL handling (`+ & = %`,
    /// spaces), unicode of every UTF-8 length, and plain text.
    fn text(&mut self, max_len: usize) -> String {
        const PIECES: &[&str] = &[
            "a",
            "Z",
            "0",
            "9",
            "_",
            "-",
            ".",
            " ",
            "+",
            "&",
            "=",
            "%",
            "%20",
            "%2B",
            "?",
            "#",
            "/",
            ":",
            ";",
            "@",
            "!",
            "*",
            "'",
            "(",
            ")",
            "~",
            "\"",
            "\\",
            "\t",
            "\n",
            "é",
            "ü",
            "ß",
            "\u{a0}",
            "中",
            "文",
            "€",
            "😀",
            "🎙",
            "\u{200b}",
            "e\u{301}",
            "\u{0}",
            "Recording",
            "+14158675309",
            "completed",
        ];
        let len = self.below(max_len + 1);
        (0..len).map(|_| *self.pick(PIECES)).collect()
    }

    fn url(&mut self) -> String {
        // Every base survives Python's urlparse/geturl unchanged (lowercase scheme, no
        // empty `?`, no fragment): the SDK re-serialises the URL before signing, and we
        // deliberately do not, so such URLs are outside what we can compare.
        const BASES: &[&str] = &[
            "https://example.com/webhooks/recording-status",
            "https://example.com:443/webhooks/recording-status",
            "http://localhost:8080/hook",
            "http://example.org/a/b",
            "http://example.org:80/x/y.php",
            "https://hooks.example.net/rec?token=abc&x=1",
            "https://h.example/p?q=%20a+b&list=1&list=2",
            "https://[::1]:8443/v6",
            "https://example.com/ünïcode/päth?q=ä",
            "https://user@example.com/with-userinfo",
        ];
        let mut url = (*self.pick(BASES)).to_string();
        if self.chance(40) {
            url.push(if url.contains('?') { '&' } else { '?' });
            const QUERY: &[u8] = b"abcXYZ0189=&%+-_.";
            let len = 1 + self.below(24);
            url.extend((0..len).map(|_| *self.pick(QUERY) as char));
        }
        url
    }

    fn fields(&mut self) -> Vec<(String, String)> {
        const NAMES: &[&str] = &[
            "AccountSid",
            "CallSid",
            "RecordingSid",
            "RecordingUrl",
            "RecordingStatus",
            "RecordingDuration",
            "RecordingChannels",
            "RecordingSource",
            "ErrorCode",
        ];
        let count = self.below(13);
        let mut fields: Vec<(String, String)> = Vec::with_capacity(count);
        for _ in 0..count {
            let name = if !fields.is_empty() && self.chance(15) {
                // A repeated name, sometimes with a repeated value too.
                fields[self.below(fields.len())].0.clone()
            } else if self.chance(50) {
                (*self.pick(NAMES)).to_string()
            } else {
                self.text(12)
            };
            let value = if self.chance(5) && !fields.is_empty() {
                fields[self.below(fields.len())].1.clone()
            } else {
                self.text(40)
            };
            fields.push((name, value));
        }
        fields
    }

    /// A JSON value of any shape (numbers, nesting, unicode), serialised compactly or
    /// with whitespace.
    fn json_body(&mut self) -> String {
        let value = self.json_value(3);
        if self.chance(50) {
            value.to_string()
        } else {
            serde_json::to_string_pretty(&value).expect("a JSON value serialises")
        }
    }

    fn json_value(&mut self, depth: usize) -> Value {
        match self.below(if depth == 0 { 4 } else { 6 }) {
            0 => Value::String(self.text(20)),
            1 => json!(self.next() as i64 % 100_000),
            2 => json!(self.chance(50)),
            3 => Value::Null,
            4 => Value::Array((0..self.below(4)).map(|_| self.json_value(depth - 1)).collect()),
            _ => Value::Object((0..self.below(5)).map(|_| (self.text(10), self.json_value(depth - 1))).collect()),
        }
    }

    /// A JSON object whose values are all strings: the SDK accepts Scheme B over its fields.
    fn json_string_object(&mut self) -> String {
        let map: serde_json::Map<String, Value> =
            (0..self.below(8)).map(|_| (self.text(12), Value::String(self.text(30)))).collect();
        Value::Object(map).to_string()
    }

    fn key(&mut self) -> String {
        format!("PSK_{}", self.text(20))
    }
}

/// The URL with the scheme's default port toggled, for the bases in [`Rng::url`].
fn toggle_port(url: &str) -> Option<String> {
    for (plain, with_port) in [
        ("https://example.com/", "https://example.com:443/"),
        ("http://example.org/", "http://example.org:80/"),
        ("https://hooks.example.net/", "https://hooks.example.net:443/"),
    ] {
        if let Some(rest) = url.strip_prefix(plain) {
            return Some(format!("{with_port}{rest}"));
        }
        if let Some(rest) = url.strip_prefix(with_port) {
            return Some(format!("{plain}{rest}"));
        }
    }
    None
}

fn form_json(fields: &[(String, String)]) -> Value {
    Value::Array(fields.iter().map(|(n, v)| json!([n, v])).collect())
}

fn encode_form(fields: &[(String, String)]) -> String {
    form_urlencoded::Serializer::new(String::new()).extend_pairs(fields).finish()
}

fn tamper(s: &str) -> String {
    format!("{s}x")
}

struct Python {
    program: String,
    script: PathBuf,
}

impl Python {
    /// Finds the interpreter and checks that the SDK imports. `None` means "skip".
    fn find() -> Option<Python> {
        let program = std::env::var("TEST_PYTHON").unwrap_or_else(|_| "python3".into());
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/sign.py");
        let problem = match Command::new(&program).arg(&script).arg("--check").output() {
            Ok(out) if out.status.success() => {
                eprintln!("signature_reference: using {} ({program})", String::from_utf8_lossy(&out.stdout).trim());
                return Some(Python { program, script });
            }
            Ok(out) => format!(
                "`{program} tests/support/sign.py --check` failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(e) => format!("cannot run `{program}`: {e}"),
        };
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!(
                "the official SignalWire SDK is required in CI: {problem}\n\
                 fix: pip install -r tests/support/requirements.txt \
                 (and set TEST_PYTHON to that interpreter if it is not python3)"
            );
        }
        eprintln!(
            "skipped: signature_reference needs the official `signalwire` Python SDK ({problem}); \
             pip install -r tests/support/requirements.txt, or set TEST_PYTHON"
        );
        None
    }

    /// Runs one batch of requests through sign.py and returns one result per request.
    fn run(&self, requests: &[Value]) -> Vec<Value> {
        let mut child = Command::new(&self.program)
            .arg(&self.script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sign.py");
        let input = serde_json::to_vec(requests).expect("requests serialise");
        // Write from another thread so a large batch cannot deadlock on full pipes.
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let writer = std::thread::spawn(move || stdin.write_all(&input));
        let out = child.wait_with_output().expect("sign.py runs");
        writer.join().expect("writer thread").expect("write to sign.py");
        assert!(out.status.success(), "sign.py failed: {}", String::from_utf8_lossy(&out.stderr));
        let results: Vec<Value> = serde_json::from_slice(&out.stdout).expect("sign.py prints a JSON array");
        assert_eq!(results.len(), requests.len(), "one result per request");
        results
    }
}

/// What the request was signed over, on our side.
enum Body {
    Form(Vec<(String, String)>),
    Raw(String),
}

/// One validation both implementations must agree on.
struct Check {
    what: String,
    key: String,
    url: String,
    body: Body,
    signature: String,
    /// Use the SDK's compatibility (Twilio) entry point for a raw body: the only one that
    /// honours bodySHA256.
    compat: bool,
    expect: bool,
}

impl Check {
    fn request(&self) -> Value {
        let mut req = json!({
            "mode": "validate",
            "key": self.key,
            "url": self.url,
            "signature": self.signature,
            "compat": self.compat,
        });
        match &self.body {
            Body::Form(fields) => req["form"] = form_json(fields),
            Body::Raw(raw) => req["raw"] = json!(raw),
        }
        req
    }

    fn ours(&self) -> bool {
        let verifier = Verifier::new(vec![SigningKey::new("PSK_decoy"), SigningKey::new(&*self.key)]);
        match &self.body {
            Body::Form(fields) => {
                let raw = encode_form(fields);
                let body = SignedBody::Form { fields, raw: raw.as_bytes() };
                verifier.verify(&self.url, body, &self.signature)
            }
            Body::Raw(raw) => verifier.verify(&self.url, SignedBody::Json { raw: raw.as_bytes() }, &self.signature),
        }
    }
}

/// A request for the SDK to sign, and what it must agree with on our side.
struct Signing {
    what: String,
    request: Value,
    ours: String,
}

#[test]
fn agrees_with_the_official_signalwire_sdk() {
    let Some(python) = Python::find() else {
        return;
    };
    let mut rng = Rng(SEED);
    let mut signings: Vec<Signing> = Vec::new();
    // Cases whose SDK signature must then verify on our side (filled after phase 1).
    let mut sdk_signed: Vec<(usize, String, String, Body, bool)> = Vec::new();
    let mut checks: Vec<Check> = Vec::new();

    for i in 0..FORM_CASES {
        let key = rng.key();
        let url = rng.url();
        let fields = rng.fields();
        let ours = sign_fields(&SigningKey::new(&*key), &url, &fields);
        signings.push(Signing {
            what: format!("form #{i}"),
            request: json!({"key": key, "url": url, "form": form_json(&fields)}),
            ours: ours.clone(),
        });
        sdk_signed.push((signings.len() - 1, key.clone(), url.clone(), Body::Form(fields.clone()), false));
        checks.push(Check {
            what: format!("form #{i}: our signature"),
            key: key.clone(),
            url: url.clone(),
            body: Body::Form(fields.clone()),
            signature: ours.clone(),
            compat: false,
            expect: true,
        });
        if let Some(other) = toggle_port(&url) {
            // Signed with the port toggled, received as is.
            checks.push(Check {
                what: format!("form #{i}: signed with port toggled"),
                key: key.clone(),
                url: url.clone(),
                body: Body::Form(fields.clone()),
                signature: sign_fields(&SigningKey::new(&*key), &other, &fields),
                compat: false,
                expect: true,
            });
        }
        let mut tampered = fields.clone();
        if let Some(last) = tampered.last_mut() {
            last.1 = tamper(&last.1);
        } else {
            tampered.push(("Extra".into(), "1".into()));
        }
        checks.push(Check {
            what: format!("form #{i}: tampered field"),
            key: key.clone(),
            url: url.clone(),
            body: Body::Form(tampered),
            signature: ours.clone(),
            compat: false,
            expect: false,
        });
        let removed = rng.below(fields.len().max(1));
        // Removing a pair changes the signed text unless both name and value are empty.
        if fields.get(removed).is_some_and(|(n, v)| !(n.is_empty() && v.is_empty())) {
            let mut missing = fields.clone();
            missing.remove(removed);
            checks.push(Check {
                what: format!("form #{i}: missing field"),
                key: key.clone(),
                url: url.clone(),
                body: Body::Form(missing),
                signature: ours.clone(),
                compat: false,
                expect: false,
            });
        }
        checks.push(Check {
            what: format!("form #{i}: wrong key"),
            key: tamper(&key),
            url,
            body: Body::Form(fields),
            signature: ours,
            compat: false,
            expect: false,
        });
    }

    for i in 0..RAW_CASES {
        let key = rng.key();
        let url = rng.url();
        let raw = rng.json_body();
        let ours = sign_raw(&SigningKey::new(&*key), &url, raw.as_bytes());
        signings.push(Signing {
            what: format!("raw #{i}"),
            request: json!({"key": key, "url": url, "raw": raw}),
            ours: ours.clone(),
        });
        sdk_signed.push((signings.len() - 1, key.clone(), url.clone(), Body::Raw(raw.clone()), false));
        checks.push(Check {
            what: format!("raw #{i}: our signature"),
            key: key.clone(),
            url: url.clone(),
            body: Body::Raw(raw.clone()),
            signature: ours.clone(),
            compat: false,
            expect: true,
        });
        if let Some(other) = toggle_port(&url) {
            checks.push(Check {
                what: format!("raw #{i}: signed with port toggled"),
                key: key.clone(),
                url: url.clone(),
                body: Body::Raw(raw.clone()),
                signature: sign_raw(&SigningKey::new(&*key), &other, raw.as_bytes()),
                compat: false,
                expect: true,
            });
        }
        checks.push(Check {
            what: format!("raw #{i}: tampered body"),
            key: key.clone(),
            url,
            body: Body::Raw(format!("{raw} ")),
            signature: ours,
            compat: false,
            expect: false,
        });
    }

    for i in 0..JSON_FIELD_CASES {
        // A JSON body of string fields, signed like a form (the SDK's fallback).
        let key = rng.key();
        let url = rng.url();
        let raw = rng.json_string_object();
        let fields: Vec<(String, String)> = serde_json::from_str::<serde_json::Map<String, Value>>(&raw)
            .expect("generated JSON parses")
            .into_iter()
            .map(|(n, v)| (n, v.as_str().expect("string values").to_owned()))
            .collect();
        let ours = sign_fields(&SigningKey::new(&*key), &url, &fields);
        signings.push(Signing {
            what: format!("json fields #{i}"),
            request: json!({"key": key, "url": url, "raw": raw, "compat": true}),
            ours: ours.clone(),
        });
        sdk_signed.push((signings.len() - 1, key.clone(), url.clone(), Body::Raw(raw.clone()), false));
        checks.push(Check {
            what: format!("json fields #{i}: our Scheme B signature"),
            key: key.clone(),
            url: url.clone(),
            body: Body::Raw(raw.clone()),
            signature: ours.clone(),
            compat: false,
            expect: true,
        });
        if !fields.is_empty() {
            // A value that is not a string: the SDK raises, we reject.
            let mut with_number: serde_json::Map<String, Value> = serde_json::from_str(&raw).unwrap();
            with_number.insert("RecordingDuration".into(), json!(94));
            let mut stringified = fields.clone();
            stringified.retain(|(n, _)| n != "RecordingDuration");
            stringified.push(("RecordingDuration".into(), "94".into()));
            checks.push(Check {
                what: format!("json fields #{i}: numeric value"),
                key: key.clone(),
                url: url.clone(),
                body: Body::Raw(Value::Object(with_number).to_string()),
                signature: sign_fields(&SigningKey::new(&*key), &url, &stringified),
                compat: false,
                expect: false,
            });
        }
    }

    for i in 0..BODY_SHA_CASES {
        let key = rng.key();
        let base = rng.url();
        let raw = if rng.chance(30) { encode_form(&rng.fields()) } else { rng.json_body() };
        let hash = hex::encode(Sha256::digest(raw.as_bytes()));
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}bodySHA256={hash}");
        let ours = sign_fields(&SigningKey::new(&*key), &url, &[]);
        signings.push(Signing {
            what: format!("bodySHA256 #{i}"),
            request: json!({"key": key, "url": url, "form": []}),
            ours: ours.clone(),
        });
        sdk_signed.push((signings.len() - 1, key.clone(), url.clone(), Body::Raw(raw.clone()), true));
        checks.push(Check {
            what: format!("bodySHA256 #{i}: our signature"),
            key: key.clone(),
            url: url.clone(),
            body: Body::Raw(raw.clone()),
            signature: ours.clone(),
            compat: true,
            expect: true,
        });
        checks.push(Check {
            what: format!("bodySHA256 #{i}: tampered body"),
            key: key.clone(),
            url: url.clone(),
            body: Body::Raw(tamper(&raw)),
            signature: ours.clone(),
            compat: true,
            expect: false,
        });
        let other_hash = hex::encode(Sha256::digest(tamper(&raw).as_bytes()));
        checks.push(Check {
            what: format!("bodySHA256 #{i}: body and hash swapped, old signature"),
            key,
            url: format!("{base}{sep}bodySHA256={other_hash}"),
            body: Body::Raw(tamper(&raw)),
            signature: ours,
            compat: true,
            expect: false,
        });
    }

    // Phase 1: the SDK signs everything; its signatures must equal ours.
    let requests: Vec<Value> = signings.iter().map(|s| s.request.clone()).collect();
    let sdk_signatures = python.run(&requests);
    let mut failures: Vec<String> = Vec::new();
    for (signing, sdk) in signings.iter().zip(&sdk_signatures) {
        if sdk.as_str() != Some(signing.ours.as_str()) {
            failures.push(format!(
                "{}: SDK signed {sdk}, we signed {:?}\n  request: {}",
                signing.what, signing.ours, signing.request
            ));
        }
    }

    // The SDK's signatures must verify on our side (and in the SDK, as a sanity check).
    for (index, key, url, body, compat) in sdk_signed {
        let Some(signature) = sdk_signatures[index].as_str() else {
            continue; // already reported above
        };
        checks.push(Check {
            what: format!("{}: SDK signature", signings[index].what),
            key,
            url,
            body,
            signature: signature.to_owned(),
            compat,
            expect: true,
        });
    }

    // Phase 2: every check through the SDK's validator and ours.
    let requests: Vec<Value> = checks.iter().map(Check::request).collect();
    let sdk_results = python.run(&requests);
    let (mut accepted, mut rejected) = (0, 0);
    for (check, sdk) in checks.iter().zip(&sdk_results) {
        // An exception in the SDK's validator is a rejection.
        let sdk_ok = sdk.as_bool().unwrap_or(false);
        let ours = check.ours();
        if sdk_ok != check.expect || ours != check.expect {
            failures.push(format!(
                "{}: expected {}, SDK said {sdk}, we said {ours}\n  request: {}",
                check.what,
                check.expect,
                check.request()
            ));
        }
        if check.expect {
            accepted += 1;
        } else {
            rejected += 1;
        }
    }

    eprintln!(
        "signature_reference: {} signatures compared, {} validations ({accepted} accepted, {rejected} rejected)",
        signings.len(),
        checks.len()
    );
    assert!(failures.is_empty(), "{} disagreement(s) with the official SDK:\n{}", failures.len(), failures.join("\n"));
}
