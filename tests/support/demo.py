"""The README's demo (config/local.yaml) started as a user would, on free ports."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import requests

from tests.support.sidecar_process import REPO, Sidecar, free_port, start_sidecar


@dataclass
class Demo:
    sidecar: Sidecar
    game: str   # the demo game, e.g. http://127.0.0.1:PORT
    files: str  # the demo file server with config/demo/files


def start_demo(tmp_path: Path) -> Demo:
    """config/local.yaml on free ports, once the game and the file server answer.

    The file server is a binary plugin: Running is not yet listening, so it is
    waited for too (a first update otherwise met 'connection refused').
    """
    files_port, game_port = free_port(), free_port()
    text = (REPO / "config" / "local.yaml").read_text()
    text = (text.replace('"8000"', f'"{files_port}"').replace('"8080"', f'"{game_port}"')
            .replace("127.0.0.1:8080", f"127.0.0.1:{game_port}")
            .replace("/tmp/kidecar-demo/www", str(tmp_path / "www")))
    config = tmp_path / "local.yaml"
    config.write_text(text)
    sidecar = start_sidecar(config, tmp_path, wait_ready=True)
    demo = Demo(sidecar, f"http://127.0.0.1:{game_port}", f"http://127.0.0.1:{files_port}")
    try:
        sidecar.wait_for(lambda: requests.get(demo.game, timeout=2).ok, what="demo game up")
        sidecar.wait_for(lambda: requests.get(f"{demo.files}/v1/index.html", timeout=2).ok,
                         what="demo file server up")
    except BaseException:
        sidecar.stop()
        raise
    return demo
