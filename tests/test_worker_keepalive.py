"""The threaded worker's keep-alive path (pypi.server.worker, pypi.server.response), with a
socket pair standing in for a client connection."""

from __future__ import annotations

import contextlib
import selectors
import socket
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest

from pypi.server import inline_io, response
from pypi.server.worker import Worker, _Replay


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


# -- answers from the event loop (pypi.server.inline_io) ------------------------------------
@pytest.mark.parametrize(
    "head",
    [
        b"GET /simple/demo/ HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n",
        b"HEAD /simple/ HTTP/1.0\r\n\r\n",
    ],
)
def test_a_whole_bodiless_simple_request_may_be_answered_in_the_loop(head):
    assert inline_io.qualifies(head)


@pytest.mark.parametrize(
    "data",
    [
        b"GET /simple/demo/ HTTP/1.1\r\nHost: x\r\n",  # the head is still arriving (a slow client)
        b"GET /simple/demo/ HTTP/1.1\r\n\r\nGET /simple/ HTTP/1.1\r\n\r\n",  # pipelined
        b"POST /simple/demo/ HTTP/1.1\r\nContent-Length: 2\r\n\r\nab",
        b"GET /simple/demo/ HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
        b"GET /simple/demo/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET /simple/demo/ HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
        b"GET /simple/demo/ HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n",
        b"GET /packages/demo-1.0.whl HTTP/1.1\r\n\r\n",  # a download: on a thread
        b"GET /simple/demo/ HTTP/2.0\r\n\r\n",
        b"GET /simple/" + b"a" * inline_io.HEAD_MAX + b" HTTP/1.1\r\n\r\n",
        b"",
    ],
)
def test_anything_else_goes_to_a_thread(data):
    assert not inline_io.qualifies(data)


def test_the_head_is_looked_at_without_being_taken(pair):
    server, client = pair
    server.setblocking(False)
    assert inline_io.waiting_head(server) is None  # nothing yet
    client.sendall(b"GET /simple/ HTTP/1.1\r\n\r\n")
    assert inline_io.waiting_head(server) == b"GET /simple/ HTTP/1.1\r\n\r\n"
    assert server.recv(100) == b"GET /simple/ HTTP/1.1\r\n\r\n"
    client.close()
    assert inline_io.waiting_head(server) == b""  # end of file: gthread's thread closes it


def test_the_loop_sends_only_what_the_socket_takes_and_leaves_the_rest(pair):
    """A client that does not read cannot hold the loop: what the socket does not take at
    once is handed back (the loop sends it when the socket is writable again)."""
    server, client = pair
    server.setblocking(False)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    page = [b"head", b"x" * 4_000_000, b"tail"]
    rest = inline_io.send_now(server, page)
    assert rest and rest[-1] == b"tail"
    sent = 4 + 4_000_000 + 4 - sum(len(c) for c in rest)
    received = b""
    while len(received) < sent:
        received += client.recv(1 << 20)
    assert received == b"".join(page)[:sent]


class _LoopConn:
    """gthread's TConn as the loop uses it (hashable, as TConn is)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.timeouts = 0
        self.closed = False

    def set_timeout(self) -> None:
        self.timeouts += 1

    def close(self) -> None:
        self.closed = True


def _loop(server: socket.socket) -> SimpleNamespace:
    """A worker's event loop around one kept-alive connection on ``server``."""
    worker = SimpleNamespace(alive=True, nr_conns=1, keepalived_conns=[], _writing={}, submitted=[])
    worker.poller = selectors.DefaultSelector()
    for name in ("_release", "_close", "_write_from_loop", "_on_writable", "_hand_over_stalled"):
        setattr(worker, name, getattr(Worker, name).__get__(worker))
    worker.on_client_socket_readable = lambda conn, client: None
    worker._submit = lambda conn, fn, *args: worker.submitted.append((fn, args))
    worker._send_rest = Worker._send_rest.__get__(worker)
    conn = _LoopConn(server)
    worker.keepalived_conns.append(conn)
    worker.conn = conn
    return worker


def _answer_from_loop(server: socket.socket, page: list[bytes]) -> SimpleNamespace:
    server.setblocking(False)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    worker = _loop(server)
    rest = inline_io.send_now(server, page)
    assert rest  # the socket took only part of it
    worker._write_from_loop(worker.conn, rest)
    assert worker.conn not in worker.keepalived_conns
    return worker


def _read(client: socket.socket, size: int, worker=None) -> bytes:
    received = b""
    client.settimeout(5)
    while len(received) < size:
        if worker is not None:
            for key, _ in worker.poller.select(0):
                key.data(key.fileobj)
        with contextlib.suppress(TimeoutError):
            received += client.recv(1 << 16)
    return received


