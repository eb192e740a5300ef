"""HTTP plumbing shared by the server's endpoints: errors, bodies, auth, the store gate."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import AsyncIterator
from typing import Any, TypeVar

import msgspec
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from evstore.errors import EvstoreError
from evstore.server.gate import StoreGate  # noqa: F401 - moved to gate.py; still importable here
from evstore.server.schemas import LIST_QUERY_FIELDS

logger = logging.getLogger("evstore.server")

S = TypeVar("S", bound=msgspec.Struct)

JSON = "application/json"
EMPTY_OBJECT = b"{}"
_encode = msgspec.json.Encoder().encode


class HTTPError(Exception):
    """A refusal decided by the HTTP layer itself (size, auth, routing, body shape)."""

    def __init__(self, status: int, error_code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message


def json_response(data: Any, status: int = 200) -> Response:
    """A JSON response; ``data`` may already be encoded bytes."""
    body = data if isinstance(data, bytes) else _encode(data)
    return Response(body, status_code=status, media_type=JSON)


def error_response(status: int, error_code: str, message: str) -> Response:
    """MLflow's error shape: ``{"error_code": ..., "message": ...}``."""
    return json_response({"error_code": error_code, "message": message}, status)


def response_for(error: BaseException, hidden: tuple[tuple[str, str], ...] = ()) -> Response:
    """The response for an exception raised while serving a request.

    Each ``(absolute path, stand-in)`` of ``hidden`` is replaced in the message, so a
    refusal never tells a caller where the store lives on the server.
    """
    if isinstance(error, HTTPError):
        return error_response(error.status, error.error_code, _hide(error.message, hidden))
    if isinstance(error, EvstoreError):
        return error_response(error.http_status, error.error_code, _hide(str(error), hidden))
    logger.error("internal error while serving a request", exc_info=error)
    return error_response(500, "INTERNAL_ERROR", f"internal server error: {type(error).__name__}")


def _hide(message: str, hidden: tuple[tuple[str, str], ...]) -> str:
    for path, stand_in in hidden:
        if path in message:
            message = message.replace(path, stand_in)
    return message


def hidden_paths(store: str, artifact_root: str) -> tuple[tuple[str, str], ...]:
    """What :func:`response_for` hides: the store file, its directory, the artifacts root."""
    pairs = []
    for path, stand_in in ((store, os.path.basename(store)), (artifact_root, "<artifacts root>"),
                           (os.path.dirname(store), "<store directory>")):  # fmt: skip
        for form in dict.fromkeys((os.path.abspath(path), os.path.realpath(path))):
            if len(form) > 1:  # never the root directory itself
                pairs.append((form, stand_in))
    return tuple(sorted(pairs, key=lambda pair: -len(pair[0])))  # a path before its directory


async def read_body(request: Request, limit: int) -> bytes:
    """The whole request body, refusing (413) anything over ``limit`` bytes."""
    return await _whole_body(request.stream(), request.headers.get("content-length"), limit)


async def receive_body(receive: Any, declared: bytes | None, limit: int) -> bytes:
    """The whole body of a raw ASGI request, as :func:`read_body` (413 over ``limit``)."""
    return await _whole_body(_raw_chunks(receive), None if declared is None else declared.decode("latin-1"), limit)


async def _raw_chunks(receive: Any) -> AsyncIterator[bytes]:
    """The body chunks of raw ASGI messages, as ``Request.stream`` gives them."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        yield message.get("body", b"")
        if not message.get("more_body", False):
            return


async def _whole_body(chunks: AsyncIterator[bytes], declared: str | None, limit: int) -> bytes:
    """The chunks joined, refusing (413) a declared length or a body over ``limit`` bytes."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large(int(declared), limit)
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise too_large(size, limit)
        parts.append(chunk)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def too_large(size: int, limit: int) -> HTTPError:
    """The 413 for a body over the limit."""
    return HTTPError(
        413, "INVALID_PARAMETER_VALUE",
        f"Request body of {size} bytes exceeds the server's limit of {limit} bytes.",
    )  # fmt: skip


async def parse_request(request: Request, schema: type[S], limit: int) -> S:
    """The request as ``schema`` (GET: query string; else JSON body)."""
    if request.method != "GET":
        body = await read_body(request, limit)
        if request.method in ("POST", "PUT") or body:  # MLflow's rule: a bodiless
            check_json_content_type(request.headers.get("content-type"))  # DELETE is fine
        return decode_body(body, schema, request.url.path)
    query = request.query_params
    fields = {key: query.getlist(key) if key in LIST_QUERY_FIELDS else query[key] for key in query}
    try:
        return msgspec.convert(fields, schema, strict=False)
    except msgspec.ValidationError as e:
        raise HTTPError(400, "INVALID_PARAMETER_VALUE", f"Invalid request to {request.url.path}: {_said(e)}") from e


_decoders: dict[type, msgspec.json.Decoder[Any]] = {}


def decode_body(body: bytes, schema: type[S], path: str) -> S:
    """A JSON request body as ``schema`` (an empty body is ``{}``); 400 when it is not one."""
    decoder = _decoders.get(schema)
    if decoder is None:
        decoder = _decoders[schema] = msgspec.json.Decoder(schema, strict=False)
    try:
        return decoder.decode(body or b"{}")  # type: ignore[no-any-return]
    except RecursionError:
        raise HTTPError(
            400, "INVALID_PARAMETER_VALUE", f"Invalid request to {path}: JSON nested too deeply."
        ) from None
    except msgspec.ValidationError as e:
        raise HTTPError(400, "INVALID_PARAMETER_VALUE", f"Invalid request to {path}: {_said(e)}") from e
    except msgspec.DecodeError as e:
        raise HTTPError(400, "BAD_REQUEST", f"Malformed JSON in request to {path}: {e}") from e


async def send_json(send: Any, data: Any, status: int = 200) -> None:
    """Send a JSON response over raw ASGI: what :func:`json_response` sends, with no
    Response object (``data`` may already be encoded bytes)."""
    body = data if isinstance(data, bytes) else _encode(data)
    headers = [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def check_json_content_type(content_type: str | None) -> None:
    """MLflow's rule for request bodies of its API: ``application/json`` (parameters allowed).

    A browser's cross-origin ``text/plain`` or form POST is refused here even where CORS lets it.
    """
    if content_type == JSON:
        return
    if content_type is None:
        raise HTTPError(400, "INVALID_PARAMETER_VALUE", "Bad Request. Content-Type header is missing.")
    if content_type.partition(";")[0].strip().lower() != JSON:
        raise HTTPError(
            400, "INVALID_PARAMETER_VALUE", f"Bad Request. Content-Type must be one of ['{JSON}']."
        )


_TYPE_WORDS = {"float": "a number", "int": "an integer", "str": "a string", "array": "a list",
               "object": "an object", "bool": "true or false"}  # fmt: skip
_EXPECTED = re.compile(r"Expected `(\w+)`(?: \| `null`)?, got `(\w+)`(?: - at `(.+)`)?")


def _said(error: msgspec.ValidationError) -> str:
    """msgspec's message, with the expected type in words: '`$.value` must be a number'."""
    text = str(error)
    match = _EXPECTED.fullmatch(text)
    if not match or match.group(1) not in _TYPE_WORDS:
        return text
    expected, got, where = match.groups()
    subject = f"`{where}`" if where else "the request body"
    return f"{subject} must be {_TYPE_WORDS[expected]}, got {got} ({text})"
