"""Render: from an instance's registration (and deregistration) to a real nginx reloaded with
the upstream that holds it (and no longer does), p50/p99: the watch, the cache, the template,
``nginx -t``, the atomic replace and ``nginx -s reload`` (returned: it signals the master, which
then starts new workers), with no quiescence window (``wait`` min and max 0, so that the row
measures the pipeline, not the window)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import anyio

import aiocoord
from aiocoord.testing import free_port
from services import render

from .stats import latency

TEMPLATE = """\
upstream web {
{% for i in services.web if i.enabled %}    server {{ i.address }}:{{ i.port }};
{% endfor %}}
"""


def _nginx(work: Path) -> tuple[list[str], Path]:
    """The nginx command line for a configuration in ``work`` (the front proxies to ``web``),
    and the upstream file it includes."""
    upstream = work / "upstream.conf"
    upstream.write_text(f"upstream web {{ server 127.0.0.1:{free_port()}; }}\n")
    temp = "".join(
        f"{kind}_temp_path {work}/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf = work / "nginx.conf"
    conf.write_text(
        f"pid {work}/nginx.pid; error_log {work}/error.log; worker_processes 1;\n"
        f"events {{}}\nhttp {{ access_log off; {temp} include {upstream};\n"
        f"server {{ listen 127.0.0.1:{free_port()}; location / {{ proxy_pass http://web; }} }}\n"
        "}\n"
    )
    return [shutil.which("nginx") or "/usr/sbin/nginx", "-p", str(work), "-c", str(conf)], upstream


async def _measure(hosts: str, nginx: list[str], work: Path, rounds: int) -> dict[str, Any]:
    namespace = f"/bench-render-{uuid.uuid4().hex[:8]}"
    (work / "upstream.conf.j2").write_text(TEMPLATE)
    (work / "render.toml").write_text(
        "wait = { min = 0, max = 0 }\n[[template]]\n"
        f'source = "upstream.conf.j2"\ndestination = "upstream.conf"\n'
        f'check = "{" ".join([*nginx, "-t", "-q"])}"\n'
        f'reload = "{" ".join([*nginx, "-s", "reload"])}"\n'
        'services = { web = "web" }\n'
    )
    config = render.load_config(work / "render.toml")
    up: list[float] = []
    down: list[float] = []
    async with (
        aiocoord.Client(hosts, namespace=namespace) as renderer,
        aiocoord.Client(hosts, namespace=namespace) as owner,
    ):
        registry = aiocoord.ServiceRegistry(owner)
        renderings = await render.recovered(config, "bench")
        (rendering,) = renderings

        def reloaded(port: int, present: bool) -> bool:
            """The file holds (or lacks) ``port`` and its apply is over: checked, reloaded."""
            data = (work / "upstream.conf").read_bytes()
            return (f":{port};".encode() in data) == present and (
                rendering.running == render.rendered_version(data).name
            )

        async def wait_reloaded(port: int, present: bool) -> None:
            with anyio.fail_after(60):
                while not reloaded(port, present):  # noqa: ASYNC110 - a file: no event
                    await anyio.sleep(0.001)

        async with (
            registry.register("web", "127.0.0.1", 1, instance_id="fixed"),
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(render.keep_rendered, renderer, config, renderings)
            await wait_reloaded(1, True)
            for r in range(rounds):
                port = 2 + r
                started = time.perf_counter()
                async with registry.register("web", "127.0.0.1", port, instance_id=f"i{r}"):
                    await wait_reloaded(port, True)
                    up.append(time.perf_counter() - started)
                    started = time.perf_counter()
                await wait_reloaded(port, False)
                down.append(time.perf_counter() - started)
            tg.cancel_scope.cancel()
    return {"register": latency(up), "deregister": latency(down)}


def run(hosts: str, *, quick: bool = False) -> dict[str, Any]:
    """Empty when nginx is not installed."""
    if shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists():
        print("  render: nginx is not installed, skipped", flush=True)
        return {}
    rounds = 10 if quick else 100
    print("  render: registration to nginx reloaded ...", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-render-") as tmp:
        work = Path(tmp)
        nginx, _ = _nginx(work)
        server = subprocess.Popen([*nginx, "-g", "daemon off;"])
        try:
            deadline = time.monotonic() + 30  # a reload needs the master's pid file
            while not (work / "nginx.pid").exists():
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError(f"nginx did not start: {(work / 'error.log').read_text()}")
                time.sleep(0.01)
            ours = anyio.run(
                _measure, hosts, nginx, work, rounds, backend_options={"use_uvloop": True}
            )
        finally:
            server.terminate()
            server.wait(timeout=30)
    return {"rounds": rounds, "aiocoord": ours}


def print_table(results: dict[str, Any]) -> None:
    if not results:
        return
    a = results["aiocoord"]
    print()
    print(
        f"Render: registration to a real nginx reloaded over {results['rounds']} rounds, "
        "p50 / p99 ms (watch, template, nginx -t, replace, nginx -s reload; no wait window)"
    )
    for what in ("register", "deregister"):
        print(f"{what:<12}{a[what]['p50_ms']:>9.2f} /{a[what]['p99_ms']:>8.2f}")
