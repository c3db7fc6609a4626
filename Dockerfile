# Conduit API image: two stages on the same Debian bookworm slim Python base.
#   builder: a virtualenv in /opt/venv with the hash-pinned runtime dependencies and the package.
#   runtime: that venv, the Alembic scripts and a non-root user; no compilers, no pip caches, no apt.
#
#   docker build -t conduit-service .
#   docker run --rm -e SERVICE_ENVIRONMENT=production -e SERVICE_SECRET_KEY=... -p 8000:8000 conduit-service
#   docker run --rm ... conduit-service service migrate      # alembic upgrade head

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --------------------------------------------------------------------------- builder
FROM ${PYTHON_IMAGE} AS builder

# No PYTHONDONTWRITEBYTECODE here: pip byte-compiles what it installs, so the runtime (which does
# set it) starts from ready .pyc files instead of compiling on every container start.
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

WORKDIR /build

# Dependencies first, in their own layer: it is rebuilt only when requirements.txt changes.
# Every pin carries hashes (uv pip compile --generate-hashes), so pip refuses anything else.
COPY requirements.txt ./
RUN python -m venv /opt/venv \
    && pip install --no-cache-dir --require-hashes -r requirements.txt

# Then the package itself. hatchling needs pyproject.toml, README.md and the sources, and
# force-includes alembic/ into the wheel (as service/migrations) so `service migrate` works anywhere.
COPY pyproject.toml README.md ./
COPY src ./src
COPY alembic ./alembic
RUN pip install --no-deps --no-cache-dir .

# --------------------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="conduit-service" \
      org.opencontainers.image.description="Conduit: async RealWorld API on FastAPI, SQLAlchemy 2 and PostgreSQL"

ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# uid/gid 10001: outside the range of system and typical host users. -l (--no-log-init) keeps a
# high uid from bloating /var/log/faillog and lastlog. var/ holds the default SQLite database
# and the generated development secret, so it is the only path the service user may write.
RUN groupadd --system --gid 10001 app \
    && useradd --system --no-log-init --uid 10001 --gid app \
        --home-dir /app --no-create-home --shell /usr/sbin/nologin app \
    && mkdir -p /app/var \
    && chown app:app /app/var

WORKDIR /app

COPY --from=builder /opt/venv /opt/venv
# `service migrate` uses the copy bundled in the package; these (read-only, owned by root) let
# the plain `alembic` CLI work from /app too, e.g. `docker compose run --rm migrate alembic current`.
COPY alembic.ini ./
COPY alembic ./alembic

EXPOSE 8000

# No curl in slim: probe the liveness endpoint with the interpreter already in the image.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/health/live', timeout=4).status == 200 else 1)"]

USER 10001:10001

# `service serve` runs uvicorn without its proxy headers (the app believes X-Forwarded-For only from the proxies in
# SERVICE_TRUSTED_PROXIES: rate limits are per client address) and without its access log (ours is structured), and
# drains on SIGTERM (README "Graceful shutdown"): give the container SERVICE_SHUTDOWN_DELAY + SERVICE_SHUTDOWN_TIMEOUT
# (25 s by default) to stop, e.g. `docker stop -t 30`, compose stop_grace_period, terminationGracePeriodSeconds.
# Several workers: add `--workers N`.
CMD ["service", "serve", "--host", "0.0.0.0", "--port", "8000"]
