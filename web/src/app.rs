//! The page: a connection indicator, the conversation (prompts, and answers with live text
//! and a status badge), "Load earlier", and the prompt box.

use std::cell::RefCell;
use std::rc::Rc;

use leptos::prelude::*;
use leptos::task::spawn_local;
use shared::assembler::{Assembler, Change};
use shared::connection::{
    AttachOptions, Auth, ChannelState, Config, Connection, ConnectionState, Endpoint, Event,
};
use shared::headers::Status;
use shared::{ChannelName, Serial};

use crate::api::{self, PageConfig};
use crate::live::{Live, TokenFuture, Tokens};
use crate::render::Markdown;
use crate::rows::{Kind, Row, Rows};

/// Earlier messages replayed on attach.
const REWIND: u32 = 100;

/// What the page knows about its connection and channel.
#[derive(Clone, Copy)]
struct Page {
    rows: Rows,
    /// The connection state's name, and why it is in it.
    connection: RwSignal<(ConnectionState, Option<String>)>,
    channel: RwSignal<String>,
    /// A problem the person should see (cannot start, prompt refused, ...).
    notice: RwSignal<Option<String>>,
    /// Older history: `Some(None)` = the first page is next, `Some(Some(q))` = page `q`,
    /// `None` = nothing older.
    earlier: RwSignal<Option<Option<String>>>,
    loading_earlier: RwSignal<bool>,
    /// The publishers' wall clock as this page estimates it (ms since the Unix epoch),
    /// ticking once a second, against which leases lapse.
    now: RwSignal<i64>,
    shared: StoredValue<Shared, LocalStorage>,
}

/// Non-reactive state shared by the callbacks.
#[derive(Default)]
struct Shared {
    assembler: Rc<RefCell<Assembler>>,
    endpoint: Option<Endpoint>,
    token: Rc<RefCell<String>>,
    attach_serial: Rc<RefCell<Option<String>>>,
    live: Option<Live>,
}

/// Mounts the page on `<body>`.
pub fn start() {
    mount_to_body(App);
}

#[component]
fn App() -> impl IntoView {
    let page = Page {
        rows: Rows::default(),
        connection: RwSignal::new((ConnectionState::Initialized, None)),
        channel: RwSignal::new(String::new()),
        notice: RwSignal::new(None),
        earlier: RwSignal::new(Some(None)),
        loading_earlier: RwSignal::new(false),
        now: RwSignal::new(crate::live::server_now()),
        shared: StoredValue::new_local(Shared::default()),
    };
    spawn_local(async move {
        loop {
            gloo_timers::future::TimeoutFuture::new(LEASE_TICK_MS).await;
            page.now.set(crate::live::server_now());
        }
    });
    spawn_local(async move {
        if let Err(err) = boot(page).await {
            page.notice.set(Some(err));
            page.connection
                .set((ConnectionState::Failed, Some("could not start".to_owned())));
        }
    });
    let rows = page.rows.list;
    view! {
        <header class="top">
            <h1>"Live answers"</h1>
            <span class="channel" title="channel">{move || page.channel.get()}</span>
            <ConnectionBadge connection=page.connection />
        </header>
        <main class="conversation-pane">
            <Show when=move || {
                page.earlier.get().is_some() && !page.rows.list.with(Vec::is_empty)
            }>
                <button
                    class="earlier"
                    data-role="load-earlier"
                    disabled=move || page.loading_earlier.get()
                    on:click=move |_| spawn_local(load_earlier(page))
                >
                    {move || if page.loading_earlier.get() { "Loading…" } else { "Load earlier" }}
                </button>
            </Show>
            <ol class="conversation" aria-live="polite" aria-relevant="additions">
                <For
                    each=move || rows.get()
                    key=|row| row.serial.clone()
                    children=move |row| view! { <Turn row=row page=page /> }
                />
            </ol>
            <Show when=move || page.rows.list.with(Vec::is_empty)>
                <p class="empty">"No answers yet. Ask something below."</p>
            </Show>
        </main>
        <Show when=move || page.notice.get().is_some()>
            <p class="notice" role="alert">{move || page.notice.get().unwrap_or_default()}</p>
        </Show>
        <PromptForm page=page />
    }
}

