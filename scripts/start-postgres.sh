#!/usr/bin/env bash
# Starts a throwaway PostgreSQL cluster for the PKG tests and prints its
# postgres:// URL on stdout (one line). Installs the Debian `postgresql`
# package if no server binaries are found. The cluster runs as the
# `postgres` user (never as root), listens on 127.0.0.1 only, on a free
# port, with its data and socket in a temporary directory; trust
# authentication (it is a test cluster reachable from this machine only).
#
#   url=$(scripts/start-postgres.sh)
#   IBEPHONE_TEST_POSTGRES=$url cargo test -p pkg-server
#   scripts/start-postgres.sh --stop "$url"    # or leave it to die with the machine
set -euo pipefail

as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pg_bin() {
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

if [ "${1:-}" = "--stop" ]; then
  dir=$(cat /tmp/ibephone-pg.last 2>/dev/null || true)
  [ -n "$dir" ] && as_pg "$(pg_bin)/pg_ctl" -D "$dir/data" -m fast stop >&2 || true
  exit 0
fi

if [ -z "$(pg_bin)" ] || [ ! -x "$(pg_bin)/initdb" ]; then
  echo "installing postgresql..." >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq postgresql >&2
fi
BIN=$(pg_bin)

if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
  useradd --system --home-dir /var/lib/postgresql --shell /bin/sh postgres
fi

DIR=$(mktemp -d /tmp/ibephone-pg.XXXXXX)
chmod 700 "$DIR"
[ "$(id -u)" = 0 ] && chown postgres "$DIR"
echo "$DIR" > /tmp/ibephone-pg.last

# A free port on 127.0.0.1: nothing answers there.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for _ in $(seq 1 50); do
  PORT=$(( 20000 + RANDOM % 40000 ))
  port_free "$PORT" && break
done

as_pg "$BIN/initdb" -D "$DIR/data" -U postgres --auth=trust -E UTF8 >"$DIR/initdb.log" 2>&1
as_pg "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w \
  -o "-c listen_addresses=127.0.0.1 -p $PORT -k $DIR -c max_connections=400 -c fsync=off" start >&2
as_pg "$BIN/createdb" -h 127.0.0.1 -p "$PORT" -U postgres pkgtest
echo "postgres://postgres@127.0.0.1:$PORT/pkgtest"
