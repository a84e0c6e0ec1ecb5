#!/usr/bin/env python3
"""Waits until something accepts TCP connections on 127.0.0.1:PORT.

    wait-for-port.py PORT [SECONDS] [WHAT]

Exits 0 once a connection succeeds, 1 (naming WHAT) after SECONDS (default 20).
"""
import socket
import sys
import time

port = int(sys.argv[1])
seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 20.0
what = sys.argv[3] if len(sys.argv) > 3 else "the server"
deadline = time.time() + seconds
while True:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        break
    except OSError:
        if time.time() > deadline:
            sys.exit(f"{what} did not start on port {port} within {seconds:.0f} s")
        time.sleep(0.05)
