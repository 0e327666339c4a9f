#!/usr/bin/env bash
# A throw-away PostgreSQL server for the storage tests, bound to 127.0.0.1 on a free port.
#
#   eval "$(bash tests/pg_server.sh start DIR)"   # initdb in DIR, start, print `export LGESEG_TEST_POSTGRES_URL=...`
#   python -m pytest -q tests/test_postgres.py
#   bash tests/pg_server.sh stop DIR               # stop the server and delete DIR
#
# Needs Debian's `postgresql` package (or any PostgreSQL whose initdb and pg_ctl are on PATH or in
# /usr/lib/postgresql/*/bin). PostgreSQL refuses to run as root, so as root the server runs as the
# `postgres` user the package creates. The database user `lgeseg` gets a random password; the server
# accepts password (scram-sha-256) logins over TCP only from 127.0.0.1 and nothing else.
set -euo pipefail

usage() { echo "usage: $0 start|stop DIR" >&2; exit 2; }
[ $# -eq 2 ] || usage
action=$1
dir=$(mkdir -p "$2" && cd "$2" && pwd)

initdb=$(command -v initdb 2>/dev/null || ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -1 || true)
bindir=$(dirname "$(readlink -f "${initdb:-/nonexistent}")")  # PATH may hold only a link to initdb
[ -x "$bindir/initdb" ] || { echo "pg_server.sh: no initdb found (apt-get install postgresql)" >&2; exit 1; }

as_owner() {  # run a PostgreSQL binary as the data directory's owner
    if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case $action in
start)
    [ "$(id -u)" -eq 0 ] && chown postgres: "$dir"
    chmod 700 "$dir"
    password=$(python3 -c "import secrets; print(secrets.token_hex(16))")
    port=$(python3 -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
    printf '%s\n' "$password" > "$dir/pwfile"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$dir/pwfile"
    as_owner "$bindir/initdb" -D "$dir/data" -U lgeseg --pwfile="$dir/pwfile" --auth-local=peer \
        --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; exit 1; }
    rm -f "$dir/pwfile"
    as_owner "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $dir" start >/dev/null \
        || { cat "$dir/server.log" >&2; exit 1; }
    PGPASSWORD=$password "$bindir/createdb" -h 127.0.0.1 -p "$port" -U lgeseg lgeseg \
        || { as_owner "$bindir/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null; exit 1; }
    echo "export LGESEG_TEST_POSTGRES_URL=postgresql+psycopg://lgeseg:$password@127.0.0.1:$port/lgeseg"
    ;;
stop)
    if [ -f "$dir/data/postmaster.pid" ]; then
        as_owner "$bindir/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null || true
    fi
    rm -rf "$dir"
    ;;
*)
    usage
    ;;
esac
