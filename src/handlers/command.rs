//! `command`: runs a program with the event's JSON on stdin and its fields in the
//! environment.
//!
//! One attempt is one run. The child inherits the service's environment, plus one variable
//! per event field in upper snake case (`RecordingSid` → `RECORDING_SID`), plus
//! `RECORDHOOK_EVENT_ID`, plus the configured `env` on top. Its output is captured, keeping
//! only the last few KiB of each stream. If the attempt is abandoned (the dispatcher drops it
//! when `timeout` passes), the child and, on Unix, the rest of its process group are killed.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::{Attempt, BuildError, DeliveryError, Handler};
use crate::template::{Context, Template};

/// Options of a `command` handler.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandOptions {
    /// The program to run: a name looked up in `PATH`, or a path (best absolute).
    pub program: String,
    /// Arguments passed to the program (no shell is involved). Each is a template over the
    /// event's fields, `event_id` and `format` (`wav`): `["--sid", "{{ RecordingSid }}"]`.
    #[serde(default)]
    pub args: Vec<String>,
    /// Extra environment variables, name → value, set on top of the event's fields.
    /// Values are never logged.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The directory the program runs in; default: the service's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<PathBuf>,
}

impl fmt::Debug for CommandOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let env: BTreeMap<&str, &str> = self.env.keys().map(|k| (k.as_str(), "<redacted>")).collect();
        f.debug_struct("CommandOptions")
            .field("program", &self.program)
            .field("args", &self.args)
            .field("env", &env)
            .field("working_dir", &self.working_dir)
            .finish()
    }
}

/// The variable carrying our event id.
const EVENT_ID_VAR: &str = "RECORDHOOK_EVENT_ID";

/// How much of each output stream is kept (the end of it).
const OUTPUT_TAIL_BYTES: usize = 4096;

/// How much of the kept stderr goes into an error message.
const MESSAGE_TAIL_BYTES: usize = 1000;

/// How long output is still read once the program has exited (a background process it
/// left behind may hold the pipes open).
const OUTPUT_GRACE: Duration = Duration::from_secs(1);

impl CommandOptions {
    pub(super) fn build(&self, name: &str) -> Result<Arc<dyn Handler>, BuildError> {
        let err = |option: &str, message: &str| BuildError {
            handler: name.to_owned(),
            option: option.to_owned(),
            message: message.to_owned(),
        };
        if self.program.trim().is_empty() {
            return Err(err("program", "must not be empty"));
        }
        if self.program.contains('\0') {
            return Err(err("program", "must not contain a NUL character"));
        }
        if self.args.iter().any(|a| a.contains('\0')) {
            return Err(err("args", "must not contain a NUL character"));
        }
        let args = self
            .args
            .iter()
            .enumerate()
            .map(|(i, a)| Template::parse(a).map_err(|m| err("args", &format!("argument {i}: {m}"))))
            .collect::<Result<Vec<_>, _>>()?;
        for (key, value) in &self.env {
            let option = format!("env.{key}");
            if key.is_empty() || key.contains('=') || key.contains('\0') {
                return Err(err(&option, "not a valid variable name (empty, or has `=` or NUL)"));
            }
            if value.contains('\0') {
                return Err(err(&option, "value must not contain a NUL character"));
            }
        }
        if let Some(dir) = &self.working_dir
            && dir.as_os_str().is_empty()
        {
            return Err(err("working_dir", "must not be empty (leave it out instead)"));
        }
        Ok(Arc::new(CommandHandler { name: name.to_owned(), options: self.clone(), args }))
    }
}

struct CommandHandler {
    name: String,
    options: CommandOptions,
    /// `options.args`, compiled.
    args: Vec<Template>,
}

#[async_trait]
impl Handler for CommandHandler {
    async fn deliver(&self, a: Attempt<'_>) -> Result<(), DeliveryError> {
        let o = &self.options;
        let fields: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&a.event.json)
            .map_err(|e| DeliveryError::permanent(format!("stored event is not a JSON object: {e}")))?;

