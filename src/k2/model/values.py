"""Exact value conversions shared by every source and sink.

Decimals travel through K2 as *unscaled* integers (value x 10**8) until they become Arrow
``decimal128(18, 8)`` columns; no float ever touches a price or a quantity.

Example:
    >>> to_unscaled("61837.63000000")
    6183763000000
    >>> str(unscaled_to_decimal(6183763000000))
    '61837.63000000'
    >>> canonical_instrument("BTCUSDT")
    'BTC-USDT'
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from k2.model.schema import PRICE_PRECISION, PRICE_SCALE

_SCALE_FACTOR = 10**PRICE_SCALE
_MAX_UNSCALED = 10**PRICE_PRECISION - 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Longest quote assets first so that BTCUSDT splits as BTC/USDT, not BTCU/SDT.
KNOWN_QUOTE_ASSETS = (
    "FDUSD",
    "USDT",
    "USDC",
    "TUSD",
    "BUSD",
    "USDP",
    "DAI",
    "EUR",
    "GBP",
    "TRY",
    "BRL",
    "AUD",
    "JPY",
    "BTC",
    "ETH",
    "BNB",
    "USD",
    "UAH",
    "ZAR",
    "PLN",
    "RON",
    "ARS",
    "MXN",
    "COP",
    "IDR",
    "XRP",
    "DOGE",
    "SOL",
)


def to_unscaled(value: str | Decimal | int) -> int:
    """Parse a decimal (string, Decimal or int) to its exact unscaled integer at scale 8.

    Raises ValueError when the value has more than 8 significant fractional digits or does not fit
    ``decimal(18, 8)``; K2 never rounds a price silently.

    >>> to_unscaled("0.00000001")
    1
    >>> to_unscaled("1e-9")
    Traceback (most recent call last):
    ...
    ValueError: expected at most 8 fractional digits, found '1e-9'
    """
    if isinstance(value, int) and not isinstance(value, bool):
        unscaled = value * _SCALE_FACTOR
    else:
        text = str(value).strip()  # a bool lands here too and is refused below as not a number
        negative = text.startswith("-")
        body = text[1:] if negative or text.startswith("+") else text
        whole, dot, frac = body.partition(".")
        if not whole.isdigit() and not (whole == "" and dot and frac.isdigit()):
            # Exponents and other spellings go through Decimal, which is exact.
            try:
                dec = Decimal(text)
            except ArithmeticError:
                raise ValueError(f"expected a decimal number, found {value!r}") from None
            if not dec.is_finite():
                raise ValueError(f"expected a finite decimal number, found {value!r}")
            scaled = dec.scaleb(PRICE_SCALE)
            if scaled != scaled.to_integral_value():
                raise ValueError(f"expected at most {PRICE_SCALE} fractional digits, found {value!r}")
            unscaled = int(scaled)
        else:
            if frac and not frac.isdigit():
                raise ValueError(f"expected a decimal number, found {value!r}")
            frac = frac.rstrip("0")
            if len(frac) > PRICE_SCALE:
                raise ValueError(f"expected at most {PRICE_SCALE} fractional digits, found {value!r}")
            unscaled = int(whole or "0") * _SCALE_FACTOR + int(frac.ljust(PRICE_SCALE, "0") or "0")
            if negative:
                unscaled = -unscaled
    if abs(unscaled) > _MAX_UNSCALED:
        raise ValueError(
            f"expected a value that fits decimal({PRICE_PRECISION},{PRICE_SCALE}), found {value!r}"
        )
    return unscaled


def unscaled_to_decimal(unscaled: int) -> Decimal:
    """The exact Decimal for an unscaled integer at scale 8."""
    return Decimal(unscaled).scaleb(-PRICE_SCALE)


def datetime_to_micros(moment: datetime) -> int:
    """Microseconds since the epoch for a timezone-aware datetime.

    >>> datetime_to_micros(datetime(2024, 1, 1, tzinfo=UTC))
    1704067200000000
    """
    if moment.tzinfo is None:
        raise ValueError(f"expected a timezone-aware datetime, found naive {moment.isoformat()}")
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def micros_to_datetime(micros: int) -> datetime:
    """UTC datetime for microseconds since the epoch."""
    from datetime import timedelta

    return _EPOCH + timedelta(microseconds=micros)


def now_micros() -> int:
    """The current UTC time in microseconds since the epoch."""
    return datetime_to_micros(datetime.now(UTC))


#: Venues whose product ids spell the quote asset explicitly as BASE-QUOTE (Coinbase: BTC-USD).
_DASHED_PRODUCT_IDS = ("coinbase",)
#: Venues that quote every instrument in one currency.
_VENUE_CURRENCY = {"asx": "AUD"}


def quote_currency(exchange: str, symbol: str, quote: str | None = None) -> str | None:
    """The currency (quote asset) of a symbol when the source states it; None when it would be a guess.

    Stated: the venue's own quote asset (Binance symbol info, ``quote``), a venue whose product ids are
    ``BASE-QUOTE`` (Coinbase ``BTC-USD`` -> ``USD``), a single-currency venue (ASX -> AUD). Not stated:
    a bare ``BTCUSDT`` (splitting on known quote assets is how :func:`canonical_instrument` names the
    instrument, but it is not the venue saying so); the landing fills those from ``reference.instruments``.

    >>> quote_currency("coinbase", "BTC-USD"), quote_currency("binance", "BTCUSDT"), quote_currency("binance", "BTCUSDT", "usdt")
    ('USD', None, 'USDT')
    """
    if quote:
        return quote.upper()
    venue = exchange.lower()
    if venue in _VENUE_CURRENCY:
        return _VENUE_CURRENCY[venue]
    if venue.startswith(_DASHED_PRODUCT_IDS):
        base, sep, tail = symbol.upper().partition("-")
        if sep and base and tail.isalnum():
            return tail
    return None


def canonical_instrument(symbol: str, base: str | None = None, quote: str | None = None) -> str:
    """Canonical ``BASE-QUOTE`` name of a pair (``BTCUSDT`` -> ``BTC-USDT``, ``BTC-USD`` unchanged).

    Uses the venue's own base/quote when given; otherwise splits on known quote assets. Symbols that
    are not pairs (equity tickers) are returned upper-cased.
    """
    if base and quote:
        return f"{base.upper()}-{quote.upper()}"
    upper = symbol.upper().replace("/", "-").replace("_", "-")
    if "-" in upper:
        return upper
    for quote_asset in sorted(KNOWN_QUOTE_ASSETS, key=len, reverse=True):
        if upper.endswith(quote_asset) and len(upper) > len(quote_asset):
            return f"{upper[: -len(quote_asset)]}-{quote_asset}"
    return upper
