# Shared helpers for the project's scripts: stage timing and installing what is missing.
# Sourced, not run.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PATH="$HOME/.cargo/bin:$PATH"

STAGES=()
stage() {
  # stage NAME COMMAND...: runs COMMAND, prints and records how long it took.
  local name="$1"; shift
  local start=$SECONDS
  echo "==> $name"
  "$@"
  local took=$((SECONDS - start))
  STAGES+=("$(printf '%-44s %5ss' "$name" "$took")")
  echo "<== $name (${took}s)"
}

print_stages() {
  echo
  echo "Stage timings:"
  printf '  %s\n' "${STAGES[@]}"
}

ensure_toolchain() {
  # rust-toolchain.toml pins 1.95.0 with the wasm32 target; `rustup toolchain install`
  # reads it and installs only what is missing.
  if ! command -v rustup >/dev/null 2>&1; then
    echo "rustup is required (https://rustup.rs); this machine kind ships it" >&2
    return 1
  fi
  rustup toolchain install
  rustc --version
}
