from service.core.schemas import CamelModel


class ProfileRead(CamelModel):
    username: str
    bio: str | None
    image: str | None
    following: bool


class ProfileEnvelope(CamelModel):
    profile: ProfileRead
