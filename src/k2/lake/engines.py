"""How other engines open K2's catalog: pyiceberg / Daft / Ray Data properties, Spark conf, Trino catalog file.

``k2 export catalog-properties`` prints these (see docs/deployment.md, "Other engines"). They are
derived from the same settings :func:`k2.lake.catalog.load_catalog` uses, so another engine sees the
very tables (and snapshots) K2 writes.

Hazards:

* Secrets (S3 secret key, REST credential or token) are replaced by ``<redacted>`` unless
  ``show_secrets`` is set: terminal scrollback and CI logs keep what is printed.
* The SQL catalog is pyiceberg's layout (table ``iceberg_tables``). Spark's ``JdbcCatalog`` reads the
  same layout over JDBC; SQLite needs the Xerial JDBC driver on Spark's classpath. Trino's JDBC catalog
  supports PostgreSQL (not SQLite): with the default SQLite catalog, serve the tables through a REST
  catalog or PostgreSQL before pointing Trino at them.
* The JVM properties are rendered, not executed, here (no Spark or Trino in K2's tests: the Iceberg
  Spark runtime jar is not on PyPI). Their names follow the Iceberg and Trino documentation.

Example:
    >>> from k2.config import Settings
    >>> props = pyiceberg_properties(Settings(catalog_type="rest", catalog_uri="http://cat:8181", warehouse="s3://lake"))
    >>> props["type"], props["uri"], props["warehouse"]
    ('rest', 'http://cat:8181', 's3://lake')
"""

from __future__ import annotations

import json
import re
from typing import Literal
from urllib.parse import urlsplit

from k2.config import Settings
from k2.lake.catalog import s3_properties

Engine = Literal["pyiceberg", "spark", "trino"]
REDACTED = "<redacted>"
_SECRET_KEYS = ("secret", "credential", "token", "password")
_URL_PASSWORD = re.compile(r"(://[^:/@]+:)[^@/]+@")  # postgresql://user:PASSWORD@host


def _redact(props: dict[str, str], show_secrets: bool) -> dict[str, str]:
    if show_secrets:
        return props
    return {
        k: REDACTED if any(s in k.lower() for s in _SECRET_KEYS) else _URL_PASSWORD.sub(rf"\1{REDACTED}@", v)
        for k, v in props.items()
    }


def pyiceberg_properties(settings: Settings, show_secrets: bool = True) -> dict[str, str]:
    """``pyiceberg.catalog.load_catalog(name, **props)`` properties (Daft and Ray Data take the same ones)."""
    props: dict[str, str] = {
        "type": settings.catalog_type,
        "uri": settings.catalog_url,
        "warehouse": settings.warehouse_location,
    }
    props.update(s3_properties(settings))
    if settings.catalog_type == "rest":
        if settings.catalog_credential:
            props["credential"] = settings.catalog_credential.get_secret_value()
        if settings.catalog_token:
            props["token"] = settings.catalog_token.get_secret_value()
        if settings.catalog_warehouse_name:
            props["warehouse"] = settings.catalog_warehouse_name
    if settings.catalog_properties:
        props.update(json.loads(settings.catalog_properties))
    return _redact(props, show_secrets)


def _jdbc(sqlalchemy_url: str) -> tuple[str, str | None, str | None]:
    """``postgresql+psycopg2://u:p@h:5432/db`` -> (``jdbc:postgresql://h:5432/db``, u, p); SQLite -> ``jdbc:sqlite:/path``."""
    parts = urlsplit(sqlalchemy_url)
    scheme = parts.scheme.partition("+")[0]
    if scheme == "sqlite":
        return (
            f"jdbc:sqlite:{sqlalchemy_url.partition(':///')[2]}",
            None,
            None,
        )  # sqlite:////abs/path -> /abs/path
    host = parts.netloc.rpartition("@")[2]
    return f"jdbc:{scheme}://{host}{parts.path}", parts.username, parts.password