        let context = Context::new(a.event, "wav");
        let args = self
            .args
            .iter()
            .map(|t| t.render(&context).map_err(|m| DeliveryError::permanent(format!("args: {m}"))))
            .collect::<Result<Vec<_>, _>>()?;
        let mut cmd = tokio::process::Command::new(&o.program);
        cmd.args(&args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
        if let Some(dir) = &o.working_dir {
            cmd.current_dir(dir);
        }
        for (key, value) in &fields {
            if let Some((name, value)) = event_var(key, value) {
                cmd.env(name, value);
            }
        }
        cmd.env(EVENT_ID_VAR, &a.event.id);
        cmd.envs(&o.env);
        // Its own process group, so an abandoned attempt can take its children down too.
        #[cfg(unix)]
        cmd.process_group(0);

        let mut child = cmd.spawn().map_err(|e| self.spawn_error(&e))?;
        let mut group = GroupKiller(child.id());

        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let mut out = Tail::default();
        let mut err = Tail::default();
        let status = {
            let io = async {
                tokio::join!(feed(stdin, a.event.json.as_bytes()), pump(stdout, &mut out), pump(stderr, &mut err),)
            };
            tokio::pin!(io);
            let exited = child.wait();
            tokio::pin!(exited);
            let mut io_done = false;
            let status = loop {
                tokio::select! {
                    status = &mut exited => break status,
                    _ = &mut io, if !io_done => io_done = true,
                }
            };
            if !io_done {
                let _ = tokio::time::timeout(OUTPUT_GRACE, &mut io).await;
            }
            status
        };
        // Reaped: the group is no longer ours to kill (what it left behind may be meant to stay).
        group.0 = None;

        let status =
            status.map_err(|e| DeliveryError::retryable(format!("waiting for `{}` failed: {e}", o.program)))?;
        let stdout = out.text(OUTPUT_TAIL_BYTES);
        let stderr = err.text(OUTPUT_TAIL_BYTES);
        if status.success() {
            tracing::debug!(
                handler = %self.name,
                event_id = %a.event.id,
                %stdout,
                %stderr,
                "command succeeded"
            );
            return Ok(());
        }

        let mut message = format!("`{}` {}", o.program, describe(status));
        let (label, tail) = if !err.is_empty() { ("stderr", &err) } else { ("stdout", &out) };
        if !tail.is_empty() {
            message.push_str(&format!("; {label}: {}", tail.text(MESSAGE_TAIL_BYTES)));
        }
        tracing::debug!(handler = %self.name, event_id = %a.event.id, %stdout, %stderr, "command failed");
        Err(DeliveryError::retryable(message))
    }
}

impl CommandHandler {
    /// Classifies a failure to start the program.
    fn spawn_error(&self, e: &io::Error) -> DeliveryError {
        let o = &self.options;
        if let Some(dir) = &o.working_dir
            && !dir.is_dir()
        {
            return DeliveryError::permanent(format!("working_dir {} is not a directory: {e}", dir.display()));
        }
        // ENOEXEC has no `ErrorKind`; it is 8 on Linux, macOS and the BSDs.
        let exec_format = cfg!(unix) && e.raw_os_error() == Some(8);
        match e.kind() {
            io::ErrorKind::NotFound => DeliveryError::permanent(format!("program `{}` not found: {e}", o.program)),
            io::ErrorKind::PermissionDenied => {
                DeliveryError::permanent(format!("program `{}` cannot be run (not executable?): {e}", o.program))
            }
            io::ErrorKind::NotADirectory | io::ErrorKind::InvalidInput => {
                DeliveryError::permanent(format!("program `{}` cannot be run: {e}", o.program))
            }
            _ if exec_format => DeliveryError::permanent(format!(
                "program `{}` is not a valid executable (a script needs a `#!` line): {e}",
                o.program
            )),
            // Out of processes, memory or file descriptors, text file busy: all may pass.
            _ => DeliveryError::retryable(format!("could not start `{}`: {e}", o.program)),
        }
    }
}

