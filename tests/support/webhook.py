"""A real HTTP server on loopback that receives webhook posts, for alert tests: it keeps each
request (headers and JSON body) and can answer the first few with an error."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Post:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    answered: int
    at: float  # time.time() when it arrived


class WebhookReceiver:
    """`with WebhookReceiver(fail_first=2) as hook:` ... `hook.url`, `hook.posts`."""

    def __init__(self, fail_first: int = 0) -> None:
        self._posts: list[Post] = []
        self._lock = threading.Lock()
        self._failures_left = fail_first
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                at = time.time()
                code = receiver._answer()
                with receiver._lock:
                    receiver._posts.append(Post(self.path, dict(self.headers), body, code, at))
                self.send_response(code)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: the test reads `posts`

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hooks/lossreport"

    def _answer(self) -> int:
        with self._lock:
            if self._failures_left > 0:
                self._failures_left -= 1
                return 500
        return 200

    @property
    def posts(self) -> list[Post]:
        with self._lock:
            return list(self._posts)

    def delivered(self) -> list[dict[str, Any]]:
        """The bodies of the posts answered with success."""
        return [post.body for post in self.posts if post.answered == 200]

    def timed(self) -> list[tuple[dict[str, Any], float]]:
        """The bodies of the posts answered with success, each with when it arrived."""
        return [(post.body, post.at) for post in self.posts if post.answered == 200]

    def __enter__(self) -> WebhookReceiver:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
