"""What travels between the pair's nodes with a config, and how the nodes tell which
config each runs (medlb/ha/configsync.py, medlb/ha/generation.py, medlb/ha/channel.py)."""

from __future__ import annotations

import base64

import pytest

from medlb.ha.channel import PeerUnreachable, parse_answer
from medlb.ha.configsync import Bundle, put_in_place
from medlb.ha.generation import ConfigGeneration

TEXT = """admin:
  listen: "0.0.0.0:9443"
  token_file: token
ha:
  sync_token_file: ha-token
services: []
"""


def sent(files: dict[str, bytes], text: str = TEXT) -> dict:
    return {"text": text, "files": {name: base64.b64encode(data).decode() for name, data in files.items()}}


def test_a_bundle_carries_exactly_the_files_its_config_names():
    bundle = Bundle.from_json(sent({"token": b"admin-secret\n", "ha-token": b"sync-secret\n"}))

    assert bundle.files == {"token": b"admin-secret\n", "ha-token": b"sync-secret\n"}
    with pytest.raises(ValueError, match=r"the files sent \(token\) are not the files the config names "
                                         r"\(ha-token, token\)"):
        Bundle.from_json(sent({"token": b"x"}))
    with pytest.raises(ValueError, match="not the files the config names"):  # no file the config does not name
        Bundle.from_json(sent({"token": b"x", "ha-token": b"y", "/etc/passwd": b"z"}))
    with pytest.raises(ValueError, match="not base64"):
        Bundle.from_json({"text": TEXT, "files": {"token": "%%%", "ha-token": ""}})


def test_the_hash_covers_the_text_and_every_file():
    files = {"token": b"admin-secret\n", "ha-token": b"sync-secret\n"}
    same = Bundle(TEXT, dict(files)).hash

    assert Bundle(TEXT, files).hash == same
    assert Bundle(TEXT, {**files, "token": b"renewed\n"}).hash != same
    assert Bundle(TEXT + "# a comment\n", files).hash != same


def test_a_file_put_in_place_is_put_back_as_it_was(tmp_path):
    (tmp_path / "token").write_bytes(b"old\n")
    (tmp_path / "token").chmod(0o640)

    previous = put_in_place(tmp_path, {"token": b"new\n", "ha-token": b"made\n"})
    assert (tmp_path / "token").read_bytes() == b"new\n" and (tmp_path / "ha-token").read_bytes() == b"made\n"
    assert (tmp_path / "token").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "ha-token").stat().st_mode & 0o777 == 0o600
    for item in reversed(previous):
        item.put_back()

    assert (tmp_path / "token").read_bytes() == b"old\n" and not (tmp_path / "ha-token").exists()


def test_the_generation_moves_on_only_when_the_config_changed(tmp_path):
    first = ConfigGeneration.under(tmp_path, "aaa")
    assert first.current() == (1, "aaa")
    assert ConfigGeneration.under(tmp_path, "aaa").current() == (1, "aaa")  # restarted, same file
    assert ConfigGeneration.under(tmp_path, "bbb").current() == (2, "bbb")  # edited while stopped
    first.commit(7, "ccc")  # taken from the peer
    assert ConfigGeneration.under(tmp_path, "ccc").current() == (7, "ccc")


def test_the_peers_answer_is_read_whole_or_refused():
    body = b'{"node": "lb-b"}'
    plain = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
    chunked = b"HTTP/1.1 409 Conflict\r\ntransfer-encoding: chunked\r\n\r\n5\r\n{\"a\":\r\n3\r\n 1}\r\n0\r\n\r\n"

    assert parse_answer(plain, "lb-b") == (200, {"node": "lb-b"})
    assert parse_answer(chunked, "lb-b") == (409, {"a": 1})
    with pytest.raises(PeerUnreachable, match="not HTTP"):
        parse_answer(b"SSH-2.0-OpenSSH\r\n", "lb-b")
    with pytest.raises(PeerUnreachable, match="answered 200 without JSON"):
        parse_answer(b"HTTP/1.1 200 OK\r\n\r\n<html>", "lb-b")
