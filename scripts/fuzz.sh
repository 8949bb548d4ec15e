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
declare -A WHAT=(
  [templating]="any JSON (or text) as a template / base job template, plus any JSON values, through the templating and job-configuration functions"
  [arm_responses]="any bytes as ARM/AAD/IMDS response bodies"
  [prefect_responses]="any bytes as Prefect API response bodies"
)
ROWS=""
for target in $("${FUZZ[@]}" list); do
  mkdir -p "corpus/$target"
  log "fuzzing $target for ${SECONDS_EACH}s"
  out="$("${FUZZ[@]}" run -s none "$target" "corpus/$target" "seeds/$target" -- \
    -max_total_time="$SECONDS_EACH" -rss_limit_mb=1024 2>&1)" || {
    echo "$out" | tail -30
    log "$target FAILED: the crashing input is in fuzz/artifacts/$target/"
    exit 1
  }
  runs="$(echo "$out" | grep -oE 'Done [0-9]+ runs' | tail -1 | grep -oE '[0-9]+')"
  echo "$out" | tail -2
  ROWS+="| \`$target\` | ${WHAT[$target]:-} | ${runs:-?} | no panic |"$'\n'
done
cat > RESULTS.md <<DOC
## Fuzzing (cargo fuzz, libFuzzer)

Last run: \`make fuzz\`, ${SECONDS_EACH} s per target, \`-s none\` (no sanitizer: the targets
look for panics in safe Rust), on $(nproc) cores, $(date -u +%Y-%m-%d).

| Target | What it feeds | Executions | Result |
|---|---|--:|---|
${ROWS}
DOC
log "no crash found; results in fuzz/RESULTS.md"
