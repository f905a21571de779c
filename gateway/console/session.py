"""Sessions, CSRF and the security headers of the console and the portal: one middleware.

Sessions live in the store (gateway/store/sessions.py), not in a signed or encrypted cookie:
the portal runs in every data-plane worker and in every instance of a fleet, and a store row
is seen by all of them, can be ended at once (sign-out, idle timeout) and needs no key shared
between instances. The cookie holds only a random session token (HttpOnly, SameSite=Strict,
Secure behind https); the CSRF token of a session is an HMAC of that token, so it is never
stored and cannot be turned back into the cookie.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp_jinja2
from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError
from multidict import MultiDictProxy

from gateway.admin.problems import REQUEST_ID
from gateway.admin.state import STORE, TOKEN
from gateway.errors import ProblemError, StoreError
from gateway.store.records import ACTIVE
from gateway.store.sessions import Session, SessionStore

log = logging.getLogger("gateway.console")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

BODY_LIMIT = 64 * 1024  # a form of the console or the portal
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Place:
    """Where the pages are served and for whom: the console (admin port, every account) or
    the portal (data plane, one account per session)."""

    kind: str  # "console" | "portal"
    root: str  # the URL prefix the browser sees: "/ui" or portal.path
    cookie: str
    idle_seconds: float
    always_secure: bool  # portal.public_url is https: the cookie is Secure whatever the hop
    public_origin: str = ""  # portal.public_url's scheme://host[:port], lower case


PLACE: web.AppKey[Place] = web.AppKey("place", Place)
SESSIONS: web.AppKey[SessionStore] = web.AppKey("sessions", SessionStore)
OPEN_HANDLERS: web.AppKey[frozenset[Handler]] = web.AppKey("open_handlers", frozenset)
SESSION: web.RequestKey[Session] = web.RequestKey("session", Session)
CSRF: web.RequestKey[str] = web.RequestKey("csrf", str)


class BadForm(ProblemError):
    """A form body that cannot be read (not valid in its charset, an unknown charset)."""

    status = 400
    title = "Bad request"


class FormTooLarge(ProblemError):
    status = 413
    title = "Form too large"


async def read_form(
    request: web.Request,
) -> MultiDictProxy[str | bytes | bytearray | web.FileField]:
    """The request's form, or a 400 page: whatever a client sends, reading its form never
    crashes a handler (aiohttp raises UnicodeDecodeError for bytes that are not valid in the
    charset, LookupError for an unknown charset)."""
    # The limit is checked here: a sub-application's client_max_size is not used (aiohttp
    # reads with the parent's, the admin app's 1 MiB), and on the data plane the portal's door
    # reads at most BODY_LIMIT before the request gets here. A chunked body without a length
    # is bounded by those.
    if (request.content_length or 0) > BODY_LIMIT:
        raise FormTooLarge(f"A form is at most {BODY_LIMIT // 1024} KiB; nothing was changed.")
    try:
        return await request.post()
    except web.HTTPRequestEntityTooLarge:
        raise FormTooLarge("The form is too large; nothing was changed.") from None
    except (ValueError, LookupError):
        raise BadForm("The form could not be read, so nothing was changed.") from None


def same_digest(given: str, expected: str) -> bool:
    """Constant-time comparison of a client's text with an expected ASCII value. Compared as
    bytes: `hmac.compare_digest` raises TypeError on non-ASCII str."""
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode())


def session_binding(request: web.Request) -> bytes:
    """The key this place's sessions are bound to: the admin token's fingerprint for the
    console (changing the token ends its sessions), none for the portal."""
    if request.app[PLACE].kind == "console":
        return request.app[TOKEN].session_key()
    return b""


def cross_site(request: web.Request) -> bool:
    """Whether a form was sent from another site (login CSRF, a page driving the forms): by
    `Sec-Fetch-Site` (every current browser sends it) when present, else by `Origin` against
    this request's own host (either scheme: a TLS-terminating proxy may have changed it) or
    `portal.public_url`. Neither header (a non-browser client): not cross-site; the session's
    CSRF token still guards every form but the sign-in and link ones."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        return site.strip().lower() != "same-origin"
    origin = request.headers.get("Origin")
    if origin is None:
        return False
    origin = origin.strip().lower()
    own = {f"{scheme}://{request.host.lower()}" for scheme in ("http", "https")}
    if request.app[PLACE].public_origin:
        own.add(request.app[PLACE].public_origin)
    return origin not in own


def csrf_token(session_token: str) -> str:
    return hmac.new(session_token.encode(), b"keygate-csrf", hashlib.sha256).hexdigest()


