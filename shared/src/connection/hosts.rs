//! Which host each connection attempt goes to: the endpoint's own host first, every time
//! (RTN17i), then, when that host cannot be reached, each fallback host once in a random
//! order (RTN17j). With no fallback hosts (a custom endpoint, RTN17g) it is always the
//! endpoint's own host.

/// The hosts of one run of connection attempts.
#[derive(Debug, Default)]
pub(crate) struct Hosts {
    fallbacks: Vec<String>,
    /// Indices into `fallbacks`, shuffled when a run starts.
    order: Vec<usize>,
    /// How many fallback hosts this run has used (0: on the endpoint's own host).
    used: usize,
}

impl Hosts {
    pub(crate) fn new(fallbacks: Vec<String>) -> Self {
        let order = (0..fallbacks.len()).collect();
        Self {
            fallbacks,
            order,
            used: 0,
        }
    }

    /// Starts a run on the endpoint's own host, with the fallbacks in a new random order
    /// drawn from `random` (Fisher–Yates).
    pub(crate) fn restart(&mut self, mut random: impl FnMut() -> u64) {
        self.used = 0;
        for i in (1..self.order.len()).rev() {
            let bound = u64::try_from(i + 1).unwrap_or(u64::MAX);
            let j = usize::try_from(random() % bound).unwrap_or(0);
            self.order.swap(i, j);
        }
    }

    /// The host of the current attempt: `None` for the endpoint's own.
    pub(crate) fn current(&self) -> Option<&str> {
        let index = *self.order.get(self.used.checked_sub(1)?)?;
        self.fallbacks.get(index).map(String::as_str)
    }

    /// Moves to the next untried fallback host; `false` once every host was tried.
    pub(crate) fn advance(&mut self) -> bool {
        if self.used < self.fallbacks.len() {
            self.used += 1;
            true
        } else {
            false
        }
    }
}
