#!/usr/bin/env bash
# A distributed store on loopback for ferry's scale-out work (issue 14): a
# 3-member etcd cluster (Debian's etcd-server 3.4) and a 3-node Garage
# cluster (replication 3, `cargo install garage --locked`), one bucket and
# one key. It doubles as the how-to of docs/SCALE.md.
#
#   tests/cluster/cluster.sh up DIR      start both, write DIR/s3.env and DIR/storage.toml
#   tests/cluster/cluster.sh down DIR    stop everything started in DIR
#   tests/cluster/cluster.sh stop DIR etcd|garage N    kill -9 one member (1..3)
#   tests/cluster/cluster.sh start DIR etcd|garage N   start it again (same data)
#
# Ports: etcd clients 2379/2479/2579 (peers +1); Garage S3 3900/3910/3920,
# RPC 3901/3911/3921, admin 3903/3913/3923.
set -euo pipefail

cmd=${1:?usage: cluster.sh up|down|stop|start DIR [etcd|garage N]}
dir=${2:?usage: cluster.sh up|down|stop|start DIR [etcd|garage N]}
GARAGE=${GARAGE:-$(command -v garage || echo "$HOME/.cargo/bin/garage")}
ETCD=${ETCD:-etcd}
ETCDCTL=${ETCDCTL:-etcdctl}
ETCD_ENDPOINTS=127.0.0.1:2379,127.0.0.1:2479,127.0.0.1:2579
ETCD_PEERS='e1=http://127.0.0.1:2380,e2=http://127.0.0.1:2480,e3=http://127.0.0.1:2580'

die() { echo "cluster.sh: $*" >&2; exit 1; }

# Waits up to $1 seconds for the command after it to succeed.
wait_for() {
  local secs=$1; shift
  local end=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$end" ] || return 1
    sleep 0.2
  done
}

etcd_start() { # n
  local n=$1 client=$((2279 + 100 * $1))
  mkdir -p "$dir/etcd"
  "$ETCD" --name "e$n" --data-dir "$dir/etcd/e$n" \
    --listen-client-urls "http://127.0.0.1:$client" --advertise-client-urls "http://127.0.0.1:$client" \
    --listen-peer-urls "http://127.0.0.1:$((client + 1))" \
    --initial-advertise-peer-urls "http://127.0.0.1:$((client + 1))" \
    --initial-cluster "$ETCD_PEERS" --initial-cluster-state new --initial-cluster-token "ferry-$$" \
    --logger=zap --log-outputs=stderr >>"$dir/etcd/e$n.log" 2>&1 </dev/null &
  echo $! >"$dir/etcd/e$n.pid"
}

garage_conf() { # n
  local n=$1 base=$((3890 + 10 * $1))
  mkdir -p "$dir/garage/n$n"
  cat >"$dir/garage/n$n.toml" <<TOML
metadata_dir = "$dir/garage/n$n/meta"
data_dir = "$dir/garage/n$n/data"
db_engine = "sqlite"
replication_factor = 3
consistency_mode = "consistent"
rpc_bind_addr = "127.0.0.1:$((base + 1))"
rpc_public_addr = "127.0.0.1:$((base + 1))"
rpc_secret = "$(cat "$dir/garage/rpc_secret")"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$base"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:$((base + 3))"
TOML
  chmod 600 "$dir/garage/n$n.toml"
}

garage_start() { # n
  local n=$1
  "$GARAGE" -c "$dir/garage/n$n.toml" server >>"$dir/garage/n$n.log" 2>&1 </dev/null &
  echo $! >"$dir/garage/n$n.pid"
}

g() { "$GARAGE" -c "$dir/garage/n1.toml" "$@"; }

