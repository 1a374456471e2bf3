# edeploy — the commands a developer and CI run. `make test` is what .ci/run calls.
CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

.PHONY: build release test lint fmt bench fuzz clean

build:
	$(CARGO) build --workspace --all-targets

release:
	$(CARGO) build --release --workspace --bins

# Format check, lint, then every test of the workspace.
test: lint
	$(CARGO) test --workspace --all-targets
	$(CARGO) test --workspace --doc

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

bench: release
	bash bench/run.sh

clean:
	$(CARGO) clean
