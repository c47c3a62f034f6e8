//! Appends delivered out of order, repeated or rolled up, placed by their `length` header:
//! the schedule the chaos test caught against Sockudo, replayed exactly, and a property test
//! over random schedules. At every step a subscriber's text is a prefix of the publisher's.

use proptest::collection::vec;
use proptest::prelude::*;
use serde_json::Value;

use super::*;
use crate::protocol::MessageVersion;

const SERIAL: &str = "01-answer";

/// A version serial that sorts by its number.
fn version(n: usize) -> Serial {
    Serial::new(format!("01-v{n:06}"))
}

/// What the relay publishes for one answer: a create, then one append per fragment, each
/// with the `length` header the relay sets (the text's byte length once applied).
struct Published {
    fragments: Vec<String>,
}

impl Published {
    fn new(fragments: &[&str]) -> Self {
        Self {
            fragments: fragments.iter().map(|f| (*f).to_owned()).collect(),
        }
    }

    fn text(&self) -> String {
        self.fragments.concat()
    }

    fn create(&self) -> Message {
        message(MessageAction::CREATE, version(0), "", 0)
    }

    /// Append `i` (0-based) as delivered: version `i + 1`, length through it.
    fn append(&self, i: usize) -> Message {
        let length: usize = self.fragments[..=i].iter().map(String::len).sum();
        message(
            MessageAction::APPEND,
            version(i + 1),
            &self.fragments[i],
            length,
        )
    }

    /// Appends `first..=last` rolled up into one delivery: their data concatenated, the
    /// latest one's version and headers (Ably's conflation rule).
    fn rolled_up(&self, first: usize, last: usize) -> Message {
        let mut msg = self.append(last);
        msg.data = Some(Value::String(self.fragments[first..=last].concat()));
        msg
    }

    fn update(&self) -> Message {
        let text = self.text();
        let length = text.len();
        message(
            MessageAction::UPDATE,
            version(self.fragments.len() + 1),
            &text,
            length,
        )
    }
}

fn message(action: MessageAction, version: Serial, data: &str, length: usize) -> Message {
    let mut msg = Message {
        name: Some(headers::ANSWER_NAME.to_owned()),
        serial: Some(Serial::new(SERIAL)),
        action: Some(action),
        version: Some(MessageVersion {
            serial: Some(version),
            ..MessageVersion::default()
        }),
        data: Some(Value::String(data.to_owned())),
        ..Message::default()
    };
    msg.insert_header(headers::STATUS, "streaming".to_owned());
    msg.insert_header(headers::LENGTH, length.to_string());
    msg
}

fn text(asm: &Assembler) -> &str {
    asm.answer(&Serial::new(SERIAL)).map_or("", Answer::text)
}

fn has_gap(asm: &Assembler) -> bool {
    asm.answer(&Serial::new(SERIAL))
        .is_some_and(Answer::has_gap)
}

/// The chaos test's failure, as a fixed schedule. After a resumed re-attach Sockudo sent
/// ATTACHED (RESUMED), then the live append N+3, and only then replayed N, N+1, N+2 and
/// N+3. Ordered by version alone, N+3 was applied and the replayed N..N+2 dropped as stale:
/// a hole of three whole appends until the final update. Placed by `length`, N+3 waits.
#[test]
fn a_live_append_before_the_resume_replay_is_held_until_the_replay_fills_the_gap() {
    let published = Published::new(&["The ", "quick ", "brown ", "fox ", "jumps ", "over"]);
    let mut asm = Assembler::new();
    asm.apply(&published.create()).unwrap();
    asm.apply(&published.append(0)).unwrap();
    asm.apply(&published.append(1)).unwrap();
    // The transport drops here; appends 2, 3 and 4 are missed. On the resumed attach the
    // live append 5 comes first.
    let changes = asm.apply(&published.append(5)).unwrap();
    assert_eq!(
        changes,
        vec![Change::Gap {
            serial: Serial::new(SERIAL)
        }]
    );
    assert_eq!(text(&asm), "The quick ", "the text stays a prefix");
    assert!(has_gap(&asm));
    // The replay: 2, 3, 4, then 5 again.
    asm.apply(&published.append(2)).unwrap();
    assert_eq!(text(&asm), "The quick brown ");
    asm.apply(&published.append(3)).unwrap();
    let changes = asm.apply(&published.append(4)).unwrap();
    // Append 4 closes the gap, and the held append 5 follows it at once.
    assert_eq!(
        changes,
        vec![
            Change::Appended {
                serial: Serial::new(SERIAL),
                delta: "jumps ".to_owned()
            },
            Change::Appended {
                serial: Serial::new(SERIAL),
                delta: "over".to_owned()
            },
        ]
    );
    assert_eq!(text(&asm), published.text());
    assert!(!has_gap(&asm));
    assert_eq!(asm.apply(&published.append(5)).unwrap(), vec![]);
    assert_eq!(text(&asm), published.text());
}

