"""Is the Hugging Face hub reachable? Asked once per load, so an offline hub id fails in seconds, not after
half a minute of retries (huggingface_hub retries each request five times with back-off)."""

from __future__ import annotations

import logging
import os
import socket
import threading
from urllib.parse import urlparse

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT = 2.0   # seconds for DNS + TCP connect to the hub (or the proxy)


def hub_offline_by_setting() -> bool:
    """HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE set to a true value."""
    return any(os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")
               for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hub_reachable(timeout: float = CONNECT_TIMEOUT) -> bool:
    """Whether a TCP connection to the hub endpoint (or the HTTPS proxy in use) opens within `timeout` seconds.

    DNS lookups ignore socket timeouts, so the attempt runs on a daemon thread that is simply abandoned when slow.
    """
    if hub_offline_by_setting():
        return False
    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    target = urlparse(proxy) if proxy else endpoint
    host = target.hostname or "huggingface.co"
    port = target.port or (443 if target.scheme in ("https", "") else 80)
    result: list[bool] = []

    def attempt() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError as err:
            logger.info("Hugging Face hub not reachable at %s:%s (%s)", host, port, err)
            result.append(False)

    thread = threading.Thread(target=attempt, name="sentinel-hub-check", daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])