def is_secure(request: web.Request, place: Place) -> bool:
    # A spoofed X-Forwarded-Proto can only make the cookie stricter, never weaker.
    return (
        place.always_secure
        or request.secure
        or request.headers.get("X-Forwarded-Proto", "").lower() == "https"
    )


def session_cookie(request: web.Request, place: Place, value: str) -> str:
    """A Set-Cookie value; an empty `value` deletes the cookie. No Max-Age: the browser drops
    it on exit, and the store ends it after `idle_seconds` without a request."""
    parts = [f"{place.cookie}={value}", f"Path={place.root}/", "HttpOnly", "SameSite=Strict"]
    if is_secure(request, place):
        parts.append("Secure")
    if not value:
        parts.append("Max-Age=0")
    return "; ".join(parts)


def message(request: web.Request, status: int, title: str, detail: str) -> web.Response:
    """A page that only says something (an error, a used link, signed out)."""
    return aiohttp_jinja2.render_template(
        "message.html",
        request,
        {"title": title, "detail": detail, "place": request.app[PLACE]},
        status=status,
    )


def see_other(location: str, cookie: str | None = None) -> web.Response:
    # Returned, not raised: the fleet's propagation middleware waits only for what returns.
    response = web.Response(status=303, headers={"Location": location})
    if cookie is not None:
        response.headers.add("Set-Cookie", cookie)
    return response


@web.middleware
async def console_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Security headers on every answer; a live session (and on POST its CSRF token) before
    any handler that is not open; errors as pages."""
    place = request.app[PLACE]
    if REQUEST_ID not in request:
        request[REQUEST_ID] = os.urandom(16).hex()
    try:
        response = await _guarded(request, handler, place)
    except ProblemError as exc:
        response = message(request, exc.status, exc.title, exc.detail)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = message(request, exc.status, exc.reason, "There is no such page here.")
    except RequestPayloadError as exc:
        log.warning("console request body could not be read (%s)", type(exc).__name__)
        response = message(
            request, 400, "Bad request", "The form could not be read, so nothing was changed."
        )
        response.force_close()
    except StoreError as exc:
        log.error("store error on %s %s: %s", request.method, request.path, exc)
        response = message(
            request, 503, "Store unavailable", "Nothing was changed. Try again shortly."
        )
    except Exception:
        log.exception("console request %s %s failed", request.method, request.path)
        response = message(request, 500, "Internal error", "Nothing about it is shown here.")
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


async def _guarded(request: web.Request, handler: Handler, place: Place) -> web.StreamResponse:
    if request.method not in ("GET", "HEAD") and cross_site(request):
        log.warning("cross-site %s %s refused", request.method, request.path)
        return message(
            request,
            403,
            "Refused",
            "This form was sent from another site, so nothing was changed.",
        )
    if request.match_info.handler in request.app[OPEN_HANDLERS]:
        return await handler(request)
    token = request.cookies.get(place.cookie, "")
    sessions = request.app[SESSIONS]
    session = (
        await sessions.session(token, place.kind, bound_to=session_binding(request))
        if token
        else None
    )
    if session is None:
        if place.kind == "console" and request.method == "GET":
            return see_other(f"{place.root}/sign-in", session_cookie(request, place, ""))
        response = message(
            request,
            401 if request.method == "GET" else 403,
            "Signed out",
            "Your session has ended (or never began); nothing was changed. "
            + (
                "Sign in again."
                if place.kind == "console"
                else "Open the API keys page again from the application that sent you here."
            ),
        )
        response.headers.add("Set-Cookie", session_cookie(request, place, ""))
        return response
    wanted = request.match_info.get("account_id")
    if session.account_id is not None and wanted is not None and wanted != session.account_id:
        # A portal session reaches its own account only: another id is a page that does not
        # exist, whatever was edited into the URL.
        raise web.HTTPNotFound()
    if session.account_id is not None:
        account = await request.app[STORE].get_account(session.account_id)
        if account is None or account.status != ACTIVE:
            # Deactivated since the link was opened: the portal neither shows nor changes it.
            return message(request, 403, "Account deactivated", "This account is deactivated.")
    request[SESSION] = session
    request[CSRF] = expected = csrf_token(token)
    if request.method not in ("GET", "HEAD"):
        form = await read_form(request)
        given = form.get("csrf")
        if not isinstance(given, str) or not same_digest(given, expected):
            return message(
                request,
                403,
                "Refused",
                "This form has no valid CSRF token, so nothing was changed. Reload the page "
                "and try again.",
            )
    return await handler(request)
