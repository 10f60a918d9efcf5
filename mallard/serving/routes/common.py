"""What the route modules share."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import Request

from mallard.serving.auth import Principal

if TYPE_CHECKING:
    from mallard.serving.services import Services


def services(request: Request) -> Services:
    return request.app.state.services


def principal(request: Request) -> Principal:
    return request.state.principal


def request_id(request: Request) -> str:
    return str(getattr(request.state, "request_id", ""))


def client(request: Request) -> str:
    return request.client.host if request.client else ""
