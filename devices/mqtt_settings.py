"""MQTT credentials and TLS, as config: how the gateway proves who it is and checks the
broker. Paths may be relative; ``resolved(base)`` anchors them to the config file's folder."""

from __future__ import annotations

from pathlib import Path
from typing import Self

from pydantic import BaseModel, ConfigDict, SecretStr, model_validator


class MqttTls(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # CA bundle that signed the broker's certificate; none: the system's trust store.
    ca_file: Path | None = None
    # Client certificate (and its key, unless it is in cert_file) for brokers that require one.
    cert_file: Path | None = None
    key_file: Path | None = None
    key_password: SecretStr | None = None
    # Skips only the check that the certificate names the host we dialled; the chain is still
    # verified against ca_file. It exists for field sites that reach the broker by an IP or
    # a LAN name its certificate was not issued for; anyone who can intercept that network
    # can then pose as the broker with any certificate the CA signed. Off by default.
    insecure: bool = False

    @model_validator(mode="after")
    def _key_needs_cert(self) -> Self:
        if (self.key_file or self.key_password) and self.cert_file is None:
            raise ValueError("key_file and key_password need cert_file")
        return self


class MqttSecurity(BaseModel):
    """Username/password and TLS. Credentials may also be in an ``mqtt://user:pass@`` URL,
    but not both: two sources of one secret is how the wrong one ends up in use."""

    model_config = ConfigDict(extra="forbid")

    username: str | None = None
    password: SecretStr | None = None
    # A file holding the password (a Docker/Kubernetes secret), so the YAML can be shared.
    password_file: Path | None = None
    # TLS options; the URL's scheme decides whether TLS is on (mqtts://).
    tls: MqttTls | None = None

    @model_validator(mode="after")
    def _one_password(self) -> Self:
        if self.password is not None and self.password_file is not None:
            raise ValueError("give password or password_file, not both")
        if (self.password is not None or self.password_file is not None) and not self.username:
            raise ValueError("a password needs a username")
        return self

    def resolved(self, base: Path) -> Self:
        """The same settings with relative paths anchored at ``base``."""
        tls = self.tls
        if tls is not None:
            tls = tls.model_copy(
                update={
                    name: base / getattr(tls, name)
                    for name in ("ca_file", "cert_file", "key_file")
                    if getattr(tls, name) is not None
                }
            )
        update: dict[str, object] = {"tls": tls}
        if self.password_file is not None:
            update["password_file"] = base / self.password_file
        return self.model_copy(update=update)

    def secret(self) -> str | None:
        """The password, read from password_file when that is where it is."""
        if self.password_file is not None:
            try:
                return self.password_file.read_text(encoding="utf-8").rstrip("\r\n")
            except OSError as exc:
                raise ValueError(
                    f"mqtt.password_file {self.password_file}: cannot read: {exc.strerror}"
                ) from exc
        return self.password.get_secret_value() if self.password is not None else None
