"""What each request of mode http reads of its service's config, in slots.

Made once per Service (a reload makes new Services, so new settings): an attribute of a
pydantic model costs about three reads of a slot, and an exchange read some twenty.
"""

from __future__ import annotations

from medlb.config.models import ServiceConfig


class HttpSettings:
    __slots__ = ("header_timeout", "max_header_size", "max_headers", "routes", "attempts", "server_timeout",
                 "server_idle_timeout", "server_idle_connections", "keepalive_timeout", "cookie_name",
                 "cookie_max_age")

    def __init__(self, config: ServiceConfig):
        http = config.http
        assert http is not None
        self.header_timeout = http.header_timeout
        self.max_header_size = http.max_header_size
        self.max_headers = http.max_headers
        self.routes = http.routes
        self.attempts = 2 + config.limits.connect_retries  # the first try and the retries
        self.server_timeout = http.server_timeout
        self.server_idle_timeout = http.server_idle_timeout
        self.server_idle_connections = http.server_idle_connections
        #: A kept-alive connection's wait for its next request (idle_timeout bounds it too).
        self.keepalive_timeout = min(http.keepalive_timeout, config.limits.idle_timeout)
        persistence = config.persistence
        self.cookie_name: bytes | None = None
        if persistence.type == "cookie":
            self.cookie_name = persistence.name.encode()  # type: ignore[union-attr]
        self.cookie_max_age: float | None = getattr(persistence, "max_age", None)
