"""``/docs`` works offline: Swagger UI and every asset it loads come from the service itself."""

from __future__ import annotations

import re

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
