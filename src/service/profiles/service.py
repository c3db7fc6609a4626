"""Profiles and follows. ``following`` always reflects the viewer.

Reads are Core statements built once at import and run as ``core.db.Query`` (see there why): rebuilding a
statement on every request cost more CPU than the database spent running it (profiled).
"""

from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import BigInteger, ColumnElement, Table, bindparam, delete, exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from service.core.db import Query, Reads, insert_ignoring_conflicts, storable_text
from service.core.errors import NotFound, Unprocessable
from service.profiles.models import Follow
from service.profiles.schemas import ProfileRead
from service.users.models import User

_users: Table = User.__table__  # type: ignore[assignment]  # a declarative class's table is a Table
_follows: Table = Follow.__table__  # type: ignore[assignment]

# The caller's id in every statement that computes a per-viewer flag; None (anonymous) makes every flag false.
VIEWER_ID = bindparam("viewer_id", type_=BigInteger)


def following(author_id: ColumnElement[Any]) -> ColumnElement[bool]:
    """SQL ``EXISTS``: the viewer follows this author (false for anonymous viewers: no row has a NULL follower)."""
    return exists().where(_follows.c.follower_id == VIEWER_ID, _follows.c.followee_id == author_id)


class HasProfile(Protocol):
    @property
    def username(self) -> str: ...
    @property
    def bio(self) -> str | None: ...
    @property
    def image(self) -> str | None: ...


def to_profile(user: HasProfile, following: bool) -> ProfileRead:
    return ProfileRead(username=user.username, bio=user.bio, image=user.image, following=bool(following))


@dataclass(frozen=True, slots=True)
class Profile:
    id: int
    username: str
    bio: str | None
    image: str | None
    following: bool


# Usernames are unique case-insensitively: the lookup uses the unique index on lower(username).
_PROFILE = Query(
    select(_users.c.id, _users.c.username, _users.c.bio, _users.c.image, following(_users.c.id)).where(
        func.lower(_users.c.username) == bindparam("username")
    )
)


async def get_profile(db: Reads, username: str, viewer_id: int | None) -> Profile:
    if not storable_text(username):  # no username holds it, and the database would refuse it as a parameter
        raise NotFound("profile", "not found")
    row = await _PROFILE.first(db, username=username.lower(), viewer_id=viewer_id)
    if row is None:
        raise NotFound("profile", "not found")
    return Profile(row[0], row[1], row[2], row[3], bool(row[4]))


async def follow(session: AsyncSession, follower_id: int, username: str) -> Profile:
    """Idempotent: following twice still follows once."""
    followee = await get_profile(session, username, None)
    if followee.id == follower_id:
        raise Unprocessable("profile", "cannot follow yourself")
    stmt = insert_ignoring_conflicts(session, Follow).values(follower_id=follower_id, followee_id=followee.id)
    await session.execute(stmt)
    return followee


async def unfollow(session: AsyncSession, follower_id: int, username: str) -> Profile:
    """Idempotent: unfollowing someone not followed changes nothing."""
    followee = await get_profile(session, username, None)
    await session.execute(delete(Follow).where(Follow.follower_id == follower_id, Follow.followee_id == followee.id))
    return followee
