"""An https upstream goes through the same transport as an http one: real TLS on loopback.

The scripted upstream serves https with a certificate from a throwaway CA; the
server trusts that CA through ``SSL_CERT_FILE`` (as an operator would point it
at a private CA), or does not, and then refuses the connection.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from common import sdk
from servers import ServerProcess, upstream_config

from nanobot.testing.process import UpstreamProcess
from nanobot.testing.tls import TlsFiles, make_tls_files


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def https_upstream(tls: TlsFiles) -> Iterator[UpstreamProcess]:
    with UpstreamProcess.start(tls=tls) as upstream:
        yield upstream


def test_turns_over_tls_stream_and_not(https_upstream: UpstreamProcess, tls: TlsFiles) -> None:
    assert https_upstream.base_url.startswith("https://localhost:")
    https_upstream.clear()
    config = upstream_config(https_upstream.url)
    with ServerProcess(config, env={"SSL_CERT_FILE": str(tls.ca)}) as server:
        client = sdk(server, timeout=30)
        whole = client.chat.completions.create(model="scripted", messages=[{"role": "user", "content": "over tls"}])
        assert whole.choices[0].message.content == "You said: over tls"
        pieces = client.chat.completions.create(
            model="scripted", messages=[{"role": "user", "content": "streamed over tls"}], stream=True
        )
        text = "".join(chunk.choices[0].delta.content or "" for chunk in pieces if chunk.choices)
        assert text == "You said: streamed over tls"
    seen = [r["body"]["messages"][-1]["content"] for r in https_upstream.requests()]
    assert seen == ["over tls", "streamed over tls"]
    assert all(r["body"]["model"] == "scripted" for r in https_upstream.requests())


def test_an_untrusted_certificate_is_an_unreachable_upstream(https_upstream: UpstreamProcess, tmp_path: Path) -> None:
    https_upstream.clear()
    other = make_tls_files(tmp_path)  # a CA that did not sign the upstream's certificate
    config = upstream_config(https_upstream.url)
    with ServerProcess(config, env={"SSL_CERT_FILE": str(other.ca)}) as server:
        with pytest.raises(openai.APIStatusError) as caught:
            sdk(server, timeout=30).chat.completions.create(
                model="scripted", messages=[{"role": "user", "content": "x"}]
            )
    assert caught.value.status_code == 502
    error = caught.value.body
    assert isinstance(error, dict) and error["code"] == "upstream_unreachable"
    assert "CERTIFICATE_VERIFY_FAILED" in error["message"] or "certificate verify failed" in error["message"]
    assert https_upstream.requests() == []  # nothing was sent without a verified peer
