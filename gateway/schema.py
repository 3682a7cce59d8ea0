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
from pathlib import Path
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


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MAX_SECRET_FILE = 64 * 1024


@dataclass(frozen=True)
class _FromFile:
    """A secret already read from its `*_file` key, on its way to the Secret field."""

    value: str


@dataclass
class Reading:
    """One reading of a file: where secrets come from (the environment, or files), and
    every secret value it read (so the gateway can scrub them from whatever upstream text
    it passes on).

    Every `X_env` key of a `Secret` field has an `X_file` twin: exactly one of the two may
    be given. A file's one trailing newline is dropped (as a Kubernetes Secret volume or a
    Vault agent writes it); an empty secret is refused, naming its key."""

    environ: Mapping[str, str]
    secrets: list[str] = field(default_factory=list)

    def secret(self, variable: object) -> Secret:
        """The value of the environment variable `variable` names."""
        if not isinstance(variable, str) or not _ENV_NAME.fullmatch(variable):
            # Never echoed: a secret pasted here by mistake must not reach a log.
            raise TypeError("expected the name of an environment variable (letters, digits, _)")
        if variable not in self.environ:
            raise ValueError(f"environment variable {variable} is not set")
        return self._kept(self.environ[variable], f"environment variable {variable}")

    def secret_file(self, path: object) -> Secret:
        """The content of the file `path` names, less one trailing newline: a regular file
        of at most 64 KiB of UTF-8 text (what is wrong with it is said, never what it holds)."""
        if not isinstance(path, str) or not path:
            raise TypeError("expected the path of a file")
        try:
            file = Path(path)
            if file.exists() and not file.is_file():  # a FIFO would hold the start forever
                raise ValueError(f"{path} is not a regular file")
            if file.stat().st_size > _MAX_SECRET_FILE:
                raise ValueError(f"{path} holds more than {_MAX_SECRET_FILE} bytes")
            data = file.read_bytes()
        except OSError as error:
            raise ValueError(f"cannot read {path}: {error.strerror}") from None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"file {path} is not UTF-8 text") from None
        if "\0" in text:
            raise ValueError(f"file {path} holds a NUL byte")
        return self._kept(text.removesuffix("\n").removesuffix("\r"), f"file {path}")

    def _kept(self, value: str, where: str) -> Secret:
        if not value:
            raise ValueError(f"{where} is set but empty")
        self.secrets.append(value)
        return Secret(value)

    def section(self, data: object, schema: type[S], path: str) -> S:
        """`data` (a TOML table) as `schema`, or ConfigError naming the key at fault."""
        if isinstance(data, Mapping) and (given := sorted(schema.derived & data.keys())):
            raise ConfigError(f"{path}.{given[0]}: unknown key")
        if isinstance(data, Mapping):
            data = self._files_read(data, schema, path)
        try:
            return msgspec.convert(data, schema, dec_hook=self._decode)
        except msgspec.ValidationError as error:
            raise ConfigError(_named(str(error), path)) from None

    def _files_read(
        self, data: Mapping[str, Any], schema: type[Section], path: str
    ) -> dict[str, Any]:
        """`data` with each `X_file` key read, and put in place of its `X_env` twin."""
        read = dict(data)
        for env_key in secret_keys(schema):
            file_key = twin(env_key)
            if file_key not in read:
                continue
            if env_key in read:
                raise ConfigError(f"{path}.{file_key}: give {env_key} or {file_key}, not both")
            try:
                read[env_key] = _FromFile(self.secret_file(read.pop(file_key)))
            except (TypeError, ValueError) as error:
                raise ConfigError(f"{path}.{file_key}: {error}") from None
        return read

    def _decode(self, kind: type, value: object) -> object:
        if kind is Secret:
            return Secret(value.value) if isinstance(value, _FromFile) else self.secret(value)
        raise NotImplementedError(kind)


def twin(env_key: str) -> str:
    """The `_file` key beside a secret's `_env` key."""
    return env_key.removesuffix("_env") + "_file"


def secret_keys(schema: type[Section]) -> list[str]:
    """The `_env` keys of a section's Secret fields."""
    return [
        info.encode_name
        for info in msgspec.structs.fields(schema)
        if _is_secret(_unwrapped(info.type)[0])
    ]


def _is_secret(kind: Any) -> bool:
    """A Secret field's type: `Secret`, or `Secret | None`."""
    return kind is Secret or Secret in get_args(kind)


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
    if parts.username is not None:  # never echoed: it holds a credential
        raise invalid(key, "no user info: credentials go in the *_env or *_file keys")
    try:
        parts.port  # noqa: B018 - raises for a port out of range
        parts.hostname.encode("idna")
    except (ValueError, UnicodeError):
        raise invalid(key, f"not a usable host and port: {value!r}") from None
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
    """As shown: `name`, or `name_env` or `name_file`."""
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
        shown = f"`{key}`"
        if _is_secret(kind):
            shown = f"`{key}` or `{prefix}{twin(info.encode_name)}`"
            meaning += " (or the file that holds it; exactly one of the two)"
        yield KeyDoc(shown, default, meaning + _bounds(metas))


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
    lines += [f"| {row.key} | {row.default} | {row.meaning} |" for row in rows]
    return "\n".join(lines) + "\n"
