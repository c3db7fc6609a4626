from fastapi import APIRouter, status

from service.core.config import Settings
from service.core.db import SessionDep
from service.core.errors import Unauthorized, error_responses
from service.core.security import create_access_token
from service.users import service as users_service
from service.users.dependencies import CurrentUser, SettingsDep
from service.users.models import User
from service.users.schemas import (
    UserCreateEnvelope,
    UserEnvelope,
    UserLoginEnvelope,
    UserRead,
    UserUpdateEnvelope,
)
from service.users.service import AuthUser

router = APIRouter(prefix="/api", tags=["users"])


def user_envelope(user: User | AuthUser, settings: Settings) -> UserEnvelope:
    token = create_access_token(
        user.id, secret=settings.jwt_secret(), algorithm=settings.jwt_algorithm, ttl=settings.access_token_ttl
    )
    return UserEnvelope(
        user=UserRead(
            email=user.email, token=token, username=user.username, bio=user.bio, image=user.image, role=user.role
        )
    )


@router.post(
    "/users",
    status_code=status.HTTP_201_CREATED,
    summary="Register",
    responses=error_responses(409, 413, 422),
)
async def register(body: UserCreateEnvelope, session: SessionDep, settings: SettingsDep) -> UserEnvelope:
    data = body.user
    user = await users_service.create_user(session, username=data.username, email=data.email, password=data.password)
    return user_envelope(user, settings)


@router.post("/users/login", summary="Log in", responses=error_responses(401, 403, 413, 422))
async def login(body: UserLoginEnvelope, session: SessionDep, settings: SettingsDep) -> UserEnvelope:
    user = await users_service.authenticate(session, email=body.user.email, password=body.user.password)
    return user_envelope(user, settings)


@router.get("/user", summary="Current user", responses=error_responses(401))
async def get_current(user: CurrentUser, settings: SettingsDep) -> UserEnvelope:
    return user_envelope(user, settings)


@router.put("/user", summary="Update current user", responses=error_responses(401, 409, 413, 422))
async def update_current(
    body: UserUpdateEnvelope, user: CurrentUser, session: SessionDep, settings: SettingsDep
) -> UserEnvelope:
    changes = body.user.model_dump(exclude_unset=True, by_alias=False)
    account = await users_service.get_by_id(session, user.id)
    if account is None:  # deleted since the token was checked, a moment ago
        raise Unauthorized("token", "is invalid")
    return user_envelope(await users_service.update_user(session, account, changes), settings)
