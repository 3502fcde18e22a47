//! Micro-benchmarks of the per-request hot path, each beside a baseline measured in the
//! same run, so the numbers read as "what our version costs over the obvious one":
//!
//! * `signature`: [`Verifier::verify`] (one key, and two keys as during a key rotation)
//!   against a single HMAC-SHA1 over the same input (`sign_fields`), the least any check
//!   must do. `verify` tries the URL with and without the default port, so expect ~2× per key.
//! * `decode_form`: our strict decoder against `form_urlencoded::parse` (lossy, borrowed
//!   where it can be) collected into owned pairs.
//! * `validate`: our validation alone, and decode + validate against what the bare axum
//!   handler does (`serde_urlencoded` straight into a struct).
//!
//! Run: `cargo bench --bench hot_paths` (add `-- <filter>` to run one group).

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use recordhook::callback::{Fields, decode_form, validate};
use recordhook::signature::{SignedBody, SigningKey, Verifier, sign_fields};
use serde::Deserialize;

/// SignalWire's documented example callback (the recording status callback example).
const EXAMPLE_BODY: &str = "AccountSid=b3877c40-da60-4998-90ad-b792e98472af&CallSid=b3877c40-da60-4998-90ad-b792e98472ca&RecordingSid=b3877c40-da60-4998-90ad-b792e984re01&RecordingUrl=https%3A%2F%2Fexample.signalwire.com%2Fapi%2Flaml%2F2010-04-01%2FAccounts%2Fb3877c40-da60-4998-90ad-b792e98472af%2FRecordings%2Fb3877c40-da60-4998-90ad-b792e984re01&RecordingStatus=completed&RecordingDuration=94&RecordingChannels=1&RecordingSource=RecordVerb";
/// The test vector's key, URL and signature for [`EXAMPLE_BODY`].
const EXAMPLE_KEY: &str = "PSK_test_signing_key";
const EXAMPLE_URL: &str = "https://example.com/webhooks/recording-status";
const EXAMPLE_SIGNATURE: &str = "RgHNh3388SoYXbtM7WYAd848xJE=";

/// A callback as `benches/run.sh` sends it: the example plus the optional fields SignalWire
/// adds, with a start time that needs `+` and `%2C` decoding.
const FULL_BODY: &str = "AccountSid=b3877c40-da60-4998-90ad-b792e98472af&CallSid=0a1b2c3d-4e5f-4a6b-8c7d-8e9f0a1b2c3d&RecordingSid=5f0e1d2c-3b4a-4968-a7b6-c5d4e3f2a1b0&RecordingUrl=https%3A%2F%2Fexample.signalwire.com%2Fapi%2Flaml%2F2010-04-01%2FAccounts%2Fb3877c40-da60-4998-90ad-b792e98472af%2FRecordings%2F5f0e1d2c-3b4a-4968-a7b6-c5d4e3f2a1b0&RecordingStatus=completed&RecordingDuration=731&RecordingChannels=2&RecordingSource=DialVerb&RecordingStartTime=Wed%2C+20+Apr+2022+23%3A45%3A25+%2B0000&ApiVersion=2010-04-01";

const BODIES: [(&str, &str); 2] = [("example", EXAMPLE_BODY), ("full", FULL_BODY)];

/// What the bare axum handler (`examples/bare_axum.rs`) parses the form into.
#[allow(dead_code)] // parsed for the cost of it, never read
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Bare {
    account_sid: String,
    call_sid: String,
    recording_sid: String,
    recording_url: String,
    recording_status: String,
    recording_duration: u64,
    recording_channels: u32,
    recording_source: String,
}

fn signature(c: &mut Criterion) {
    let key = SigningKey::new(EXAMPLE_KEY);
    let fields = decode_form(EXAMPLE_BODY.as_bytes()).expect("the example decodes");
    let raw = EXAMPLE_BODY.as_bytes();
    let one = Verifier::new(vec![key.clone()]);
    // During a rotation the matching key may be the second one; every key is tried anyway.
    let two = Verifier::new(vec![SigningKey::new("PSK_previous_signing_key"), key.clone()]);
    let body = SignedBody::Form { fields: &fields, raw };
    assert_eq!(sign_fields(&key, EXAMPLE_URL, &fields), EXAMPLE_SIGNATURE, "test vector");
    assert!(one.verify(EXAMPLE_URL, body, EXAMPLE_SIGNATURE));
    assert!(two.verify(EXAMPLE_URL, body, EXAMPLE_SIGNATURE));

    let mut g = c.benchmark_group("signature");
    g.throughput(Throughput::Elements(1));
    g.bench_function("baseline/one_hmac_sha1", |b| {
        b.iter(|| sign_fields(black_box(&key), black_box(EXAMPLE_URL), black_box(&fields)))
    });
    g.bench_function("verify/one_key", |b| {
        b.iter(|| one.verify(black_box(EXAMPLE_URL), black_box(body), black_box(EXAMPLE_SIGNATURE)))
    });
    g.bench_function("verify/two_keys", |b| {
        b.iter(|| two.verify(black_box(EXAMPLE_URL), black_box(body), black_box(EXAMPLE_SIGNATURE)))
    });
    g.bench_function("verify/one_key_wrong_signature", |b| {
        b.iter(|| one.verify(black_box(EXAMPLE_URL), black_box(body), black_box("AAAAAAAAAAAAAAAAAAAAAAAAAAA=")))
    });
    g.finish();
}

fn decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode_form");
    for (name, body) in BODIES {
        let bytes = body.as_bytes();
        assert_eq!(
            decode_form(bytes).expect("decodes"),
            form_urlencoded::parse(bytes).into_owned().collect::<Vec<_>>(),
            "both decoders agree on {name}"
        );
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_with_input(BenchmarkId::new("baseline/form_urlencoded_lossy", name), bytes, |b, bytes| {
            b.iter(|| form_urlencoded::parse(black_box(bytes)).into_owned().collect::<Vec<(String, String)>>())
        });
        g.bench_with_input(BenchmarkId::new("decode_form", name), bytes, |b, bytes| {
            b.iter(|| decode_form(black_box(bytes)))
        });
    }
    g.finish();
}

fn validation(c: &mut Criterion) {
    let mut g = c.benchmark_group("validate");
    g.throughput(Throughput::Elements(1));
    for (name, body) in BODIES {
        let bytes = body.as_bytes();
        let fields = Fields::Pairs(decode_form(bytes).expect("decodes"));
        assert!(validate(&fields).is_ok(), "{name} is valid");
        assert!(serde_urlencoded::from_bytes::<Bare>(bytes).is_ok(), "{name} parses into the bare struct");
        g.bench_with_input(BenchmarkId::new("validate", name), &fields, |b, fields| {
            b.iter(|| validate(black_box(fields)))
        });
        g.bench_with_input(BenchmarkId::new("baseline/serde_urlencoded_struct", name), bytes, |b, bytes| {
            b.iter(|| serde_urlencoded::from_bytes::<Bare>(black_box(bytes)))
        });
        g.bench_with_input(BenchmarkId::new("decode_form+validate", name), bytes, |b, bytes| {
            b.iter(|| validate(&Fields::Pairs(decode_form(black_box(bytes)).expect("decodes"))))
        });
    }
    g.finish();
}

fn config() -> Criterion {
    // Short by default so a full run takes about a minute on a small machine; criterion's
    // own flags (`--measurement-time`, `--warm-up-time`) still override these.
    Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = signature, decode, validation
}
criterion_main!(benches);
