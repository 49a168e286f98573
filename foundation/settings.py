"""Reading TOML configuration with errors that name the field.

Both the agent and the orchestrator read one TOML file each. :class:`Section` wraps a
table and hands out typed values; anything wrong raises :class:`ConfigError` naming the
dotted path of the field (``equipment.lamps[2].pwm_pin``) and why, before anything starts.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from foundation.errors import FieldError


class ConfigError(FieldError):
    """A configuration file is unreadable or a field in it is wrong."""


def load_toml(path: Path) -> dict[str, Any]:
    """Parse ``path``; unreadable or malformed files raise :class:`ConfigError`."""
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(str(path), "no such configuration file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), f"not valid TOML ({exc})") from None


_MISSING = object()


class Section:
    """A table of the configuration, addressed by its dotted path."""

    def __init__(self, data: Mapping[str, Any], path: str = "", base_dir: Path | None = None):
        self.data = data
        self.where = path
        self.base_dir = base_dir or Path.cwd()

    def _name(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def _get(self, key: str, default: Any) -> Any:
        if key in self.data:
            return self.data[key]
        if default is _MISSING:
            raise ConfigError(self._name(key), "is required")
        return default

    def section(self, key: str, *, required: bool = False) -> Section:
        value = self._get(key, _MISSING if required else {})
        if not isinstance(value, Mapping):
            raise ConfigError(self._name(key), "must be a table")
        return Section(value, self._name(key), self.base_dir)

    def sections(self, key: str) -> list[Section]:
        value = self._get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
            raise ConfigError(self._name(key), "must be an array of tables")
        return [Section(v, f"{self._name(key)}[{i}]", self.base_dir) for i, v in enumerate(value)]

    def text(self, key: str, default: Any = _MISSING) -> str:
        value = self._get(key, default)
        if not isinstance(value, str):
            raise ConfigError(self._name(key), "must be a string")
        return value

    def integer(
        self,
        key: str,
        default: Any = _MISSING,
        *,
        minimum: int | None = None,
        maximum: int | None = None,
    ) -> int:
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(self._name(key), "must be an integer")
        if minimum is not None and value < minimum:
            raise ConfigError(self._name(key), f"must be at least {minimum}")
        if maximum is not None and value > maximum:
            raise ConfigError(self._name(key), f"must be at most {maximum}")
        return value

    def number(
        self,
        key: str,
        default: Any = _MISSING,
        *,
        minimum: float | None = None,
        maximum: float | None = None,
    ) -> float:
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(self._name(key), "must be a number")
        if minimum is not None and value < minimum:
            raise ConfigError(self._name(key), f"must be at least {minimum}")
        if maximum is not None and value > maximum:
            raise ConfigError(self._name(key), f"must be at most {maximum}")
        return float(value)

    def flag(self, key: str, default: Any = _MISSING) -> bool:
        value = self._get(key, default)
        if not isinstance(value, bool):
            raise ConfigError(self._name(key), "must be true or false")
        return value

    def path(self, key: str, default: Any = _MISSING) -> Path:
        """A filesystem path; relative paths are relative to the configuration file."""
        value = Path(self.text(key, default))
        return value if value.is_absolute() else self.base_dir / value

    def address(self, key: str, default: Any = _MISSING) -> str:
        """A ``host:port`` address."""
        value = self.text(key, default)
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(self._name(key), f"{value!r} is not host:port")
        return value

    def texts(self, key: str, default: Any = _MISSING) -> list[str]:
        value = self._get(key, default)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(self._name(key), "must be a list of strings")
        return list(value)

    def raw(self) -> Mapping[str, Any]:
        return self.data

    def unknown(self, known: set[str]) -> None:
        """Refuse keys this section does not know (a typo must not pass silently)."""
        extra = sorted(set(self.data) - known)
        if extra:
            raise ConfigError(self._name(extra[0]), "unknown setting")
