//! Parses the Markdown subset of an answer into [`Block`]s and [`Inline`]s; renders nothing.
//! No HTML is ever interpreted: the renderer must turn every string here into a text node.
//!
//! Supported: paragraphs split by blank lines, with a single newline kept as [`Inline::Break`];
//! `#` to `######` headings; fenced code (three or more backticks or tildes, optional language);
//! `-`, `*`, `+`, `1.` and `1)` lists; `>` quotes; `---`, `***` and `___` rules; `**strong**`,
//! `__strong__`, `*em*` and `_em_` (an intraword `_` stays text); `` `code` ``; `[text](url)`
//! links; bare `http://` and `https://` autolinks; backslash escapes of ASCII punctuation.
//!
//! Left out on purpose: raw HTML and entities (`<b>` and `&amp;` stay literal text: what the
//! model wrote is shown as written, and there is no decoder to get wrong); images (`![a](b)`
//! is `!` then a link); tables; setext headings; indented code blocks; link titles and
//! reference links; lazy quote lines (a line without `>` ends the quote). Lists are flat: an
//! item's indented lines, nested items included, stay literal text in that item. Quotes hold
//! blocks and may nest.
//!
//! Every link target passes [`safe_href`]; a refused link keeps only its text.
//!
//! The page re-parses the whole answer on every streamed token, so parsing is linear-ish: closing
//! backticks are looked up in a table, a failed search for a link target or an emphasis opener
//! is never repeated, and quote and emphasis nesting are capped. It never panics. While
//! streaming, an unclosed fence is a code block running to the end, and an unclosed `**`,
//! backtick or bracket is literal text until its closer arrives.

/// Deepest `>` nesting; a deeper `>` stays literal text.
const MAX_QUOTE_DEPTH: usize = 8;
/// Deepest emphasis nesting; deeper delimiters stay literal text.
const MAX_EMPHASIS_DEPTH: usize = 16;

/// One block of an answer.
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum Block {
    /// Consecutive lines of text.
    Paragraph(Vec<Inline>),
    /// An ATX heading; `level` is 1..=6.
    Heading { level: u8, content: Vec<Inline> },
    /// A fenced code block, verbatim. `lang` is the first word after the opening fence.
    Code { lang: Option<String>, text: String },
    /// A flat list. `start` is the first item's number (1 for bullets); each item is one run of
    /// inlines, its lines separated by [`Inline::Break`].
    List {
        ordered: bool,
        start: u32,
        items: Vec<Vec<Inline>>,
    },
    /// A `>` quote: its lines, without the `>`, parsed again as blocks.
    Quote(Vec<Block>),
    /// A thematic break (`---`).
    Rule,
}

/// A span of text inside a block.
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum Inline {
    /// Literal text, with backslash escapes resolved and nothing else decoded. Neighbouring
    /// texts are merged, except on either side of a refused link's text.
    Text(String),
    Strong(Vec<Inline>),
    Emphasis(Vec<Inline>),
    /// A code span, verbatim. It may hold a newline, which renders as a space.
    Code(String),
    /// A link whose `href` passed [`safe_href`].
    Link {
        href: String,
        content: Vec<Inline>,
    },
    /// A line break inside a paragraph or list item.
    Break,
}

/// Parses an answer, or a prefix of one, into blocks.
pub fn parse(text: &str) -> Vec<Block> {
    let lines: Vec<&str> = text
        .split('\n')
        .map(|line| line.strip_suffix('\r').unwrap_or(line))
        .collect();
    blocks(&lines, 0)
}

/// Returns `raw`, unchanged, if it is safe as a link target. Allowed: `http:`, `https:` and
/// `mailto:` in any case, and links without a scheme (paths, `//host`, `?query`, `#fragment`),
/// whose first `:` must come after a `/`, `?` or `#`. Refused: every other scheme, whitespace
/// or control characters anywhere (`java\tscript:`), and a `&` before the first `/`, `?` or `#`
/// (entity tricks such as `&#106;avascript:`).
pub fn safe_href(raw: &str) -> Option<String> {
    if raw.is_empty() || raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return None;
    }
    let head = &raw[..raw.find(['/', '?', '#']).unwrap_or(raw.len())];
    if head.contains('&') {
        return None;
    }
    match head.find(':') {
        None => Some(raw.to_owned()),
        Some(colon) => ["http", "https", "mailto"]
            .iter()
            .any(|scheme| head[..colon].eq_ignore_ascii_case(scheme))
            .then(|| raw.to_owned()),
    }
}