/// Reads the config, gets a token, connects and attaches.
async fn boot(page: Page) -> Result<(), String> {
    let config = api::config().await?;
    let channel = channel_from_url().unwrap_or_else(|| config.channel.clone());
    page.channel.set(channel.clone());
    let endpoint = Endpoint::parse(&config.ably_endpoint).map_err(|e| e.to_string())?;
    let client_id = format!("viewer-{:08x}", (js_sys::Math::random() * 4.0e9) as u64);
    let token_cell: Rc<RefCell<String>> = Rc::default();
    let tokens = token_source(
        config,
        endpoint.clone(),
        channel.clone(),
        client_id,
        Rc::clone(&token_cell),
    );
    page.connection.set((ConnectionState::Connecting, None));
    let first = tokens().await?;
    let mut conn_config = Config::new(endpoint.clone(), Auth::Token(first.token), random_prefix());
    conn_config.jitter_seed = (js_sys::Math::random() * 9.0e15) as u64;
    let assembler: Rc<RefCell<Assembler>> = Rc::default();
    let attach_serial: Rc<RefCell<Option<String>>> = Rc::default();
    let on_event = {
        let assembler = Rc::clone(&assembler);
        let attach_serial = Rc::clone(&attach_serial);
        let channel = ChannelName::from(channel.as_str());
        move |conn: &Connection, event: Event| {
            on_event(page, &assembler, &attach_serial, &channel, conn, event);
        }
    };
    let live = Live::start(conn_config, Some(first.expires), tokens, on_event);
    live.attach(
        ChannelName::from(channel.as_str()),
        AttachOptions::rewind(REWIND),
    );
    page.shared.update_value(|shared| {
        shared.assembler = assembler;
        shared.endpoint = Some(endpoint);
        shared.token = token_cell;
        shared.attach_serial = attach_serial;
        shared.live = Some(live);
    });
    Ok(())
}

/// Fetches tokens for this page's channel, remembering the latest (for REST history).
fn token_source(
    config: PageConfig,
    endpoint: Endpoint,
    channel: String,
    client_id: String,
    latest: Rc<RefCell<String>>,
) -> Tokens {
    let config = Rc::new(config);
    Rc::new(move || -> TokenFuture {
        let (config, endpoint, channel, client_id, latest) = (
            Rc::clone(&config),
            endpoint.clone(),
            channel.clone(),
            client_id.clone(),
            Rc::clone(&latest),
        );
        Box::pin(async move {
            let details = api::token(&config, &endpoint, &channel, &client_id).await?;
            latest.replace(details.token.clone());
            Ok(details)
        })
    })
}

fn on_event(
    page: Page,
    assembler: &Rc<RefCell<Assembler>>,
    attach_serial: &Rc<RefCell<Option<String>>>,
    channel: &ChannelName,
    conn: &Connection,
    event: Event,
) {
    match event {
        Event::StateChanged {
            current, reason, ..
        } => page.connection.set((current, reason.map(|r| r.message))),
        Event::ChannelStateChanged {
            channel: name,
            current,
            resumed,
            reason,
            ..
        } if &name == channel => {
            if current == ChannelState::Attached {
                let first_attach = attach_serial.borrow().is_none();
                if let Some(serial) = conn.attach_serial(channel) {
                    attach_serial.replace(Some(serial.as_str().to_owned()));
                }
                if first_attach {
                    // Rewind replays at most 100 messages, and some servers count every
                    // append as one: the newest page of history fills in whole answers.
                    spawn_local(load_earlier(page));
                } else if !resumed {
                    // Continuity was lost (a new connection, or a re-attach that could not
                    // continue): catch up from history; full versions converge.
                    spawn_local(catch_up(page));
                }
            } else if current == ChannelState::Failed {
                page.notice.set(Some(format!(
                    "cannot show this channel: {}",
                    reason.map(|r| r.message).unwrap_or_default()
                )));
            }
        }
        Event::Message {
            channel: name,
            message,
        } if &name == channel => {
            let mut view = assembler.borrow_mut();
            if let Ok(changes) = view.apply(&message) {
                page.rows.apply(&changes, &view);
                if let Some(serial) = &message.serial {
                    page.rows.refresh_lease(serial, &view);
                }
                for change in &changes {
                    if let Change::Gap { serial } = change {
                        spawn_local(repair_gap(page, serial.clone()));
                    }
                }
            }
        }
        _ => {}
    }
}

