"""The latency probe, a process of its own: `GET path` every `interval` seconds until stdin closes.

load_client.probe_while runs it while the load it measures the API under is sent. In the load
client's own process, a probe's answer could wait to be read while that event loop encodes an
upload (httpx builds a multipart body in Python), and the wait would be counted as the server's.
Here nothing else runs: one keep-alive connection, one request at a time, the clock read right
before the request is written and right after the whole response is read.

    python3 bench/prober.py BASE_URL PATH INTERVAL

Prints "ready" once its first request (which opens the connection, and is not counted) is
answered, then, when stdin reaches its end, one JSON line: {"latencies": [s, ...], "errors": n}.
"""

import http.client
import json
import sys
import threading
import time
import urllib.parse

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def main() -> None:
    base_url, path, interval = sys.argv[1], sys.argv[2], float(sys.argv[3])
    url = urllib.parse.urlsplit(base_url)
    if url.scheme != "http" or url.hostname not in LOOPBACK_HOSTS or url.port is None:
        raise SystemExit(f"the probe only sends traffic to loopback addresses, not {base_url}")
    stop = threading.Event()

    def wait_for_end_of_input() -> None:
        sys.stdin.read()
        stop.set()

    threading.Thread(target=wait_for_end_of_input, daemon=True).start()
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    latencies: list[float] = []
    errors = 0

    def probe() -> float | None:
        nonlocal connection
        started = time.perf_counter()
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            response.read()
        except (OSError, http.client.HTTPException):
            connection.close()
            connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
            return None
        elapsed = time.perf_counter() - started
        return elapsed if response.status == 200 else None

    if probe() is None:
        raise SystemExit(f"{base_url}{path} did not answer 200")
    print("ready", flush=True)
    while not stop.is_set():
        started = time.perf_counter()
        elapsed = probe()
        if elapsed is None:
            errors += 1
        else:
            latencies.append(elapsed)
        stop.wait(max(0.0, interval - (time.perf_counter() - started)))
    print(json.dumps({"latencies": latencies, "errors": errors}), flush=True)


if __name__ == "__main__":
    main()
