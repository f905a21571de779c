"""`gateway admin ...`: a command-line client of the admin API (stdlib HTTP, no event loop).

Tables for people by default, `--json` for scripts. The token comes from GATEWAY_ADMIN_TOKEN;
the plaintext of a key is printed once, when it is created or regenerated.
"""

from __future__ import annotations

import argparse
import json
import os
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
    admin = sub.add_parser("admin", help="manage accounts, keys, origins; read the audit trail")
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

    p = what.add_parser("audit", help="the audit trail, newest first")
    p.add_argument("--account", dest="account_id")
    p.add_argument("--environment", choices=("production", "test"))
    p.add_argument("--action", dest="audit_action")
    p.add_argument("--since", metavar="RFC3339")
    _paging(p)


def _paging(p: argparse.ArgumentParser) -> None:
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--cursor")
    p.add_argument("--all", action="store_true", help="follow next_cursor to the end")


class Client:
    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/")
        self.token = token

    def call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        query: dict[str, Any] | None = None,
    ) -> Any:
        url = self.url + path
        if query:
            url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - http(s) only
        request.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if not url.startswith(("http://", "https://")):
            raise CliError(f"--url must be http:// or https://, got {self.url}")
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:  # noqa: S310
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            raise CliError(_describe_error(exc)) from None
        except urllib.error.URLError as exc:
            raise CliError(f"cannot reach the admin API at {self.url}: {exc.reason}") from None
        except TimeoutError:
            raise CliError(f"the admin API at {self.url} did not answer in time") from None
        return json.loads(raw) if raw else None

    def pages(self, path: str, query: dict[str, Any], follow: bool) -> tuple[list[Any], str | None]:
        items: list[Any] = []
        while True:
            page = self.call("GET", path, query=query)
            items += page["data"]
            if not follow or not page["next_cursor"]:
                return items, page["next_cursor"]
            query = {**query, "cursor": page["next_cursor"]}


def _describe_error(exc: urllib.error.HTTPError) -> str:
    raw = exc.read()
    if exc.code == 401:
        return f"unauthorized: check {TOKEN_ENV}"
    try:
        problem = json.loads(raw)
    except ValueError:
        return f"HTTP {exc.code}"
    lines = [f"{problem.get('title', 'error')} ({exc.code}): {problem.get('detail', '')}"]
    for err in problem.get("errors") or []:
        lines.append(f"  {err.get('field') or 'body'}: {err.get('message')}")
    return "\n".join(lines)


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
        return ",".join(map(str, value)) or "-"
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"))
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _details(obj: dict[str, Any]) -> str:
    width = max(len(k) for k in obj)
    return "\n".join(f"{k.ljust(width)}  {_cell(v)}" for k, v in obj.items() if k != "key")


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
            f"\n\nkey: {key['key']}\n(shown once: store it now; the gateway keeps only its hash)"
        )
    return text


def run(args: argparse.Namespace) -> int:
    token = os.environ.get(TOKEN_ENV, "")
    if not token:
        print(f"gateway admin: set {TOKEN_ENV} to the admin token", file=sys.stderr)
        return 2
    client = Client(args.url, token)
    try:
        result, text = _dispatch(client, args)
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
            ):
                if getattr(a, field) is not None:
                    body[field] = getattr(a, field)
            if a.never_expires:
                body["expires_at"] = None
            key = c.call("POST", "/admin/v1/keys", body)
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
            return None, f"deleted {a.key_id}"
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
            added = c.call("POST", path, {"origin": a.origin})
            return added, f"allowed {added['origin']}"
        c.call("DELETE", f"{path}/{q(a.origin, safe='')}")
        return None, f"removed {a.origin}"
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
    return f"\n(more: --cursor {cursor} or --all)" if cursor else ""
