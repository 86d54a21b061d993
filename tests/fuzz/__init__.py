"""Coverage-guided fuzzing (atheris) of kidecar's parsers: targets.py, runner.py."""
