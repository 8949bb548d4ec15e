.PHONY: test demo lint soak fuzz bench bench-quick

# Runs every test against real Prefect servers (and the emulator) on loopback.
test:
	scripts/test.sh

# Runs the guide's my_flow on the local emulator with a local Prefect server.
demo:
	scripts/demo.sh

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

# The fault matrix in its long mode (20 worker kills, 60 s Prefect outage, more runs);
# rewrites docs/RELIABILITY.md.
soak:
	scripts/soak.sh

# cargo-fuzz targets (templating, ARM and Prefect response parsers); FUZZ_SECONDS per target.
fuzz:
	scripts/fuzz.sh

# Side-by-side benchmarks with Prefect's Python ACI worker; rewrites bench/RESULTS.md (~1 h).
bench:
	bench/run.sh

# The CI-sized variant (~5 min).
bench-quick:
	bench/run.sh --quick
