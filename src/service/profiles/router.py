from fastapi import APIRouter

from service.core.db import ReadDep, SessionDep
from service.core.errors import error_responses
from service.profiles import service as profiles_service
from service.profiles.schemas import ProfileEnvelope
from service.users.dependencies import OPTIONAL_AUTH, CurrentUser, OptionalUser

router = APIRouter(prefix="/api/profiles", tags=["profiles"])


@router.get("/{username}", summary="Get a profile", responses=error_responses(401, 404), openapi_extra=OPTIONAL_AUTH)
async def get_profile(username: str, db: ReadDep, viewer: OptionalUser) -> ProfileEnvelope:
    profile = await profiles_service.get_profile(db, username, viewer.id if viewer else None)
    return ProfileEnvelope(profile=profiles_service.to_profile(profile, profile.following))


@router.post("/{username}/follow", summary="Follow a user", responses=error_responses(401, 404, 422))
async def follow(username: str, session: SessionDep, viewer: CurrentUser) -> ProfileEnvelope:
    followee = await profiles_service.follow(session, viewer.id, username)
    return ProfileEnvelope(profile=profiles_service.to_profile(followee, True))


@router.delete("/{username}/follow", summary="Unfollow a user", responses=error_responses(401, 404))
async def unfollow(username: str, session: SessionDep, viewer: CurrentUser) -> ProfileEnvelope:
    followee = await profiles_service.unfollow(session, viewer.id, username)
    return ProfileEnvelope(profile=profiles_service.to_profile(followee, False))
