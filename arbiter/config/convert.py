"""Converters from a raw setting value (a string from the command line or the environment, or a
TOML/Python value) to its typed value. Each raises `ValueError` whose text says what was
expected ("an integer of at least 1"), which the loaders turn into an error naming the source.
"""

from __future__ import annotations

import logging.handlers
import re
import socket
from collections.abc import Callable
from typing import Any

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip(), 0)
        except ValueError:
            pass
    raise ValueError("an integer")


def to_positive_int(value: Any) -> int:
    number = to_int(value)
    if number < 1:
        raise ValueError("an integer of at least 1")
    return number


def to_non_negative_int(value: Any) -> int:
    number = to_int(value)
    if number < 0:
        raise ValueError("an integer of at least 0")
    return number


def to_seconds(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("a number of seconds")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError("a number of seconds") from None
    if number < 0:
        raise ValueError("a number of seconds of at least 0")
    return number


_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f", ""}


def to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError("true or false")


def to_str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("a string")
    return value


def to_optional_str(value: Any) -> str | None:
    if value is None:
        return None
    return to_str(value)


def to_str_list(value: Any) -> tuple[str, ...]:
    """A list of strings; a single string is one item (as Gunicorn's `bind = "x"` is)."""
    if isinstance(value, str):
        return (value,)
    if isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value):
        return tuple(value)
    raise ValueError("a string or a list of strings")


def to_comma_list(value: Any) -> tuple[str, ...]:
    """Comma-separated in a string (`"10.0.0.1,10.0.0.2"`), or a list."""
    if isinstance(value, str):
        return tuple(item.strip() for item in value.split(",") if item.strip())
    return to_str_list(value)


def to_refork_thresholds(value: Any) -> tuple[int, ...]:
    """`50,100,1000` (or a list): request counts, each above the one before; empty means off."""
    items = to_comma_list(value) if isinstance(value, str) else value
    if isinstance(items, int) and not isinstance(items, bool):
        items = [items]
    if not isinstance(items, (list, tuple)):
        raise ValueError("request counts separated by commas, such as 50,100,1000")
    try:
        numbers = tuple(to_int(item) for item in items)
    except ValueError:
        numbers = (0,)
    if any(n <= 0 for n in numbers) or any(b <= a for a, b in zip(numbers, numbers[1:], strict=False)):
        raise ValueError("positive request counts, each larger than the one before (50,100,1000)")
    return numbers


