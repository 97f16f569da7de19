"""`tether serve` as a process: token auth, TLS, the public-address refusal, SIGTERM drain."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
import tether
from conftest import Server

SIZE = 64


def test_token_auth(tmp_path):
    running = Server("--token", "s3cret").wait_serving()
    try:
        for token in (None, "wrong"):
            with tether.Client(running.address, token=token) as client:
                with pytest.raises(tether.Unauthenticated, match="authorization: Bearer"):
                    client.models()
                with pytest.raises(tether.Unauthenticated):
                    client.generate("x", steps=1, width=SIZE, height=SIZE)
        with tether.Client(running.address, token="s3cret") as client:
            assert client.generate("x", steps=1, width=SIZE, height=SIZE).image.shape == (
                SIZE,
                SIZE,
                3,
            )
    finally:
        running.stop()


def test_tls(tmp_path):
    cert, key = self_signed_certificate(tmp_path)
    running = Server("--tls-cert", str(cert), "--tls-key", str(key), "--host", "127.0.0.1")
    running.address = f"localhost:{running.port}"
    try:
        running.process.poll()
        # Health over TLS needs the certificate too: wait through the SDK instead.
        deadline = time.monotonic() + 60
        with tether.Client(running.address, tls=cert) as client:
            while True:
                try:
                    client.models(timeout=2)
                    break
                except tether.Unavailable:
                    assert time.monotonic() < deadline
                    time.sleep(0.2)
            assert client.generate("x", steps=1, width=SIZE, height=SIZE).image.shape == (
                SIZE,
                SIZE,
                3,
            )
        with tether.Client(running.address) as plaintext:
            with pytest.raises(tether.Unavailable):
                plaintext.models(timeout=5)
    finally:
        running.stop()


def self_signed_certificate(folder):
    key_path, cert_path = folder / "key.pem", folder / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-keyout",
            str(key_path),
            "-out",
            str(cert_path),
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )
    return cert_path, key_path


def test_refuses_a_public_address_without_token_or_tls():
    done = subprocess.run(
        [sys.executable, "-m", "tether", "serve", "--host", "0.0.0.0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "refusing to listen on 0.0.0.0 without --token" in done.stderr
    assert "Traceback" not in done.stderr


def test_sigterm_drains_running_jobs():
    running = Server().wait_serving()
    with tether.Client(running.address) as client:
        stream = client.stream("x", steps=30, width=128, height=128)
        events = iter(stream)
        while not isinstance(next(events), tether.Progress):
            pass
        running.process.send_signal(signal.SIGTERM)
        last = list(events)[-1]
    assert isinstance(last, tether.Result)
    assert running.process.wait(timeout=60) == 0
