import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# hot_update_fixtures: upstream / file_dir / game for the hot_update modules (a module
# defining a fixture of the same name keeps its own)
pytest_plugins = ["tests.kube_harness", "tests.hot_update_fixtures"]
