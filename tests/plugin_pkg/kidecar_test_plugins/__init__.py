"""Test plugins installed through the ``kidecar.plugins`` entry point group."""
