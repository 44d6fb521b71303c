"""The API key as FastAPI dependencies: :class:`ApiKey` checks ``Authorization: Bearer <key>``
on the ``/v1/*`` routes (when the service has a key) and on the admin routes (always)."""

import hmac
from typing import Annotated, Any

from bertprobe.core.extras import needs_extra
from bertprobe.serve.config import ServeSecurity
from bertprobe.serve.errors import AdminNeedsKey, Unauthorized

with needs_extra("serve"):
    from fastapi import Depends
    from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

# Not auto_error: a missing header is our 401 (with its one-line detail), not FastAPI's 403.
bearer = HTTPBearer(auto_error=False, description="The key the service was started with.")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


class ApiKey:
    """The key check of one service, from its :class:`~bertprobe.serve.config.ServeSecurity`.

    :meth:`require_key` and :meth:`require_admin` are the dependencies; :attr:`keyed` is what
    the ``/v1/*`` routes depend on: the key check when there is a key, else nothing, so that
    their OpenAPI schema says they are open.
    """

    def __init__(self, security: ServeSecurity) -> None:
        self._expected = security.api_key.encode() if security.api_key else None

    @property
    def keyed(self) -> list[Any]:
        return [Depends(self.require_key)] if self._expected is not None else []

    def _matches(self, credentials: HTTPAuthorizationCredentials | None) -> bool:
        if self._expected is None:
            return True
        sent = credentials.credentials.encode("utf-8", "replace") if credentials else b""
        return hmac.compare_digest(sent, self._expected)  # in constant time

    async def require_key(self, credentials: Credentials) -> None:
        """Raise :class:`~bertprobe.serve.errors.Unauthorized` unless the key is sent."""
        if not self._matches(credentials):
            raise Unauthorized

    async def require_admin(self, credentials: Credentials) -> None:
        """As :meth:`require_key`; and without a key configured, no one may (403)."""
        if self._expected is None:
            raise AdminNeedsKey
        if not self._matches(credentials):
            raise Unauthorized
