"""Swagger UI at ``/docs``, served from the package (the ``swagger-ui-bundle-v2`` wheel): no CDN, so the
page works offline and behind a firewall."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

DOCS_URL = "/docs"
ASSETS_URL = "/docs/assets"
#: The files the page loads; only these are served.
ASSETS = ("swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png")


def swagger_ui_dir() -> Path:
    """The folder of Swagger UI's dist files inside the installed ``swagger_ui_bundle`` package."""
    from swagger_ui_bundle import swagger_ui_path

    return Path(str(swagger_ui_path))


class _Assets(StaticFiles):
    """The listed Swagger UI files (source maps, templates and the rest of the folder are not served)."""

    def lookup_path(self, path: str) -> tuple[str, object]:  # type: ignore[override]
        if path not in ASSETS:
            return "", None
        return super().lookup_path(path)  # type: ignore[return-value]


def install_docs(app: FastAPI) -> None:
    """Serve ``/docs`` (Swagger UI) and its assets from the package. Create ``app`` with ``docs_url=None``
    and ``redoc_url=None`` (ReDoc has no packaged copy, so it is not offered)."""
    openapi_url = app.openapi_url or "/openapi.json"
    oauth2_redirect_url = f"{DOCS_URL}/oauth2-redirect"
    app.mount(ASSETS_URL, _Assets(directory=swagger_ui_dir()), name="docs-assets")

    @app.get(DOCS_URL, include_in_schema=False)
    def swagger_ui(request: Request) -> HTMLResponse:
        root = str(request.scope.get("root_path", "")).rstrip("/")  # behind a proxy's path prefix
        return get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - API docs",
            swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_URL}/favicon-32x32.png",
            oauth2_redirect_url=root + oauth2_redirect_url,
            swagger_ui_parameters={"persistAuthorization": True},
        )

    @app.get(oauth2_redirect_url, include_in_schema=False)
    def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()
