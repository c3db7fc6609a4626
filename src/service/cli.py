"""The ``service`` command: serve, migrate, users, openapi, seed, counters, sessions."""

import asyncio
import getpass
import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from service.core.config import get_settings

app = typer.Typer(help="Conduit service: run the API, migrate the database, manage users.", no_args_is_help=True)
users_app = typer.Typer(help="Manage user accounts.", no_args_is_help=True)
app.add_typer(users_app, name="users")
counters_app = typer.Typer(help="The maintained counters behind every total (articlesCount, favoritesCount...).")
app.add_typer(counters_app, name="counters")
sessions_app = typer.Typer(help="Login sessions (refresh tokens).", no_args_is_help=True)
app.add_typer(sessions_app, name="sessions")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to bind (default: SERVICE_HOST or 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: SERVICE_PORT or 8000).")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
    reload: Annotated[bool, typer.Option(help="Restart on code changes (development).")] = False,
) -> None:
    """Run the HTTP API with uvicorn. SIGTERM drains it (SERVICE_SHUTDOWN_DELAY, then SERVICE_SHUTDOWN_TIMEOUT)."""
    import uvicorn

    from service.core import server
    from service.core.metrics import prepare_multiprocess

    settings = get_settings()
    prepare_multiprocess(workers)  # before the workers start: /metrics then sums them all
    if not reload:
        status = server.serve(settings, host=host or settings.host, port=port or settings.port, workers=workers)
        raise typer.Exit(status)
    uvicorn.run(
        server.APP,
        factory=True,
        host=host or settings.host,
        port=port or settings.port,
        reload=True,
        access_log=False,  # our middleware writes one structured line per request
        proxy_headers=False,  # the app reads X-Forwarded-For itself, from SERVICE_TRUSTED_PROXIES only
        log_config=None,  # create_app configures logging
    )


