#!/bin/sh
# Entry point of deploy/local/postgres.Dockerfile: the part of the official image's entrypoint the compose
# stack uses. On an empty $PGDATA: initdb with POSTGRES_USER / POSTGRES_PASSWORD (local socket trusted, TCP
# by password), create POSTGRES_DB, run /docker-entrypoint-initdb.d/*.sql on a server that listens on its
# socket only (so TCP healthchecks stay unhealthy until this is done); then run the server in the foreground.
set -eu
: "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD is required}"
POSTGRES_USER=${POSTGRES_USER:-postgres}
POSTGRES_DB=${POSTGRES_DB:-$POSTGRES_USER}
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    pwfile=$(mktemp)
    printf '%s' "$POSTGRES_PASSWORD" > "$pwfile"
    # UTF8, as the official image: with the SQL_ASCII of a locale-less initdb, psycopg returns bytes.
    initdb -D "$PGDATA" -U "$POSTGRES_USER" --pwfile="$pwfile" --auth-local=trust --auth-host=scram-sha-256 \
        --encoding=UTF8 --locale=C.UTF-8 \
        >/dev/null
    rm -f "$pwfile"
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    echo "listen_addresses = '*'" >> "$PGDATA/postgresql.conf"
    pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
    if [ "$POSTGRES_DB" != postgres ]; then
        psql -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d postgres -q -c "CREATE DATABASE \"$POSTGRES_DB\""
    fi
    for f in /docker-entrypoint-initdb.d/*.sql; do
        [ -e "$f" ] || continue
        echo "running $f"
        psql -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d "$POSTGRES_DB" -q -f "$f"
    done
    pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
fi
if [ "${1:-postgres}" = postgres ]; then
    [ $# -gt 0 ] && shift
    exec postgres -D "$PGDATA" "$@"
fi
exec "$@"
