#!/usr/bin/env python3
"""The container's HEALTHCHECK: is the modelserve REST server up and answering?

GET http://127.0.0.1:$MODELSERVE_PORT/healthz (port 8501 when unset), 3 s timeout. Exit 0 on a
200 answer; otherwise exit 1 with one line on stderr saying why (`docker inspect` shows it).

Liveness only: a server still loading its models is healthy (readiness is /readyz, for a
Kubernetes readinessProbe). The port comes from the environment, so a server moved to another
port with `--port` instead of MODELSERVE_PORT is reported unhealthy.

Standard library only: it runs with the image's Python and nothing else.
"""

from __future__ import annotations

import http.client
import os
import sys
import urllib.error
import urllib.request

TIMEOUT_SECONDS = 3


def check(port: str) -> str | None:
    """None when /healthz answers 200, else why not."""
    if not port.isdigit() or not 0 < int(port) < 65536:
        return f"MODELSERVE_PORT={port!r} is not a port number"
    url = f"http://127.0.0.1:{port}/healthz"
    # No proxy, even when HTTP_PROXY is set: the server is on this machine's loopback.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=TIMEOUT_SECONDS) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except urllib.error.URLError as exc:
        return f"{url}: {exc.reason}"
    except (OSError, http.client.HTTPException) as exc:
        return f"{url}: {type(exc).__name__}: {exc}"
    return None if status == 200 else f"{url} answered {status}"


def main() -> int:
    problem = check(os.environ.get("MODELSERVE_PORT") or "8501")
    if problem is None:
        return 0
    print(f"unhealthy: {problem}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
