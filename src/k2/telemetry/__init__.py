"""Ground-floor telemetry: the declared metric registry, structured logging and process helpers.

Every other K2 package may import these; they import nothing of K2 but :mod:`k2.config` and
:mod:`k2.model`.
"""
