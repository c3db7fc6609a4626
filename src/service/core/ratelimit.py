"""Rate limits on login, registration and refresh (B5): per client address, per account and per session.

The counts live in Redis when ``SERVICE_REDIS_URL`` is set, so every instance shares them, and in this process
otherwise. Windows are moving windows (``limits``' moving-window strategy): exact, so the 11th failure within
15 minutes is refused whatever the wall clock says, and ``Retry-After`` is when the oldest counted hit leaves
the window. When the storage fails the limiter fails open: the request goes through, one warning is logged per
outage (and one when it is over), and Redis is left alone for a few seconds before it is tried again.
"""

import hashlib
import ipaddress
import logging
import math
import time
from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import Depends, Request
from limits import RateLimitItem
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from redis.asyncio import ConnectionPool

from service.core.config import Settings, parse_rate_limit
from service.core.errors import TooManyRequests

logger = logging.getLogger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# A Redis that hangs instead of refusing costs a request at most this long, then the limiter fails open.
REDIS_TIMEOUT_S = 0.5
# After a storage failure, limits are skipped this long before Redis is tried again: an outage adds no latency.
STORAGE_RETRY_S = 5.0
_STORAGE_ERRORS = (StorageError, OSError)  # wrap_exceptions=True: redis-py's errors arrive as StorageError


def _storage_uri(redis_url: str) -> str:
    """``limits``' async scheme for a redis-py URL: ``redis://h`` -> ``async+redis://h``, ``unix://`` likewise."""
    if redis_url.startswith("unix://"):
        return f"async+redis+{redis_url}"
    return f"async+{redis_url}"


def _digest(value: str) -> str:
    """Keys name accounts and sessions by digest: no e-mail address or session id is readable in Redis."""
    return hashlib.sha256(value.encode()).hexdigest()[:32]


def account_key(email: str) -> str:
    return _digest(email.strip().lower())


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # ::ffff:10.0.0.1 is 10.0.0.1 (a dual-stack socket reports it so)
    return address


def _trusted(text: str, networks: Sequence[Network]) -> bool:
    address = _ip(text)
    return address is not None and any(address in network for network in networks)


def client_address(request: Request, trusted_proxies: Sequence[Network]) -> str:
    """The client's address: the peer, unless the peer is a trusted proxy; then X-Forwarded-For, read from the
    right (each proxy appends the address it saw) past every trusted proxy, names the client. Anything to the left
    of that was written by the client itself and is never believed."""
    peer = request.client.host if request.client else ""
    if not trusted_proxies or not _trusted(peer, trusted_proxies):
        return peer or "unknown"
    hops = [hop.strip() for header in request.headers.getlist("x-forwarded-for") for hop in header.split(",")]
    hops = [hop for hop in hops if hop]
    for hop in reversed(hops):
        if not _trusted(hop, trusted_proxies):
            address = _ip(hop)
            return str(address) if address is not None else hop[:64]
    return str(_ip(hops[0]) or peer) if hops else peer  # every hop is one of ours: the furthest one is the client


