"""Profiles and follows. ``following`` always reflects the viewer."""

from typing import Any

from sqlalchemy import ColumnElement, delete, false, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from service.core.db import insert_ignoring_conflicts, storable_text
from service.core.errors import NotFound, Unprocessable
from service.profiles.models import Follow
from service.profiles.schemas import ProfileRead
from service.users.models import User


def following_expr(viewer_id: int | None, author_id: Any) -> ColumnElement[bool]:
    """SQL ``EXISTS`` for "the viewer follows this author", ``false`` for anonymous viewers."""
    if viewer_id is None:
        return false()
    return select(Follow.follower_id).where(Follow.follower_id == viewer_id, Follow.followee_id == author_id).exists()


def to_profile(user: User, following: bool) -> ProfileRead:
    return ProfileRead(username=user.username, bio=user.bio, image=user.image, following=bool(following))


async def get_profile(session: AsyncSession, username: str, viewer_id: int | None) -> tuple[User, bool]:
    if not storable_text(username):  # no username holds it, and the database would refuse it as a parameter
        raise NotFound("profile", "not found")
    stmt = select(User, following_expr(viewer_id, User.id)).where(func.lower(User.username) == username.lower())
    row = (await session.execute(stmt)).one_or_none()
    if row is None:
        raise NotFound("profile", "not found")
    return row[0], bool(row[1])


async def follow(session: AsyncSession, follower: User, username: str) -> User:
    """Idempotent: following twice still follows once."""
    followee, _ = await get_profile(session, username, None)
    if followee.id == follower.id:
        raise Unprocessable("profile", "cannot follow yourself")
    stmt = insert_ignoring_conflicts(session, Follow).values(follower_id=follower.id, followee_id=followee.id)
    await session.execute(stmt)
    return followee


async def unfollow(session: AsyncSession, follower: User, username: str) -> User:
    """Idempotent: unfollowing someone not followed changes nothing."""
    followee, _ = await get_profile(session, username, None)
    await session.execute(delete(Follow).where(Follow.follower_id == follower.id, Follow.followee_id == followee.id))
    return followee
