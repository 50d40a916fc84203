"""What ``train.py`` and ``eval.py`` do before Hydra starts (Hydra and the standard library only): the
environment (``prepare_environment``), then the command line, composed as Hydra is about to: a composition
error (an unknown key or option, also of an optional group) is one ``error:`` line (``check_command_line``)."""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
from argparse import Namespace
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, MissingConfigException
from omegaconf import DictConfig
from omegaconf.errors import ConfigAttributeError, ConfigKeyError

from shiftprobe.errors import unknown_key

#: environment variables naming folders: empty counts as not set
FOLDER_VARIABLES = ("MNIST_ROOT", "PROJECT_ROOT")
#: Hydra's flags after which Hydra answers itself (help, info, ...), or whose config search path this check
#: does not reproduce (``--config-dir``, ``--config-path``): left to Hydra
HYDRA_ANSWERS = (
    "help", "hydra_help", "info", "shell_completion", "experimental_rerun", "config_dir", "config_path",
)


def prepare_environment(project_root: Path) -> None:
    """Remove empty ``MNIST_ROOT`` / ``PROJECT_ROOT`` from the environment (the configuration then uses
    its defaults) and default ``PROJECT_ROOT`` to ``project_root``, the entry script's folder."""
    for name in FOLDER_VARIABLES:
        if name in os.environ and not os.environ[name].strip():
            del os.environ[name]
    os.environ.setdefault("PROJECT_ROOT", str(project_root))


def check_command_line(config_dir: Path, config_name: str) -> None:
    """On a command line whose configuration Hydra cannot compose, print ``error: <one line>`` and exit
    with status 1; otherwise return (Hydra then composes it again and runs the job)."""
    problem = command_line_problem(config_dir, config_name, sys.argv[1:])
    if problem:
        print(f"error: {problem}", file=sys.stderr, flush=True)
        sys.exit(1)


def command_line_problem(config_dir: Path, config_name: str, argv: list[str]) -> str | None:
    """The problem with the configuration of ``argv`` (Hydra's arguments) in one line, or None (also where
    Hydra answers itself: ``--help``, ``--info``, a flag it cannot read, ``--config-dir``)."""
    args = _hydra_arguments(argv)
    if args is None or any(getattr(args, name, None) for name in HYDRA_ANSWERS):
        return None
    overrides, problem = _one_job(args.overrides)
    if problem:
        return problem
    # the context restores Hydra's global state when it ends (Hydra's main then starts afresh)
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        try:
            compose(args.config_name or config_name, overrides=overrides, return_hydra_config=True)
        except HydraException as err:
            return explain_composition_error(err, overrides)
        except Exception:  # not a composition error (e.g. experiment=null, a ValueError): Hydra reports it
            return None
        return _unknown_group_option(overrides)


def _hydra_arguments(argv: list[str]) -> Namespace | None:
    """``argv`` read by Hydra's own argument parser (None where it refuses them: Hydra says why)."""
    # Hydra's own parser (private, hydra-core 1.3 is pinned), so the flags mean what they mean to Hydra
    from hydra._internal.utils import get_args_parser

    quiet = io.StringIO()
    try:
        with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
            return get_args_parser().parse_args(argv)
    except SystemExit:  # --version, or a flag Hydra does not know
        return None


def _one_job(lines: list[str]) -> tuple[list[str], str | None]:
    """The overrides of one job of the command line (a swept setting at its first value; a sweep that
    has no first value, such as Optuna's ``interval(...)``, left out) and the problem of an override
    Hydra cannot read, in one line."""
    parser = OverridesParser.create()
    out = []
    for line in lines:
        try:
            override = parser.parse_override(line)
        except HydraException as err:
            reason = str(err).splitlines()[0] if str(err).strip() else type(err).__name__
            return [], f"the override {line!r} cannot be read: {reason} (Hydra's override grammar)."
        if not override.is_sweep_override():
            out.append(line)
            continue
        try:
            first = next(iter(override.sweep_string_iterator()))
        except (HydraException, StopIteration):
            continue
        out.append(f"{override.get_key_element()}={first}")
    return out, None


def _unknown_group_option(lines: list[str]) -> str | None:
    """An option of a config group that does not exist (``experiment=augmentd``): Hydra skips the missing
    option of an optional group without a word. Call inside Hydra's initialised context."""
    loader = GlobalHydra.instance().config_loader()
    parser = OverridesParser.create()
    for override in parser.parse_overrides(lines):
        if override.is_delete() or override.value() is None:
            continue
        group = override.key_or_group
        options = loader.get_group_options(group)
        if not options:  # not a group: a setting
            continue
        value = override.value()
        for option in value if isinstance(value, list) else [value]:
            if str(option) not in options:
                return _not_an_option(group, str(option), options)
    return None


def _not_an_option(group: str, option: str, options: list[str]) -> str:
    choices = ", ".join(options)
    plugins = "Hydra's plugins add options: pip install -e \".[sweep]\""
    where = plugins if group.startswith("hydra/") else f"conf/{group}/"
    return f"{group}={option} is not an option of {group}: use one of {choices} ({where})."


def explain_composition_error(err: HydraException, overrides: list[str]) -> str:
    """Hydra's composition error in one line: an unknown key names the closest key and the allowed ones,
    an unknown option given on the command line (``overrides``) the options; anything else is Hydra's
    message on one line (e.g. an option a chosen config asks for: ``hparams_search=optuna`` without its
    plugin). Call inside Hydra's initialised context."""
    cause = err.__cause__
    unknown = isinstance(cause, (ConfigAttributeError, ConfigKeyError))
    if unknown and isinstance(cause.parent_node, DictConfig):
        missing = str(cause.full_key or cause.key)
        allowed = [str(k) for k in cause.parent_node.keys() if not str(k).startswith("_")]
        return str(unknown_key(missing, allowed, given=_overridden_key(str(err))))
    if isinstance(err, MissingConfigException) and err.missing_cfg_file:
        group, _, option = str(err.missing_cfg_file).rpartition("/")
        options = list(err.options or GlobalHydra.instance().config_loader().get_group_options(group))
        given = {o.key_or_group for o in OverridesParser.create().parse_overrides(overrides)}
        if group in given and options:
            return _not_an_option(group, option, options)
    text = str(err).split("Config search path:")[0]
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def _overridden_key(message: str) -> str | None:
    """The key of Hydra's ``Could not override '<key>'``, if that is the message."""
    found = re.search(r"Could not override '([^']+)'", message)
    return found.group(1) if found else None
