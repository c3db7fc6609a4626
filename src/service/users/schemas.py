from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, EmailStr, Field
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

from service.core.schemas import CamelModel, PartialUpdate, RequestModel, Timestamp, empty_to_none, reject_blank
from service.users.models import Role

USERNAME_PATTERN = r"^[A-Za-z0-9_-]+$"
# What the image field accepts, stated in the schema too: blank (stored as null, A4; str.strip() also strips
# \x1c-\x1f, which \s leaves out) or a web URL, as _http_url checks (JSON Schema has no case-insensitive flag).
IMAGE_URL_PATTERN = r"^[\s\x1c-\x1f]*$|^[Hh][Tt][Tt][Pp][Ss]?://"


def _http_url(value: str | None) -> str | None:
    # Frontends put this in <img src>: only web URLs, never javascript: or data: schemes.
    if value is not None and not value.lower().startswith(("http://", "https://")):
        raise PydanticCustomError("invalid", "is invalid")
    return value


Username = Annotated[
    str,
    Field(max_length=50, pattern=USERNAME_PATTERN, examples=["jake"]),
    BeforeValidator(reject_blank),
]
Email = Annotated[EmailStr, Field(max_length=254, examples=["jake@jake.jake"]), BeforeValidator(reject_blank)]
Password = Annotated[str, Field(min_length=8, max_length=256, examples=["jakejakejake"]), BeforeValidator(reject_blank)]
Bio = Annotated[Annotated[str, Field(max_length=2000)] | None, BeforeValidator(empty_to_none)]
ImageUrl = Annotated[
    Annotated[
        str,
        Field(
            max_length=2000, pattern=IMAGE_URL_PATTERN, examples=["https://api.realworld.io/images/smiley-cyrus.jpg"]
        ),
    ]
    | None,
    BeforeValidator(empty_to_none),
    AfterValidator(_http_url),
]


class UserCreate(RequestModel):
    username: Username
    email: Email
    password: Password


class UserLogin(RequestModel):
    email: Annotated[
        str, Field(min_length=1, max_length=254, examples=["jake@jake.jake"]), BeforeValidator(reject_blank)
    ]
    password: Annotated[
        str, Field(min_length=1, max_length=256, examples=["jakejakejake"]), BeforeValidator(reject_blank)
    ]


class UserUpdate(PartialUpdate):
    """Any subset of the fields; ``null`` or ``""`` for e-mail, username or password is ``can't be blank``.

    Unset fields are None internally; an explicit null is refused, so the schema does not offer it.
    """

    email: Annotated[Email | SkipJsonSchema[None], BeforeValidator(reject_blank)] = None
    username: Annotated[Username | SkipJsonSchema[None], BeforeValidator(reject_blank)] = None
    password: Annotated[Password | SkipJsonSchema[None], BeforeValidator(reject_blank)] = None
    bio: Bio = None
    image: ImageUrl = None


class UserCreateEnvelope(RequestModel):
    user: UserCreate


class UserLoginEnvelope(RequestModel):
    user: UserLogin


class UserUpdateEnvelope(RequestModel):
    user: UserUpdate


class UserRead(CamelModel):
    email: str
    token: str
    username: str
    bio: str | None
    image: str | None
    role: Role
    email_verified: bool  # B7: false until the link mailed to ``email`` is followed


class UserEnvelope(CamelModel):
    user: UserRead


class SessionUserRead(UserRead):
    """The user object of register, login and refresh: also the session's refresh token (B5), shown only here."""

    refresh_token: str


class SessionUserEnvelope(CamelModel):
    user: SessionUserRead


class RefreshRequest(RequestModel):
    refresh_token: Annotated[str, Field(min_length=1, max_length=200), BeforeValidator(reject_blank)]


# A mailed link's token (B7): 43 characters as issued; anything longer names no token.
LinkToken = Annotated[str, Field(min_length=1, max_length=200), BeforeValidator(reject_blank)]


class VerifyRequest(RequestModel):
    token: LinkToken


class PasswordResetRequest(RequestModel):
    email: Email


class PasswordResetConfirm(RequestModel):
    token: LinkToken
    password: Password


class SessionRead(CamelModel):
    id: int
    created_at: Timestamp
    last_used_at: Timestamp
    user_agent: str | None
    ip: str | None
    current: bool


class SessionsEnvelope(CamelModel):
    sessions: list[SessionRead]
