"""The multipart reader at the edge (server/api/upload.py), fed real request bodies through
Starlette's Request: typed, bounded values, or the right refusal naming the field."""

from __future__ import annotations

from collections.abc import Iterable

import httpx
import pytest
from starlette.requests import Request

from pendra.errors import InvalidRequest, PayloadTooLarge
from pendra.server.api.upload import MAX_FIELD_BYTES, MAX_FIELDS, read_form

BOUNDARY = "pendra-test-boundary"


def encoded(data: dict[str, str | list[str]] | None = None,
            files: dict[str, tuple[str, bytes, str]] | None = None) -> tuple[bytes, str]:
    """A body as httpx (like the openai SDK) encodes it as multipart, and its content type."""
    request = httpx.Request("POST", "http://x/", data=data,
                            files=files or {"file": ("a.wav", b"1", "audio/wav")})
    return request.read(), request.headers["content-type"]


def request_of(body: bytes, content_type: str, *, pieces: int = 7,
               length: int | None = None) -> Request:
    chunks = [body[i:i + pieces] for i in range(0, len(body), pieces)] or [b""]
    messages: Iterable[dict[str, object]] = iter(
        [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
         for i, c in enumerate(chunks)])

    async def receive() -> dict[str, object]:
        return next(messages, {"type": "http.disconnect"})  # type: ignore[arg-type]

    headers = [(b"content-type", content_type.encode())]
    headers.append((b"content-length", str(len(body) if length is None else length).encode()))
    return Request({"type": "http", "method": "POST", "path": "/", "headers": headers,
                    "query_string": b""}, receive)


async def test_fields_and_one_file_come_back_typed_in_order() -> None:
    body, ctype = encoded({"model": "whisper", "timestamp_granularities[]": ["word", "segment"],
                           "prompt": "Añaños"},
                          {"file": ("talk.wav", b"RIFF\x00\xff" * 100, "audio/wav")})
    form = await read_form(request_of(body, ctype), max_file_bytes=1000)
    assert form.fields == {"model": ["whisper"], "timestamp_granularities[]": ["word", "segment"],
                           "prompt": ["Añaños"]}
    [upload] = form.files
    assert (upload.field, upload.filename, upload.content_type) == ("file", "talk.wav", "audio/wav")
    assert upload.data == b"RIFF\x00\xff" * 100


async def test_a_file_past_the_limit_is_413_while_it_arrives() -> None:
    body, ctype = encoded(files={"file": ("a.wav", b"x" * 5000, "audio/wav")})
    with pytest.raises(PayloadTooLarge, match="larger than the limit of 4999 bytes"):
        await read_form(request_of(body, ctype, length=100), max_file_bytes=4999)


async def test_a_content_length_that_cannot_fit_is_413_before_reading() -> None:
    async def receive() -> dict[str, object]:
        raise AssertionError("the body must not be read")

    request = Request({"type": "http", "method": "POST", "path": "/", "query_string": b"",
                       "headers": [(b"content-type", f"multipart/form-data; boundary={BOUNDARY}"
                                    .encode()), (b"content-length", b"999999999")]}, receive)
    with pytest.raises(PayloadTooLarge):
        await read_form(request, max_file_bytes=1000)


@pytest.mark.parametrize(("data", "files", "param", "says"), [
    ({"prompt": "x" * (MAX_FIELD_BYTES + 1)}, None, "prompt", "longer than"),
    ({f"f{i}": "v" for i in range(MAX_FIELDS + 1)}, None, None, "more than 32 form fields"),
    (None, {"file": ("a", b"1", "audio/wav"), "again": ("b", b"2", "audio/wav")}, "again",
     "one too many"),
])
async def test_limits_on_fields_and_files_name_the_field(
        data: dict[str, str] | None, files: dict[str, tuple[str, bytes, str]] | None,
        param: str | None, says: str) -> None:
    body, ctype = encoded(data, files)
    with pytest.raises(InvalidRequest, match=says) as caught:
        await read_form(request_of(body, ctype), max_file_bytes=1000)
    assert caught.value.param == param


async def test_text_that_is_not_utf8_is_400_naming_the_field() -> None:
    body = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"language\"\r\n\r\n"
            .encode() + b"\xff\xfe" + f"\r\n--{BOUNDARY}--\r\n".encode())
    with pytest.raises(InvalidRequest, match="not valid UTF-8") as caught:
        await read_form(request_of(body, f"multipart/form-data; boundary={BOUNDARY}"),
                        max_file_bytes=1000)
    assert caught.value.param == "language"


@pytest.mark.parametrize(("body", "says"), [
    (f"--{BOUNDARY}\r\nContent-Disposition: form-data\r\n\r\nx\r\n--{BOUNDARY}--\r\n",
     "no `Content-Disposition"),
    (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhis",
     "ended before its closing boundary"),
    ("this is not multipart at all", "malformed|ended before"),
])
async def test_broken_bodies_are_400(body: str, says: str) -> None:
    with pytest.raises(InvalidRequest, match=says) as caught:
        await read_form(request_of(body.encode(), f"multipart/form-data; boundary={BOUNDARY}"),
                        max_file_bytes=1000)
    assert caught.value.status == 400


@pytest.mark.parametrize("content_type", ["application/json", "multipart/form-data",
                                          "text/plain; boundary=x"])
async def test_anything_but_multipart_with_a_boundary_is_415(content_type: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await read_form(request_of(b"{}", content_type), max_file_bytes=1000)
    assert caught.value.status == 415


async def test_a_client_gone_mid_upload_ends_only_its_request() -> None:
    body, ctype = encoded({"model": "m"}, {"file": ("a.wav", b"x" * 100, "audio/wav")})
    sent = iter([{"type": "http.request", "body": body[:50], "more_body": True}])

    async def receive() -> dict[str, object]:
        return next(sent, {"type": "http.disconnect"})  # type: ignore[arg-type]

    request = Request({"type": "http", "method": "POST", "path": "/", "query_string": b"",
                       "headers": [(b"content-type", ctype.encode())]}, receive)
    with pytest.raises(InvalidRequest, match="went away") as caught:
        await read_form(request, max_file_bytes=1000)
    assert caught.value.status == 499
