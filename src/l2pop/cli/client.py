"""A thin httpx wrapper around the l2pop REST API for the command line.

Contract: every failure the user can cause or meet (server unreachable, HTTP error
answer, unreadable answer, bad server URL) leaves ``ApiClient`` as a ``CliError``
whose message is one line fit to print after ``error: ``. Nothing else escapes.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Mapping
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx

from l2pop.tlsconfig import tls_failure

DEFAULT_SERVER = "http://127.0.0.1:9696"
REVISION_HEADER = "L2pop-Revision"


class CliError(Exception):
    """A failure to report as ``error: <message>`` with exit code 1 (no traceback)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def segment(value: str) -> str:
    """Quote one URL path segment (a host name, an id) so it cannot change the path."""
    return quote(value, safe="")


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _transport_reason(exc: httpx.TransportError) -> str:
    """``[Errno 111] Connection refused`` -> ``connection refused``."""
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    tls = tls_failure(exc)
    if tls is not None:
        return tls
    text = str(exc) or type(exc).__name__
    text = re.sub(r"^\[Errno -?\d+\]\s*", "", text.strip())
    text = _one_line(text)
    return text[:1].lower() + text[1:]


def error_message(response: httpx.Response) -> str:
    """The one-line message for an HTTP error answer.

    The server's body is ``{"error": {"code", "message", "field"?}}``; the message is
    prefixed with the field when it does not already name it, and followed by the
    HTTP status and code, e.g. ``mac: 'zz' is not a MAC address (422 invalid)``.
    Any other body is summarised as ``server answered HTTP <status>: <text>``.
    """
    status = response.status_code
    try:
        body = response.json()
    except ValueError:
        body = None
    detail = body.get("error") if isinstance(body, dict) else None
    if isinstance(detail, dict) and isinstance(detail.get("message"), str):
        message = _one_line(detail["message"], 400)
        field = detail.get("field")
        if isinstance(field, str) and field and not message.startswith(field):
            message = f"{field}: {message}"
        code = detail.get("code")
        suffix = f"{status} {code}" if isinstance(code, str) and code else str(status)
        return f"{message} ({suffix})"
    text = _one_line(response.text) if response.text else response.reason_phrase
    return f"server answered HTTP {status}: {text}"


class ApiClient:
    """Calls ``/v1`` on one server with an optional bearer token.

    ``revision`` holds the ``L2pop-Revision`` header of the last answer (``None`` when
    the server did not send one); ``host list`` uses it to compute each host's lag.
    """

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        """``verify``: the SSL context an https server's certificate is checked with."""
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            self._http = httpx.Client(
                base_url=self.base_url,
                headers=headers,
                timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
                transport=transport,
                verify=verify,
            )
        except (httpx.InvalidURL, ValueError) as exc:
            raise CliError(f"invalid server URL {base_url!r}: {exc}") from None
        self.revision: int | None = None

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
    ) -> Any:
        """Send one request; return the decoded JSON answer, or ``None`` for an empty one.

        Raises ``CliError`` for a transport failure or any status >= 400.
        """
        return self._decode(method, path, self._send(method, path, json=json, params=params))

    def _send(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        kwargs: dict[str, Any] = {}
        if json is not None:
            kwargs["json"] = json
        if params:
            kwargs["params"] = dict(params)
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.UnsupportedProtocol:
            raise CliError(
                f"invalid server URL {self.base_url!r}: use http:// or https://"
            ) from None
        except httpx.InvalidURL as exc:
            raise CliError(f"invalid server URL {self.base_url!r}: {exc}") from None
        except httpx.TransportError as exc:
            reason = _transport_reason(exc)
            raise CliError(f"cannot reach l2pop server at {self.base_url}: {reason}") from None
        self.revision = _revision(response)
        return response

    def _decode(self, method: str, path: str, response: httpx.Response) -> Any:
        if response.status_code >= 400:
            raise CliError(error_message(response))
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise CliError(
                f"server at {self.base_url} answered {method} {path} with non-JSON content"
            ) from None

    def get(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        return self.request("GET", path, params=params)

    def get_all(self, path: str, params: Mapping[str, str] | None = None) -> list[Any]:
        """Every item of a list operation, page after page: the server answers at most a
        page per call and names the next one in ``Link: <URL>; rel="next"``."""
        items: list[Any] = []
        response = self._send("GET", path, params=params)
        while True:
            items += self._decode("GET", path, response) or []
            following = response.links.get("next", {}).get("url")
            if not following:
                return items
            response = self._send("GET", following)

    def post(self, path: str, body: Any) -> Any:
        return self.request("POST", path, json=body)

    def patch(self, path: str, body: Any) -> Any:
        return self.request("PATCH", path, json=body)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _revision(response: httpx.Response) -> int | None:
    value = response.headers.get(REVISION_HEADER)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
