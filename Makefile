# edeploy — the commands a developer and CI run. `make test` is what .ci/run calls.
CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

.PHONY: build release test lint fmt bench fuzz demo clean initrd role-tiny role-debian qemu-test

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

# build/initrd.pxe + build/vmlinuz: the static /init, busybox, disk tools, drivers, GRUB images.
initrd:
	CARGO=$(CARGO) scripts/build-initrd build

# build/install/1.0/tiny: the busybox test role (boots, reports to the server, powers off). Root.
role-tiny:
	roles/tiny/build build

# build/install/1.0/debian: debootstrap bookworm role (root, network; .debs cached outside the repo).
role-debian:
	EDEPLOY_CACHE="$${EDEPLOY_CACHE:-$$HOME/.cache/edeploy}" roles/debian/build build

# Installs the tiny role on a QEMU guest through initrd.pxe and the server, then boots the disk
# (the harness runs the edeploy-server built beside it in target/release).
qemu-test: initrd role-tiny
	$(CARGO) build --release -p edeploy-server
	$(CARGO) run --release -p edeploy-qemu -- test --build build

# The whole journey on QEMU: the server, a PXE-style install of the tiny role, its first boot.
demo: initrd role-tiny
	$(CARGO) build --release -p edeploy-server
	$(CARGO) run --release -p edeploy-qemu -- demo --build build

clean:
	$(CARGO) clean
