"""How console pages become HTML: the Jinja environment, its filters, flash messages, ``Page``.

Rules: a route gets a ``Page`` (``PageDep``) and hands ``Page.render`` a plain dict and a template
name and nothing else; ``render`` adds what every page shows around it (the signed-in session's CSRF
token, the active sidebar entry, a flash message left by the previous action, signed with the
session secret). Templates never reach into the app. Autoescaping is on for every template. Error
pages made by the exception handlers have no ``Page`` dependency: they neither show nor consume a
flash message.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path
from dataclasses import dataclass
from typing import Annotated, Any

import jinja2
from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from pendra import __version__
from pendra.server.deps import SessionsDep
from pendra.server.sessions import Session, Sessions
from pendra.server.store.tables import usage_kind_label

TEMPLATES_DIR = Path(__file__).with_name("templates")
FLASH_COOKIE = "pendra_flash"
# A flash message only has to survive one redirect.
FLASH_TTL_S = 60
# Everything a page loads comes from the console itself: no inline script, no CDN, no framing.
SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'self'; img-src 'self' data:; style-src 'self'; "
                                "script-src 'self'; connect-src 'self'; form-action 'self'; "
                                "frame-ancestors 'none'; base-uri 'none'"),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}
# Pages that show a secret once (new key, new worker) must never be cached or replayed.
NO_STORE = {"Cache-Control": "no-store"}


# --- filters --------------------------------------------------------------------------------------


def _as_datetime(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def ago(value: Any, now: datetime | None = None) -> str:
    """"12 s ago", "3 min ago", "5 h ago", "2 d ago"; "never" for nothing."""
    when = _as_datetime(value)
    if when is None:
        return "never"
    seconds = ((now or datetime.now(UTC)) - when).total_seconds()
    if seconds < 2:
        return "just now"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return f"{int(seconds)} s ago"


def utc(value: Any) -> str:
    when = _as_datetime(value)
    return "" if when is None else when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def size(value: Any) -> str:
    """Bytes in decimal units, as Ollama and disk vendors count them."""
    if not value:
        return "—"
    amount = float(value)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if amount < 1000 or unit == "TB":
            return f"{int(amount)} B" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1000
    return str(value)


def number(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.1f}"
    return f"{int(value):,}"


def compact(value: Any) -> str:
    """12, 1.2K, 34K, 1.5M: for chart axes and context lengths."""
    if value is None:
        return "—"
    amount = float(value)
    for unit, scale in (("M", 1e6), ("K", 1e3)):
        if abs(amount) >= scale:
            scaled = amount / scale
            text = f"{scaled:.1f}".rstrip("0").rstrip(".") if scaled < 10 else f"{round(scaled)}"
            return text + unit
    return f"{amount:.0f}" if amount.is_integer() or abs(amount) >= 10 else f"{amount:.1f}"


def context_length(value: Any) -> str:
    """Context windows in the "128K" style model cards use (powers of two → K of 1024)."""
    if not value:
        return "—"
    tokens = int(value)
    if tokens >= 1024 and tokens % 1024 == 0:
        return f"{tokens // 1024}K"
    return compact(tokens)


def duration_ms(value: Any) -> str:
    if value is None:
        return "—"
    ms = float(value)
    return f"{ms / 1000:.2f} s" if ms >= 1000 else f"{math.floor(ms)} ms"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
                             autoescape=jinja2.select_autoescape(default=True),
                             undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True)
    env.filters.update(ago=ago, utc=utc, size=size, number=number, compact=compact,
                       context_length=context_length, duration_ms=duration_ms,
                       kind_label=usage_kind_label)
    return env


ENV = _environment()


# --- pages --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    """Renders one request's answer: a page, or a redirect that leaves a flash message.

    ``sessions`` signs the flash cookie; without it (error pages) no flash is shown or left."""

    request: Request
    sessions: Sessions | None = None

    def redirect(self, url: str, *, notice: str | None = None,
                 error: str | None = None) -> RedirectResponse:
        """A 303 to ``url`` that shows ``notice`` (or ``error``) on the page it lands on."""
        response = RedirectResponse(url, status_code=303)
        if (notice or error) and self.sessions is not None:
            value = self.sessions.sign({"kind": "error" if error else "notice",
                                        "text": error or notice})
            response.set_cookie(FLASH_COOKIE, value, max_age=FLASH_TTL_S, path="/",
                                httponly=True, samesite="lax",
                                secure=self.request.url.scheme == "https")
        return response

    def _take_flash(self) -> dict[str, str] | None:
        raw = self.request.cookies.get(FLASH_COOKIE)
        if not raw or self.sessions is None:
            return None
        data = self.sessions.unsign(raw)
        if not data or not isinstance(data.get("text"), str):
            return None
        return {"kind": str(data.get("kind", "notice")), "text": str(data["text"])}

    def render(self, template: str, data: dict[str, Any], *, session: Session | None = None,
               status: int = 200, headers: dict[str, str] | None = None) -> HTMLResponse:
        """Render ``template`` with ``data`` plus the page frame (session, flash, version)."""
        flash = self._take_flash()
        frame = {"csrf_token": session.csrf_token if session else "",
                 "signed_in": session is not None, "flash": flash,
                 "role": session.role if session else "",
                 "is_owner": session is not None and session.is_owner,
                 "user_name": session.user_name if session else "", "version": __version__,
                 "path": self.request.url.path}
        html = ENV.get_template(template).render(frame | data)
        response = HTMLResponse(html, status_code=status,
                                headers=SECURITY_HEADERS | (headers or {}))
        if flash is not None:
            response.delete_cookie(FLASH_COOKIE, path="/")
        return response


def get_page(request: Request, sessions: SessionsDep) -> Page:
    return Page(request, sessions)


PageDep = Annotated[Page, Depends(get_page)]
