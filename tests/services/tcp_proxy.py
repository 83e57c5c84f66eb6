"""A TCP forwarder on 127.0.0.1 that a test can cut, to make a real service go away mid-request.

``TcpProxy(port).start()`` forwards its own port to ``127.0.0.1:port``.
``cut_after(n)`` arms it: once ``n`` more bytes have gone from clients to the
service, every connection is dropped and the port closed (connections are
refused from then on), exactly what a client sees when the service's host
goes down. ``resume()`` listens again on the same port. ``delay`` delivers
what the service sends that many seconds after it arrived (chunks that arrive
together leave together): a round trip to a store across a network, for
benchmarks, which run it in a process of its own so that forwarding costs
the measured process no CPU: ``python -m tests.services.tcp_proxy
TARGET_PORT --delay SECONDS`` prints the port it listens on, then serves
until killed.
"""

from __future__ import annotations

import argparse
import contextlib
import queue
import socket
import sys
import threading
import time

from tests.services.moto_s3 import free_port


class TcpProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1", *, delay: float = 0.0) -> None:
        self.target = (target_host, target_port)
        self.delay = delay
        self.port = 0
        self.forwarded = 0
        self._limit: int | None = None
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._serving = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> TcpProxy:
        self.port = self.port or free_port()
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(0.1)
        self._listener = listener
        self._serving = True
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    resume = start

    def cut_after(self, nbytes: int) -> None:
        """Cut once ``nbytes`` more bytes have been forwarded towards the service."""
        with self._lock:
            self._limit = self.forwarded + nbytes

    def cut(self) -> None:
        """Drop every connection and stop listening (new connections are refused)."""
        with self._lock:
            self._serving = False
            self._limit = None
            listener, self._listener = self._listener, None
            sockets, self._sockets = self._sockets, set()
        if listener is not None:
            listener.close()
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    close = cut

    def _accept(self, listener: socket.socket) -> None:
        while self._serving and self._listener is listener:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            client.settimeout(None)
            upstream.settimeout(None)
            with self._lock:
                if not self._serving:
                    client.close()
                    upstream.close()
                    return
                self._sockets.update((client, upstream))
            done = threading.Barrier(2, action=lambda c=client, u=upstream: self._forget(c, u))
            threading.Thread(target=self._pump, args=(client, upstream, True, done), daemon=True).start()
            back = self._delayed if self.delay else self._pump
            threading.Thread(target=back, args=(upstream, client, False, done), daemon=True).start()

    def _forget(self, *sockets: socket.socket) -> None:
        """Both directions of a connection are done: close its sockets."""
        with self._lock:
            self._sockets.difference_update(sockets)
        for s in sockets:
            s.close()

    def _pump(self, src: socket.socket, dst: socket.socket, counted: bool, done: threading.Barrier) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
                if counted:
                    with self._lock:
                        self.forwarded += len(data)
                        over = self._limit is not None and self.forwarded >= self._limit
                    if over:
                        self.cut()
                        return
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)
            _arrive(done)

    def _delayed(
        self, src: socket.socket, dst: socket.socket, counted: bool, done: threading.Barrier
    ) -> None:
        """Like _pump, but each chunk leaves ``delay`` s after it arrived (a second thread sends)."""
        chunks: queue.SimpleQueue[tuple[float, bytes]] = queue.SimpleQueue()

        def send() -> None:
            try:
                while True:
                    arrived, data = chunks.get()
                    wait = arrived + self.delay - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
                    if not data:
                        break
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                with contextlib.suppress(OSError):
                    dst.shutdown(socket.SHUT_WR)
                _arrive(done)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        try:
            while True:
                data = src.recv(65536)
                chunks.put((time.monotonic(), data))
                if not data:
                    break
        except OSError:
            chunks.put((time.monotonic(), b""))


def _arrive(barrier: threading.Barrier) -> None:
    with contextlib.suppress(threading.BrokenBarrierError):
        barrier.wait(timeout=600)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.services.tcp_proxy")
    parser.add_argument("target_port", type=int)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds added to each response")
    args = parser.parse_args(argv)
    proxy = TcpProxy(args.target_port, delay=args.delay).start()
    print(proxy.port, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
