"""The piuparts hook's own questions to the installed package, asked of the code in this tree.

The hook runs only inside piuparts (CI step 9); a module it imports that moved would fail there
after half an hour. This asks the same question here.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import subprocess
import sys
from pathlib import Path

from edged.store import migrations

HOOK = Path(__file__).parent / "scripts" / "post_install_edged_data"


def load_hook():
    loader = importlib.machinery.SourceFileLoader("edged_upgrade_hook", str(HOOK))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def test_the_hooks_schema_question_answers_the_newest_migration():
    hook = load_hook()
    run = subprocess.run([sys.executable, "-c", hook.NEWEST_SCHEMA], capture_output=True,
                         text=True, check=True)  # fmt: skip
    assert int(run.stdout) == max(migrations.MIGRATIONS)
