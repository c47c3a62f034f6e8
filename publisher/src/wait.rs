//! Waiting helpers for the drivers' `select!` loops.

/// Sleeps until `deadline`, or forever when there is none (a disabled branch).
pub(crate) async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
