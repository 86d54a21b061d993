import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# hot_update_fixtures: upstream / file_dir / game for the hot_update modules (a module
# defining a fixture of the same name keeps its own)
pytest_plugins = ["tests.support.kube_harness", "tests.support.hot_update_fixtures"]
