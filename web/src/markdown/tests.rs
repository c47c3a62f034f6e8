//! Markdown tests: exact trees for each construct, XSS payloads, refused links, streaming
//! prefixes, pathological inputs, and a property test over arbitrary and Markdown-ish text.

use std::time::{Duration, Instant};

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::TestCaseError;

use super::*;

fn t(text: &str) -> Inline {
    Inline::Text(text.to_owned())
}

fn strong(content: Vec<Inline>) -> Inline {
    Inline::Strong(content)
}

fn em(content: Vec<Inline>) -> Inline {
    Inline::Emphasis(content)
}

fn code(text: &str) -> Inline {
    Inline::Code(text.to_owned())
}

fn link(href: &str, content: Vec<Inline>) -> Inline {
    Inline::Link {
        href: href.to_owned(),
        content,
    }
}

fn para(content: Vec<Inline>) -> Block {
    Block::Paragraph(content)
}

fn heading(level: u8, content: Vec<Inline>) -> Block {
    Block::Heading { level, content }
}

fn code_block(lang: Option<&str>, text: &str) -> Block {
    Block::Code {
        lang: lang.map(str::to_owned),
        text: text.to_owned(),
    }
}

fn bullets(items: Vec<Vec<Inline>>) -> Block {
    Block::List {
        ordered: false,
        start: 1,
        items,
    }
}

fn numbered(start: u32, items: Vec<Vec<Inline>>) -> Block {
    Block::List {
        ordered: true,
        start,
        items,
    }
}

/// The inlines of a text that must parse as exactly one paragraph.
fn inline(text: &str) -> Vec<Inline> {
    match parse(text).as_slice() {
        [Block::Paragraph(content)] => content.clone(),
        other => panic!("{text:?} is not one paragraph: {other:?}"),
    }
}

/// Every link target in a tree.
fn hrefs(blocks: &[Block]) -> Vec<String> {
    fn inlines(content: &[Inline], out: &mut Vec<String>) {
        for inline in content {
            match inline {
                Inline::Strong(c) | Inline::Emphasis(c) => inlines(c, out),
                Inline::Link { href, content } => {
                    out.push(href.clone());
                    inlines(content, out);
                }
                Inline::Text(_) | Inline::Code(_) | Inline::Break => {}
            }
        }
    }
    let mut out = Vec::new();
    for block in blocks {
        match block {
            Block::Paragraph(c) | Block::Heading { content: c, .. } => inlines(c, &mut out),
            Block::List { items, .. } => items.iter().for_each(|c| inlines(c, &mut out)),
            Block::Quote(inner) => out.extend(hrefs(inner)),
            Block::Code { .. } | Block::Rule => {}
        }
    }
    out
}

/// Deepest nesting of quotes, emphasis and links.
fn depth(blocks: &[Block]) -> usize {
    fn inlines(content: &[Inline]) -> usize {
        content
            .iter()
            .map(|inline| match inline {
                Inline::Strong(c) | Inline::Emphasis(c) | Inline::Link { content: c, .. } => {
                    1 + inlines(c)
                }
                Inline::Text(_) | Inline::Code(_) | Inline::Break => 0,
            })
            .max()
            .unwrap_or(0)
    }
    blocks
        .iter()
        .map(|block| match block {
            Block::Paragraph(c) | Block::Heading { content: c, .. } => inlines(c),
            Block::List { items, .. } => items.iter().map(|c| inlines(c)).max().unwrap_or(0),
            Block::Quote(inner) => 1 + depth(inner),
            Block::Code { .. } | Block::Rule => 0,
        })
        .max()
        .unwrap_or(0)
}

// ---- blocks ----

#[test]
fn empty_and_blank_input_has_no_blocks() {
    assert_eq!(parse(""), vec![]);
    assert_eq!(parse("\n \n\t\n\r\n"), vec![]);
}

#[test]
fn blank_lines_split_paragraphs_and_single_newlines_are_breaks() {
    assert_eq!(
        parse("one\ntwo\n\n\nthree"),
        vec![
            para(vec![t("one"), Inline::Break, t("two")]),
            para(vec![t("three")])
        ]
    );
}

#[test]
fn lines_are_trimmed_and_crlf_is_a_newline() {
    assert_eq!(
        parse("  one  \r\n\ttwo\r\n\r\nthree\r\n"),
        vec![
            para(vec![t("one"), Inline::Break, t("two")]),
            para(vec![t("three")])
        ]
    );
}

#[test]
fn headings_of_every_level() {
    assert_eq!(
        parse("# One\n## Two\n### Three\n#### Four\n##### Five\n###### Six\n####### Seven"),
        vec![
            heading(1, vec![t("One")]),
            heading(2, vec![t("Two")]),
            heading(3, vec![t("Three")]),
            heading(4, vec![t("Four")]),
            heading(5, vec![t("Five")]),
            heading(6, vec![t("Six")]),
            para(vec![t("####### Seven")]),
        ]
    );
}

