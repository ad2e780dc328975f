"""Run the real `dre` executable in a subprocess, the way a user does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

DRE = str(Path(sys.executable).parent / "dre")


@dataclass
class Result:
    code: int
    out: bytes
    err: str

    @property
    def text(self) -> str:
        return self.out.decode()

    def json(self) -> Any:
        return json.loads(self.out)


Runner = Callable[..., Result]


def run_dre(home: Path, *args: str, cwd: Path | None = None, check: bool = True,
            input: bytes | None = None) -> Result:
    env = {**os.environ, "DRE_HOME": str(home)}
    proc = subprocess.run([DRE, *args], capture_output=True, env=env, cwd=cwd, input=input,
                          timeout=120, check=False)
    result = Result(proc.returncode, proc.stdout, proc.stderr.decode())
    if check and proc.returncode != 0:
        raise AssertionError(f"dre {' '.join(args)} failed ({proc.returncode}): {result.err}")
    return result


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    run_dre(home, "init")
    return home


@pytest.fixture
def dre(home: Path, tmp_path: Path) -> Runner:
    def runner(*args: str, check: bool = True, input: bytes | None = None) -> Result:
        return run_dre(home, *args, cwd=tmp_path, check=check, input=input)

    return runner
