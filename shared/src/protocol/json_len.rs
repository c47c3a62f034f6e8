//! The length of a JSON value as the codec writes it (compact serde_json), counted without
//! writing it: a message's size is checked on every append.

use serde_json::Value;

/// Bytes of `value` serialised compactly by serde_json.
pub fn json_len(value: &Value) -> usize {
    match value {
        Value::Null => 4,
        Value::Bool(true) => 4,
        Value::Bool(false) => 5,
        // Numbers are rare in headers and extras; their formatting is serde_json's own.
        Value::Number(n) => n.to_string().len(),
        Value::String(s) => string_len(s),
        Value::Array(items) => {
            2 + items.len().saturating_sub(1) + items.iter().map(json_len).sum::<usize>()
        }
        Value::Object(map) => {
            let entries: usize = map
                .iter()
                .map(|(k, v)| string_len(k) + 1 + json_len(v))
                .sum();
            2 + map.len().saturating_sub(1) + entries
        }
    }
}

/// A JSON string literal's bytes: its quotes, its UTF-8 bytes and the escapes.
pub fn string_len(s: &str) -> usize {
    2 + s.len() + s.chars().map(escape_extra).sum::<usize>()
}

/// The bytes serde_json's escaping adds to one character: `"`, `\\` and the short control
/// escapes take two bytes, other control characters six (`\u00XX`), the rest none.
pub fn escape_extra(c: char) -> usize {
    match c {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 1,
        c if u32::from(c) < 0x20 => 5,
        _ => 0,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use proptest::prelude::*;
    use serde_json::{json, Value};

    use super::json_len;

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| json!(f)),
            any::<String>().prop_map(Value::String),
            "[\\x00-\\x7f\"\\\\]{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                proptest::collection::btree_map(any::<String>(), inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// The count is the length of what serde_json writes, for any value.
        #[test]
        fn counts_what_serde_json_writes(value in value()) {
            prop_assert_eq!(json_len(&value), serde_json::to_string(&value).unwrap().len());
        }
    }

    #[test]
    fn headers_of_an_answer() {
        let extras =
            json!({"headers": {"status": "streaming", "length": "12", "error": "a \"b\"\n\u{1}é"}});
        assert_eq!(json_len(&extras), extras.to_string().len());
    }
}
