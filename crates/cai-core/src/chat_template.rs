//! Hugging Face chat templates (the Jinja `chat_template` of `tokenizer_config.json`)
//! rendered with minijinja the way transformers' `apply_chat_template` renders them.

use std::io::{self, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use minijinja::value::Kwargs;
use minijinja::{context, Environment, ErrorKind, Value};
use serde::Serialize;
use serde_json::ser::{Formatter, PrettyFormatter};

use crate::dialogue::Message;
use crate::Error;

/// The name the template is registered under; it appears in error locations.
const TEMPLATE_NAME: &str = "chat_template";

/// A parsed chat template with the special tokens it may refer to.
///
/// The environment matches transformers': `trim_blocks` and `lstrip_blocks` on, the trailing
/// newline of the source dropped, Python string/dict/list methods (`.strip()`, `.items()`,
/// ...) via minijinja-contrib's pycompat, and the globals `raise_exception(msg)` and
/// `strftime_now(format)`. `tojson` formats like Python's `json.dumps` (`", "` and `": "`
/// separators, non-ASCII and `<>&'` kept as is, `indent=` supported), except that dicts
/// written in the template come out with sorted keys (messages keep `role`, `content`).
#[derive(Debug, Clone)]
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

impl ChatTemplate {
    /// Parse `source`; `bos_token` and `eos_token` are what the template sees as `bos_token`
    /// and `eos_token` (the empty string when `None`).
    ///
    /// A syntax error is an [`Error::Template`] with minijinja's message and line.
    pub fn new(
        source: &str,
        bos_token: Option<String>,
        eos_token: Option<String>,
    ) -> Result<Self, Error> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(false);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        env.add_template_owned(TEMPLATE_NAME, source.to_owned())
            .map_err(template_error)?;
        Ok(Self {
            env,
            bos_token: bos_token.unwrap_or_default(),
            eos_token: eos_token.unwrap_or_default(),
        })
    }

    /// Render `messages`.
    ///
    /// The template sees `messages` (a list of `{role, content}`), `add_generation_prompt`,
    /// `bos_token`, `eos_token`, and `tools` and `documents` set to `none` as transformers
    /// does when none are given. A failed render (including `raise_exception`) is an
    /// [`Error::Template`] carrying the template's message.
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String, Error> {
        let ctx = context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => &self.bos_token,
            eos_token => &self.eos_token,
            tools => Value::from(()),
            documents => Value::from(()),
        };
        self.env
            .get_template(TEMPLATE_NAME)
            .and_then(|t| t.render(ctx))
            .map_err(template_error)
    }
}

/// The chat template source in a parsed `tokenizer_config.json`.
///
/// `chat_template` is either a string or a list of `{"name", "template"}`; from a list the one
/// named `"default"` is taken, else the first. `None` when there is no usable template.
pub fn from_tokenizer_config(config: &serde_json::Value) -> Option<String> {
    match config.get("chat_template")? {
        serde_json::Value::String(source) => Some(source.clone()),
        serde_json::Value::Array(templates) => templates
            .iter()
            .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
            .or_else(|| templates.first())?
            .get("template")?
            .as_str()
            .map(str::to_owned),
        _ => None,
    }
}

/// A special token (`"bos_token"`, `"eos_token"`, ...) of a parsed `tokenizer_config.json`,
/// given either as a string or as an added-token object `{"content": "<s>", ...}`.
pub fn special_token(config: &serde_json::Value, key: &str) -> Option<String> {
    match config.get(key)? {
        serde_json::Value::String(token) => Some(token.clone()),
        token => token.get("content")?.as_str().map(str::to_owned),
    }
}

/// A minijinja error as an [`Error::Template`], keeping the causes' messages.
fn template_error(e: minijinja::Error) -> Error {
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    Error::Template(message)
}

/// `raise_exception(msg)`: what HF templates call to reject a conversation.
fn raise_exception(message: String) -> Result<Value, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
}

/// `strftime_now(format)`: the current date (UTC; std has no time zones).
fn strftime_now(format: String) -> Result<String, minijinja::Error> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    strftime_utc(&format, now)
        .map_err(|msg| minijinja::Error::new(ErrorKind::InvalidOperation, msg))
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const WEEKDAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

/// Format `unix_secs` (UTC) with the strftime specifiers chat templates use:
/// `%Y %y %m %d %-m %-d %B %b %A %a %H %M %S %%`.
fn strftime_utc(format: &str, unix_secs: u64) -> Result<String, String> {
    let days = unix_secs / 86_400;
    let secs = unix_secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    let weekday = WEEKDAYS[((days + 4) % 7) as usize]; // 1970-01-01 was a Thursday.
    let month_name = MONTHS[(month - 1) as usize];
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let spec = match chars.next() {
            Some('-') => chars.next().map(|c| format!("-{c}")),
            c => c.map(String::from),
        };
        let field = match spec.as_deref() {
            Some("Y") => year.to_string(),
            Some("y") => format!("{:02}", year % 100),
            Some("m") => format!("{month:02}"),
            Some("-m") => month.to_string(),
            Some("d") => format!("{day:02}"),
            Some("-d") => day.to_string(),
            Some("B") => month_name.to_owned(),
            Some("b") => month_name[..3].to_owned(),
            Some("A") => weekday.to_owned(),
            Some("a") => weekday[..3].to_owned(),
            Some("H") => format!("{:02}", secs / 3600),
            Some("M") => format!("{:02}", secs % 3600 / 60),
            Some("S") => format!("{:02}", secs % 60),
            Some("%") => "%".to_owned(),
            other => {
                return Err(format!(
                    "strftime_now: unsupported specifier %{} in {format:?}; supported: \
                     %Y %y %m %d %-m %-d %B %b %A %a %H %M %S %%",
                    other.unwrap_or_default()
                ))
            }
        };
        out.push_str(&field);
    }
    Ok(out)
}

