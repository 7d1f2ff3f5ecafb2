#!/usr/bin/python3
"""gen_template_renders.py: expected chat-template renders from Python Jinja2.

Renders every ../shared/models/templates/*.jinja with every case of
tests/data/chat_templates/cases.json, in the environment Hugging Face transformers uses for
chat templates (transformers/utils/chat_template_utils.py, `_compile_jinja_template`):
ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols]),
a `tojson` filter that is json.dumps(ensure_ascii=False, ...) instead of Jinja's HTML-escaping
one, and the globals raise_exception(msg) and strftime_now(fmt).

Writes tests/data/chat_templates/expected/<template>__<case>.txt (the exact render, UTF-8) or
<template>__<case>.err ("<ExceptionClass>: <message>") when Jinja2 raises, plus MANIFEST (one
template name a line). tests/test_chat_template.c compares our engine against these files.

Needs only Debian's python3-jinja2 (no transformers). Run from the repository root:
    /usr/bin/python3 tools/gen_template_renders.py [--templates DIR]
"""
import argparse
import datetime
import glob
import json
import os
import sys

import jinja2
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


def strftime_now(fmt):
    return datetime.datetime.now().strftime(fmt)


def make_env():
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def case_context(defaults, case):
    ctx = dict(defaults)
    ctx.update(case["context"])
    for key in case.get("unset", []):
        ctx.pop(key, None)
    return ctx


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser()
    ap.add_argument("--templates", default=os.path.join(root, "..", "shared", "models", "templates"))
    ap.add_argument("--data", default=os.path.join(root, "tests", "data", "chat_templates"))
    args = ap.parse_args()

    with open(os.path.join(args.data, "cases.json"), encoding="utf-8") as f:
        doc = json.load(f)
    out_dir = os.path.join(args.data, "expected")
    os.makedirs(out_dir, exist_ok=True)
    for old in glob.glob(os.path.join(out_dir, "*")):
        os.remove(old)

    env = make_env()
    paths = sorted(glob.glob(os.path.join(args.templates, "*.jinja")))
    if not paths:
        sys.exit(f"no templates in {args.templates}")
    n_ok = n_err = 0
    names = []
    for path in paths:
        name = os.path.basename(path)[: -len(".jinja")]
        names.append(name)
        with open(path, encoding="utf-8", newline="") as f:
            template = env.from_string(f.read())
        for case in doc["cases"]:
            base = os.path.join(out_dir, f"{name}__{case['name']}")
            try:
                text = template.render(**case_context(doc["defaults"], case))
            except Exception as e:  # every Jinja2 failure is an expected outcome
                with open(base + ".err", "w", encoding="utf-8", newline="") as f:
                    f.write(f"{type(e).__name__}: {e}")
                n_err += 1
                continue
            with open(base + ".txt", "w", encoding="utf-8", newline="") as f:
                f.write(text)
            n_ok += 1
    with open(os.path.join(out_dir, "MANIFEST"), "w", encoding="utf-8") as f:
        f.write("".join(n + "\n" for n in names))
    print(f"{len(paths)} templates x {len(doc['cases'])} cases: {n_ok} renders, {n_err} errors")


if __name__ == "__main__":
    main()
