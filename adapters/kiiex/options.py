"""The keys only a KIIEX connection reads: where its API lives and how it logs in."""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Annotated

from gateway.schema import (
    Secret,
    Section,
    about,
    header_name,
    invalid,
    path_prefix,
    required,
    settle,
    unused,
    url,
)


@dataclass(frozen=True)
class PasswordLogin:
    username: str
    password: str

    def payload(self) -> dict[str, str]:
        return {"UserName": self.username, "Password": self.password}


@dataclass(frozen=True)
class ApiKeyLogin:
    api_key: str
    api_secret: str
    user_id: int

    def payload(self) -> dict[str, str]:
        # APEX 3.3+ sends UserId and Nonce as strings; the signature is over their concatenation.
        nonce = str(time.time_ns())
        message = f"{nonce}{self.user_id}{self.api_key}".encode()
        signature = hmac.new(self.api_secret.encode(), message, hashlib.sha256).hexdigest()
        return {
            "APIKey": self.api_key,
            "Signature": signature,
            "UserId": str(self.user_id),
            "Nonce": nonce,
        }


class KiiexOptions(Section, frozen=True, rename={
    "username": "username_env", "password": "password_env",
    "api_key": "api_key_env", "api_secret": "api_secret_env",
}):  # fmt: skip
    """`[connections.NAME]` keys with `upstream = "kiiex"`."""

    base_url: Annotated[str, about("`http(s)://host[:port]` of the APEX HTTP API")]
    path_prefix: Annotated[
        str, about("KIIEX docs show `/ap`, AlphaPoint venues `/AP` (unconfirmed which)")
    ] = "/ap"
    token_header: Annotated[str, about("header carrying the session token")] = "aptoken"
    token_field: Annotated[
        str, about("field of the `AuthenticateUser` answer holding the token")
    ] = "SessionToken"
    username: Annotated[Secret | None, about("username login: its environment variable")] = None
    password: Annotated[Secret | None, about("password login: its environment variable")] = None
    api_key: Annotated[
        Secret | None, about("API-key login instead (HMAC-SHA256): its environment variable")
    ] = None
    api_secret: Annotated[Secret | None, about("the API secret's environment variable")] = None
    user_id: Annotated[int | None, about("with API-key login: the user the key belongs to")] = None

    def __post_init__(self) -> None:
        settle(self, "base_url", url("base_url", self.base_url))
        settle(self, "path_prefix", path_prefix("path_prefix", self.path_prefix))
        header_name("token_header", self.token_header)
        if not self.token_field:
            raise invalid("token_field", "name the answer's field that holds the token")
        if self.user_id is not None and not 1 <= self.user_id <= 2**31 - 1:
            raise invalid("user_id", f"must be from 1 to {2**31 - 1}, got {self.user_id}")
        if self.api_key is None:
            unused("api_secret_env", self.api_secret, "only with api_key_env")
            unused("user_id", self.user_id, "only with api_key_env")
        else:
            for key, value in (("username_env", self.username), ("password_env", self.password)):
                unused(key, value, "not with api_key_env: give one login")
        self.login  # noqa: B018 - the chosen login must be complete

    @property
    def auth(self) -> str:
        """The kind of login, for `cancelgw check` (never a secret)."""
        if self.api_key is not None:
            return f"API-key login (HMAC-SHA256), user {self.user_id}"
        return "username and password login"

    @property
    def login(self) -> PasswordLogin | ApiKeyLogin:
        if self.api_key is not None:
            return ApiKeyLogin(
                self.api_key,
                required("api_secret_env", self.api_secret),
                required("user_id", self.user_id),
            )
        return PasswordLogin(
            required("username_env", self.username), required("password_env", self.password)
        )
