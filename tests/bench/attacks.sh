#!/usr/bin/env bash
# Reruns the attacks of the hostile review against a release ferryd
# (tests/bench/attacks.py): docs/bench/attacks.md and attacks.json.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --locked -p ferryd -p ferry
exec python3 tests/bench/attacks.py "$@"
