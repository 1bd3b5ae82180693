#!/usr/bin/env python3
"""Writes seeds for the `config` fuzz target into DIR (default corpus/config beside this file).

    fuzz/config-seeds.py [DIR]

Three kinds, each a configuration the loader reads:
  md-NNNN   every YAML block of the repository's Markdown (README, spec/, docs/ ...) that
            names a kind or an apiVersion: the examples a reader copies;
  rs-NNNN   every YAML text of the repository's Rust sources outside fuzz/ (the tests'
            configurations, valid and not), with format! placeholders filled in;
  url-NNNN  one Trigger per case of the WHATWG URL tests (urltestdata.json, as the `url`
            crate ships it), whose subscriber `uri` is the case's input, resolved against
            an AddressTable URL that is the case's base (the loader joins the two with the
            `url` crate).
The next `fuzz/run.sh config` run's cmin keeps those that reach code no other input does.
"""

import glob
import json
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "corpus", "config")


def tracked(pattern):
    files = subprocess.check_output(["git", "ls-files", pattern], cwd=ROOT, text=True)
    return [f for f in files.split() if not f.startswith("fuzz/")]


def write(prefix, texts):
    seen = set()
    for text in texts:
        if text in seen:
            continue
        seen.add(text)
        path = os.path.join(OUT, "%s-%04d" % (prefix, len(seen) - 1))
        with open(path, "w", encoding="utf-8", errors="surrogatepass") as f:
            f.write(text)
    return len(seen)


def markdown():
    fence = re.compile(r"^([ \t]*)```ya?ml[^\n]*\n(.*?)^\1```", re.S | re.M)
    for name in tracked("*.md"):
        text = open(os.path.join(ROOT, name), encoding="utf-8").read()
        for m in fence.finditer(text):
            indent = m.group(1)
            lines = m.group(2).split("\n")
            body = "\n".join(l[len(indent):] if l.startswith(indent) else l for l in lines)
            if "kind:" in body or "apiVersion" in body:
                yield body


def rust():
    raw = re.compile(r'r(#*)"(.*?)"\1', re.S)
    plain = re.compile(r'(?<![r#\w])"((?:[^"\\]|\\.)*)"', re.S)
    placeholder = re.compile(r"(?<!\{)\{[a-z_][a-z_0-9.]*(:[^}]*)?\}(?!\})")
    for name in tracked("*.rs"):
        text = open(os.path.join(ROOT, name), encoding="utf-8").read()
        literals = [(m.group(2), True) for m in raw.finditer(text)]
        literals += [(m.group(1), False) for m in plain.finditer(text)]
        for s, is_raw in literals:
            if "kind:" not in s or ("\n" not in s and "\\n" not in s):
                continue
            if not is_raw:
                s = re.sub(r"\\\n\s*", "", s)
                s = s.replace("\\n", "\n").replace('\\"', '"').replace("\\t", "\t")
                s = s.replace("\\\\", "\\")
            if placeholder.search(s) or "{{" in s:
                s = placeholder.sub("http://127.0.0.1:9000/x", s)
                s = s.replace("{{", "{").replace("}}", "}")
            yield s


URL_CASE = """apiVersion: switchyard.dev/v1
kind: AddressTable
metadata: {name: t}
spec:
  addresses:
    - ref: {apiVersion: v1, kind: Service, name: s}
      url: %s
---
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: default}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: t}
spec:
  broker: default
  subscriber:
    ref: {apiVersion: v1, kind: Service, name: s}
    uri: %s
"""


def url_tests():
    home = os.path.expanduser("~/.cargo/registry/src")
    found = glob.glob(os.path.join(home, "*", "url-2.*", "tests", "urltestdata.json"))
    # The newest url crate's copy, by version (2.5.10 after 2.5.9): the crate's folder is the
    # path's third part from the end, `url-2.5.10`.
    found.sort(key=lambda path: [int(n) for n in re.findall(r"\d+", path.split(os.sep)[-3])])
    if not found:
        sys.exit("no url crate sources under %s: run `cargo fetch` in fuzz/afl first" % home)
    for case in json.load(open(found[-1], encoding="utf-8")):
        if isinstance(case, dict):
            base = case.get("base") or "http://example.org/"
            # YAML reads JSON's double-quoted strings.
            quoted = [json.dumps(s, ensure_ascii=False) for s in (base, case["input"])]
            yield URL_CASE % tuple(quoted)


os.makedirs(OUT, exist_ok=True)
for prefix, texts in (("md", markdown()), ("rs", rust()), ("url", url_tests())):
    print("%s-*: %d" % (prefix, write(prefix, texts)))
