"""`/docs`: the service's OpenAPI document as a Swagger UI page, with "try it out".

The page's assets come from the `swagger-ui-bundle-v2` package (Swagger UI 5, which reads
OpenAPI 3.1), served by the service itself: no CDN, so the page works offline and behind
a firewall. Requests made with "try it out" go to the same service (the document's
relative server URL).
"""

from __future__ import annotations

import copy
from typing import Any

from flask import Flask, Response, current_app, send_from_directory
from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]

from shared.errors import not_found, refuse_unknown_parameters

# The files the page loads; nothing else of the package is served.
ASSETS = ("swagger-ui.css", "swagger-ui-bundle.js", "swagger-ui-standalone-preset.js", "favicon-32x32.png")
PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<link rel="icon" type="image/png" href="docs/assets/favicon-32x32.png">
<link rel="stylesheet" href="docs/assets/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="docs/assets/swagger-ui-bundle.js"></script>
<script src="docs/init.js"></script>
</body>
</html>
"""
# Relative URLs: the page works under any prefix a proxy puts in front of the service.
INIT = """window.ui = SwaggerUIBundle({
  url: "openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  tryItOutEnabled: true,
  validatorUrl: null,
});
"""
STRING = {"type": "string"}
HTML = {"text/html": {"schema": STRING}}
NOT_FOUND = {"application/json": {"schema": {"type": "object", "required": ["error", "message"]}}}
# The routes' entries for each service's /openapi.json (`docs_paths()`: a copy to build on).
DOCS_PATHS: dict[str, Any] = {
    "/docs": {
        "get": {
            "summary": "This service's OpenAPI document as a page (Swagger UI, try it out)",
            "responses": {"200": {"description": "the page", "content": HTML}},
        }
    },
    "/docs/init.js": {
        "get": {
            "summary": "The page's start-up script",
            "responses": {
                "200": {
                    "description": "JavaScript",
                    "content": {"text/javascript": {"schema": {"type": "string"}}},
                }
            },
        }
    },
    "/docs/assets/{name}": {
        "get": {
            "summary": "The page's Swagger UI assets, from the installed package",
            "parameters": [
                {
                    "name": "name",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "enum": list(ASSETS)},
                }
            ],
            "responses": {
                "200": {"description": "the file", "content": {"*/*": {"schema": STRING}}},
                "404": {"description": "not_found: not one of the page's assets", "content": NOT_FOUND},
            },
        }
    },
}


def docs_paths() -> dict[str, Any]:
    """A fresh copy of DOCS_PATHS for one document (documents get examples added in place)."""
    return copy.deepcopy(DOCS_PATHS)


def init_app(app: Flask) -> None:
    """Serve /docs, its start-up script and its assets."""
    app.add_url_rule("/docs", "docs", _page, methods=["GET"])
    app.add_url_rule("/docs/init.js", "docs_init", _init, methods=["GET"])
    app.add_url_rule("/docs/assets/<name>", "docs_asset", _asset, methods=["GET"])


def _page() -> Response:
    refuse_unknown_parameters()
    title = f"{current_app.config['SERVICE_NAME']} API"
    return Response(PAGE.format(title=title), mimetype="text/html")


def _init() -> Response:
    refuse_unknown_parameters()
    return Response(INIT, mimetype="text/javascript")


def _asset(name: str) -> Response:
    refuse_unknown_parameters()
    if name not in ASSETS:
        # never echoed: a path segment is the client's text, of any length
        raise not_found(f"Not an asset of /docs, which serves: {', '.join(ASSETS)}.")
    return send_from_directory(swagger_ui_path, name, max_age=86400)