/// How often the page checks whether a streaming answer's lease has lapsed.
const LEASE_TICK_MS: u32 = 1_000;

/// How long an answer may wait for a missing append before the page reads history.
const GAP_GRACE_MS: u32 = 1_500;

/// An append arrived before the one it follows; the answer shows a correct prefix and
/// holds the rest. If the missing part has not arrived after a short grace, the newest
/// page of history brings the answer's latest whole version.
async fn repair_gap(page: Page, serial: Serial) {
    gloo_timers::future::TimeoutFuture::new(GAP_GRACE_MS).await;
    let still = page.shared.with_value(|shared| {
        shared
            .assembler
            .borrow()
            .answer(&serial)
            .is_some_and(|answer| answer.has_gap())
    });
    if still {
        catch_up(page).await;
    }
}

/// Applies the newest page of history (after a gap in continuity).
async fn catch_up(page: Page) {
    let Some((endpoint, token, _, assembler)) = history_access(page) else {
        return;
    };
    let channel = page.channel.get_untracked();
    if let Ok(history) = api::history(&endpoint, &channel, &token, None, None).await {
        apply_history(page, &assembler, &history.messages);
    }
}

/// Loads the next page of older history.
async fn load_earlier(page: Page) {
    let Some(next) = page.earlier.get_untracked() else {
        return;
    };
    let Some((endpoint, token, from_serial, assembler)) = history_access(page) else {
        return;
    };
    page.loading_earlier.set(true);
    let channel = page.channel.get_untracked();
    let result = api::history(
        &endpoint,
        &channel,
        &token,
        from_serial.as_deref(),
        next.as_deref(),
    )
    .await;
    page.loading_earlier.set(false);
    match result {
        Ok(history) => {
            apply_history(page, &assembler, &history.messages);
            let more = history.next.is_some() && !history.messages.is_empty();
            page.earlier.set(more.then_some(history.next));
        }
        Err(err) => page
            .notice
            .set(Some(format!("could not load earlier answers: {err}"))),
    }
}

type Access = (Endpoint, String, Option<String>, Rc<RefCell<Assembler>>);

fn history_access(page: Page) -> Option<Access> {
    page.shared.with_value(|shared| {
        Some((
            shared.endpoint.clone()?,
            shared.token.borrow().clone(),
            shared.attach_serial.borrow().clone(),
            Rc::clone(&shared.assembler),
        ))
    })
}

fn apply_history(
    page: Page,
    assembler: &Rc<RefCell<Assembler>>,
    newest_first: &[shared::protocol::Message],
) {
    let mut view = assembler.borrow_mut();
    for message in newest_first.iter().rev() {
        if let Ok(changes) = view.apply(message) {
            page.rows.apply(&changes, &view);
            if let Some(serial) = &message.serial {
                page.rows.refresh_lease(serial, &view);
            }
        }
    }
}

#[component]
fn ConnectionBadge(connection: RwSignal<(ConnectionState, Option<String>)>) -> impl IntoView {
    let state = move || connection.with(|(state, _)| *state);
    let label = move || {
        let (state, reason) = connection.get();
        let word = match state {
            ConnectionState::Initialized | ConnectionState::Connecting => "connecting",
            ConnectionState::Connected => "connected",
            ConnectionState::Disconnected | ConnectionState::Suspended => "reconnecting",
            ConnectionState::Closing | ConnectionState::Closed => "closed",
            ConnectionState::Failed => "failed",
        };
        match (state, reason) {
            (ConnectionState::Failed, Some(reason)) => format!("failed: {reason}"),
            _ => word.to_owned(),
        }
    };
    view! {
        <p class="connection" role="status" data-connection-state=move || state().as_str()>
            <span class="dot" aria-hidden="true"></span>
            {label}
        </p>
    }
}

#[component]
fn Turn(row: Row, page: Page) -> impl IntoView {
    match row.kind {
        Kind::Prompt => view! {
            <li class="prompt" data-role="prompt" data-serial=row.serial.as_str().to_owned()>
                <p class="prompt-text">{move || row.text.get()}</p>
            </li>
        }
        .into_any(),
        Kind::Answer => view! { <Answer row=row page=page /> }.into_any(),
    }
}

