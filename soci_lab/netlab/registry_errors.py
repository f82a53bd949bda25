"""Distribution's error responses: ``{"errors": [{"code", "message", "detail"}]}`` with the right status.

Handlers raise ``RegistryHTTPError``; the registry's middleware turns it into the JSON body and status a
client of the distribution spec expects (codes from the OCI distribution spec, plus distribution's own
``MANIFEST_BLOB_UNKNOWN`` and ``RANGE_INVALID``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web

#: code → (HTTP status, default message)
ERROR_CODES: dict[str, tuple[int, str]] = {
    "BLOB_UNKNOWN": (404, "blob unknown to registry"),
    "BLOB_UPLOAD_INVALID": (400, "blob upload invalid"),
    "BLOB_UPLOAD_UNKNOWN": (404, "blob upload unknown to registry"),
    "DIGEST_INVALID": (400, "provided digest did not match uploaded content"),
    "MANIFEST_BLOB_UNKNOWN": (400, "manifest references a blob unknown to the registry"),
    "MANIFEST_INVALID": (400, "manifest invalid"),
    "MANIFEST_UNKNOWN": (404, "manifest unknown"),
    "NAME_INVALID": (400, "invalid repository name"),
    "NAME_UNKNOWN": (404, "repository name not known to registry"),
    "SIZE_INVALID": (400, "provided length did not match content length"),
    "TAG_INVALID": (400, "manifest tag did not match URI"),
    "UNAUTHORIZED": (401, "authentication required"),
    "DENIED": (403, "requested access to the resource is denied"),
    "UNSUPPORTED": (405, "the operation is unsupported"),
    "TOOMANYREQUESTS": (429, "too many requests"),
    "RANGE_INVALID": (416, "invalid content range"),
    "PAGINATION_NUMBER_INVALID": (400, "invalid number of results requested"),
}


def error_body(code: str, message: str | None = None, detail: Any = None) -> bytes:
    """The JSON body of one distribution error."""
    _status, default = ERROR_CODES.get(code, (500, code.lower()))
    entry: dict[str, Any] = {"code": code, "message": message or default}
    if detail is not None:
        entry["detail"] = detail
    return json.dumps({"errors": [entry]}).encode()


class RegistryHTTPError(Exception):
    """A distribution error to send back: raised by handlers, rendered by the middleware."""

    def __init__(
        self,
        code: str,
        message: str | None = None,
        detail: Any = None,
        *,
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message or code)
        self.code = code
        self.message = message
        self.detail = detail
        self.status = status or ERROR_CODES.get(code, (500, ""))[0]
        self.headers = dict(headers or {})

    def response(self, head: bool = False) -> web.Response:
        """The aiohttp response for this error (no body for HEAD, as HTTP requires)."""
        body = error_body(self.code, self.message, self.detail)
        headers = {"Content-Type": "application/json", **self.headers}
        if head:
            headers["Content-Length"] = str(len(body))
            return web.Response(status=self.status, headers=headers)
        return web.Response(status=self.status, body=body, headers=headers)
