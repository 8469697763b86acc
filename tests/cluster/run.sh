#!/usr/bin/env bash
# The cluster suite (issue 14): installs what it needs when missing (Debian's
# etcd-server and etcd-client, Garage from crates.io, curl, socat and openssl for the https test), builds ferryd and
# runs tests/cluster/main.rs, which starts its own 3-node Garage and
# 3-member etcd clusters on loopback (tests/cluster/cluster.sh) and two
# ferryd over them. .ci/run runs this.
set -euo pipefail
cd "$(dirname "$0")/../.."

GARAGE_VERSION=2.5.0

missing=()
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || missing+=(etcd-client)
command -v curl >/dev/null 2>&1 || missing+=(curl)
# The https test: a TLS proxy (socat) with certificates made by openssl.
command -v socat >/dev/null 2>&1 || missing+=(socat)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
if [ ${#missing[@]} -gt 0 ]; then
  # The package would start its own etcd on 2379 where systemd or an init
  # script runs; the suite's members need that port.
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}") </dev/null
fi
if ! command -v garage >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/garage" ]; then
  echo "installing garage $GARAGE_VERSION (cargo install; about 7-20 minutes on 2 cores)"
  cargo install garage --locked --version "$GARAGE_VERSION" --quiet
fi
export PATH="$HOME/.cargo/bin:$PATH"
# The first line of each version (read whole: `| head -1` under pipefail
# fails the script with SIGPIPE when the tool writes after head has gone).
garage --version | sed -n 1p
etcd --version | sed -n 1p

for port in 2379 2479 2579 3900 3910 3920 3943; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "tests/cluster/run.sh: port $port is taken (a Debian etcd service, an earlier run?); the cluster needs it" >&2
    exit 1
  fi
done

cargo build -p ferryd
cargo test -p ferry-tests --test cluster -- --ignored --test-threads=1
