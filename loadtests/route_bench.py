"""How long route matching takes with hundreds of routes (prints microseconds per match).

python loadtests/route_bench.py [--routes 500]
"""

from __future__ import annotations

import argparse
import timeit

from gateway.config import parse_settings
from gateway.routes import RouteTable


def build(n: int) -> RouteTable:
    routes = []
    for i in range(n):
        shape = i % 4
        if shape == 0:
            routes.append(
                {
                    "path": f"/svc{i}/v1/items/{{item_id}}/*",
                    "methods": ["GET", "POST"],
                    "scopes": ["runtime:all"],
                }
            )
        elif shape == 1:
            routes.append({"path": f"/svc{i}/tool-packs/{{tool_pack_id}}/run"})
        elif shape == 2:
            routes.append({"path": f"/svc{i}/status", "public": True})
        else:
            routes.append(
                {"path": f"/svc{i}/users/{{registered_user_id}}/*", "scopes": ["management:all"]}
            )
    routes.append({"path": "/{tenant}/fallback/*", "scopes": ["runtime:all"]})
    settings = parse_settings({"upstream": {"url": "http://x"}, "routes": routes}, "<bench>")
    return RouteTable(settings.routes)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--routes", type=int, default=500)
    args = parser.parse_args()
    table = build(args.routes)
    last = args.routes - 1 - (args.routes - 1) % 4
    cases = {
        "first route": ("GET", b"/svc0/v1/items/42/details"),
        "last literal route": ("GET", f"/svc{last}/v1/items/42/details".encode()),
        "wildcard-first route": ("GET", b"/acme/fallback/x/y"),
        "no route": ("GET", b"/nothing/here/at/all"),
        "dot segments": ("GET", b"/svc8/./v1/items/../items/7/x"),
        "encoded slash": ("GET", b"/svc8/v1/items/a%2Fb/x"),
    }
    n = 200_000
    print(f"{args.routes} routes, {n} matches per case")
    for name, (method, path) in cases.items():
        assert table.match(method, path) is not None
        seconds = timeit.timeit(lambda m=method, p=path: table.match(m, p), number=n)
        print(f"  {name:22s} {seconds / n * 1e6:6.2f} us")


if __name__ == "__main__":
    main()
