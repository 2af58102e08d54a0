"""The local LLM upstream of bench/gateway.py: OpenAI's chat completions on asyncio (uvloop
when installed), in a process of its own, keeping count of the usage it reports.

    python bench/llm_upstream.py [--delay 0.2] [--chunks 50] [--chunk-delay 0.002]

It answers as tests/playground/upstream.FakeUpstream does by default, with less CPU per
request (FakeUpstream is a ThreadingHTTPServer: a thread per connection and a GIL hand-off per
streamed piece, which 100 concurrent streams turn into the bottleneck of the benchmark):

- `POST .../chat/completions`: the reply cut into `chunks` pieces (FakeUpstream's
  `split_reply`); JSON after `delay` seconds, or with `"stream": true` server-sent events of
  `chat.completion.chunk`s (role, one piece each `chunk_delay` seconds, finish reason, the usage
  chunk when `stream_options.include_usage` is asked for, `data: [DONE]`) after
  `stream_delay` seconds. `max_tokens` below the number of pieces keeps that many. Usage:
  completion tokens = pieces sent; prompt tokens = words of the messages + 3 per message.
- `GET /stats`: per model name asked for, the requests answered and the usage reported in
  them (summed), as JSON. `GET /health`: 200.

Prints `listening on PORT` once it accepts connections.
"""

import argparse
import asyncio
import json
import socket
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.playground.upstream import DEFAULT_REPLY, split_reply

_STATS: dict[str, dict[str, int]] = defaultdict(
    lambda: {
        "requests": 0,
        "streamed": 0,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "total_tokens": 0,
    }
)


def _response(status: str, content_type: bytes, body: bytes) -> bytes:
    return (
        b"HTTP/1.1 " + status.encode() + b"\r\nContent-Type: " + content_type
        + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )  # fmt: skip


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _event(payload: dict) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


class Upstream:
    def __init__(self, *, delay: float, stream_delay: float, chunks: int, chunk_delay: float):
        self.delay = delay
        self.stream_delay = stream_delay
        self.chunk_delay = chunk_delay
        self.pieces = split_reply(DEFAULT_REPLY, chunks)
        self.number = 0

    def usage(self, body: dict, pieces: list[str]) -> dict:
        messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
        prompt = sum(len(str(m.get("content") or "").split()) for m in messages)
        prompt += 3 * len(messages)
        return {
            "prompt_tokens": prompt,
            "completion_tokens": len(pieces),
            "total_tokens": prompt + len(pieces),
        }

    def count(self, model: str, usage: dict | None, streamed: bool) -> None:
        stats = _STATS[model]
        stats["requests"] += 1
        stats["streamed"] += streamed
        for key, value in (usage or {}).items():
            stats[key] += value

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        writer.transport.get_extra_info("socket").setsockopt(
            socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
        )
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                method, path = head.split(b" ", 2)[:2]
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                raw = await reader.readexactly(length) if length else b""
                if method == b"GET" and path == b"/stats":
                    writer.write(
                        _response("200 OK", b"application/json", json.dumps(_STATS).encode())
                    )
                elif method == b"GET" and path == b"/health":
                    writer.write(_response("200 OK", b"text/plain", b"ok"))
                elif method == b"POST" and path.endswith(b"/chat/completions"):
                    await self.complete(json.loads(raw), writer)
                else:
                    writer.write(_response("404 Not Found", b"text/plain", b"not found"))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def complete(self, body: dict, writer: asyncio.StreamWriter) -> None:
        self.number += 1
        model = str(body.get("model") or "fake-model")
        pieces = self.pieces
        max_tokens = body.get("max_tokens")
        finish = "stop"
        if isinstance(max_tokens, int) and 0 <= max_tokens < len(pieces):
            pieces, finish = pieces[:max_tokens], "length"
        usage = self.usage(body, pieces)
        completion_id = f"chatcmpl-bench-{self.number}"
        if body.get("stream") is not True:
            await asyncio.sleep(self.delay)
            answer = {
                "id": completion_id,
                "object": "chat.completion",
                "created": 1700000000,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "".join(pieces)},
                        "logprobs": None,
                        "finish_reason": finish,
                    }
                ],
                "usage": usage,
            }
            writer.write(_response("200 OK", b"application/json", json.dumps(answer).encode()))
            self.count(model, usage, streamed=False)
            return
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True

        def chunk(delta: dict, finish_reason: str | None = None) -> bytes:
            data = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": 1700000000,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
            }
            if include_usage:
                data["usage"] = None
            return _chunk(_event(data))

        if self.stream_delay:
            await asyncio.sleep(self.stream_delay)
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
            b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        writer.write(_chunk(b": bench upstream\n\n") + chunk({"role": "assistant"}))
        await writer.drain()
        for piece in pieces:
            await asyncio.sleep(self.chunk_delay)
            writer.write(chunk({"content": piece}))
            await writer.drain()
        tail = chunk({}, finish)
        if include_usage:
            data = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": 1700000000,
                "model": model,
                "choices": [],
                "usage": usage,
            }
            tail += _chunk(_event(data))
        writer.write(tail + _chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
        self.count(model, usage if include_usage else None, streamed=True)


async def serve(upstream: Upstream, port: int) -> None:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    server = await asyncio.start_server(upstream.handle, sock=sock, backlog=2048)
    print(f"listening on {sock.getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay", type=float, default=0.2, help="seconds before a JSON answer")
    parser.add_argument("--stream-delay", type=float, default=0.0, help="before a stream")
    parser.add_argument("--chunks", type=int, default=50)
    parser.add_argument("--chunk-delay", type=float, default=0.002)
    args = parser.parse_args()
    upstream = Upstream(
        delay=args.delay,
        stream_delay=args.stream_delay,
        chunks=args.chunks,
        chunk_delay=args.chunk_delay,
    )
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(upstream, args.port))
    else:
        uvloop.run(serve(upstream, args.port))


if __name__ == "__main__":
    main()
