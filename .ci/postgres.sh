#!/usr/bin/env bash
# A throwaway PostgreSQL server on 127.0.0.1 for the distributed tests (tests/test_distributed.py).
#
#   url=$(.ci/postgres.sh start)   # prints postgresql+psycopg2://autopipe@127.0.0.1:5433/autopipe
#   .ci/postgres.sh stop           # stops it and deletes its data
#
# Installs Debian's postgresql only when no server binaries are found. Runs the server as a
# non-root user (the Debian `postgres` user, created here if missing), in a fresh data directory
# under $AUTOPIPE_PG_DIR, with trust authentication on loopback only. Every failure is fatal.
set -euo pipefail

PORT=${AUTOPIPE_PG_PORT:-5433}
BASE=${AUTOPIPE_PG_DIR:-${TMPDIR:-/tmp}/autopipe-ci-postgres}
SERVER_USER=postgres
# a throwaway test database: no crash safety needed, commits need not wait for the disk
THROWAWAY="-c fsync=off -c synchronous_commit=off -c full_page_writes=off"

log() { echo "postgres.sh: $*" >&2; }

pg_bin() {
    local found
    if found=$(command -v pg_ctl); then
        dirname "$(readlink -f "$found")"
        return 0
    fi
    found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    [[ -n $found && -x $found/pg_ctl ]] && echo "$found"
}

as_server_user() {
    if [[ $(id -u) == 0 ]]; then
        (cd / && runuser -u "$SERVER_USER" -- "$@")  # the caller's directory may be private
    else
        "$@"
    fi
}

start() {
    local bin
    if ! bin=$(pg_bin); then
        log "no PostgreSQL binaries: installing Debian's postgresql"
        apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
        bin=$(pg_bin) || { log "pg_ctl still not found after installing postgresql"; exit 1; }
    fi
    if [[ $(id -u) == 0 ]] && ! id -u "$SERVER_USER" >/dev/null 2>&1; then
        useradd --system --no-create-home --shell /usr/sbin/nologin "$SERVER_USER"
    fi
    stop_server "$bin"
    mkdir -p "$BASE"
    if [[ $(id -u) == 0 ]]; then chown "$SERVER_USER" "$BASE"; fi
    as_server_user "$bin/initdb" -D "$BASE/data" -U postgres --auth=trust --encoding=UTF8 \
        --locale=C >"$BASE/initdb.log" 2>&1 || { cat "$BASE/initdb.log" >&2; exit 1; }
    as_server_user "$bin/pg_ctl" -D "$BASE/data" -l "$BASE/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $PORT -k $BASE $THROWAWAY" start >&2 ||
        { cat "$BASE/server.log" >&2; exit 1; }
    "$bin/psql" -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -q \
        -c "CREATE ROLE autopipe LOGIN" -c "CREATE DATABASE autopipe OWNER autopipe" >&2
    log "$("$bin/pg_ctl" --version) on 127.0.0.1:$PORT, data in $BASE"
    echo "postgresql+psycopg2://autopipe@127.0.0.1:$PORT/autopipe"
}

stop_server() {
    local bin=$1
    if [[ -d $BASE/data ]] && as_server_user "$bin/pg_ctl" -D "$BASE/data" status >/dev/null; then
        as_server_user "$bin/pg_ctl" -D "$BASE/data" -m fast -w stop >&2
    fi
    rm -rf "$BASE"
}

case ${1:-} in
    start) start ;;
    stop)
        bin=$(pg_bin) || { log "pg_ctl not found: nothing to stop"; rm -rf "$BASE"; exit 0; }
        stop_server "$bin"
        log "stopped, $BASE removed"
        ;;
    *)
        echo "usage: $0 start|stop" >&2
        exit 2
        ;;
esac
