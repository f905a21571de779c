"""The gateway's small error tree (stdlib only).

    GatewayError
    ├── ConfigError          start-up: bad configuration file (exit code 2)
    ├── StoreError           the store failed or is unavailable (admin: 503)
    └── ProblemError         a client error with an HTTP status and problem+json body
        ├── NotFoundError    404
        ├── ConflictError    409: a uniqueness or limit rule was hit
        └── ValidationError  400 with `errors: [{field, message}]`

Errors become responses in exactly one place per listener: the admin API's middleware
(`gateway.admin.problems`) and the data plane's local responder (`gateway.dataplane`).
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""


class ConfigError(GatewayError):
    """The configuration cannot be used; the message names the file and the key."""

    def __init__(self, source: str, key: str | None, message: str) -> None:
        self.source = source
        self.key = key
        self.message = message
        where = f"{source}: {key}: " if key else f"{source}: "
        super().__init__(where + message)


class StoreError(GatewayError):
    """The store could not complete an operation."""


class ProblemError(GatewayError):
    """An error the client caused, rendered as an RFC 9457 problem."""

    status = 400
    title = "Bad Request"
    type = "about:blank"

    def __init__(
        self,
        detail: str,
        *,
        status: int | None = None,
        title: str | None = None,
        type: str | None = None,
        errors: list[dict[str, str]] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        if status is not None:
            self.status = status
        if title is not None:
            self.title = title
        if type is not None:
            self.type = type
        self.errors = errors


class NotFoundError(ProblemError):
    status = 404
    title = "Not Found"


class ConflictError(ProblemError):
    """The change would break a uniqueness or limit rule."""

    status = 409
    title = "Conflict"


class ValidationError(ProblemError):
    status = 400
    title = "Validation failed"
    type = "urn:gateway:problem:validation"

    def __init__(self, errors: list[dict[str, str]], detail: str | None = None) -> None:
        first = errors[0] if errors else {"field": "", "message": "invalid"}
        msg = detail or f"{first['field'] or 'body'}: {first['message']}"
        super().__init__(msg, errors=errors)