#[test]
fn heading_details() {
    assert_eq!(parse("#hashtag"), vec![para(vec![t("#hashtag")])]);
    assert_eq!(parse("# Title ##"), vec![heading(1, vec![t("Title")])]);
    assert_eq!(parse("## C#"), vec![heading(2, vec![t("C#")])]);
    assert_eq!(parse("#"), vec![heading(1, vec![])]);
    assert_eq!(parse("### ###"), vec![heading(3, vec![])]);
    assert_eq!(
        parse("## *Quick* start"),
        vec![heading(2, vec![em(vec![t("Quick")]), t(" start")])]
    );
    assert_eq!(
        parse("text\n# Heading\ntext"),
        vec![
            para(vec![t("text")]),
            heading(1, vec![t("Heading")]),
            para(vec![t("text")])
        ]
    );
}

#[test]
fn rules() {
    for rule in ["---", "***", "___", "- - -", " * * * ", "-----", "_ _ _"] {
        assert_eq!(parse(rule), vec![Block::Rule], "{rule:?}");
    }
    assert_eq!(parse("--"), vec![para(vec![t("--")])]);
    // No setext headings: the line under the text is a rule.
    assert_eq!(
        parse("Title\n---"),
        vec![para(vec![t("Title")]), Block::Rule]
    );
}

#[test]
fn fenced_code_with_language() {
    assert_eq!(
        parse("```rust\nfn main() {\n    println!(\"hi\");\n}\n```\nafter"),
        vec![
            code_block(Some("rust"), "fn main() {\n    println!(\"hi\");\n}"),
            para(vec![t("after")]),
        ]
    );
    assert_eq!(
        parse("~~~ python extra words\nx = 1\n~~~"),
        vec![code_block(Some("python"), "x = 1")]
    );
}

#[test]
fn code_content_is_verbatim() {
    assert_eq!(
        parse("```\n**not bold** <b>&amp;</b> [a](javascript:x) \\*\n\n# not a heading\n```"),
        vec![code_block(
            None,
            "**not bold** <b>&amp;</b> [a](javascript:x) \\*\n\n# not a heading"
        )]
    );
}

#[test]
fn unclosed_fence_runs_to_the_end() {
    assert_eq!(parse("```"), vec![code_block(None, "")]);
    assert_eq!(parse("```sh\n"), vec![code_block(Some("sh"), "")]);
    assert_eq!(
        parse("intro\n```sh\ncargo test\n\nmore"),
        vec![
            para(vec![t("intro")]),
            code_block(Some("sh"), "cargo test\n\nmore")
        ]
    );
    // A half-typed closing fence is still code.
    assert_eq!(parse("```\na\n``"), vec![code_block(None, "a\n``")]);
}

#[test]
fn fence_closing_rules() {
    assert_eq!(parse("````\n```\n````"), vec![code_block(None, "```")]);
    assert_eq!(
        parse("```\na\n`````  \nb"),
        vec![code_block(None, "a"), para(vec![t("b")])]
    );
    assert_eq!(parse("~~~\n```\n~~~"), vec![code_block(None, "```")]);
    assert_eq!(parse("```\n\n\n```"), vec![code_block(None, "\n")]);
}

#[test]
fn fence_indentation_is_removed_from_the_body() {
    assert_eq!(
        parse("  ```\n  indented\n    more\nnone\n  ```"),
        vec![code_block(None, "indented\n  more\nnone")]
    );
}

#[test]
fn backtick_info_with_a_backtick_is_no_fence() {
    assert_eq!(parse("``` a`b"), vec![para(vec![t("``` a`b")])]);
    assert_eq!(parse("```inline```"), vec![para(vec![code("inline")])]);
}

#[test]
fn bullet_lists() {
    assert_eq!(
        parse("- a\n- b\n- c"),
        vec![bullets(vec![vec![t("a")], vec![t("b")], vec![t("c")]])]
    );
    assert_eq!(
        parse("* a\n* b"),
        vec![bullets(vec![vec![t("a")], vec![t("b")]])]
    );
    // Another bullet character starts another list.
    assert_eq!(
        parse("* a\n+ b"),
        vec![bullets(vec![vec![t("a")]]), bullets(vec![vec![t("b")]])]
    );
}

#[test]
fn ordered_lists() {
    assert_eq!(
        parse("3. three\n4. four\n9. nine"),
        vec![numbered(
            3,
            vec![vec![t("three")], vec![t("four")], vec![t("nine")]]
        )]
    );
    assert_eq!(
        parse("1) a\n2) b"),
        vec![numbered(1, vec![vec![t("a")], vec![t("b")]])]
    );
    assert_eq!(
        parse("1. a\n- b"),
        vec![numbered(1, vec![vec![t("a")]]), bullets(vec![vec![t("b")]])]
    );
    assert_eq!(parse("1234567890. x"), vec![para(vec![t("1234567890. x")])]);
    assert_eq!(parse("1.5 kg"), vec![para(vec![t("1.5 kg")])]);
}