/// Parses lines inside `depth` quotes.
fn blocks(lines: &[&str], depth: usize) -> Vec<Block> {
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(&line) = lines.get(i) {
        // Each reader takes the block starting at `lines[i]` and returns how many lines it used.
        let lines = &lines[i..];
        let (indent, rest) = split_indent(line);
        i += if rest.is_empty() {
            1
        } else if let Some(fence) = fence(rest) {
            code_block(lines, indent, fence, &mut out)
        } else if let Some((level, text)) = heading(rest) {
            let content = inlines(text);
            out.push(Block::Heading { level, content });
            1
        } else if is_rule(rest) {
            out.push(Block::Rule);
            1
        } else if depth < MAX_QUOTE_DEPTH && rest.starts_with('>') {
            let inner: Vec<&str> = lines
                .iter()
                .map_while(|line| split_indent(line).1.strip_prefix('>'))
                .map(|rest| rest.strip_prefix([' ', '\t']).unwrap_or(rest))
                .collect();
            out.push(Block::Quote(blocks(&inner, depth + 1)));
            inner.len()
        } else if let Some(first) = marker(rest) {
            list(lines, indent, &first, depth, &mut out)
        } else {
            paragraph(lines, depth, &mut out)
        };
    }
    out
}

/// Splits a line into its indentation width (a tab counts 4) and the rest.
fn split_indent(line: &str) -> (usize, &str) {
    let rest = line.trim_start_matches([' ', '\t']);
    let indent = &line[..line.len() - rest.len()];
    (indent.len() + 3 * indent.matches('\t').count(), rest)
}

/// Whether a line starts a block, ending a paragraph or list item before it.
fn starts_block(rest: &str, depth: usize) -> bool {
    fence(rest).is_some()
        || heading(rest).is_some()
        || is_rule(rest)
        || (depth < MAX_QUOTE_DEPTH && rest.starts_with('>'))
}

/// An opening code fence: its character, its length and the language.
fn fence(rest: &str) -> Option<(u8, usize, Option<&str>)> {
    let ch = *rest
        .as_bytes()
        .first()
        .filter(|&&b| b == b'`' || b == b'~')?;
    let len = run_len(rest.as_bytes(), 0);
    let info = rest[len..].trim();
    let valid = len >= 3 && !(ch == b'`' && info.contains('`'));
    valid.then(|| (ch, len, info.split_whitespace().next()))
}

fn code_block(
    lines: &[&str],
    indent: usize,
    (ch, len, lang): (u8, usize, Option<&str>),
    out: &mut Vec<Block>,
) -> usize {
    let closes = |line: &&str| {
        let rest = split_indent(line).1;
        let run = rest.bytes().take_while(|&b| b == ch).count();
        run >= len && rest[run..].trim().is_empty()
    };
    let end = lines[1..]
        .iter()
        .position(closes)
        .map_or(lines.len(), |n| n + 1);
    let body: Vec<&str> = lines[1..end]
        .iter()
        .map(|line| {
            let skip = line
                .bytes()
                .take(indent)
                .take_while(|&b| b == b' ' || b == b'\t');
            &line[skip.count()..]
        })
        .collect();
    let (lang, text) = (lang.map(str::to_owned), body.join("\n"));
    out.push(Block::Code { lang, text });
    (end + 1).min(lines.len())
}

/// `## Title ##` → `(2, "Title")`.
fn heading(rest: &str) -> Option<(u8, &str)> {
    let level = rest.bytes().take_while(|&b| b == b'#').count();
    let after = &rest[level..];
    if !(1..=6).contains(&level) || !(after.is_empty() || after.starts_with([' ', '\t'])) {
        return None;
    }
    let text = after.trim();
    let unclosed = text.trim_end_matches('#');
    let closed = unclosed.is_empty() || unclosed.ends_with([' ', '\t']);
    Some((
        u8::try_from(level).ok()?,
        if closed { unclosed.trim_end() } else { text },
    ))
}

