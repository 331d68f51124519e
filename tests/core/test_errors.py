from cpe_tunnel.core.errors import RemoteProtocolError, LocalProtocolError


def test_error_reason_is_readable():
    e = RemoteProtocolError("broker sent a line longer than 512 bytes")
    assert str(e) == "broker sent a line longer than 512 bytes"
    assert e.reason == str(e)
    assert not isinstance(e, LocalProtocolError)
