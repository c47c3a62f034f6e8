use super::*;

fn at(item: &str, content: u64) -> Position {
    Position {
        item_id: Some(item.into()),
        content_index: Some(content),
        ..Position::default()
    }
}

#[test]
fn parts_join_with_a_blank_line_and_empty_parts_add_nothing() {
    let mut t = AnswerText::default();
    assert_eq!(t.push(t.part_key(&at("a", 0)), ""), Edit::Unchanged);
    assert_eq!(t.push(t.part_key(&at("a", 0)), "One"), Edit::Extended);
    assert_eq!(t.push(t.part_key(&at("a", 1)), "Two"), Edit::Extended);
    assert_eq!(t.push(t.part_key(&at("b", 0)), "Three"), Edit::Extended);
    assert_eq!(t.as_str(), "One\n\nTwo\n\nThree");
}

#[test]
fn interleaved_items_rebuild_and_report_the_kept_prefix() {
    let mut t = AnswerText::default();
    t.push(t.part_key(&at("a", 0)), "A1");
    t.push(t.part_key(&at("b", 0)), "B1");
    assert_eq!(
        t.push(t.part_key(&at("a", 0)), "A2"),
        Edit::Rewritten { kept: 2 }
    );
    assert_eq!(t.as_str(), "A1A2\n\nB1");
}

#[test]
fn done_text_extends_or_replaces() {
    let mut t = AnswerText::default();
    let key = t.part_key(&at("a", 0));
    t.push(key.clone(), "Hel");
    assert_eq!(t.replace_part(key.clone(), "Hello"), Edit::Extended);
    assert_eq!(t.replace_part(key.clone(), "Hello"), Edit::Unchanged);
    assert_eq!(t.replace_part(key, "Help"), Edit::Rewritten { kept: 3 });
    assert_eq!(t.as_str(), "Help");
    assert_eq!(
        t.replace_part(t.part_key(&at("b", 0)), "New"),
        Edit::Extended
    );
    assert_eq!(t.as_str(), "Help\n\nNew");
}

#[test]
fn items_are_found_by_id_or_index_and_only_messages_count() {
    let mut t = AnswerText::default();
    t.note_item(Some(0), Some("rs_1"), Some(&ItemKind::Reasoning));
    t.note_item(Some(1), Some("msg_1"), Some(&ItemKind::Message));
    let by_index = Position {
        output_index: Some(0),
        ..Position::default()
    };
    assert!(!t.is_answer_text(&by_index));
    assert!(!t.is_answer_text(&at("rs_1", 0)));
    assert!(t.is_answer_text(&at("msg_1", 0)));
    assert!(t.is_answer_text(&at("never_announced", 0)));
    let msg_by_index = Position {
        output_index: Some(1),
        ..Position::default()
    };
    assert_eq!(t.part_key(&msg_by_index), t.part_key(&at("msg_1", 0)));
}

#[test]
fn truncate_cuts_on_a_char_boundary() {
    let mut t = AnswerText::default();
    t.push(t.part_key(&Position::default()), "aé");
    t.truncate_json(2);
    assert_eq!(t.as_str(), "a");
}

#[test]
fn json_length_counts_escapes_incrementally_and_after_rewrites() {
    let mut text = AnswerText::default();
    let key = |i: u64| PartKey {
        item: ItemKey::Index(i),
        content: 0,
    };
    text.push(key(0), "say \"hi\"");
    assert_eq!(text.json_len(), text.len() + 2);
    text.push(key(0), "\n\u{1}é");
    assert_eq!(text.json_len(), text.len() + 2 + 1 + 5);
    let whole = serde_json::to_string(text.as_str()).unwrap();
    assert_eq!(text.json_len(), whole.len() - 2, "serde_json agrees");
    text.replace_part(key(0), "plain");
    assert_eq!(text.json_len(), 5);
}

#[test]
fn truncate_json_keeps_the_longest_prefix_that_fits() {
    let mut text = AnswerText::default();
    let key = PartKey {
        item: ItemKey::Index(0),
        content: 0,
    };
    text.push(key, "ab\"cd");
    // `ab\"` is 4 bytes of JSON; `ab\"c` is 5.
    text.truncate_json(4);
    assert_eq!(text.as_str(), "ab\"");
    assert_eq!(text.json_len(), 4);
    text.truncate_json(3);
    assert_eq!(text.as_str(), "ab");
    text.truncate_json(100);
    assert_eq!(text.as_str(), "ab");
}
