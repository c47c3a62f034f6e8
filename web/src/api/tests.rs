use super::*;

#[test]
fn the_next_link_is_found_among_several() {
    let header = "<./messages?limit=1&direction=backwards>; rel=\"first\", \
                  <./messages?limit=1&direction=backwards&cursor=eyJ2>; rel=\"next\"";
    assert_eq!(
        next_link(header).as_deref(),
        Some("limit=1&direction=backwards&cursor=eyJ2")
    );
    assert_eq!(next_link("<./messages?limit=1>; rel=\"first\""), None);
    assert_eq!(next_link(""), None);
}
