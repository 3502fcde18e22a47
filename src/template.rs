//! Templated options: one engine (minijinja) for every handler's paths, subjects, bodies
//! and command arguments.
//!
//! A template sees the event's fields by their SignalWire names (`RecordingSid`,
//! `RecordingDuration`, …) plus `event_id` and `format`. Every variable a template names
//! is checked when the handler is built, so a typo fails `check-config` and start-up
//! instead of rendering an empty string at 3 a.m. Rendering is strict as well: nothing
//! undefined is ever silently printed.

use std::fmt;

use minijinja::{Environment, UndefinedBehavior};

use crate::event::{KNOWN_FIELDS, StoredEvent};

/// Variables a template may use besides the event fields.
pub const EXTRA_VARIABLES: [&str; 2] = ["event_id", "format"];

/// The name the single template is kept under inside its environment. No extension, so
/// nothing is HTML-escaped.
const NAME: &str = "template";

/// One compiled template.
pub struct Template {
    source: String,
    env: Environment<'static>,
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Template").field(&self.source).finish()
    }
}

impl Template {
    /// Compiles `source` and checks that every variable it reads is known. The error
    /// says what is wrong and, for an unknown variable, names it.
    pub fn parse(source: &str) -> Result<Template, String> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_keep_trailing_newline(true);
        env.add_template_owned(NAME, source.to_owned())
            .map_err(|e| format!("template syntax error: {}", describe(&e)))?;
        let template = env.get_template(NAME).map_err(|e| format!("template error: {}", describe(&e)))?;
        let mut unknown: Vec<String> = template
            .undeclared_variables(false)
            .into_iter()
            .filter(|v| !is_known(v) && env.globals().all(|(g, _)| g != v))
            .collect();
        unknown.sort();
        if let Some(first) = unknown.first() {
            return Err(format!(
                "unknown template variable `{first}`{} (known: {}, {})",
                if unknown.len() > 1 { format!(" (and {})", unknown[1..].join(", ")) } else { String::new() },
                KNOWN_FIELDS.join(", "),
                EXTRA_VARIABLES.join(", ")
            ));
        }
        Ok(Template { source: source.to_owned(), env })
    }

    /// The template as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders the template for one event.
    pub fn render(&self, context: &Context) -> Result<String, String> {
        let template = self.env.get_template(NAME).map_err(|e| describe(&e))?;
        template.render(&context.0).map_err(|e| format!("rendering `{}` failed: {}", self.source, describe(&e)))
    }
}

/// What a template is rendered with: one event's fields plus `event_id` and `format`.
#[derive(Debug, Clone)]
pub struct Context(serde_json::Map<String, serde_json::Value>);

impl Context {
    /// The context for `event`; `format` is the audio format the handler works with.
    /// Known fields the event lacks (`CallSid` of a conference recording,
    /// `RecordingDuration` of an in-progress one) are empty strings, so a template that
    /// names them still renders.
    pub fn new(event: &StoredEvent, format: &str) -> Context {
        let mut map: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&event.json).unwrap_or_else(|_| match serde_json::to_value(&event.event) {
                Ok(serde_json::Value::Object(m)) => m,
                _ => serde_json::Map::new(),
            });
        for field in KNOWN_FIELDS {
            map.entry(field).or_insert_with(|| serde_json::Value::String(String::new()));
        }
        map.insert("event_id".into(), event.id.clone().into());
        map.insert("format".into(), format.into());
        Context(map)
    }
}

fn is_known(name: &str) -> bool {
    KNOWN_FIELDS.contains(&name) || EXTRA_VARIABLES.contains(&name)
}

/// minijinja's error with its detail (the line, the offending token) on one line.
fn describe(e: &minijinja::Error) -> String {
    let mut text = e.to_string();
    if let Some(detail) = e.detail()
        && !text.contains(detail)
    {
        text.push_str(&format!(": {detail}"));
    }
    text.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> StoredEvent {
        let json = r#"{"AccountSid":"AC1","CallSid":"CA1","RecordingSid":"RE1","RecordingUrl":"https://x.signalwire.com/r/RE1","RecordingStatus":"completed","RecordingDuration":17,"RecordingChannels":1,"RecordingSource":"RecordVerb"}"#;
        StoredEvent::from_json("ev-1".into(), json.into()).unwrap()
    }

    #[test]
    fn renders_fields_event_id_and_format() {
        let t = Template::parse(
            "{{ AccountSid }}/{{ CallSid }}/{{ RecordingSid }}.{{ format }} {{ event_id }} {{ RecordingDuration }}s",
        )
        .unwrap();
        assert_eq!(t.render(&Context::new(&event(), "mp3")).unwrap(), "AC1/CA1/RE1.mp3 ev-1 17s");
    }

    #[test]
    fn missing_optional_fields_render_empty_and_conditionals_work() {
        let t = Template::parse("[{{ ConferenceSid }}]{% if RecordingDuration > 10 %} long{% endif %}").unwrap();
        assert_eq!(t.render(&Context::new(&event(), "wav")).unwrap(), "[] long");
    }

    #[test]
    fn unknown_variables_are_named() {
        let e = Template::parse("{{ RecordingSd }}.wav").unwrap_err();
        assert!(e.contains("unknown template variable `RecordingSd`"), "{e}");
        let e = Template::parse("{% if Foo %}{{ Bar.baz }}{% endif %}").unwrap_err();
        assert!(e.contains("`Bar`") && e.contains("Foo"), "{e}");
    }

    #[test]
    fn syntax_errors_are_reported() {
        let e = Template::parse("{{ RecordingSid ").unwrap_err();
        assert!(e.contains("syntax error"), "{e}");
    }

    #[test]
    fn loops_filters_and_globals_are_not_unknown_variables() {
        let t = Template::parse("{% for i in range(2) %}{{ i }}{% endfor %}{{ RecordingSid | lower }}").unwrap();
        assert_eq!(t.render(&Context::new(&event(), "wav")).unwrap(), "01re1");
    }

    #[test]
    fn nothing_is_html_escaped() {
        let t = Template::parse("<{{ RecordingUrl }}>&").unwrap();
        assert_eq!(t.render(&Context::new(&event(), "wav")).unwrap(), "<https://x.signalwire.com/r/RE1>&");
    }
}
