#!/usr/bin/env bash
# Render the kustomizations for validation: base, overlays/production and overlays/production/migrate into
# OUTDIR/{base,production,production-migrate}.yaml. The overlay's secret files are never committed, so this
# renders a copy of the tree with throwaway random ones (never a real key, different on every run).
#   KUBECTL=path/to/kubectl bash deploy/kubernetes/render.sh OUTDIR
set -euo pipefail
out=${1:?usage: render.sh OUTDIR}
kubectl=${KUBECTL:-kubectl}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cp -R "$here/." "$work/"
secrets="$work/overlays/production/config/secrets"
rm -rf "$secrets" && mkdir -p "$secrets"
random() { od -An -N24 -tx1 /dev/urandom | tr -d ' \n'; }
random > "$secrets/secret_key"
password=$(random)
printf '"conduit" "%s"\n' "$password" > "$secrets/pgbouncer_userlist"
cat > "$secrets/urls.env" <<URLS
database_url=postgresql+asyncpg://conduit:$password@pgbouncer:5432/conduit
migrate_database_url=postgresql+asyncpg://conduit:$password@conduit-db.example.com:5432/conduit?ssl=require
redis_url=rediss://:$(random)@conduit-redis.example.com:6380/0
URLS

"$kubectl" kustomize "$work/base" > "$out/base.yaml"
"$kubectl" kustomize "$work/overlays/production" > "$out/production.yaml"
"$kubectl" kustomize "$work/overlays/production/migrate" > "$out/production-migrate.yaml"
# The throwaway secrets, for the test that checks they (and nothing committed) are what the Secret carries.
cp "$secrets/secret_key" "$secrets/pgbouncer_userlist" "$secrets/urls.env" "$out/"
echo "rendered $(grep -c '^kind:' "$out"/*.yaml | tr '\n' ' ')into $out"
