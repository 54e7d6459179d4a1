"""The research console: static pages (HTML, vanilla JS modules, CSS) served by the REST API at ``/console``.

Everything the browser loads comes from this package or from an installed registry package, never from
a CDN, so the console (and ``/docs``) work on a machine with no internet:

* ``static/``: the pages (shipped as package data, see pyproject.toml);
* the chart library is ``plotly.min.js`` from the installed PyPI ``plotly`` wheel, served from
  site-packages at run time (:func:`plotly_js`), not copied into the repository;
* Swagger UI 5 (it reads OpenAPI 3.1, which FastAPI writes) for ``/docs`` comes from the ``static/``
  folder of the PyPI ``fastapi-offline`` wheel (:func:`swagger_ui_dir`; only its files are used).

Every page reads only the public REST API (``/v1/...``) with the key the user typed (kept in the
browser's ``sessionStorage``), so what the console shows is what any client gets. Hazard: pages must
write untrusted text (symbols, reasons, SQL results) with ``textContent`` only — never ``innerHTML``.
This module imports nothing from K2, so any face can serve it.

Example::

    from k2.console import STATIC_DIR, plotly_js
    plotly_js()   # Path('.../site-packages/plotly/package_data/plotly.min.js')
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

STATIC_DIR = Path(__file__).resolve().parent / "static"


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise RuntimeError(
            f"console: expected the Python package {name!r} to be installed (pip install {name.replace('_', '-')}), found none"
        )
    return Path(spec.origin).resolve().parent


def plotly_js() -> Path:
    """``plotly.min.js`` inside the installed ``plotly`` wheel (RuntimeError naming the package when absent)."""
    path = _package_dir("plotly") / "package_data" / "plotly.min.js"
    if not path.is_file():
        raise RuntimeError(f"console: expected {path} in the installed plotly package, found no such file")
    return path


def swagger_ui_dir() -> Path:
    """The folder holding ``swagger-ui-bundle.js``, ``swagger-ui.css`` and ``favicon.png`` (PyPI ``fastapi-offline``)."""
    path = _package_dir("fastapi_offline") / "static"
    for name in ("swagger-ui-bundle.js", "swagger-ui.css", "favicon.png"):
        if not (path / name).is_file():
            raise RuntimeError(
                f"console: expected {name} in {path} (PyPI fastapi-offline), found no such file"
            )
    return path


def console_url(api_host: str, api_port: int) -> str:
    """Where a browser on this machine finds the console (a wildcard bind address becomes 127.0.0.1).

    >>> console_url("0.0.0.0", 8000)
    'http://127.0.0.1:8000/console/'
    """
    host = "127.0.0.1" if api_host in ("0.0.0.0", "::", "") else api_host
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{api_port}/console/"
