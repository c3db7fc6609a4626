#!/bin/sh
# The part of the official postgres image's entrypoint that docker-compose.yml relies on: on an empty $PGDATA,
# initdb with POSTGRES_USER and POSTGRES_PASSWORD (scram-sha-256 over TCP, trust on the local socket), create
# POSTGRES_DB, listen on every address; then run the server as the postgres user.
set -eu

if [ "${1:-}" = postgres ] && [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA"
    chown postgres:postgres "$PGDATA"
    chmod 700 "$PGDATA"
    exec env HOME=/var/lib/postgresql setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

if [ "${1:-}" = postgres ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
    POSTGRES_USER="${POSTGRES_USER:-postgres}"
    POSTGRES_DB="${POSTGRES_DB:-$POSTGRES_USER}"
    if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "${POSTGRES_HOST_AUTH_METHOD:-}" != trust ]; then
        echo "Error: Database is uninitialized and superuser password is not specified." >&2
        echo "       Set POSTGRES_PASSWORD (or POSTGRES_HOST_AUTH_METHOD=trust)." >&2
        exit 1
    fi
    init_dir="$(mktemp -d)"
    printf '%s\n' "${POSTGRES_PASSWORD:-}" >"$init_dir/pwfile"
    initdb --username="$POSTGRES_USER" --pwfile="$init_dir/pwfile" --auth-local=trust \
        --auth-host="${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}" --encoding=UTF8 --locale=C.UTF-8 -D "$PGDATA"
    rm -f "$init_dir/pwfile"
    printf 'host all all all %s\n' "${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}" >>"$PGDATA/pg_hba.conf"
    printf "listen_addresses = '*'\n" >>"$PGDATA/postgresql.conf"
    if [ "$POSTGRES_DB" != postgres ]; then
        # The set-up server listens on a private socket only, so pg_isready (the healthcheck) cannot pass before
        # the real server is up.
        pg_ctl -D "$PGDATA" -w -o "-c listen_addresses='' -c unix_socket_directories=$init_dir" start
        psql -v ON_ERROR_STOP=1 -h "$init_dir" -U "$POSTGRES_USER" -d postgres \
            -c "CREATE DATABASE \"$POSTGRES_DB\""
        pg_ctl -D "$PGDATA" -m fast -w stop
    fi
    rmdir "$init_dir"
    echo "PostgreSQL init process complete; ready for start up."
fi

exec "$@"
