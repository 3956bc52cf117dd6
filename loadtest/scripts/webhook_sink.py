"""A webhook receiver for events_overhead.sh: answers 200 to every POST on a loopback port
(written to the file named by its argument) and prints each X-Holdfast-Event-Id, one a line,
written out every FLUSH_S seconds.

It shares the two cores with the server it measures, so it does as little as a receiver can:
an asyncio protocol that finds the end of the headers, the Content-Length and the event id,
and answers a fixed response on the same (kept-alive) connection; http.server's handler
parsed every header through the email package and flushed a line per request, and took
about a core by itself at a launch's event rate."""
import asyncio
import sys

FLUSH_S = 0.2
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
ids = []


class Receiver(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.buf = b""

    def data_received(self, data):
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            length, event_id = 0, b"?"
            for line in self.buf[:end].split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"x-holdfast-event-id":
                    event_id = value.strip()
            if len(self.buf) < end + 4 + length:
                return
            self.buf = self.buf[end + 4 + length:]
            ids.append(event_id)
            self.transport.write(RESPONSE)


def flush(loop):
    if ids:
        sys.stdout.buffer.write(b"\n".join(ids) + b"\n")
        sys.stdout.flush()
        ids.clear()
    loop.call_later(FLUSH_S, flush, loop)


async def main():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Receiver, "127.0.0.1", 0)
    with open(sys.argv[1], "w") as f:
        f.write(str(server.sockets[0].getsockname()[1]))
    flush(loop)
    await server.serve_forever()


asyncio.run(main())
