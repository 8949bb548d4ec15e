.PHONY: test demo lint

# Runs every test against real Prefect servers (and the emulator) on loopback.
test:
	scripts/test.sh

# Runs the guide's my_flow on the local emulator with a local Prefect server.
demo:
	scripts/demo.sh

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
