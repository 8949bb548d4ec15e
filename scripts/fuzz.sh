#!/usr/bin/env bash
# `make fuzz`: run every cargo-fuzz target in fuzz/ for FUZZ_SECONDS (default 60) each.
# Uses the nightly toolchain when rustup has one, else stable with RUSTC_BOOTSTRAP=1.
# Sanitizers are off (`-s none`): the targets look for panics, and safe Rust needs no ASan.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT/fuzz"

SECONDS_EACH="${FUZZ_SECONDS:-60}"
if ! cargo fuzz --version >/dev/null 2>&1; then
  log "installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  FUZZ=(cargo +nightly fuzz)
else
  export RUSTC_BOOTSTRAP=1
  FUZZ=(cargo fuzz)
fi
mkdir -p corpus
for target in $("${FUZZ[@]}" list); do
  mkdir -p "corpus/$target"
  log "fuzzing $target for ${SECONDS_EACH}s"
  "${FUZZ[@]}" run -s none "$target" "corpus/$target" "seeds/$target" -- \
    -max_total_time="$SECONDS_EACH" -rss_limit_mb=1024 2>&1 | tail -3
done
log "no crash found (artifacts would be in fuzz/artifacts/)"