fn is_rule(rest: &str) -> bool {
    let ch = rest.as_bytes().first().copied().unwrap_or(b' ');
    matches!(ch, b'-' | b'*' | b'_')
        && rest.bytes().all(|b| b == ch || b == b' ' || b == b'\t')
        && rest.bytes().filter(|&b| b == ch).count() >= 3
}

/// A list item's marker and the text after it.
struct Marker<'a> {
    /// The bullet, or the `.` or `)` after the number: another one starts another list.
    kind: u8,
    /// The number of an ordered item.
    number: Option<u32>,
    content: &'a str,
}

fn marker(rest: &str) -> Option<Marker<'_>> {
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let kind = *rest.as_bytes().get(digits)?;
    let number = match (digits, kind) {
        (0, b'-' | b'*' | b'+') => None,
        (1..=9, b'.' | b')') => Some(rest[..digits].parse().ok()?),
        _ => return None,
    };
    let after = &rest[digits + 1..];
    let content = after.trim();
    (after.is_empty() || after.starts_with([' ', '\t'])).then_some(Marker {
        kind,
        number,
        content,
    })
}

fn paragraph(lines: &[&str], depth: usize, out: &mut Vec<Block>) -> usize {
    // Only a non-empty item, and of an ordered list only one starting at 1, ends a paragraph.
    let item = |rest: &str| {
        marker(rest).is_some_and(|m| !m.content.is_empty() && m.number.is_none_or(|n| n == 1))
    };
    let more = lines[1..]
        .iter()
        .map(|line| split_indent(line).1)
        .take_while(|rest| !rest.is_empty() && !starts_block(rest, depth) && !item(rest))
        .count();
    let text: Vec<&str> = lines[..=more]
        .iter()
        .map(|line| split_indent(line).1.trim_end())
        .collect();
    out.push(Block::Paragraph(inlines(&text.join("\n"))));
    more + 1
}

/// Reads a flat list: items of the same kind, with their indented and lazy lines.
fn list(
    lines: &[&str],
    indent: usize,
    first: &Marker,
    depth: usize,
    out: &mut Vec<Block>,
) -> usize {
    let next_item = |width: usize, rest| {
        marker(rest).filter(|m| width < indent + 2 && m.kind == first.kind && !is_rule(rest))
    };
    let mut items = vec![vec![first.content]];
    let mut i = 1;
    while let (Some(&line), Some(item)) = (lines.get(i), items.last_mut()) {
        let (width, rest) = split_indent(line);
        i += 1;
        if rest.is_empty() {
            // Blank lines end the list unless an item or an indented line follows.
            let Some(blank) = lines[i..]
                .iter()
                .position(|l| !split_indent(l).1.is_empty())
            else {
                break;
            };
            let (width, rest) = split_indent(lines[i + blank]);
            if width >= indent + 2 && fence(rest).is_none() {
                item.push("");
            } else if next_item(width, rest).is_none() {
                break;
            }
            i += blank;
        } else if let Some(next) = next_item(width, rest) {
            items.push(vec![next.content]);
        } else if fence(rest).is_some()
            || (width < indent + 2 && (starts_block(rest, depth) || marker(rest).is_some()))
        {
            i -= 1;
            break;
        } else {
            item.push(rest.trim_end());
        }
    }
    out.push(Block::List {
        ordered: first.number.is_some(),
        start: first.number.unwrap_or(1),
        items: items
            .iter()
            .map(|lines| inlines(lines.join("\n").trim_matches('\n')))
            .collect(),
    });
    i.min(lines.len())
}

/// A piece of a block's text before emphasis is resolved.
enum Piece {
    Done(Inline),
    /// Index of a [`Run`].
    Delim(usize),
    /// Text on either side must not merge (around a refused link's text).
    Seam,
}

/// A run of `*` or `_` that may open or close emphasis.
struct Run {
    ch: u8,
    len: usize,
    /// Characters not matched yet; they end up as text.
    left: usize,
    open: bool,
    close: bool,
    /// Matches as an opener, innermost first: `true` for strong.
    opens: Vec<bool>,
    /// Matches as a closer, innermost first.
    closes: Vec<bool>,
}

/// Bytes that may start something other than plain text (`h` for autolinks).
const SPECIAL: &[u8] = b"\\`*_[]\nh";

