//! Webhook signatures: checking that a callback really comes from SignalWire.
//!
//! SignalWire signs every webhook with the project's Signing Key and sends the result in
//! `X-SignalWire-Signature` (or the Twilio-compatible `X-Twilio-Signature`; the value is
//! computed the same way, only the header name differs). Three schemes are in use:
//!
//! * **Scheme B** (form POST and GET, the cXML/compatibility callbacks):
//!   `base64(HMAC-SHA1(key, URL + concat over fields sorted by name of (name + value)))`.
//! * **Scheme A** (raw JSON body): `lowercase_hex(HMAC-SHA1(key, URL + raw body))`.
//! * **`bodySHA256`**: when the URL's query carries `bodySHA256=<hex>`, the signature is
//!   Scheme B over the URL alone and `hex(SHA-256(raw body))` must equal that parameter.
//!
//! What [`Verifier::verify`] accepts is modelled on the official validator, PyPI
//! `signalwire` 2.1.1 (`signalwire.request_validator.RequestValidator`, which delegates the
//! compatibility schemes to `twilio` 6.54.0's `RequestValidator`); the integration test
//! `tests/signature_reference.rs` checks us against it. Where the SDK and this module
//! differ, it is on purpose and documented on [`Verifier::verify`].

use std::borrow::Cow;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

type HmacSha1 = Hmac<Sha1>;

/// Length of an HMAC-SHA1 tag in bytes.
const TAG_LEN: usize = 20;
/// Length of a Scheme B signature: base64 of 20 bytes, padded.
const B64_LEN: usize = 28;
/// Length of a Scheme A signature: lowercase hex of 20 bytes.
const HEX_LEN: usize = 40;
/// Name of the query parameter that switches to the bodySHA256 scheme.
const BODY_SHA256_PARAM: &str = "bodySHA256";

/// A SignalWire Signing Key. Debug/Display never reveal it (prints `SigningKey(***)`).
///
/// The HMAC key schedule is computed once here, so each verification only clones a small
/// keyed state instead of re-hashing the key. The secret itself is not kept around.
#[derive(Clone)]
pub struct SigningKey(HmacSha1);

impl SigningKey {
    /// Wraps a Signing Key as shown on SignalWire's API Credentials page (`PSK_…`).
    ///
    /// The key is used byte for byte (UTF-8): no trimming, because a key with a stray
    /// space is a different key, and silently "fixing" it would hide a configuration error.
    #[must_use]
    pub fn new(s: impl Into<String>) -> Self {
        let secret: String = s.into();
        // HMAC accepts keys of any length (longer ones are hashed first), so this cannot
        // fail; `hmac` itself relies on the same fact in its `KeyInit::new`.
        let mac = HmacSha1::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any length");
        SigningKey(mac)
    }

    /// A fresh MAC keyed with this key, ready for `update`.
    fn mac(&self) -> HmacSha1 {
        self.0.clone()
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey(***)")
    }
}

impl fmt::Display for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey(***)")
    }
}

/// What was signed, as received.
#[derive(Debug, Clone, Copy)]
pub enum SignedBody<'a> {
    /// form-urlencoded POST: the decoded fields in the order received, and the raw body
    Form {
        /// The decoded `name=value` pairs, in the order they appeared in the body
        /// (repeated names included).
        fields: &'a [(String, String)],
        /// The body bytes exactly as received (used by the bodySHA256 scheme).
        raw: &'a [u8],
    },
    /// GET: the fields are in the URL's query string; nothing is appended
    Query,
    /// JSON (or other raw) POST body
    Json {
        /// The body bytes exactly as received.
        raw: &'a [u8],
    },
}

impl<'a> SignedBody<'a> {
    /// The raw body, for the kinds that have one.
    fn raw(&self) -> Option<&'a [u8]> {
        match *self {
            SignedBody::Form { raw, .. } | SignedBody::Json { raw } => Some(raw),
            SignedBody::Query => None,
        }
    }
}

/// Checks webhook signatures against one or more Signing Keys.
///
/// Several keys are accepted because a reset key takes about a minute to become active on
/// SignalWire's side: during a rotation both the old and the new key must verify.
#[derive(Debug, Clone)]
pub struct Verifier {
    keys: Vec<SigningKey>,
}

impl Verifier {
    /// A verifier that accepts a signature made with any of `keys`.
    ///
    /// With no keys, nothing verifies.
    #[must_use]
    pub fn new(keys: Vec<SigningKey>) -> Self {
        Verifier { keys }
    }

