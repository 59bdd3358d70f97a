"""A keep-alive HTTP/1.1 client for the server tests that must see what a client library hides:
whether the server kept the connection open after an answer, and paths sent byte for byte
(httpx and curl resolve ``..`` and re-encode a path before it leaves)."""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class OneConnection:
    """Requests over one TCP connection. ``request`` fails if the server closed the connection
    after any earlier answer: http.client drops its socket when an answer says
    ``Connection: close``, and a request on a socket the server closed gets no answer."""

    def __init__(self, url: str, timeout: float = 60):
        parts = urlsplit(url)
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
        self.conn.connect()
        self.sock = self.conn.sock
        self.requests = 0

    def request(self, method: str, target: str, body: bytes | str | None = None,
                headers: dict[str, str] | None = None) -> Answer:
        """Send ``target`` exactly as given (no normalization); a str body is sent as UTF-8 JSON."""
        if self.conn.sock is not self.sock:
            raise AssertionError(f"the server closed the keep-alive connection after request {self.requests}")
        headers = dict(headers or {})
        if isinstance(body, str):
            body = body.encode("utf-8")
            headers.setdefault("Content-Type", "application/json")
        try:
            self.conn.putrequest(method, target, skip_accept_encoding=True)
            for k, v in headers.items():
                self.conn.putheader(k, v)
            if body is not None:
                self.conn.putheader("Content-Length", str(len(body)))
            self.conn.endheaders(body)
            res = self.conn.getresponse()
        except (http.client.RemoteDisconnected, ConnectionError) as e:
            raise AssertionError(f"no answer on the kept-alive connection after request {self.requests}: {e!r}")
        data = res.read()
        self.requests += 1
        return Answer(res.status, {k.lower(): v for k, v in res.getheaders()}, data)

    def post_json(self, target: str, body: Any) -> Answer:
        # ensure_ascii: a lone surrogate goes out as the JSON escape "\ud800", as a client would send it
        return self.request("POST", target, json.dumps(body, ensure_ascii=True))

    def alive(self) -> bool:
        return self.conn.sock is self.sock

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "OneConnection":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def assert_error_envelope(answer: Answer, status: int | None = None) -> dict[str, Any]:
    """A 4xx/5xx answer's body is ``{"error": {"message", "type", "param", "code"}}`` with a message."""
    if status is not None:
        assert answer.status == status, (answer.status, answer.body[:300])
    assert answer.headers.get("content-type", "").startswith("application/json"), answer.headers
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"], error
    return error