#[test]
fn list_items_continue_over_lines_and_blank_lines() {
    assert_eq!(
        parse("- a\n  continued\nlazy\n- b"),
        vec![bullets(vec![
            vec![
                t("a"),
                Inline::Break,
                t("continued"),
                Inline::Break,
                t("lazy")
            ],
            vec![t("b")],
        ])]
    );
    assert_eq!(
        parse("- a\n\n- b\n\n\n- c"),
        vec![bullets(vec![vec![t("a")], vec![t("b")], vec![t("c")]])]
    );
    assert_eq!(
        parse("- a\n\n  more\n- b"),
        vec![bullets(vec![
            vec![t("a"), Inline::Break, Inline::Break, t("more")],
            vec![t("b")],
        ])]
    );
    assert_eq!(
        parse("- a\n\nafter"),
        vec![bullets(vec![vec![t("a")]]), para(vec![t("after")])]
    );
}

#[test]
fn nested_items_stay_literal_in_their_parent() {
    assert_eq!(
        parse("- a\n  - inner\n  * other\n- b"),
        vec![bullets(vec![
            vec![
                t("a"),
                Inline::Break,
                t("- inner"),
                Inline::Break,
                t("* other")
            ],
            vec![t("b")],
        ])]
    );
}

#[test]
fn lists_and_paragraphs() {
    assert_eq!(
        parse("Steps:\n1. a\n2. b"),
        vec![
            para(vec![t("Steps:")]),
            numbered(1, vec![vec![t("a")], vec![t("b")]])
        ]
    );
    assert_eq!(
        parse("Items:\n- a"),
        vec![para(vec![t("Items:")]), bullets(vec![vec![t("a")]])]
    );
    // Only a list starting at 1, and not an empty item, may interrupt a paragraph.
    assert_eq!(
        parse("In\n1984. a year"),
        vec![para(vec![t("In"), Inline::Break, t("1984. a year")])]
    );
    assert_eq!(
        parse("a\n-"),
        vec![para(vec![t("a"), Inline::Break, t("-")])]
    );
    assert_eq!(parse("-"), vec![bullets(vec![vec![]])]);
    assert_eq!(parse("-a"), vec![para(vec![t("-a")])]);
}

#[test]
fn blocks_end_a_list() {
    assert_eq!(
        parse("- a\n# H\n- b\n---\n- c\n> q"),
        vec![
            bullets(vec![vec![t("a")]]),
            heading(1, vec![t("H")]),
            bullets(vec![vec![t("b")]]),
            Block::Rule,
            bullets(vec![vec![t("c")]]),
            Block::Quote(vec![para(vec![t("q")])]),
        ]
    );
}

#[test]
fn a_fence_inside_an_item_splits_the_list() {
    assert_eq!(
        parse("1. Run:\n   ```sh\n   cargo test\n   ```\n2. Done"),
        vec![
            numbered(1, vec![vec![t("Run:")]]),
            code_block(Some("sh"), "cargo test"),
            numbered(2, vec![vec![t("Done")]]),
        ]
    );
}

#[test]
fn list_items_hold_inlines() {
    assert_eq!(
        parse("- **bold** and [a link](/x)\n- `code`"),
        vec![bullets(vec![
            vec![
                strong(vec![t("bold")]),
                t(" and "),
                link("/x", vec![t("a link")])
            ],
            vec![code("code")],
        ])]
    );
}

#[test]
fn quotes() {
    assert_eq!(
        parse("> a\n> b"),
        vec![Block::Quote(vec![para(vec![
            t("a"),
            Inline::Break,
            t("b")
        ])])]
    );
    assert_eq!(
        parse("> a\n>\n>b"),
        vec![Block::Quote(vec![para(vec![t("a")]), para(vec![t("b")])])]
    );
    // No lazy continuation: a line without `>` ends the quote.
    assert_eq!(
        parse("> a\nb"),
        vec![Block::Quote(vec![para(vec![t("a")])]), para(vec![t("b")])]
    );
    assert_eq!(
        parse("> > nested\n> back"),
        vec![Block::Quote(vec![
            Block::Quote(vec![para(vec![t("nested")])]),
            para(vec![t("back")]),
        ])]
    );
}

#[test]
fn quotes_hold_blocks() {
    assert_eq!(
        parse("> # H\n> - x\n> ```\n> code"),
        vec![Block::Quote(vec![
            heading(1, vec![t("H")]),
            bullets(vec![vec![t("x")]]),
            code_block(None, "code"),
        ])]
    );
}