    /// `url` is the full URL SignalWire called: scheme, host, optional port, path and query exactly as received.
    /// `signature` is the header value (`X-SignalWire-Signature` or `X-Twilio-Signature`). True if any key matches any accepted scheme/URL variant.
    ///
    /// Accepted, for each key and for both URL variants (as given, and with the scheme's
    /// default port `:443`/`:80` added when absent or removed when present):
    ///
    /// * [`SignedBody::Form`]: Scheme B over the decoded fields. Fields are sorted by
    ///   `(name, value)` in byte order (= Unicode code point order), and repeated pairs are
    ///   all kept: this is what the official validator computes (`sorted(params.items())`
    ///   over a multi-dict), so for a repeated name the values appear in sorted order, not in
    ///   the order received.
    /// * [`SignedBody::Query`]: Scheme B over the URL alone.
    /// * [`SignedBody::Json`]: Scheme A over URL + raw body. Also Scheme B over the body's
    ///   top-level fields, exactly when the official SDK would accept it: the SDK
    ///   `json.loads` a raw body that fails Scheme A and runs the compatibility check on the
    ///   result. That works for an object whose values are all strings (Scheme B over
    ///   those fields), and for a JSON value Python considers false (`{}`, `[]`, `""`,
    ///   `0`, `false`, `null`: Scheme B over the URL alone). For anything else (a number,
    ///   nested object, …) the SDK raises an exception, so we reject.
    /// * Any kind with a raw body whose URL query has `bodySHA256=<hex>` (the first
    ///   non-empty one, after percent-decoding, as Python's `parse_qs` reads it): Scheme B
    ///   over the URL alone, provided lowercase `hex(SHA-256(raw))` equals the parameter.
    ///   (The official SDK only honours this through its Twilio-compatibility entry point;
    ///   its `validate()` skips it for JSON bodies. We accept it for every body kind.)
    ///
    /// Deliberate differences from the official SDK, which re-serialises the URL through
    /// Python's `urlparse`: we never normalise the URL (an empty `?` stays, the scheme's
    /// case stays), and we only toggle the *default* port, where the SDK strips any port.
    ///
    /// Timing: every candidate is computed and compared in constant time and the results are
    /// combined without branching, so the time taken says nothing about which key, URL
    /// variant or scheme came close. Only the signature's length (public: the caller sent
    /// it) decides which schemes are tried at all.
    #[must_use = "a request whose signature does not verify must be rejected"]
    pub fn verify(&self, url: &str, body: SignedBody<'_>, signature: &str) -> bool {
        let sig = signature.as_bytes();
        // A signature of any other length cannot match either encoding, so there is
        // nothing secret to protect by computing MACs for it.
        let scheme_a = sig.len() == HEX_LEN;
        let scheme_b = sig.len() == B64_LEN;
        if !(scheme_a || scheme_b) || self.keys.is_empty() {
            return false;
        }

        // Scheme A only exists for raw (JSON) bodies: a form is signed over its fields.
        let raw_for_a = match body {
            SignedBody::Json { raw } if scheme_a => Some(raw),
            _ => None,
        };

        // Fields for Scheme B, sorted once and reused for every key and URL variant.
        // `json_owned` keeps the strings parsed out of a JSON body alive for `fields`.
        let json_owned: Option<Vec<(String, String)>>;
        let fields: Option<Vec<(&str, &str)>> = if scheme_b {
            match body {
                SignedBody::Form { fields, .. } => {
                    Some(sorted_fields(fields.iter().map(|(n, v)| (n.as_str(), v.as_str()))))
                }
                SignedBody::Query => Some(Vec::new()),
                SignedBody::Json { raw } => {
                    json_owned = json_compat_fields(raw);
                    json_owned.as_ref().map(|owned| sorted_fields(owned.iter().map(|(n, v)| (n.as_str(), v.as_str()))))
                }
            }
        } else {
            None
        };

        // bodySHA256: whether the body hash matches, when the URL asks for it. Computed
        // once; it is combined (without branching) with each URL-only MAC below.
        let body_hash_ok: Option<Choice> = match body.raw() {
            Some(raw) if scheme_b => body_sha256_matches(url, raw),
            _ => None,
        };

        let variants = url_variants(url);
        let mut ok = Choice::from(0u8);
        for key in &self.keys {
            for variant in variants.iter().flatten() {
                if let Some(raw) = raw_for_a {
                    let mut mac = key.mac();
                    variant.feed(&mut mac);
                    mac.update(raw);
                    ok |= ct_eq_opt(hex_tag(&mac.finalize().into_bytes()).as_ref(), sig);
                }
                if let Some(fields) = &fields {
                    let mut mac = key.mac();
                    variant.feed(&mut mac);
                    for (name, value) in fields {
                        mac.update(name.as_bytes());
                        mac.update(value.as_bytes());
                    }
                    ok |= ct_eq_opt(b64_tag(&mac.finalize().into_bytes()).as_ref(), sig);
                }
                if let Some(hash_ok) = body_hash_ok {
                    let mut mac = key.mac();
                    variant.feed(&mut mac);
                    ok |= ct_eq_opt(b64_tag(&mac.finalize().into_bytes()).as_ref(), sig) & hash_ok;
                }
            }
        }
        ok.into()
    }
}

