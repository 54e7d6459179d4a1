"""The API's routers, one module per resource; :func:`k2.api.app.create_app` includes :data:`ROUTERS` in order.

To add a resource: a module here with ``router(state) -> APIRouter``, then one line in ``ROUTERS``
(or ``app.include_router(...)`` next to the loop in ``create_app`` for routers built elsewhere).
Each ``router(state)`` is long only because it holds its endpoint definitions; every handler is short, and
the shared pieces live in :mod:`k2.api.params` (parameters and checks), :mod:`k2.api.respond` (bodies and
headers), :mod:`k2.api.auth`, :mod:`k2.api.state` (running work off the event loop) and
:mod:`k2.api.paging` (the one paging helper).
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter

from k2.api.auth import read_auth
from k2.api.lag import lag_router
from k2.api.routes import admin, aggregates, klines, ops, reference, rows
from k2.api.routes import trace as trace_routes  # /v1/trace (issue 17): its own module, one line here
from k2.api.state import ApiState

ROUTERS: tuple[Callable[[ApiState], APIRouter], ...] = (
    ops.router,
    rows.router,
    aggregates.router,
    klines.router,
    reference.router,
    admin.router,
    lambda state: lag_router(read_auth(state)),  # /v1/lag (k2.api.lag)
    trace_routes.router,
)