#[test]
fn quote_nesting_is_capped() {
    let text = format!("{} deep", ">".repeat(20));
    let mut blocks = parse(&text);
    for _ in 0..MAX_QUOTE_DEPTH {
        match blocks.as_slice() {
            [Block::Quote(inner)] => blocks = inner.clone(),
            other => panic!("expected a quote, got {other:?}"),
        }
    }
    let rest = format!("{} deep", ">".repeat(20 - MAX_QUOTE_DEPTH));
    assert_eq!(blocks, vec![para(vec![t(&rest)])]);
}

// ---- inlines ----

#[test]
fn strong_and_emphasis() {
    assert_eq!(
        inline("**a** and __b__"),
        vec![strong(vec![t("a")]), t(" and "), strong(vec![t("b")])]
    );
    assert_eq!(
        inline("*a* and _b_"),
        vec![em(vec![t("a")]), t(" and "), em(vec![t("b")])]
    );
    assert_eq!(inline("a*b*c"), vec![t("a"), em(vec![t("b")]), t("c")]);
}

#[test]
fn intraword_underscores_are_text() {
    assert_eq!(
        inline("snake_case_names and a_b_c_"),
        vec![t("snake_case_names and a_b_c_")]
    );
    assert_eq!(
        inline("call my_func(x_1) now"),
        vec![t("call my_func(x_1) now")]
    );
}

#[test]
fn nested_emphasis() {
    assert_eq!(
        inline("***both***"),
        vec![em(vec![strong(vec![t("both")])])]
    );
    assert_eq!(
        inline("**bold *nested* bold**"),
        vec![strong(vec![t("bold "), em(vec![t("nested")]), t(" bold")])]
    );
    assert_eq!(
        inline("*a **b** c*"),
        vec![em(vec![t("a "), strong(vec![t("b")]), t(" c")])]
    );
    assert_eq!(
        inline("_a **b** c_"),
        vec![em(vec![t("a "), strong(vec![t("b")]), t(" c")])]
    );
    // The rule of three.
    assert_eq!(
        inline("*foo**bar**baz*"),
        vec![em(vec![t("foo"), strong(vec![t("bar")]), t("baz")])]
    );
}

#[test]
fn unmatched_delimiters_are_text() {
    assert_eq!(inline("**unclosed"), vec![t("**unclosed")]);
    assert_eq!(inline("a * b * c"), vec![t("a * b * c")]);
    assert_eq!(inline("**a*"), vec![t("*"), em(vec![t("a")])]);
    assert_eq!(inline("*a**"), vec![em(vec![t("a")]), t("*")]);
    assert_eq!(inline("*a_"), vec![t("*a_")]);
    assert_eq!(inline("2 * 3 = 6"), vec![t("2 * 3 = 6")]);
}

#[test]
fn emphasis_spans_lines() {
    assert_eq!(
        inline("**a\nb**"),
        vec![strong(vec![t("a"), Inline::Break, t("b")])]
    );
}

#[test]
fn emphasis_nesting_is_capped() {
    let n = 20;
    let text = format!("{}x{}", "*a ".repeat(n), " a*".repeat(n));
    let blocks = parse(&text);
    assert_eq!(depth(&blocks), MAX_EMPHASIS_DEPTH);
    let mut content = inline(&text);
    for level in 0..MAX_EMPHASIS_DEPTH {
        content = match content.as_slice() {
            [Inline::Emphasis(inner)] if level == 0 => inner.clone(),
            [_, Inline::Emphasis(inner), _] => inner.clone(),
            other => panic!("level {level}: {other:?}"),
        };
    }
    // The innermost delimiters are literal text.
    let deeper = n - MAX_EMPHASIS_DEPTH;
    let innermost = format!("a {}x{} a", "*a ".repeat(deeper), " a*".repeat(deeper));
    assert_eq!(content, vec![t(&innermost)]);
}

#[test]
fn backslash_escapes() {
    assert_eq!(inline(r"\*not em\*"), vec![t("*not em*")]);
    assert_eq!(
        inline(r"\_a\_ \# \[x\](y) \`z\`"),
        vec![t("_a_ # [x](y) `z`")]
    );
    assert_eq!(inline(r"\a \\ \é"), vec![t(r"\a \ \é")]);
    assert_eq!(inline("end\\"), vec![t("end\\")]);
    assert_eq!(
        parse(r"\# not a heading"),
        vec![para(vec![t("# not a heading")])]
    );
}

