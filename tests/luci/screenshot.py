#!/usr/bin/env python3
"""Render the two LuCI pages of luci-app-cpe-tunnel in headless Chromium and save
docs/luci-status.png and docs/luci-config.png.

    python3 tests/luci/screenshot.py [--out DIR] [--keep]

Needs Debian's chromium (apt-get install chromium); not part of `make test`.
Each page is one static HTML file (tests/luci/page/page.html) with the LuCI
stand-ins (tests/luci/standins.js), the app's JavaScript modules and the page
data inlined, so it loads from file:// without a server and without network.
The status page shows tests/luci/samples/status-up-nat.json, a real reply of the
daemon in the namespace lab, with its timestamps moved so that the tunnel has been
up for a while (the clock of the page is pinned); the configuration page shows a
tunnelbroker.net-style configuration with documentation addresses.

Two Chromium runs per page: --dump-dom to learn the height of the rendered page,
then --screenshot at that height.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
RESOURCES = os.path.join(ROOT, "luci-app", "luci-app-cpe-tunnel", "htdocs", "luci-static", "resources")
WIDTH = 1100

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars", "--force-device-scale-factor=1", "--disable-extensions",
    "--disable-default-apps", "--mute-audio", "--virtual-time-budget=5000",
]

CONFIG_UCI = [
    {".name": "main", ".type": "globals", "enabled": "1"},
    {".name": "he", ".type": "tunnel", "mode": "http-update", "peeraddr": "203.0.113.1",
     "ip6addr": "2001:db8:1::2/64", "ip6prefix": ["2001:db8:1234::/48"], "username": "example-user",
     "updatekey": "example-update-key", "tunnelid": "123456"},
    {".name": "cfg030000", ".type": "lan", ".anonymous": True, "interface": "br-lan", "dns": ["2001:db8::53"]},
]


def chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def module_sources():
    out = {}
    for d, _dirs, files in os.walk(RESOURCES):
        for fn in files:
            if fn.endswith(".js"):
                rel = os.path.relpath(os.path.join(d, fn), RESOURCES)[:-3]
                with open(os.path.join(d, fn), encoding="utf-8") as f:
                    out[rel.replace(os.sep, ".")] = f.read()
    return out


def status_page_data():
    with open(os.path.join(HERE, "samples", "status-up-nat.json")) as f:
        st = json.load(f)
    # the lab run lasted seconds; show the same reply as if up for 2 h 14 min
    now = st["since"] + 2 * 3600 + 14 * 60
    c = st.get("counters") or {}
    for key in ("last_tx", "last_rx"):
        if key in c:
            c[key] = now - 4
    if "last_update" in st:
        st["last_update"]["time"] = st["since"]
    return {"view": "status", "now": now, "status": st, "uci": []}


def config_page_data():
    return {"view": "config", "uci": CONFIG_UCI}


def _script_json(obj):
    # safe inside <script>: no "</" sequences
    return json.dumps(obj).replace("</", "<\\/")


def build_page(data, title):
    with open(os.path.join(HERE, "page", "page.html"), encoding="utf-8") as f:
        html = f.read()
    parts = {}
    for name, fn in (("CSS", "page/page.css"), ("STANDINS", "standins.js"), ("PAGEJS", "page/page.js")):
        with open(os.path.join(HERE, fn), encoding="utf-8") as f:
            parts[name] = f.read().replace("</script", "<\\/script")
    parts["SOURCES"] = _script_json(module_sources())
    parts["PAGE"] = _script_json(data)
    parts["TITLE"] = title
    parts["STATUS_TAB"] = "cbi-tab" if data["view"] == "status" else "cbi-tab-disabled"
    parts["CONFIG_TAB"] = "cbi-tab" if data["view"] == "config" else "cbi-tab-disabled"
    return re.sub(r"@([A-Z_]+)@", lambda m: parts[m.group(1)], html)


def run_chromium(binary, args, profile, timeout=120):
    argv = [binary] + CHROMIUM_FLAGS + ["--user-data-dir=" + profile] + args
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


def render(binary, html_path, png_path, profile):
    url = "file://" + html_path
    dom = run_chromium(binary, ["--window-size=%d,1000" % WIDTH, "--dump-dom", url], profile)
    m = re.search(r'<body[^>]*data-height="(\d+)"', dom.stdout)
    if not m or 'data-rendered="1"' not in dom.stdout:
        raise RuntimeError("the page did not render:\n%s\n%s" % (dom.stdout[-3000:], dom.stderr[-3000:]))
    err = re.search(r'<body[^>]*data-error="([^"]*)"', dom.stdout)
    if err:
        raise RuntimeError("the view failed in the browser: %s" % err.group(1))
    height = int(m.group(1)) + 8
    shot = run_chromium(binary, ["--window-size=%d,%d" % (WIDTH, height), "--screenshot=" + png_path, url], profile)
    if not os.path.exists(png_path):
        raise RuntimeError("no screenshot:\n%s" % shot.stderr[-3000:])
    return height


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=os.path.join(ROOT, "docs"), help="directory for the PNGs (default docs/)")
    p.add_argument("--keep", action="store_true", help="keep the generated HTML pages (printed)")
    a = p.parse_args(argv)
    binary = chromium()
    if not binary:
        print("screenshot: chromium not found (apt-get install chromium)", file=sys.stderr)
        return 2
    work = tempfile.mkdtemp(prefix="cpe-luci-shot-")
    try:
        os.makedirs(a.out, exist_ok=True)
        for name, data, title in (("luci-status.png", status_page_data(), "IPv6 Tunnel - Status"),
                                  ("luci-config.png", config_page_data(), "IPv6 Tunnel - Configuration")):
            html_path = os.path.join(work, name.replace(".png", ".html"))
            with open(html_path, "w", encoding="utf-8") as f:
                f.write(build_page(data, title))
            profile = tempfile.mkdtemp(prefix="profile-", dir=work)
            out = os.path.join(a.out, name)
            tmp = out + ".tmp.png"
            if os.path.exists(tmp):
                os.remove(tmp)
            height = render(binary, html_path, tmp, profile)
            os.replace(tmp, out)
            print("%s: %dx%d" % (os.path.relpath(out, ROOT), WIDTH, height))
        if a.keep:
            print("pages kept in %s" % work)
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
