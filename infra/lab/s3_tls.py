"""`s3-tls`: Debian's nginx terminating TLS in front of moto's plain HTTP, run as the lab user. pgBackRest needs
it: against moto's own TLS (werkzeug) every request fails with "unexpected eof" (docs/facts.md)."""

from __future__ import annotations

from .context import LabContext
from .processes import start_daemon
from .tls import certificate_files, ensure_certificates

NGINX = "/usr/sbin/nginx"


def config_text(context: LabContext) -> str:
    paths, state = context.paths, context.state
    folder = paths.run_dir / "s3-tls"
    _, certificate, key = certificate_files(context)
    ops = context.address("ops")
    temporary = "\n".join(f"    {kind}_temp_path {folder / kind};" for kind in
                          ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return f"""# written by the Lifeline lab
daemon off;
master_process off;  # one process, the one the pid file names: a worker left by a killed master would keep the port
pid {folder / 'nginx.pid'};
error_log {paths.log_file('s3-tls')} warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
{temporary}
    server {{
        listen {ops}:{state.ports.s3_tls} ssl;
        ssl_certificate {certificate};
        ssl_certificate_key {key};
        client_max_body_size 0;
        location / {{
            proxy_pass http://{ops}:{state.ports.moto};
            proxy_http_version 1.1;
            proxy_request_buffering off;
            proxy_buffering off;
            proxy_set_header Host $http_host;
        }}
    }}
}}
"""


def start(context: LabContext) -> int:
    ensure_certificates(context)
    folder = context.paths.run_dir / "s3-tls"
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "nginx.conf"
    config.write_text(config_text(context), encoding="utf-8")
    log = context.paths.log_file("s3-tls")
    log.touch()
    if not context.user.is_current:
        import os

        for owned in (folder, log):
            os.chown(owned, context.user.uid, context.user.gid)
    return start_daemon([NGINX, "-e", str(log), "-p", str(folder), "-c", str(config)],
                        pid_file=context.paths.pid_file("s3-tls"), log_file=context.paths.log_file("s3-tls.out"),
                        user=context.user, netns=context.namespace("ops"))