#[test]
fn code_spans() {
    assert_eq!(
        inline("use `cargo test` now"),
        vec![t("use "), code("cargo test"), t(" now")]
    );
    assert_eq!(inline("`` a`b ``"), vec![code("a`b")]);
    assert_eq!(inline("` `` `"), vec![code("``")]);
    assert_eq!(inline("` `"), vec![code(" ")]);
    assert_eq!(inline("`**not bold** <b>`"), vec![code("**not bold** <b>")]);
    assert_eq!(inline(r"`a\`b"), vec![code(r"a\"), t("b")]);
    assert_eq!(inline("`a\nb`"), vec![code("a\nb")]);
}

#[test]
fn unclosed_code_spans_are_text() {
    assert_eq!(inline("`unclosed"), vec![t("`unclosed")]);
    assert_eq!(inline("``a`"), vec![t("``a`")]);
    assert_eq!(inline(r"\`not code\`"), vec![t("`not code`")]);
    assert_eq!(inline("`a ``b`"), vec![code("a ``b")]);
}

#[test]
fn links() {
    assert_eq!(
        inline("see [the docs](https://example.com/docs)."),
        vec![
            t("see "),
            link("https://example.com/docs", vec![t("the docs")]),
            t(".")
        ]
    );
    assert_eq!(
        inline("[**bold** link](/a) [b](#top)"),
        vec![
            link("/a", vec![strong(vec![t("bold")]), t(" link")]),
            t(" "),
            link("#top", vec![t("b")]),
        ]
    );
    assert_eq!(
        inline("*[a](/b)*"),
        vec![em(vec![link("/b", vec![t("a")])])]
    );
    assert_eq!(
        inline("[mail](mailto:a@example.com)"),
        vec![link("mailto:a@example.com", vec![t("mail")])]
    );
    assert_eq!(
        inline("[`code`](x.html)"),
        vec![link("x.html", vec![code("code")])]
    );
}

#[test]
fn link_targets() {
    assert_eq!(
        inline("[wiki](https://en.wikipedia.org/wiki/Rust_(programming_language))"),
        vec![link(
            "https://en.wikipedia.org/wiki/Rust_(programming_language)",
            vec![t("wiki")]
        )]
    );
    assert_eq!(inline(r"[a](b\)c)"), vec![link("b)c", vec![t("a")])]);
    assert_eq!(
        inline("[x](https://a.example/\"onclick=alert(1))"),
        vec![link("https://a.example/\"onclick=alert(1)", vec![t("x")])]
    );
}

#[test]
fn broken_links_are_text() {
    for text in [
        "[a](/b",
        "[a] (b)",
        "[a]",
        "[a](b c)",
        "[a](<b>)",
        "[a](b \"title\")",
        "](x)",
    ] {
        assert_eq!(inline(text), vec![t(text)], "{text:?}");
    }
    // An empty target is refused, so only the text is left.
    assert_eq!(inline("[a]()x"), vec![t("a"), t("x")]);
}

#[test]
fn brackets_pair_with_the_nearest_opener() {
    assert_eq!(
        inline("[a [b](/c) d]"),
        vec![t("[a "), link("/c", vec![t("b")]), t(" d]")]
    );
    assert_eq!(
        inline("[a](/b)[c](/d)"),
        vec![link("/b", vec![t("a")]), link("/d", vec![t("c")])]
    );
    assert_eq!(
        inline("[outer [inner](/i)](/o)"),
        vec![t("[outer "), link("/i", vec![t("inner")]), t("](/o)")]
    );
    assert_eq!(inline(r"\[a](/b)"), vec![t("[a](/b)")]);
    assert_eq!(
        inline("[a `]` b](/c)"),
        vec![link("/c", vec![t("a "), code("]"), t(" b")])]
    );
    assert_eq!(inline("[a `](/c)`"), vec![t("[a "), code("](/c)")]);
}

#[test]
fn images_are_links() {
    assert_eq!(
        inline("![alt](https://example.com/a.png)"),
        vec![t("!"), link("https://example.com/a.png", vec![t("alt")])]
    );
}

#[test]
fn autolinks() {
    assert_eq!(
        inline("see https://example.com/a. Or http://b.example, too"),
        vec![
            t("see "),
            link("https://example.com/a", vec![t("https://example.com/a")]),
            t(". Or "),
            link("http://b.example", vec![t("http://b.example")]),
            t(", too"),
        ]
    );
    let wiki = "https://en.wikipedia.org/wiki/Rust_(programming_language)";
    assert_eq!(
        inline(&format!("({wiki})")),
        vec![t("("), link(wiki, vec![t(wiki)]), t(")")]
    );
    assert_eq!(
        inline("**https://a.example**"),
        vec![strong(vec![link(
            "https://a.example",
            vec![t("https://a.example")]
        )])]
    );
    assert_eq!(
        inline("http://a.example/snake_case_x_"),
        vec![
            link(
                "http://a.example/snake_case_x",
                vec![t("http://a.example/snake_case_x")]
            ),
            t("_"),
        ]
    );
}

#[test]
fn autolink_edges() {
    assert_eq!(inline("xhttps://a.example"), vec![t("xhttps://a.example")]);
    assert_eq!(inline("https://"), vec![t("https://")]);
    assert_eq!(inline("https://."), vec![t("https://.")]);
    assert_eq!(
        inline("`https://a.example`"),
        vec![code("https://a.example")]
    );
    assert_eq!(
        inline("[see https://a.example](https://b.example)"),
        vec![link("https://b.example", vec![t("see https://a.example")])]
    );
    assert_eq!(
        inline("<https://a.example>"),
        vec![
            t("<"),
            link("https://a.example", vec![t("https://a.example")]),
            t(">")
        ]
    );
}

// ---- safety ----

#[test]
fn raw_html_is_literal_text() {
    for payload in [
        "<img src=x onerror=alert(1)>",
        "<script>alert(1)</script>",
        "<a href=\"javascript:alert(1)\">x</a>",
        "<iframe srcdoc=\"<script>alert(1)</script>\"></iframe>",
        "<svg/onload=alert(1)>",
        "<!-- comment -->",
        "&amp; &lt;b&gt; &#106; &#x3C;script&#x3E;",
    ] {
        assert_eq!(parse(payload), vec![para(vec![t(payload)])], "{payload}");
    }
}

#[test]
fn raw_html_stays_literal_around_markdown() {
    assert_eq!(
        inline("<div onmouseover=\"alert(1)\">*hi*</div>"),
        vec![
            t("<div onmouseover=\"alert(1)\">"),
            em(vec![t("hi")]),
            t("</div>")
        ]
    );
    assert_eq!(
        parse("# <script>alert(1)</script>\n- <img src=x onerror=alert(1)>\n> <b>q</b>"),
        vec![
            heading(1, vec![t("<script>alert(1)</script>")]),
            bullets(vec![vec![t("<img src=x onerror=alert(1)>")]]),
            Block::Quote(vec![para(vec![t("<b>q</b>")])]),
        ]
    );
    assert_eq!(
        parse("```html\n<script>alert(1)</script>\n```"),
        vec![code_block(Some("html"), "<script>alert(1)</script>")]
    );
    assert_eq!(inline("`<script>`"), vec![code("<script>")]);
    assert_eq!(
        inline("[<img src=x onerror=alert(1)>](https://a.example)"),
        vec![link(
            "https://a.example",
            vec![t("<img src=x onerror=alert(1)>")]
        )]
    );
}

/// Link targets that must never become an `href`.
const HOSTILE: &[&str] = &[
    "javascript:alert(1)",
    "JavaScript:alert(1)",
    "JAVASCRIPT:alert(1)",
    "jAvAsCrIpT:alert(1)",
    "javascript://%0Aalert(1)",
    "javascript:/**/alert(1)",
    " javascript:alert(1)",
    "\tjavascript:alert(1)",
    "java\tscript:alert(1)",
    "java\nscript:alert(1)",
    "java\rscript:alert(1)",
    "java\u{0}script:alert(1)",
    "\u{1}javascript:alert(1)",
    "java\u{7f}script:alert(1)",
    "java\u{a0}script:alert(1)",
    "java\u{200b}script:alert(1)",
    "\u{feff}javascript:alert(1)",
    "javascript\u{3000}:alert(1)",
    "&#106;avascript:alert(1)",
    "&#x6A;avascript:alert(1)",
    "&#0000106avascript:alert(1)",
    "javascript&colon;alert(1)",
    "javascript&#58;alert(1)",
    "javascript&#x3a;alert(1)",
    "jav&#x09;ascript:alert(1)",
    "jav&Tab;ascript:alert(1)",
    "%6Aavascript:alert(1)",
    "javascript\\:alert(1)",
    "ｊavascript:alert(1)",
    "vbscript:msgbox(1)",
    "VBScript:msgbox(1)",
    "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
    "DATA:text/html,<script>alert(1)</script>",
    "file:///etc/passwd",
    "FILE://c:/windows",
    "blob:https://example.com/uuid",
    "ftp://example.com",
    "tel:123",
    "foo:bar",
    "",
];

#[test]
fn safe_href_refuses_hostile_targets() {
    for raw in HOSTILE {
        assert_eq!(safe_href(raw), None, "{raw:?}");
    }
}

#[test]
fn safe_href_accepts_web_mail_and_relative_targets() {
    for raw in [
        "https://example.com",
        "http://example.com/a?b=c&d=e#f",
        "HTTPS://EXAMPLE.COM",
        "mailto:someone@example.com",
        "//cdn.example.com/x.js",
        "/docs/page",
        "docs/page.html",
        "../up",
        "#section",
        "#a:b",
        "?q=1:2",
        "/wiki/Talk:Rust",
        "./a:b",
        "page?x=a&y=b",
    ] {
        assert_eq!(safe_href(raw), Some(raw.to_owned()), "{raw:?}");
    }
}

#[test]
fn hostile_links_render_as_text_only() {
    for raw in HOSTILE {
        let escaped = raw.replace('\\', "\\\\");
        for text in [
            format!("[click]({raw})"),
            format!("[click]({escaped})"),
            format!("a [**click**]({raw}) b"),
        ] {
            let blocks = parse(&text);
            assert_eq!(hrefs(&blocks), Vec::<String>::new(), "{text:?}: {blocks:?}");
        }
    }
    assert_eq!(
        inline("a [**click** me](javascript:alert(1)) b"),
        vec![t("a "), strong(vec![t("click")]), t(" me"), t(" b")]
    );
    assert_eq!(inline("[x](javascript:alert(1))"), vec![t("x")]);
    assert_eq!(inline(r"[x](javascript\:alert(1))"), vec![t("x")]);
    assert_eq!(inline("[x](&#106;avascript:alert(1))"), vec![t("x")]);
    assert_eq!(inline("[x](JaVaScRiPt:alert(1))"), vec![t("x")]);
    assert_eq!(
        inline("[x](java\tscript:alert(1))"),
        vec![t("[x](java\tscript:alert(1))")]
    );
}

// ---- streaming ----

const SAMPLE: &str = "# Setting up the relay

The relay needs **two** things: a *Sockudo* server and an `OPENAI_API_KEY`.
See [the docs](https://example.com/docs) or https://example.com/faq.

## Steps

1. Install the daemon:
2. Start it with `scripts/run`.
3. Open the page.

- works with snake_case_names
- and __strong__ text

> Note: keep the key secret.
> It is never sent to the page.

```rust
fn main() {
    println!(\"hello\");
}
```

---

Done.
";

#[test]
fn sample_answer_parses_to_the_expected_tree() {
    assert_eq!(
        parse(SAMPLE),
        vec![
            heading(1, vec![t("Setting up the relay")]),
            para(vec![
                t("The relay needs "),
                strong(vec![t("two")]),
                t(" things: a "),
                em(vec![t("Sockudo")]),
                t(" server and an "),
                code("OPENAI_API_KEY"),
                t("."),
                Inline::Break,
                t("See "),
                link("https://example.com/docs", vec![t("the docs")]),
                t(" or "),
                link(
                    "https://example.com/faq",
                    vec![t("https://example.com/faq")]
                ),
                t("."),
            ]),
            heading(2, vec![t("Steps")]),
            numbered(
                1,
                vec![
                    vec![t("Install the daemon:")],
                    vec![t("Start it with "), code("scripts/run"), t(".")],
                    vec![t("Open the page.")],
                ]
            ),
            bullets(vec![
                vec![t("works with snake_case_names")],
                vec![t("and "), strong(vec![t("strong")]), t(" text")],
            ]),
            Block::Quote(vec![para(vec![
                t("Note: keep the key secret."),
                Inline::Break,
                t("It is never sent to the page."),
            ])]),
            code_block(Some("rust"), "fn main() {\n    println!(\"hello\");\n}"),
            Block::Rule,
            para(vec![t("Done.")]),
        ]
    );
}

#[test]
fn every_prefix_of_the_sample_keeps_its_finished_blocks() {
    let full = parse(SAMPLE);
    for (end, _) in SAMPLE.char_indices().skip(1) {
        let prefix = &SAMPLE[..end];
        let blocks = parse(prefix);
        assert!(blocks.len() <= full.len(), "{prefix:?}");
        let finished = blocks.len().saturating_sub(1);
        assert_eq!(blocks[..finished], full[..finished], "{prefix:?}");
    }
}

#[test]
fn streaming_prefixes_of_a_code_block_are_open_code() {
    assert_eq!(
        parse("Run:\n```rust\nfn main() {\n    println!"),
        vec![
            para(vec![t("Run:")]),
            code_block(Some("rust"), "fn main() {\n    println!")
        ]
    );
    assert_eq!(
        parse("Run:\n```ru"),
        vec![para(vec![t("Run:")]), code_block(Some("ru"), "")]
    );
    assert_eq!(
        parse("Run:\n``"),
        vec![para(vec![t("Run:"), Inline::Break, t("``")])]
    );
}

#[test]
fn streaming_prefixes_of_inlines_are_text_until_closed() {
    assert_eq!(inline("a **bo"), vec![t("a **bo")]);
    assert_eq!(inline("a **bold**"), vec![t("a "), strong(vec![t("bold")])]);
    assert_eq!(inline("a `co"), vec![t("a `co")]);
    assert_eq!(
        inline("a [docs](https://exa"),
        vec![t("a [docs](https://exa")]
    );
    assert_eq!(
        inline("a [docs](https://example.com)"),
        vec![t("a "), link("https://example.com", vec![t("docs")])]
    );
}

#[test]
fn pathological_inputs_parse_in_linear_time() {
    let ticks: String = (1..400).map(|n| format!("{}x", "`".repeat(n))).collect();
    let inputs = [
        "**a ".repeat(20_000),
        "*a _b ".repeat(15_000),
        "_a *b __c **d ".repeat(8_000),
        "[a](".repeat(20_000),
        "[a](b".repeat(20_000),
        "[".repeat(80_000),
        "]".repeat(80_000),
        "[a]".repeat(25_000),
        "[a](((".repeat(15_000),
        "`".repeat(80_000),
        "` ``".repeat(20_000),
        ticks,
        "\\".repeat(80_000),
        "https://a.example/(".repeat(5_000),
        format!("{}x{}", "*a ".repeat(20_000), " a*".repeat(20_000)),
        format!("{}x", "> ".repeat(40_000)),
        "- a\n".repeat(20_000),
        "- a\n\n".repeat(20_000),
        "- a\n  b\n".repeat(20_000),
        "a\n".repeat(40_000),
        "```\n".repeat(20_000),
        "\n".repeat(80_000),
        "# *a* [b](c) `d`\n".repeat(5_000),
    ];
    let started = Instant::now();
    for input in &inputs {
        let blocks = parse(input);
        assert!(depth(&blocks) <= MAX_QUOTE_DEPTH + 2 * MAX_EMPHASIS_DEPTH + 1);
    }
    let elapsed = started.elapsed();
    // Linear parsing takes well under a second here even unoptimized; a quadratic one takes
    // minutes. The bound is loose because other builds share this machine.
    assert!(elapsed < Duration::from_secs(20), "took {elapsed:?}");
}

// ---- properties ----

/// `text` with each backslash escape of ASCII punctuation resolved, as the parser does.
fn unescape(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match chars.peek() {
            Some(&next) if c == '\\' && next.is_ascii_punctuation() => {
                out.push(next);
                chars.next();
            }
            _ => out.push(c),
        }
    }
    out
}

/// Every string the parser put in a tree: text, code, languages.
fn strings(blocks: &[Block], out: &mut Vec<String>) {
    fn inlines(content: &[Inline], out: &mut Vec<String>) {
        for inline in content {
            match inline {
                Inline::Text(s) | Inline::Code(s) => out.push(s.clone()),
                Inline::Strong(c) | Inline::Emphasis(c) | Inline::Link { content: c, .. } => {
                    inlines(c, out);
                }
                Inline::Break => {}
            }
        }
    }
    for block in blocks {
        match block {
            Block::Paragraph(c) | Block::Heading { content: c, .. } => inlines(c, out),
            Block::List { items, .. } => items.iter().for_each(|c| inlines(c, out)),
            Block::Quote(inner) => strings(inner, out),
            Block::Code { lang, text } => out.extend(lang.iter().chain([text]).cloned()),
            Block::Rule => {}
        }
    }
}

/// The parser invents no text, lets through only safe links and keeps nesting bounded.
fn check(input: &str) -> Result<(), TestCaseError> {
    let blocks = parse(input);
    let unescaped = unescape(input);
    let mut found = Vec::new();
    strings(&blocks, &mut found);
    for string in &found {
        for line in string.split('\n') {
            prop_assert!(
                input.contains(line) || unescaped.contains(line),
                "{line:?} is in neither the input nor its unescaped form: {blocks:?}"
            );
        }
    }
    for href in hrefs(&blocks) {
        prop_assert_eq!(safe_href(&href), Some(href.clone()));
        prop_assert!(
            input.contains(&href) || unescaped.contains(&href),
            "{href:?}"
        );
    }
    prop_assert!(depth(&blocks) <= MAX_QUOTE_DEPTH + 2 * MAX_EMPHASIS_DEPTH + 1);
    Ok(())
}

/// Pieces that mean something to the parser, to build Markdown-ish text from.
fn piece() -> impl Strategy<Value = &'static str> {
    select(vec![
        "*",
        "**",
        "***",
        "_",
        "__",
        "`",
        "``",
        "```",
        "~~~",
        "\n",
        "\n\n",
        " ",
        "  ",
        "\t",
        "\r",
        "[",
        "]",
        "(",
        ")",
        "](",
        "![",
        "\\",
        "#",
        "# ",
        "###### ",
        "> ",
        ">",
        "- ",
        "* ",
        "+ ",
        "1. ",
        "2) ",
        "---",
        "a",
        "b c",
        "snake_case",
        "é",
        "😀",
        "https://x.example/(a)",
        "http://",
        "javascript:alert(1)",
        "&#106;",
        "<script>",
        "!",
        ":",
        "/",
        "|",
        "\u{0}",
        "[a](",
        "[b](/c)",
        "[d](javascript:e)",
        "](#f)",
        "(g)",
        "\\*",
        "\\`",
        "\\[",
    ])
}

proptest! {
    #![proptest_config(ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn markdownish_text_parses_safely(pieces in vec(piece(), 0..60)) {
        let text = pieces.concat();
        check(&text)?;
        // Streaming: every prefix parses as well.
        for (end, _) in text.char_indices() {
            check(&text[..end])?;
        }
    }

    #[test]
    fn arbitrary_text_parses_safely(text in any::<String>()) {
        check(&text)?;
    }
}
