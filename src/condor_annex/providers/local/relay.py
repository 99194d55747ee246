"""A TCP relay between network namespaces (one thread per connection, bounded by the listener).

The local cloud uses it so that, for example, instances in their namespaces reach the AWS
emulator listening on the host's loopback, and the CLI on the host reaches the collector in the
central manager's namespace, without adding any address to the host's namespace.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable


class Relay:
    """Accept on ``listener``; for each connection, ``connect()`` to the target and pump bytes.

    Args:
        listener: a listening socket (already bound, possibly inside another namespace).
        connect: returns a new connected socket to the target.
        name: for thread names.
    """

    def __init__(self, listener: socket.socket, connect: Callable[[], socket.socket],
                 name: str) -> None:
        self.listener, self.connect, self.name = listener, connect, name
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=f"relay-{name}", daemon=True)

    @property
    def port(self) -> int:
        """The listening port."""
        return self.listener.getsockname()[1]

    def start(self) -> "Relay":
        """Start accepting in a daemon thread; returns self."""
        self.listener.settimeout(0.5)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting and close the listener (open connections end with their peers)."""
        self._stop.set()
        self._thread.join(timeout=2)
        self.listener.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self.listener.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            threading.Thread(target=self._handle, args=(client,), daemon=True,
                             name=f"relay-{self.name}-conn").start()

    def _handle(self, client: socket.socket) -> None:
        try:
            upstream = self.connect()
        except OSError:
            client.close()
            return
        client.settimeout(None)
        upstream.settimeout(None)
        t = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
        t.start()
        _pump(client, upstream)
        t.join()
        client.close()
        upstream.close()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while chunk := src.recv(65536):
            dst.sendall(chunk)
    except OSError:
        pass
    finally:
        for s, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
            try:
                s.shutdown(how)
            except OSError:
                pass
