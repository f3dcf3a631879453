"""``certauth nginx-config``: ``certauth proxy-config --proxy nginx --settings none`` under its older name
(see certauth.cli.proxy_config and certauth.nginxconf); its output is exactly the nginx configuration."""

from __future__ import annotations

from .proxy_config import ProxyConfig


class NginxConfig(ProxyConfig):
    name = "nginx-config"
    help = (
        "Print an nginx server config that terminates mutual TLS and forwards the client certificate "
        "to certauth (snippet for conf.d, or a complete nginx.conf with --standalone); "
        "`proxy-config --proxy nginx` also prints the matching settings."
    )
    proxy = "nginx"