/// Scheme B: `base64(HMAC-SHA1(key, url + concat of name+value over fields sorted by name))`. Used by `recordhook send` and tests.
///
/// Fields with the same name are ordered by value (see [`Verifier::verify`]), so the
/// result does not depend on the order of `fields`.
#[must_use]
pub fn sign_fields(key: &SigningKey, url: &str, fields: &[(String, String)]) -> String {
    let mut mac = key.mac();
    mac.update(url.as_bytes());
    for (name, value) in sorted_fields(fields.iter().map(|(n, v)| (n.as_str(), v.as_str()))) {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    BASE64.encode(mac.finalize().into_bytes())
}

/// Scheme A: lowercase `hex(HMAC-SHA1(key, url + raw body))`.
#[must_use]
pub fn sign_raw(key: &SigningKey, url: &str, raw: &[u8]) -> String {
    let mut mac = key.mac();
    mac.update(url.as_bytes());
    mac.update(raw);
    hex::encode(mac.finalize().into_bytes())
}

/// Sorts `(name, value)` pairs the way the official validator does: Python's
/// `sorted(params.items())` compares tuples, i.e. by name, then by value, by code point.
/// Byte order on UTF-8 is code point order, so plain `&str` ordering matches.
fn sorted_fields<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> Vec<(&'a str, &'a str)> {
    let mut sorted: Vec<(&str, &str)> = pairs.collect();
    // Equal elements are identical, so an unstable sort gives the same bytes to sign.
    sorted.sort_unstable();
    sorted
}

/// The fields the official SDK signs for a raw body that failed Scheme A: it runs
/// `json.loads` on the body and hands the result to the compatibility validator, which
/// (in twilio 6.54) does `if params: for k, v in sorted(params.items()): s += k + v`.
///
/// `None` means the SDK would not accept any Scheme B signature for this body (not JSON,
/// or a value for which that code raises).
fn json_compat_fields(raw: &[u8]) -> Option<Vec<(String, String)>> {
    use serde_json::Value;
    // Duplicate keys: serde_json keeps the last value, as Python's json does.
    let value: Value = serde_json::from_slice(raw).ok()?;
    match value {
        // `k + v` only works when every value is a string; anything else is a TypeError.
        Value::Object(map) => map
            .into_iter()
            .map(|(name, value)| match value {
                Value::String(value) => Some((name, value)),
                _ => None,
            })
            .collect(),
        // Python-falsy values skip the loop: the URL alone is signed.
        Value::Null | Value::Bool(false) => Some(Vec::new()),
        Value::Number(n) if n.as_f64() == Some(0.0) => Some(Vec::new()),
        Value::String(s) if s.is_empty() => Some(Vec::new()),
        Value::Array(a) if a.is_empty() => Some(Vec::new()),
        // A truthy non-object has no `.items()`: AttributeError in the SDK.
        _ => None,
    }
}

/// When the URL's query has a non-empty `bodySHA256` parameter, whether it equals the
/// lowercase hex SHA-256 of `raw` (in constant time). `None` when there is no such
/// parameter.
///
/// The query is read as Python's `parse_qs` reads it (the official validator uses it): the
/// part between `?` and `#`, split on `&`, percent- and `+`-decoded, blank values skipped,
/// first occurrence wins.
fn body_sha256_matches(url: &str, raw: &[u8]) -> Option<Choice> {
    let before_fragment = url.split('#').next().unwrap_or(url);
    let (_, query) = before_fragment.split_once('?')?;
    let expected: Cow<'_, str> = form_urlencoded::parse(query.as_bytes())
        .find(|(name, value)| name == BODY_SHA256_PARAM && !value.is_empty())
        .map(|(_, value)| value)?;
    let mut actual = [0u8; 64];
    // 32 bytes always fit in 64 hex digits; on the impossible error, nothing matches.
    if hex::encode_to_slice(Sha256::digest(raw), &mut actual).is_err() {
        return Some(Choice::from(0u8));
    }
    Some(actual[..].ct_eq(expected.as_bytes()))
}

/// One spelling of the URL to sign: `head + insert + tail`, so that adding or removing a
/// port needs no allocation.
#[derive(Debug, Clone, Copy)]
struct UrlVariant<'a> {
    head: &'a str,
    insert: &'static str,
    tail: &'a str,
}

impl UrlVariant<'_> {
    fn feed(&self, mac: &mut HmacSha1) {
        mac.update(self.head.as_bytes());
        mac.update(self.insert.as_bytes());
        mac.update(self.tail.as_bytes());
    }
}

/// The URL as given, and (when it is an http/https URL with a host) the same URL with the
/// scheme's default port toggled. SignalWire's backend signs some URLs with `:443`/`:80`
/// and some without, so both must be tried; nothing else about the URL is changed.
fn url_variants(url: &str) -> [Option<UrlVariant<'_>>; 2] {
    let as_given = UrlVariant { head: url, insert: "", tail: "" };
    [Some(as_given), toggled_default_port(url)]
}

fn toggled_default_port(url: &str) -> Option<UrlVariant<'_>> {
    let (scheme, rest) = url.split_once("://")?;
    let (default_port, with_port): (&str, &'static str) = if scheme.eq_ignore_ascii_case("https") {
        ("443", ":443")
    } else if scheme.eq_ignore_ascii_case("http") {
        ("80", ":80")
    } else {
        return None;
    };
    let authority_start = scheme.len() + 3;
    let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority_end = authority_start + authority_len;
    let authority = &rest[..authority_len];
    // Userinfo (`user:pass@`) may contain ':'; the port is after the host.
    let host_start = authority.rfind('@').map_or(0, |at| at + 1);
    let host_port = &authority[host_start..];
    if host_port.is_empty() {
        return None;
    }
    // An IPv6 literal (`[::1]`) has colons inside the brackets.
    let after_host = if host_port.starts_with('[') {
        host_port.find(']').map_or(host_port.len(), |close| close + 1)
    } else {
        host_port.find(':').unwrap_or(host_port.len())
    };
    let port_part = &host_port[after_host..];
    let port_colon = authority_start + host_start + after_host;
    if port_part.is_empty() {
        // No port: add the default one right after the host.
        Some(UrlVariant { head: &url[..authority_end], insert: with_port, tail: &url[authority_end..] })
    } else if port_part.strip_prefix(':') == Some(default_port) {
        // The default port: remove it.
        Some(UrlVariant { head: &url[..port_colon], insert: "", tail: &url[authority_end..] })
    } else {
        // Another port (or something malformed): signed only as given.
        None
    }
}

