"""The server's TLS context, from Gunicorn's TLS settings: certfile/keyfile, ssl_version (the
lowest protocol a client may use), ciphers, cert_reqs and ca_certs (client certificates).

Built once in the master at start, so a bad certificate or cipher string stops the start with
a message instead of failing in every forked worker.
"""

from __future__ import annotations

import ssl
from typing import Any

from arbiter.config.convert import SSL_VERSIONS
from arbiter.errors import ConfigError


def server_context(cfg: Any) -> ssl.SSLContext:
    """A server-side SSLContext for `cfg` (which must have a certfile): the `ssl_context` hook's,
    when a Python config defines one (Gunicorn's `ssl_context(config, default_ssl_context_factory)`),
    else the one the settings describe.

    Raises:
        ConfigError: a file cannot be read, or a setting is refused by OpenSSL, or the hook
            returned something else than an SSLContext; the message names the setting.
    """
    hook = cfg.hook("ssl_context") if hasattr(cfg, "hook") else None
    if hook is None:
        return _from_settings(cfg)
    context = hook(cfg, lambda: _from_settings(cfg))
    if not isinstance(context, ssl.SSLContext):
        raise ConfigError(f"the ssl_context hook returned {type(context).__name__}, not an ssl.SSLContext")
    return context


def _from_settings(cfg: Any) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cfg.certfile, cfg.keyfile)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load TLS certificate certfile={cfg.certfile!r} keyfile={cfg.keyfile!r}: "
                          f"{exc}") from None
    minimum = SSL_VERSIONS[cfg.ssl_version]
    if minimum:
        context.minimum_version = ssl.TLSVersion[minimum]
    if cfg.ciphers:
        try:
            context.set_ciphers(cfg.ciphers)
        except ssl.SSLError:
            raise ConfigError(f"--ciphers {cfg.ciphers!r}: OpenSSL knows none of these ciphers") from None
    context.verify_mode = ssl.VerifyMode(cfg.cert_reqs)
    if cfg.ca_certs:
        try:
            context.load_verify_locations(cfg.ca_certs)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"--ca-certs {cfg.ca_certs!r}: cannot load the CA certificates: {exc}") from None
    elif cfg.cert_reqs != ssl.CERT_NONE:
        raise ConfigError(f"--cert-reqs {cfg.cert_reqs} asks for client certificates: name the CAs that sign "
                          "them with --ca-certs")
    return context