up() {
  command -v "$ETCD" >/dev/null || die "etcd not found (apt install etcd-server etcd-client)"
  [ -x "$GARAGE" ] || die "garage not found (cargo install garage --locked)"
  mkdir -p "$dir/garage"
  dir=$(cd "$dir" && pwd)
  for n in 1 2 3; do etcd_start "$n"; done
  wait_for 30 "$ETCDCTL" --endpoints="$ETCD_ENDPOINTS" endpoint health ||
    die "etcd did not become healthy; see $dir/etcd/*.log"
  od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$dir/garage/rpc_secret"
  for n in 1 2 3; do garage_conf "$n"; garage_start "$n"; done
  local ids=()
  for n in 1 2 3; do
    wait_for 30 "$GARAGE" -c "$dir/garage/n$n.toml" node id -q || die "garage n$n did not start; see $dir/garage/n$n.log"
    ids+=("$("$GARAGE" -c "$dir/garage/n$n.toml" node id -q)")
  done
  printf '%s\n' "${ids[@]}" >"$dir/garage/ids"
  # `node id` answers from the metadata before the node listens: connect
  # until its RPC port takes it (a busy machine starts slowly).
  wait_for 30 g node connect "${ids[1]}" || die "garage n1 could not reach n2; see $dir/garage/n*.log"
  wait_for 30 g node connect "${ids[2]}" || die "garage n1 could not reach n3; see $dir/garage/n*.log"
  for n in 1 2 3; do
    g layout assign -z "dc$n" -c 1G "${ids[$((n - 1))]%%@*}" >/dev/null
  done
  g layout apply --version 1 >/dev/null
  wait_for 30 g bucket create ferry || die "garage: no bucket; see $dir/garage/n1.log"
  local key_id secret
  key_id=GK$(od -An -tx1 -N12 /dev/urandom | tr -d ' \n')
  secret=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
  g key import "$key_id" "$secret" -n ferry-key --yes >/dev/null
  g bucket allow --read --write --owner ferry --key ferry-key >/dev/null
  umask 077
  printf 'AWS_ACCESS_KEY_ID=%s\nAWS_SECRET_ACCESS_KEY=%s\n' "$key_id" "$secret" >"$dir/s3.env"
  cat >"$dir/storage.toml" <<TOML
[storage]
backend = "s3"
[storage.s3]
endpoint = "http://127.0.0.1:3900"
region = "garage"
bucket = "ferry"
prefix = ""
credentials_file = "$dir/s3.env"
[storage.catalog]
etcd = ["http://127.0.0.1:2379", "http://127.0.0.1:2479", "http://127.0.0.1:2579"]
TOML
  echo "cluster up in $dir: etcd $ETCD_ENDPOINTS; Garage S3 http://127.0.0.1:3900 (also :3910, :3920), bucket ferry"
}

down() {
  local f pids=()
  for f in "$dir"/etcd/*.pid "$dir"/garage/*.pid; do
    [ -e "$f" ] || continue
    pids+=("$(cat "$f")")
    rm -f "$f"
  done
  [ ${#pids[@]} -gt 0 ] || return 0
  kill "${pids[@]}" 2>/dev/null || true
  # Gone within 10 s, or killed.
  wait_for 10 bash -c 'for p; do kill -0 "$p" 2>/dev/null && exit 1; done; exit 0' _ "${pids[@]}" ||
    kill -9 "${pids[@]}" 2>/dev/null || true
}

member() { # stop|start etcd|garage n
  local what=${3:?etcd or garage} n=${4:?member 1..3}
  case "$1:$what" in
    stop:etcd) kill -9 "$(cat "$dir/etcd/e$n.pid")" ;;
    stop:garage) kill -9 "$(cat "$dir/garage/n$n.pid")" ;;
    start:etcd) etcd_start "$n" ;;
    start:garage)
      garage_start "$n"
      # A node restarted alone may not find its peers again for minutes
      # (after all three went down, never): introduce it to each one up.
      wait_for 30 "$GARAGE" -c "$dir/garage/n$n.toml" status || die "garage n$n did not start"
      local id
      while read -r id; do
        "$GARAGE" -c "$dir/garage/n$n.toml" node connect "$id" >/dev/null 2>&1 || true
      done <"$dir/garage/ids"
      ;;
    *) die "unknown member kind $what" ;;
  esac
}

case "$cmd" in
  up) up ;;
  down) down ;;
  stop | start) member "$cmd" "$dir" "${3:-}" "${4:-}" ;;
  *) die "unknown command $cmd" ;;
esac
