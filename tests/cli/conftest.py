"""Nodes made by `pk bootstrap` once per session and copied for each test that changes one."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.cli.helpers import CliNode, bootstrap


@pytest.fixture(scope="session")
def template_node(tmp_path_factory: pytest.TempPathFactory) -> CliNode:
    """Bootstrapped once; tests get copies (``cli_node``) and never change this file."""
    return bootstrap(tmp_path_factory.mktemp("template") / "node.pk")


@pytest.fixture(scope="session")
def other_node(tmp_path_factory: pytest.TempPathFactory) -> CliNode:
    """A second, unrelated node; read-only."""
    return bootstrap(tmp_path_factory.mktemp("other") / "node.pk", "another password 42")


@pytest.fixture
def cli_node(template_node: CliNode, tmp_path: Path) -> CliNode:
    """A private copy of the template node (same NodeId, recovery code and password)."""
    path = tmp_path / "mine" / "node.pk"
    path.parent.mkdir()
    shutil.copyfile(template_node.path, path)
    return template_node.at(path)