def test_the_loop_sends_the_rest_of_a_large_answer_as_the_client_reads_it(pair):
    server, client = pair
    page = [b"HTTP/1.1 200 OK\r\n\r\n", b"x" * 3_000_000, b"tail"]
    worker = _answer_from_loop(server, page)
    assert _read(client, sum(map(len, page)), worker) == b"".join(page)
    assert not worker._writing and not worker.submitted  # no thread was needed
    # Then it waits for the connection's next request, as a kept-alive one.
    assert worker.poller.get_key(server).events == selectors.EVENT_READ
    assert worker.keepalived_conns == [worker.conn] and worker.conn.timeouts == 1


def test_a_client_that_reads_nothing_has_a_thread_send_the_rest(pair, monkeypatch):
    from pypi.server import worker as worker_mod

    server, client = pair
    page = [b"HTTP/1.1 200 OK\r\n\r\n", b"y" * 3_000_000]
    monkeypatch.setattr(worker_mod, "LOOP_WRITE_STALL", 0.0)
    worker = _answer_from_loop(server, page)
    worker._hand_over_stalled()
    assert not worker._writing and len(worker.submitted) == 1
    with pytest.raises(KeyError):
        worker.poller.get_key(server)  # the loop lets go of it
    fn, args = worker.submitted[0]
    sent = sum(map(len, page)) - sum(len(c) for c in args[1])
    with ThreadPoolExecutor(1) as pool:
        keepalive = pool.submit(fn, *args)
        assert _read(client, sum(map(len, page))) == b"".join(page)
        assert keepalive.result(5) is True and sent > 0


def test_a_stopping_worker_closes_the_connection_once_the_answer_is_whole(pair):
    server, client = pair
    page = [b"HTTP/1.1 200 OK\r\n\r\n", b"z" * 2_000_000]
    worker = _answer_from_loop(server, page)
    worker.alive = False
    assert _read(client, sum(map(len, page)), worker) == b"".join(page)
    assert worker.conn.closed and worker.nr_conns == 0 and not worker.keepalived_conns


def test_a_small_page_goes_out_at_once(pair):
    server, client = pair
    server.setblocking(False)
    assert inline_io.send_now(server, [b"HTTP/1.1 200 OK\r\n\r\n", b"", b"<html>"]) == []
    assert client.recv(100) == b"HTTP/1.1 200 OK\r\n\r\n<html>"


def test_a_collected_response_is_held_until_the_loop_sends_it(pair):
    server, client = pair
    held = inline_io.Collected(server)
    held.sendall(b"HTTP/1.1 200 OK\r\n\r\n")
    held.settimeout(120)  # the loop's socket stays non-blocking
    assert held.chunks == [b"HTTP/1.1 200 OK\r\n\r\n"] and server.gettimeout() is None
    with pytest.raises(AttributeError):
        held.fileno  # noqa: B018 -- no sendfile from the loop
    client.setblocking(False)
    with pytest.raises(BlockingIOError):
        client.recv(10)  # nothing was sent


def test_a_request_read_by_the_loop_is_handed_to_the_thread_as_it_was():
    parser = iter([SimpleNamespace(path="/next")])
    conn = SimpleNamespace(parser=parser)
    req = SimpleNamespace(path="/simple/demo/")
    conn.parser = _Replay(conn, req)
    assert next(conn.parser) is req
    assert conn.parser is parser and next(conn.parser).path == "/next"


# -- new connections spread over the workers ------------------------------------------------
def _acceptor(nr_conns: int, workers: int = 2) -> SimpleNamespace:
    worker = SimpleNamespace(nr_conns=nr_conns, cfg=SimpleNamespace(workers=workers), _accept_after=None)
    worker.listening = []
    worker.set_accept_enabled = worker.listening.append
    return worker


def test_an_idle_worker_or_a_lone_one_accepts_at_once():
    assert Worker._accept_now(_acceptor(nr_conns=0))
    lone = _acceptor(nr_conns=50, workers=1)
    assert Worker._accept_now(lone) and lone.listening == []


def test_a_busy_worker_leaves_a_new_connection_to_the_others_for_a_moment(monkeypatch):
    import pypi.server.worker as worker_mod

    now = [100.0]
    monkeypatch.setattr(worker_mod.time, "monotonic", lambda: now[0])
    busy = _acceptor(nr_conns=5)
    assert not Worker._accept_now(busy)
    assert busy.listening == [False]  # stops listening ...
    assert busy._accept_after == pytest.approx(100.0 + 5 * worker_mod.ACCEPT_WAIT)
    now[0] = busy._accept_after + 0.0001
    assert Worker._accept_now(busy)  # ... and takes it if nobody else did meanwhile
    assert busy._accept_after is None
    # The busier, the longer it waits (bounded).
    many = _acceptor(nr_conns=10_000)
    Worker._accept_now(many)
    assert many._accept_after == pytest.approx(now[0] + worker_mod.ACCEPT_WAIT_MAX)
    # A wait long past does not count for the next connection: it waits again.
    stale = _acceptor(nr_conns=5)
    stale._accept_after = now[0] - worker_mod.ACCEPT_WAIT_STALE - 1.0
    assert not Worker._accept_now(stale)
