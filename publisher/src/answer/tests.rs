use super::*;

#[test]
fn a_channel_without_the_appends_rule_says_which_rule_to_enable() {
    let refusal = describe_refusal(&ErrorInfo::new(
        APPENDS_NOT_ENABLED,
        400,
        "action not permitted",
    ));
    assert!(
        refusal.contains("updates, deletes, and appends"),
        "{refusal}"
    );
    assert!(refusal.contains("93002"), "{refusal}");
    let other = describe_refusal(&ErrorInfo::new(40160, 401, "no capability"));
    assert_eq!(other, "no capability (Ably error 40160)");
}
