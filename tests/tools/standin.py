"""A stand-in for `vllm serve` and `litellm` where only memoria's supervision is under test.

It speaks just enough: GET /health, /health/readiness, /health/liveliness (200) and /v1/models (its
--served-model-name); POST /v1/chat/completions answers "standin NAME on PORT" (which worker answered: the
cluster tests count that), after STANDIN_CHAT_DELAY seconds. Told by its environment to misbehave:
  STANDIN_START_DELAY=s     wait s seconds before listening
  STANDIN_FAIL_AT_START=1   print STANDIN_FAIL_MESSAGE (if any) and exit 1 before listening
  STANDIN_FAIL_WHILE_FILE=f the same, as long as file f exists
  STANDIN_CRASH_AFTER=s     exit 3 s seconds after it started listening
  STANDIN_IGNORE_TERM=1     ignore SIGTERM (only SIGKILL ends it)
  STANDIN_GRANDCHILD=1      start a child that sleeps forever, as vLLM's engine core outlives its parent
Usage: standin.py serve MODEL --port N --served-model-name NAME ...  |  standin.py --config F --port N ...
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def arg(name: str, default: str | None = None) -> str | None:
    argv = sys.argv[1:]
    return argv[argv.index(name) + 1] if name in argv else default


def main() -> None:
    port = int(arg("--port", "0"))
    name = arg("--served-model-name", "proxy")
    env = os.environ
    print(f"standin {name} starting on {port} pid {os.getpid()} at {time.time():.3f}", flush=True)
    if env.get("STANDIN_IGNORE_TERM"):
        signal.signal(signal.SIGTERM, lambda *a: print("standin: ignoring SIGTERM", flush=True))
    else:
        signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    if env.get("STANDIN_GRANDCHILD"):
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nwhile True: time.sleep(1)",
            ]
        )
    time.sleep(float(env.get("STANDIN_START_DELAY", "0")))
    fail_file = env.get("STANDIN_FAIL_WHILE_FILE")
    if env.get("STANDIN_FAIL_AT_START") or (fail_file and os.path.exists(fail_file)):
        print(env.get("STANDIN_FAIL_MESSAGE", "standin: failing at start"), flush=True)
        sys.exit(1)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path in ("/health", "/health/readiness", "/health/liveliness"):
                body = b"{}"
            elif self.path == "/v1/models":
                body = json.dumps({"object": "list", "data": [{"id": name, "object": "model"}]}).encode()
            else:
                self.send_response(404)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length") or 0))
            if self.path != "/v1/chat/completions":
                self.send_response(404)
                self.end_headers()
                return
            time.sleep(float(env.get("STANDIN_CHAT_DELAY", "0")))
            message = {"role": "assistant", "content": f"standin {name} on {port}"}
            answer = {
                "id": "chatcmpl-standin",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": name,
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 4, "total_tokens": 5},
            }
            body = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    crash = env.get("STANDIN_CRASH_AFTER")
    if crash:
        threading.Timer(float(crash), lambda: os._exit(3)).start()
    print(f"standin {name} listening", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
