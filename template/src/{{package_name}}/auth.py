"""Who is calling: the `Caller` every route but `/health` and `/ready` resolves.

    @router.get("/things")
    def list_things(caller: CurrentCaller) -> list[Thing]: ...

`AUTH_MODE` picks how a request proves who it is:
- `none`: nobody has to; every request is the caller `anonymous`, who sees every task. For
  development only, and loudly logged at startup.
- `api_key`: `Authorization: Bearer <key>` with a key from `API_KEYS` ("caller_id=key", or
  "caller_id=sha256:<hex digest of the key>" so the key itself is never configured).
- `jwt`: `Authorization: Bearer <JWT>`, verified with PyJWT against `JWT_JWKS_URL` (the identity
  provider's keys) or `JWT_SECRET`, `JWT_ISSUER` and `JWT_AUDIENCE`; the caller is its `sub`. On
  Lambda behind an API Gateway JWT authorizer (`JWT_API_GATEWAY_AUTHORIZER=true`), the claims API
  Gateway verified (in the event) are taken as they are.

Another identity provider plugs in as one more `Authenticator`: a class with
`authenticate(request, token) -> Caller` that raises `NotAuthenticatedError` (and `blocks = False`
if it never waits on the network, so it runs on the event loop), returned by `build_authenticator`.
"""

import hashlib
import hmac
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Protocol

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from .settings import Settings, parse_api_keys

logger = logging.getLogger(__name__)

ANONYMOUS = "anonymous"
_REALM = 'Bearer realm="api"'


@dataclass(frozen=True)
class Caller:
    """An authenticated caller: the id tasks are filed under, and what it may do."""

    id: str
    scopes: frozenset[str] = frozenset()
    # Sees and manages every caller's tasks, not only its own.
    is_admin: bool = False


class NotAuthenticatedError(HTTPException):
    """401 in the error envelope, with the `WWW-Authenticate` challenge RFC 6750 asks for."""

    def __init__(self, message: str, *, invalid_token: bool = False) -> None:
        challenge = f'{_REALM}, error="invalid_token"' if invalid_token else _REALM
        super().__init__(401, message, headers={"WWW-Authenticate": challenge})


class Authenticator(Protocol):
    # True if `authenticate` may wait on the network (fetching an identity provider's keys): it
    # then runs on a worker thread. An authenticator without the attribute is taken to block.
    blocks: bool

    def authenticate(self, request: Request, token: str | None) -> Caller:
        """The caller `token` (the bearer credentials, if any) proves; raise
        NotAuthenticatedError if it proves none."""


class NoAuthentication:
    blocks = False

    def authenticate(self, request: Request, token: str | None) -> Caller:
        return Caller(id=ANONYMOUS, is_admin=True)


class ApiKeyAuthentication:
    blocks = False

    def __init__(self, digests: Mapping[str, bytes], admins: frozenset[str]) -> None:
        self._digests = dict(digests)
        self._admins = admins

    def authenticate(self, request: Request, token: str | None) -> Caller:
        presented = hashlib.sha256(_required(token).encode()).digest()
        found = None
        # Every digest is compared, in constant time, so timing tells nothing about the keys.
        for caller_id, digest in self._digests.items():
            if hmac.compare_digest(presented, digest):
                found = caller_id
        if found is None:
            raise NotAuthenticatedError("the API key is not valid", invalid_token=True)
        return Caller(id=found, is_admin=found in self._admins)


