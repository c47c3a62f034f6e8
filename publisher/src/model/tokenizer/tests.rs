use serde_json::Value;

use super::*;
use crate::model::test_engine;

/// Reference ids made with PyPI `tokenizers` from the GGUF's vocabulary
/// (`fixtures/model/make_tokenizer_table.py`).
fn table() -> Vec<(String, Vec<u32>)> {
    let text = include_str!("../../../../fixtures/model/tokenizer_table.json");
    let table: Value = serde_json::from_str(text).unwrap();
    table["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            let ids = row["ids"].as_array().unwrap();
            let ids = ids.iter().map(|id| id.as_u64().unwrap() as u32).collect();
            (row["text"].as_str().unwrap().to_owned(), ids)
        })
        .collect()
}

#[test]
fn encodes_every_reference_string_to_the_reference_ids() {
    let model = test_engine().model();
    let rows = table();
    assert!(rows.len() >= 15);
    for (text, expected) in rows {
        assert_eq!(model.encode(&text).unwrap(), expected, "{text:?}");
        let decoded = model.tokenizer().decode(&expected, false).unwrap();
        assert_eq!(decoded, text, "decoding {expected:?}");
    }
}

#[test]
fn streamed_text_never_splits_a_character() {
    let tokenizer = test_engine().model().tokenizer();
    let mut held_back = 0;
    for (text, ids) in table() {
        if text.contains("<|") {
            continue; // control tokens decode to nothing in an answer
        }
        let mut stream = TextStream::new(tokenizer);
        let mut pieces = Vec::new();
        for &id in &ids {
            match stream.push(id).unwrap() {
                Some(piece) => pieces.push(piece),
                None => held_back += 1,
            }
        }
        pieces.extend(stream.finish().unwrap());
        for piece in &pieces {
            assert!(!piece.contains('\u{FFFD}'), "{text:?} gave {pieces:?}");
        }
        assert_eq!(pieces.concat(), text);
    }
    // The emoji and CJK rows have tokens that end inside a character.
    assert!(held_back > 5, "{held_back}");
}

#[test]
fn control_tokens_add_no_text_to_the_stream() {
    let tokenizer = test_engine().model().tokenizer();
    let mut stream = TextStream::new(tokenizer);
    let end = tokenizer.token_to_id("<|im_end|>").unwrap();
    let hi = tokenizer.token_to_id("Hi").unwrap();
    assert_eq!(stream.push(hi).unwrap().as_deref(), Some("Hi"));
    assert_eq!(stream.push(end).unwrap(), None);
    assert_eq!(stream.finish().unwrap(), None);
}