/// Lowercase hex of a tag, or `None` on the (impossible) size mismatch.
fn hex_tag(tag: &[u8]) -> Option<[u8; HEX_LEN]> {
    let mut out = [0u8; HEX_LEN];
    hex::encode_to_slice(tag, &mut out).ok()?;
    Some(out)
}

/// Padded standard base64 of a tag, or `None` on the (impossible) size mismatch.
fn b64_tag(tag: &[u8]) -> Option<[u8; B64_LEN]> {
    debug_assert_eq!(tag.len(), TAG_LEN);
    let mut out = [0u8; B64_LEN];
    match BASE64.encode_slice(tag, &mut out) {
        Ok(B64_LEN) => Some(out),
        _ => None,
    }
}

/// Constant-time equality of an encoded tag with the received signature bytes. Comparing
/// the encoded strings (rather than decoding the signature) matches the SDK exactly: no
/// lenient decoding (uppercase hex, non-canonical base64) can sneak in.
fn ct_eq_opt<const N: usize>(expected: Option<&[u8; N]>, sig: &[u8]) -> Choice {
    match expected {
        // `ct_eq` on slices of different lengths is false without looking at the bytes;
        // lengths are public here (N is a constant, the signature came from the caller).
        Some(expected) => expected[..].ct_eq(sig),
        None => Choice::from(0u8),
    }
}

#[cfg(test)]
mod tests {
    //! Vectors marked "SDK" were computed with the official `signalwire` 2.1.1 Python SDK
    //! (through `tests/support/sign.py`); the table ones are the test vectors published
    //! with SignalWire's and Twilio's webhook-security documentation.

    use super::*;
    use proptest::prelude::*;

    const TWILIO_DOC_URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";
    const TWILIO_DOC_SIG: &str = "RSOYDt4T1cUTdK1PDd93/VVr8B8=";

    const JSON_KEY: &str = "PSKtest1234567890abcdef";
    const JSON_URL: &str = "https://example.ngrok.io/webhook";
    const JSON_BODY: &str = r#"{"event":"call.state","params":{"call_id":"abc-123","state":"answered"}}"#;
    const JSON_SIG: &str = "c3c08c1fefaf9ee198a100d5906765a6f394bf0f";

    const SHA_URL: &str =
        "https://example.ngrok.io/webhook?bodySHA256=69f3cbfc18e386ef8236cb7008cd5a54b7fed637a8cb3373b5a1591d7f0fd5f4";
    const SHA_BODY: &str = r#"{"event":"call.state"}"#;
    const SHA_SIG: &str = "dfO9ek8mxyFtn2nMz24plPmPfIY=";

    const REC_KEY: &str = "PSK_test_signing_key";
    const REC_URL: &str = "https://example.com/webhooks/recording-status";
    const REC_URL_443: &str = "https://example.com:443/webhooks/recording-status";
    const REC_BODY: &str = "AccountSid=b3877c40-da60-4998-90ad-b792e98472af&CallSid=b3877c40-da60-4998-90ad-b792e98472ca&RecordingSid=b3877c40-da60-4998-90ad-b792e984re01&RecordingUrl=https%3A%2F%2Fexample.signalwire.com%2Fapi%2Flaml%2F2010-04-01%2FAccounts%2Fb3877c40-da60-4998-90ad-b792e98472af%2FRecordings%2Fb3877c40-da60-4998-90ad-b792e984re01&RecordingStatus=completed&RecordingDuration=94&RecordingChannels=1&RecordingSource=RecordVerb";
    const REC_SIG: &str = "RgHNh3388SoYXbtM7WYAd848xJE=";
    const REC_SIG_443: &str = "v/9byFIxyRigPwienNGG6KroYlA=";

    fn key(s: &str) -> SigningKey {
        SigningKey::new(s)
    }

    fn verifier(keys: &[&str]) -> Verifier {
        Verifier::new(keys.iter().map(|k| key(k)).collect())
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
    }

    /// The Twilio documentation's example fields, deliberately not in sorted order.
    fn twilio_doc_fields() -> Vec<(String, String)> {
        pairs(&[
            ("To", "+18005551212"),
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675309"),
            ("Digits", "1234"),
            ("From", "+14158675309"),
        ])
    }

    fn rec_fields() -> Vec<(String, String)> {
        form_urlencoded::parse(REC_BODY.as_bytes()).into_owned().collect()
    }

    fn form<'a>(fields: &'a [(String, String)], raw: &'a str) -> SignedBody<'a> {
        SignedBody::Form { fields, raw: raw.as_bytes() }
    }