def to_umask(value: Any) -> int:
    """An octal mode: `0o22`, `"022"` and `"0o22"` all mean the same, as in Gunicorn."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str):
        text = value.strip().lower().removeprefix("0o")
        try:
            number = int(text, 8)
        except ValueError:
            raise ValueError("an octal mode such as 022") from None
    else:
        raise ValueError("an octal mode such as 022")
    if not 0 <= number <= 0o777:
        raise ValueError("an octal mode between 000 and 777")
    return number


def to_log_level(value: Any) -> str:
    text = to_str(value).strip().lower()
    if text == "warn":
        text = "warning"
    if text not in LOG_LEVELS:
        raise ValueError("one of " + ", ".join(LOG_LEVELS))
    return text


def to_hook(value: Any) -> Callable[..., Any] | None:
    if value is None:
        return None
    if callable(value):
        hook: Callable[..., Any] = value
        return hook
    raise ValueError("a function")


def to_env_pairs(value: Any) -> tuple[str, ...]:
    items = to_str_list(value)
    for item in items:
        if "=" not in item:
            raise ValueError(f"KEY=VALUE pairs (got {item!r})")
    return items


def to_positive_seconds(value: Any) -> float:
    number = to_seconds(value)
    if number <= 0:
        raise ValueError("a number of seconds above 0")
    return number


def to_optional_bool(value: Any) -> bool | None:
    return None if value is None else to_bool(value)


def to_dict(value: Any) -> dict[str, Any]:
    """A mapping (a Python config's dict, a TOML table), copied."""
    if isinstance(value, dict):
        return dict(value)
    raise ValueError("a dictionary")


def choice(*choices: str) -> Callable[[Any], str]:
    """A converter accepting one of `choices` (case-insensitive), returned lower-case."""

    def to_choice(value: Any) -> str:
        text = value.strip().lower() if isinstance(value, str) else None
        if text not in choices:
            raise ValueError("one of " + ", ".join(choices))
        return text

    return to_choice


to_proxy_protocol = choice("off", "v1", "v2", "auto")
to_memory_measure = choice("uss", "pss", "rss")

# `--ssl-version` names (Gunicorn's, from the ssl module's PROTOCOL_* constants), by the lowest
# TLS version each lets a client use. The old protocols are refused: OpenSSL itself refuses them
# at its default security level, so accepting the name would only fail later, per connection.
SSL_VERSIONS = {"tls": "", "tls_server": "", "sslv23": "", "tlsv1_2": "TLSv1_2", "tlsv1_3": "TLSv1_3"}
_SSL_NUMBERS = {"2": "tls", "17": "tls_server", "5": "tlsv1_2"}  # ssl.PROTOCOL_* values, as Gunicorn allows


def to_ssl_version(value: Any) -> str:
    text = str(value).strip().lower().removeprefix("protocol_")
    text = _SSL_NUMBERS.get(text, text)
    if text not in SSL_VERSIONS:
        raise ValueError("one of TLS, TLS_SERVER, SSLv23, TLSv1_2, TLSv1_3 (SSLv3, TLSv1 and TLSv1_1 are insecure)")
    return text


def to_cert_reqs(value: Any) -> int:
    """0 (no client certificate), 1 (optional) or 2 (required), as ssl.CERT_* and Gunicorn."""
    names = {"cert_none": 0, "cert_optional": 1, "cert_required": 2}
    if isinstance(value, str) and value.strip().lower() in names:
        return names[value.strip().lower()]
    number = to_int(value)
    if number not in (0, 1, 2):
        raise ValueError("0 (none), 1 (optional) or 2 (required)")
    return number


def syslog_address(text: str) -> tuple[str | tuple[str, int], socket.SocketKind | None]:
    """`unix://PATH[#dgram|#stream]`, `udp://HOST:PORT` or `tcp://HOST:PORT`, as Gunicorn takes
    them, to SysLogHandler's (address, socket type).

    Raises:
        ValueError: the text is none of these.
    """
    scheme, sep, rest = text.partition("://")
    if not sep or scheme not in ("unix", "udp", "tcp") or not rest:
        raise ValueError("unix://PATH, udp://HOST:PORT or tcp://HOST:PORT")
    if scheme == "unix":
        path, _, kind = rest.partition("#")
        # None lets SysLogHandler try a datagram socket, then a stream one, as Gunicorn does.
        return path, {"dgram": socket.SOCK_DGRAM, "stream": socket.SOCK_STREAM}.get(kind)
    host, colon, port = rest.rpartition(":")
    if not colon or not port.isdigit():
        host, port = rest, "514"
    return (host.strip("[]"), int(port)), socket.SOCK_DGRAM if scheme == "udp" else socket.SOCK_STREAM


def to_syslog_addr(value: Any) -> str:
    text = to_str(value).strip()
    syslog_address(text)
    return text


to_syslog_facility = choice(*sorted(logging.handlers.SysLogHandler.facility_names))


_SIZE_UNITS = {"": 1 << 20, "B": 1, "K": 1 << 10, "KB": 1 << 10, "M": 1 << 20, "MB": 1 << 20,
               "G": 1 << 30, "GB": 1 << 30, "KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30}


def to_size(value: Any, bare: int = 1 << 20) -> int:
    """A size in bytes: a bare number counts `bare` bytes (MiB, unless the key's tradition says
    otherwise: Supervisor's logfile_maxbytes counts bytes); `512MB`, `1GB`, `200KB` use 1024-based
    units, as Supervisor and superlance's memmon read them. The one parser for every size a user
    gives Arbiter."""
    what = "a size such as 512MB, 1GB or a number of MiB" if bare == 1 << 20 else \
        "a byte size such as 1024, 500KB, 50MB or 1GB"
    if isinstance(value, bool):
        raise ValueError(what)
    if isinstance(value, (int, float)):
        number, unit = float(value), ""
    elif isinstance(value, str):
        text = value.strip().upper().replace(" ", "")
        digits = text.rstrip("KMGIB")
        number_text, unit = digits, text[len(digits):]
        try:
            number = float(number_text)
        except ValueError:
            raise ValueError(what) from None
    else:
        raise ValueError(what)
    if unit not in _SIZE_UNITS:
        raise ValueError("a size with a unit of B, KB, MB or GB")
    if number < 0:
        raise ValueError("a size of at least 0")
    return int(number * (_SIZE_UNITS[unit] if unit else bare))


def statsd_address(text: str) -> tuple[socket.AddressFamily, Any]:
    """`unix://PATH` or `HOST:PORT` (`[v6]:PORT`; the port defaults to 8125), as Gunicorn takes it.

    Raises:
        ValueError: neither form.
    """
    if text.startswith("unix://"):
        path = text[len("unix://"):]
        if not path:
            raise ValueError("unix://PATH or HOST:PORT")
        return socket.AF_UNIX, path
    match = re.fullmatch(r"\[(?P<v6>[0-9a-fA-F:.]+)\](?::(?P<p6>\d+))?|(?P<host>[^:\[\]]+)(?::(?P<port>\d+))?", text)
    if match is None:
        raise ValueError("unix://PATH or HOST:PORT")
    if match["v6"]:
        return socket.AF_INET6, (match["v6"], int(match["p6"] or 8125))
    return socket.AF_INET, (match["host"], int(match["port"] or 8125))


def to_statsd_host(value: Any) -> str | None:
    if value is None:
        return None
    text = to_str(value).strip()
    statsd_address(text)
    return text


SECURE_SCHEME_HEADERS = {"X-FORWARDED-PROTOCOL": "ssl", "X-FORWARDED-PROTO": "https", "X-FORWARDED-SSL": "on"}


def to_scheme_headers(value: Any) -> dict[str, str]:
    """Gunicorn's `secure_scheme_headers`, limited to its default headers and values (the ones the
    HTTP layer knows); names are case-insensitive."""
    items = to_dict(value)
    found = {str(name).upper(): str(text) for name, text in items.items()}
    if any(SECURE_SCHEME_HEADERS.get(name) != text for name, text in found.items()):
        raise ValueError("some of Gunicorn's default headers and values: "
                         + ", ".join(f"{k}: {v}" for k, v in SECURE_SCHEME_HEADERS.items()))
    return found
