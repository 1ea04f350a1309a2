"""
Request parameters as MAAS reads them: the query string (where ``op`` always
is) and a POST/PUT body that is ``multipart/form-data`` (parts may be
base64- or quoted-printable-encoded, as python-libmaas sends them) or
``application/x-www-form-urlencoded``.
"""

from __future__ import annotations

import email.parser
import email.policy
from urllib.parse import parse_qs

from simulators.maas.errors import PlainBadRequest

__all__ = ["parse_query", "parse_body", "Params"]

Params = dict[str, list[str]]


def parse_query(query: bytes) -> Params:
    try:
        parsed = parse_qs(query.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise PlainBadRequest("The query string is not UTF-8.") from None
    return parsed


def parse_body(content_type: str | None, body: bytes) -> Params:
    if not body:
        return {}
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind == "application/x-www-form-urlencoded":
        return parse_query(body)
    if kind == "multipart/form-data":
        return _multipart(content_type or "", body)
    raise PlainBadRequest(f"Unsupported request body type {kind or '(none)'}; send multipart/form-data.")


def _multipart(content_type: str, body: bytes) -> Params:
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    boundary = message.get_boundary()
    if boundary and body.strip() == f"--{boundary}--".encode("latin-1"):
        return {}  # no parameters: only the closing delimiter
    if not message.is_multipart() or message.defects:
        raise PlainBadRequest("The multipart/form-data body could not be parsed.")
    params: Params = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not part.keys() and not part.get_payload():
            continue  # python-libmaas sends one empty part when there are no parameters
        if not isinstance(name, str) or not name:
            raise PlainBadRequest("A multipart part has no name.")
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            raise PlainBadRequest(f"The multipart part {name!r} could not be decoded.")
        charset = part.get_content_charset() or "utf-8"
        try:
            value = payload.decode(charset)
        except (UnicodeDecodeError, LookupError):
            raise PlainBadRequest(f"The multipart part {name!r} is not {charset} text.") from None
        params.setdefault(name, []).append(value)
    return params
