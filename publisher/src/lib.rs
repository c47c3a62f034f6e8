//! The daemon (issue 3) will live here: tokio drivers around `shared` for OpenAI and Ably.
