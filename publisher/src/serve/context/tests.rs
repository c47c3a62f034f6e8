use super::*;
use shared::Serial;

fn msg(name: &str, serial: &str, text: &str) -> Message {
    Message {
        name: Some(name.to_owned()),
        serial: Some(Serial::from(serial)),
        data: Some(Value::String(text.to_owned())),
        ..Message::default()
    }
}

#[test]
fn no_history_is_the_bare_prompt() {
    assert_eq!(conversation(&[], 6, "hi"), Value::String("hi".to_owned()));
}

#[test]
fn turns_come_oldest_first_with_roles_and_the_prompt_last() {
    let history = [
        msg("response", "s4", "Paris."),
        msg("prompt", "s3", "And France?"),
        msg("cancel", "s2x", "s2"),
        msg("response", "s2", "Berlin."),
        msg("prompt", "s1", "Capital of Germany?"),
    ];
    let input = conversation(&history, 6, "And Spain?");
    assert_eq!(
        input,
        json!([
            {"role": "user", "content": "Capital of Germany?"},
            {"role": "assistant", "content": "Berlin."},
            {"role": "user", "content": "And France?"},
            {"role": "assistant", "content": "Paris."},
            {"role": "user", "content": "And Spain?"},
        ])
    );
}

#[test]
fn only_the_newest_turns_and_versions_count() {
    let history = [
        msg("response", "s4", "new text"),
        msg("response", "s4", "old text"),
        msg("prompt", "s3", "q2"),
        msg("response", "s2", ""),
        msg("prompt", "s1", "q1"),
    ];
    let input = conversation(&history, 2, "q3");
    assert_eq!(
        input,
        json!([
            {"role": "user", "content": "q2"},
            {"role": "assistant", "content": "new text"},
            {"role": "user", "content": "q3"},
        ])
    );
}

#[test]
fn long_history_is_cut_to_the_character_budget() {
    let long = "x".repeat(MAX_CONTEXT_CHARS - 10);
    let history = [
        msg("response", "s2", &long),
        msg("prompt", "s1", &"y".repeat(100)),
    ];
    let input = conversation(&history, 6, "q");
    assert_eq!(input.as_array().unwrap().len(), 2);
}