/// Kills the child's process group when an attempt is abandoned before the child was reaped.
///
/// `kill_on_drop` only reaches the child itself; a shell script's own children would live
/// on. Unsafe code is forbidden in this crate and no signal crate is a dependency, so the
/// POSIX shell's `kill` does it; if that fails, `kill_on_drop` still kills the child.
struct GroupKiller(Option<u32>);

impl Drop for GroupKiller {
    fn drop(&mut self) {
        #[cfg(unix)]
        if let Some(pgid) = self.0.take() {
            let _ = std::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(format!("kill -s KILL -- -{pgid}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Writes the event to the child's stdin, then closes it. A child that exits without
/// reading (a broken pipe) is not an error.
async fn feed(stdin: Option<tokio::process::ChildStdin>, data: &[u8]) {
    if let Some(mut stdin) = stdin
        && stdin.write_all(data).await.is_ok()
    {
        let _ = stdin.shutdown().await;
    }
}

/// Reads a stream to its end, keeping its tail.
async fn pump(stream: Option<impl AsyncRead + Unpin>, tail: &mut Tail) {
    let Some(mut stream) = stream else { return };
    let mut buf = vec![0u8; 8192];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => tail.push(&buf[..n]),
        }
    }
}

/// The last [`OUTPUT_TAIL_BYTES`] of an output stream.
#[derive(Default)]
struct Tail {
    bytes: Vec<u8>,
    truncated: bool,
}

impl Tail {
    fn push(&mut self, chunk: &[u8]) {
        self.bytes.extend_from_slice(chunk);
        if self.bytes.len() > OUTPUT_TAIL_BYTES {
            let excess = self.bytes.len() - OUTPUT_TAIL_BYTES;
            self.bytes.drain(..excess);
            self.truncated = true;
        }
    }

    fn is_empty(&self) -> bool {
        self.bytes.iter().all(u8::is_ascii_whitespace)
    }

    /// The end of the output as one line of at most about `max` bytes: lines joined with
    /// ` | `, lossy UTF-8, `…` in front when something was cut.
    fn text(&self, max: usize) -> String {
        let start = self.bytes.len().saturating_sub(max);
        let text = String::from_utf8_lossy(&self.bytes[start..]);
        let joined = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" | ");
        let mut line: String = joined.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
        let mut cut = self.truncated || start > 0;
        if line.len() > max {
            let mut from = line.len() - max;
            while !line.is_char_boundary(from) {
                from += 1;
            }
            line.drain(..from);
            cut = true;
        }
        if cut { format!("…{line}") } else { line }
    }
}

/// `exited with status 3`, `was killed by signal 9 (SIGKILL)`.
fn describe(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exited with status {code}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            let name = match signal {
                1 => " (SIGHUP)",
                2 => " (SIGINT)",
                6 => " (SIGABRT)",
                9 => " (SIGKILL)",
                11 => " (SIGSEGV)",
                13 => " (SIGPIPE)",
                15 => " (SIGTERM)",
                _ => "",
            };
            return format!("was killed by signal {signal}{name}");
        }
    }
    format!("ended abnormally ({status})")
}

/// The environment variable for one event field, or `None` when the field cannot or must
/// not become one.
fn event_var(key: &str, value: &serde_json::Value) -> Option<(String, String)> {
    let name = env_name(key)?;
    if is_protected(&name) {
        tracing::debug!(field = key, variable = %name, "event field not exported: reserved name");
        return None;
    }
    let value = match value {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => n.to_string(),
        other => other.to_string(),
    };
    if value.contains('\0') {
        return None;
    }
    Some((name, value))
}

