//! Queue rollup for [`SimChannel::conflate_window`](super::SimChannel::conflate_window): the
//! merges Ably's conflation may make to deliveries of one serial.

use std::collections::BTreeMap;
use std::ops::Range;

use crate::ids::Serial;
use crate::protocol::{Message, MessageAction};

use super::join_payloads;

/// Merges deliveries of one serial inside `window` of `queue`; returns how many it removed.
///
/// A delivery that is stale against what is queued before it for its serial (an append whose
/// version is not newer, a full version that is older: a duplicate) is left alone and is never
/// a merge target, so a fragment is never merged twice.
pub(super) fn conflate(queue: &mut Vec<Message>, window: Range<usize>) -> usize {
    let end = window.end.min(queue.len());
    let start = window.start.min(end);
    let taken: Vec<Message> = queue.drain(start..end).collect();
    let before = taken.len();
    let mut out: Vec<Option<Message>> = Vec::with_capacity(before);
    // Per serial: the slot in `out` that a later delivery may merge into.
    let mut last: BTreeMap<Serial, usize> = BTreeMap::new();
    // Per serial: the newest version serial queued so far, counting what precedes the window.
    let mut newest: BTreeMap<Serial, Serial> = BTreeMap::new();
    for msg in queue.get(..start).unwrap_or_default() {
        if let (Some(serial), Some(version)) = (&msg.serial, msg.version_serial()) {
            if newest.get(serial).is_none_or(|seen| version > seen) {
                newest.insert(serial.clone(), version.clone());
            }
        }
    }
    for msg in taken {
        let (Some(serial), Some(version)) = (msg.serial.clone(), msg.version_serial().cloned())
        else {
            if let Some(serial) = &msg.serial {
                last.remove(serial);
            }
            out.push(Some(msg));
            continue;
        };
        // An append at a version already queued is a duplicate; a full version at that version
        // may be a resync that repairs a drop, so only an older one is stale.
        let stale = newest.get(&serial).is_some_and(|seen| match msg.action() {
            MessageAction::UPDATE | MessageAction::DELETE => &version < seen,
            _ => &version <= seen,
        });
        if stale {
            out.push(Some(msg));
            continue;
        }
        newest.insert(serial.clone(), version);
        let merged = last.get(&serial).copied().and_then(|index| {
            let prev = out.get(index)?.as_ref()?;
            Some((index, merge(prev, &msg)?))
        });
        // The merged delivery takes the earlier slot: any duplicate queued between the two
        // then follows it and stays recognisably stale.
        match merged.and_then(|(index, merged)| Some((out.get_mut(index)?, merged))) {
            Some((slot, merged)) => *slot = Some(merged),
            None => {
                out.push(Some(msg));
                last.insert(serial, out.len() - 1);
            }
        }
    }
    let kept: Vec<Message> = out.into_iter().flatten().collect();
    let removed = before - kept.len();
    queue.splice(start..start, kept);
    removed
}

/// The one delivery that stands for `prev` followed by `next` (same serial), if they merge.
fn merge(prev: &Message, next: &Message) -> Option<Message> {
    let (Some(prev_version), Some(next_version)) = (prev.version_serial(), next.version_serial())
    else {
        return None;
    };
    let prev_is_change = matches!(
        prev.action(),
        MessageAction::APPEND | MessageAction::UPDATE | MessageAction::DELETE
    );
    match next.action() {
        MessageAction::APPEND if prev_is_change && next_version > prev_version => {
            let (data, encoding) = join_payloads(prev, next)?;
            let mut merged = prev.clone();
            merged.data = data;
            merged.encoding = encoding;
            merged.version.clone_from(&next.version);
            if next.extras.is_some() {
                merged.extras.clone_from(&next.extras);
            }
            Some(merged)
        }
        MessageAction::UPDATE | MessageAction::DELETE
            if prev_is_change && next_version >= prev_version =>
        {
            Some(next.clone())
        }
        _ => None,
    }
}
