//! The seed's handlers (`archive`, `sms`, `email`) against real protocol servers: a
//! SignalWire REST stand-in, an S3-compatible server (moto) and an SMTP server (aiosmtpd),
//! and local directories for `file://`.

#[path = "../shared/signalwire_stub.rs"]
mod signalwire_stub;

mod support;

mod archive;
mod email;
mod sms;
