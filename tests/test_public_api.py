"""The public surface: every name in ``__all__`` exists and says what it is."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import broker
import cli
import connectors
import console
import schemas

MODULES = sorted(
    m.name
    for package in (broker, connectors, cli, console, schemas)
    for m in pkgutil.walk_packages(package.__path__, package.__name__ + ".")
    if not m.ispkg and not any(part.startswith("_") for part in m.name.split("."))
)


@pytest.mark.parametrize("name", MODULES)
def test_public_members_exist_and_have_docstrings(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__doc__, f"{name} has no module docstring"
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{name} defines no __all__"
    missing_doc = []
    for member in exported:
        obj = getattr(module, member)  # AttributeError if __all__ lies
        if (inspect.isclass(obj) or inspect.isfunction(obj)) and not inspect.getdoc(obj):
            missing_doc.append(member)
    assert missing_doc == [], f"{name}: undocumented public members {missing_doc}"


def test_every_library_module_is_covered() -> None:
    assert {
        "broker.routing.router",
        "broker.routing.decide",
        "broker.wire.codec",
        "broker.network",
        "broker.origin.publisher",
        "broker.receiver.sink_driver",
        "connectors.drop_folder",
        "cli.app",
        "console.app",
        "console.liaison",
    } <= set(MODULES)