#[test]
fn a_rolled_up_replay_adds_only_what_is_new() {
    let published = Published::new(&["ab", "cé", "😀d", "e"]);
    let mut asm = Assembler::new();
    asm.apply(&published.create()).unwrap();
    asm.apply(&published.append(0)).unwrap();
    asm.apply(&published.append(1)).unwrap();
    // The server replays 1 and 2 rolled up into one delivery.
    let changes = asm.apply(&published.rolled_up(1, 2)).unwrap();
    assert_eq!(
        changes,
        vec![Change::Appended {
            serial: Serial::new(SERIAL),
            delta: "😀d".to_owned()
        }]
    );
    assert_eq!(text(&asm), "abcé😀d");
    assert!(!has_gap(&asm));
}

#[test]
fn an_append_that_contradicts_the_text_is_dropped_and_the_update_repairs() {
    let published = Published::new(&["one ", "two ", "three"]);
    let mut asm = Assembler::new();
    asm.apply(&published.create()).unwrap();
    asm.apply(&published.append(0)).unwrap();
    asm.apply(&published.append(1)).unwrap();
    // Claims to repeat "two " but carries other bytes.
    let mut bad = published.rolled_up(1, 2);
    bad.data = Some(Value::String("TWO three".to_owned()));
    let changes = asm.apply(&bad).unwrap();
    assert_eq!(
        changes,
        vec![Change::Gap {
            serial: Serial::new(SERIAL)
        }]
    );
    assert_eq!(text(&asm), "one two ");
    asm.apply(&published.update()).unwrap();
    assert_eq!(text(&asm), published.text());
    assert!(!has_gap(&asm));
}

#[test]
fn the_final_update_covers_held_appends_whose_gap_never_fills() {
    let published = Published::new(&["a", "b", "c", "d"]);
    let mut asm = Assembler::new();
    asm.apply(&published.create()).unwrap();
    asm.apply(&published.append(0)).unwrap();
    asm.apply(&published.append(2)).unwrap();
    asm.apply(&published.append(3)).unwrap();
    assert_eq!(text(&asm), "a");
    asm.apply(&published.update()).unwrap();
    assert_eq!(text(&asm), "abcd");
    assert!(!has_gap(&asm));
    // A late copy of the missing append changes nothing.
    assert_eq!(asm.apply(&published.append(1)).unwrap(), vec![]);
    assert_eq!(text(&asm), "abcd");
}

#[test]
fn a_subscriber_that_joins_mid_stream_waits_for_the_beginning() {
    let published = Published::new(&["x", "yy", "zzz", "w"]);
    let mut asm = Assembler::new();
    // Joined after the create and the first append: the first delivery is append 1. It is
    // held, not shown: a text without its beginning is not the publisher's text.
    let changes = asm.apply(&published.append(1)).unwrap();
    assert_eq!(
        changes,
        vec![
            Change::Created {
                serial: Serial::new(SERIAL),
                text: String::new(),
                partial: false
            },
            Change::Gap {
                serial: Serial::new(SERIAL)
            },
        ]
    );
    asm.apply(&published.append(3)).unwrap();
    asm.apply(&published.append(2)).unwrap();
    assert_eq!(text(&asm), "");
    // History (or a rewind) brings the beginning: everything held follows in order.
    asm.apply(&published.append(0)).unwrap();
    assert_eq!(text(&asm), "xyyzzzw");
    assert!(!has_gap(&asm));
    asm.apply(&published.update()).unwrap();
    assert_eq!(text(&asm), "xyyzzzw");
}