/// (year, month 1-12, day 1-31) of a day count since 1970-01-01, by Howard Hinnant's
/// `civil_from_days`.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + u64::from(month <= 2), month, day)
}

/// serde_json formatting with Python's default `json.dumps` separators `", "` and `": "`.
struct PythonCompact;

impl Formatter for PythonCompact {
    fn begin_array_value<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        w.write_all(if first { b"" } else { b", " })
    }

    fn begin_object_key<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        w.write_all(if first { b"" } else { b", " })
    }

    fn begin_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }
}

fn to_json(value: &Value, formatter: impl Formatter) -> serde_json::Result<Vec<u8>> {
    let mut out = Vec::new();
    value.serialize(&mut serde_json::Serializer::with_formatter(
        &mut out, formatter,
    ))?;
    Ok(out)
}

/// `tojson` as transformers defines it: `json.dumps(x, ensure_ascii=False, indent=indent)`.
fn tojson(value: &Value, kwargs: Kwargs) -> Result<Value, minijinja::Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    kwargs.assert_all_used()?;
    let json = match indent {
        Some(n) => to_json(
            value,
            PrettyFormatter::with_indent(" ".repeat(n).as_bytes()),
        ),
        None => to_json(value, PythonCompact),
    };
    let json = json.map_err(|e| {
        minijinja::Error::new(ErrorKind::InvalidOperation, "cannot serialize to JSON")
            .with_source(e)
    })?;
    Ok(Value::from_safe_string(
        String::from_utf8_lossy(&json).into_owned(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialogue::Message;
    use serde_json::json;

    /// ChatML in the style of Qwen2.5's template.
    const CHATML: &str = r#"{%- if messages[0]['role'] == 'system' %}
    {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
{%- else %}
    {{- '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}
{%- endif %}
{%- for message in messages %}
    {%- if not (message.role == 'system' and loop.first) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"#;

    /// Llama 3 style, without `-` whitespace control: relies on trim_blocks/lstrip_blocks.
    const LLAMA3: &str = r#"{% for message in messages %}
    {% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' %}
    {% if loop.index0 == 0 %}
        {% set content = bos_token + content.strip() %}
    {% endif %}
{{ content }}{% endfor %}
{% if add_generation_prompt %}
{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}
"#;

    /// Mistral-Instruct style: optional system message folded into the first user turn,
    /// strict user/assistant alternation.
    const MISTRAL: &str = r#"{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content'] %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set loop_messages = messages %}
{%- endif %}
{{- bos_token }}
{%- for message in loop_messages %}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}
        {{- raise_exception('After the optional system message, conversation roles must alternate user/assistant/user/assistant/...') }}
    {%- endif %}
    {%- if message['role'] == 'user' %}
        {%- if loop.first and system_message is defined %}
            {{- '[INST] ' + system_message + '\n\n' + message['content'] + ' [/INST]' }}
        {%- else %}
            {{- '[INST] ' + message['content'] + ' [/INST]' }}
        {%- endif %}
    {%- else %}
        {{- ' ' + message['content'] + eos_token }}
    {%- endif %}
{%- endfor %}
"#;

    fn dialogue() -> Vec<Message> {
        vec![
            Message::system("Be brief."),
            Message::user("Hi"),
            Message::assistant("Hello!"),
        ]
    }

    #[test]
    fn chatml_with_and_without_generation_prompt() {
        let t = ChatTemplate::new(CHATML, None, Some("<|im_end|>".into())).unwrap();
        let expected = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n\
                        <|im_start|>assistant\nHello!<|im_end|>\n";
        assert_eq!(t.render(&dialogue(), false).unwrap(), expected);
        assert_eq!(
            t.render(&dialogue(), true).unwrap(),
            format!("{expected}<|im_start|>assistant\n")
        );
        assert_eq!(
            t.render(&[Message::user("Q")], true).unwrap(),
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n\
             <|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn llama3_uses_bos_token_and_trims() {
        let t = ChatTemplate::new(LLAMA3, Some("<|begin_of_text|>".into()), None).unwrap();
        let messages = [Message::user(" Hi there \n"), Message::assistant("Hello.")];
        let expected = concat!(
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>",
            "<|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>",
        );
        assert_eq!(t.render(&messages, false).unwrap(), expected);
        assert_eq!(
            t.render(&messages, true).unwrap(),
            format!("{expected}<|start_header_id|>assistant<|end_header_id|>\n\n")
        );
    }

    #[test]
    fn mistral_folds_system_and_checks_alternation() {
        let t = ChatTemplate::new(MISTRAL, Some("<s>".into()), Some("</s>".into())).unwrap();
        assert_eq!(
            t.render(&dialogue(), false).unwrap(),
            "<s>[INST] Be brief.\n\nHi [/INST] Hello!</s>"
        );
        let err = t
            .render(&[Message::user("a"), Message::user("b")], true)
            .unwrap_err();
        assert!(matches!(err, Error::Template(_)), "{err:?}");
        assert!(
            err.to_string()
                .contains("conversation roles must alternate"),
            "{err}"
        );
    }

    #[test]
    fn raise_exception_surfaces_message_and_line() {
        let source = "{% if messages[0].role == 'system' %}\n\
                      {{ raise_exception('System role not supported') }}\n{% endif %}ok";
        let t = ChatTemplate::new(source, None, None).unwrap();
        assert_eq!(t.render(&[Message::user("x")], false).unwrap(), "ok");
        let err = t.render(&dialogue(), false).unwrap_err().to_string();
        assert!(err.contains("System role not supported"), "{err}");
        assert!(err.contains("chat_template:2"), "{err}");
    }

    #[test]
    fn syntax_error_names_line() {
        let err =
            ChatTemplate::new("{% for m in messages %}\n{{ m.content }", None, None).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, Error::Template(_)), "{err:?}");
        assert!(
            text.contains("syntax error") && text.contains("chat_template:2"),
            "{text}"
        );
    }

    #[test]
    fn tojson_formats_like_python_json_dumps() {
        // Python would keep the dict literal's order {"b", "a"}; minijinja sorts it.
        let t = ChatTemplate::new(
            "{{ messages[0] | tojson }}|{{ [1, 'é<'] | tojson }}|{{ {'b': 1, 'a': [1]} | tojson(indent=2) }}",
            None,
            None,
        )
        .unwrap();
        assert_eq!(
            t.render(&[Message::user("hi")], false).unwrap(),
            "{\"role\": \"user\", \"content\": \"hi\"}|[1, \"é<\"]|{\n  \"a\": [\n    1\n  ],\n  \"b\": 1\n}"
        );
    }

    #[test]
    fn tools_are_none_and_strftime_now_is_available() {
        let t = ChatTemplate::new(
            "{{ tools is none }} {{ strftime_now('%Y') | length }} {{ eos_token == '' }}",
            None,
            None,
        )
        .unwrap();
        assert_eq!(t.render(&[], false).unwrap(), "True 4 True");
    }

    #[test]
    fn strftime_formats_utc_dates() {
        // 1_700_000_000 s = 19_675 days + 80_000 s: Tuesday 2023-11-14 22:13:20 UTC.
        let t = 1_700_000_000;
        assert_eq!(strftime_utc("%d %b %Y", t).unwrap(), "14 Nov 2023");
        assert_eq!(
            strftime_utc("%Y-%m-%d %H:%M:%S", t).unwrap(),
            "2023-11-14 22:13:20"
        );
        assert_eq!(
            strftime_utc("%A %-d %B %y, %a %-m 100%%", t).unwrap(),
            "Tuesday 14 November 23, Tue 11 100%"
        );
        // 11_016 days = 30 years (10_957 days) + 31 + 28: the leap day 2000-02-29.
        assert_eq!(
            strftime_utc("%Y-%m-%d", 11_016 * 86_400).unwrap(),
            "2000-02-29"
        );
        assert_eq!(strftime_utc("%Y-%m-%d", 0).unwrap(), "1970-01-01");
        let err = strftime_utc("%Q", 0).unwrap_err();
        assert!(err.contains("unsupported specifier %Q"), "{err}");
    }

    #[test]
    fn template_source_from_tokenizer_config() {
        let plain = json!({"chat_template": "{{ x }}"});
        assert_eq!(from_tokenizer_config(&plain).as_deref(), Some("{{ x }}"));
        let named = json!({"chat_template": [
            {"name": "tool_use", "template": "T"},
            {"name": "default", "template": "D"},
        ]});
        assert_eq!(from_tokenizer_config(&named).as_deref(), Some("D"));
        let first = json!({"chat_template": [{"name": "rag", "template": "R"}]});
        assert_eq!(from_tokenizer_config(&first).as_deref(), Some("R"));
        assert_eq!(from_tokenizer_config(&json!({"bos_token": "<s>"})), None);
        assert_eq!(from_tokenizer_config(&json!({"chat_template": []})), None);
    }

    #[test]
    fn special_tokens_from_tokenizer_config() {
        let config = json!({"bos_token": "<s>", "eos_token": {"content": "</s>", "lstrip": false}});
        assert_eq!(special_token(&config, "bos_token").as_deref(), Some("<s>"));
        assert_eq!(special_token(&config, "eos_token").as_deref(), Some("</s>"));
        assert_eq!(special_token(&config, "pad_token"), None);
        assert_eq!(
            special_token(&json!({"pad_token": null}), "pad_token"),
            None
        );
    }
}
