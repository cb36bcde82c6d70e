//! Reading typed columns out of a row, with errors that name the row and the column.

use serde_json::{Map, Value};

use super::ImportError;
use crate::dialogue::Message;

/// The row as an object.
pub(super) fn object(value: &Value, row: usize) -> Result<&Map<String, Value>, ImportError> {
    value.as_object().ok_or_else(|| ImportError::Row {
        row,
        message: format!(
            "expected an object of columns, found {}",
            match value {
                Value::Array(_) => "a list",
                Value::String(_) => "a string",
                Value::Number(_) => "a number",
                Value::Bool(_) => "a boolean",
                Value::Null => "null",
                Value::Object(_) => unreachable!("objects are handled above"),
            }
        ),
    })
}

fn column_error(row: usize, column: &str, message: impl Into<String>) -> ImportError {
    ImportError::Column {
        row,
        column: column.to_owned(),
        message: message.into(),
    }
}

/// A non-empty text column.
pub(super) fn text<'a>(
    object: &'a Map<String, Value>,
    column: &str,
    row: usize,
) -> Result<&'a str, ImportError> {
    match object.get(column) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s),
        Some(Value::String(_)) => Err(column_error(row, column, "is empty; expected text")),
        Some(other) => Err(column_error(
            row,
            column,
            format!("is {}; expected text", kind(other)),
        )),
        None => Err(column_error(row, column, "is missing; expected text")),
    }
}

/// The first of `columns` that the row has, as non-empty text.
pub(super) fn text_of<'a>(
    object: &'a Map<String, Value>,
    columns: &[&str],
    row: usize,
) -> Result<&'a str, ImportError> {
    let column = columns
        .iter()
        .find(|c| object.contains_key(**c))
        .unwrap_or(&columns[0]);
    text(object, column, row).map_err(|e| match e {
        ImportError::Column {
            row,
            column,
            message,
        } if columns.len() > 1 && !object.contains_key(&column) => ImportError::Column {
            row,
            column: columns.join("\" or \""),
            message,
        },
        e => e,
    })
}

/// An optional column as text: a string (empty is none), a number, or a list of strings
/// (joined with `"; "`); null or absent is none.
pub(super) fn optional_text(
    object: &Map<String, Value>,
    column: &str,
    row: usize,
) -> Result<Option<String>, ImportError> {
    match object.get(column) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.trim().to_owned())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(Value::Array(items)) => {
            let items: Vec<&str> = items
                .iter()
                .map(|item| {
                    item.as_str().ok_or_else(|| {
                        column_error(row, column, "holds a non-string; expected a list of text")
                    })
                })
                .collect::<Result<_, _>>()?;
            Ok((!items.is_empty()).then(|| items.join("; ")))
        }
        Some(other) => Err(column_error(
            row,
            column,
            format!("is {}; expected text", kind(other)),
        )),
    }
}

/// The record id: the column as a string or number, else the 0-based row index.
pub(super) fn id(
    object: &Map<String, Value>,
    column: &str,
    row: usize,
) -> Result<String, ImportError> {
    match object.get(column) {
        None | Some(Value::Null) => Ok(row.to_string()),
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        Some(other) => Err(column_error(
            row,
            column,
            format!("is {}; expected a string or a number", kind(other)),
        )),
    }
}

/// A list of `{role, content}` messages.
pub(super) fn messages(
    object: &Map<String, Value>,
    column: &str,
    row: usize,
) -> Result<Vec<Message>, ImportError> {
    let value = object
        .get(column)
        .ok_or_else(|| column_error(row, column, "is missing; expected a list of messages"))?;
    serde_json::from_value(value.clone()).map_err(|e| {
        column_error(
            row,
            column,
            format!("expected a list of {{\"role\", \"content\"}} messages ({e})"),
        )
    })
}

/// What a JSON value is, for messages.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn columns_read_with_errors_naming_row_and_column() {
        let r = row(json!({"a": "x", "n": 4, "e": " ", "l": ["p", "q"], "o": {}}));
        assert_eq!(text(&r, "a", 0).unwrap(), "x");
        assert_eq!(
            text(&r, "e", 3).unwrap_err().to_string(),
            "row 3: column \"e\": is empty; expected text"
        );
        assert_eq!(
            text(&r, "n", 3).unwrap_err().to_string(),
            "row 3: column \"n\": is a number; expected text"
        );
        assert_eq!(
            text_of(&r, &["B", "b"], 1).unwrap_err().to_string(),
            "row 1: column \"B\" or \"b\": is missing; expected text"
        );
        assert_eq!(text_of(&r, &["z", "a"], 1).unwrap(), "x");
        assert_eq!(optional_text(&r, "l", 0).unwrap().as_deref(), Some("p; q"));
        assert_eq!(optional_text(&r, "e", 0).unwrap(), None);
        assert_eq!(optional_text(&r, "n", 0).unwrap().as_deref(), Some("4"));
        assert!(optional_text(&r, "o", 2)
            .unwrap_err()
            .to_string()
            .contains("is an object"));
        assert_eq!(id(&r, "n", 0).unwrap(), "4");
        assert_eq!(id(&r, "absent", 6).unwrap(), "6");
        assert!(id(&r, "l", 0)
            .unwrap_err()
            .to_string()
            .contains("is a list"));
        assert!(messages(&r, "a", 0)
            .unwrap_err()
            .to_string()
            .contains("list of {\"role\""));
    }
}
