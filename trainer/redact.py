"""Mask passwords in text before it is printed, stored or logged: URIs such as
`postgresql://user:PASSWORD@host/db` travel inside driver and store error messages."""

from __future__ import annotations

import re

# scheme://user:password@  (the password may hold anything but '@', '/' and whitespace)
_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s'\"]*:)(?P<pw>[^@/\s'\"]+)@")


def redact_text(text: str) -> str:
    """`text` with the password of every URI in it replaced by ***."""
    if not text or "://" not in text:
        return text
    return _USERINFO.sub(lambda m: f"{m.group('head')}***@", text)
