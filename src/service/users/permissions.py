"""Who may do what: the one table of permissions (contract B4), and how routes and services consult it.

``PERMISSIONS`` maps every action to the roles allowed to take it. Actions on content come in pairs, ``..._OWN``
(the caller wrote it) and ``..._ANY`` (someone else did): a role missing from an ``_ANY`` row may still act on its
own content if the ``_OWN`` row lists it. The README's matrix is this table (a test compares them cell by cell),
and the permission tests are generated from it, so changing a cell changes what is enforced and what is tested.

A role is always read from the caller's row as the authentication dependency loaded it on this very request (it
reads the database on every request): a promotion, demotion or suspension applies from the next request on.
Signing in at all needs an active account; that is authentication's rule, not a row of this table.
"""

from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Protocol

from service.core.errors import Forbidden
from service.users.dependencies import CurrentUser
from service.users.models import Role
from service.users.service import AuthUser


class Action(StrEnum):
    EDIT_OWN_ARTICLE = "edit_own_article"
    EDIT_ANY_ARTICLE = "edit_any_article"
    DELETE_OWN_ARTICLE = "delete_own_article"
    DELETE_ANY_ARTICLE = "delete_any_article"
    DELETE_OWN_COMMENT = "delete_own_comment"
    DELETE_ANY_COMMENT = "delete_any_comment"
    LIST_USERS = "list_users"
    CHANGE_ROLE = "change_role"
    CHANGE_STATUS = "change_status"
    DELETE_USER = "delete_user"
    READ_AUDIT_LOG = "read_audit_log"
    MANAGE_OUTBOX = "manage_outbox"


EVERYONE = frozenset(Role)
STAFF = frozenset({Role.MODERATOR, Role.ADMIN})
ADMINS = frozenset({Role.ADMIN})
NOBODY: frozenset[Role] = frozenset()

PERMISSIONS: dict[Action, frozenset[Role]] = {
    Action.EDIT_OWN_ARTICLE: EVERYONE,
    Action.EDIT_ANY_ARTICLE: NOBODY,  # editing is the author's alone, whatever the role (B4)
    Action.DELETE_OWN_ARTICLE: EVERYONE,
    Action.DELETE_ANY_ARTICLE: STAFF,  # moderation: recorded in the audit log
    Action.DELETE_OWN_COMMENT: EVERYONE,
    Action.DELETE_ANY_COMMENT: STAFF,  # moderation: recorded in the audit log
    Action.LIST_USERS: ADMINS,
    Action.CHANGE_ROLE: ADMINS,
    Action.CHANGE_STATUS: ADMINS,
    Action.DELETE_USER: ADMINS,
    Action.READ_AUDIT_LOG: ADMINS,
    Action.MANAGE_OUTBOX: ADMINS,  # operations: the e-mail queue, its dead letters and their retry
}


class HasRole(Protocol):
    @property
    def role(self) -> Role: ...


class Caller(HasRole, Protocol):
    @property
    def id(self) -> int: ...


def can(user: HasRole, action: Action) -> bool:
    return role_can(user.role, action)


def role_can(role: Role, action: Action) -> bool:
    return role in PERMISSIONS[action]


def can_on(user: Caller, author_id: int, *, own: Action, other: Action) -> bool:
    """Whether ``user`` may take an action on content written by ``author_id``: ``own`` if they wrote it."""
    return can(user, own if author_id == user.id else other)


def require(*actions: Action) -> Callable[[AuthUser], Awaitable[AuthUser]]:
    """A dependency giving the caller if their role allows at least one of ``actions``; else 403 ``role``.

    Build it once per route signature (module level): FastAPI caches a dependency per callable, and the role comes
    from the user the authentication dependency loaded on this request, so the check costs no statement.
    """
    if not actions:
        raise ValueError("require() needs at least one action")

    async def permitted(user: CurrentUser) -> AuthUser:
        if not any(can(user, action) for action in actions):
            raise Forbidden("role", "forbidden")
        return user

    return permitted
