#!/bin/sh
# The official redis image's entrypoint, in short: redis-server runs as the redis user, and (the official binary is
# patched so) without protected mode, so that other containers may connect. Later arguments still override it.
set -eu

if [ "${1:-}" = redis-server ]; then
    shift
    set -- redis-server --protected-mode no "$@"
    if [ "$(id -u)" = 0 ]; then
        find . \! -user redis -exec chown redis '{}' +
        exec setpriv --reuid=redis --regid=redis --init-groups "$@"
    fi
fi

exec "$@"
