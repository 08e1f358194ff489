"""Errors a user can act on. The CLI prints them on one line with exit code 2, never a traceback.

Messages speak in library terms (``samples=0``, ``force=True``); ``for_cli`` says the same in
command-line terms (``--samples 0``, ``--force``), which is what the CLI prints.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any


class TensorguardError(Exception):
    """Bad input or bad usage: a message a user can act on, shown without a traceback."""

    exit_code = 2

    def for_cli(self, flags: Mapping[str, str]) -> str:
        """The message in command-line terms (``flags``: parameter name -> option)."""
        return str(self)


class OptionError(TensorguardError):
    """A bad value for a parameter of a library call, e.g. ``samples=0``."""

    def __init__(self, option: str, value: Any, problem: str) -> None:
        self.option, self.value, self.problem = option, value, problem
        super().__init__(f"{option}={value!r}: {problem}")

    def for_cli(self, flags: Mapping[str, str]) -> str:
        flag = flags.get(self.option, "--" + self.option.replace("_", "-"))
        return f"{flag} {self.value}: {self.problem}"


class OutputExistsError(TensorguardError):
    """An output would replace a file the user owns."""

    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__(f"{path}: already exists; pass force=True to overwrite it")

    def for_cli(self, flags: Mapping[str, str]) -> str:
        return f"{self.path}: already exists; pass --force to overwrite it"


class UsageError(TensorguardError):
    """A call that lacks (or misuses) a parameter. ``message`` names parameters as ``{name}``:
    the library text spells them ``name=``, the CLI text as the command's option (``--name``)."""

    def __init__(self, message: str, *options: str) -> None:
        self.template, self.options = message, options
        super().__init__(self._render({o: f"{o}=" for o in options}))

    def _render(self, spelling: Mapping[str, str]) -> str:
        text = self.template
        for option in self.options:
            text = text.replace("{" + option + "}", spelling[option])
        return text

    def for_cli(self, flags: Mapping[str, str]) -> str:
        return self._render({o: flags.get(o, "--" + o.replace("_", "-")) for o in self.options})


class MissingExtraError(TensorguardError):
    """A feature needs an optional extra that is not installed."""

    def __init__(self, feature: str, extra: str) -> None:
        self.feature, self.extra = feature, extra
        super().__init__(f"{feature} needs the optional extra: pip install 'tensorguard[{extra}]'")


class ForwardUnavailableError(TensorguardError):
    """``transformers`` cannot run the model: no configuration, a model type or architecture it
    does not know, a configuration that does not fit the tensors, tensors the model needs that the
    file lacks, or a model too large for the machine's memory."""
