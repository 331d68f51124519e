"""Throwaway CA and server certificate for the broker's HTTPS listener (openssl CLI)."""

import os
import subprocess


def _openssl(args, cwd):
    r = subprocess.run(["openssl"] + args, cwd=cwd, capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise RuntimeError("openssl %s failed: %s" % (args[0], r.stderr.strip()[-500:]))


def make_test_ca(directory, ip="203.0.113.18", dns_names=("broker.test",), days=30):
    """Create a CA and a server certificate for `ip` (and `dns_names`) in `directory`.

    Returns {'ca_file', 'cert_file', 'key_file'} (absolute paths). The CA's key is
    deleted afterwards: nothing else can ever be signed with it. ECDSA P-256 keys.
    """
    d = os.path.abspath(directory)
    os.makedirs(d, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    old = os.umask(0o077)
    try:
        _openssl(
            ["req", "-x509"]
            + ec
            + [
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                str(days),
                "-subj",
                "/CN=cpe-tunnel lab test CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
            d,
        )
        _openssl(["req"] + ec + ["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=%s" % ip], d)
        san = ["IP:%s" % ip] + ["DNS:%s" % n for n in dns_names]
        with open(os.path.join(d, "server.ext"), "w") as f:
            f.write(
                "basicConstraints=CA:FALSE\n"
                "keyUsage=critical,digitalSignature\n"
                "extendedKeyUsage=serverAuth\n"
                "subjectAltName=%s\n" % ",".join(san)
            )
        _openssl(
            [
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.pem",
                "-days",
                str(days),
                "-extfile",
                "server.ext",
            ],
            d,
        )
    finally:
        os.umask(old)
        for junk in ("ca.key", "server.csr", "server.ext", "ca.srl"):
            try:
                os.unlink(os.path.join(d, junk))
            except OSError:
                pass
    os.chmod(os.path.join(d, "ca.pem"), 0o644)
    os.chmod(os.path.join(d, "server.pem"), 0o644)
    return {
        "ca_file": os.path.join(d, "ca.pem"),
        "cert_file": os.path.join(d, "server.pem"),
        "key_file": os.path.join(d, "server.key"),
    }
