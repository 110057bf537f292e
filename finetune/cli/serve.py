"""``finetune serve``: a local page to try a trained run."""

from __future__ import annotations

import click

from .app import _start_tensorflow, main


@main.command()
@click.argument("run_dir", type=click.Path())
@click.option("--port", default=8000, show_default=True, help="Port to listen on (0 picks a free one).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; anything but loopback exposes the model to the network.")
@click.option("--allow-host", multiple=True, help="Also accept requests whose Host header names this (repeatable); "
              "loopback names and, with a non-loopback --host, this machine's names are accepted already.")
@click.option("-k", "--top-k", default=3, show_default=True, help="How many classes to show per image.")
@click.option("--max-upload-mb", default=20.0, show_default=True, help="Refuse larger uploads.")
def serve(run_dir, port, host, allow_host, top_k, max_upload_mb):
    """A local web page to try RUN_DIR: drop images, see top-k classes and the Grad-CAM overlay."""
    _start_tensorflow()
    from werkzeug.serving import WSGIRequestHandler, make_server

    class PlainLog(WSGIRequestHandler):
        """One plain access line per request (Werkzeug colours them with escape codes, even in a log file)."""

        def log_request(self, code="-", size="-"):
            self.log("info", '"%s" %s %s', self.requestline, code, size)

    from ..serve import LOOPBACK_NAMES, create_app, exposure_warning, machine_names

    warning = exposure_warning(host)
    if warning:
        click.secho(f"warning: {warning}", fg="yellow", err=True)
    hosts = (*LOOPBACK_NAMES, *allow_host, *((host, *machine_names()) if warning else ()))
    app = create_app(run_dir, top_k=top_k, max_upload_mb=max_upload_mb, hosts=hosts)
    try:
        server = make_server(host, port, app, threaded=True, request_handler=PlainLog)
    except OSError as err:
        raise click.ClickException(f"cannot listen on {host}:{port} ({err.strerror or err}); pick another --port") from None
    shown = "localhost" if host in LOOPBACK_NAMES else host
    click.echo(f"serving {run_dir} at http://{shown}:{server.server_port}/  (Ctrl+C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        click.echo("stopped")
