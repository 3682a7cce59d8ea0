"""How the TOML configuration is declared and read: every table is a `Section` (a msgspec
Struct: typed, immutable, unknown keys refused), converted with errors that name the key
(`connections.billing-eu.timeout_seconds: must be > 0`), and rendered into the reference in
docs/CONFIGURATION.md from the same declarations.

A section checks what types cannot say in `__post_init__`, raising `invalid(key, why)`; a
secret is never in the file: a `Secret` field names the environment variable that holds it.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, TypeVar, get_args, get_origin
from urllib.parse import urlsplit

import msgspec
from msgspec import Meta

S = TypeVar("S", bound="Section")
T = TypeVar("T")


class ConfigError(Exception):
    """The configuration cannot be used; the message names the key."""


class Section(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One table of the file: typed keys with their defaults; a typo is an error, never a
    silent default."""

    derived: ClassVar[frozenset[str]] = frozenset()
    """Fields the reader or `__post_init__` fills in: never keys of the file."""


class Secret(str):
    """A secret's value. In the file, the key (`password_env`) names the environment
    variable that holds it; the value never appears in a repr."""

    def __repr__(self) -> str:
        return "Secret('[redacted]')"


Seconds = Annotated[float, Meta(gt=0, le=10**9)]  # finite: `inf` is no duration
Count = Annotated[int, Meta(ge=1, le=2**31 - 1)]
Fraction = Annotated[float, Meta(ge=0, le=1)]


def about(text: str, *, default: str = "") -> Meta:
    """A key's meaning, for the rendered reference: `Annotated[Seconds, about("...")]`;
    `default` says in words a default that another key decides."""
    return Meta(description=text, extra={"default": default} if default else None)


def invalid(key: str, why: str) -> ValueError:
    """What a section's `__post_init__` raises: the reader puts the table's path before `key`."""
    return ValueError(f"{key}: {why}")


@dataclass
class Reading:
    """One reading of a file: where secrets come from, and every secret value it read (so
    the gateway can scrub them from whatever upstream text it passes on)."""

    environ: Mapping[str, str]
    secrets: list[str] = field(default_factory=list)

    def secret(self, variable: object) -> Secret:
        if not isinstance(variable, str) or not variable:
            raise TypeError("expected the name of an environment variable")
        value = self.environ.get(variable, "")
        if not value:
            raise ValueError(f"environment variable {variable} is not set")
        self.secrets.append(value)
        return Secret(value)

    def section(self, data: object, schema: type[S], path: str) -> S:
        """`data` (a TOML table) as `schema`, or ConfigError naming the key at fault."""
        if isinstance(data, Mapping) and (given := sorted(schema.derived & data.keys())):
            raise ConfigError(f"{path}.{given[0]}: unknown key")
        try:
            return msgspec.convert(data, schema, dec_hook=self._decode)
        except msgspec.ValidationError as error:
            raise ConfigError(_named(str(error), path)) from None

    def _decode(self, kind: type, value: object) -> object:
        if kind is Secret:
            return self.secret(value)
        raise NotImplementedError(kind)


_AT = re.compile(r"^(?P<what>.*?)(?: - at `\$(?P<where>[^`]*)`)?$", re.S)
_KEYED = re.compile(r"^(?P<key>[A-Za-z0-9_]+): (?P<why>.*)$", re.S)
_KINDS = {"int": "an integer", "float": "a number", "str": "a string", "bool": "a boolean",
          "object": "a table", "array": "a list", "null": "nothing"}  # fmt: skip


def _named(message: str, path: str) -> str:
    """msgspec's `Expected `int` >= 1 - at `$.retry.max_attempts`` as
    `<path>.retry.max_attempts: must be >= 1`."""
    match = _AT.match(message)
    what, where = (match["what"], match["where"] or "") if match else (message, "")
    keys = [path] if path else []
    for part in re.split(r"\.", where):  # `retry.max_attempts`, `jobs[0]`
        if part:
            keys.append(part)
    if keyed := _KEYED.match(what):  # a section's own check: `key: why`
        keys.append(keyed["key"])
        what = keyed["why"]
    elif found := re.match(r"Object (contains unknown|missing required) field `(\w+)`", what):
        keys.append(found[2])
        what = "unknown key" if found[1] == "contains unknown" else "is required"
    else:
        what = _worded(what)
    return f"{'.'.join(keys) or 'config'}: {what}"


