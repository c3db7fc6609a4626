"""core.db.Query: reads sent straight to asyncpg on PostgreSQL behave as SQLAlchemy would, errors included."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from httpx import ASGITransport, AsyncClient
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from service.core.config import Settings
from service.core.db import Database, Query, build_database, create_engine_for
from service.main import create_app
from service.users.models import User
from tests.helpers import register, serving

_USERNAMES = Query(select(User.__table__.c.username).order_by(User.__table__.c.id))


async def test_query_rows_are_the_same_on_both_dialects(client: AsyncClient, connection: AsyncConnection) -> None:
    await register(client, "first")
    await register(client, "second")
    rows = await _USERNAMES.all(connection)
    assert [tuple(row) for row in rows] == [("first",), ("second",)]
    assert await _USERNAMES.scalar(connection) == "first"
    assert await Query(select(User.__table__.c.id).where(User.__table__.c.id < 0)).first(connection) is None


async def test_a_lost_connection_is_a_dbapi_error_and_is_invalidated(engine: AsyncEngine, backend: str) -> None:
    if backend != "postgresql":
        pytest.skip("the driver path is PostgreSQL's")
    killer = create_engine_for(engine.url.render_as_string(hide_password=False), isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            pid = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            await conn.commit()
            async with killer.connect() as other:
                await other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            with pytest.raises(DBAPIError) as caught:
                await _USERNAMES.all(conn)
            assert caught.value.connection_invalidated
            assert conn.invalidated
    finally:
        await killer.dispose()


async def test_a_connection_dropped_while_pooled_is_never_handed_out(
    settings: Settings, engine: AsyncEngine, backend: str
) -> None:
    """The server closes a pooled connection (a restart, a failover, pg_terminate_backend): the next request does
    not fail on it; the pool refuses it at checkout and opens a fresh one, without a round trip to find out."""
    if backend != "postgresql":
        pytest.skip("the driver path is PostgreSQL's")
    url = engine.url.render_as_string(hide_password=False)
    app_engine = create_engine_for(url, pool_size=1, max_overflow=0)
    killer = create_engine_for(url, isolation_level="AUTOCOMMIT")
    app = serving(create_app(settings), build_database(app_engine))
    try:
        async with AsyncClient(transport=ASGITransport(app=app), base_url="http://test/api") as client:
            assert (await client.get("/tags")).status_code == 200
            async with app_engine.connect() as pooled:  # the pool's one connection
                pid = (await pooled.execute(text("SELECT pg_backend_pid()"))).scalar_one()
                driver: Any = (await pooled.get_raw_connection()).driver_connection  # an asyncpg.Connection
                await pooled.commit()
            async with killer.connect() as other:  # the server drops it
                await other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            for _ in range(500):  # until the server's goodbye has arrived
                if driver.is_closed():
                    break
                await asyncio.sleep(0.01)
            response = await client.get("/tags")
            assert response.status_code == 200, response.text
            async with app_engine.connect() as pooled:
                assert (await pooled.execute(text("SELECT pg_backend_pid()"))).scalar_one() != pid
    finally:
        await app_engine.dispose()
        await killer.dispose()


async def test_a_connection_lost_mid_read_is_a_clean_503_and_leaves_the_pool(
    settings: Settings, engine: AsyncEngine, backend: str
) -> None:
    if backend != "postgresql":
        pytest.skip("the driver path is PostgreSQL's")
    url = engine.url.render_as_string(hide_password=False)
    app_engine = create_engine_for(url, pool_size=1, max_overflow=0)
    killer = create_engine_for(url, isolation_level="AUTOCOMMIT")

    @asynccontextmanager
    async def reader_killed_after_checkout() -> AsyncIterator[AsyncConnection]:
        async with app_engine.execution_options(isolation_level="AUTOCOMMIT").connect() as connection:
            pid = (await connection.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            async with killer.connect() as other:
                await other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            yield connection

    normal = build_database(app_engine)
    killing = Database(normal.writer, reader_killed_after_checkout)  # the same pool
    try:
        for database, expected in ((killing, 503), (normal, 200)):  # then: the dead connection left the pool
            app = serving(create_app(settings), database)
            async with AsyncClient(transport=ASGITransport(app=app), base_url="http://test/api") as client:
                response = await client.get("/tags")
            assert response.status_code == expected, response.text
            if expected == 503:
                assert response.json() == {"errors": {"database": ["unavailable"]}}
                assert response.headers["Retry-After"] == str(settings.database_retry_after)
    finally:
        await app_engine.dispose()
        await killer.dispose()
