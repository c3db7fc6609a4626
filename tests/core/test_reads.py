"""core.db.Query: reads sent straight to asyncpg on PostgreSQL behave as SQLAlchemy would, errors included."""

import pytest
from httpx import ASGITransport, AsyncClient
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from service.core.config import Settings
from service.core.db import Query, build_database, create_engine_for
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


async def test_a_read_on_a_dropped_connection_is_a_clean_503(
    settings: Settings, engine: AsyncEngine, backend: str
) -> None:
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
                await pooled.commit()
            async with killer.connect() as other:  # the server drops it (a restart, a failover)
                await other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            failed = await client.get("/tags")
            assert failed.status_code == 503
            assert failed.json() == {"errors": {"database": ["unavailable"]}}
            assert failed.headers["Retry-After"]
            assert (await client.get("/tags")).status_code == 200  # the dead connection left the pool
    finally:
        await app_engine.dispose()
        await killer.dispose()
