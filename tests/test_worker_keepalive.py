"""The threaded worker's keep-alive path (pypi.server.worker, pypi.server.response), with a
socket pair standing in for a client connection."""

from __future__ import annotations

import socket
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest

from pypi.server import response
from pypi.server.worker import Worker


class _Buf:
    def __init__(self, data: bytes = b"") -> None:
        self.data = data

    def getvalue(self) -> bytes:
        return self.data


def _conn(sock: socket.socket, read_ahead: bytes = b"") -> SimpleNamespace:
    return SimpleNamespace(sock=sock, parser=SimpleNamespace(unreader=SimpleNamespace(buf=_Buf(read_ahead))))


def _worker(nr_conns: int, threads: int, queued: int = 0) -> SimpleNamespace:
    pool = ThreadPoolExecutor(1)
    pool.submit(lambda: None).result()
    for _ in range(queued):  # work the (busy) pool has not started
        pool._work_queue.put(None)
    return SimpleNamespace(alive=True, nr_conns=nr_conns, cfg=SimpleNamespace(threads=threads), tpool=pool)


def _arrives(worker, conn) -> bool:
    worker._connections_waiting = lambda: Worker._connections_waiting(worker)
    return Worker._next_request_arrives(worker, conn)


@pytest.fixture
def pair():
    server, client = socket.socketpair()
    yield server, client
    server.close()
    client.close()


def test_a_request_already_sent_is_answered_by_the_same_thread(pair):
    server, client = pair
    client.sendall(b"GET / HTTP/1.1\r\n\r\n")
    assert _arrives(_worker(nr_conns=2, threads=4), _conn(server))
    assert _arrives(_worker(nr_conns=2, threads=4), _conn(server, read_ahead=b"GET"))


def test_a_quiet_connection_goes_back_to_the_poller(pair):
    server, _ = pair
    assert not _arrives(_worker(nr_conns=1, threads=4), _conn(server))


def test_a_thread_gives_way_when_another_connection_waits(pair):
    server, client = pair
    client.sendall(b"GET / HTTP/1.1\r\n\r\n")
    assert not _arrives(_worker(nr_conns=6, threads=4, queued=1), _conn(server))
    # More connections than threads, but none waiting: it stays.
    assert _arrives(_worker(nr_conns=6, threads=4, queued=0), _conn(server))


def test_a_stopping_worker_does_not_linger(pair):
    server, client = pair
    client.sendall(b"GET / HTTP/1.1\r\n\r\n")
    worker = _worker(nr_conns=1, threads=4)
    worker.alive = False
    assert not _arrives(worker, _conn(server))


class _Recorder:
    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def sendmsg(self, buffers: list[bytes]) -> int:
        self.writes.append(tuple(bytes(b) for b in buffers))
        return sum(len(b) for b in buffers)

    def fileno(self) -> int:
        return 7


def test_the_head_goes_out_with_the_first_body_bytes():
    sock = _Recorder()
    held = response._HeadFirst(sock)
    held.sendall(b"HTTP/1.1 200 OK\r\n\r\n")
    assert sock.writes == []
    held.sendall(b"<html>")
    held.sendall(b"</html>")
    assert sock.writes == [b"HTTP/1.1 200 OK\r\n\r\n<html>", b"</html>"]


def test_a_large_body_goes_in_one_call_with_the_head_a_sendfile_or_no_body_sends_it_first():
    sock = _Recorder()
    held = response._HeadFirst(sock)
    held.sendall(b"HEAD")
    big = b"x" * (response.COALESCE_MAX + 1)
    held.sendall(big)
    assert sock.writes == [(b"HEAD", big)]  # one system call, the body not copied behind the head

    sock = _Recorder()
    held = response._HeadFirst(sock)
    held.sendall(b"HEAD")
    assert held.fileno() == 7 and sock.writes == [b"HEAD"]  # sendfile asks for the fd first

    sock = _Recorder()
    held = response._HeadFirst(sock)
    held.sendall(b"HEAD")
    held.flush()
    held.flush()
    assert sock.writes == [b"HEAD"]


def test_a_large_body_partly_sent_is_sent_whole_after_the_head():
    import socket
    import threading

    server, client = socket.socketpair()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    server.settimeout(10)  # as gunicorn leaves it: non-blocking inside, so a send may be partial
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 3000000\r\n\r\n"
    body = bytes(range(256)) * (3_000_000 // 256) + b"x" * (3_000_000 % 256)
    received = bytearray()

    def read():
        while len(received) < len(head) + len(body):
            chunk = client.recv(1 << 16)
            if not chunk:
                break
            received.extend(chunk)

    reader = threading.Thread(target=read)
    reader.start()
    held = response._HeadFirst(server)
    held.sendall(head)
    held.sendall(body)
    reader.join(30)
    server.close()
    client.close()
    assert bytes(received) == head + body


def test_the_date_header_is_the_current_seconds():
    from email.utils import parsedate_to_datetime

    assert parsedate_to_datetime(response.http_date()).year >= 2024
    assert response.http_date(0) == "Thu, 01 Jan 1970 00:00:00 GMT"
