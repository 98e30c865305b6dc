"""A fake OpenAI-compatible chat completions server on 127.0.0.1 for the tests of the OpenAI
backend (``generate inject``) and the judge benchmarks: scripted replies per item, every
request counted and kept."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def completion(content, finish_reason="stop", model="fake-model"):
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "finish_reason": finish_reason}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


class FakeServer:
    """``script[marker]`` is a list of actions, one per hit of a request whose messages contain
    ``marker`` (the last one repeats). Actions:

    * ``("json", obj)`` / ``("json", obj, delay)``: 200 with ``obj`` as JSON, after ``delay`` s;
    * ``("raw", bytes)``: 200, ``application/json``, that body as is;
    * ``("status", code, headers, body_obj)``: an error status.

    A request with no marker gets ``default(body)``, an action (default: a 500).
    """

    def __init__(self, default: Callable[[dict], tuple] | None = None):
        self.script: dict[str, list[tuple]] = {}
        self.default = default or (lambda body: ("status", 500, {}, {"error": {"message": "unscripted"}}))
        self.hits: Counter[str] = Counter()
        self.received: list[dict] = []  # {"headers":..., "body":..., "marker":...}
        self.lock = threading.Lock()
        self.inflight = 0
        self.max_inflight = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_POST(self):
                with server.lock:
                    server.inflight += 1
                    server.max_inflight = max(server.max_inflight, server.inflight)
                self.counted = True
                try:
                    self._handle()
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout tests)
                finally:
                    self._leave()

            def _leave(self):
                # Before the reply goes out: once the client has it, it may send its next request
                # before this thread would get back to a ``finally``.
                if self.counted:
                    self.counted = False
                    with server.lock:
                        server.inflight -= 1

            def _handle(self):
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                if self.path != "/v1/chat/completions":
                    return self._send(404, {"error": {"message": "no such path"}})
                body = json.loads(raw)
                messages_text = json.dumps(body["messages"])
                marker = next((m for m in server.script if m in messages_text), None)
                with server.lock:
                    n = server.hits[marker]
                    server.hits[marker] += 1
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    server.received.append({"headers": headers, "body": body, "marker": marker})
                if marker is None:
                    action = server.default(body)
                else:
                    actions = server.script[marker]
                    action = actions[min(n, len(actions) - 1)]
                if action[0] == "json":
                    if len(action) > 2:
                        time.sleep(action[2])
                    return self._send(200, action[1])
                if action[0] == "raw":
                    return self._send(200, action[1])
                _, code, headers, obj = action
                return self._send(code, obj, headers)

            def _send(self, code, obj, headers=None):
                data = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
                self._leave()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.block_on_close = False  # don't wait for handlers still sleeping after a timeout
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    @property
    def requests(self) -> int:
        """Chat completions requests received so far, every marker."""
        return len(self.received)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
