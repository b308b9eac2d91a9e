# thinkbench — build, run, test, bench.
# Everything installs itself on first use: libtorch goes to ~/.cache/thinkbench (outside the clone,
# shared by every clone), and .cargo/config.toml is written so that plain cargo commands work too.

CARGO ?= cargo
export CARGO_TERM_COLOR ?= never
MODEL ?=

.PHONY: setup build run test bench fixtures clean

setup: .cargo/config.toml

.cargo/config.toml: scripts/setup-libtorch.sh scripts/write-cargo-config.sh
	scripts/write-cargo-config.sh

build: setup
	$(CARGO) build --release

run: build
	./target/release/thinkbench $(if $(MODEL),--model $(MODEL),)

test: setup
	$(CARGO) test --release -- --test-threads=2

bench: build
	scripts/bench.sh

# Regenerates the parity fixtures with Hugging Face transformers (by hand, not in CI).
fixtures:
	python3 scripts/make_fixtures.py

clean:
	$(CARGO) clean
