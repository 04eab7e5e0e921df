"""``/docs`` works offline: Swagger UI and every asset it loads come from the service itself."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient

URL_ATTR = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']""")


def test_docs_page_loads_only_local_assets(client: TestClient) -> None:
    r = client.get("/docs")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    html = r.text
    assert "http://" not in html and "https://" not in html and "cdn" not in html.lower()
    urls = URL_ATTR.findall(html)
    assert len(urls) >= 3, html
    kinds = set()
    for url in urls:
        assert url.startswith("/"), url
        asset = client.get(url)
        assert asset.status_code == 200, url
        kinds.add(asset.headers["content-type"].split(";")[0])
        assert len(asset.content) > 0
    assert {"text/css", "text/javascript"} <= kinds or {"text/css", "application/javascript"} <= kinds
    js = client.get(next(u for u in urls if u.endswith(".js"))).text
    assert "SwaggerUIBundle" in js and len(js) > 500_000  # the real bundle, not a stub
    assert "url: '/openapi.json'" in html and client.get("/openapi.json").status_code == 200


def test_only_the_page_assets_are_served(client: TestClient) -> None:
    assert client.get("/docs/assets/swagger-ui-bundle.js.map").status_code == 404
    assert client.get("/docs/assets/index.j2").status_code == 404
    assert client.get("/docs/assets/../settings.py").status_code == 404


def test_docs_oauth2_redirect_is_served_and_redoc_is_not_offered(client: TestClient) -> None:
    assert client.get("/docs/oauth2-redirect").status_code == 200
    assert client.get("/redoc").status_code == 404


def _readme_routes() -> set[tuple[str, str]]:
    """``(method, path)`` of every row of the README's route table (``{id}`` / ``{n}`` as in the README)."""
    readme = (Path(__file__).parents[3] / "README.md").read_text()
    routes = set()
    for line in readme.splitlines():
        if not re.match(r"\| `(GET|POST|PUT|PATCH|DELETE) /", line):
            continue
        items = re.findall(r"`([^`]+)`", line.split("|")[1])
        method, first = items[0].split(" ", 1)
        base = first.split("?")[0]
        routes.add((method, base))
        for rel in items[1:]:
            routes.add((method, base.rsplit("/", 1)[0] + rel.split("?")[0]))
    return routes


def test_the_readme_route_table_lists_every_route(client: TestClient) -> None:
    documented = _readme_routes()
    for path, operations in client.get("/openapi.json").json()["paths"].items():
        readme_path = path.replace("{job_id}", "{id}").replace("{number}", "{n}")
        if path.removeprefix("/v1") in ("/healthz", "/readyz", "/metrics"):  # at / and under /v1
            readme_path = path.removeprefix("/v1")
        for method in operations:
            assert (method.upper(), readme_path) in documented, f"{method.upper()} {readme_path}"


def test_the_readme_says_only_failed_or_pruned_trials_can_be_retried() -> None:
    readme = (Path(__file__).parents[3] / "README.md").read_text()
    row = next(line for line in readme.splitlines() if "/retry`" in line)
    assert "failed or pruned" in row and "409" in row


def test_docs_behind_a_path_prefix_use_it(app: FastAPI) -> None:
    with TestClient(app, root_path="/autoft") as c:
        html = c.get("/docs").text
    assert "/autoft/docs/assets/swagger-ui-bundle.js" in html and "url: '/autoft/openapi.json'" in html