class JwtAuthentication:
    def __init__(self, settings: Settings) -> None:
        import jwt  # only services that use JWTs pay for importing PyJWT

        self._jwt = jwt
        self._issuer = settings.jwt_issuer
        self._audience = settings.jwt_audience
        secret = settings.jwt_secret.get_secret_value() if settings.jwt_secret else None
        self._secret = secret
        algorithms = settings.jwt_algorithms or ("HS256" if secret else "RS256")
        self._algorithms = [name.strip() for name in algorithms.split(",")]
        self._admin_scope = settings.auth_admin_scope
        self._jwks = jwt.PyJWKClient(settings.jwt_jwks_url) if settings.jwt_jwks_url else None
        # A JWKS is fetched (and fetched again for an unknown key id) over the network; a
        # signature check alone takes microseconds.
        self.blocks = self._jwks is not None
        self._trust_api_gateway = settings.jwt_api_gateway_authorizer

    def authenticate(self, request: Request, token: str | None) -> Caller:
        verified = _api_gateway_claims(request) if self._trust_api_gateway else None
        claims = verified if verified is not None else self._verify(_required(token))
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise NotAuthenticatedError("the token names no subject (sub)", invalid_token=True)
        scopes = _scopes_of(claims)
        return Caller(id=subject, scopes=scopes, is_admin=self._admin_scope in scopes)

    def _verify(self, token: str) -> dict[str, Any]:
        jwt = self._jwt
        if self._jwks is None and self._secret is None:
            # Only API Gateway verifies tokens here, and this request did not come through it.
            raise NotAuthenticatedError("tokens are verified by API Gateway; call through it")
        try:
            key: Any = (
                self._jwks.get_signing_key_from_jwt(token).key
                if self._jwks is not None
                else self._secret
            )
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=self._algorithms,
                audience=self._audience,
                issuer=self._issuer,
                options={"require": ["exp", "sub"]},
            )
        except (jwt.PyJWTError, jwt.PyJWKClientError) as error:
            logger.info("bearer token refused", extra={"reason": type(error).__name__})
            raise NotAuthenticatedError(
                "the bearer token is not valid", invalid_token=True
            ) from error
        return claims


def build_authenticator(settings: Settings) -> Authenticator:
    """The authenticator `AUTH_MODE` names (settings validated the rest)."""
    if settings.auth_mode == "api_key":
        listed = (settings.auth_admin_callers or "").split(",")
        admins = frozenset(filter(None, map(str.strip, listed)))
        keys = settings.api_keys.get_secret_value() if settings.api_keys else ""
        return ApiKeyAuthentication(parse_api_keys(keys), admins)
    if settings.auth_mode == "jwt":
        return JwtAuthentication(settings)
    logger.warning(
        "AUTH_MODE=none: every request is the anonymous caller and sees every task; "
        "set AUTH_MODE=api_key or jwt before this service leaves a developer's machine"
    )
    return NoAuthentication()


# Declared through FastAPI's HTTPBearer so the OpenAPI schema (and /docs) shows the scheme; it
# does not refuse on its own (auto_error=False): the authenticator decides, and answers in the
# envelope.
_bearer = HTTPBearer(
    auto_error=False, description="An API key (AUTH_MODE=api_key) or a JWT (AUTH_MODE=jwt)"
)


async def current_caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    """The `CurrentCaller` dependency.

    Checked on the event loop: a key or a signature takes microseconds, less than the hop to a
    worker thread (and back) that a sync dependency costs every request. Only an authenticator
    that may wait on the network runs on a thread.
    """
    authenticator: Authenticator = request.app.state.authenticator
    token = credentials.credentials if credentials else None
    if getattr(authenticator, "blocks", True):
        return await run_in_threadpool(authenticator.authenticate, request, token)
    return authenticator.authenticate(request, token)


CurrentCaller = Annotated[Caller, Depends(current_caller)]


def _required(token: str | None) -> str:
    if not token:
        raise NotAuthenticatedError("this endpoint needs Authorization: Bearer <credentials>")
    return token


def _api_gateway_claims(request: Request) -> dict[str, Any] | None:
    """Claims an API Gateway JWT authorizer verified, from the Lambda event Mangum passes on.

    Only API Gateway builds that event, so a client cannot forge it; a request that did not
    come through Mangum has none.
    """
    event = request.scope.get("aws.event")
    if not isinstance(event, Mapping):
        return None
    authorizer = event.get("requestContext", {}).get("authorizer") or {}
    jwt_context = authorizer.get("jwt") if isinstance(authorizer, Mapping) else None
    if not isinstance(jwt_context, Mapping) or not isinstance(jwt_context.get("claims"), Mapping):
        return None
    claims = dict(jwt_context["claims"])
    # HTTP APIs pass the token's scopes beside its claims.
    if isinstance(jwt_context.get("scopes"), list) and "scope" not in claims:
        claims["scope"] = " ".join(str(scope) for scope in jwt_context["scopes"])
    return claims


def _scopes_of(claims: Mapping[str, Any]) -> frozenset[str]:
    granted = claims.get("scope", claims.get("scp", ""))
    if isinstance(granted, str):
        return frozenset(granted.split())
    if isinstance(granted, list):
        return frozenset(str(scope) for scope in granted)
    return frozenset()