/// Scans one block's text into pieces: code spans, links and autolinks are found here.
#[derive(Default)]
struct Scanner<'a> {
    src: &'a str,
    pos: usize,
    pieces: Vec<Piece>,
    runs: Vec<Run>,
    /// Piece indices of the `[` that may still open a link.
    brackets: Vec<usize>,
    /// Text not yet pushed as a piece.
    text: String,
    /// Every backtick run as `(length, start)`, sorted; built at the first backtick.
    ticks: Option<Vec<(usize, usize)>>,
}

fn inlines(src: &str) -> Vec<Inline> {
    let mut scanner = Scanner {
        src,
        ..Scanner::default()
    };
    scanner.scan();
    scanner.flush();
    resolve(scanner.pieces, &mut scanner.runs)
}

impl Scanner<'_> {
    fn scan(&mut self) {
        let src = self.src;
        let bytes = src.as_bytes();
        while let Some(&b) = bytes.get(self.pos) {
            match b {
                b'\\' => {
                    let escaped = bytes.get(self.pos + 1).filter(|c| c.is_ascii_punctuation());
                    self.text.push(char::from(*escaped.unwrap_or(&b)));
                    self.pos += 1 + usize::from(escaped.is_some());
                }
                b'`' => self.code_span(),
                b'*' | b'_' => self.delimiters(b),
                b'[' => {
                    self.emit(Piece::Done(Inline::Text("[".to_owned())));
                    self.brackets.push(self.pieces.len() - 1);
                    self.pos += 1;
                }
                b']' => self.close_bracket(),
                b'\n' => {
                    self.emit(Piece::Done(Inline::Break));
                    self.pos += 1;
                }
                b'h' if self.autolink() => {}
                _ => {
                    // Special bytes are ASCII, so `end` is a char boundary.
                    let end = bytes[self.pos + 1..]
                        .iter()
                        .position(|b| SPECIAL.contains(b));
                    let end = end.map_or(bytes.len(), |n| self.pos + 1 + n);
                    self.text.push_str(&src[self.pos..end]);
                    self.pos = end;
                }
            }
        }
    }

    /// Pushes the pending text as a piece.
    fn flush(&mut self) {
        if !self.text.is_empty() {
            let text = std::mem::take(&mut self.text);
            self.pieces.push(Piece::Done(Inline::Text(text)));
        }
    }

    /// Pushes the pending text, then `piece`.
    fn emit(&mut self, piece: Piece) {
        self.flush();
        self.pieces.push(piece);
    }

    fn code_span(&mut self) {
        let src = self.src;
        let bytes = src.as_bytes();
        let ticks = run_len(bytes, self.pos);
        let body = self.pos + ticks;
        // The closer is the next run of exactly as many backticks.
        let runs = self.ticks.get_or_insert_with(|| tick_runs(bytes));
        let next = runs.get(runs.partition_point(|&run| run < (ticks, body)));
        let close = next.filter(|run| run.0 == ticks).map(|run| run.1);
        if let Some(close) = close {
            let code = &src[body..close];
            let inner = code.strip_prefix(' ').and_then(|c| c.strip_suffix(' '));
            let code = inner
                .filter(|_| code.bytes().any(|b| b != b' '))
                .unwrap_or(code);
            self.emit(Piece::Done(Inline::Code(code.to_owned())));
        } else {
            self.text.push_str(&src[self.pos..body]);
        }
        self.pos = close.map_or(body, |close| close + ticks);
    }

    /// A `*` or `_` run, with CommonMark's flanking rules.
    fn delimiters(&mut self, ch: u8) {
        let len = run_len(self.src.as_bytes(), self.pos);
        let (before, after) = (&self.src[..self.pos], &self.src[self.pos + len..]);
        let (before, after) = (before.chars().next_back(), after.chars().next());
        let space = |c: Option<char>| c.is_none_or(char::is_whitespace);
        let punct = |c: Option<char>| c.is_some_and(|c| c.is_ascii_punctuation());
        let left = !space(after) && (!punct(after) || space(before) || punct(before));
        let right = !space(before) && (!punct(before) || space(after) || punct(after));
        let (open, close) = match ch {
            b'*' => (left, right),
            _ => (
                left && (!right || punct(before)),
                right && (!left || punct(after)),
            ),
        };
        if open || close {
            self.emit(Piece::Delim(self.runs.len()));
            let (opens, closes) = (Vec::new(), Vec::new());
            let left = len;
            self.runs.push(Run {
                ch,
                len,
                left,
                open,
                close,
                opens,
                closes,
            });
        } else {
            self.text.push_str(&self.src[self.pos..self.pos + len]);
        }
        self.pos += len;
    }

    fn close_bracket(&mut self) {
        let open = self.brackets.pop();
        let target = open.and_then(|_| destination(self.src, self.pos + 1));
        let (Some(open), Some((raw, end))) = (open, target) else {
            self.text.push(']');
            self.pos += 1;
            return;
        };
        self.flush();
        // Links do not nest: no earlier `[` may open one now, and autolinks keep their text.
        self.brackets.clear();
        let mut content = Vec::new();
        for piece in self.pieces.drain(open + 1..) {
            match piece {
                Piece::Done(Inline::Link { content: text, .. }) => {
                    content.extend(text.into_iter().map(Piece::Done));
                }
                piece => content.push(piece),
            }
        }
        self.pieces.truncate(open);
        let content = resolve(content, &mut self.runs);
        if let Some(href) = safe_href(&raw) {
            self.pieces
                .push(Piece::Done(Inline::Link { href, content }));
        } else {
            self.pieces.push(Piece::Seam);
            self.pieces.extend(content.into_iter().map(Piece::Done));
            self.pieces.push(Piece::Seam);
        }
        self.pos = end;
    }

    /// Takes a bare `http(s)://` link at `pos`, leaving trailing punctuation out of it.
    fn autolink(&mut self) -> bool {
        let (before, rest) = self.src.split_at(self.pos);
        let scheme = ["https://", "http://"]
            .into_iter()
            .find(|s| rest.starts_with(s));
        // Not inside a word, nor in a link target still being streamed.
        let inside = before.ends_with("](")
            || before
                .chars()
                .next_back()
                .is_some_and(char::is_alphanumeric);
        let (Some(scheme), false) = (scheme, inside) else {
            return false;
        };
        let end = rest.find(|c: char| c.is_whitespace() || c.is_control() || "<>[]`\\".contains(c));
        let mut url = &rest[..end.unwrap_or(rest.len())];
        let mut unbalanced = url
            .matches(')')
            .count()
            .saturating_sub(url.matches('(').count());
        while let Some(last) = url.chars().next_back() {
            if last == ')' && unbalanced > 0 {
                unbalanced -= 1;
            } else if !".,:;!?*_~'\"".contains(last) {
                break;
            }
            url = &url[..url.len() - 1];
        }
        let Some(href) = safe_href(url).filter(|_| url.len() > scheme.len()) else {
            return false;
        };
        let content = vec![Inline::Text(url.to_owned())];
        self.emit(Piece::Done(Inline::Link { href, content }));
        self.pos += url.len();
        true
    }
}