def spark_properties(settings: Settings, show_secrets: bool = True) -> dict[str, str]:
    """``spark.sql.catalog.<name>.*`` for Iceberg's SparkCatalog with S3FileIO (needs iceberg-spark-runtime + iceberg-aws-bundle)."""
    name = settings.catalog_name
    prefix = f"spark.sql.catalog.{name}"
    props = {
        "spark.sql.extensions": "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions",
        prefix: "org.apache.iceberg.spark.SparkCatalog",
        f"{prefix}.warehouse": settings.warehouse_location,
    }
    if settings.catalog_type == "rest":
        props[f"{prefix}.type"] = "rest"
        props[f"{prefix}.uri"] = settings.catalog_url
        for key in ("credential", "token"):
            if secret := getattr(settings, f"catalog_{key}"):
                props[f"{prefix}.{key}"] = secret.get_secret_value()
        if settings.catalog_warehouse_name:
            props[f"{prefix}.warehouse"] = settings.catalog_warehouse_name
    else:
        url, user, password = _jdbc(settings.catalog_url)
        props[f"{prefix}.type"] = "jdbc"
        props[f"{prefix}.uri"] = url
        if user:
            props[f"{prefix}.jdbc.user"] = user
        if password:
            props[f"{prefix}.jdbc.password"] = password
    if settings.warehouse_location.startswith("s3://") or settings.s3_endpoint:
        props[f"{prefix}.io-impl"] = "org.apache.iceberg.aws.s3.S3FileIO"
        props[f"{prefix}.client.region"] = settings.s3_region
        props.update({f"{prefix}.{k}": v for k, v in s3_properties(settings).items() if k != "s3.region"})
    return _redact(props, show_secrets)


def trino_properties(settings: Settings, show_secrets: bool = True) -> dict[str, str]:
    """A Trino ``etc/catalog/<name>.properties`` for its Iceberg connector with native S3."""
    props = {"connector.name": "iceberg"}
    if settings.catalog_type == "rest":
        props["iceberg.catalog.type"] = "rest"
        props["iceberg.rest-catalog.uri"] = settings.catalog_url
        if settings.catalog_credential:
            props["iceberg.rest-catalog.security"] = "OAUTH2"
            props["iceberg.rest-catalog.oauth2.credential"] = settings.catalog_credential.get_secret_value()
        elif settings.catalog_token:
            props["iceberg.rest-catalog.security"] = "OAUTH2"
            props["iceberg.rest-catalog.oauth2.token"] = settings.catalog_token.get_secret_value()
        props["iceberg.rest-catalog.warehouse"] = (
            settings.catalog_warehouse_name or settings.warehouse_location
        )
    else:
        url, user, password = _jdbc(settings.catalog_url)
        props["iceberg.catalog.type"] = "jdbc"
        props["iceberg.jdbc-catalog.driver-class"] = "org.postgresql.Driver"
        props["iceberg.jdbc-catalog.connection-url"] = url
        if user:
            props["iceberg.jdbc-catalog.connection-user"] = user
        if password:
            props["iceberg.jdbc-catalog.connection-password"] = password
        props["iceberg.jdbc-catalog.catalog-name"] = settings.catalog_name
        props["iceberg.jdbc-catalog.default-warehouse-dir"] = settings.warehouse_location
    if settings.warehouse_location.startswith("s3://") or settings.s3_endpoint:
        props["fs.native-s3.enabled"] = "true"
        props["s3.region"] = settings.s3_region
        if settings.s3_endpoint:
            props["s3.endpoint"] = settings.s3_endpoint
            props["s3.path-style-access"] = "true"
        if settings.s3_access_key_id:
            props["s3.aws-access-key"] = settings.s3_access_key_id
        if settings.s3_secret_access_key:
            props["s3.aws-secret-key"] = settings.s3_secret_access_key.get_secret_value()
    return _redact(props, show_secrets)


def engine_properties(settings: Settings, engine: Engine, show_secrets: bool = False) -> dict[str, str]:
    """The properties one engine needs to open K2's catalog (secrets redacted unless asked for)."""
    builders = {"pyiceberg": pyiceberg_properties, "spark": spark_properties, "trino": trino_properties}
    if engine not in builders:
        raise ValueError(f"engine: expected one of {sorted(builders)}, found {engine!r}")
    return builders[engine](settings, show_secrets)
