//! Writes correctly signed, distinct form callbacks for `benches/run.sh`, one request per
//! line: `<X-SignalWire-Signature><TAB><form body>`.
//!
//! wrk's Lua cannot compute HMAC-SHA1 cheaply, so every request is signed here, ahead of
//! the run, for the exact URL wrk will call (recordhook checks the signature over the URL
//! it sees: `http://<Host header><path>`). Every line carries its own `RecordingSid`, so
//! each request is a new event for the store rather than a cheap duplicate.
//!
//! The SIDs come from a seeded generator, so the same arguments always give the same file.
//!
//! Usage:
//! `cargo run --release --example gen_callbacks -- --url http://127.0.0.1:18082/recording-status \
//!  --key PSK_bench_key --count 100000 --out /tmp/callbacks.tsv [--seed 1]`

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use clap::Parser;
use recordhook::signature::{SigningKey, sign_fields};

/// Command line of the generator.
#[derive(Debug, Parser)]
struct Args {
    /// The URL the requests will be sent to, exactly as the load generator calls it.
    #[arg(long)]
    url: String,
    /// The Signing Key the receiver trusts.
    #[arg(long, env = "SIGNALWIRE_SIGNING_KEY", hide_env_values = true)]
    key: String,
    /// How many requests (lines) to write.
    #[arg(long)]
    count: u64,
    /// Output file.
    #[arg(long)]
    out: PathBuf,
    /// Seed for the SIDs: two files with different seeds share no RecordingSid.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// SplitMix64: a tiny, well-mixed deterministic generator; good enough for unique-looking
/// identifiers (this is test data, not anything secret).
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A version-4-shaped UUID, as SignalWire uses for every SID.
    fn uuid(&mut self) -> String {
        let (a, b) = (self.next(), self.next());
        format!(
            "{:08x}-{:04x}-4{:03x}-{:x}{:03x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0x0fff,
            8 | (b >> 62),
            (b >> 48) & 0x0fff,
            b & 0xffff_ffff_ffff
        )
    }
}

/// SignalWire's recording sources (REST model spelling).
const SOURCES: [&str; 5] = ["RecordVerb", "DialVerb", "Conference", "OutBoundApi", "StartCallRecordingApi"];

/// One `completed` callback, with the field values SignalWire sends.
fn callback(rng: &mut SplitMix64, account_sid: &str, i: u64) -> Vec<(String, String)> {
    let call_sid = rng.uuid();
    let recording_sid = rng.uuid();
    let r = rng.next();
    let duration = 1 + r % 1800;
    let channels = 1 + (r >> 16) % 2;
    let source = SOURCES[((r >> 24) % SOURCES.len() as u64) as usize];
    // A plausible RFC 2822 start time (Twilio's format), spread over one day.
    let seconds = i % 86_400;
    let start = format!("Wed, 20 Apr 2022 {:02}:{:02}:{:02} +0000", seconds / 3600, seconds / 60 % 60, seconds % 60);
    let url =
        format!("https://example.signalwire.com/api/laml/2010-04-01/Accounts/{account_sid}/Recordings/{recording_sid}");
    // The order of SignalWire's documented example; the signature does not depend on it.
    vec![
        ("AccountSid".into(), account_sid.into()),
        ("CallSid".into(), call_sid),
        ("RecordingSid".into(), recording_sid),
        ("RecordingUrl".into(), url),
        ("RecordingStatus".into(), "completed".into()),
        ("RecordingDuration".into(), duration.to_string()),
        ("RecordingChannels".into(), channels.to_string()),
        ("RecordingSource".into(), source.into()),
        ("RecordingStartTime".into(), start),
        ("ApiVersion".into(), "2010-04-01".into()),
    ]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let key = SigningKey::new(args.key);
    let mut rng = SplitMix64(args.seed);
    let account_sid = rng.uuid();
    let mut out = BufWriter::with_capacity(1 << 20, File::create(&args.out)?);
    for i in 0..args.count {
        let fields = callback(&mut rng, &account_sid, i);
        let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(fields.iter()).finish();
        let signature = sign_fields(&key, &args.url, &fields);
        writeln!(out, "{signature}\t{body}")?;
    }
    out.flush()?;
    Ok(())
}
