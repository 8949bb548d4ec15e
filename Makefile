.PHONY: test demo lint bench bench-quick

# Runs every test against real Prefect servers (and the emulator) on loopback.
test:
	scripts/test.sh

# Runs the guide's my_flow on the local emulator with a local Prefect server.
demo:
	scripts/demo.sh

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

# Side-by-side benchmarks with Prefect's Python ACI worker; rewrites bench/RESULTS.md (~1 h).
bench:
	bench/run.sh

# The CI-sized variant (~5 min).
bench-quick:
	bench/run.sh --quick