def _worded(what: str) -> str:
    if bound := re.match(r"Expected `\w+` ([<>=]+) (\S+)$", what):
        number = float(bound[2])
        return f"must be {bound[1]} {int(number) if number.is_integer() else number}"
    if kinds := re.match(r"Expected `([\w |]+)`, got `(\w+)`$", what):
        wanted = " or ".join(_KINDS.get(k.strip(), k.strip()) for k in kinds[1].split("|"))
        return f"expected {wanted}, got {_KINDS.get(kinds[2], kinds[2])}"
    return what[:1].lower() + what[1:]


def required(key: str, value: T | None) -> T:
    """A key one choice of the section makes required (`password_env` with `username_env`)."""
    if value is None:
        raise invalid(key, "is required")
    return value


def url(key: str, value: str) -> str:
    """An http(s) base URL, without its trailing slash; paths are appended to it."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise invalid(key, f"must be an http(s) URL, got {value!r}")
    if parts.query or parts.fragment or value.endswith(("?", "#")):
        raise invalid(key, f"no query or fragment, got {value!r}")  # it would swallow paths
    return value.rstrip("/")


def address(key: str, value: str, *, optional: bool = False) -> str:
    """A `host:port`; port 0 asks the OS for a free port; "" turns an optional one off."""
    if optional and not value:
        return value
    host, _, port = value.rpartition(":")
    if not host or not (port.isascii() and port.isdigit()) or int(port) > 65535:
        raise invalid(key, f"expected host:port, got {value!r}")
    return value


def choice(key: str, value: str, choices: Collection[str]) -> str:
    if value not in choices:
        raise invalid(key, f"must be one of {sorted(choices)}, got {value!r}")
    return value


def path_prefix(key: str, value: str) -> str:
    """A path every request's path starts with: "" or `/...`, without its trailing slash."""
    prefix = value.rstrip("/")
    if prefix and not prefix.startswith("/"):
        raise invalid(key, f"must start with '/', got {value!r}")
    return prefix


_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def header_name(key: str, value: str) -> str:
    """A header's name: one HTTP token (RFC 9110), or no request could carry it."""
    if not _HEADER_NAME.fullmatch(value):
        raise invalid(key, f"must be an HTTP header name, got {value!r}")
    return value


def unused(key: str, value: object, why: str) -> None:
    """Refuses a key the section's other choices leave without effect."""
    if value is not None:
        raise invalid(key, why)


def header_value(key: str, value: str) -> str:
    """A value sent in a header must be printable ASCII, or no request could carry it."""
    if not (value.isascii() and value.isprintable()):
        raise invalid(key, "must be printable ASCII (it is sent in a header)")
    return value


def settle(section: Section, key: str, value: object) -> None:
    """Sets a checked or normalized value on a section while `__post_init__` runs."""
    msgspec.structs.force_setattr(section, key, value)


@dataclass(frozen=True)
class KeyDoc:
    """One row of the rendered reference."""

    key: str
    default: str
    meaning: str


def keys_of(schema: type[Section], prefix: str = "") -> Iterator[KeyDoc]:
    """Every key of a section, nested sections flattened (`retry.max_attempts`), in order."""
    for info in msgspec.structs.fields(schema):
        if info.name in schema.derived:
            continue
        key = prefix + info.encode_name
        kind, metas = _unwrapped(info.type)
        if isinstance(kind, type) and issubclass(kind, Section):
            yield from keys_of(kind, key + ".")
            continue
        meaning = " ".join(m.description for m in metas if m.description)
        worded = [m.extra["default"] for m in metas if m.extra and "default" in m.extra]
        default = worded[0] if worded else _default(info)
        yield KeyDoc(key, default, meaning + _bounds(metas))


def _unwrapped(kind: Any) -> tuple[Any, list[Meta]]:
    metas: list[Meta] = []
    while get_origin(kind) is Annotated:
        kind, *extra = get_args(kind)
        metas += [m for m in extra if isinstance(m, Meta)]
    return kind, metas


def _default(info: msgspec.structs.FieldInfo) -> str:
    if info.required:
        return "required"
    value = info.default if info.default is not msgspec.NODEFAULT else info.default_factory()
    if value is None or value == "" or (isinstance(value, tuple | frozenset) and not value):
        return "—"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, Section):
        return "—"
    return f"`{value}`"


def _bounds(metas: list[Meta]) -> str:
    signs = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    bounds = [f"{sign} {getattr(m, name)}" for m in metas for name, sign in signs.items()
              if getattr(m, name) is not None]  # fmt: skip
    limits = [b for b in bounds if b not in ("<= 2147483647",)]
    return f" ({', '.join(limits)})" if limits else ""


def reference_table(rows: Iterator[KeyDoc]) -> str:
    lines = ["| key | default | meaning |", "|---|---|---|"]
    lines += [f"| `{row.key}` | {row.default} | {row.meaning} |" for row in rows]
    return "\n".join(lines) + "\n"
