"""Mode http without sockets: cookie persistence in the runtime, routes, cookie headers."""

from __future__ import annotations

import yaml

from medlb.config import parse_config
from medlb.protocols.http import cookie_value, route, strip_cookie
from medlb.runtime import CheckResult, Runtime, SetState


def http_runtime(**extra) -> Runtime:
    service = {"name": "api", "mode": "http", "listen": ["0.0.0.0:443"],
               "persistence": {"type": "cookie", "name": "MEDLBSRV"},
               "servers": [{"name": "a", "address": "a.example:8443"}, {"name": "b", "address": "b.example:8443"}],
               **extra}
    runtime = Runtime()
    runtime.load(parse_config(yaml.safe_dump({"services": [service]})).config)
    return runtime


def test_cookie_values_are_opaque_distinct_and_stable_across_reloads():
    runtime = http_runtime()
    service = runtime.services["api"]
    a, b = service.server("a"), service.server("b")
    value_a, value_b = service.cookie_value(a), service.cookie_value(b)
    assert value_a != value_b and "a.example" not in value_a and "8443" not in value_a
    assert http_runtime().services["api"].cookie_value(a) == value_a  # a restart keeps it
    assert service.server_for_cookie(value_a) is a
    assert service.server_for_cookie("forged") is None


def test_cookie_server_kept_when_drained_dropped_when_halted_or_down():
    runtime = http_runtime()
    service = runtime.services["api"]
    value = service.cookie_value(service.server("a"))
    runtime.apply(SetState("api", "a", "drain"))
    assert service.server_for_cookie(value) is service.server("a")
    runtime.apply(SetState("api", "a", "halt"))
    assert service.server_for_cookie(value) is None
    runtime.apply(SetState("api", "a", "online"))
    runtime.apply(CheckResult("api", "a", False, "refused", 0.001))
    assert service.server("a").health == "down"
    assert service.server_for_cookie(value) is None


def test_a_cookie_for_a_server_that_left_the_config_falls_back():
    runtime = http_runtime()
    value = runtime.services["api"].cookie_value(runtime.services["api"].server("b"))
    service = {"name": "api", "mode": "http", "listen": ["0.0.0.0:443"],
               "persistence": {"type": "cookie"}, "servers": [{"name": "a", "address": "a.example:8443"}]}
    runtime.load(parse_config(yaml.safe_dump({"services": [service]})).config)
    assert runtime.services["api"].server_for_cookie(value) is None


def test_routes_match_the_prefix_and_below_first_in_file_order():
    runtime = http_runtime(pools={"fhir": {"servers": [{"name": "f", "address": "f.example:80"}]},
                                  "dw": {"servers": [{"name": "d", "address": "d.example:80"}]}},
                           http={"routes": [{"path_prefix": "/fhir", "pool": "fhir"},
                                            {"path_prefix": "/fhir/special", "pool": "dw"},
                                            {"path_prefix": "/dicom-web/", "pool": "dw"}]})
    routes = runtime.services["api"].config.http.routes
    assert route(routes, b"/fhir") == "fhir"
    assert route(routes, b"/fhir/Patient?name=x") == "fhir"
    assert route(routes, b"/fhir/special/x") == "fhir"  # the first match wins
    assert route(routes, b"/fhirx") == "default"
    assert route(routes, b"/dicom-web/studies") == "dw"
    assert route(routes, b"/dicom-web") == "default"  # the prefix ends with '/'
    assert route(routes, b"/") == "default"


def test_cookie_parsing_and_stripping():
    headers = [(b"host", b"x"), (b"cookie", b"a=1; MEDLBSRV=abc; b=2")]
    assert cookie_value(headers, b"MEDLBSRV") == "abc"
    assert cookie_value(headers, b"OTHER") is None
    assert strip_cookie(b"a=1; MEDLBSRV=abc; b=2", b"MEDLBSRV") == b"a=1; b=2"
    assert strip_cookie(b"MEDLBSRV=abc", b"MEDLBSRV") == b""


def test_a_cookie_name_that_would_break_the_header_is_refused():
    import pytest

    from medlb.config import ConfigError

    service = {"name": "api", "mode": "http", "listen": ["0.0.0.0:443"],
               "persistence": {"type": "cookie", "name": "bad name\r\nX-Evil: 1"},
               "servers": [{"name": "a", "address": "a.example:8443"}]}
    with pytest.raises(ConfigError) as error:
        parse_config(yaml.safe_dump({"services": [service]}))
    assert error.value.problems[0].path == "services[0].persistence.name"