/// Length of the run of equal bytes starting at `at`.
fn run_len(bytes: &[u8], at: usize) -> usize {
    let first = bytes.get(at);
    bytes[at.min(bytes.len())..]
        .iter()
        .take_while(|&b| Some(b) == first)
        .count()
}

/// Every run of backticks as `(length, start)`, sorted.
fn tick_runs(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut runs = Vec::new();
    let mut at = 0;
    while let Some(found) = bytes[at..].iter().position(|&b| b == b'`') {
        let len = run_len(bytes, at + found);
        runs.push((len, at + found));
        at += found + len;
    }
    runs.sort_unstable();
    runs
}

/// Reads `(target)` at `at`: the unescaped target and the index after `)`. Parentheses must
/// balance; whitespace, `<`, `>`, `[` and `]` end the attempt, so failed attempts never overlap.
fn destination(src: &str, at: usize) -> Option<(String, usize)> {
    let rest = src.get(at..)?.strip_prefix('(')?;
    let mut target = String::new();
    let mut depth = 0usize;
    let mut chars = rest.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => match chars.clone().next() {
                Some((_, next)) if next.is_ascii_punctuation() => {
                    chars.next();
                    target.push(next);
                }
                _ => target.push(c),
            },
            ')' if depth == 0 => return Some((target, at + i + 2)),
            '(' => depth += 1,
            ')' => depth -= 1,
            '<' | '>' | '[' | ']' => return None,
            _ if c.is_whitespace() || c.is_control() => return None,
            _ => {}
        }
        if c != '\\' {
            target.push(c);
        }
    }
    None
}

