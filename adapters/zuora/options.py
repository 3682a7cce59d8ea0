"""The keys only a Zuora connection reads: its host (a data-center preset or a URL), its
API prefix, its credentials (OAuth on the REST hosts, credential headers on zconnect) and
its entity headers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from msgspec import field

from gateway.schema import (
    Seconds,
    Secret,
    Section,
    about,
    header_value,
    invalid,
    path_prefix,
    required,
    settle,
    unused,
    url,
)

OAUTH, LEGACY = "oauth", "legacy"

# Each data center has a REST host (OAuth only) and an older Reporting host (legacy
# credential headers only); a preset names one host, and so the credentials it takes.
_HOSTS = {
    "us-production": ("rest.zuora.com", "zconnect.zuora.com"),
    "us-sandbox": ("rest.apisandbox.zuora.com", "zconnectsandbox.zuora.com"),
    "us-cloud-production": ("rest.na.zuora.com", "zconnect.na.zuora.com"),
    "us-cloud-sandbox": ("rest.sandbox.na.zuora.com", "zconnect.sandbox.na.zuora.com"),
    "us-central-sandbox": ("rest.test.zuora.com", "zconnect-services0001.test.zuora.com"),
    "eu-production": ("rest.eu.zuora.com", "zconnect.eu.zuora.com"),
    "eu-sandbox": ("rest.sandbox.eu.zuora.com", "zconnect.sandbox.eu.zuora.com"),
    "eu-central-sandbox": ("rest.test.eu.zuora.com", "zconnect-services0002.test.eu.zuora.com"),
    "apac-production": ("rest.ap.zuora.com", "zconnect-prod05.ap.zuora.com"),
    "apac-sandbox": ("rest.test.ap.zuora.com", "zconnect-services0003.test.ap.zuora.com"),
}
DATA_CENTERS: dict[str, tuple[str, str]] = {
    **{name: (f"https://{rest}", OAUTH) for name, (rest, _) in _HOSTS.items()},
    **{f"{name}-zconnect": (f"https://{old}", LEGACY) for name, (_, old) in _HOSTS.items()},
}
"""Preset name -> (base URL, the credentials that host accepts)."""


@dataclass(frozen=True)
class OAuthClient:
    """OAuth 2.0 client credentials, for the REST hosts."""

    client_id: str
    client_secret: str
    refresh_margin: float


@dataclass(frozen=True)
class LegacyCredentials:
    """The zconnect hosts' credential headers, plus an optional entity header."""

    headers: dict[str, str]


_OAUTH_KEYS = ("client_id_env", "client_secret_env")
_LEGACY_KEYS = ("api_access_key_id_env", "api_secret_access_key_env")
# The keys one credential family reads, by field: the other family refuses them.
_OAUTH_ONLY = {
    "client_secret": "client_secret_env",
    "token_refresh_margin": "token_refresh_margin_seconds",
    "entity_ids": "entity_ids",
}
_LEGACY_ONLY = {
    "api_secret_access_key": "api_secret_access_key_env",
    "entity_id": "entity_id",
    "entity_name": "entity_name",
}
_ENV = "its environment variable"


