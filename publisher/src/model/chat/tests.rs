use serde_json::json;

use super::*;

#[test]
fn a_string_input_is_one_user_turn_after_the_instructions() {
    let turns = turns(Some("Be brief."), &json!("Hi")).unwrap();
    assert_eq!(
        turns,
        vec![Turn::new("system", "Be brief."), Turn::new("user", "Hi")]
    );
}

#[test]
fn message_items_keep_their_roles_and_join_their_parts() {
    let input = json!([
        {"role": "developer", "content": "Rules."},
        {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "one"}, {"type": "input_text", "text": "two"}
        ]},
        {"type": "reasoning", "summary": []},
        {"role": "assistant", "content": "three"},
        {"role": "user", "content": "four"},
    ]);
    let turns = turns(None, &input).unwrap();
    let roles: Vec<&str> = turns.iter().map(|t| t.role.as_str()).collect();
    assert_eq!(roles, ["system", "user", "assistant", "user"]);
    assert_eq!(turns[1].content, "one\ntwo");
}

#[test]
fn inputs_of_another_shape_are_refused() {
    assert_eq!(turns(None, &json!(42)), None);
    assert_eq!(
        turns(None, &json!([{"role": "tool", "content": "x"}])),
        None
    );
    assert_eq!(turns(None, &json!([{"role": "user", "content": 7}])), None);
}

#[test]
fn the_chatml_fallback_renders_turns_and_the_answer_prompt() {
    let template = ChatTemplate::new(CHATML.to_owned(), String::new(), String::new());
    let text = template
        .render(&[Turn::new("system", "S"), Turn::new("user", "U")])
        .unwrap();
    assert_eq!(
        text,
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n"
    );
}

#[test]
fn a_template_that_does_not_parse_is_an_error() {
    let template = ChatTemplate::new("{% for %}".to_owned(), String::new(), String::new());
    let error = template.render(&[Turn::new("user", "U")]).unwrap_err();
    assert!(matches!(error, ModelError::Template(_)), "{error:?}");
}
