# edeploy — the commands a developer and CI run. `make test` is what .ci/run calls.
CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

.PHONY: build release test lint fmt bench fuzz demo clean

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

# Runs the cargo-fuzz targets (10 minutes each by default: make fuzz FUZZ_SECONDS=60 for less).
FUZZ_SECONDS ?= 600
fuzz:
	bash scripts/fuzz.sh $(FUZZ_SECONDS)

# The main job on the embedded defaults: detect this machine, ask the example config dir which
# profile it would get and why, then run the provisioning server and upload a QEMU guest's list.
demo: release
	bash scripts/demo.sh

clean:
	$(CARGO) clean