    fn json(raw: &str) -> SignedBody<'_> {
        SignedBody::Json { raw: raw.as_bytes() }
    }

    #[test]
    fn vector_twilio_doc_form_sign_and_verify() {
        let fields = twilio_doc_fields();
        assert_eq!(sign_fields(&key("12345"), TWILIO_DOC_URL, &fields), TWILIO_DOC_SIG);
        assert!(verifier(&["12345"]).verify(TWILIO_DOC_URL, form(&fields, ""), TWILIO_DOC_SIG));
    }

    /// The header name (X-SignalWire-Signature or X-Twilio-Signature) does not change the
    /// scheme: the Twilio documentation's own example verifies as is.
    #[test]
    fn x_twilio_signature_uses_the_same_scheme() {
        let fields = twilio_doc_fields();
        let v = verifier(&["12345"]);
        assert!(v.verify(TWILIO_DOC_URL, form(&fields, ""), TWILIO_DOC_SIG));
        // ...and with the default port added, as the SDKs also try.
        let with_port = "https://mycompany.com:443/myapp.php?foo=1&bar=2";
        assert!(v.verify(with_port, form(&fields, ""), TWILIO_DOC_SIG));
    }

    #[test]
    fn vector_json_scheme_a_sign_and_verify() {
        assert_eq!(sign_raw(&key(JSON_KEY), JSON_URL, JSON_BODY.as_bytes()), JSON_SIG);
        assert!(verifier(&[JSON_KEY]).verify(JSON_URL, json(JSON_BODY), JSON_SIG));
        // Port variant for Scheme A too.
        assert!(verifier(&[JSON_KEY]).verify("https://example.ngrok.io:443/webhook", json(JSON_BODY), JSON_SIG));
    }

    #[test]
    fn vector_body_sha256_sign_and_verify() {
        assert_eq!(sign_fields(&key(JSON_KEY), SHA_URL, &[]), SHA_SIG);
        assert!(verifier(&[JSON_KEY]).verify(SHA_URL, json(SHA_BODY), SHA_SIG));
        // "Applies to any body kind with a raw body."
        assert!(verifier(&[JSON_KEY]).verify(SHA_URL, form(&[], SHA_BODY), SHA_SIG));
    }

    #[test]
    fn vector_recording_form_sign_and_verify() {
        let fields = rec_fields();
        assert_eq!(fields.len(), 8);
        assert_eq!(sign_fields(&key(REC_KEY), REC_URL, &fields), REC_SIG);
        assert!(verifier(&[REC_KEY]).verify(REC_URL, form(&fields, REC_BODY), REC_SIG));
    }

    #[test]
    fn vector_recording_form_signed_with_443() {
        let fields = rec_fields();
        let v = verifier(&[REC_KEY]);
        assert_eq!(sign_fields(&key(REC_KEY), REC_URL_443, &fields), REC_SIG_443);
        assert!(v.verify(REC_URL_443, form(&fields, REC_BODY), REC_SIG_443));
        // Signed with :443, received without a port...
        assert!(v.verify(REC_URL, form(&fields, REC_BODY), REC_SIG_443));
        // ...and signed without a port, received with :443.
        assert!(v.verify(REC_URL_443, form(&fields, REC_BODY), REC_SIG));
    }

    /// SDK: `http://example.com:80/cb?x=1` and `http://example.com/cb?x=1`, field A=1.
    #[test]
    fn http_default_port_is_toggled() {
        let fields = pairs(&[("A", "1")]);
        let k = key("PSK_json_fields");
        let with = "http://example.com:80/cb?x=1";
        let without = "http://example.com/cb?x=1";
        assert_eq!(sign_fields(&k, with, &fields), "BKA4LViDpMJb3OcbwwEdtRG8xgk=");
        assert_eq!(sign_fields(&k, without, &fields), "zYTbxLN8bIVzCaeygpyqfHZqJtU=");
        let v = verifier(&["PSK_json_fields"]);
        assert!(v.verify(without, form(&fields, "A=1"), "BKA4LViDpMJb3OcbwwEdtRG8xgk="));
        assert!(v.verify(with, form(&fields, "A=1"), "zYTbxLN8bIVzCaeygpyqfHZqJtU="));
    }

    #[test]
    fn only_the_scheme_default_port_is_toggled() {
        let fields = pairs(&[("A", "1")]);
        let k = key("k");
        let v = verifier(&["k"]);
        // A non-default port is never removed or replaced.
        let sig = sign_fields(&k, "https://example.com/cb", &fields);
        assert!(!v.verify("https://example.com:8443/cb", form(&fields, ""), &sig));
        // :80 is not https's default port, and :443 is not http's.
        assert!(!v.verify("https://example.com:80/cb", form(&fields, ""), &sig));
        let sig = sign_fields(&k, "http://example.com/cb", &fields);
        assert!(!v.verify("http://example.com:443/cb", form(&fields, ""), &sig));
    }

    #[test]
    fn port_toggle_handles_userinfo_ipv6_and_query_without_path() {
        let cases = [
            ("https://u:p@example.com/x", "https://u:p@example.com:443/x"),
            ("https://[::1]/x", "https://[::1]:443/x"),
            ("https://example.com?a=1", "https://example.com:443?a=1"),
            ("https://example.com", "https://example.com:443"),
            ("HTTPS://Example.COM/x", "HTTPS://Example.COM:443/x"),
        ];
        let k = key("k");
        let v = verifier(&["k"]);
        for (without, with) in cases {
            let sig = sign_fields(&k, with, &[]);
            assert!(v.verify(without, SignedBody::Query, &sig), "{without}");
            let sig = sign_fields(&k, without, &[]);
            assert!(v.verify(with, SignedBody::Query, &sig), "{with}");
        }
    }

    #[test]
    fn wrong_key_is_rejected() {
        let fields = rec_fields();
        assert!(!verifier(&["PSK_other_key"]).verify(REC_URL, form(&fields, REC_BODY), REC_SIG));
        assert!(!verifier(&["PSK_other_key"]).verify(JSON_URL, json(JSON_BODY), JSON_SIG));
        assert!(!verifier(&["PSK_other_key"]).verify(SHA_URL, json(SHA_BODY), SHA_SIG));
    }

    #[test]
    fn no_keys_verify_nothing() {
        let fields = rec_fields();
        assert!(!Verifier::new(Vec::new()).verify(REC_URL, form(&fields, REC_BODY), REC_SIG));
    }

    #[test]
    fn tampered_field_is_rejected() {
        let mut fields = rec_fields();
        for (name, value) in &mut fields {
            if name == "RecordingStatus" {
                *value = "in-progress".into();
            }
        }
        assert!(!verifier(&[REC_KEY]).verify(REC_URL, form(&fields, REC_BODY), REC_SIG));
    }

    #[test]
    fn missing_field_is_rejected() {
        let mut fields = rec_fields();
        fields.retain(|(name, _)| name != "RecordingDuration");
        assert!(!verifier(&[REC_KEY]).verify(REC_URL, form(&fields, REC_BODY), REC_SIG));
    }

    #[test]
    fn extra_field_and_tampered_url_are_rejected() {
        let mut fields = rec_fields();
        let v = verifier(&[REC_KEY]);
        assert!(!v.verify("https://example.com/webhooks/recording-status?x=1", form(&fields, ""), REC_SIG));
        assert!(!v.verify("http://example.com/webhooks/recording-status", form(&fields, ""), REC_SIG));
        fields.push(("Extra".into(), String::new()));
        // An empty extra field still changes what is signed (its name).
        assert!(!v.verify(REC_URL, form(&fields, ""), REC_SIG));
    }

    #[test]
    fn field_order_received_does_not_matter() {
        let mut fields = rec_fields();
        fields.reverse();
        assert!(verifier(&[REC_KEY]).verify(REC_URL, form(&fields, REC_BODY), REC_SIG));
    }

    /// SDK (multidict.MultiDict, as in the SDK's own tests): all pairs kept, sorted by
    /// (name, value); a dict with the duplicates collapsed signs differently.
    #[test]
    fn repeated_names_are_sorted_by_value_and_kept() {
        let k = key(JSON_KEY);
        let repeated = pairs(&[("b", "2"), ("a", "z"), ("a", "y"), ("a", "y")]);
        assert_eq!(sign_fields(&k, "https://x/", &repeated), "5otnhuunWdabMUmqrqb2FmH2Cyo=");
        let collapsed = pairs(&[("a", "y"), ("b", "2")]);
        assert_eq!(sign_fields(&k, "https://x/", &collapsed), "3YVvpGD4FcKewZ0zLQ2A2HE3FeM=");
        let v = verifier(&[JSON_KEY]);
        assert!(v.verify("https://x/", form(&repeated, ""), "5otnhuunWdabMUmqrqb2FmH2Cyo="));
        assert!(!v.verify("https://x/", form(&repeated, ""), "3YVvpGD4FcKewZ0zLQ2A2HE3FeM="));
    }

    #[test]
    fn tampered_body_sha256_is_rejected() {
        let v = verifier(&[JSON_KEY]);
        // Body changed, hash parameter unchanged.
        assert!(!v.verify(SHA_URL, json(r#"{"event":"call.ended"}"#), SHA_SIG));
        assert!(!v.verify(SHA_URL, json(""), SHA_SIG));
        // Body and hash both changed: the URL (and so the signature) no longer matches.
        let other = r#"{"event":"call.ended"}"#;
        let hash = hex::encode(Sha256::digest(other.as_bytes()));
        let url = format!("https://example.ngrok.io/webhook?bodySHA256={hash}");
        assert!(!v.verify(&url, json(other), SHA_SIG));
        // Uppercase hex in the URL: the SDK compares the strings, so neither do we accept it.
        let upper = SHA_URL.replace("69f3cbfc", "69F3CBFC");
        let sig = sign_fields(&key(JSON_KEY), &upper, &[]);
        assert!(!v.verify(&upper, json(SHA_BODY), &sig));
        // No raw body (GET): the hash cannot be checked, so the URL-only signature is only
        // good as a plain GET signature over this exact URL.
        assert!(v.verify(SHA_URL, SignedBody::Query, SHA_SIG));
    }

    #[test]
    fn body_sha256_parameter_is_read_like_parse_qs() {
        let k = key("k");
        let v = verifier(&["k"]);
        let body = "hello";
        let hash = hex::encode(Sha256::digest(body.as_bytes()));
        // Blank first value is skipped; the first non-blank one counts; fragment ignored.
        for url in [
            format!("https://h/p?a=1&bodySHA256=&bodySHA256={hash}&bodySHA256=00"),
            format!("https://h/p?bodySHA256={hash}#frag"),
        ] {
            let sig = sign_fields(&k, &url, &[]);
            assert!(v.verify(&url, json(body), &sig), "{url}");
        }
        let url = format!("https://h/p?bodySHA256=00&bodySHA256={hash}");
        let sig = sign_fields(&k, &url, &[]);
        assert!(!v.verify(&url, json(body), &sig));
        let url = format!("https://h/p#bodySHA256={hash}");
        let sig = sign_fields(&k, &url, &[]);
        assert!(!v.verify(&url, json(body), &sig));
    }

    #[test]
    fn several_keys_only_the_second_matches() {
        let fields = rec_fields();
        let v = verifier(&["PSK_old_key", REC_KEY]);
        assert!(v.verify(REC_URL, form(&fields, REC_BODY), REC_SIG));
        let v = verifier(&["PSK_old_key", JSON_KEY]);
        assert!(v.verify(JSON_URL, json(JSON_BODY), JSON_SIG));
        assert!(v.verify(SHA_URL, json(SHA_BODY), SHA_SIG));
        let v = verifier(&["PSK_old_key", "PSK_older_key"]);
        assert!(!v.verify(REC_URL, form(&fields, REC_BODY), REC_SIG));
    }

    #[test]
    fn get_signs_the_url_alone() {
        let url = "https://example.com/get?RecordingSid=re-1&RecordingStatus=completed";
        // SDK
        let sig = "E7/gjJlXWu92jYSQb4SOs/AHRnM=";
        assert_eq!(sign_fields(&key("PSK_json_fields"), url, &[]), sig);
        let v = verifier(&["PSK_json_fields"]);
        assert!(v.verify(url, SignedBody::Query, sig));
        // The query is signed exactly as received: no re-ordering or re-encoding.
        let reordered = "https://example.com/get?RecordingStatus=completed&RecordingSid=re-1";
        assert!(!v.verify(reordered, SignedBody::Query, sig));
        let tampered = "https://example.com/get?RecordingSid=re-1&RecordingStatus=absent";
        assert!(!v.verify(tampered, SignedBody::Query, sig));
    }

    /// SDK: `validate()` with a raw JSON body whose values are all strings falls back to
    /// Scheme B over those fields.
    #[test]
    fn json_body_with_string_fields_accepts_scheme_b() {
        let body = r#"{"RecordingSid":"re-1","RecordingStatus":"completed","CallSid":"ca-1"}"#;
        let sig = "j2LcskYQWGOMrU/Dl5J/Z8YgBFk=";
        let v = verifier(&["PSK_json_fields"]);
        assert!(v.verify(REC_URL, json(body), sig));
        assert!(v.verify(REC_URL_443, json(body), sig));
        let fields = pairs(&[("RecordingSid", "re-1"), ("RecordingStatus", "completed"), ("CallSid", "ca-1")]);
        assert_eq!(sign_fields(&key("PSK_json_fields"), REC_URL, &fields), sig);
        // Duplicate JSON keys: the last value wins, as in Python's json.
        let dup = r#"{"RecordingSid":"re-1","RecordingStatus":"x","CallSid":"ca-1","RecordingStatus":"completed"}"#;
        assert!(v.verify(REC_URL, json(dup), sig));
        let dup = r#"{"RecordingSid":"re-1","RecordingStatus":"completed","CallSid":"ca-1","RecordingStatus":"x"}"#;
        assert!(!v.verify(REC_URL, json(dup), sig));
    }

    /// The SDK raises TypeError on `k + v` for a non-string value, so Scheme B over the
    /// stringified value is not accepted, and neither is Scheme B skipping the field.
    #[test]
    fn json_body_with_non_string_value_rejects_scheme_b() {
        let k = key("k");
        let v = verifier(&["k"]);
        let body = r#"{"RecordingSid":"re-1","RecordingDuration":94}"#;
        let stringified = pairs(&[("RecordingSid", "re-1"), ("RecordingDuration", "94")]);
        assert!(!v.verify(REC_URL, json(body), &sign_fields(&k, REC_URL, &stringified)));
        let skipped = pairs(&[("RecordingSid", "re-1")]);
        assert!(!v.verify(REC_URL, json(body), &sign_fields(&k, REC_URL, &skipped)));
        assert!(!v.verify(REC_URL, json(body), &sign_fields(&k, REC_URL, &[])));
        // Scheme A still works for such a body.
        assert!(v.verify(REC_URL, json(body), &sign_raw(&k, REC_URL, body.as_bytes())));
    }

    /// SDK: Python-falsy JSON skips the fields (URL alone); other non-objects raise.
    #[test]
    fn json_falsy_values_sign_the_url_alone() {
        let v = verifier(&["PSK_json_fields"]);
        let sig = "zSnSi3ZfeCkzLrrq3gojU2GJh2k="; // SDK, body `null`
        for body in ["null", "false", "0", "-0.0", "\"\"", "[]", "{}", " {} "] {
            assert!(v.verify(REC_URL, json(body), sig), "{body}");
        }
        for body in ["true", "1", "\"a\"", "[1]", "[\"a\"]", "{\"a\":null}", "", "nope", "\u{feff}{}"] {
            assert!(!v.verify(REC_URL, json(body), sig), "{body}");
        }
    }

    #[test]
    fn scheme_mismatches_are_rejected() {
        let k = key(JSON_KEY);
        let v = verifier(&[JSON_KEY]);
        // Scheme A is for raw bodies only: not for a form, not for a GET.
        let fields = pairs(&[("a", "1")]);
        let hex_sig = sign_raw(&k, JSON_URL, b"a=1");
        assert!(!v.verify(JSON_URL, form(&fields, "a=1"), &hex_sig));
        let hex_sig = sign_raw(&k, JSON_URL, b"");
        assert!(!v.verify(JSON_URL, SignedBody::Query, &hex_sig));
        // Scheme A tag in base64, Scheme B tag in hex, uppercase hex: all rejected.
        let mut mac = k.mac();
        mac.update(JSON_URL.as_bytes());
        mac.update(JSON_BODY.as_bytes());
        let tag = mac.finalize().into_bytes();
        assert!(!v.verify(JSON_URL, json(JSON_BODY), &BASE64.encode(tag)));
        assert!(!v.verify(JSON_URL, json(JSON_BODY), &JSON_SIG.to_uppercase()));
        let b_hex = hex::encode(BASE64.decode(SHA_SIG).unwrap());
        assert!(!v.verify(SHA_URL, json(SHA_BODY), &b_hex));
        // Surrounding whitespace is not trimmed here (the HTTP layer already trims OWS).
        assert!(!v.verify(JSON_URL, json(JSON_BODY), &format!(" {JSON_SIG}")));
        // Unpadded base64 is not the SDK's encoding.
        assert!(!v.verify(SHA_URL, json(SHA_BODY), SHA_SIG.trim_end_matches('=')));
    }

    #[test]
    fn odd_inputs_do_not_verify_or_panic() {
        let v = verifier(&[JSON_KEY]);
        let huge = "A".repeat(1 << 20);
        for sig in ["", "=", &huge, "ÿÿÿÿÿÿÿÿÿÿÿÿÿÿ", "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0"]
        {
            for url in [
                "",
                "://",
                "https://",
                "https://:443",
                "https://@",
                "https://[",
                "http://[::1",
                "ftp://x:21/",
                "é://ü:443/",
            ] {
                assert!(!v.verify(url, json("\u{0}"), sig));
                assert!(!v.verify(url, SignedBody::Query, sig));
                assert!(!v.verify(url, SignedBody::Form { fields: &[], raw: &[0xff, 0xfe] }, sig));
                assert!(!v.verify(url, SignedBody::Json { raw: &[0xff, b'{'] }, sig));
            }
        }
        // Empty URL and body still sign deterministically.
        assert!(v.verify("", SignedBody::Query, &sign_fields(&key(JSON_KEY), "", &[])));
        assert!(v.verify("", json(""), &sign_raw(&key(JSON_KEY), "", b"")));
    }

    #[test]
    fn key_is_never_printed() {
        let k = key("PSK_super_secret");
        assert_eq!(format!("{k:?}"), "SigningKey(***)");
        assert_eq!(format!("{k}"), "SigningKey(***)");
        let v = Verifier::new(vec![k]);
        let shown = format!("{v:?} {v:#?}");
        assert!(!shown.contains("super_secret"), "{shown}");
        assert!(shown.contains("SigningKey(***)"), "{shown}");
    }

    fn url_strategy() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "(https?|HTTPS|ftp|)(://)?([a-z0-9.@:\\[\\]-]{0,20})(:[0-9]{0,6})?(/[a-z0-9%/._~-]{0,20})?(\\?[a-zA-Z0-9=&%+]{0,30})?(#.{0,5})?",
        ]
    }

    fn signature_strategy() -> impl Strategy<Value = String> {
        prop_oneof![any::<String>(), "[A-Za-z0-9+/=]{28}", "[0-9a-f]{40}", "[ -~]{0,100}",]
    }

    fn fields_strategy() -> impl Strategy<Value = Vec<(String, String)>> {
        prop::collection::vec((any::<String>(), any::<String>()), 0..12)
    }

    proptest! {
        #[test]
        fn arbitrary_inputs_never_panic(
            url in url_strategy(),
            raw in prop::collection::vec(any::<u8>(), 0..512),
            fields in fields_strategy(),
            sig in signature_strategy(),
            use_body_sha in any::<bool>(),
        ) {
            let v = verifier(&["k1", "k2"]);
            let url = if use_body_sha { format!("{url}?bodySHA256={}", hex::encode(&raw)) } else { url };
            let _ = v.verify(&url, SignedBody::Form { fields: &fields, raw: &raw }, &sig);
            let _ = v.verify(&url, SignedBody::Query, &sig);
            let _ = v.verify(&url, SignedBody::Json { raw: &raw }, &sig);
            let _ = sign_raw(&key("k1"), &url, &raw);
            let _ = sign_fields(&key("k1"), &url, &fields);
        }

        #[test]
        fn sign_fields_always_verifies(
            url in url_strategy(),
            fields in fields_strategy(),
            k in any::<String>(),
        ) {
            let sig = sign_fields(&key(&k), &url, &fields);
            let v = verifier(&["PSK_other", &k]);
            let body = SignedBody::Form { fields: &fields, raw: b"" };
            prop_assert!(v.verify(&url, body, &sig));
            // The received order of the fields does not matter.
            let mut reversed = fields.clone();
            reversed.reverse();
            let body = SignedBody::Form { fields: &reversed, raw: b"" };
            prop_assert!(v.verify(&url, body, &sig));
            if fields.is_empty() {
                prop_assert!(v.verify(&url, SignedBody::Query, &sig));
            }
        }

        #[test]
        fn sign_raw_always_verifies(
            url in url_strategy(),
            raw in prop::collection::vec(any::<u8>(), 0..512),
            k in any::<String>(),
        ) {
            let sig = sign_raw(&key(&k), &url, &raw);
            let body = SignedBody::Json { raw: &raw };
            prop_assert!(verifier(&[&k]).verify(&url, body, &sig));
        }

        #[test]
        fn default_port_variant_always_verifies(
            host in "[a-z][a-z0-9.-]{0,15}",
            https in any::<bool>(),
            rest in "(/[a-z0-9%/._~-]{0,20})?(\\?[a-zA-Z0-9=&%+]{0,30})?",
            fields in fields_strategy(),
        ) {
            let (scheme, port) = if https { ("https", "443") } else { ("http", "80") };
            let without = format!("{scheme}://{host}{rest}");
            let with = format!("{scheme}://{host}:{port}{rest}");
            let k = key("k");
            let v = verifier(&["k"]);
            let body = SignedBody::Form { fields: &fields, raw: b"" };
            prop_assert!(v.verify(&without, body, &sign_fields(&k, &with, &fields)));
            prop_assert!(v.verify(&with, body, &sign_fields(&k, &without, &fields)));
        }
    }
}
