"""The HTTP side of `saelab view`: static viewer assets, read-only data, and a small JSON API."""