class RateLimiter:
    """The service's rate limits. Built once by ``create_app`` (``app.state.rate_limiter``); connects on first use.

    Each ``check_*`` raises ``TooManyRequests`` (429, ``Retry-After``) when a limit is reached, and returns
    otherwise; with limits disabled, or while the storage is unreachable, it always returns.
    """

    def __init__(self, settings: Settings) -> None:
        self.enabled = settings.rate_limits_enabled
        self.trusted_proxies: tuple[Network, ...] = tuple(
            ipaddress.ip_network(proxy, strict=False) for proxy in settings.trusted_proxies
        )
        self.login_account_failures = parse_rate_limit(settings.rate_limit_login_account_failures)
        self.login_address = parse_rate_limit(settings.rate_limit_login_address)
        self.register_address = parse_rate_limit(settings.rate_limit_register_address)
        self.refresh_session = parse_rate_limit(settings.rate_limit_refresh_session)
        self.refresh_address = parse_rate_limit(settings.rate_limit_refresh_address)
        self.email_address = parse_rate_limit(settings.rate_limit_email_address)
        self.email_recipient = parse_rate_limit(settings.rate_limit_email_recipient)
        self._pool: ConnectionPool | None = None
        self._window = MovingWindowRateLimiter(self._build_storage(settings) if self.enabled else MemoryStorage())
        self._down = False
        self._retry_at = 0.0

    def _build_storage(self, settings: Settings) -> Storage:
        if not settings.redis_url:
            return MemoryStorage()
        # Our own pool (nothing connects until the first command), so that aclose() can release it at shutdown.
        self._pool = ConnectionPool.from_url(
            settings.redis_url, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S
        )
        options: dict[str, Any] = {"connection_pool": self._pool}
        return RedisStorage(
            _storage_uri(settings.redis_url),
            wrap_exceptions=True,
            implementation="redispy",  # the redis client we already depend on, not coredis
            key_prefix=settings.rate_limit_key_prefix,
            **options,
        )

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()

    def client_address(self, request: Request) -> str:
        return client_address(request, self.trusted_proxies)

    async def check_login(self, address: str, account: str) -> None:
        """Before checking a password: counts the attempt against the address, and refuses once the account
        (its lower-cased e-mail) has had its number of failures within the window, the right password included."""
        await self._check(self.login_address, "login-address", address)
        await self._check(self.login_account_failures, "login-failures", account_key(account), count=False)

    async def login_failed(self, account: str) -> None:
        """A wrong password (or an unknown e-mail) for this account: one more failure in its window."""
        await self._hit(self.login_account_failures, "login-failures", account_key(account), count=True)

    async def check_register(self, address: str) -> None:
        await self._check(self.register_address, "register-address", address)

    async def check_refresh(self, address: str, session_key: str | None = None) -> None:
        """Counts a refresh against the address and, given ``session_key`` (a stable id of the session, such as its
        primary key; never the rotating refresh token), against the session."""
        await self._check(self.refresh_address, "refresh-address", address)
        if session_key is not None:
            await self._check(self.refresh_session, "refresh-session", _digest(session_key))

    async def check_email(self, kind: str, address: str, recipient: str | None = None) -> None:
        """B7's resend, password reset and its confirmation (``kind``): counted against the client address and,
        given ``recipient`` (an e-mail address, known to us or not), against the mails that address gets."""
        await self._check(self.email_address, f"{kind}-address", address)
        if recipient is not None:
            await self._check(self.email_recipient, f"{kind}-recipient", account_key(recipient))

    async def _check(self, item: RateLimitItem, kind: str, key: str, *, count: bool = True) -> None:
        reset_at = await self._hit(item, kind, key, count=count)
        if reset_at is not None:
            logger.info("rate limited", extra={"limit": kind})
            raise TooManyRequests(math.ceil(reset_at - time.time()))

    async def _hit(self, item: RateLimitItem, kind: str, key: str, *, count: bool) -> float | None:
        """Counts one hit (``count``) or only looks; None when within the limit, else when a slot frees up."""
        if not self.enabled or (self._down and time.monotonic() < self._retry_at):
            return None
        try:
            allowed = await (self._window.hit(item, kind, key) if count else self._window.test(item, kind, key))
            reset_at = None if allowed else (await self._window.get_window_stats(item, kind, key)).reset_time
        except _STORAGE_ERRORS as exc:
            self._storage_failed(exc)
            return None
        if self._down:
            self._down = False
            logger.warning("rate limits: storage reachable again, limits apply")
        return reset_at

    def _storage_failed(self, exc: Exception) -> None:
        self._retry_at = time.monotonic() + STORAGE_RETRY_S
        if not self._down:
            self._down = True
            cause = exc.__cause__ or exc
            logger.warning(
                "rate limits: storage unreachable, requests are not limited",
                extra={"error": type(cause).__name__, "retry_in_s": STORAGE_RETRY_S},
            )


async def get_rate_limiter(request: Request) -> RateLimiter:
    limiter: RateLimiter = request.app.state.rate_limiter
    return limiter


RateLimiterDep = Annotated[RateLimiter, Depends(get_rate_limiter)]
