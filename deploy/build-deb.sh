#!/usr/bin/env bash
# Builds target/debian/ferry_<version>_<arch>.deb: release binaries, man pages
# and shell completions generated from the clap definitions, the unit files
# and the example configuration. Installs cargo-deb (`cargo install
# cargo-deb --locked`, for this user) when it is missing. Run it as yourself,
# not root: it builds.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo-deb >/dev/null 2>&1; then
  echo "installing cargo-deb (cargo install cargo-deb --locked; a minute or two)"
  cargo install cargo-deb --locked --quiet
fi
cargo build --release --locked -p ferryd -p ferry
rm -rf target/assets
target/release/ferryd generate-docs target/assets
target/release/ferry generate-docs target/assets
gzip -9n target/assets/man/man*/*
# cargo-deb warns that generated assets are outside target/release; they are
# built just above, so only a failure is shown.
if ! cargo deb -p ferryd --no-build --locked "$@" > target/cargo-deb.log 2>&1; then
  cat target/cargo-deb.log >&2
  exit 1
fi
ls target/debian/ferry_*.deb
