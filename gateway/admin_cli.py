"""`gateway admin ...`: a command-line client of the admin API (stdlib HTTP, no event loop).

Tables for people by default, `--json` for scripts. The token comes from GATEWAY_ADMIN_TOKEN;
the plaintext of a key is printed once, when it is created or regenerated.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8081"
TOKEN_ENV = "GATEWAY_ADMIN_TOKEN"  # noqa: S105 - the variable name, not a secret


class CliError(Exception):
    pass


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    admin = sub.add_parser(
        "admin",
        help="manage accounts, keys, origins and webhooks; read the audit trail",
        description="A client of the admin API: accounts, API keys, callback origins, webhook "
        "deliveries and events, the audit trail. The admin token comes from "
        f"${TOKEN_ENV}.",
    )
    admin.add_argument(
        "--url",
        default=os.environ.get("GATEWAY_ADMIN_URL", DEFAULT_URL),
        help=f"admin API base URL (default: $GATEWAY_ADMIN_URL or {DEFAULT_URL})",
    )
    admin.add_argument("--json", action="store_true", help="print the raw JSON answer")
    what = admin.add_subparsers(dest="resource", metavar="RESOURCE", required=True)

    accounts = what.add_parser("accounts", help="accounts").add_subparsers(
        dest="action", required=True
    )
    p = accounts.add_parser("create", help="create an account (and its production key)")
    p.add_argument("name")
    p.add_argument("--id", help="choose the account id (default: generated)")
    p.add_argument("--no-key", action="store_true", help="do not provision a production key")
    p = accounts.add_parser("list", help="list accounts")
    p.add_argument("--status", choices=("active", "deactivated"))
    _paging(p)
    for name in ("get", "deactivate", "activate"):
        accounts.add_parser(name, help=f"{name} an account").add_argument("account_id")
    p = accounts.add_parser("rename", help="rename an account")
    p.add_argument("account_id")
    p.add_argument("name")

    keys = what.add_parser("keys", help="API keys").add_subparsers(dest="action", required=True)
    p = keys.add_parser("create", help="create a key (its plaintext is printed once)")
    p.add_argument("--account", required=True, dest="account_id")
    p.add_argument("--name")
    p.add_argument("--description")
    p.add_argument(
        "--scope", action="append", dest="scopes", help="repeat for several (default: all)"
    )
    p.add_argument("--tool-pack", action="append", dest="tool_pack_ids")
    p.add_argument("--registered-user", action="append", dest="registered_user_ids")
    p.add_argument("--test", action="store_true", help="a test key (sk_test_...)")
    expiry = p.add_mutually_exclusive_group()
    expiry.add_argument("--expires-in", type=int, metavar="SECONDS")
    expiry.add_argument("--expires-at", metavar="RFC3339")
    expiry.add_argument("--never-expires", action="store_true")
    p.add_argument("--created-by")
    _webhook_options(p)
    p = keys.add_parser("update", help="rename, re-describe, or change webhook settings")
    p.add_argument("key_id")
    p.add_argument("--name")
    p.add_argument("--description")
    hook = p.add_mutually_exclusive_group()
    hook.add_argument("--webhook-url", metavar="URL", help="where this key's events are sent")
    hook.add_argument("--no-webhook", action="store_true", help="remove the webhook endpoint")
    p.add_argument(
        "--webhook-event",
        action="append",
        dest="webhook_events",
        metavar="TYPE",
        help="an event type to send (repeat; default: all, '*')",
    )
    on = p.add_mutually_exclusive_group()
    on.add_argument("--enable-webhook", action="store_const", const=True, dest="webhook_enabled")
    on.add_argument("--disable-webhook", action="store_const", const=False, dest="webhook_enabled")
    keys.add_parser(
        "rotate-signing-secret",
        help="new signing secret, printed once (the old one signs on for the overlap)",
    ).add_argument("key_id")
    p = keys.add_parser("list", help="list keys")
    p.add_argument("--account", dest="account_id")
    env = p.add_mutually_exclusive_group()
    env.add_argument("--test", action="store_const", const="true", dest="is_test")
    env.add_argument("--production", action="store_const", const="false", dest="is_test")
    p.add_argument("--status", choices=("active", "revoked", "expired"))
    _paging(p)
    for name in ("get", "regenerate", "revoke", "delete"):
        keys.add_parser(name, help=f"{name} a key").add_argument("key_id")

    origins = what.add_parser("origins", help="callback-origin allow-lists").add_subparsers(
        dest="action", required=True
    )
    origins.add_parser("list", help="list an account's origins").add_argument("account_id")
    for name in ("add", "remove"):
        p = origins.add_parser(name, help=f"{name} an origin (host or host:port)")
        p.add_argument("account_id")
        p.add_argument("origin")

    hooks = what.add_parser("webhooks", help="webhook deliveries").add_subparsers(
        dest="action", required=True
    )
    p = hooks.add_parser("deliveries", help="deliveries, newest first, with their attempts")
    p.add_argument("--key", dest="key_id")
    p.add_argument("--account", dest="account_id")
    p.add_argument("--status", choices=("pending", "succeeded", "failed"))
    p.add_argument("--event", dest="event_id")
    _paging(p)
    hooks.add_parser("retry", help="queue a delivery again now").add_argument("delivery_id")
    p = hooks.add_parser(
        "publish", help="raise an event for the keys of an account (or one key) that listen"
    )
    p.add_argument("type", help="the event's type, e.g. order.paid")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--account", dest="account_id")
    target.add_argument("--key", dest="key_id")
    p.add_argument("--environment", choices=("production", "test"))
    p.add_argument("--data", type=_json_object, default={}, help="the event's fields, as JSON")

    p = what.add_parser("audit", help="the audit trail, newest first")
    p.add_argument("--account", dest="account_id")
    p.add_argument("--environment", choices=("production", "test"))
    p.add_argument("--action", dest="audit_action")
    p.add_argument("--since", metavar="RFC3339")
    _paging(p)


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        raise argparse.ArgumentTypeError("not valid JSON") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def _webhook_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--webhook-url", metavar="URL", help="where this key's events are sent")
    p.add_argument(
        "--webhook-event",
        action="append",
        dest="webhook_events",
        metavar="TYPE",
        help="an event type to send (repeat; default: all, '*')",
    )


def _paging(p: argparse.ArgumentParser) -> None:
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--cursor")
    p.add_argument("--all", action="store_true", help="follow next_cursor to the end")


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is reported, never followed: following it would hand the admin token to
    whatever host the Location names."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class Client:
    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self._opener = urllib.request.build_opener(_NoRedirects)
        try:
            parts = urllib.parse.urlsplit(self.url)
            valid = parts.scheme in ("http", "https") and bool(parts.hostname)
            _ = parts.port  # ValueError for a port that is not a number
        except ValueError:
            valid = False
        if not valid:
            raise CliError(
                f"--url must be an http:// or https:// URL such as {DEFAULT_URL}, "
                f"got {_safe(url)!r}"
            )

    def call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        query: dict[str, Any] | None = None,
        expect: tuple[str, ...] = ("id",),
    ) -> Any:
        """The decoded JSON answer; `expect` names the fields an object answer must have."""
        url = self.url + path
        if query:
            url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        data = None if body is None else json.dumps(body).encode()
        try:
            request = urllib.request.Request(url, data=data, method=method)  # noqa: S310
        except ValueError as exc:
            raise CliError(f"invalid admin API URL: {_safe(str(exc))}") from None
        request.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        where = _safe(self.url)
        try:
            with self._opener.open(request, timeout=30) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            raise CliError(_describe_error(exc)) from None
        except urllib.error.URLError as exc:
            raise CliError(
                f"cannot reach the admin API at {where}: {_safe(str(exc.reason))}"
            ) from None
        except TimeoutError:
            raise CliError(f"the admin API at {where} did not answer in time") from None
        except (OSError, http.client.HTTPException) as exc:
            raise CliError(
                f"the admin API at {where} broke off the exchange: {_safe(type(exc).__name__)}"
            ) from None
        if not raw:
            if method == "DELETE":
                return None
            raise CliError(f"the admin API at {where} answered nothing")
        try:
            result = json.loads(raw)
        except (ValueError, RecursionError):
            raise CliError(
                f"the admin API at {where} answered something that is not JSON"
            ) from None
        if not isinstance(result, dict) or not all(k in result for k in expect):
            raise CliError(_unknown_shape(where))
        return result

    def pages(self, path: str, query: dict[str, Any], follow: bool) -> tuple[list[Any], str | None]:
        items: list[Any] = []
        seen: set[str] = set()
        while True:
            page = self.call("GET", path, query=query, expect=("data", "next_cursor"))
            if not isinstance(page["data"], list) or not all(
                isinstance(i, dict) for i in page["data"]
            ):
                raise CliError(_unknown_shape(_safe(self.url)))
            items += page["data"]
            cursor = page["next_cursor"]
            if not follow or not cursor:
                return items, cursor
            if not isinstance(cursor, str) or cursor in seen:
                raise CliError(
                    f"the admin API at {_safe(self.url)} sent the same page cursor twice; "
                    "stopped rather than loop"
                )
            seen.add(cursor)
            query = {**query, "cursor": cursor}


def _unknown_shape(where: str) -> str:
    return (
        f"the admin API at {where} answered in a shape this client does not know: "
        "is --url the gateway's admin port?"
    )


def _describe_error(exc: urllib.error.HTTPError) -> str:
    if 300 <= exc.code < 400:
        location = _safe(exc.headers.get("Location") or "nowhere")
        return (
            f"the admin API answered a redirect ({exc.code} to {location}); not followed, so "
            "the admin token was not sent there: check --url"
        )
    raw = exc.read(65536)
    if exc.code == 401:
        return f"unauthorized: check {TOKEN_ENV}"
    try:
        problem = json.loads(raw)
    except (ValueError, RecursionError):
        return f"HTTP {exc.code}"
    if not isinstance(problem, dict):
        return f"HTTP {exc.code}"
    title, detail = _safe(problem.get("title", "error")), _safe(problem.get("detail", ""))
    errors = problem.get("errors")
    fields = [
        f"{_safe(err.get('field') or 'body')}: {_safe(err.get('message'))}"
        for err in (errors if isinstance(errors, list) else [])
        if isinstance(err, dict)
    ]
    # One line: the field errors when there are some (a validation problem's detail repeats
    # the first of them), else the detail unless it only repeats the title.
    said = "; ".join(fields) or (detail if detail != title else "")
    return f"{title} ({exc.code}): {said}" if said else f"{title} ({exc.code})"


# C0, DEL, C1, bidirectional controls, line/paragraph separators, lone surrogates.
_CONTROL = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029\ud800-\udfff]"
)


def _safe(value: Any) -> str:
    """Text for a terminal: C0, DEL and C1 controls shown escaped (`\\x1b`), so nothing an API
    client stored (a key name, say) can move the cursor, erase lines or retitle the window."""
    text = str(value)
    if _CONTROL.search(text) is None:
        return text
    return _CONTROL.sub(_escape, text)


def _escape(m: re.Match[str]) -> str:
    code = ord(m.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    if not rows:
        return "(none)"
    cells = [[_cell(row.get(key)) for key, _ in columns] for row in rows]
    widths = [max(len(title), *(len(c[i]) for c in cells)) for i, (_, title) in enumerate(columns)]
    out = [
        "  ".join(title.ljust(w) for (_, title), w in zip(columns, widths, strict=True)).rstrip()
    ]
    out += [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    return "\n".join(out)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return _safe(",".join(map(str, value))) or "-"
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"))  # escapes every control character
    if isinstance(value, bool):
        return "yes" if value else "no"
    return _safe(value)


def _details(obj: dict[str, Any]) -> str:
    if not obj:
        return "(empty)"
    width = max(len(_safe(k)) for k in obj)
    return "\n".join(
        f"{_safe(k).ljust(width)}  {_cell(v)}"
        for k, v in obj.items()
        if k not in ("key", "signing_secret")  # plaintexts are shown apart, with a warning
    )


KEY_COLUMNS = (
    ("id", "ID"),
    ("name", "NAME"),
    ("key_masked", "KEY"),
    ("environment", "ENV"),
    ("status", "STATUS"),
    ("expires_at", "EXPIRES"),
    ("last_used_at", "LAST USED"),
)
ACCOUNT_COLUMNS = (("id", "ID"), ("name", "NAME"), ("status", "STATUS"), ("created_at", "CREATED"))
DELIVERY_COLUMNS = (
    ("id", "ID"),
    ("event_type", "EVENT"),
    ("key_id", "KEY"),
    ("status", "STATUS"),
    ("tries", "TRIES"),
    ("last", "LAST"),
    ("created_at", "QUEUED"),
)
AUDIT_COLUMNS = (
    ("at", "AT"),
    ("action", "ACTION"),
    ("actor", "ACTOR"),
    ("account_id", "ACCOUNT"),
    ("key_id", "KEY"),
    ("details", "DETAILS"),
)


def _show_key(key: dict[str, Any]) -> str:
    text = _details(key)
    if key.get("key"):
        text += (
            f"\n\nkey: {_safe(key['key'])}\n"
            "(shown once: store it now; the gateway keeps only its hash)"
        )
    if key.get("signing_secret"):
        text += (
            f"\n\nsigning secret: {_safe(key['signing_secret'])}\n"
            "(shown once: give it to whoever verifies this key's webhooks)"
        )
    return text


def run(args: argparse.Namespace) -> int:
    token = os.environ.get(TOKEN_ENV, "")
    if not token:
        print(f"gateway admin: set {TOKEN_ENV} to the admin token", file=sys.stderr)
        return 2
    try:
        client = Client(args.url, token)
        try:
            result, text = _dispatch(client, args)
        except (KeyError, TypeError, AttributeError, IndexError):
            raise CliError(_unknown_shape(_safe(client.url))) from None
    except CliError as exc:
        print(f"gateway admin: {exc}", file=sys.stderr)
        return 1
    if args.json:
        if result is not None:
            print(json.dumps(result, indent=2))
    elif text:
        print(text)
    return 0


def _dispatch(c: Client, a: argparse.Namespace) -> tuple[Any, str]:
    r, act = a.resource, getattr(a, "action", None)
    q = urllib.parse.quote
    if r == "accounts":
        if act == "create":
            body: dict[str, Any] = {"name": a.name, "provision_production_key": not a.no_key}
            if a.id:
                body["id"] = a.id
            acct = c.call("POST", "/admin/v1/accounts", body)
            text = _details({k: v for k, v in acct.items() if k != "production_key"})
            if acct.get("production_key"):
                text += "\n\nproduction key:\n" + _show_key(acct["production_key"])
            return acct, text
        if act == "list":
            items, nxt = c.pages(
                "/admin/v1/accounts",
                {"status": a.status, "limit": a.limit, "cursor": a.cursor},
                a.all,
            )
            return {"data": items, "next_cursor": nxt}, _table(items, ACCOUNT_COLUMNS) + _more(nxt)
        path = f"/admin/v1/accounts/{q(a.account_id, safe='')}"
        if act == "get":
            acct = c.call("GET", path)
        elif act == "rename":
            acct = c.call("PATCH", path, {"name": a.name})
        else:
            acct = c.call(
                "PATCH", path, {"status": "active" if act == "activate" else "deactivated"}
            )
        return acct, _details(acct)
    if r == "keys":
        if act == "create":
            body = {"account_id": a.account_id, "is_test": a.test}
            for field in (
                "name",
                "description",
                "scopes",
                "tool_pack_ids",
                "registered_user_ids",
                "created_by",
                "expires_in",
                "expires_at",
                "webhook_url",
                "webhook_events",
            ):
                if getattr(a, field) is not None:
                    body[field] = getattr(a, field)
            if a.never_expires:
                body["expires_at"] = None
            key = c.call("POST", "/admin/v1/keys", body)
            return key, _show_key(key)
        if act == "update":
            fields = ("name", "description", "webhook_url", "webhook_events", "webhook_enabled")
            body = {f: getattr(a, f) for f in fields if getattr(a, f) is not None}
            if a.no_webhook:
                body["webhook_url"] = None
            if not body:
                raise CliError("nothing to change: give --name, --description or a --webhook-...")
            key = c.call("PATCH", f"/admin/v1/keys/{q(a.key_id, safe='')}", body)
            return key, _show_key(key)
        if act == "list":
            query = {
                "account_id": a.account_id,
                "is_test": a.is_test,
                "status": a.status,
                "limit": a.limit,
                "cursor": a.cursor,
            }
            items, nxt = c.pages("/admin/v1/keys", query, a.all)
            return {"data": items, "next_cursor": nxt}, _table(items, KEY_COLUMNS) + _more(nxt)
        path = f"/admin/v1/keys/{q(a.key_id, safe='')}"
        if act == "get":
            key = c.call("GET", path)
        elif act == "delete":
            c.call("DELETE", path)
            return None, f"deleted {_safe(a.key_id)}"
        elif act == "rotate-signing-secret":
            key = c.call("POST", f"{path}/signing-secret/rotate")
        else:
            key = c.call("POST", f"{path}/{act}")
        return key, _show_key(key)
    if r == "origins":
        path = f"/admin/v1/accounts/{q(a.account_id, safe='')}/callback-origins"
        if act == "list":
            items, nxt = c.pages(path, {"limit": 500}, True)
            return {"data": items, "next_cursor": nxt}, _table(
                items, (("origin", "ORIGIN"), ("created_at", "ADDED"))
            )
        if act == "add":
            added = c.call("POST", path, {"origin": a.origin}, expect=("origin",))
            return added, f"allowed {_safe(added['origin'])}"
        c.call("DELETE", f"{path}/{q(a.origin, safe='')}")
        return None, f"removed {_safe(a.origin)}"
    if r == "webhooks":
        if act == "retry":
            path = f"/admin/v1/webhook-deliveries/{q(a.delivery_id, safe='')}/retry"
            queued = c.call("POST", path)
            return queued, f"queued {_safe(queued['id'])} again"
        if act == "publish":
            body = {"type": a.type, "data": a.data}
            for field in ("account_id", "key_id", "environment"):
                if getattr(a, field) is not None:
                    body[field] = getattr(a, field)
            event = c.call("POST", "/admin/v1/events", body, expect=("id", "deliveries"))
            return event, f"published {_safe(event['id'])}: {event['deliveries']} deliveries queued"
        query = {
            "key_id": a.key_id,
            "account_id": a.account_id,
            "status": a.status,
            "event_id": a.event_id,
            "limit": a.limit,
            "cursor": a.cursor,
        }
        items, nxt = c.pages("/admin/v1/webhook-deliveries", query, a.all)
        for item in items:
            last = item["attempts"][-1] if item["attempts"] else {}
            item["tries"] = len(item["attempts"])
            item["last"] = last.get("status_code") or last.get("error")
        return {"data": items, "next_cursor": nxt}, _table(items, DELIVERY_COLUMNS) + _more(nxt)
    query = {
        "account_id": a.account_id,
        "environment": a.environment,
        "action": a.audit_action,
        "since": a.since,
        "limit": a.limit,
        "cursor": a.cursor,
    }
    items, nxt = c.pages("/admin/v1/audit", query, a.all)
    return {"data": items, "next_cursor": nxt}, _table(items, AUDIT_COLUMNS) + _more(nxt)


def _more(cursor: str | None) -> str:
    return f"\n(more: --cursor {_safe(cursor)} or --all)" if cursor else ""