#[component]
fn Answer(row: Row, page: Page) -> impl IntoView {
    let serial = row.serial.as_str().to_owned();
    let streaming = move || row.status.get() == Status::Streaming;
    // Streaming, but its publisher stopped renewing the lease: it may never end here.
    let stalled =
        move || streaming() && row.lease.get().is_some_and(|lease| page.now.get() > lease);
    let badge = move || {
        let status = row.status.get();
        if stalled() {
            return "stalled: the publisher stopped responding".to_owned();
        }
        match (status, row.detail.get()) {
            (Status::Incomplete, Some(reason)) => format!("incomplete: {reason}"),
            (Status::Failed, Some(error)) => format!("failed: {error}"),
            _ => status.as_str().to_owned(),
        }
    };
    let stopping = RwSignal::new(false);
    let stop = {
        let serial = serial.clone();
        move |_| {
            let serial = serial.clone();
            stopping.set(true);
            spawn_local(async move {
                let channel = page.channel.get_untracked();
                if let Err(err) = api::cancel(&channel, &serial).await {
                    page.notice
                        .set(Some(format!("could not stop the answer: {err}")));
                    stopping.set(false);
                }
            });
        }
    };
    view! {
        <li
            class="answer"
            data-role="answer"
            data-serial=serial
            data-status=move || row.status.get().as_str()
            data-partial=move || row.partial.get().to_string()
            data-stalled=move || stalled().to_string()
            aria-busy=move || streaming().to_string()
        >
            <div class="meta">
                <span
                    class="badge"
                    data-status=move || if stalled() { "stalled" } else { row.status.get().as_str() }
                >
                    {badge}
                </span>
                <Show when=move || row.partial.get()>
                    <span class="partial" title="This page joined while the answer was being written; the beginning arrives when it ends.">
                        "joined mid-stream"
                    </span>
                </Show>
                <Show when=streaming>
                    <button
                        class="stop"
                        data-role="stop"
                        disabled=move || stopping.get()
                        on:click=stop.clone()
                    >
                        "Stop"
                    </button>
                </Show>
            </div>
            <div class="text" data-role="text">
                <Markdown text=row.text />
            </div>
        </li>
    }
}

#[component]
fn PromptForm(page: Page) -> impl IntoView {
    let input = RwSignal::new(String::new());
    let sending = RwSignal::new(false);
    let send = move || {
        let text = input.get_untracked();
        if text.trim().is_empty() || sending.get_untracked() {
            return;
        }
        sending.set(true);
        spawn_local(async move {
            let channel = page.channel.get_untracked();
            match api::prompt(&channel, &text).await {
                Ok(()) => {
                    input.set(String::new());
                    page.notice.set(None);
                }
                Err(err) => page
                    .notice
                    .set(Some(format!("the prompt was not sent: {err}"))),
            }
            sending.set(false);
        });
    };
    view! {
        <form
            class="prompt-form"
            data-role="prompt-form"
            on:submit=move |ev| {
                ev.prevent_default();
                send();
            }
        >
            <label for="prompt-input" class="visually-hidden">"Your prompt"</label>
            <textarea
                id="prompt-input"
                name="prompt"
                rows="2"
                placeholder="Ask something… (Enter sends, Shift+Enter for a new line)"
                prop:value=move || input.get()
                on:input=move |ev| input.set(event_target_value(&ev))
                on:keydown=move |ev| {
                    if ev.key() == "Enter" && !ev.shift_key() && !ev.is_composing() {
                        ev.prevent_default();
                        send();
                    }
                }
            ></textarea>
            <button type="submit" disabled=move || sending.get()>
                {move || if sending.get() { "Sending…" } else { "Send" }}
            </button>
        </form>
    }
}

/// `?channel=` from the page's URL.
fn channel_from_url() -> Option<String> {
    let search = web_sys::window()?.location().search().ok()?;
    let params = web_sys::UrlSearchParams::new_with_str(&search).ok()?;
    params.get("channel").filter(|c| !c.is_empty())
}

fn random_prefix() -> String {
    format!("page{:08x}", (js_sys::Math::random() * 4.0e9) as u64)
}