/// `RecordingSid` → `RECORDING_SID`, `ApiVersion` → `API_VERSION`, `SIPCallId` →
/// `SIP_CALL_ID`, `X-Custom.header` → `X_CUSTOM_HEADER`; a leading digit gets a `_` in front.
fn env_name(key: &str) -> Option<String> {
    let chars: Vec<char> = key.chars().collect();
    let mut name = String::with_capacity(key.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if !c.is_ascii_alphanumeric() {
            name.push('_');
            continue;
        }
        if c.is_ascii_uppercase() && i > 0 {
            let prev = chars[i - 1];
            let next_is_lower = chars.get(i + 1).is_some_and(char::is_ascii_lowercase);
            if prev.is_ascii_lowercase() || prev.is_ascii_digit() || (prev.is_ascii_uppercase() && next_is_lower) {
                name.push('_');
            }
        }
        name.push(c.to_ascii_uppercase());
    }
    if name.is_empty() {
        return None;
    }
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        name.insert(0, '_');
    }
    Some(name)
}

/// Names an event field may never set: they change how the program or its shell runs, or
/// belong to us. (The configured `env` may set them.)
fn is_protected(name: &str) -> bool {
    const EXACT: [&str; 13] = [
        "PATH",
        "HOME",
        "SHELL",
        "USER",
        "LOGNAME",
        "IFS",
        "ENV",
        "BASH_ENV",
        "CDPATH",
        "PS4",
        "SHELLOPTS",
        "BASHOPTS",
        "PWD",
    ];
    EXACT.contains(&name) || ["LD_", "DYLD_", "RECORDHOOK_", "BASH_FUNC_"].iter().any(|p| name.starts_with(p))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::event::StoredEvent;
    use crate::handlers::{HandlerConfig, HandlerKind};

    const EVENT_ID: &str = "01963a2e-7c1d-7f3a-9b5e-2f4d6c8a0b1e";

    fn event() -> StoredEvent {
        let json = r#"{"AccountSid":"b3877c40-da60-4998-90ad-b792e98472af","ApiVersion":"2010-04-01","CallSid":"4ac6f7a4-4a15-4b1f-8d35-5e2c3f0f6d53","ErrorCode":"0","RecordingChannels":2,"RecordingDuration":17,"RecordingSid":"e1b3c1b4-5b8a-4b2b-9a6e-6f1d2c3b4a59","RecordingSource":"DialVerb","RecordingStartTime":"Tue, 14 Apr 2026 09:12:44 +0000","RecordingStatus":"completed","RecordingTrack":"both","RecordingUrl":"https://example.signalwire.com/api/laml/2010-04-01/Accounts/b3877c40-da60-4998-90ad-b792e98472af/Recordings/e1b3c1b4-5b8a-4b2b-9a6e-6f1d2c3b4a59","SIPCallId":"abc@10.0.0.1","X-Tag.name":"vip","Meta":{"queue":"sales","priority":1},"LD_PRELOAD":"/tmp/evil.so"}"#;
        StoredEvent::from_json(EVENT_ID.to_owned(), json.to_owned()).expect("valid event")
    }

    fn options(program: &str, args: &[&str]) -> CommandOptions {
        CommandOptions {
            program: program.to_owned(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            env: BTreeMap::new(),
            working_dir: None,
        }
    }

    /// A shell script run as `/bin/sh <script>` (writing a file and exec'ing it directly
    /// races with other tests' forks: "text file busy").
    fn script(dir: &Path, body: &str) -> CommandOptions {
        let path = dir.join("handler.sh");
        std::fs::write(&path, body).unwrap();
        options("/bin/sh", &[path.to_str().unwrap()])
    }

    async fn deliver(options: &CommandOptions) -> Result<(), DeliveryError> {
        let handler = options.build("run").expect("handler builds");
        let event = event();
        handler.deliver(Attempt { event: &event, delivery_id: 1, attempt: 1 }).await
    }

    /// Whether a process is gone (no longer exists, or is a zombie waiting to be reaped).
    fn is_gone(pid: u32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            // `pid (comm) S ...`: the state follows the last `)`.
            Ok(stat) => stat.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'),
        }
    }

    async fn wait_gone(pid: u32) -> bool {
        for _ in 0..100 {
            if is_gone(pid) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    fn read_pid(path: &Path) -> Option<u32> {
        std::fs::read_to_string(path).ok()?.trim().parse().ok()
    }

    #[tokio::test]
    async fn receives_the_json_on_stdin_and_the_fields_in_its_environment() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = script(dir.path(), "cat > stdin.json\nenv > env.txt\npwd > pwd.txt\n");
        o.env.insert("GREETING".into(), "hello world".into());
        o.env.insert("RECORDING_SOURCE".into(), "overridden".into());
        o.working_dir = Some(dir.path().to_owned());
        deliver(&o).await.expect("delivered");

        let stdin = std::fs::read_to_string(dir.path().join("stdin.json")).unwrap();
        assert_eq!(stdin, event().json);
        let env = std::fs::read_to_string(dir.path().join("env.txt")).unwrap();
        let vars: BTreeMap<&str, &str> = env.lines().filter_map(|l| l.split_once('=')).collect();
        let expect = [
            ("RECORDING_SID", "e1b3c1b4-5b8a-4b2b-9a6e-6f1d2c3b4a59"),
            ("ACCOUNT_SID", "b3877c40-da60-4998-90ad-b792e98472af"),
            ("API_VERSION", "2010-04-01"),
            ("RECORDING_STATUS", "completed"),
            ("RECORDING_DURATION", "17"),
            ("RECORDING_CHANNELS", "2"),
            ("RECORDING_START_TIME", "Tue, 14 Apr 2026 09:12:44 +0000"),
            ("ERROR_CODE", "0"),
            ("SIP_CALL_ID", "abc@10.0.0.1"),
            ("X_TAG_NAME", "vip"),
            ("META", r#"{"priority":1,"queue":"sales"}"#),
            ("RECORDHOOK_EVENT_ID", EVENT_ID),
            ("GREETING", "hello world"),
            ("RECORDING_SOURCE", "overridden"),
        ];
        for (name, value) in expect {
            assert_eq!(vars.get(name).copied(), Some(value), "{name} in\n{env}");
        }
        assert!(!vars.contains_key("LD_PRELOAD"), "an event field set LD_PRELOAD");
        // The service's own environment is inherited.
        assert_eq!(vars.get("PATH").copied(), std::env::var("PATH").ok().as_deref());
        let pwd = std::fs::read_to_string(dir.path().join("pwd.txt")).unwrap();
        assert_eq!(Path::new(pwd.trim()).canonicalize().unwrap(), dir.path().canonicalize().unwrap());
    }

    #[tokio::test]
    async fn non_zero_exit_is_retryable_and_quotes_stderr() {
        let dir = tempfile::tempdir().unwrap();
        let o = script(dir.path(), "echo 'uploading…'\necho 'upload failed: bucket not found' >&2\nexit 3\n");
        match deliver(&o).await.unwrap_err() {
            DeliveryError::Retryable { message, retry_after } => {
                assert_eq!(retry_after, None);
                assert!(message.contains("exited with status 3"), "{message}");
                assert!(message.contains("upload failed: bucket not found"), "{message}");
                assert!(!message.contains("uploading"), "{message}");
            }
            other => panic!("expected retryable, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn killed_by_a_signal_is_retryable() {
        let dir = tempfile::tempdir().unwrap();
        let o = script(dir.path(), "kill -s TERM $$\nsleep 5\n");
        match deliver(&o).await.unwrap_err() {
            DeliveryError::Retryable { message, .. } => {
                assert!(message.contains("signal 15"), "{message}");
            }
            other => panic!("expected retryable, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn chatty_output_is_kept_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let o = script(
            dir.path(),
            "yes 'noise noise noise' | head -c 2000000\nyes 'more noise' | head -c 2000000 >&2\necho 'the real reason' >&2\nexit 1\n",
        );
        match deliver(&o).await.unwrap_err() {
            DeliveryError::Retryable { message, .. } => {
                assert!(message.ends_with("the real reason"), "{message}");
                assert!(message.len() < 1200, "message is {} bytes", message.len());
            }
            other => panic!("expected retryable, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_program_that_ignores_stdin_succeeds() {
        deliver(&options("true", &[])).await.expect("delivered");
    }

    #[tokio::test]
    async fn missing_program_is_permanent() {
        for program in ["/nonexistent/recordhook-test-program", "recordhook-no-such-program"] {
            match deliver(&options(program, &[])).await.unwrap_err() {
                DeliveryError::Permanent { message } => {
                    assert!(message.contains("not found"), "{message}");
                    assert!(message.contains(program), "{message}");
                }
                other => panic!("expected permanent, got {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn non_executable_program_is_permanent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("not-executable.sh");
        std::fs::write(&path, "#!/bin/sh\nexit 0\n").unwrap();
        let err = deliver(&options(path.to_str().unwrap(), &[])).await.unwrap_err();
        assert!(matches!(err, DeliveryError::Permanent { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn missing_working_dir_is_permanent() {
        let mut o = options("true", &[]);
        o.working_dir = Some("/nonexistent/recordhook-dir".into());
        match deliver(&o).await.unwrap_err() {
            DeliveryError::Permanent { message } => {
                assert!(message.contains("working_dir"), "{message}");
            }
            other => panic!("expected permanent, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn an_abandoned_attempt_kills_the_program() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let o = options("/bin/sh", &["-c", &format!("echo $$ > '{}'; exec sleep 30", pid_file.display())]);
        let handler = o.build("run").unwrap();
        let event = event();
        let started = std::time::Instant::now();
        let outcome = tokio::time::timeout(
            Duration::from_millis(100),
            handler.deliver(Attempt { event: &event, delivery_id: 1, attempt: 1 }),
        )
        .await;
        assert!(outcome.is_err(), "the program finished early: {outcome:?}");
        // The future is dropped; `sh` exec'd `sleep`, so the pid is sleep's.
        let pid = read_pid(&pid_file).expect("the program wrote its pid within 100 ms");
        assert!(wait_gone(pid).await, "process {pid} still runs");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[tokio::test]
    async fn an_abandoned_attempt_kills_what_the_program_started() {
        let dir = tempfile::tempdir().unwrap();
        let o = script(dir.path(), "echo $$ > parent.pid\nsleep 30 &\necho $! > child.pid\nwait\n");
        let o = CommandOptions { working_dir: Some(dir.path().to_owned()), ..o };
        let handler = o.build("run").unwrap();
        let event = event();
        // Boxed, so that `drop` below really drops the attempt.
        let mut deliver = Box::pin(handler.deliver(Attempt { event: &event, delivery_id: 1, attempt: 1 }));
        let child_pid = dir.path().join("child.pid");
        // Run the attempt until the script has started its own child, then abandon it.
        let started = async {
            while read_pid(&child_pid).is_none() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::select! {
            outcome = &mut deliver => panic!("the script finished early: {outcome:?}"),
            _ = tokio::time::timeout(Duration::from_secs(10), started) => {}
        }
        drop(deliver);
        let parent = read_pid(&dir.path().join("parent.pid")).expect("parent pid");
        let child = read_pid(&child_pid).expect("child pid");
        assert!(wait_gone(parent).await, "script {parent} still runs");
        assert!(wait_gone(child).await, "its child {child} still runs");
    }

    #[test]
    fn env_names_are_upper_snake_case() {
        let cases = [
            ("RecordingSid", "RECORDING_SID"),
            ("AccountSid", "ACCOUNT_SID"),
            ("ApiVersion", "API_VERSION"),
            ("RecordingStartTime", "RECORDING_START_TIME"),
            ("SIPCallId", "SIP_CALL_ID"),
            ("CallSID", "CALL_SID"),
            ("Sip2Header", "SIP2_HEADER"),
            ("X-Custom.header", "X_CUSTOM_HEADER"),
            ("snake_case_field", "SNAKE_CASE_FIELD"),
            ("Café", "CAF_"),
            ("2ndLeg", "_2ND_LEG"),
        ];
        for (key, name) in cases {
            assert_eq!(env_name(key).as_deref(), Some(name), "{key}");
        }
        assert_eq!(env_name(""), None);
    }

    #[test]
    fn event_values_become_text() {
        use serde_json::json;
        let v = |value| event_var("Field", &value).map(|(_, v)| v);
        assert_eq!(v(json!("text")).as_deref(), Some("text"));
        assert_eq!(v(json!(17)).as_deref(), Some("17"));
        assert_eq!(v(json!(1.5)).as_deref(), Some("1.5"));
        assert_eq!(v(json!(true)).as_deref(), Some("true"));
        assert_eq!(v(json!(null)).as_deref(), Some("null"));
        assert_eq!(v(json!(["a", 1])).as_deref(), Some(r#"["a",1]"#));
        assert_eq!(v(json!("nul\0byte")), None);
        assert_eq!(event_var("Path", &json!("/evil")), None);
        assert_eq!(event_var("RecordhookEventId", &json!("forged")), None);
    }

    #[tokio::test]
    async fn args_are_templates_over_the_event() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = options(
            "/bin/sh",
            &[
                "-c",
                "printf '%s|%s' \"$1\" \"$2\" > args.txt",
                "sh",
                "{{ RecordingSid }}",
                "{{ event_id }}.{{ format }}",
            ],
        );
        o.working_dir = Some(dir.path().to_owned());
        deliver(&o).await.expect("delivered");
        let got = std::fs::read_to_string(dir.path().join("args.txt")).unwrap();
        assert_eq!(got, format!("e1b3c1b4-5b8a-4b2b-9a6e-6f1d2c3b4a59|{EVENT_ID}.wav"));

        let Err(e) = options("true", &["{{ RecordingSd }}"]).build("run") else { panic!("built") };
        assert_eq!(e.option, "args");
        assert!(e.message.contains("`RecordingSd`"), "{e}");
    }

    #[test]
    fn bad_options_are_build_errors_naming_the_option() {
        let mut bad_env = options("true", &[]);
        bad_env.env.insert("A=B".into(), "x".into());
        let cases = [
            (options("", &[]), "program"),
            (options("   ", &[]), "program"),
            (options("a\0b", &[]), "program"),
            (options("true", &["a\0b"]), "args"),
            (bad_env, "env.A=B"),
            (CommandOptions { working_dir: Some(PathBuf::new()), ..options("true", &[]) }, "working_dir"),
        ];
        for (o, option) in cases {
            let Err(e) = o.build("run") else { panic!("{o:?} built") };
            assert_eq!((e.handler.as_str(), e.option.as_str()), ("run", option), "{e}");
        }
    }

    #[test]
    fn config_deserializes_with_defaults_and_debug_redacts_env_values() {
        let config: HandlerConfig = serde_json::from_value(serde_json::json!({
            "type": "command",
            "program": "/usr/local/bin/on-recording",
            "env": { "API_TOKEN": "tok-s3cr3t" },
        }))
        .unwrap();
        let HandlerKind::Command(o) = &config.kind else { panic!("not command: {config:?}") };
        assert!(o.args.is_empty());
        assert_eq!(o.working_dir, None);
        let debug = format!("{config:?}");
        assert!(!debug.contains("tok-s3cr3t"), "{debug}");
        assert!(debug.contains("API_TOKEN"), "{debug}");
        assert!(serde_json::from_value::<CommandOptions>(serde_json::json!({ "args": ["x"] })).is_err());
    }
}