/// Matches emphasis delimiters and builds the inline tree.
fn resolve(pieces: Vec<Piece>, runs: &mut [Run]) -> Vec<Inline> {
    match_runs(&pieces, runs);
    let mut tree = Tree::default();
    for piece in pieces {
        let run = match piece {
            Piece::Done(inline) => {
                tree.push(inline);
                continue;
            }
            Piece::Seam => {
                tree.seam = tree.out.len();
                continue;
            }
            Piece::Delim(r) => &runs[r],
        };
        for &strong in &run.closes {
            tree.close(run.ch, strong);
        }
        if run.left > 0 {
            tree.push(marks(run.ch, run.left));
        }
        for &strong in run.opens.iter().rev() {
            tree.open(run.ch, strong);
        }
    }
    tree.out
}

/// `n` delimiter characters as text.
fn marks(ch: u8, n: usize) -> Inline {
    Inline::Text(char::from(ch).to_string().repeat(n))
}

/// The inline tree under construction.
#[derive(Default)]
struct Tree {
    out: Vec<Inline>,
    /// Open emphasis: where its content starts in `out`, and whether it is too deep and so
    /// kept as literal text.
    frames: Vec<(usize, bool)>,
    /// Text at or after this index of `out` must not merge with text before it.
    seam: usize,
}

impl Tree {
    /// Pushes an inline, merging text into text within the same emphasis.
    fn push(&mut self, inline: Inline) {
        let floor = self.frames.last().map_or(0, |f| f.0).max(self.seam);
        let merge = self.out.len() > floor;
        if let (true, Inline::Text(text), Some(Inline::Text(last))) =
            (merge, &inline, self.out.last_mut())
        {
            last.push_str(text);
        } else {
            self.out.push(inline);
        }
    }

    fn open(&mut self, ch: u8, strong: bool) {
        if self.frames.len() < MAX_EMPHASIS_DEPTH {
            self.frames.push((self.out.len(), false));
        } else {
            self.push(marks(ch, 1 + usize::from(strong)));
            let floor = self.frames.last().map_or(0, |f| f.0);
            self.frames.push((floor, true));
        }
    }

    fn close(&mut self, ch: u8, strong: bool) {
        match self.frames.pop() {
            Some((_, true)) => self.push(marks(ch, 1 + usize::from(strong))),
            Some((start, false)) => {
                let content = self.out.split_off(start.min(self.out.len()));
                self.out.push(if strong {
                    Inline::Strong(content)
                } else {
                    Inline::Emphasis(content)
                });
                self.seam = self.seam.min(self.out.len());
            }
            None => {}
        }
    }
}

/// Records in each run which of its characters open or close emphasis: CommonMark's
/// algorithm, with the rule of three.
fn match_runs(pieces: &[Piece], runs: &mut [Run]) {
    // Openers with characters left, as indices into `runs`.
    let mut stack: Vec<usize> = Vec::new();
    // For each kind of closer, no opener below this height of `stack` matches it.
    let mut floors = [0usize; 12];
    for piece in pieces {
        let Piece::Delim(c) = *piece else { continue };
        let (ch, len, opens) = (runs[c].ch, runs[c].len, runs[c].open);
        let kind = usize::from(ch == b'_') * 6 + usize::from(opens) * 3 + len % 3;
        while runs[c].close && runs[c].left > 0 {
            let found = (floors[kind]..stack.len()).rev().find(|&k| {
                let opener = &runs[stack[k]];
                let odd = (opener.close || opens)
                    && (opener.len + len).is_multiple_of(3)
                    && !(opener.len.is_multiple_of(3) && len.is_multiple_of(3));
                opener.ch == ch && !odd
            });
            let Some(k) = found else {
                floors[kind] = stack.len();
                break;
            };
            let o = stack[k];
            let strong = runs[o].left >= 2 && runs[c].left >= 2;
            let used = 1 + usize::from(strong);
            runs[o].left -= used;
            runs[o].opens.push(strong);
            runs[c].left -= used;
            runs[c].closes.push(strong);
            // Openers between the pair can no longer match anything.
            stack.truncate(if runs[o].left == 0 { k } else { k + 1 });
            for floor in &mut floors {
                *floor = (*floor).min(stack.len());
            }
        }
        if runs[c].open && runs[c].left > 0 {
            stack.push(c);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
