"""A stand-in for vLLM's OpenAI-compatible server, started the way adhere starts vLLM.

    python fake_vllm.py --model <folder> --port 8123 ...     # the arguments of `python -m vllm.entrypoints...`

Like vLLM it spawns a child process (vLLM's engine core), so a test can check that stopping the
server stops its children too. FAKE_VLLM_MODE picks the behaviour: 'ok' (answers), 'crash' (exits
with code 3 before listening, as vLLM does on a model it cannot load), 'hang' (never ready),
'die' (exits after its first answer). It writes "<its pid> <child pid>" to FAKE_VLLM_PIDS and
appends each request body, one JSON object a line, to FAKE_VLLM_REQUESTS.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main() -> None:
    args = sys.argv[1:]
    port = int(args[args.index("--port") + 1])
    mode = os.environ.get("FAKE_VLLM_MODE", "ok")
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    with open(os.environ["FAKE_VLLM_PIDS"], "w") as pids:
        pids.write(f"{os.getpid()} {child.pid}")
    print(f"fake vLLM starting on port {port} with {' '.join(args)}", flush=True)
    if mode == "crash":
        print("ValueError: the model cannot be loaded (a fake error)", flush=True)
        sys.exit(3)  # the child is left behind, as a crashing vLLM may leave its engine core
    if mode == "hang":
        time.sleep(600)
    server = ThreadingHTTPServer(("127.0.0.1", port), _handler(mode))
    server.serve_forever()


def _handler(mode: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # quiet, like --disable-uvicorn-access-log
            pass

        def do_GET(self) -> None:
            self._send(200 if self.path == "/health" else 404, {})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with open(os.environ["FAKE_VLLM_REQUESTS"], "a") as log:
                log.write(json.dumps(body) + "\n")
            text = "echo: " + body["messages"][-1]["content"]
            self._send(200, {"choices": [{"message": {"content": text}, "finish_reason": "stop"}],
                             "usage": {"prompt_tokens": 5, "completion_tokens": 3}})
            if mode == "die":  # as a server killed for memory: gone at once, its later requests refused
                self.wfile.flush()
                os._exit(1)

        def _send(self, code: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


if __name__ == "__main__":
    main()