@app.command()
def migrate(revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Upgrade the database schema (works from any directory and inside the image)."""
    from service.core import migrations

    settings = get_settings()
    migrations.upgrade(settings.database_url, revision)
    typer.echo(f"database at {revision}")


def _read_password() -> str:
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("Password: ")
    if first != getpass.getpass("Repeat password: "):
        raise typer.BadParameter("passwords do not match")
    return first


@users_app.command("create")
def create_user(
    email: Annotated[str, typer.Option(help="E-mail address.")],
    username: Annotated[str, typer.Option(help="Username.")],
    role: Annotated[str, typer.Option(help="user, moderator or admin.")] = "user",
) -> None:
    """Create an account. The password is prompted for (or read from a pipe), never taken as an argument."""
    from pydantic import ValidationError

    from service.core.db import build_engine, build_sessionmaker
    from service.core.errors import AppError
    from service.users import service as users_service
    from service.users.models import Role
    from service.users.schemas import UserCreate

    try:
        chosen_role = Role(role)
    except ValueError:
        raise typer.BadParameter(f"role must be one of {', '.join(r.value for r in Role)}") from None
    try:
        data = UserCreate(username=username, email=email, password=_read_password())
    except ValidationError as exc:
        for error in exc.errors():
            typer.echo(f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}", err=True)
        raise typer.Exit(2) from None

    async def _create() -> None:
        engine = build_engine(get_settings(), serving=False)
        try:
            async with build_sessionmaker(engine)() as session, session.begin():
                await users_service.create_user(
                    session,
                    username=data.username,
                    email=data.email,
                    password=data.password,
                    role=chosen_role,
                    email_verified=True,  # the operator vouches for the address: no mail to follow
                )
        finally:
            await engine.dispose()

    try:
        asyncio.run(_create())
    except AppError as exc:
        typer.echo(f"{exc.field} {exc.message}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"created {chosen_role.value} {data.username}")


@users_app.command("set-role")
def set_role(
    username: Annotated[str, typer.Argument(help="The account to change.")],
    role: Annotated[str, typer.Argument(help="user, moderator or admin.")],
) -> None:
    """Give an account a role (the way back in when no admin is left). The last active admin cannot be demoted;
    the change is written to the audit log with the actor "system"."""
    from service.admin import service as admin_service
    from service.core.db import WRITE_INTENT, build_engine, build_sessionmaker
    from service.core.errors import AppError
    from service.users.models import Role

    try:
        chosen_role = Role(role)
    except ValueError:
        raise typer.BadParameter(f"role must be one of {', '.join(r.value for r in Role)}") from None

    async def _set() -> str:
        engine = build_engine(get_settings(), serving=False)
        try:
            async with build_sessionmaker(engine.execution_options(**{WRITE_INTENT: True}))() as session:
                async with session.begin():
                    user = await admin_service.change_user(session, None, username, role=chosen_role)
                return user.username
        finally:
            await engine.dispose()

    try:
        changed = asyncio.run(_set())
    except AppError as exc:
        typer.echo(f"{exc.field} {exc.message}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"{changed} is now {chosen_role.value}")


@app.command()
def openapi(
    output: Annotated[Path | None, typer.Option("--output", "-o", help="File to write (default: stdout).")] = None,
) -> None:
    """Write the OpenAPI schema as JSON."""
    from service.main import create_app

    schema = json.dumps(create_app(get_settings()).openapi(), indent=2, ensure_ascii=False)
    if output is None:
        typer.echo(schema)
    else:
        output.write_text(schema + "\n")
        typer.echo(f"wrote {output}", err=True)


@app.command()
def seed(
    users: Annotated[int, typer.Option(min=0, help="Users to create.")] = 100,
    articles: Annotated[int, typer.Option(min=0, help="Articles to create.")] = 1000,
    comments_per_article: Annotated[float, typer.Option(min=0, help="Comments per article, on average.")] = 2.0,
    favorites_per_user: Annotated[float, typer.Option(min=0, help="Favorites per user, on average.")] = 10.0,
    follows_per_user: Annotated[float, typer.Option(min=0, help="Users each user follows, on average.")] = 5.0,
    tags: Annotated[int, typer.Option(min=0, help="Size of the tag vocabulary.")] = 50,
    seed_value: Annotated[
        int, typer.Option("--seed", help="Random seed: same seed, same empty database, same data.")
    ] = 42,
    password: Annotated[str, typer.Option(help="The password every seeded user shares.")] = "password123",  # noqa: S107 - documented demo password
    batch_size: Annotated[int, typer.Option(min=1, help="Rows per COPY / executemany batch.")] = 10_000,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Seed even when SERVICE_ENVIRONMENT is production.")] = False,
) -> None:
    """Fill the database with realistic users, articles, tags, follows, favorites and comments (run `migrate` first)."""
    from rich.console import Console

    from service import seed as seeding
    from service.core.config import Environment
    from service.core.db import build_engine

    settings = get_settings()
    if settings.environment is Environment.PRODUCTION and not force:
        typer.echo("refusing to seed a production database (SERVICE_ENVIRONMENT=production); pass --force", err=True)
        raise typer.Exit(1)
    try:
        options = seeding.SeedOptions(
            users=users,
            articles=articles,
            comments_per_article=comments_per_article,
            favorites_per_user=favorites_per_user,
            follows_per_user=follows_per_user,
            tags=tags,
            seed=seed_value,
            password=password,
            batch_size=batch_size,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    console = Console()

    async def _seed() -> seeding.SeedReport:
        engine = build_engine(settings, serving=False)
        try:
            return await seeding.seed(engine, options, progress=not quiet and console.is_terminal, console=console)
        finally:
            await engine.dispose()

    try:
        report = asyncio.run(_seed())
    except seeding.SeedError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    seeding.print_report(report, console)


@counters_app.command("check")
def counters_check(
    show: Annotated[int, typer.Option(min=0, help="Differences to list per kind of counter.")] = 20,
) -> None:
    """Recount every counter from one snapshot and list those that differ (exit status 1 if any). Takes no locks."""
    from service.articles import counters

    async def _check() -> list[counters.Difference]:
        from service.core.db import build_engine

        engine = build_engine(get_settings(), serving=False)
        try:
            async with engine.connect() as conn:
                if conn.dialect.name == "postgresql":  # one snapshot for every recount and every stored value
                    await conn.execution_options(isolation_level="REPEATABLE READ")
                async with conn.begin():
                    return await counters.differences(conn)
        finally:
            await engine.dispose()

    found = asyncio.run(_check())
    listed: dict[str, int] = {}
    for difference in found:
        listed[difference.counter] = listed.get(difference.counter, 0) + 1
        if listed[difference.counter] <= show:
            typer.echo(
                f"{difference.counter}[{difference.key}]: stored {difference.stored}, actual {difference.actual}"
            )
    if found:
        typer.echo(f"{len(found)} counter(s) differ (listing at most {show} per kind); run `service counters rebuild`")
        raise typer.Exit(1)
    typer.echo("every counter matches a recount")


@counters_app.command("rebuild")
def counters_rebuild() -> None:
    """Recount every counter and rewrite those that differ. Writers wait meanwhile (readers do not)."""
    from service.articles import counters

    async def _rebuild() -> int:
        from service.core.db import WRITE_INTENT, build_engine

        engine = build_engine(get_settings(), serving=False)
        try:
            async with engine.execution_options(**{WRITE_INTENT: True}).begin() as conn:
                await counters.lock_for_recount(conn)
                return await counters.rebuild(conn)
        finally:
            await engine.dispose()

    typer.echo(f"rebuilt: {asyncio.run(_rebuild())} row(s) corrected")


@sessions_app.command("prune")
def sessions_prune() -> None:
    """Delete revoked and expired sessions, with their spent refresh tokens (run it daily, e.g. from cron)."""
    from service.sessions import service as sessions_service

    async def _prune() -> int:
        from service.core.db import build_engine, build_sessionmaker

        engine = build_engine(get_settings(), serving=False)
        try:
            async with build_sessionmaker(engine)() as session, session.begin():
                return await sessions_service.prune(session)
        finally:
            await engine.dispose()

    typer.echo(f"pruned: {asyncio.run(_prune())} session(s) deleted")


@app.command()
def worker(
    concurrency: Annotated[int, typer.Option(min=1, help="Deliveries in progress at once.")] = 10,
) -> None:
    """Deliver outbox events (e-mails) from the queue on Redis (SERVICE_REDIS_URL); SIGTERM stops it cleanly."""
    from service.core.logging import configure_logging
    from service.outbox import worker as outbox_worker

    settings = get_settings()
    if not settings.redis_url:
        typer.echo("service worker needs SERVICE_REDIS_URL; without Redis the API delivers in process", err=True)
        raise typer.Exit(2)
    configure_logging(settings)
    asyncio.run(outbox_worker.run(settings, concurrency=concurrency))


def main() -> None:
    app()
