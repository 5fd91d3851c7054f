"""A ``multipart/form-data`` upload read into bounded values as it arrives (python-multipart's
streaming parser over the request's body stream).

Rules:
- At most one file part (``max_files``) of at most ``max_file_bytes``; at most ``MAX_FIELDS``
  text fields of at most ``MAX_FIELD_BYTES`` each, valid UTF-8; part headers bounded by the parser.
  The first byte past a limit stops the read: the rest of the body is never buffered. A file over
  its limit is ``PayloadTooLarge`` (413), with the limit in the message; a ``Content-Length`` that
  cannot fit is refused before anything is read.
- A client that disconnects mid-upload ends its own request (499), nothing else.
- A malformed body (no boundary, a part without a name, a broken multipart stream, text that is not
  UTF-8) is 400 ``InvalidRequest`` naming the field when there is one.
- Values are returned as they came (text fields as lists, in order, so repeated names such as
  ``timestamp_granularities[]`` keep every value); what they must be is the caller's schema.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from pendra.errors import InvalidRequest, PayloadTooLarge

# nginx's "client closed request": the status of an upload the client abandoned.
CLIENT_CLOSED = 499
# Text fields one form may carry (OpenAI's transcription request has about ten).
MAX_FIELDS = 32
# Bytes of one text field (a Whisper prompt is a few hundred characters).
MAX_FIELD_BYTES = 64 * 1024
# Room for the part headers, boundaries and text fields around the file in a Content-Length.
FORM_OVERHEAD_BYTES = MAX_FIELDS * (MAX_FIELD_BYTES + 1024) + 64 * 1024


@dataclass(frozen=True)
class UploadedFile:
    field: str
    filename: str
    content_type: str
    data: bytes


@dataclass
class Form:
    fields: dict[str, list[str]] = field(default_factory=dict)
    files: list[UploadedFile] = field(default_factory=list)


@dataclass
class _Part:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    name: str = ""
    filename: str | None = None
    content_type: str = ""
    data: bytearray = field(default_factory=bytearray)


class _Reader:
    """The parser's callbacks: builds the form part by part, enforcing every limit."""

    def __init__(self, max_file_bytes: int, max_files: int) -> None:
        self.max_file_bytes = max_file_bytes
        self.max_files = max_files
        self.form = Form()
        self.field_count = 0
        self.part: _Part | None = None
        self._header_field = bytearray()
        self._header_value = bytearray()
        self.ended = False

    def on_part_begin(self) -> None:
        self.part = _Part()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        assert self.part is not None
        self.part.headers[bytes(self._header_field).lower()] = bytes(self._header_value)
        self._header_field.clear()
        self._header_value.clear()

    def on_headers_finished(self) -> None:
        part = self.part
        assert part is not None
        disposition, options = parse_options_header(part.headers.get(b"content-disposition", b""))
        if disposition != b"form-data" or not options.get(b"name"):
            raise InvalidRequest("a multipart part has no `Content-Disposition: form-data; "
                                 "name=...` header")
        part.name = _utf8(options[b"name"], "a part's name")
        if b"filename" in options:
            part.filename = _utf8(options[b"filename"], f"the filename of `{part.name}`")
            if len(self.form.files) >= self.max_files:
                raise InvalidRequest(f"at most {self.max_files} file(s) may be uploaded; "
                                     f"`{part.name}` is one too many", param=part.name)
        else:
            self.field_count += 1
            if self.field_count > MAX_FIELDS:
                raise InvalidRequest(f"more than {MAX_FIELDS} form fields")
        content_type, _ = parse_options_header(part.headers.get(b"content-type", b""))
        part.content_type = content_type.decode("latin-1")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self.part
        assert part is not None
        part.data += data[start:end]
        if part.filename is not None:
            if len(part.data) > self.max_file_bytes:
                raise PayloadTooLarge(f"the uploaded file `{part.name}` is larger than the limit "
                                      f"of {self.max_file_bytes} bytes")
        elif len(part.data) > MAX_FIELD_BYTES:
            raise InvalidRequest(f"form field `{part.name}` is longer than {MAX_FIELD_BYTES} "
                                 "bytes", param=part.name)

    def on_part_end(self) -> None:
        part = self.part
        assert part is not None
        if part.filename is not None:
            self.form.files.append(UploadedFile(part.name, part.filename, part.content_type,
                                                bytes(part.data)))
        else:
            value = _utf8(bytes(part.data), f"form field `{part.name}`", param=part.name)
            self.form.fields.setdefault(part.name, []).append(value)
        self.part = None

    def on_end(self) -> None:
        self.ended = True


def _utf8(raw: bytes, what: str, *, param: str | None = None) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest(f"{what} is not valid UTF-8", param=param) from exc


async def read_form(request: Request, *, max_file_bytes: int, max_files: int = 1) -> Form:
    """The request's multipart form, within the module's limits (see the rules)."""
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or not options.get(b"boundary"):
        raise InvalidRequest("the body must be multipart/form-data with a boundary (an upload "
                             "as the OpenAI SDKs and `curl -F` send it)", status=415)
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and \
            int(length) > max_file_bytes * max_files + FORM_OVERHEAD_BYTES:
        raise PayloadTooLarge(f"the upload of {length} bytes is larger than the limit of "
                              f"{max_file_bytes} bytes per file")
    reader = _Reader(max_file_bytes, max_files)
    callbacks = {name: getattr(reader, name) for name in (
        "on_part_begin", "on_part_data", "on_part_end", "on_header_field", "on_header_value",
        "on_header_end", "on_headers_finished", "on_end")}
    parser = MultipartParser(options[b"boundary"], callbacks)  # type: ignore[arg-type]
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except MultipartParseError as exc:
        raise InvalidRequest(f"the multipart body is malformed: {str(exc)[:200]}") from exc
    except ClientDisconnect as exc:  # nobody is left to answer; no traceback for it either
        raise InvalidRequest("the client went away during the upload",
                             status=CLIENT_CLOSED) from exc
    if not reader.ended:
        raise InvalidRequest("the multipart body ended before its closing boundary")
    return reader.form