class ZuoraOptions(Section, frozen=True, rename={
    "client_id": "client_id_env", "client_secret": "client_secret_env",
    "api_access_key_id": "api_access_key_id_env",
    "api_secret_access_key": "api_secret_access_key_env",
}):  # fmt: skip
    """`[connections.NAME]` keys with `upstream = "zuora"`."""

    data_center: Annotated[
        str | None,
        about(
            "a preset host: a data center's REST host (OAuth), or the same name plus "
            "`-zconnect` for its Reporting host (legacy headers); hosts in UPSTREAMS.md"
        ),
    ] = None
    base_url: Annotated[
        str | None, about("an explicit host instead of `data_center` (one of the two)")
    ] = None
    api_prefix: Annotated[str, about("Reporting path on the host")] = "/api/rest/v1"
    client_id: Annotated[Secret | None, about(f"OAuth client id (REST hosts): {_ENV}")] = None
    client_secret: Annotated[Secret | None, about(f"OAuth client secret: {_ENV}")] = None
    token_refresh_margin: Annotated[
        Seconds | None, about("OAuth only: refresh the token this long before it expires (60)")
    ] = field(default=None, name="token_refresh_margin_seconds")
    api_access_key_id: Annotated[
        Secret | None, about(f"instead of OAuth (zconnect hosts), the `apiAccessKeyId`: {_ENV}")
    ] = None
    api_secret_access_key: Annotated[
        Secret | None, about(f"the `apiSecretAccessKey` header: {_ENV}")
    ] = None
    entity_id: Annotated[
        str | None, about("with the legacy headers: a tenant's `entityId` header")
    ] = None
    entity_name: Annotated[str | None, about("or its `entityName` header (never both)")] = None
    entity_ids: Annotated[str | None, about("OAuth only: sent as `Zuora-Entity-Ids` when set")] = (
        None
    )

    def __post_init__(self) -> None:
        oauth = self.client_id is not None
        if oauth == (self.api_access_key_id is not None):
            raise invalid(
                "client_id_env",
                "give either client_id_env and client_secret_env (OAuth) or "
                "api_access_key_id_env and api_secret_access_key_env (zconnect hosts)",
            )
        settle(self, "base_url", self._base_url(OAUTH if oauth else LEGACY))
        settle(self, "api_prefix", path_prefix("api_prefix", self.api_prefix))
        if not self.api_prefix:
            raise invalid("api_prefix", f"must start with '/', got {self.api_prefix!r}")
        for key in ("entity_id", "entity_name", "entity_ids"):
            header_value(key, getattr(self, key) or "")
        other = _LEGACY_ONLY if oauth else _OAUTH_ONLY
        for name, key in other.items():
            unused(
                key,
                getattr(self, name),
                f"only with {'zconnect' if oauth else 'OAuth'} credentials",
            )
        self.credentials  # noqa: B018 - the chosen family's keys are complete

    def _base_url(self, family: str) -> str:
        if (self.data_center is None) == (self.base_url is None):
            raise invalid("data_center", "give exactly one of data_center, base_url")
        if self.data_center is None:
            return url("base_url", self.base_url or "")
        if self.data_center not in DATA_CENTERS:
            raise invalid(
                "data_center", f"must be one of {sorted(DATA_CENTERS)}, got {self.data_center!r}"
            )
        base_url, accepted = DATA_CENTERS[self.data_center]
        if family != accepted:
            keys = " and ".join(_OAUTH_KEYS if accepted == OAUTH else _LEGACY_KEYS)
            raise invalid("data_center", f"this host takes {keys}")
        return base_url

    @property
    def auth(self) -> str:
        """The kind of credentials, for `cancelgw check` (never a secret)."""
        if self.client_id is not None:
            return "OAuth 2.0 client credentials"
        return "zconnect credential headers" + (
            " with an entity" if self.entity_id or self.entity_name else ""
        )

    @property
    def credentials(self) -> OAuthClient | LegacyCredentials:
        if self.client_id is not None:
            return OAuthClient(
                self.client_id,
                required("client_secret_env", self.client_secret),
                60.0 if self.token_refresh_margin is None else self.token_refresh_margin,
            )
        key_id = required("api_access_key_id_env", self.api_access_key_id)
        secret = required("api_secret_access_key_env", self.api_secret_access_key)
        headers = {
            "apiAccessKeyId": header_value("api_access_key_id_env", key_id),
            "apiSecretAccessKey": header_value("api_secret_access_key_env", secret),
        }
        if self.entity_id and self.entity_name:
            raise invalid("entity_name", "give entity_id or entity_name, not both")
        if self.entity_id:
            headers["entityId"] = self.entity_id
        if self.entity_name:
            headers["entityName"] = self.entity_name
        return LegacyCredentials(headers)


def _key(name: str) -> str:
    return {"token_refresh_margin": "token_refresh_margin_seconds"}.get(name, name)
