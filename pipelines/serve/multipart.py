"""A multipart/form-data body (already read, size-limited) as its parts, with the standard library's MIME parser."""

from __future__ import annotations

from dataclasses import dataclass
from email.parser import BytesParser
from email.policy import HTTP

from pipelines.serve.photo_input import PhotoError


@dataclass
class Part:
    name: str
    filename: str | None
    data: bytes

    def text(self) -> str:
        try:
            return self.data.decode("utf-8")
        except UnicodeDecodeError:
            raise PhotoError(400, "bad_field", f"form field {self.name} is not UTF-8 text") from None


def parse_multipart(content_type: str, body: bytes) -> list[Part]:
    """Every part of a multipart/form-data ``body``; a malformed body is a 400 that says so."""
    if "boundary=" not in content_type:
        raise PhotoError(400, "bad_multipart", "multipart/form-data without a boundary")
    message = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body)
    if not message.is_multipart():
        raise PhotoError(400, "bad_multipart", "the multipart body could not be parsed")
    parts = []
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name:
            raise PhotoError(400, "bad_multipart", "a multipart part has no name")
        data = part.get_payload(decode=True)
        parts.append(Part(str(name), part.get_filename(), data if data is not None else b""))
    if message.defects and not parts:
        raise PhotoError(400, "bad_multipart", f"malformed multipart body: {message.defects[0].__class__.__name__}")
    return parts