#[test]
fn held_appends_are_bounded_by_the_text_cap() {
    let published = Published::new(&["aaaa", "bbbb", "cccc", "dddd"]);
    let mut asm = Assembler::with_config(Config::default().with_max_text_bytes(10));
    asm.apply(&published.create()).unwrap();
    asm.apply(&published.append(0)).unwrap();
    asm.apply(&published.append(2)).unwrap();
    // No room to hold append 3 as well: it is dropped, and the text stays a prefix.
    asm.apply(&published.append(3)).unwrap();
    asm.apply(&published.append(1)).unwrap();
    assert_eq!(text(&asm), "aaaabbbbcc");
    assert!(published.text().starts_with(text(&asm)));
}

/// A server that refused an append but kept later ones stores a text with a hole; its
/// aggregate (a rewind, history) still carries the latest append's `length`, which the text
/// falls short of. Such a version is not applied: the text stays a prefix until a whole
/// version repairs it.
#[test]
fn a_full_version_shorter_than_its_length_is_not_shown() {
    let published = Published::new(&["one ", "two ", "three"]);
    let mut holed = published.append(2);
    holed.action = Some(MessageAction::UPDATE);
    holed.data = Some(Value::String("one three".to_owned()));
    // Joined by rewind: the first delivery is the holed aggregate.
    let mut asm = Assembler::new();
    let changes = asm.apply(&holed).unwrap();
    assert!(changes.contains(&Change::Gap {
        serial: Serial::new(SERIAL)
    }));
    assert_eq!(text(&asm), "");
    // Live appends after it are placed, and wait for the beginning.
    asm.apply(&published.append(0)).unwrap();
    assert_eq!(text(&asm), "one ");
    // The publisher's repair carries the whole text.
    asm.apply(&published.update()).unwrap();
    assert_eq!(text(&asm), published.text());
    assert!(!has_gap(&asm));
    // Seen by a viewer that had the text already, the holed version changes nothing.
    let mut asm = Assembler::new();
    asm.apply(&published.create()).unwrap();
    asm.apply(&published.append(0)).unwrap();
    assert!(!asm
        .apply(&holed)
        .unwrap()
        .iter()
        .any(|c| matches!(c, Change::Replaced { .. })));
    assert_eq!(text(&asm), "one ");
}

/// One delivery of a schedule: which appends (a rolled-up run `first..=last`).
#[derive(Clone, Debug)]
struct Delivery {
    first: usize,
    last: usize,
}

fn schedule(appends: usize) -> impl Strategy<Value = Vec<Delivery>> {
    let one = (0..appends, 0..3usize).prop_map(move |(first, run)| Delivery {
        first,
        last: (first + run).min(appends - 1),
    });
    vec(one, 0..3 * appends)
}

fn fragments() -> impl Strategy<Value = Vec<String>> {
    let alphabet = prop::sample::select(vec!['a', 'é', '€', '😀', ' ', '中']);
    vec(
        vec(alphabet, 0..4).prop_map(|c| c.into_iter().collect::<String>()),
        1..12,
    )
}

proptest! {
    /// Random order, repeats and roll-ups of length-tagged appends: the text is always a
    /// prefix of the publisher's, and once every append has arrived at least once it is the
    /// whole text, with no gap left.
    #[test]
    fn placed_appends_keep_a_prefix_and_converge(
        fragments in fragments(),
        extra in schedule(12),
        seed in any::<u64>(),
    ) {
        let parts: Vec<&str> = fragments.iter().map(String::as_str).collect();
        let published = Published::new(&parts);
        let n = fragments.len();
        // Every append once (in a shuffled order), plus random extra deliveries.
        let mut order: Vec<Delivery> = (0..n).map(|i| Delivery { first: i, last: i }).collect();
        order.extend(extra.into_iter().filter(|d| d.last < n));
        let mut state = seed | 1;
        for i in (1..order.len()).rev() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let j = usize::try_from(state % (i as u64 + 1)).unwrap_or(0);
            order.swap(i, j);
        }
        let full = published.text();
        let mut asm = Assembler::new();
        asm.apply(&published.create()).unwrap();
        for delivery in &order {
            asm.apply(&published.rolled_up(delivery.first, delivery.last)).unwrap();
            prop_assert!(full.starts_with(text(&asm)), "{:?} is not a prefix of {:?}", text(&asm), full);
        }
        prop_assert_eq!(text(&asm), full.as_str());
        prop_assert!(!has_gap(&asm));
    }
}
