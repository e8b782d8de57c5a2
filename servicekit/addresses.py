"""What is wrong with an address a service is told to reach, found at start-up rather than by a connection that
never comes: a port `:abc` or `:99999`, a bad IPv6 host, a gRPC target without a port.

Both services use it: the gateway for `schema_service` / SCHEMA_SERVICE_ADDR (a gRPC target), the schema service
for each host of a PostgreSQL URL. The words are the same in both: `host:99999: the port must be a number from 1
to 65535`. urllib parses the host and port; nothing here splits them by hand.
"""

from __future__ import annotations

from urllib.parse import urlsplit

PORT_RANGE = "the port must be a number from 1 to 65535"
# gRPC name syntax (grpc/doc/naming.md): these schemes name no host:port to check.
_UNCHECKED = ("unix:", "unix-abstract:", "vsock:")


def host_port_problem(address: str, *, required: bool = False) -> str | None:
    """`host:port` (`[v6]:port`): None when the port, if any, is 1-65535; with `required` both must be there."""
    try:
        parts = urlsplit(f"//{address}")
        port = parts.port
    except ValueError as exc:  # "Port out of range 0-65535", "Port could not be cast...", "Invalid IPv6 URL"
        return f"{address}: {PORT_RANGE}" if "Port" in str(exc) else f"{address}: malformed host ({exc})"
    if port == 0:
        return f"{address}: {PORT_RANGE}"
    if required and not parts.hostname:
        return f"{address}: no host (write host:port)"
    if required and port is None:
        return f"{address}: no port (write host:port)"
    return None


def grpc_target_problem(target: str) -> str | None:
    """A gRPC channel target (`host:port`, `dns:///host:port`, `ipv4:a:p,b:p`, `unix:path`): None when it names
    a host and a port for each address, else what is wrong, naming the address."""
    if target.startswith(_UNCHECKED):
        return None
    scheme, sep, rest = target.partition(":")
    if sep and scheme in ("ipv4", "ipv6"):
        addresses = rest.split(",")
    elif sep and scheme == "dns" and rest.startswith("//"):
        addresses = [rest[2:].partition("/")[2]]  # dns://[authority]/host:port
    elif sep and scheme == "dns":
        addresses = [rest]
    else:
        addresses = [target]
    return next(filter(None, (host_port_problem(a, required=True) for a in addresses)), None)


def http_url_problem(url: str) -> str | None:
    """An http(s) base URL: None when it has the scheme, a host and (if any) a port 1-65535."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # "Invalid IPv6 URL"
        return f"malformed host ({exc})"
    if parts.scheme not in ("http", "https"):
        return "must start with http:// or https://"
    if not parts.netloc.rpartition("@")[2]:
        return "has no host"
    return host_port_problem(parts.netloc.rpartition("@")[2])
